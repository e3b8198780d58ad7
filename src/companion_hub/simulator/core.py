"""CompanionSimulator: the fake Companion (Satellite TCP + WebSocket, HTTP remote control).

A :class:`~.state.CompanionState` (buttons, variables, connections, surfaces) with the
I/O around it: the three listeners, the live Satellite connections, the clock and the
fault injection. It offers the control API used by tests and the
``companion-hub simulate`` command (see docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from aiohttp import web

from companion_hub.adapters.companion.codec import MAX_LINE_CHARS

from .ember import EmberServer
from .listen import listen_socket as _listen_socket
from .model import module_status
from .satellite import (
    SatelliteConnection,
    SatelliteSession,
    TcpSatelliteConnection,
    WsSatelliteConnection,
)
from .scenario import Scenario
from .state import CompanionState

log = logging.getLogger("companion_hub.simulator")

DEFAULT_COMPANION_VERSION = "5.1.0+9100-main-3d76cba000"
DEFAULT_API_VERSION = "1.14.0"


class CompanionSimulator(CompanionState):
    """A fake Bitfocus Companion. Ports 0 pick free ports; read them after :meth:`start`."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        host: str = "127.0.0.1",
        satellite_port: int = 0,
        ws_port: int = 0,
        http_port: int = 0,
        subscriptions: bool = True,
        api_version: str = DEFAULT_API_VERSION,
        companion_version: str = DEFAULT_COMPANION_VERSION,
        connection_status_changes: bool = False,
        clock: bool = True,
        status_change_interval: float = 15.0,
        seed: int | None = None,
        ember_port: int | None = None,
    ) -> None:
        super().__init__(
            scenario,
            subscriptions=subscriptions,
            api_version=api_version,
            companion_version=companion_version,
        )
        self.host = host
        self.satellite_port = satellite_port
        self.ws_port = ws_port
        self.http_port = http_port
        self.connection_status_changes = connection_status_changes
        self.clock = clock
        self.status_change_interval = status_change_interval
        self.ember_port = ember_port  # None: no Ember+ provider; 0: a free port
        self.ember_rebuild_delay = 2.5  # a new custom variable rebuilds the provider after this
        self._ember: EmberServer | None = None

        # behaviour switches and tunables (tests shorten the timeouts)
        self.idle_timeout = 5.0
        self.ws_idle_check_interval = 3.0
        self.max_line_chars = MAX_LINE_CHARS
        self.max_queued_messages = 10_000
        self.reply_delay = 0.0
        self.http_delay = 0.0
        self.http_enabled = True
        self.http_style_applies = False  # Companion 5.x as observed: style changes nothing
        self.press_release_delay = 0.02  # HTTP /press: release after 20 ms
        # POST /api/custom-variable/<name>/value requests per name (answered or not)
        self.custom_variable_posts: dict[str, int] = {}

        self._satellite_conns: set[SatelliteConnection] = set()
        self._conn_counter = 0
        self._dropped: dict[str, int] = {}  # command -> how many more to swallow
        self.stalled = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._silent = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rng = random.Random(seed)
        self._tcp_server: asyncio.Server | None = None
        self._ws_runner: web.AppRunner | None = None
        self._http_runner: web.AppRunner | None = None
        self._running = False

    # --- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> CompanionSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the three listeners and start the background tasks."""
        if self._running:
            return
        self._started_at = time.monotonic()
        try:
            await self._open_listeners()
        except BaseException:
            await self._close_listeners()  # e.g. the second port was taken: free the first
            raise
        self._running = True
        self._remember_ticking()
        if self.clock:
            self._spawn(self._clock_loop())
        if self.connection_status_changes:
            self._spawn(self._status_loop())
        log.info(
            "simulator started",
            extra={
                "host": self.host,
                "satellite_port": self.satellite_port,
                "ws_port": self.ws_port,
                "http_port": self.http_port,
                "api_version": self.api_version,
                "subscriptions": self.subscriptions,
            },
        )

    async def stop(self) -> None:
        """Close every connection and listener, cancel every task."""
        if not self._running:
            return
        self._running = False
        self._unstalled.set()
        await self._close_listeners()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        log.info("simulator stopped")

    async def _open_listeners(self) -> None:
        tcp_sock = _listen_socket(self.host, self.satellite_port, "satellite_port")
        self._tcp_server = await asyncio.start_server(self._on_tcp, sock=tcp_sock)
        self.satellite_port = tcp_sock.getsockname()[1]

        ws_app = web.Application()
        ws_app.router.add_get("/{tail:.*}", self._on_ws)
        self._ws_runner = web.AppRunner(ws_app, access_log=None, shutdown_timeout=0.5)
        await self._ws_runner.setup()
        ws_sock = _listen_socket(self.host, self.ws_port, "ws_port")
        await web.SockSite(self._ws_runner, ws_sock).start()
        self.ws_port = ws_sock.getsockname()[1]

        from .http import build_http_app

        self._http_runner = web.AppRunner(
            build_http_app(self), access_log=None, shutdown_timeout=0.5
        )
        await self._http_runner.setup()
        http_sock = _listen_socket(self.host, self.http_port, "http_port")
        await web.SockSite(self._http_runner, http_sock).start()
        self.http_port = http_sock.getsockname()[1]

        if self.ember_port is not None:
            self._ember = EmberServer(
                self,
                self.host,
                self.ember_port,
                version=self.companion_version.split("+")[0],
                rebuild_delay=self.ember_rebuild_delay,
            )
            await self._ember.start()
            self.ember_port = self._ember.port

    async def _close_listeners(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
        await self.drop_connections()
        if self._tcp_server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 2.0)
            self._tcp_server = None
        for runner in (self._ws_runner, self._http_runner):
            if runner is not None:
                await runner.cleanup()
        if self._ember is not None:
            await self._ember.stop()
            self._ember = None
        self._ws_runner = self._http_runner = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- Satellite connections ----------------------------------------------------

    def _next_conn_id(self, kind: str) -> str:
        self._conn_counter += 1
        return f"{kind}-{self._conn_counter}"

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._running:
            writer.transport.abort()
            return
        conn = TcpSatelliteConnection(self, self._next_conn_id("tcp"), reader, writer)
        await self._serve(conn, writer.get_extra_info("peername"))

    async def _on_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            autoping=True, heartbeat=None, max_msg_size=4 * self.max_line_chars
        )
        await ws.prepare(request)
        conn = WsSatelliteConnection(self, self._next_conn_id("ws"), ws, request)
        await self._serve(conn, request.remote)
        return ws

    async def _serve(self, conn: SatelliteConnection, peer: Any) -> None:
        self._satellite_conns.add(conn)
        log.info(
            "satellite client connected",
            extra={"conn": conn.id, "transport": conn.kind, "peer": str(peer)},
        )
        try:
            await conn.serve(self._silent)
        finally:
            self._satellite_conns.discard(conn)
            log.info(
                "satellite client disconnected", extra={"conn": conn.id, "transport": conn.kind}
            )

    def _sessions(self) -> list[SatelliteSession]:
        return [conn.session for conn in self._satellite_conns]

    @property
    def satellite_clients(self) -> int:
        """Number of live Satellite connections (TCP and WebSocket)."""
        return len(self._satellite_conns)

    async def drop_connections(self) -> None:
        """Abruptly close every Satellite connection and wait until they are cleaned up."""
        conns = list(self._satellite_conns)
        for conn in conns:
            conn.close(flush=False)
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.closed.wait()) for c in conns], timeout=3.0)

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) reading and writing on every Satellite connection.

        Sockets stay open, nothing is answered (no PONG), idle timeouts are
        suspended; traffic queued meanwhile is processed/sent on resume.
        """
        self.stalled = stalled
        if stalled:
            self._unstalled.clear()
        else:
            # the idle timers were suspended: they start over now, before any task that
            # was waiting for the stall to end runs (whichever order the loop picks)
            for conn in self._satellite_conns:
                conn.restart_idle_timer()
            self._unstalled.set()
        log.info("satellite stall", extra={"stalled": stalled})

    async def _wait_unstalled(self) -> None:
        if self.stalled:
            await self._unstalled.wait()

    def silent_accept(self, silent: bool = True) -> None:
        """New connections are accepted but never get BEGIN (and are not answered)."""
        self._silent = silent

    def drop_replies(self, cmd: str, n: int = 1) -> None:
        """The next ``n`` commands ``cmd`` are swallowed: no effect, no reply (handler threw)."""
        self._dropped[cmd.upper()] = self._dropped.get(cmd.upper(), 0) + n

    def _take_dropped(self, cmd: str) -> bool:
        left = self._dropped.get(cmd, 0)
        if left <= 0:
            return False
        self._dropped[cmd] = left - 1
        return True

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes to every Satellite connection (after what is already queued)."""
        for conn in list(self._satellite_conns):
            conn.send_raw(data)
        await asyncio.sleep(0)

    async def set_subscriptions(self, enabled: bool) -> None:
        """Toggle the subscriptions setting: Companion then closes ALL Satellite connections."""
        self.subscriptions = enabled
        log.info("subscriptions setting changed", extra={"enabled": enabled})
        await self.drop_connections()

    async def restart(self, companion_version: str | None = None, downtime: float = 0.0) -> None:
        """Simulate a Companion restart.

        Every connection is closed and per-connection state forgotten, button
        press/latch state is reset, uptime restarts at 0; with ``downtime`` the
        listeners are closed for that long (connections are refused).
        """
        if companion_version is not None:
            self.companion_version = companion_version
        if downtime > 0 and self._running:
            await self._close_listeners()
            await asyncio.sleep(downtime)
            await self._open_listeners()
        else:
            await self.drop_connections()
        self._restarted()
        log.info("simulator restarted", extra={"companion_version": self.companion_version})

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0005 - (time.time() % 1.0))
            self._tick()

    def create_custom_variable(self, name: str, value: Any = "") -> None:
        """Create a custom variable while running (the Ember+ provider rebuilds later)."""
        self.set_custom_variable(name, value)

    @property
    def ember(self) -> EmberServer | None:
        """The Ember+ provider while it runs (``ember_port`` not None)."""
        return self._ember

    def restart_connection(self, conn_id: str) -> None:
        """Restart a module: ``Initializing`` now, ``ok`` shortly after."""
        status = module_status("initializing")
        self.set_connection_status(conn_id, status["category"], status["level"], None)

        async def back() -> None:
            await asyncio.sleep(0.5)
            conn = self.connections.get(conn_id)
            if conn is not None and conn.enabled:
                ok = module_status("ok")
                self.set_connection_status(conn_id, ok["category"], ok["level"], None)

        if self._running:
            self._spawn(back())

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_change_interval * (0.5 + self._rng.random()))
            enabled = [c for c in self.connections.values() if c.enabled]
            if not enabled:
                continue
            conn = self._rng.choice(enabled)
            if conn.status and conn.status.get("category") == "good":
                st = module_status(self._rng.choice(["connecting", "disconnected"]), "Reconnecting")
            else:
                st = module_status("ok")
            self.set_connection_status(conn.id, st["category"], st["level"], st["message"])
