"""The Companion adapter against a hostile or broken Companion, over real sockets.

A scripted Satellite server and a scripted HTTP API stand in for a Companion that
sends what the real one should not: numbers that do not fit, locations outside the
configured grid, JSON of an unexpected shape, values far over the size limit, an
API version the adapter cannot use. Whatever comes in, the adapter's tasks stay
alive (or are restarted by their supervisor), the status tells the truth, and the
store's rules hold.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from companion_hub.adapters.companion.adapter import CompanionConfig
from companion_hub.adapters.companion.codec import parse_line
from companion_hub.adapters.companion.events import ButtonRendered
from companion_hub.adapters.companion.link import LinkTiming
from companion_hub.core.limits import Limits
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer

from .test_companion import FAST, SCENARIO, stale, value, wait_until

Script = Callable[["FakeSatellite", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FakeSatellite:
    """A Satellite server on 127.0.0.1 that runs ``script`` for each connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.lines: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):  # since 3.12 wait_closed waits for them
                w.close()
            await asyncio.wait_for(self.server.wait_closed(), 10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self.script(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def read_until(self, reader: asyncio.StreamReader, command: str) -> dict[str, Any]:
        """Read lines (answering PING) until one with ``command``; its params."""
        while True:
            raw = await reader.readline()
            if not raw:
                raise ConnectionError("closed")
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            cmd, params = parse_line(line)
            if cmd == command:
                return params


async def serve_pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while raw := await reader.readline():
        if raw.startswith(b"PING"):
            writer.write(b"PONG " + raw[5:])
            await writer.drain()


async def device_session(
    fake: FakeSatellite,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hostile: list[str],
) -> None:
    """BEGIN (API 1.14, no subscriptions): the adapter registers a device; answer it,
    render page 1, then send ``hostile`` lines and one good render after them."""
    writer.write(b'BEGIN CompanionVersion="5.1.0" ApiVersion="1.14.0" \n')
    writer.write(b"CAPS SUBSCRIPTIONS=0 \n")
    await writer.drain()
    params = await fake.read_until(reader, "ADD-DEVICE")
    dev = params["DEVICEID"]
    writer.write(f'ADD-DEVICE OK DEVICEID="{dev}" \n'.encode())
    for key in range(32):
        row, col = divmod(key, 8)
        writer.write(
            f'KEY-STATE DEVICEID="{dev}" KEY={key} LOCATION="1/{row}/{col}" PRESSED=0 '
            f'TYPE="BUTTON" TEXT="{"QQ==" if key == 0 else ""}" \n'.encode()
        )
    for line in hostile:
        writer.write(line.replace("<id>", dev).encode() + b"\n")
    writer.write(
        f'KEY-STATE DEVICEID="{dev}" KEY=1 LOCATION="1/0/1" PRESSED=0 TYPE="BUTTON" '
        f'TEXT="QUZURVI=" \n'.encode()  # "AFTER"
    )
    await writer.drain()
    await serve_pings(reader, writer)


@pytest.fixture
async def hub() -> AsyncIterator[HubServer]:
    srv = HubServer(HubConfig(port=0, limits=Limits(value_bytes=4096)))
    await srv.start()
    yield srv
    await srv.stop()


async def add_adapter(srv: HubServer, **cfg: Any) -> Any:
    from companion_hub.adapters.companion.adapter import CompanionAdapter

    cfg.setdefault("timing", FAST)
    cfg.setdefault("http", False)
    cfg.setdefault("pages", [1])
    adapter = CompanionAdapter(srv.hub, CompanionConfig(host="127.0.0.1", **cfg))
    await adapter.start()
    srv.adapters.append(adapter)
    return adapter


def status(srv: HubServer) -> dict[str, Any]:
    return value(srv, "hub.adapters.companion") or {}


@pytest.mark.parametrize(
    "hostile",
    [
        'KEY-STATE DEVICEID="<id>" KEY=0 LOCATION="1/0/0" PRESSED=0 TYPE="BUTTON" '
        'TEXT="QQ==" FONT_SIZE=inf',
        'BRIGHTNESS DEVICEID="<id>" VALUE=1e999',
        'KEY-STATE DEVICEID="<id>" KEY=2 LOCATION="1/0/' + "9" * 300 + '" PRESSED=1 TEXT="QQ=="',
        'KEY-STATE DEVICEID="<id>" KEY=99999999999999999999 LOCATION="1/0/2" TEXT="QQ=="',
    ],
    ids=["font-size-inf", "brightness-1e999", "location-300-digits", "key-index-huge"],
)
async def test_one_bad_number_does_not_end_the_satellite_link(hub: HubServer, hostile: str) -> None:
    async def script(f: FakeSatellite, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await device_session(f, r, w, [hostile])

    fake = FakeSatellite(script)
    await fake.start()
    try:
        adapter = await add_adapter(hub, satellite_port=fake.port)
        await wait_until(
            lambda: value(hub, "companion.buttons.1.0.1") is not None, what="the render after"
        )
        assert value(hub, "companion.buttons.1.0.1")["text"] == "AFTER"
        assert status(hub)["state"] == "connected"
        assert fake.connections == 1  # the link went on; no reconnect
        assert all(item.running for item in adapter.supervisor.items)
        bad = [k for ns in hub.hub.store.namespaces() for k in ns.entries if "9" * 20 in k]
        assert bad == []  # no key outside the grammar or the grid
    finally:
        await fake.stop()


async def test_bogus_pages_leave_no_keys(hub: HubServer) -> None:
    hostile = [
        f'KEY-STATE DEVICEID="<id>" KEY=3 LOCATION="{page}/0/3" PRESSED=1 TEXT="QQ=="'
        for page in range(2, 5002)
    ]

    async def script(f: FakeSatellite, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await device_session(f, r, w, hostile)

    fake = FakeSatellite(script)
    await fake.start()
    try:
        await add_adapter(hub, satellite_port=fake.port)
        await wait_until(lambda: value(hub, "companion.buttons.1.0.1") is not None)
        keys = [k for k in hub.hub.store.namespace("companion").entries if ".buttons." in k]  # type: ignore[union-attr]
        assert all(k.startswith("companion.buttons.1.") for k in keys), keys[:5]
    finally:
        await fake.stop()


async def test_an_unusable_api_version_is_retried_rarely(hub: HubServer) -> None:
    async def script(f: FakeSatellite, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b'BEGIN CompanionVersion="2.4.0" ApiVersion="1.0.0" \n')
        await w.drain()
        await serve_pings(r, w)

    fake = FakeSatellite(script)
    await fake.start()
    try:
        await add_adapter(hub, satellite_port=fake.port)
        await wait_until(lambda: status(hub).get("state") == "disconnected", what="disconnected")
        assert "too old" in status(hub)["detail"]
        await asyncio.sleep(2.0)  # FAST back-off is 0.1-0.4 s: without the rule, ~8 tries
        assert fake.connections == 1
        assert status(hub)["next_retry"] is not None
    finally:
        await fake.stop()


async def test_reconnects_back_off_until_a_link_stays_up(hub: HubServer) -> None:
    """Companion answers BEGIN and drops the link at once: each BEGIN no longer resets
    the back-off, so the retries slow down to the cap."""

    async def script(f: FakeSatellite, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b'BEGIN CompanionVersion="5.1.0" ApiVersion="1.14.0" \n')
        await w.drain()

    fake = FakeSatellite(script)
    await fake.start()
    timing = LinkTiming(
        ping_interval=0.2, dead_after=1.0, begin_timeout=1.0, reply_timeout=1.0,
        backoff_base=0.05, backoff_max=0.8, connect_timeout=1.0,
    )  # fmt: skip
    try:
        await add_adapter(hub, satellite_port=fake.port, timing=timing)
        await asyncio.sleep(3.0)
        # with the back-off reset on every BEGIN: one try per ~0.05 s (about 60)
        assert 2 <= fake.connections <= 12, fake.connections
    finally:
        await fake.stop()


async def test_a_crash_in_the_satellite_task_is_supervised(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from companion_hub.simulator import CompanionSimulator, load_scenario

    hub = HubServer(HubConfig(port=0, data_dir=str(tmp_path / "data")))
    await hub.start()
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    sim = CompanionSimulator(load_scenario(path), clock=False, connection_status_changes=False)
    await sim.start()
    try:
        adapter = await add_adapter(
            hub,
            satellite_port=sim.satellite_port,
            http_port=sim.http_port,
            http=True,
            pages=[1, 2],
            rows=2,
            columns=4,
            poll_interval=0.1,
        )
        await wait_until(lambda: status(hub).get("state") == "connected", what="connected")
        original = adapter._on_satellite_event
        boom = {"armed": True}

        def explode(ev: Any) -> None:
            if boom["armed"] and isinstance(ev, ButtonRendered):
                boom["armed"] = False
                raise RuntimeError("injected bug")
            original(ev)

        adapter.satellite.on_event = explode
        caplog.set_level(logging.ERROR, logger="companion_hub.supervisor")
        adapter.satellite.reset("provoke a resync")
        await wait_until(lambda: status(hub).get("state") == "error", what="error status")
        assert "injected bug" in status(hub)["detail"]
        assert stale(hub, "companion.buttons.1.0.0") is True
        failures = [r for r in caplog.records if r.getMessage().startswith("task failed")]
        assert len(failures) == 1 and failures[0].exc_info is not None  # with its traceback
        # restarted with back-off: connected again, keys fresh again
        await wait_until(lambda: status(hub).get("state") == "connected", what="reconnected")
        await wait_until(lambda: stale(hub, "companion.buttons.1.0.0") is False, what="fresh")
    finally:
        await hub.stop()  # never re-raises the old exception
        await sim.stop()
    # and the event log was closed cleanly: the next start needs no crash gap
    db = sqlite3.connect(tmp_path / "data" / "hub.sqlite3")
    (clean_rev,) = db.execute("SELECT v FROM meta WHERE k = 'clean_rev'").fetchone()
    (max_rev,) = db.execute("SELECT MAX(rev) FROM changes").fetchone()
    db.close()
    assert int(clean_rev) == max_rev


# --- HTTP ---------------------------------------------------------------------------------


HITS: web.AppKey[dict[str, int]] = web.AppKey("hits", dict)


async def http_api(routes: dict[str, Callable[[], web.Response]]) -> tuple[web.AppRunner, int]:
    hits: dict[str, int] = {}

    def make(path: str, fn: Callable[[], web.Response]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            hits[path] = hits.get(path, 0) + 1
            return fn()

        return handler

    app = web.Application()
    for path, fn in routes.items():
        app.router.add_get(path, make(path, fn))
    app[HITS] = hits
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def test_http_poll_survives_an_unexpected_json_shape(hub: HubServer) -> None:
    runner, port = await http_api(
        {
            "/api/variable/internal/uptime/value": lambda: web.Response(text="5"),
            "/api/connections": lambda: web.json_response([1, "x", None, {"label": "ok1"}]),
        }
    )
    try:
        await add_adapter(hub, satellite_port=1, http_port=port, http=True, poll_interval=0.05)
        await wait_until(lambda: value(hub, "companion.connections.ok1") is not None)
        hits = runner.app[HITS]
        before = hits["/api/connections"]
        await wait_until(lambda: hits["/api/connections"] >= before + 3, what="polling goes on")
        assert status(hub)["http"]["state"] == "connected"
    finally:
        await runner.cleanup()


async def test_an_oversize_upstream_value_is_refused_and_the_key_keeps_its_value(
    hub: HubServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"text": "small"}
    runner, port = await http_api(
        {
            "/api/variable/internal/uptime/value": lambda: web.Response(text="5"),
            "/api/connections": lambda: web.json_response([]),
            "/api/custom-variable/cue/value": lambda: web.Response(text=body["text"]),
        }
    )
    try:
        await add_adapter(
            hub,
            satellite_port=1,
            http_port=port,
            http=True,
            poll_interval=0.05,
            variables=["custom:cue"],
        )
        key = "companion.variables.custom.cue"
        await wait_until(lambda: value(hub, key) == "small")
        version = hub.hub.store.get(key).version  # type: ignore[union-attr]
        caplog.set_level(logging.WARNING)
        body["text"] = "x" * 50_000  # over the hub's value_bytes (4096 here)
        await wait_until(lambda: status(hub).get("refused"), what="the status says so")
        assert status(hub)["refused"]["count"] >= 1
        await asyncio.sleep(0.3)  # several more polls
        e = hub.hub.store.get(key)
        assert e is not None and value(hub, key) == "small" and e.version == version
        warnings = [r for r in caplog.records if "refused" in r.getMessage()]
        assert 1 <= len(warnings) <= 2  # rate-limited, not one per poll
    finally:
        await runner.cleanup()
