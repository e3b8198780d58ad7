"""The dashboard (``GET /``) in a real browser: Debian's Chromium driven by Playwright.

The hub mirrors a simulated Companion (the demo scenario). Without Chromium
(``/usr/bin/chromium``) or the ``playwright`` package the browser tests are skipped,
unless the environment variable ``CI`` is set: then they fail. ``UPDATE_SCREENSHOT=1``
also writes ``docs/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from companion_hub.adapters.companion.adapter import CompanionConfig
from companion_hub.auth.tokens import TokenStore
from companion_hub.client import HubClient
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from companion_hub.simulator import CompanionSimulator, demo_scenario
from tests.integration.test_companion import FAST, adapter_state, wait_until

CHROMIUM = os.environ.get("HUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def _missing_browser() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


def _need_browser() -> None:
    reason = _missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _need_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def sim() -> AsyncIterator[CompanionSimulator]:
    s = CompanionSimulator(demo_scenario(), clock=False, connection_status_changes=False)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def hub(sim: CompanionSimulator, tmp_path: Path) -> AsyncIterator[HubServer]:
    cc = CompanionConfig(
        host="127.0.0.1",
        satellite_port=sim.satellite_port,
        http_port=sim.http_port,
        pages=[1, 2, 3],
        variables=["custom:cue", "custom:program"],
        poll_interval=0.2,
        timing=FAST,
    )
    srv = HubServer(
        HubConfig(port=0, heartbeat_ms=2000, data_dir=str(tmp_path / "data")), companions=[cc]
    )
    await srv.start()
    await wait_until(lambda: adapter_state(srv) == "connected", 8, "adapter connected")
    yield srv
    await srv.stop()


def ws_url(srv: HubServer) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


async def open_dashboard(browser: Any, srv: HubServer, errors: list[str], **kw: Any) -> Any:
    page = await browser.new_page(**kw)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"http://127.0.0.1:{srv.port}/")
    return page


async def test_dashboard_files_are_served(hub: HubServer) -> None:
    base = f"http://127.0.0.1:{hub.port}"
    async with aiohttp.ClientSession() as s:
        for path, ctype, needle in [
            ("/", "text/html", b'<script type="module" src="/dashboard.js">'),
            ("/dashboard.js", "application/javascript", b'from "/client.js"'),
            ("/dashboard.css", "text/css", b".cbtn"),
        ]:
            async with s.get(base + path) as r:
                assert r.status == 200, path
                assert r.headers["Content-Type"].startswith(ctype)
                assert r.headers["Cache-Control"] == "no-cache"
                etag = r.headers["ETag"]
                assert needle in await r.read()
            async with s.get(base + path, headers={"If-None-Match": etag}) as r:
                assert r.status == 304


async def test_dashboard_in_chromium(browser: Any, hub: HubServer, sim: CompanionSimulator) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    page = await open_dashboard(browser, hub, errors, viewport={"width": 1100, "height": 760})
    await expect(page.locator("#conn")).to_have_attribute(
        "data-state", "connected", timeout=TIMEOUT_MS
    )
    await expect(page.locator('#state-table tr[data-key="hub.info"]')).to_have_count(
        1, timeout=TIMEOUT_MS
    )

    # a key set by a Python client appears in the state view
    py = HubClient(ws_url(hub), "tally")
    await py.connect()
    row = page.locator('#state-table tr[data-key="app.tally.status"]')
    t0 = time.monotonic()
    await py.set("app.tally.status", {"cam": 2, "live": True})
    await expect(row).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(row.locator("td.value")).to_have_text('{"cam":2,"live":true}', timeout=TIMEOUT_MS)
    elapsed = time.monotonic() - t0
    print(f"set -> visible in the dashboard: {elapsed * 1000:.0f} ms")
    assert elapsed < 5.0  # the goal is 1 s; generous for loaded machines
    await expect(row).to_have_attribute("data-stale", "false")

    # the stale flip: the owner disconnects, its keys turn stale
    await py.close()
    await expect(row).to_have_attribute("data-stale", "true", timeout=TIMEOUT_MS)
    await expect(row).to_have_class("stale flash", timeout=TIMEOUT_MS)
    await expect(row.locator(".stale-label")).to_have_text("stale")
    # the filter narrows the table
    await page.fill("#state-pattern", "app.**")
    await expect(page.locator("#state-table tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)
    await page.fill("#state-pattern", "**")

    # the Companion page: a click presses the button in the simulator
    await page.click('#tabs button[data-view="companion"]')
    cam2 = page.locator('#grid .cbtn[data-location="1/0/1"]')
    await expect(cam2).to_have_text("CAM 2", timeout=TIMEOUT_MS)
    assert "rgb(0, 170, 0)" in (await cam2.evaluate("b => getComputedStyle(b).backgroundColor"))
    n0 = len(sim.presses)
    box = await cam2.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()
    await expect(cam2).to_have_attribute("data-pressed", "true", timeout=TIMEOUT_MS)
    await page.mouse.up()
    await expect(cam2).to_have_attribute("data-pressed", "false", timeout=TIMEOUT_MS)
    await wait_until(
        lambda: (
            [(p.location, p.action) for p in sim.presses[n0:]]
            == [("1/0/1", "down"), ("1/0/1", "up")]
        ),
        5,
        "down then up in the simulator",
    )
    # the button's action ran in Companion: the programme is now CAM 2
    pgm = page.locator('#grid .cbtn[data-location="1/0/4"]')
    await expect(pgm).to_have_text("PGM\nCAM 2", timeout=TIMEOUT_MS)
    # a plain click presses too
    n1 = len(sim.presses)
    await page.locator('#grid .cbtn[data-location="1/0/0"]').click()
    await wait_until(
        lambda: (
            [(p.location, p.action) for p in sim.presses[n1:]]
            == [("1/0/0", "down"), ("1/0/0", "up")]
        ),
        5,
        "the click in the simulator",
    )
    await expect(pgm).to_have_text("PGM\nCAM 1", timeout=TIMEOUT_MS)

    # clients and adapters
    await page.click('#tabs button[data-view="clients"]')
    await expect(page.locator('#clients-table tr[data-key="hub.clients.tally"]')).to_contain_text(
        "no", timeout=TIMEOUT_MS
    )
    await expect(
        page.locator('#adapters-table tr[data-key="hub.adapters.companion"]')
    ).to_contain_text("connected", timeout=TIMEOUT_MS)

    # the event log (this hub has a data dir)
    await page.click('#tabs button[data-view="log"]')
    await page.select_option("#log-type", "command")
    await expect(page.locator("#log-table tbody tr").first).to_contain_text(
        "command", timeout=TIMEOUT_MS
    )

    # the command console: a result and an error
    await page.click('#tabs button[data-view="console"]')
    await page.fill("#cmd-target", "companion")
    await page.fill("#cmd-name", "press")
    await page.fill("#cmd-params", '{"location": "1/0/2"}')
    await page.click("#console-form button[type=submit]")
    await expect(page.locator("#cmd-result")).to_contain_text('"via"', timeout=TIMEOUT_MS)
    await page.fill("#cmd-name", "nonsense")
    await page.click("#console-form button[type=submit]")
    await expect(page.locator("#cmd-result")).to_contain_text("NOT_FOUND", timeout=TIMEOUT_MS)

    if os.environ.get("UPDATE_SCREENSHOT"):
        await page.click('#tabs button[data-view="companion"]')
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # phone width: the grid still fits the screen
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.click('#tabs button[data-view="companion"]')
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width

    await page.close()
    assert errors == [], errors


async def test_dashboard_log_without_disk(browser: Any) -> None:
    srv = HubServer(HubConfig(port=0))
    await srv.start()
    try:
        errors: list[str] = []
        page = await open_dashboard(browser, srv, errors)
        await page.click('#tabs button[data-view="log"]')
        await expect_text(page, "#log-status", "no event log on disk")
        await page.close()
        # the 404 itself is reported by Chromium as a failed resource load
        assert [e for e in errors if "404" not in e] == [], errors
    finally:
        await srv.stop()


async def test_dashboard_asks_for_a_token(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    secret = TokenStore.load(str(path)).add("dashboard", "admin", client="dashboard-*")
    srv = HubServer(HubConfig(port=0, tokens_file=str(path)))
    await srv.start()
    try:
        errors: list[str] = []
        page = await open_dashboard(browser, srv, errors)
        await page.locator("#token-panel").wait_for(state="visible", timeout=TIMEOUT_MS)
        await page.fill("#token-input", secret)
        await page.click("#token-form button[type=submit]")
        await expect_attr(page, "#conn", "data-state", "connected")
        assert await page.evaluate("sessionStorage.getItem('companion-hub.token')") == (secret)
        await page.close()
    finally:
        await srv.stop()


async def expect_text(page: Any, selector: str, text: str) -> None:
    from playwright.async_api import expect

    await expect(page.locator(selector)).to_contain_text(text, timeout=TIMEOUT_MS)


async def expect_attr(page: Any, selector: str, name: str, value: str) -> None:
    from playwright.async_api import expect

    await expect(page.locator(selector)).to_have_attribute(name, value, timeout=TIMEOUT_MS)


async def test_eventsource_resumes_after_hub_restart(browser: Any, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    srv = HubServer(HubConfig(port=0, heartbeat_ms=2000, data_dir=data))
    await srv.start()
    port = srv.port
    py = HubClient(f"ws://127.0.0.1:{port}/ws", "feeder")
    await py.connect()
    await py.set("app.feeder.n", 1)
    errors: list[str] = []
    page = await open_dashboard(browser, srv, errors)
    await page.evaluate(
        """() => {
          window.sse = { snapshots: [], deltas: [], opens: 0 };
          const es = new EventSource("/api/stream?pattern=app.feeder.**");
          es.onopen = () => { window.sse.opens++; };
          es.addEventListener("snapshot", (m) => {
            const d = JSON.parse(m.data);
            window.sse.snapshots.push({ id: m.lastEventId, mode: d.mode, hub: d.hub,
                                        keys: d.entries.map((e) => e.key) });
          });
          es.addEventListener("delta", (m) => {
            const d = JSON.parse(m.data);
            window.sse.deltas.push({ id: m.lastEventId, key: d.key, value: d.value });
          });
          window.es = es;
        }"""
    )
    await page.wait_for_function("window.sse.snapshots.length === 1", timeout=TIMEOUT_MS)
    await py.set("app.feeder.n", 2)
    await page.wait_for_function("window.sse.deltas.some((d) => d.value === 2)", timeout=TIMEOUT_MS)
    first = await page.evaluate("window.sse.snapshots[0]")
    assert first["mode"] == "full" and first["keys"] == ["app.feeder.n"]
    last_id = int(await page.evaluate("window.sse.deltas.at(-1).id"))
    await py.close()
    await srv.stop()

    # the same hub (same data dir) on the same port: EventSource comes back by itself
    srv2 = HubServer(HubConfig(port=port, heartbeat_ms=2000, data_dir=data))
    for _ in range(50):
        try:
            await srv2.start()
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        pytest.fail(f"port {port} did not come free")
    try:
        await page.wait_for_function("window.sse.snapshots.length === 2", timeout=TIMEOUT_MS)
        second = await page.evaluate("window.sse.snapshots[1]")
        assert second["hub"] == first["hub"]  # the hub id survives in the data dir
        assert second["mode"] == "incremental", second  # resumed with Last-Event-ID
        assert int(second["id"]) >= last_id
        py2 = HubClient(f"ws://127.0.0.1:{port}/ws", "feeder")
        await py2.connect()
        await py2.set("app.feeder.n", 3)
        await py2.set("app.feeder.m", "new")
        await page.wait_for_function(
            "window.sse.deltas.some((d) => d.value === 3)"
            " && window.sse.deltas.some((d) => d.key === 'app.feeder.m')",
            timeout=TIMEOUT_MS,
        )
        ids = [int(i) for i in await page.evaluate("window.sse.deltas.map((d) => d.id)")]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert await page.evaluate("window.sse.opens") >= 2
        await py2.close()
        await page.evaluate("window.es.close()")
        await page.close()
    finally:
        with contextlib.suppress(Exception):
            await srv2.stop()
    # the dashboard's own WebSocket reconnecting is logged as an error by Chromium
    assert [e for e in errors if "WebSocket" not in e and "ERR_" not in e] == [], errors
