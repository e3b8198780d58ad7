/**
 * companion-hub.js: a browser (and Node >= 22) client of companion-hub, protocol v1
 * revision 2 (docs/protocol.md). An ES module with no dependencies and no build step;
 * it uses the standard `WebSocket`.
 *
 * It mirrors the Python SDK (docs/sdk.md): a local mirror fed by snapshots then deltas
 * (versions only increase; a versioned removal never deletes a newer entry), automatic
 * reconnection with exponential back-off and full jitter, incremental resume with
 * `since` on the same hub, re-subscription, no reconnection after a takeover (close
 * 4000 "replaced"), exactly one outcome per request, and command handlers.
 *
 * @example
 * import { HubClient } from "/client.js";
 * const hub = new HubClient("ws://127.0.0.1:8420/ws", "panel");
 * await hub.connect();
 * const sub = hub.subscribe(["companion.buttons.1.**"]);
 * sub.on("change", (ch) => console.log(ch.key, ch.value, ch.stale ? "STALE" : ""));
 * await hub.set("app.panel.status", "live");
 * await hub.call("companion", "press", { location: "1/0/2" });
 *
 * @module companion-hub
 */

/** The error codes of the protocol (section 14). */
export const ErrorCodes = Object.freeze([
  "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_OWNER", "NOT_FOUND", "CONFLICT",
  "TOO_LARGE", "RATE_LIMITED", "LIMIT_EXCEEDED", "UNAVAILABLE", "TIMEOUT", "FAILED",
  "INTERNAL",
]);

/** Close code of a takeover: another connection said hello with the same name. */
export const CLOSE_REPLACED = 4000;

/** Every failure of this client: `code` (one of {@link ErrorCodes}), `message`, `details`. */
export class HubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {Record<string, unknown>} [details]
   */
  constructor(code, message, details) {
    super(message || code);
    this.name = "HubError";
    this.code = ErrorCodes.includes(code) ? code : "FAILED";
    /** @type {Record<string, unknown> | undefined} */
    this.details = details;
  }

  /** @param {any} err a wire error object `{code, message, details?}` */
  static fromWire(err) {
    err = err && typeof err === "object" ? err : {};
    const details = err.details && typeof err.details === "object" ? err.details : undefined;
    return new HubError(String(err.code ?? "FAILED"), String(err.message ?? ""), details);
  }
}

// --- keys and patterns (section 4) -------------------------------------------------

const SEGMENT = /^[A-Za-z0-9_-]{1,64}$/;
const CLIENT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/**
 * Parse a pattern into its segments, or throw `BAD_REQUEST` like the hub would.
 * @param {string} pattern
 * @returns {string[]}
 */
export function parsePattern(pattern) {
  if (typeof pattern !== "string" || pattern === "") {
    throw new HubError("BAD_REQUEST", `invalid pattern ${JSON.stringify(pattern)}`);
  }
  const segs = pattern.split(".");
  segs.forEach((seg, i) => {
    if (seg === "*" || (seg === "**" && i === segs.length - 1) || SEGMENT.test(seg)) return;
    throw new HubError(
      "BAD_REQUEST",
      `invalid pattern '${pattern}': segment '${seg}' must be '*', a last '**', ` +
        "or 1-64 characters from [A-Za-z0-9_-]",
    );
  });
  return segs;
}

/**
 * Does `key` match the parsed pattern? `*` is one segment, a last `**` zero or more.
 * @param {string[]} pattern
 * @param {string} key
 */
export function matchPattern(pattern, key) {
  const parts = key.split(".");
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === "**") return true;
    if (i >= parts.length || (pattern[i] !== "*" && pattern[i] !== parts[i])) return false;
  }
  return parts.length === pattern.length;
}

/** Does every key matching `inner` also match `outer`? */
function covers(outer, inner) {
  for (let i = 0; i < outer.length; i++) {
    if (outer[i] === "**") return true;
    if (i === inner.length || inner[i] === "**" || (outer[i] !== "*" && outer[i] !== inner[i])) {
      return false;
    }
  }
  return inner.length === outer.length;
}

const matchesAny = (patterns, key) => patterns.some((p) => matchPattern(p, key));

// --- a tiny event emitter ----------------------------------------------------------

class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /** Add a listener; returns a function that removes it. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
  }

  _emit(name, ...args) {
    for (const fn of [...(this._listeners.get(name) ?? [])]) {
      try {
        const r = fn(...args);
        if (r && typeof r.then === "function") r.then(undefined, (e) => reportError(name, e));
      } catch (e) {
        reportError(name, e);
      }
    }
  }
}

function reportError(where, err) {
  console.error(`companion-hub: a '${where}' listener failed:`, err);
}

// --- entries and the mirror (section 10.4) -----------------------------------------

/**
 * @typedef {object} Entry
 * @property {string} key
 * @property {unknown} value
 * @property {number} version
 * @property {number} rev
 * @property {string | null} owner
 * @property {boolean} stale
 * @property {number | null} staleSince
 * @property {number | null} ts
 */

/** @typedef {Entry & {deleted: boolean}} Change */

function entryFromWire(m, fallbackOwner = null) {
  if (typeof m?.key !== "string" || !Number.isInteger(m.version) || !Number.isInteger(m.rev)) {
    throw new HubError("INTERNAL", `malformed entry from the hub: ${JSON.stringify(m)}`);
  }
  const stale = Boolean(m.stale);
  return Object.freeze({
    key: m.key,
    value: m.value === undefined ? null : m.value,
    version: m.version,
    rev: m.rev,
    owner: typeof m.owner === "string" ? m.owner : fallbackOwner,
    stale,
    staleSince: stale && typeof m.stale_since === "number" ? m.stale_since : null,
    ts: typeof m.ts === "number" ? m.ts : null,
  });
}

function sameEntry(a, b) {
  return (
    a.key === b.key && a.version === b.version && a.rev === b.rev && a.owner === b.owner &&
    a.stale === b.stale && a.staleSince === b.staleSince && a.ts === b.ts &&
    JSON.stringify(a.value) === JSON.stringify(b.value)
  );
}

const newer = (version, rev, haveVersion, haveRev) =>
  version > haveVersion || (version === haveVersion && rev > haveRev);

const changeOf = (e) => Object.freeze({ ...e, deleted: false });
const deletion = (key, version, rev, owner) =>
  Object.freeze({
    key, value: null, version, rev, owner: owner ?? null, stale: false, staleSince: null,
    ts: null, deleted: true,
  });

/**
 * The local copy of every subscribed key, kept by the rules of the protocol: per key,
 * versions only increase; tombstones stop an old value from resurrecting a deleted key;
 * full snapshots replace, incremental ones apply `entries` and `removed`. It also holds
 * the resume point (`rev`): the highest rev of any delta, complete snapshot or progress.
 * No I/O: {@link HubClient} feeds it.
 */
export class Mirror {
  /** @param {(change: Change) => void} [onChange] */
  constructor(onChange = () => {}) {
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
    /** @type {string | null} */
    this.hub = null;
    this.rev = 0;
    this._onChange = onChange;
    /** @type {Map<string, [number, number]>} key -> [version, rev] of its delete */
    this._tombstones = new Map();
    /** @type {Set<string>} held entries from a previous hub id */
    this._unverified = new Set();
    /** @type {Map<string, {patterns: string[][], synced: boolean, entries: any[], removed: any[]}>} */
    this._subs = new Map();
  }

  addSub(sub, patterns) {
    this._subs.set(sub, { patterns, synced: false, entries: [], removed: [] });
  }

  /** Forget a subscription and every held key no other subscription covers. */
  removeSub(sub) {
    if (!this._subs.delete(sub)) return;
    for (const key of [...this.entries.keys()]) {
      if (!this.wanted(key)) {
        this.entries.delete(key);
        this._unverified.delete(key);
      }
    }
    for (const key of [...this._tombstones.keys()]) {
      if (!this.wanted(key)) this._tombstones.delete(key);
    }
  }

  isSynced(sub) {
    return this._subs.get(sub)?.synced ?? false;
  }

  wanted(key) {
    for (const s of this._subs.values()) if (matchesAny(s.patterns, key)) return true;
    return false;
  }

  /** Can a read of `pattern` (parsed) be answered from the mirror? */
  covered(pattern) {
    for (const s of this._subs.values()) {
      if (s.synced && s.patterns.some((p) => covers(p, pattern))) return true;
    }
    return false;
  }

  /** Held entries matching any of the parsed patterns, sorted by key. */
  matching(patterns) {
    const keys = [...this.entries.keys()].filter((k) => matchesAny(patterns, k)).sort();
    return new Map(keys.map((k) => [k, this.entries.get(k)]));
  }

  /** A connection was welcomed by hub `hub`; returns true when it is the same hub. */
  onWelcome(hub) {
    const same = this.hub === hub;
    if (!same) {
      if (this.hub !== null) {
        this._unverified = new Set(this.entries.keys());
        this._tombstones.clear();
      }
      this.hub = hub;
      this.rev = 0;
    }
    for (const s of this._subs.values()) {
      s.entries = [];
      s.removed = [];
      if (!same) s.synced = false;
    }
    return same;
  }

  /** The `resume` object of a hello, or null before any welcome. */
  resume() {
    return this.hub === null ? null : { hub: this.hub, rev: this.rev };
  }

  /** The `since` to re-subscribe `sub` with, or null for a full snapshot. */
  since(sub) {
    const s = this._subs.get(sub);
    return s && s.synced && this.rev > 0 ? this.rev : null;
  }

  onProgress(rev) {
    if (Number.isInteger(rev)) this.rev = Math.max(this.rev, rev);
  }

  /** Take one snapshot message; returns true when it was the last chunk. */
  onSnapshot(msg) {
    const done = msg.done !== false;
    const s = this._subs.get(msg.sub);
    if (!s) return done;
    s.entries.push(...(msg.entries ?? []));
    s.removed.push(...(msg.removed ?? []));
    if (!done) return false;
    const rev = Number.isInteger(msg.rev) ? msg.rev : 0;
    const entries = s.entries.map((e) => entryFromWire(e));
    const removed = s.removed;
    s.entries = [];
    s.removed = [];
    if ((msg.mode ?? "full") === "full") {
      const present = new Set(entries.map((e) => e.key));
      for (const [key, have] of [...this.entries]) {
        if (
          !present.has(key) && matchesAny(s.patterns, key) &&
          (have.rev <= rev || this._unverified.has(key))
        ) {
          this._drop(key, rev);
        }
      }
    }
    for (const e of entries) this._apply(e);
    for (const r of removed) {
      if (typeof r === "string") {
        if (this.wanted(r)) this._drop(r, rev);
      } else if (r && typeof r.key === "string" && this.wanted(r.key)) {
        if (Number.isInteger(r.version) && Number.isInteger(r.rev)) {
          this._delete(r.key, r.version, r.rev, null);
        } else {
          this._drop(r.key, rev);
        }
      }
    }
    s.synced = true;
    this.rev = Math.max(this.rev, rev);
    return true;
  }

  /** Apply a delta message. */
  onDelta(msg) {
    const rev = msg.rev;
    if (typeof msg.key !== "string" || !Number.isInteger(rev) || !Number.isInteger(msg.version)) {
      return;
    }
    this.rev = Math.max(this.rev, rev);
    if (!this.wanted(msg.key)) return; // e.g. already on the wire when we unsubscribed
    const owner = this.entries.get(msg.key)?.owner ?? null;
    if (msg.deleted) {
      this._delete(msg.key, msg.version, rev, typeof msg.owner === "string" ? msg.owner : owner);
    } else {
      this._apply(entryFromWire(msg, owner));
    }
  }

  /** May a change at version/rev replace what is held for key? (consumes "unverified") */
  _admits(key, version, rev) {
    if (this._unverified.delete(key)) return true;
    const have = this.entries.get(key);
    if (have) return newer(version, rev, have.version, have.rev);
    const tomb = this._tombstones.get(key);
    return !tomb || newer(version, rev, tomb[0], tomb[1]);
  }

  _apply(e) {
    const have = this.entries.get(e.key);
    if (!this._admits(e.key, e.version, e.rev)) return;
    this.entries.set(e.key, e);
    this._tombstones.delete(e.key);
    if (!have || !sameEntry(have, e)) this._onChange(changeOf(e));
  }

  _delete(key, version, rev, owner) {
    const have = this.entries.get(key);
    if (!this._admits(key, version, rev)) return;
    this._tombstones.set(key, [version, rev]);
    if (!have) return;
    this.entries.delete(key);
    this._onChange(deletion(key, version, rev, owner ?? have.owner));
  }

  /** A full snapshot says `key` is gone without saying at which version. */
  _drop(key, rev) {
    const have = this.entries.get(key);
    if (!have) return;
    this.entries.delete(key);
    if (!this._unverified.delete(key)) {
      this._tombstones.set(key, [have.version + 1, Math.max(rev, have.rev)]);
    }
    this._onChange(deletion(key, have.version + 1, rev, have.owner));
  }
}

// --- subscriptions -----------------------------------------------------------------

/**
 * One subscription: its part of the mirror, its changes and events. It survives
 * reconnections. Listen with `on("change" | "event" | "dropped" | "snapshot" | "error",
 * fn)` or iterate its changes with `for await (const ch of sub)`.
 */
export class Subscription extends Emitter {
  constructor(client, id, patterns, parsed, events) {
    super();
    this.client = client;
    this.id = id;
    /** @type {readonly string[]} */
    this.patterns = Object.freeze([...patterns]);
    this.events = events;
    this._parsed = parsed;
    this.active = true;
    this.initialized = false;
    /** @type {Set<{queue: Map<string, Change>, wake: (() => void) | null}>} */
    this._iterators = new Set();
    /** Resolves (with this subscription) once its first snapshot is in the mirror. */
    this.ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.ready.catch(() => {}); // rejection is reported where it is awaited
  }

  /** @returns {Map<string, Entry>} the entries of this subscription's keys, sorted by key */
  get mirror() {
    return this.client.mirror.matching(this._parsed);
  }

  /** @param {string} key */
  get(key) {
    const e = this.client.mirror.entries.get(key);
    return e && matchesAny(this._parsed, key) ? e : undefined;
  }

  matches(key) {
    return matchesAny(this._parsed, key);
  }

  _change(change) {
    this._emit("change", change);
    for (const it of this._iterators) {
      it.queue.delete(change.key); // coalesce per key, keeping the newest in order
      it.queue.set(change.key, change);
      it.wake?.();
    }
  }

  _synced(mode, rev) {
    if (!this.initialized) {
      this.initialized = true;
      for (const e of this.mirror.values()) this._change(changeOf(e));
      this._resolve(this);
    }
    this._emit("snapshot", { mode, rev });
  }

  _end(error) {
    if (!this.active) return;
    this.active = false;
    if (error) {
      this._reject(error);
      this._emit("error", error);
    }
    for (const it of this._iterators) it.wake?.();
  }

  /** End the subscription (the hub is told when connected). */
  async unsubscribe() {
    if (!this.active) return;
    this._end();
    await this.client._unsubscribe(this);
  }

  /**
   * Changes as they come: first the entries of the first snapshot, then every change
   * (coalesced per key for a slow consumer). Ends when the subscription ends.
   * @returns {AsyncIterator<Change>}
   */
  [Symbol.asyncIterator]() {
    const it = { queue: new Map(), wake: null };
    if (this.initialized) for (const e of this.mirror.values()) it.queue.set(e.key, changeOf(e));
    this._iterators.add(it);
    const finish = () => {
      this._iterators.delete(it);
      return Promise.resolve({ value: undefined, done: true });
    };
    return {
      next: async () => {
        for (;;) {
          const first = it.queue.entries().next();
          if (!first.done) {
            it.queue.delete(first.value[0]);
            return { value: first.value[1], done: false };
          }
          if (!this.active) return finish();
          await new Promise((resolve) => { it.wake = resolve; });
          it.wake = null;
        }
      },
      return: finish,
      [Symbol.asyncIterator]() { return this; },
    };
  }
}

// --- the client --------------------------------------------------------------------

/**
 * @typedef {object} HubClientOptions
 * @property {string} [token] sent in the hello when the hub requires one
 * @property {boolean} [reconnect=true] reconnect after a lost connection
 * @property {number} [backoffBase=100] first reconnection delay bound (ms)
 * @property {number} [backoffMax=10000] the bound doubles per failed attempt, up to this
 * @property {number} [connectTimeout=10000] connect() gives up after this (ms)
 * @property {number} [requestTimeout=10000] a request made while reconnecting waits this long
 * @property {boolean} [keepalive=true] send a small `get` to a quiet hub, and treat 2 x
 *   heartbeat_ms of silence as a dead connection (browsers cannot send pings)
 * @property {() => number} [random=Math.random] the jitter source (tests)
 * @property {typeof WebSocket} [WebSocket] a WebSocket implementation (default: the global)
 */

const HELLO_ID = "hello";

/**
 * A client of companion-hub. Events (`hub.on(name, fn)`): `connect` (welcome),
 * `disconnect` ({code, reason}), `replaced`, `closed`, `error` (a hub error message not
 * tied to a request) and `dropped` (events dropped by the hub).
 */
export class HubClient extends Emitter {
  /**
   * @param {string} url `ws://HOST:8420/ws` or `wss://...`
   * @param {string} clientName `[a-z0-9][a-z0-9_-]{0,62}`; the client owns `app.<name>`
   * @param {HubClientOptions} [options]
   */
  constructor(url, clientName, options = {}) {
    super();
    if (typeof clientName !== "string" || !CLIENT_NAME.test(clientName)) {
      throw new HubError(
        "BAD_REQUEST", `invalid client name ${JSON.stringify(clientName)}: [a-z0-9][a-z0-9_-]{0,62}`,
      );
    }
    this.url = url;
    this.clientName = clientName;
    this.options = {
      token: undefined, reconnect: true, backoffBase: 100, backoffMax: 10000,
      connectTimeout: 10000, requestTimeout: 10000, keepalive: true, random: Math.random,
      WebSocket: globalThis.WebSocket, ...options,
    };
    if (typeof this.options.WebSocket !== "function") {
      throw new HubError("UNAVAILABLE", "no WebSocket implementation (Node: use >= 22)");
    }
    /** @type {'idle'|'connecting'|'connected'|'closed'|'replaced'} */
    this.state = "idle";
    this.mirror = new Mirror((ch) => this._routeChange(ch));
    /** @type {any} the last welcome message */
    this.welcome = null;
    this.reconnects = 0;
    /** @type {HubError | null} */
    this.lastError = null;
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    /** @type {Map<string, (params: any, ctx: any) => any>} */
    this._handlers = new Map();
    /** @type {Map<string, {resolve: Function, reject: Function, kind: string, sub?: Subscription, timer?: any}>} */
    this._pending = new Map();
    this._nextId = 1;
    this._nextSub = 1;
    this._ws = null;
    this._attempt = 0;
    this._waiters = new Set(); // {resolve, reject} of requests waiting for a connection
    this._timers = new Set();
  }

  get connected() { return this.state === "connected"; }
  get hubId() { return this.mirror.hub; }
  /** The resume point: the highest rev of any delta, complete snapshot or progress. */
  get rev() { return this.mirror.rev; }
  get namespaces() { return this.welcome?.namespaces ?? []; }
  get sessionId() { return this.welcome?.session ?? null; }
  get limits() { return this.welcome?.limits ?? {}; }
  get heartbeatMs() { return this.welcome?.heartbeat_ms ?? 10000; }

  /**
   * Connect and wait for the first welcome. Rejects with the hub's error when it refuses
   * the hello (e.g. UNAUTHORIZED), or UNAVAILABLE after `connectTimeout`; the client is
   * then closed.
   * @returns {Promise<void>}
   */
  connect() {
    if (this._connecting) return this._connecting;
    if (this.state !== "idle") return Promise.reject(this._gone());
    this.state = "connecting";
    this._connecting = new Promise((resolve, reject) => {
      this._firstConnect = { resolve, reject };
      this._later(this.options.connectTimeout, () => {
        if (this.state === "connecting" && this._firstConnect) {
          this._fail(new HubError("UNAVAILABLE", `could not connect to ${this.url} within ` +
            `${this.options.connectTimeout} ms`));
        }
      });
    });
    this._open();
    return this._connecting;
  }

  /** Close the connection, end subscriptions and fail waiting requests. */
  async close() {
    this._shutdown("closed", new HubError("UNAVAILABLE", "the client is closed"));
  }

  // --- requests -----------------------------------------------------------------------

  /**
   * Write a value under a namespace you own.
   * @returns {Promise<{key: string, version: number, rev: number}>}
   */
  async set(key, value, { expectVersion, durable } = {}) {
    const msg = { op: "set", key, value: value === undefined ? null : value };
    if (expectVersion !== undefined) msg.expect_version = expectVersion;
    if (durable) msg.durable = true;
    const r = await this._request(msg, "write");
    return { key, version: r.version, rev: r.rev };
  }

  /**
   * An atomic batch. `entries`: an object or Map of key -> value, or an array of
   * `{key, value, expectVersion?}`.
   * @returns {Promise<Array<{key: string, version: number, rev: number}>>}
   */
  async setMany(entries, { durable } = {}) {
    let list;
    if (Array.isArray(entries)) {
      list = entries.map((e) => {
        const w = { key: e.key, value: e.value === undefined ? null : e.value };
        if (e.expectVersion !== undefined) w.expect_version = e.expectVersion;
        return w;
      });
    } else {
      const pairs = entries instanceof Map ? [...entries] : Object.entries(entries ?? {});
      list = pairs.map(([key, value]) => ({ key, value: value === undefined ? null : value }));
    }
    const msg = { op: "set", entries: list };
    if (durable) msg.durable = true;
    const r = await this._request(msg, "write");
    return r.results;
  }

  /** Delete a key you own (NOT_FOUND when it does not exist). */
  async delete(key, { expectVersion, durable } = {}) {
    const msg = { op: "delete", key };
    if (expectVersion !== undefined) msg.expect_version = expectVersion;
    if (durable) msg.durable = true;
    const r = await this._request(msg, "write");
    return { key, version: r.version, rev: r.rev };
  }

  /**
   * Read every key matching the patterns, from the mirror when synced subscriptions
   * cover them all, otherwise with one `get` request.
   * @param {string | string[]} patterns
   * @returns {Promise<Map<string, Entry>>} sorted by key
   */
  async get(patterns) {
    const list = typeof patterns === "string" ? [patterns] : [...patterns];
    if (list.length === 0) throw new HubError("BAD_REQUEST", "no patterns");
    const parsed = list.map(parsePattern);
    if (parsed.every((p) => this.mirror.covered(p))) return this.mirror.matching(parsed);
    const r = await this._request({ op: "get", patterns: list }, "read");
    return new Map((r.entries ?? []).map((e) => [e.key, entryFromWire(e)]));
  }

  /** One key's entry, or undefined. */
  async getEntry(key) {
    return (await this.get([key])).get(key);
  }

  /** Delete every key you own that was not written on this connection. */
  async sync() {
    return this._request({ op: "sync" }, "write");
  }

  /** Publish an event under a namespace you own; returns how many connections got it. */
  async publish(key, data) {
    const r = await this._request({ op: "publish", key, data: data === undefined ? null : data },
      "write");
    return r.delivered;
  }

  /**
   * Send a command to the owner of namespace `target`; resolves with its result or
   * rejects with a HubError (TIMEOUT and UNAVAILABLE: it may have been executed).
   */
  async call(target, name, params = {}, { timeoutMs = 5000, idempotencyKey } = {}) {
    const msg = { op: "command", target, name, params, timeout_ms: timeoutMs };
    if (idempotencyKey !== undefined) msg.idempotency_key = idempotencyKey;
    return this._request(msg, "command", timeoutMs + 5000);
  }

  /**
   * Subscribe to key patterns. The returned subscription fills the mirror with its
   * snapshot (await `sub.ready`), then follows every change; it survives reconnections.
   * @param {string | string[]} patterns
   * @param {{events?: boolean}} [options] `events: true` also delivers published events
   * @returns {Subscription}
   */
  subscribe(patterns, { events = false } = {}) {
    const list = typeof patterns === "string" ? [patterns] : [...patterns];
    if (list.length === 0) throw new HubError("BAD_REQUEST", "no patterns");
    const parsed = list.map(parsePattern);
    if (this.state === "closed" || this.state === "replaced") throw this._gone();
    const sub = new Subscription(this, `s${this._nextSub++}`, list, parsed, events);
    this.subscriptions.set(sub.id, sub);
    this.mirror.addSub(sub.id, parsed);
    if (this.connected) this._send(this._subscribeMessage(sub));
    return sub;
  }

  /**
   * Handle the command `name` sent to your namespaces. `fn(params, ctx)` returns the
   * result (or a promise); throw a HubError to answer with its code, anything else
   * answers FAILED. `ctx` is `{id, name, source, deadline, hub}`.
   */
  handle(name, fn) {
    this._handlers.set(name, fn);
    return this;
  }

  // --- internals: requests ------------------------------------------------------------

  _gone(state = this.state) {
    return new HubError("UNAVAILABLE", state === "replaced"
      ? "the client was taken over by another connection with the same name"
      : "the client is closed");
  }

  async _request(msg, kind, timeoutMs = this.options.requestTimeout) {
    await this._whenConnected();
    const id = String(this._nextId++);
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, kind };
      p.timer = this._later(timeoutMs, () => {
        if (this._pending.get(id) === p) {
          this._pending.delete(id);
          reject(new HubError("TIMEOUT", `no answer from the hub within ${timeoutMs} ms` +
            (kind === "command" ? "; the command may have been executed" : "")));
        }
      });
      this._pending.set(id, p);
      this._send({ ...msg, id });
    });
  }

  _whenConnected() {
    if (this.connected) return Promise.resolve();
    if (this.state === "idle") {
      return Promise.reject(new HubError("UNAVAILABLE", "not connected: call connect() first"));
    }
    if (this.state !== "connecting") return Promise.reject(this._gone());
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      this._waiters.add(w);
      this._later(this.options.requestTimeout, () => {
        if (this._waiters.delete(w)) {
          reject(new HubError("UNAVAILABLE", "no connection to the hub within " +
            `${this.options.requestTimeout} ms`));
        }
      });
    });
  }

  _subscribeMessage(sub) {
    const id = String(this._nextId++);
    const msg = { op: "subscribe", id, sub: sub.id, patterns: [...sub.patterns] };
    if (sub.events) msg.events = true;
    const since = this.mirror.since(sub.id);
    if (since !== null) msg.since = since;
    this._pending.set(id, { kind: "subscribe", sub, resolve: () => {}, reject: () => {} });
    return msg;
  }

  async _unsubscribe(sub) {
    this.subscriptions.delete(sub.id);
    this.mirror.removeSub(sub.id);
    if (!this.connected) return;
    try {
      await this._request({ op: "unsubscribe", sub: sub.id }, "read");
    } catch (e) {
      if (!(e instanceof HubError) || !["NOT_FOUND", "UNAVAILABLE"].includes(e.code)) throw e;
    }
  }

  _send(msg) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(msg));
    this._lastSent = Date.now();
    return true;
  }

  _later(ms, fn) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  // --- internals: the connection ------------------------------------------------------

  _open() {
    let ws;
    this._helloError = null;
    try {
      ws = new this.options.WebSocket(this.url);
    } catch (e) {
      // an invalid URL: retrying does not help
      this._fail(new HubError("BAD_REQUEST", `cannot open ${this.url}: ${e?.message ?? e}`));
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      const hello = { op: "hello", id: HELLO_ID, client: this.clientName, protocol: 1 };
      if (this.options.token) hello.token = this.options.token;
      const resume = this.mirror.resume();
      if (resume) hello.resume = resume;
      this._lastRecv = Date.now();
      this._send(hello);
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      this._lastRecv = Date.now();
      let data;
      try {
        data = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch {
        this._emit("error", new HubError("INTERNAL", "a frame from the hub is not JSON"));
        return;
      }
      for (const msg of Array.isArray(data) ? data : [data]) {
        if (msg && typeof msg === "object") this._dispatch(msg, ws);
      }
    };
    ws.onclose = (ev) => this._closed(ws, ev.code, ev.reason ?? "");
    ws.onerror = () => {}; // a close event follows
  }

  _dispatch(msg, ws) {
    switch (msg.op) {
      case "welcome": return this._welcomed(msg);
      case "result": return this._result(msg);
      case "snapshot": return this._snapshot(msg);
      case "delta": return this.mirror.onDelta(msg);
      case "progress": return this.mirror.onProgress(msg.rev);
      case "event": return this._event(msg);
      case "dropped":
        this._emit("dropped", msg.events);
        for (const sub of this.subscriptions.values()) if (sub.events) sub._emit("dropped", msg.events);
        return undefined;
      case "command": return void this._command(msg, ws);
      case "error": return this._error(msg);
      default: return undefined; // ops of later revisions are ignored
    }
  }

  _welcomed(msg) {
    this.welcome = msg;
    const same = this.mirror.onWelcome(String(msg.hub));
    this.state = "connected";
    this._attempt = 0;
    this._startKeepalive();
    const subs = [...this.subscriptions.values()].map((s) => this._subscribeMessage(s));
    if (subs.length) this._send(subs); // one batched frame
    for (const w of this._waiters) w.resolve();
    this._waiters.clear();
    if (this._firstConnect) {
      this._firstConnect.resolve();
      this._firstConnect = null;
    }
    this._emit("connect", { hub: msg.hub, session: msg.session, resumed: same });
  }

  _result(msg) {
    const id = msg.id === null || msg.id === undefined ? null : String(msg.id);
    const p = id === null ? undefined : this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    clearTimeout(p.timer);
    this._timers.delete(p.timer);
    if (msg.ok) {
      if (p.kind === "subscribe") { // a subscribe without snapshot (not sent by this client)
        this.mirror.onProgress(msg.result?.rev);
        p.sub._synced("none", msg.result?.rev);
      }
      p.resolve(msg.result ?? {});
      return;
    }
    const err = HubError.fromWire(msg.error);
    if (p.kind === "subscribe") this._lose(p.sub, err);
    else p.reject(err);
  }

  _snapshot(msg) {
    const done = this.mirror.onSnapshot(msg);
    if (!done) return;
    const id = msg.id === undefined || msg.id === null ? null : String(msg.id);
    if (id !== null) this._pending.delete(id);
    const sub = this.subscriptions.get(msg.sub);
    if (sub) sub._synced(msg.mode ?? "full", msg.rev);
  }

  _routeChange(change) {
    for (const sub of this.subscriptions.values()) {
      if (sub.initialized && sub.active && sub.matches(change.key)) sub._change(change);
    }
  }

  _event(msg) {
    const ev = Object.freeze({ key: msg.key, data: msg.data ?? null, source: msg.source ?? null,
      ts: msg.ts ?? null });
    for (const sub of this.subscriptions.values()) {
      if (sub.events && sub.matches(ev.key)) sub._emit("event", ev);
    }
  }

  _error(msg) {
    const err = HubError.fromWire(msg);
    if (msg.id === HELLO_ID || this.state !== "connected") {
      this._helloError = err; // the close (1008) follows
      return;
    }
    const id = msg.id === undefined || msg.id === null ? null : String(msg.id);
    const p = id === null ? undefined : this._pending.get(id);
    if (p) {
      this._pending.delete(id);
      if (p.kind === "subscribe") this._lose(p.sub, err);
      else p.reject(err);
      return;
    }
    this.lastError = err;
    this._emit("error", err);
  }

  /** A subscribe or re-subscribe was refused: the subscription ends with the error. */
  _lose(sub, err) {
    this.subscriptions.delete(sub.id);
    this.mirror.removeSub(sub.id);
    sub._end(err);
  }

  async _command(msg, ws) {
    const name = String(msg.name ?? "");
    const fn = this._handlers.get(name);
    const reply = { op: "reply", id: msg.id };
    try {
      if (!fn) throw new HubError("NOT_FOUND", `unknown command '${name}'`);
      const params = msg.params && typeof msg.params === "object" ? msg.params : {};
      const result = await fn(params, { id: msg.id, name, source: msg.source ?? "",
        deadline: msg.deadline ?? null, hub: this });
      reply.ok = true;
      reply.result = result === undefined ? null : result;
    } catch (e) {
      reply.ok = false;
      reply.error = e instanceof HubError
        ? { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) }
        : { code: "FAILED", message: String(e?.message ?? e) || "FAILED" };
    }
    // a reply belongs to the connection that got the command; after a drop the hub
    // has already answered the caller UNAVAILABLE
    if (ws === this._ws && ws.readyState === 1) {
      ws.send(JSON.stringify(reply));
      this._lastSent = Date.now();
    }
  }

  _startKeepalive() {
    this._stopKeepalive();
    if (!this.options.keepalive) return;
    const hb = Math.max(50, Number(this.heartbeatMs) || 10000);
    const ws = this._ws;
    this._keepalive = setInterval(() => {
      if (ws !== this._ws) return;
      const now = Date.now();
      if (now - this._lastRecv > 2 * hb) {
        // a dead hub: stop waiting for its close frame
        this._closed(ws, 1006, "no frame from the hub within 2 x heartbeat_ms");
        try { ws.close(); } catch { /* already closing */ }
      } else if (now - this._lastRecv > hb / 2 && now - (this._lastSent ?? 0) > hb / 2) {
        const id = String(this._nextId++);
        this._pending.set(id, { kind: "keepalive", resolve: () => {}, reject: () => {} });
        this._send({ op: "get", id, patterns: ["hub.info"] });
      }
    }, Math.max(25, hb / 4));
    this._keepalive.unref?.();
  }

  _stopKeepalive() {
    if (this._keepalive) clearInterval(this._keepalive);
    this._keepalive = null;
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    ws.onmessage = ws.onclose = ws.onopen = null;
    this._ws = null;
    this._stopKeepalive();
    const wasConnected = this.state === "connected";
    // every request in flight has an unknown outcome
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      clearTimeout(p.timer);
      this._timers.delete(p.timer);
      p.reject(new HubError("UNAVAILABLE", "the connection to the hub was lost" +
        (p.kind === "write" ? "; the write may have been applied" : "") +
        (p.kind === "command" ? "; the command may have been executed" : "")));
    }
    if (this.state === "closed" || this.state === "replaced") return;
    if (code === CLOSE_REPLACED) {
      if (wasConnected) this._emit("disconnect", { code, reason });
      this._shutdown("replaced", this._gone("replaced"), true);
      return;
    }
    if (this._helloError) { // the hub refused the hello: retrying does not help
      if (wasConnected) this._emit("disconnect", { code, reason });
      this._fail(this._helloError);
      return;
    }
    if (wasConnected) this._emit("disconnect", { code, reason });
    if (!this.options.reconnect && !this._firstConnect) {
      this._shutdown("closed", new HubError("UNAVAILABLE", `the connection was closed (${code})`));
      return;
    }
    this.state = "connecting";
    const bound = Math.min(this.options.backoffMax, this.options.backoffBase * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 30);
    this._later(this.options.random() * bound, () => {
      if (this.state !== "connecting") return;
      this.reconnects += 1;
      this._open();
    });
  }

  /** connect() failed, or a reconnection was refused: close with that error. */
  _fail(err) {
    this.lastError = err;
    this._shutdown("closed", err);
  }

  _shutdown(state, err, replaced = false) {
    if (this.state === "closed" || this.state === "replaced") return;
    this.state = state;
    this._stopKeepalive();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onopen = null;
      try { ws.close(1000); } catch { /* already closed */ }
    }
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    for (const w of this._waiters) w.reject(err);
    this._waiters.clear();
    if (this._firstConnect) {
      this._firstConnect.reject(err);
      this._firstConnect = null;
    }
    for (const sub of this.subscriptions.values()) {
      sub._reject(err);
      sub._end();
    }
    if (replaced) this._emit("replaced");
    this._emit("closed", { state, error: err });
  }
}

export default HubClient;
