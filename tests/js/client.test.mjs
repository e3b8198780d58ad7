// The JS client against a real hub (run by tests/integration/test_js_client.py).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, afterEach, test } from "node:test";

import {
  HubClient, HubError, Mirror, matchPattern, parsePattern,
} from "../../src/companion_hub/web/companion-hub.js";
import {
  CONTROL_URL, HUB_URL, closeAll, connected, control, once, uniqueName, waitFor,
} from "./helpers.mjs";

afterEach(closeAll);
after(closeAll);

async function rejectsWith(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof HubError, `expected a HubError, got ${e}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

test("connect: the welcome sets the state, the hub id and the namespaces", async () => {
  const name = uniqueName("js");
  const hub = new HubClient(HUB_URL, name);
  assert.equal(hub.state, "idle");
  const seen = once(hub, "connect");
  const p = hub.connect();
  assert.equal(hub.state, "connecting");
  await p;
  assert.equal((await seen).resumed, false);
  assert.equal(hub.state, "connected");
  assert.ok(hub.connected);
  assert.match(hub.hubId, /^[0-9a-f]+$/);
  assert.deepEqual(hub.namespaces, [`app.${name}`]);
  assert.ok(hub.sessionId);
  assert.ok(hub.limits.value_bytes > 0);
  await hub.close();
  assert.equal(hub.state, "closed");
  await rejectsWith(hub.set(`app.${name}.x`, 1), "UNAVAILABLE");
});

test("set, get, setMany, compare-and-set and delete", async () => {
  const name = uniqueName("js");
  const hub = await connected(name);
  const k = `app.${name}.status`;
  const r1 = await hub.set(k, "live");
  assert.equal(r1.version, 1);
  assert.ok(r1.rev > 0);
  const e = await hub.getEntry(k);
  assert.equal(e.value, "live");
  assert.equal(e.owner, `app.${name}`);
  assert.equal(e.stale, false);
  const r2 = await hub.set(k, "off", { expectVersion: r1.version });
  assert.equal(r2.version, 2);
  await assert.rejects(hub.set(k, "x", { expectVersion: 1 }), (err) => {
    assert.equal(err.code, "CONFLICT");
    assert.equal(err.details.version, 2);
    return true;
  });
  const results = await hub.setMany({ [`app.${name}.a`]: 1, [`app.${name}.b`]: { n: 2 } },
    { durable: true });
  assert.deepEqual(results.map((x) => x.key), [`app.${name}.a`, `app.${name}.b`]);
  const got = await hub.get(`app.${name}.*`);
  assert.deepEqual([...got.keys()], [`app.${name}.a`, `app.${name}.b`, k]);
  assert.deepEqual(got.get(`app.${name}.b`).value, { n: 2 });
  const d = await hub.delete(k, { durable: true });
  assert.equal(d.version, 3);
  assert.equal(await hub.getEntry(k), undefined);
  await rejectsWith(hub.delete(k), "NOT_FOUND");
  const s = await hub.sync();
  assert.equal(s.deleted, 0);
});

test("errors: NOT_OWNER and BAD_REQUEST come back as HubError with their code", async () => {
  const hub = await connected(uniqueName("js"));
  await rejectsWith(hub.set("app.somebody-else.x", 1), "NOT_OWNER");
  await rejectsWith(hub.set("hub.info", 1), "NOT_OWNER");
  await rejectsWith(hub.set("bad key", 1), "BAD_REQUEST");
  await rejectsWith(hub.publish("app.somebody-else.ev", 1), "NOT_OWNER");
  await rejectsWith(hub.call("nobody.here", "x"), "UNAVAILABLE");
  // checked before anything is sent, like the Python SDK
  assert.throws(() => hub.subscribe("a.**.b"), (e) => e.code === "BAD_REQUEST");
  await rejectsWith(hub.get(["a.b*"]), "BAD_REQUEST");
  assert.throws(() => new HubClient(HUB_URL, "Bad Name"), (e) => e.code === "BAD_REQUEST");
  assert.equal(hub.state, "connected");
});

test("subscribe: the snapshot then deltas reach the mirror and the listeners", async () => {
  const wname = uniqueName("w");
  const writer = await connected(wname);
  const ns = `app.${wname}`;
  await writer.setMany({ [`${ns}.a`]: 1, [`${ns}.b`]: 2 });
  const reader = await connected(uniqueName("r"));
  const sub = reader.subscribe([`${ns}.**`]);
  const changes = [];
  sub.on("change", (ch) => changes.push(ch));
  assert.equal(await sub.ready, sub);
  assert.deepEqual([...sub.mirror.keys()], [`${ns}.a`, `${ns}.b`]);
  assert.equal(sub.get(`${ns}.a`).value, 1);
  assert.deepEqual(changes.map((c) => c.key), [`${ns}.a`, `${ns}.b`]); // the snapshot's entries

  const iter = sub[Symbol.asyncIterator]();
  assert.equal((await iter.next()).value.key, `${ns}.a`); // the iterator starts with them too
  assert.equal((await iter.next()).value.key, `${ns}.b`);

  const w = await writer.set(`${ns}.a`, 10);
  const next = await iter.next();
  assert.equal(next.value.key, `${ns}.a`);
  assert.equal(next.value.value, 10);
  assert.equal(next.value.version, w.version);
  assert.equal(sub.get(`${ns}.a`).value, 10);
  assert.ok(reader.rev >= w.rev);

  await writer.delete(`${ns}.b`);
  const del = await iter.next();
  assert.equal(del.value.key, `${ns}.b`);
  assert.equal(del.value.deleted, true);
  assert.equal(del.value.owner, ns);
  assert.equal(sub.get(`${ns}.b`), undefined);

  // reads covered by a synced subscription come from the mirror
  assert.equal((await reader.getEntry(`${ns}.a`)).value, 10);

  // events
  const evsub = reader.subscribe(`${ns}.ev.*`, { events: true });
  await evsub.ready;
  const gotEvent = once(evsub, "event");
  assert.equal(await writer.publish(`${ns}.ev.press`, { n: 3 }), 1);
  const ev = await gotEvent;
  assert.deepEqual(ev.data, { n: 3 });
  assert.equal(ev.source, wname);

  await sub.unsubscribe();
  assert.equal(sub.active, false);
  assert.deepEqual((await iter.next()).done, true);
  assert.equal(reader.mirror.entries.has(`${ns}.a`), false);
  await writer.set(`${ns}.a`, 11);
  assert.equal((await reader.get(`${ns}.a`)).get(`${ns}.a`).value, 11); // a get request now
});

test("staleness: the owner's keys flip stale when it leaves, fresh when it writes again", async () => {
  const wname = uniqueName("w");
  const ns = `app.${wname}`;
  const writer = await connected(wname);
  await writer.set(`${ns}.tally`, "live");
  const reader = await connected(uniqueName("r"));
  const sub = reader.subscribe(`${ns}.*`);
  await sub.ready;
  const stale = new Promise((resolve) => sub.on("change", (ch) => ch.stale && resolve(ch)));
  await writer.close();
  const ch = await stale;
  assert.equal(ch.value, "live");
  assert.equal(ch.version, 1);
  assert.ok(ch.staleSince > 0);
  assert.equal(sub.get(`${ns}.tally`).stale, true);

  const again = await connected(wname);
  const fresh = new Promise((resolve) => sub.on("change", (c) => !c.stale && resolve(c)));
  await again.set(`${ns}.tally`, "live"); // an equal value clears the flag
  const f = await fresh;
  assert.equal(f.version, 1);
  assert.equal(f.staleSince, null);
  assert.equal(sub.get(`${ns}.tally`).stale, false);
});

test("resume: after the hub drops the connection, an incremental snapshot catches up", async () => {
  const wname = uniqueName("w");
  const ns = `app.${wname}`;
  const writer = await connected(wname);
  await writer.setMany({ [`${ns}.a`]: 1, [`${ns}.b`]: 2, [`${ns}.keep`]: 0 });
  const rname = uniqueName("r");
  // a fixed jitter makes the reconnection wait 400 ms: time for the writes below
  const reader = await connected(rname, { backoffBase: 400, random: () => 1 });
  const sub = reader.subscribe(`${ns}.*`);
  await sub.ready;
  const deleted = [];
  sub.on("change", (ch) => ch.deleted && deleted.push(ch.key));
  const hubId = reader.hubId;

  const down = once(reader, "disconnect");
  assert.deepEqual(await control("/drop?client=" + rname), { dropped: true });
  const info = await down;
  assert.equal(info.code, 1001);
  assert.equal(reader.state, "connecting");
  const waiting = reader.set(`app.${rname}.x`, 1); // waits for the reconnection

  await writer.set(`${ns}.a`, 2);
  await writer.delete(`${ns}.b`);
  await writer.set(`${ns}.c`, 3);
  await writer.set(`${ns}.d`, 4);
  await writer.delete(`${ns}.d`); // created and deleted while away
  const last = await writer.set(`${ns}.e`, 5);

  const snap = await once(sub, "snapshot");
  assert.equal(snap.mode, "incremental");
  assert.equal(reader.hubId, hubId);
  assert.equal(reader.state, "connected");
  assert.equal(reader.reconnects, 1);
  assert.deepEqual([...sub.mirror.keys()], [`${ns}.a`, `${ns}.c`, `${ns}.e`, `${ns}.keep`]);
  assert.equal(sub.get(`${ns}.a`).value, 2);
  assert.deepEqual(deleted, [`${ns}.b`]);
  assert.ok(reader.rev >= last.rev);
  assert.equal((await waiting).version, 1);

  // deltas flow again
  await writer.set(`${ns}.a`, 3);
  await waitFor(() => sub.get(`${ns}.a`)?.value === 3, "the delta after the resume");
});

test("takeover: close 4000 'replaced' and no reconnection", async () => {
  const name = uniqueName("js");
  const first = await connected(name);
  const replaced = once(first, "replaced");
  const second = await connected(name);
  await replaced;
  assert.equal(first.state, "replaced");
  await rejectsWith(first.set(`app.${name}.x`, 1), "UNAVAILABLE");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(first.state, "replaced");
  assert.equal(second.state, "connected");
  assert.equal((await second.set(`app.${name}.x`, 1)).version, 1);
});

test("commands: JS calls a Python SDK handler", async () => {
  const name = uniqueName("js");
  const hub = await connected(name);
  assert.deepEqual(await hub.call("app.py", "add", { a: 2, b: 3 }), { sum: 5, source: name });
  await rejectsWith(hub.call("app.py", "add", { a: "x" }), "BAD_REQUEST");
  await rejectsWith(hub.call("app.py", "nope"), "NOT_FOUND");
  assert.deepEqual(
    await hub.call("app.py", "add", { a: 1, b: 1 }, { timeoutMs: 2000, idempotencyKey: "k1" }),
    { sum: 2, source: name },
  );
});

test("commands: Python calls JS handlers", async () => {
  const name = uniqueName("js");
  const hub = await connected(name);
  hub.handle("greet", async (params, ctx) => ({ hello: params.who, from: ctx.source }));
  hub.handle("lock", () => {
    throw new HubError("CONFLICT", "the mixer is locked", { by: "someone" });
  });
  hub.handle("boom", () => {
    throw new Error("kaput");
  });
  const target = `app.${name}`;
  assert.deepEqual(await control("/call", { target, name: "greet", params: { who: "x" } }),
    { ok: true, result: { hello: "x", from: "py" } });
  const locked = await control("/call", { target, name: "lock" });
  assert.equal(locked.code, "CONFLICT");
  assert.equal(locked.message, "the mixer is locked");
  const boom = await control("/call", { target, name: "boom" });
  assert.deepEqual([boom.code, boom.message], ["FAILED", "kaput"]);
  assert.equal((await control("/call", { target, name: "unknown" })).code, "NOT_FOUND");
});

test("connect fails with UNAVAILABLE within connectTimeout when nothing listens", async () => {
  const hub = new HubClient("ws://127.0.0.1:1/ws", "nobody", {
    connectTimeout: 500, backoffBase: 50,
  });
  await rejectsWith(hub.connect(), "UNAVAILABLE");
  assert.equal(hub.state, "closed");
});

test("the hub serves /client.js: the same bytes as the package file", async () => {
  const r = await fetch(CONTROL_URL + "/client.js");
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "application/javascript; charset=utf-8");
  const file = await readFile(new URL("../../src/companion_hub/web/companion-hub.js",
    import.meta.url), "utf8");
  assert.equal(await r.text(), file);
  const again = await fetch(CONTROL_URL + "/client.js",
    { headers: { "if-none-match": r.headers.get("etag") } });
  assert.equal(again.status, 304);
  // and it loads as a module
  const mod = await import("data:text/javascript;base64," + Buffer.from(file).toString("base64"));
  assert.equal(typeof mod.HubClient, "function");
});

test("mirror rules: versions only increase, a versioned removal never deletes a newer entry", () => {
  const seen = [];
  const m = new Mirror((c) => seen.push(c));
  m.onWelcome("h1");
  m.addSub("s", [parsePattern("a.**")]);
  m.onSnapshot({ sub: "s", rev: 5, mode: "full", done: false,
    entries: [{ key: "a.x", value: 1, version: 1, rev: 4 }] });
  assert.equal(m.entries.size, 0); // chunks wait for done
  m.onSnapshot({ sub: "s", rev: 5, mode: "full", done: true,
    entries: [{ key: "a.y", value: 1, version: 1, rev: 5 }] });
  assert.deepEqual([...m.entries.keys()], ["a.x", "a.y"]);
  m.onDelta({ key: "a.x", value: 2, version: 2, rev: 6 });
  m.onDelta({ key: "a.x", value: 1, version: 1, rev: 7 }); // older version: ignored
  assert.equal(m.entries.get("a.x").value, 2);
  m.onDelta({ key: "a.x", value: 2, version: 2, rev: 8, stale: true, stale_since: 9 });
  assert.equal(m.entries.get("a.x").stale, true); // same version, higher rev
  m.onDelta({ key: "a.y", deleted: true, version: 2, rev: 9 });
  m.onDelta({ key: "a.y", value: 0, version: 1, rev: 3 }); // no resurrection
  assert.equal(m.entries.has("a.y"), false);
  // incremental: a removal older than what is held does not delete it
  m.onSnapshot({ sub: "s", rev: 20, mode: "incremental", done: true, entries: [],
    removed: [{ key: "a.x", version: 2, rev: 7 }, { key: "a.never", version: 3, rev: 12 }] });
  assert.equal(m.entries.get("a.x").value, 2);
  m.onSnapshot({ sub: "s", rev: 21, mode: "incremental", done: true, entries: [],
    removed: [{ key: "a.x", version: 3, rev: 21 }] });
  assert.equal(m.entries.has("a.x"), false);
  assert.equal(m.rev, 21);
  m.onProgress(30);
  assert.equal(m.rev, 30);
  assert.deepEqual(m.resume(), { hub: "h1", rev: 30 });
  assert.equal(m.since("s"), 30);
  // a different hub: held entries are unverified, the next full snapshot wins
  m.onSnapshot({ sub: "s", rev: 31, mode: "incremental", done: true,
    entries: [{ key: "a.z", value: 1, version: 9, rev: 31 }] });
  assert.equal(m.onWelcome("h2"), false);
  assert.equal(m.since("s"), null);
  m.onSnapshot({ sub: "s", rev: 2, mode: "full", done: true,
    entries: [{ key: "a.z", value: "new", version: 1, rev: 2 }] });
  assert.equal(m.entries.get("a.z").value, "new");
  assert.ok(matchPattern(parsePattern("a.**"), "a"));
  assert.ok(!matchPattern(parsePattern("a.*"), "a.b.c"));
  assert.ok(seen.some((c) => c.deleted && c.key === "a.y"));
});
