// companion-hub dashboard: an ES module on the hub's own JavaScript client (/client.js).
// No build step, no external resources. See README.md "Dashboard".
import { HubClient, HubError } from "/client.js";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "companion-hub.token";
const VALUE_CHARS = 160;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function randomName() {
  const chars = "abcdefghijklmnopqrstuvwxyz0123456789";
  let s = "";
  for (let i = 0; i < 8; i++) s += chars[Math.floor(Math.random() * chars.length)];
  return `dashboard-${s}`;
}

function truncate(text, n = VALUE_CHARS) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function age(ms) {
  if (ms == null) return "";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

function time(ms) {
  return ms == null ? "" : new Date(ms).toLocaleTimeString();
}

function flash(row) {
  row.classList.remove("flash");
  void row.offsetWidth; // restart the animation
  row.classList.add("flash");
}

// --- connection ----------------------------------------------------------------------

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const clientName = randomName();
let token = sessionStorage.getItem(TOKEN_KEY) || undefined;
let hub = null;
const onHub = []; // (hub) => void, run for every new HubClient

function setConn(state, text) {
  const c = $("#conn");
  c.className = `conn conn-${state}`;
  c.dataset.state = state;
  c.textContent = text;
}

function apiHeaders(extra = {}) {
  const h = { ...extra };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function askToken(message) {
  $("#token-message").textContent = message;
  $("#token-panel").hidden = false;
  $("#token-input").focus();
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token-input").value.trim() || undefined;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  $("#token-panel").hidden = true;
  start();
});

async function start() {
  if (hub) await hub.close().catch(() => {});
  const h = new HubClient(wsUrl, clientName, { token });
  hub = h;
  h.on("connect", () => setConn("connected", `connected as ${clientName}`));
  h.on("disconnect", () => setConn("connecting", "reconnecting…"));
  h.on("closed", ({ state }) => {
    if (hub === h) setConn("closed", state === "replaced" ? "replaced" : "closed");
  });
  setConn("connecting", "connecting…");
  try {
    await h.connect();
  } catch (e) {
    if (hub !== h) return;
    if (e instanceof HubError && e.code === "UNAUTHORIZED") {
      setConn("closed", "token needed");
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      askToken(token ? "The hub refused this token. Enter another:" : "This hub requires a token.");
    } else {
      setConn("closed", `cannot connect: ${e.message || e}`);
      setTimeout(() => { if (hub === h) start(); }, 3000);
    }
    return;
  }
  for (const fn of onHub) fn(h);
}

// --- tabs --------------------------------------------------------------------------------

const viewHooks = {};
function showView(name) {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.setAttribute("aria-selected", String(b.dataset.view === name));
  }
  for (const v of document.querySelectorAll("main .view")) v.hidden = v.dataset.view !== name;
  if (viewHooks[name]) viewHooks[name]();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}
for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => showView(b.dataset.view));
}

// --- live state browser ------------------------------------------------------------------

const stateRows = new Map(); // key -> {row, entry}
let stateSub = null;

function renderValueCell(td, value) {
  let text;
  try { text = JSON.stringify(value); } catch { text = String(value); }
  td.textContent = truncate(text ?? "null");
  td.title = text && text.length > VALUE_CHARS ? text.slice(0, 4000) : "";
}

function stateChange(ch) {
  const tbody = $("#state-table tbody");
  let item = stateRows.get(ch.key);
  if (ch.deleted) {
    if (item) { item.row.remove(); stateRows.delete(ch.key); }
    $("#state-count").textContent = `${stateRows.size} keys`;
    return;
  }
  if (!item) {
    const row = el("tr", { dataset: { key: ch.key } },
      el("td", { class: "key" }), el("td", { class: "value" }), el("td", { class: "num" }),
      el("td", { class: "owner" }), el("td", { class: "age" }));
    item = { row, entry: ch };
    stateRows.set(ch.key, item);
    // keep the table sorted by key
    let before = null;
    for (const r of tbody.rows) { if (r.dataset.key > ch.key) { before = r; break; } }
    tbody.insertBefore(row, before);
  }
  item.entry = ch;
  const [k, v, ver, owner, ageTd] = item.row.cells;
  k.textContent = ch.key;
  renderValueCell(v, ch.value);
  ver.textContent = String(ch.version);
  owner.textContent = ch.owner ?? "";
  item.row.classList.toggle("stale", ch.stale);
  item.row.dataset.stale = String(ch.stale);
  ageTd.replaceChildren(age(ch.ts));
  if (ch.stale) ageTd.append(" ", el("span", { class: "badge stale-label" }, "stale"));
  flash(item.row);
  $("#state-count").textContent = `${stateRows.size} keys`;
}

function subscribeState(h) {
  const pattern = $("#state-pattern").value.trim() || "**";
  $("#state-error").textContent = "";
  if (stateSub) stateSub.unsubscribe().catch(() => {});
  stateSub = null;
  stateRows.clear();
  $("#state-table tbody").replaceChildren();
  let sub;
  try {
    sub = h.subscribe(pattern.split(/\s+/));
  } catch (e) {
    $("#state-error").textContent = e.message || String(e);
    return;
  }
  stateSub = sub;
  sub.on("change", (ch) => { if (stateSub === sub) stateChange(ch); });
  sub.on("error", (e) => { $("#state-error").textContent = e.message; });
  sub.ready.catch((e) => { if (stateSub === sub) $("#state-error").textContent = e.message; });
}

let patternTimer = null;
$("#state-pattern").addEventListener("input", () => {
  clearTimeout(patternTimer);
  patternTimer = setTimeout(() => { if (hub) subscribeState(hub); }, 300);
});
onHub.push(subscribeState);

setInterval(() => {
  if ($("#view-state").hidden) return;
  for (const { row, entry } of stateRows.values()) {
    const td = row.cells[4];
    if (td.firstChild && td.firstChild.nodeType === Node.TEXT_NODE) {
      td.firstChild.textContent = age(entry.ts);
    }
  }
}, 1000);

// --- Companion page view -------------------------------------------------------------

const buttons = new Map(); // "page.row.col" -> entry
let companionSub = null;
let currentPage = null;
const held = new Map(); // location -> promise of the "down" call

function companionNs() {
  return $("#companion-ns").value.trim() || "companion";
}

function parseButtonKey(key) {
  const rest = key.slice(`${companionNs()}.buttons.`.length).split(".");
  if (rest.length !== 3 || rest.some((p) => !/^\d+$/.test(p))) return null;
  return rest.map(Number);
}

function pages() {
  const set = new Set();
  for (const key of buttons.keys()) set.add(Number(key.split(".")[0]));
  return [...set].sort((a, b) => a - b);
}

function renderPageSelect() {
  const sel = $("#companion-page");
  const list = pages();
  if (currentPage == null && list.length) currentPage = list[0];
  if (currentPage != null && !list.includes(currentPage)) list.push(currentPage);
  list.sort((a, b) => a - b);
  const want = list.map(String).join(",");
  if (sel.dataset.pages !== want) {
    sel.replaceChildren(...list.map((p) => el("option", { value: String(p) }, `Page ${p}`)));
    sel.dataset.pages = want;
  }
  if (currentPage != null) sel.value = String(currentPage);
}

async function sendCommand(name, loc) {
  try {
    await hub.call(companionNs(), name, { location: loc });
    $("#companion-error").textContent = "";
  } catch (e) {
    $("#companion-error").textContent = `${name} ${loc}: ${e.code || ""} ${e.message || e}`;
  }
}

function pressDown(loc) {
  if (held.has(loc)) return;
  held.set(loc, sendCommand("down", loc));
}

function pressUp(loc) {
  const down = held.get(loc);
  if (!down) return;
  held.delete(loc);
  down.finally(() => sendCommand("up", loc)); // the "up" always follows its "down"
}

function makeButton(page, row, col) {
  const loc = `${page}/${row}/${col}`;
  const b = el("button", { class: "cbtn empty", type: "button", dataset: { location: loc } });
  b.append(el("span", { class: "ctext" }));
  b.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    b.setPointerCapture?.(ev.pointerId);
    pressDown(loc);
  });
  b.addEventListener("pointerup", () => pressUp(loc));
  b.addEventListener("pointercancel", () => pressUp(loc));
  b.addEventListener("lostpointercapture", () => pressUp(loc));
  b.addEventListener("keydown", (ev) => {
    if ((ev.key === "Enter" || ev.key === " ") && !ev.repeat) { ev.preventDefault(); pressDown(loc); }
  });
  b.addEventListener("keyup", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pressUp(loc); }
  });
  return b;
}

function paintButton(b, entry) {
  const v = entry && entry.value && typeof entry.value === "object" ? entry.value : null;
  const text = b.firstChild;
  b.classList.toggle("empty", !v);
  b.classList.toggle("pressed", Boolean(v && v.pressed));
  b.classList.toggle("stale", Boolean(entry && entry.stale));
  b.dataset.pressed = String(Boolean(v && v.pressed));
  b.style.backgroundColor = v && typeof v.bgcolor === "string" ? v.bgcolor : "";
  b.style.color = v && typeof v.color === "string" ? v.color : "";
  const image = v && typeof v.image === "string" && v.image.startsWith("data:image/") ? v.image : "";
  b.style.backgroundImage = image ? `url("${image.replace(/["\\\n]/g, "")}")` : "";
  b.classList.toggle("has-image", Boolean(image));
  text.textContent = v && typeof v.text === "string" ? v.text : "";
  b.title = `${b.dataset.location}${entry && entry.stale ? " (stale)" : ""}`;
}

function renderGrid() {
  renderPageSelect();
  const grid = $("#grid");
  if (currentPage == null) {
    grid.replaceChildren(el("p", { class: "muted" }, `No ${companionNs()}.buttons.* keys.`));
    return;
  }
  let rows = 4;
  let cols = 8;
  for (const key of buttons.keys()) {
    const [p, r, c] = key.split(".").map(Number);
    if (p !== currentPage) continue;
    rows = Math.max(rows, r + 1);
    cols = Math.max(cols, c + 1);
  }
  const shape = `${currentPage}:${rows}x${cols}`;
  if (grid.dataset.shape !== shape) {
    const cells = [];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) cells.push(makeButton(currentPage, r, c));
    }
    grid.replaceChildren(...cells);
    grid.style.setProperty("--cols", String(cols));
    grid.dataset.shape = shape;
  }
  for (const b of grid.querySelectorAll(".cbtn")) {
    const [p, r, c] = b.dataset.location.split("/");
    paintButton(b, buttons.get(`${p}.${r}.${c}`));
  }
}

function buttonChange(ch) {
  const loc = parseButtonKey(ch.key);
  if (!loc) return;
  const id = loc.join(".");
  if (ch.deleted) buttons.delete(id); else buttons.set(id, ch);
  if (loc[0] === currentPage || currentPage == null) scheduleGrid();
  else renderPageSelect();
}

let gridQueued = false;
function scheduleGrid() {
  if (gridQueued) return;
  gridQueued = true;
  queueMicrotask(() => { gridQueued = false; renderGrid(); });
}

function subscribeCompanion(h) {
  if (companionSub) companionSub.unsubscribe().catch(() => {});
  buttons.clear();
  currentPage = null;
  $("#companion-error").textContent = "";
  let sub;
  try {
    sub = h.subscribe([`${companionNs()}.buttons.**`]);
  } catch (e) {
    $("#companion-error").textContent = e.message || String(e);
    return;
  }
  companionSub = sub;
  sub.on("change", (ch) => { if (companionSub === sub) buttonChange(ch); });
  sub.ready.then(() => scheduleGrid(), (e) => { $("#companion-error").textContent = e.message; });
  scheduleGrid();
}

$("#companion-page").addEventListener("change", (ev) => {
  currentPage = Number(ev.target.value);
  renderGrid();
});
$("#companion-ns").addEventListener("change", () => { if (hub) subscribeCompanion(hub); });
onHub.push(subscribeCompanion);

// --- clients and adapters --------------------------------------------------------------

function tableUpsert(tbody, key, cells, classes = {}) {
  let row = [...tbody.rows].find((r) => r.dataset.key === key);
  if (!row) {
    row = el("tr", { dataset: { key } });
    let before = null;
    for (const r of tbody.rows) { if (r.dataset.key > key) { before = r; break; } }
    tbody.insertBefore(row, before);
  }
  row.replaceChildren(...cells.map((c) => el("td", {}, c)));
  for (const [cls, on] of Object.entries(classes)) row.classList.toggle(cls, on);
  flash(row);
}

function tableRemove(tbody, key) {
  for (const r of tbody.rows) if (r.dataset.key === key) r.remove();
}

function subscribeClients(h) {
  const sub = h.subscribe(["hub.clients.*", "hub.adapters.*"]);
  sub.on("change", (ch) => {
    const isClient = ch.key.startsWith("hub.clients.");
    const tbody = $(isClient ? "#clients-table tbody" : "#adapters-table tbody");
    const name = ch.key.split(".").slice(2).join(".");
    if (ch.deleted) { tableRemove(tbody, ch.key); return; }
    const v = ch.value && typeof ch.value === "object" ? ch.value : {};
    if (isClient) {
      tableUpsert(tbody, ch.key,
        [name, v.connected ? "yes" : "no", time(v.since), v.address ?? ""],
        { disconnected: !v.connected });
    } else {
      tableUpsert(tbody, ch.key,
        [name, String(v.state ?? ""), String(v.detail ?? ""), time(v.since)],
        { disconnected: v.state !== "connected" });
    }
  });
}
onHub.push(subscribeClients);

// --- event log ---------------------------------------------------------------------------

let logCursor = null;
let logGeneration = 0;
let logTimer = null;

function logQuery() {
  const q = new URLSearchParams();
  const type = $("#log-type").value;
  if (type) q.set("type", type);
  for (const p of $("#log-pattern").value.trim().split(/\s+/)) if (p) q.append("pattern", p);
  return q;
}

function logDetail(rec) {
  if (rec.type === "change") {
    return rec.deleted ? "deleted" : truncate(JSON.stringify(rec.value ?? null), 100);
  }
  return truncate(JSON.stringify(rec.data ?? null), 100);
}

function addLogRecords(records) {
  const tbody = $("#log-table tbody");
  for (const rec of records) {
    const row = el("tr", {},
      el("td", { class: "num" }, String(rec.rev ?? "")), el("td", {}, time(rec.ts)),
      el("td", {}, rec.type ?? ""), el("td", {}, rec.client ?? ""),
      el("td", { class: "key" }, rec.key ?? ""), el("td", { class: "value" }, logDetail(rec)));
    tbody.prepend(row); // newest first
  }
  while (tbody.rows.length > 500) tbody.lastElementChild.remove();
}

async function fetchLog(q) {
  const res = await fetch(`/api/log?${q}`, { headers: apiHeaders() });
  if (res.status === 404) {
    throw new Error("This hub keeps no event log on disk (start it with a data dir to get one).");
  }
  if (res.status === 401) {
    askToken("The event log needs a token.");
    throw new Error("unauthorized");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
  return body;
}

async function loadLog() {
  const gen = ++logGeneration;
  clearTimeout(logTimer);
  $("#log-table tbody").replaceChildren();
  $("#log-status").textContent = "loading…";
  logCursor = null;
  try {
    // the recent records: start a little before the hub's current revision
    const q = logQuery();
    const rev = hub && hub.rev ? hub.rev : 0;
    q.set("from_rev", String(Math.max(0, rev - 200)));
    q.set("limit", "1000");
    let page = await fetchLog(q);
    if (gen !== logGeneration) return;
    addLogRecords(page.records);
    logCursor = page.next;
    while (page.more && logCursor && gen === logGeneration) {
      const q2 = logQuery();
      q2.set("after", logCursor);
      q2.set("limit", "1000");
      page = await fetchLog(q2);
      addLogRecords(page.records);
      logCursor = page.next;
    }
    $("#log-status").textContent = `${$("#log-table tbody").rows.length} records`;
    scheduleFollow(gen);
  } catch (e) {
    if (gen === logGeneration) $("#log-status").textContent = e.message;
  }
}

function scheduleFollow(gen) {
  clearTimeout(logTimer);
  logTimer = setTimeout(async () => {
    if (gen !== logGeneration) return;
    if (!$("#log-follow").checked || $("#view-log").hidden || !logCursor) {
      scheduleFollow(gen);
      return;
    }
    try {
      const q = logQuery();
      q.set("after", logCursor);
      q.set("limit", "1000");
      const page = await fetchLog(q);
      if (gen !== logGeneration) return;
      addLogRecords(page.records);
      logCursor = page.next ?? logCursor;
      $("#log-status").textContent = `${$("#log-table tbody").rows.length} records`;
    } catch (e) {
      $("#log-status").textContent = e.message;
    }
    scheduleFollow(gen);
  }, 2000);
}

$("#log-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadLog(); });
$("#log-type").addEventListener("change", loadLog);
let logLoaded = false;
viewHooks.log = () => { if (!logLoaded) { logLoaded = true; loadLog(); } };

// --- command console ---------------------------------------------------------------------

$("#console-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#cmd-result");
  const target = $("#cmd-target").value.trim();
  const name = $("#cmd-name").value.trim();
  let params = {};
  const raw = $("#cmd-params").value.trim();
  if (raw) {
    try { params = JSON.parse(raw); } catch (e) {
      out.className = "result error";
      out.textContent = `params: invalid JSON: ${e.message}`;
      return;
    }
  }
  if (!hub) { out.textContent = "not connected"; return; }
  out.className = "result";
  out.textContent = "…";
  const t0 = performance.now();
  try {
    const result = await hub.call(target, name, params);
    const ms = Math.round(performance.now() - t0);
    out.className = "result ok";
    out.textContent = `ok (${ms} ms)\n${JSON.stringify(result, null, 2)}`;
  } catch (e) {
    out.className = "result error";
    const details = e.details ? `\n${JSON.stringify(e.details, null, 2)}` : "";
    out.textContent = `${e.code || "ERROR"}: ${e.message || e}${details}`;
  }
});

// --- start -------------------------------------------------------------------------------

const initial = location.hash.slice(1);
showView(["state", "companion", "clients", "log", "console"].includes(initial) ? initial : "state");
start();

// for tests and the curious
window.companionHubDashboard = { get hub() { return hub; }, clientName };
