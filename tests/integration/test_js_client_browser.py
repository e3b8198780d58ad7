"""The JavaScript SDK (``/client.js``) in a real browser: Debian's Chromium via Playwright.

The same client the Node suite (tests/integration/test_js_client.py) exercises, but
loaded the way a web page loads it: ``import('/client.js')`` from a page of the hub's own
origin, using the browser's ``WebSocket``. Python SDK peers write, own keys, handle and
call commands; the hub side drops the connection to test the resume. Chromium, its
flags and the skip/fail rule (``CI``, ``HUB_CHROMIUM``) are those of test_dashboard.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from companion_hub.client import HubClient
from companion_hub.client.errors import BadRequest
from companion_hub.server.app import HubServer
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _need_browser


@pytest.fixture
async def page(hub: HubServer) -> AsyncIterator[Any]:
    """A page of the hub's origin with the SDK module loaded as ``window.M``."""
    _need_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            p = await b.new_page()
            errors: list[str] = []
            p.on("pageerror", lambda e: errors.append(str(e)))
            # any page of the hub's origin will do; this one runs no script of its own
            await p.goto(f"http://127.0.0.1:{hub.port}/client.d.ts")
            await p.evaluate(
                "async (url) => { window.M = await import('/client.js'); window.HUB_URL = url; }",
                hub.url,  # type: ignore[attr-defined]
            )
            assert await p.evaluate("typeof M.HubClient") == "function"
            yield p
            await p.evaluate(
                "async () => { for (const c of window.clients || []) await c.close(); }"
            )
            assert errors == []
        finally:
            await b.close()


@pytest.fixture
async def py(hub: HubServer) -> AsyncIterator[HubClient]:
    """A Python SDK peer owning ``app.py`` with a command handler ``add``."""
    client = HubClient(hub.url, "py")  # type: ignore[attr-defined]

    async def add(params: dict[str, Any], source: str) -> Any:
        if not isinstance(params.get("a"), int) or not isinstance(params.get("b"), int):
            raise BadRequest("'a' and 'b' must be integers")
        return {"sum": params["a"] + params["b"], "source": source}

    client.handle("add", add)
    await client.connect()
    yield client
    await client.close()


CONNECT = """async ([name, options]) => {
  const hub = new M.HubClient(HUB_URL, name, options || {});
  (window.clients ||= []).push(hub);
  await hub.connect();
  window[name.replaceAll('-', '_')] = hub;
  return { state: hub.state, hubId: hub.hubId, namespaces: hub.namespaces,
           session: Boolean(hub.sessionId) };
}"""


async def wait_js(page: Any, expression: str, arg: Any = None) -> None:
    await page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)


async def test_connect_set_get_delete_and_not_owner(
    page: Any, hub: HubServer, py: HubClient
) -> None:
    welcome = await page.evaluate(CONNECT, ["web", None])
    assert welcome["state"] == "connected" and welcome["session"]
    assert welcome["namespaces"] == ["app.web"]
    assert welcome["hubId"] == hub.hub.hub_id

    result = await page.evaluate("""async () => {
      const r1 = await web.set('app.web.status', {live: true});
      const e = await web.getEntry('app.web.status');
      const d = await web.delete('app.web.status');
      const gone = await web.getEntry('app.web.status');
      await web.set('app.web.kept', 7);
      let err = null;
      try { await web.set('app.somebody-else.x', 1); } catch (x) {
        err = { isHubError: x instanceof M.HubError, code: x.code };
      }
      return { r1, value: e.value, owner: e.owner, version: d.version,
               gone: gone === undefined, err, state: web.state };
    }""")
    assert result["r1"]["version"] == 1 and result["r1"]["rev"] > 0
    assert result["value"] == {"live": True} and result["owner"] == "app.web"
    assert result["version"] == 2 and result["gone"]
    assert result["err"] == {"isHubError": True, "code": "NOT_OWNER"}
    assert result["state"] == "connected"
    # the browser's writes reached the hub: a Python peer sees them
    kept = await py.get("app.web.kept")
    assert kept is not None and kept.value == 7 and kept.owner == "app.web"
    assert await py.get("app.web.status") is None


async def test_subscribe_snapshot_delta_and_stale(page: Any, hub: HubServer) -> None:
    writer = HubClient(hub.url, "writer")  # type: ignore[attr-defined]
    await writer.connect()
    await writer.set("app.writer.a", 1)
    await writer.set("app.writer.b", "x")

    await page.evaluate(CONNECT, ["reader", None])
    snap = await page.evaluate("""async () => {
      window.sub = reader.subscribe('app.writer.*');
      window.changes = [];
      sub.on('change', (ch) => changes.push(ch));
      await sub.ready;
      return { keys: [...sub.mirror.keys()], a: sub.get('app.writer.a').value,
               changes: changes.map((c) => c.key) };
    }""")
    assert snap == {
        "keys": ["app.writer.a", "app.writer.b"],
        "a": 1,
        "changes": ["app.writer.a", "app.writer.b"],
    }

    w = await writer.set("app.writer.a", 42)
    await wait_js(page, "() => sub.get('app.writer.a')?.value === 42")
    last = await page.evaluate("() => changes[changes.length - 1]")
    assert last["key"] == "app.writer.a" and last["value"] == 42
    assert last["version"] == w.version and last["stale"] is False
    assert await page.evaluate("() => reader.rev") >= w.rev

    await writer.close()  # the owner leaves: its keys flip stale
    await wait_js(page, "() => sub.get('app.writer.a')?.stale === true")
    flips = await page.evaluate("() => changes.filter((c) => c.stale).map((c) => c.key).sort()")
    assert flips == ["app.writer.a", "app.writer.b"]
    entry = await page.evaluate("() => sub.get('app.writer.a')")
    assert entry["value"] == 42 and entry["staleSince"] > 0


async def test_commands_both_ways(page: Any, py: HubClient) -> None:
    await page.evaluate(CONNECT, ["cmd", None])
    got = await page.evaluate("""async () => {
      const ok = await cmd.call('app.py', 'add', {a: 2, b: 3});
      let bad = null;
      try { await cmd.call('app.py', 'add', {a: 'x'}); } catch (e) {
        bad = { isHubError: e instanceof M.HubError, code: e.code };
      }
      cmd.handle('greet', async (params, ctx) => ({ hello: params.who, from: ctx.source }));
      return { ok, bad };
    }""")
    assert got == {
        "ok": {"sum": 5, "source": "cmd"},
        "bad": {"isHubError": True, "code": "BAD_REQUEST"},
    }
    assert await py.call("app.cmd", "greet", {"who": "browser"}) == {
        "hello": "browser",
        "from": "py",
    }


async def test_resume_after_the_hub_drops_the_connection(page: Any, hub: HubServer) -> None:
    writer = HubClient(hub.url, "feeder")  # type: ignore[attr-defined]
    await writer.connect()
    await writer.set("app.feeder.a", 1)
    await writer.set("app.feeder.b", 2)
    # a fixed jitter makes the reconnection wait 400 ms: time for the writes below
    await page.evaluate(
        """async () => {
      const hub = new M.HubClient(HUB_URL, 'roamer', { backoffBase: 400, random: () => 1 });
      (window.clients ||= []).push(hub);
      await hub.connect();
      window.roamer = hub;
      window.sub = hub.subscribe('app.feeder.*');
      await sub.ready;
      window.hubId = hub.hubId;
      window.events = [];
      hub.on('disconnect', (d) => events.push(['disconnect', d.code]));
      hub.on('connect', (c) => events.push(['connect', c.resumed]));
      sub.on('snapshot', (s) => events.push(['snapshot', s.mode]));
    }"""
    )

    ws = hub.hub.sessions["roamer"].connection.ws  # type: ignore[attr-defined]
    await ws.close(code=1001, message=b"dropped by the test")
    await wait_js(page, "() => roamer.state !== 'connected'")
    last = await writer.set("app.feeder.a", 99)  # while the browser is away
    await writer.delete("app.feeder.b")
    await writer.set("app.feeder.c", 3)

    await wait_js(
        page,
        "() => roamer.state === 'connected' && sub.get('app.feeder.a')?.value === 99"
        " && sub.get('app.feeder.c')?.value === 3 && !sub.get('app.feeder.b')",
    )
    after = await page.evaluate(
        "() => ({ events, reconnects: roamer.reconnects, sameHub: roamer.hubId === hubId,"
        " keys: [...sub.mirror.keys()], rev: roamer.rev })"
    )
    assert after["events"][0] == ["disconnect", 1001]
    assert ["snapshot", "incremental"] in after["events"]
    assert after["reconnects"] == 1 and after["sameHub"]
    assert after["keys"] == ["app.feeder.a", "app.feeder.c"]
    assert after["rev"] >= last.rev

    await writer.set("app.feeder.a", 100)  # deltas flow again
    await wait_js(page, "() => sub.get('app.feeder.a')?.value === 100")
    await writer.close()
