"""CompanionSimulator: the fake Companion (Satellite TCP + WebSocket, HTTP remote control).

One object owns the model (buttons, variables, connections), the listeners and
the live Satellite connections, and offers the control API used by tests and
the ``companion-hub simulate`` command (see docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from companion_hub.adapters.companion.codec import MAX_LINE_CHARS

from .model import (
    UNDEFINED,
    Button,
    Connection,
    Location,
    Look,
    format_location,
    js_number,
    module_status,
    render_template,
    template_refs,
    value_text,
)
from .satellite import (
    Device,
    SatelliteConnection,
    TcpSatelliteConnection,
    WsSatelliteConnection,
    version_tuple,
)
from .scenario import Scenario, SurfaceSettings, apply_button_fields, demo_scenario

log = logging.getLogger("companion_hub.simulator")

DEFAULT_COMPANION_VERSION = "5.1.0+9100-main-3d76cba000"
DEFAULT_API_VERSION = "1.14.0"
MAX_PRESS_RECORDS = 10_000
_TICKING = ("time_hms", "time_hm", "time_h", "time_m", "time_s", "time_unix", "uptime")
_SINGLE_REF = re.compile(r"^\$\(([^:$()\s]+):([^)$\s]+)\)$")


@dataclass(frozen=True)
class PressRecord:
    """One press, release or rotation that reached the simulator."""

    location: str  # "page/row/column"
    action: str  # "down" | "up" | "rotate"
    amount: float | None  # rotation steps (signed), None for down/up
    source: str  # "http", "satellite-device:<id>", "satellite-sub:<conn>:<subid>"
    t: float  # time.monotonic()


class CompanionSimulator:
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
    ) -> None:
        sc = (scenario if scenario is not None else demo_scenario()).copy()
        self.host = host
        self.satellite_port = satellite_port
        self.ws_port = ws_port
        self.http_port = http_port
        self.subscriptions = subscriptions
        self.api_version = api_version
        self.api = version_tuple(api_version)
        self.companion_version = companion_version
        self.connection_status_changes = connection_status_changes
        self.clock = clock
        self.status_change_interval = status_change_interval

        self.buttons: dict[Location, Button] = sc.buttons
        self.page_names: dict[int, str] = sc.page_names
        self.custom_variables: dict[str, Any] = sc.custom_variables
        self.module_variables: dict[str, dict[str, Any]] = sc.module_variables
        self.connections: dict[str, Connection] = {c.id: c for c in sc.connections}
        self.device_page = sc.device_page
        self.surfaces: dict[str, SurfaceSettings] = sc.surfaces

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

        self.presses: list[PressRecord] = []
        self._conns: set[SatelliteConnection] = set()
        self._conn_counter = 0
        self._device_owner_map: dict[str, Device] = {}
        self._surface_ids: set[str] = set()
        self._dropped: dict[str, int] = {}
        self.stalled = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._silent = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started_at = time.monotonic()
        self._internal_last: dict[str, str | None] = {}
        self._rng = random.Random(seed)
        self._tcp_server: asyncio.Server | None = None
        self._ws_runner: web.AppRunner | None = None
        self._http_runner: web.AppRunner | None = None
        self._running = False
        for loc, btn in self.buttons.items():
            btn.rendered_text = self._render_text(loc, btn)

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
        self._internal_last = {n: value_text(self._internal(n)) for n in _TICKING}
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
        tcp_sock = _listen_socket(self.host, self.satellite_port)
        self._tcp_server = await asyncio.start_server(self._on_tcp, sock=tcp_sock)
        self.satellite_port = tcp_sock.getsockname()[1]

        ws_app = web.Application()
        ws_app.router.add_get("/{tail:.*}", self._on_ws)
        self._ws_runner = web.AppRunner(ws_app, access_log=None, shutdown_timeout=0.5)
        await self._ws_runner.setup()
        ws_sock = _listen_socket(self.host, self.ws_port)
        await web.SockSite(self._ws_runner, ws_sock).start()
        self.ws_port = ws_sock.getsockname()[1]

        from .http import build_http_app

        self._http_runner = web.AppRunner(
            build_http_app(self), access_log=None, shutdown_timeout=0.5
        )
        await self._http_runner.setup()
        http_sock = _listen_socket(self.host, self.http_port)
        await web.SockSite(self._http_runner, http_sock).start()
        self.http_port = http_sock.getsockname()[1]

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
        self._conns.add(conn)
        log.info(
            "satellite client connected",
            extra={"conn": conn.id, "transport": conn.kind, "peer": str(peer)},
        )
        try:
            await conn.serve(self._silent)
        finally:
            self._conns.discard(conn)
            log.info(
                "satellite client disconnected", extra={"conn": conn.id, "transport": conn.kind}
            )

    @property
    def satellite_clients(self) -> int:
        """Number of live Satellite connections (TCP and WebSocket)."""
        return len(self._conns)

    async def drop_connections(self) -> None:
        """Abruptly close every Satellite connection and wait until they are cleaned up."""
        conns = list(self._conns)
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
            for conn in self._conns:
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
        for conn in list(self._conns):
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
        self._started_at = time.monotonic()
        for loc, btn in self.buttons.items():
            if btn.held_by or btn.latched:
                btn.held_by.clear()
                btn.latched = False
                self._emit(loc)
        self._tick()
        log.info("simulator restarted", extra={"companion_version": self.companion_version})

    # --- devices (called by connections) ------------------------------------------

    def _device_owner(self, device_id: str) -> SatelliteConnection | None:
        dev = self._device_owner_map.get(device_id)
        return dev.conn if dev is not None else None

    def _allocate_surface_id(self, base: str, unique: bool) -> str:
        if unique and base not in self._surface_ids:
            return base
        n = 1
        while f"{base}-dev{n}" in self._surface_ids:
            n += 1
        return f"{base}-dev{n}"

    def _register_device(self, dev: Device) -> None:
        self._device_owner_map[dev.device_id] = dev
        self._surface_ids.add(dev.surface_id)

    def _unregister_device(self, dev: Device) -> None:
        if self._device_owner_map.get(dev.device_id) is dev:
            del self._device_owner_map[dev.device_id]
        self._surface_ids.discard(dev.surface_id)

    def devices(self) -> list[Device]:
        """Every registered Satellite device."""
        return list(self._device_owner_map.values())

    def surface_settings(self, surface_id: str) -> SurfaceSettings:
        """The stored settings of a surface id (created with defaults on first use)."""
        settings = self.surfaces.get(surface_id)
        if settings is None:
            settings = self.surfaces[surface_id] = SurfaceSettings()
        return settings

    def bind_input(self, surface_id: str, input_id: str, custom_variable: str | None) -> None:
        """Bind a device's declared input to a custom variable (as the user would)."""
        inputs = self.surface_settings(surface_id).inputs
        if custom_variable is None:
            inputs.pop(input_id, None)
        else:
            inputs[input_id] = custom_variable

    def bind_output(self, surface_id: str, output_id: str, expression: str | None) -> None:
        """Set an output's expression. Like Companion, this does not re-evaluate it."""
        outputs = self.surface_settings(surface_id).outputs
        if expression is None:
            outputs.pop(output_id, None)
        else:
            outputs[output_id] = expression

    def set_device_page(self, device_id: str, page: int) -> None:
        """Show another page on a device (full redraw)."""
        dev = self._device_owner_map.get(device_id)
        if dev is None:
            raise KeyError(device_id)
        self._set_page(dev, page)

    def change_device_page(self, dev: Device, spec: str) -> None:
        """``+1`` / ``-1`` (wrapping over the pages that exist) or an absolute page."""
        last = max([*self.page_names, *(loc[0] for loc in self.buttons), 1])
        if spec == "+1":
            page = dev.page % last + 1
        elif spec == "-1":
            page = (dev.page - 2) % last + 1
        else:
            page = int(spec)
        self._set_page(dev, page)

    def _set_page(self, dev: Device, page: int) -> None:
        if page == dev.page:
            return
        dev.page = page
        self.surface_settings(dev.surface_id).page = page
        log.info("device page changed", extra={"device_id": dev.device_id, "page": page})
        dev.conn.redraw(dev)
        dev.conn.variables_changed(frozenset({"this:page", "this:page_name"}), only=dev)

    def rotation_amount(self, direction: str | bool) -> float:
        """Signed steps for a ``DIRECTION`` value, per the emulated API version (1.5.4)."""
        text = "1" if direction is True else str(direction)
        if self.api >= (1, 14, 0):
            n = js_number(text)
            if n is None:
                return 1.0 if text >= "1" else -1.0
            return -1.0 if n == 0 else n
        return 1.0 if text >= "1" else -1.0

    # --- buttons ------------------------------------------------------------------

    def button(self, page: int, row: int, col: int) -> Button | None:
        return self.buttons.get((page, row, col))

    def set_button(self, page: int, row: int, col: int, **fields: Any) -> Button:
        """Change (or create) a button; whoever shows it gets a new SUB-STATE/KEY-STATE.

        Fields: text, bgcolor, color, font_size, type, behaviour (as in a scenario).
        """
        loc = (page, row, col)
        btn = self.buttons.get(loc)
        if btn is None:
            btn = Button()
        apply_button_fields(btn, fields, f"button {format_location(loc)}")
        self.buttons[loc] = btn
        btn.rendered_text = self._render_text(loc, btn)
        self._emit(loc)
        return btn

    def remove_button(self, page: int, row: int, col: int) -> None:
        """Delete a button: subscribers and devices then see an empty render."""
        if self.buttons.pop((page, row, col), None) is not None:
            self._emit((page, row, col))

    def look_at(self, loc: Location) -> Look:
        btn = self.buttons.get(loc)
        return btn.look() if btn is not None else Look()

    def _emit(self, loc: Location) -> None:
        for conn in list(self._conns):
            conn.location_changed(loc)

    def _render_text(self, loc: Location, btn: Button) -> str:
        def lookup(label: str, name: str) -> Any:
            if label == "this":
                return {
                    "page": loc[0],
                    "row": loc[1],
                    "column": loc[2],
                    "page_name": self.page_names.get(loc[0], f"Page {loc[0]}"),
                }.get(name, UNDEFINED)
            return self.variable_value(label, name)

        return render_template(btn.text, lookup)

    # --- presses ------------------------------------------------------------------

    def _record(self, loc: Location, action: str, amount: float | None, source: str) -> None:
        self.presses.append(
            PressRecord(format_location(loc), action, amount, source, time.monotonic())
        )
        if len(self.presses) > MAX_PRESS_RECORDS:
            del self.presses[: len(self.presses) - MAX_PRESS_RECORDS]
        log.debug(
            "press",
            extra={"location": format_location(loc), "action": action, "source": source},
        )

    def has_control(self, loc: Location) -> bool:
        return loc in self.buttons

    def press(self, loc: Location, down: bool, source: str = "api") -> bool:
        """Press or release a location as ``source``; False if no control is there."""
        return self._press(loc, down, source, None)

    def _press(self, loc: Location, down: bool, source: str, dev: Device | None) -> bool:
        self._record(loc, "down" if down else "up", None, source)
        btn = self.buttons.get(loc)
        if btn is None:
            return False
        if btn.type != "BUTTON":
            if down and dev is not None:
                if btn.type == "PAGEUP":
                    self.change_device_page(dev, "+1")
                elif btn.type == "PAGEDOWN":
                    self.change_device_page(dev, "-1")
                else:
                    self._set_page(dev, self.device_page)
            return True
        before = btn.look()
        behaviour = btn.behaviour
        if down:
            btn.held_by.add(source)
            if behaviour == "latch":
                btn.latched = not btn.latched
            elif behaviour.startswith("counter:"):
                self._add_to_variable(behaviour[8:], 1)
            elif behaviour.startswith("set:"):
                name, _, value = behaviour[4:].partition("=")
                self.set_custom_variable(name, value)
            elif behaviour.startswith("page:") and dev is not None:
                self.change_device_page(dev, behaviour[5:])
        else:
            btn.held_by.discard(source)
        if btn.look() != before:
            self._emit(loc)
        return True

    def _rotate(self, loc: Location, amount: float, source: str, dev: Device | None) -> bool:
        self._record(loc, "rotate", amount, source)
        btn = self.buttons.get(loc)
        if btn is None:
            return False
        if btn.behaviour.startswith("counter:"):
            self._add_to_variable(btn.behaviour[8:], amount)
        return True

    def rotate(self, loc: Location, amount: float, source: str = "api") -> bool:
        return self._rotate(loc, amount, source, None)

    def set_step(self, loc: Location, step: float) -> bool | None:
        """HTTP ``step``: None when the control has no steps, False for a bad step."""
        btn = self.buttons.get(loc)
        if btn is None or btn.steps == 0:
            return None
        if not step.is_integer() or not 1 <= step <= btn.steps:
            return False
        if btn.behaviour == "latch":
            latched = step == 2
            if latched != btn.latched:
                btn.latched = latched
                self._emit(loc)
        return True

    def _add_to_variable(self, name: str, amount: float) -> None:
        current = self.custom_variables.get(name, 0)
        if isinstance(current, str):
            parsed = js_number(current)
            current = parsed if parsed is not None else 0
        if isinstance(current, bool) or not isinstance(current, int | float):
            current = 0
        total = current + amount
        if isinstance(total, float) and total.is_integer():
            total = int(total)
        self.set_custom_variable(name, total)

    # --- variables ----------------------------------------------------------------

    def set_custom_variable(self, name: str, value: Any) -> None:
        """Set (or create) a custom variable; buttons and outputs referencing it update."""
        old = self.custom_variables.get(name, UNDEFINED)
        exists = name in self.custom_variables
        self.custom_variables[name] = value
        if exists and type(old) is type(value) and old == value:
            return
        self._variables_changed({f"custom:{name}", f"internal:custom_{name}"})

    def set_module_variable(self, label: str, name: str, value: Any) -> None:
        """Set a module (connection) variable ``$(label:name)``."""
        values = self.module_variables.setdefault(label, {})
        old = values.get(name, UNDEFINED)
        values[name] = value
        if type(old) is type(value) and old == value:
            return
        self._variables_changed({f"{label}:{name}"})

    def variable_value(self, label: str, name: str) -> Any:
        """The value of ``$(label:name)`` or UNDEFINED (the HTTP ``/api/variable`` lookup)."""
        if label == "custom":
            return self.custom_variables.get(name, UNDEFINED)
        if label == "internal":
            if name.startswith("custom_"):
                return self.custom_variables.get(name[7:], UNDEFINED)
            return self._internal(name)
        return self.module_variables.get(label, {}).get(name, UNDEFINED)

    def _internal(self, name: str) -> Any:
        now = time.localtime()
        if name == "time_hms":
            return time.strftime("%H:%M:%S", now)
        if name == "time_hm":
            return time.strftime("%H:%M", now)
        if name == "time_h":
            return time.strftime("%H", now)
        if name == "time_m":
            return time.strftime("%M", now)
        if name == "time_s":
            return time.strftime("%S", now)
        if name == "time_unix":
            return int(time.time())
        if name == "date_iso":
            return time.strftime("%Y-%m-%d", now)
        if name == "uptime":
            return int(time.monotonic() - self._started_at)
        if name in ("instance_errors", "instance_warns", "instance_oks", "instance_disabled"):
            want = {
                "instance_errors": "error",
                "instance_warns": "warning",
                "instance_oks": "good",
            }.get(name)
            count = 0
            for conn in self.connections.values():
                if name == "instance_disabled":
                    count += not conn.enabled
                elif conn.enabled and conn.status and conn.status.get("category") == want:
                    count += 1
            return count
        return UNDEFINED

    def _variables_changed(self, names: set[str]) -> None:
        frozen = frozenset(names)
        for loc, btn in list(self.buttons.items()):
            if btn.refs & frozen:
                text = self._render_text(loc, btn)
                if text != btn.rendered_text:
                    btn.rendered_text = text
                    self._emit(loc)
        for conn in list(self._conns):
            conn.variables_changed(frozen)

    def evaluate_expression(
        self, expr: str, dev: Device | None
    ) -> tuple[str | None, frozenset[str]]:
        """An output binding's value text (None = no value) and the variables it uses."""
        refs = template_refs(expr)

        def lookup(label: str, name: str) -> Any:
            if label == "this" and dev is not None:
                return {
                    "page": dev.page,
                    "page_name": self.page_names.get(dev.page, f"Page {dev.page}"),
                    "surface_id": dev.surface_id,
                }.get(name, UNDEFINED)
            return self.variable_value(label, name)

        if not expr.strip():
            return None, refs
        m = _SINGLE_REF.match(expr.strip())
        if m:
            return value_text(lookup(m.group(1), m.group(2))), refs
        return render_template(expr, lookup), refs

    def _tick(self) -> None:
        changed: set[str] = set()
        for name in _TICKING:
            text = value_text(self._internal(name))
            if self._internal_last.get(name) != text:
                self._internal_last[name] = text
                changed.add(f"internal:{name}")
        if changed:
            self._variables_changed(changed)

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0005 - (time.time() % 1.0))
            self._tick()

    # --- connections --------------------------------------------------------------

    def set_connection_status(
        self, conn_id: str, category: str | None, level: str | None, message: str | None = None
    ) -> None:
        conn = self.connections[conn_id]
        conn.status = {"category": category, "level": level, "message": message}
        log.info(
            "connection status",
            extra={"connection": conn_id, "category": category, "level": level},
        )
        self._variables_changed(
            {"internal:instance_errors", "internal:instance_warns", "internal:instance_oks"}
        )

    def set_connection_enabled(self, conn_id: str, enabled: bool) -> None:
        conn = self.connections[conn_id]
        if conn.enabled == enabled:
            return
        conn.enabled = enabled
        conn.status = module_status("ok" if enabled else None, None if enabled else "Disabled")
        self._variables_changed(
            {
                "internal:instance_errors",
                "internal:instance_warns",
                "internal:instance_oks",
                "internal:instance_disabled",
            }
        )

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


def _listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
