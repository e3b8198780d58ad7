// Helpers of the JS client tests: run by tests/integration/test_js_client.py, which
// sets HUB_URL (the hub's WebSocket) and CONTROL_URL (the test's own web app).
import { HubClient } from "../../src/companion_hub/web/companion-hub.js";

export const HUB_URL = process.env.HUB_URL;
export const CONTROL_URL = process.env.CONTROL_URL;
if (!HUB_URL || !CONTROL_URL) throw new Error("HUB_URL and CONTROL_URL must be set");

const clients = [];
let counter = 0;

/** A unique client name for this process. */
export function uniqueName(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}

/** A connected client; closed by closeAll(). */
export async function connected(name, options = {}) {
  const hub = new HubClient(HUB_URL, name, options);
  clients.push(hub);
  await hub.connect();
  return hub;
}

export async function closeAll() {
  await Promise.all(clients.splice(0).map((c) => c.close()));
}

/** Wait until fn() is truthy (polling), or throw after timeoutMs. */
export async function waitFor(fn, what = "condition", timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The next emission of `name` on `emitter`. */
export function once(emitter, name, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for '${name}'`)), timeoutMs);
    const off = emitter.on(name, (arg) => {
      clearTimeout(t);
      off();
      resolve(arg);
    });
  });
}

export async function control(path, body) {
  const r = await fetch(CONTROL_URL + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  return r.json();
}
