"""The Satellite protocol, server side: one object per TCP or WebSocket connection.

Implements reference section 1 (and the checklist of section 5, items 1-24): the
handshake, framing with the 2 MiB cap, every command with Companion's validation
order and texts, devices in grid and manifest mode, subscriptions, transferable
variables, idle timeouts. Model changes arrive from the simulator through
:meth:`SatelliteConnection.location_changed` and friends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import sys
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from aiohttp import WSMsgType, web

from companion_hub.adapters.companion.codec import (
    Base64Error,
    LineBuffer,
    Params,
    b64_decode_json,
    b64_json,
    b64_text,
    format_line,
    is_falsey,
    is_truthy,
    parse_line,
)

from .model import Location, RenderStyle, format_location, js_number, style_args

if TYPE_CHECKING:
    from .core import CompanionSimulator

log = logging.getLogger("companion_hub.simulator")

READ_CHUNK = 65536
_ID_RE = re.compile(r"^[a-zA-Z0-9\-/]+$")
_LOCATION_RE = re.compile(r"^\d+/\d+/\d+$")
_INDEX_RE = re.compile(r"^\+?\d+$")
_ROWCOL_RE = re.compile(r"^\+?(\d+)/\+?(\d+)$")
_FORBIDDEN_IDS = frozenset({"__proto__", "constructor", "prototype"})
_CONFIG_TYPES = frozenset({"static-text", "textinput", "dropdown", "number", "checkbox"})


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"1.14.0"`` → ``(1, 14, 0)`` (pre-release/build suffixes ignored)."""
    core = re.split(r"[-+]", version, maxsplit=1)[0]
    parts = [int(p) if p.isdigit() else 0 for p in core.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def b64_decode_lenient(value: str) -> str:
    """Decode base64 the way Node's ``Buffer.from(x, 'base64')`` does: never fails.

    Characters outside the alphabet are skipped, padding is optional, a dangling
    final character is dropped, invalid UTF-8 becomes U+FFFD.
    """
    chars = "".join(c for c in value if c.isalnum() or c in "+/-_")
    chars = chars.replace("-", "+").replace("_", "/")
    if len(chars) % 4 == 1:
        chars = chars[:-1]
    chars += "=" * (-len(chars) % 4)
    try:
        return base64.b64decode(chars).decode("utf-8", "replace")
    except binascii.Error:  # pragma: no cover - the alphabet is already filtered
        return ""


def _present(params: Params, key: str) -> str | None:
    """A required string parameter: None when absent, empty or a bare flag."""
    value = params.get(key)
    if isinstance(value, str) and value != "":
        return value
    return None


def _nonempty(params: Params, key: str) -> str | bool | None:
    """A required value that may be a bare flag (``PRESSED``, ``DIRECTION``)."""
    value = params.get(key)
    if value is None or value == "" or value is False:
        return None
    return value


def _bitmap_size(value: str | bool | None) -> int | None:
    """``BITMAPS``/``BITMAP``: falsey → none, number ≥ 5 → that size, else 72 px."""
    if is_falsey(value):
        return None
    if isinstance(value, str):
        n = js_number(value)
        if n is not None and n >= 5:
            return int(n)
    return 72


def _colors(value: str | bool | None) -> str | None:
    if is_falsey(value):
        return None
    return value if value in ("hex", "rgb") else "hex"


@dataclass
class Control:
    row: int
    column: int
    style: RenderStyle


@dataclass(eq=False)
class Device:
    """A registered Satellite device (a surface)."""

    device_id: str
    product_name: str
    surface_id: str
    conn: SatelliteConnection
    page: int
    cols: int
    rows: int
    keys_total: int = 0  # grid mode
    style: RenderStyle = field(default_factory=RenderStyle)  # grid mode
    controls: dict[str, Control] | None = None  # manifest mode
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    config_defaults: dict[str, Any] | None = None
    can_change_page: bool = False
    pincode_lock: str | None = None
    brightness_slider: bool = True
    firmware_update_url: str = ""
    held: dict[str, Location] = field(default_factory=dict)
    output_last: dict[str, str] = field(default_factory=dict)
    output_refs: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def manifest(self) -> bool:
        return self.controls is not None

    def cells(self) -> Iterator[tuple[tuple[str, Any], int, int, RenderStyle]]:
        """Every control: ((KEY|CONTROLID, id), row, column, style)."""
        if self.controls is not None:
            for cid, ctl in self.controls.items():
                yield ("CONTROLID", cid), ctl.row, ctl.column, ctl.style
        else:
            for i in range(self.keys_total):
                yield ("KEY", i), i // self.cols, i % self.cols, self.style

    def cells_at(self, row: int, column: int) -> Iterator[tuple[tuple[str, Any], RenderStyle]]:
        if self.controls is not None:
            for cid, ctl in self.controls.items():
                if ctl.row == row and ctl.column == column:
                    yield ("CONTROLID", cid), ctl.style
        elif 0 <= row < self.rows and 0 <= column < self.cols:
            index = row * self.cols + column
            if index < self.keys_total:
                yield ("KEY", index), self.style


@dataclass(eq=False)
class Subscription:
    sub_id: str
    location: Location
    style: RenderStyle


class SatelliteConnection:
    """Transport-independent connection state and command handling."""

    kind = "?"

    def __init__(self, sim: CompanionSimulator, conn_id: str) -> None:
        self.sim = sim
        self.id = conn_id
        self.devices: dict[str, Device] = {}
        self.subs: dict[str, Subscription] = {}
        self._buffer = LineBuffer(max_chars=sys.maxsize)  # the cap is checked per chunk below
        self._out: deque[tuple[str, Any]] = deque()
        self._states: dict[Hashable, str] = {}
        self._out_event = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handles: set[asyncio.Handle] = set()
        self.closing = False
        self._flush_on_close = False
        self.closed = asyncio.Event()
        self.last_activity = asyncio.get_running_loop().time()

    # --- transport hooks ----------------------------------------------------------

    async def _write(self, line: str) -> None:
        raise NotImplementedError

    async def _write_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Close the underlying socket at once (pending output is lost)."""
        raise NotImplementedError

    async def _read_loop(self, silent: bool) -> None:
        raise NotImplementedError

    async def _idle_watchdog(self) -> None:
        raise NotImplementedError

    def restart_idle_timer(self) -> None:
        """Count now as activity (the end of a stall: idle time starts over)."""
        self.last_activity = asyncio.get_running_loop().time()

    async def serve(self, silent: bool) -> None:
        """Run the connection until it closes; then flush (if asked) and clean up."""
        writer = self.spawn(self.writer_loop())
        if not silent:
            self.send_hello()
            self.spawn(self._idle_watchdog())
        try:
            await self._read_loop(silent)
        finally:
            if self._flush_on_close and not writer.done():
                try:
                    await asyncio.wait_for(asyncio.shield(writer), 2.0)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    pass
            self.closing = True
            self.cancel_all()
            self.forget()
            self.abort()
            self.closed.set()

    # --- output -------------------------------------------------------------------

    def _log_extra(self, **fields: Any) -> dict[str, Any]:
        return {"conn": self.id, "transport": self.kind, **fields}

    def _enqueue(self, kind: str, item: Any) -> None:
        if self.closing and kind != "close":
            return
        if len(self._out) >= self.sim.max_queued_messages:
            log.warning(
                "satellite client does not read; closing",
                extra=self._log_extra(queued=len(self._out)),
            )
            self.closing = True
            self.abort()
            return
        self._out.append((kind, item))
        self._out_event.set()

    def send(self, line: str) -> None:
        """Queue one message (a reply or an event), in order."""
        self._enqueue("line", line)

    def send_state(self, key: Hashable, line: str) -> None:
        """Queue a state message, replacing a not yet written one with the same key."""
        if self.closing:
            return
        if key in self._states:
            self._states[key] = line  # coalesced: newest wins, position kept
            return
        self._states[key] = line
        self._enqueue("state", key)

    def send_raw(self, data: bytes) -> None:
        """Queue raw bytes (fault injection), in order with the messages."""
        self._enqueue("raw", data)

    def reply(self, cmd: str, status: str, device_id: str | None = None, **kw: Any) -> None:
        args = list(kw.items())
        self.send(format_line(cmd, status, device_id, args))

    def error(self, cmd: str, message: str, device_id: str | None = None) -> None:
        self.send(format_line(cmd, "ERROR", device_id, [("MESSAGE", message)]))

    async def writer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._out:
                self._out_event.clear()
                await self._out_event.wait()
            await self.sim._wait_unstalled()
            kind, item = self._out.popleft()
            if kind == "close":
                self.abort()
                return
            try:
                if kind == "raw":
                    await self._write_raw(item)
                else:
                    await self._write(self._states.pop(item) if kind == "state" else item)
            except (ConnectionError, OSError, RuntimeError) as exc:
                log.debug("satellite write failed", extra=self._log_extra(error=str(exc)))
                self.abort()
                return
            self.last_activity = loop.time()

    def close(self, *, flush: bool) -> None:
        """Close the connection; with ``flush`` after the queued messages are written."""
        if self.closing:
            if not flush:
                self.abort()
            return
        self.closing = True
        if flush:
            self._flush_on_close = True
            self._out.append(("close", None))
            self._out_event.set()
        else:
            self.abort()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.Handle

        def run() -> None:
            self._handles.discard(handle)
            if not self.closing:
                fn(*args)

        handle = loop.call_later(delay, run) if delay > 0 else loop.call_soon(run)
        self._handles.add(handle)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for handle in list(self._handles):
            handle.cancel()
        self._handles.clear()

    # --- handshake ----------------------------------------------------------------

    def send_hello(self) -> None:
        sim = self.sim
        self.send(
            format_line(
                "BEGIN",
                args=[("CompanionVersion", sim.companion_version), ("ApiVersion", sim.api_version)],
            )
        )
        api = sim.api
        if api >= (1, 10, 0):
            caps: list[tuple[str, Any]] = [("SUBSCRIPTIONS", sim.subscriptions)]
            if api >= (1, 11, 0):
                caps.append(("NONSQUARE", True))
            if api >= (1, 12, 0):
                caps.append(("BITMAP_FORMATS", "rgb,png,webp"))
            if api >= (1, 14, 0):
                caps.append(("ROTARY_AMOUNT", True))
            self.send(format_line("CAPS", args=caps))

    # --- input --------------------------------------------------------------------

    async def feed(self, data: bytes | str) -> None:
        """Process a received chunk: every complete line, then the line cap."""
        for line in self._buffer.feed(data):
            if self.closing:
                return
            if self.sim.reply_delay > 0:
                await asyncio.sleep(self.sim.reply_delay)
                if self.closing:
                    return
            try:
                self.handle_line(line)
            except Exception:  # a bug here must not kill the connection; Companion logs too
                log.exception("satellite handler failed", extra=self._log_extra(line=line[:200]))
        if self._buffer.pending > self.sim.max_line_chars:
            log.info("satellite line too long", extra=self._log_extra(chars=self._buffer.pending))
            self._buffer = LineBuffer(max_chars=sys.maxsize)
            self.send(format_line("ERROR", "ERROR", args=[("MESSAGE", "Line too long")]))
            self.close(flush=True)

    def handle_line(self, line: str) -> None:
        cmd, params = parse_line(line)
        if self.sim._take_dropped(cmd):
            log.info("satellite reply dropped (fault injection)", extra=self._log_extra(cmd=cmd))
            return
        if cmd == "PING":
            body = line.replace("\r", "", 1).partition(" ")[2]
            self.send(f"PONG {body} \n")
            return
        if cmd == "PONG":
            return
        if cmd == "QUIT":
            self.close(flush=True)
            return
        entry = _COMMANDS.get(cmd)
        if entry is None or self.sim.api < entry[0]:
            self.send(format_line("ERROR", args=[("MESSAGE", f"Unknown command: {cmd}")]))
            return
        entry[1](self, params)

    # --- devices ------------------------------------------------------------------

    def _device(self, cmd: str, params: Params) -> Device | None:
        device_id = _present(params, "DEVICEID")
        if device_id is None:
            self.error(cmd, "Missing DEVICEID")
            return None
        dev = self.devices.get(device_id)
        if dev is None:
            self.error(cmd, "Device not found", device_id)
        return dev

    def cmd_add_device(self, params: Params) -> None:
        cmd = "ADD-DEVICE"
        sim = self.sim
        api = sim.api
        device_id = _present(params, "DEVICEID")
        if device_id is None:
            self.error(cmd, "Missing DEVICEID")
            return
        product = _present(params, "PRODUCT_NAME")
        if product is None:
            self.error(cmd, "Missing PRODUCT_NAME", device_id)
            return
        serial = _present(params, "SERIAL") if api >= (1, 10, 0) else None
        base_id = serial or device_id
        if base_id.startswith(("emulator:", "group:")):
            self.error(cmd, "Reserved SERIAL" if serial else "Reserved DEVICEID", device_id)
            return
        if device_id in self.devices:
            self.error(cmd, "Device already added", device_id)
            return
        other = sim._device_owner(device_id)
        if other is not None and other is not self:
            log.info(
                "device exists elsewhere",
                extra=self._log_extra(device_id=device_id, other=other.id),
            )
            other.error(cmd, "Device exists elsewhere", device_id)
            return  # the requester gets no reply at all
        bitmap_format = "rgb"
        if api >= (1, 12, 0) and params.get("BITMAP_FORMAT") in ("png", "webp"):
            bitmap_format = str(params["BITMAP_FORMAT"])
        controls: dict[str, Control] | None = None
        keys_total = cols = rows = 0
        style = RenderStyle()
        if api >= (1, 9, 0) and "LAYOUT_MANIFEST" in params:
            controls = parse_manifest(params["LAYOUT_MANIFEST"], bitmap_format)
            if controls is None:
                self.error(cmd, "Invalid LAYOUT_MANIFEST", device_id)
                return
            cols = max((c.column for c in controls.values()), default=-1) + 1
            rows = max((c.row for c in controls.values()), default=-1) + 1
        else:
            total = _grid_number(params.get("KEYS_TOTAL", "32"), 2000)
            if total is None:
                self.error(cmd, "Invalid KEYS_TOTAL", device_id)
                return
            per_row = _grid_number(params.get("KEYS_PER_ROW", "8"), 1000)
            if per_row is None:
                self.error(cmd, "Invalid KEYS_PER_ROW", device_id)
                return
            keys_total, cols = total, per_row
            rows = -(-total // per_row)
            size = _bitmap_size(params.get("BITMAPS"))
            style = RenderStyle(
                bitmap=(size, size) if size else None,
                colors=_colors(params.get("COLORS")),
                text=is_truthy(params.get("TEXT")),
                text_style=is_truthy(params.get("TEXT_STYLE")),
                bitmap_format=bitmap_format,
            )
        inputs: list[str] = []
        outputs: list[str] = []
        if api >= (1, 7, 0) and "VARIABLES" in params:
            parsed = parse_variables(params["VARIABLES"])
            if parsed is None:
                self.error(cmd, "Invalid VARIABLES", device_id)
                return
            inputs, outputs = parsed
        config_defaults: dict[str, Any] | None = None
        if api >= (1, 10, 0) and "CONFIG_FIELDS" in params:
            fields_ok = parse_config_fields(params["CONFIG_FIELDS"])
            if fields_ok is None:
                self.error(cmd, "Invalid CONFIG_FIELDS", device_id)
                return
            config_defaults = fields_ok
        unique = True
        if api >= (1, 10, 0) and "SERIAL_IS_UNIQUE" in params:
            unique = is_truthy(params["SERIAL_IS_UNIQUE"])
        surface_id = sim._allocate_surface_id(base_id, unique)
        settings = sim.surface_settings(surface_id)
        pin = params.get("PINCODE_LOCK") if api >= (1, 8, 0) else None
        can_change = params.get("CAN_CHANGE_PAGE") if api >= (1, 10, 0) else None
        dev = Device(
            device_id=device_id,
            product_name=product,
            surface_id=surface_id,
            conn=self,
            page=settings.page or sim.device_page,
            cols=cols,
            rows=rows,
            keys_total=keys_total,
            style=style,
            controls=controls,
            inputs=inputs,
            outputs=outputs,
            config_defaults=config_defaults,
            can_change_page=isinstance(can_change, str) and can_change != "",
            pincode_lock=pin if pin in ("FULL", "PARTIAL") else None,
            brightness_slider="BRIGHTNESS" not in params or is_truthy(params.get("BRIGHTNESS")),
        )
        self.devices[device_id] = dev
        sim._register_device(dev)
        log.info(
            "satellite device added",
            extra=self._log_extra(
                device_id=device_id,
                surface_id=surface_id,
                mode="manifest" if controls is not None else "grid",
                page=dev.page,
            ),
        )
        self.reply(cmd, "OK", device_id)
        self.later(0, self._after_add, dev)

    def _after_add(self, dev: Device) -> None:
        if self.devices.get(dev.device_id) is not dev:
            return
        sim = self.sim
        settings = sim.surface_settings(dev.surface_id)
        self.send(format_line("BRIGHTNESS", None, dev.device_id, [("VALUE", settings.brightness)]))
        for input_id in dev.inputs:
            target = settings.inputs.get(input_id)
            if target and target in sim.custom_variables:
                sim.set_custom_variable(target, "")
        if dev.config_defaults:
            self.send(
                format_line(
                    "DEVICE-CONFIG",
                    None,
                    dev.device_id,
                    [("CONFIG", b64_json(dev.config_defaults))],
                )
            )
        self.redraw(dev)
        self.later(0.01, self._initial_outputs, dev)

    def _initial_outputs(self, dev: Device) -> None:
        if self.devices.get(dev.device_id) is not dev:
            return
        for out_id in dev.outputs:
            self._evaluate_output(dev, out_id, initial=True)

    def _evaluate_output(self, dev: Device, out_id: str, *, initial: bool = False) -> None:
        expr = self.sim.surface_settings(dev.surface_id).outputs.get(out_id)
        if expr is None:
            dev.output_refs.pop(out_id, None)
            return
        text, refs = self.sim.evaluate_expression(expr, dev)
        dev.output_refs[out_id] = refs
        if text is None:
            return
        if not initial and dev.output_last.get(out_id) == text:
            return
        dev.output_last[out_id] = text
        self.send(
            format_line(
                "VARIABLE-VALUE",
                None,
                dev.device_id,
                [("VARIABLE", out_id), ("VALUE", b64_text(text))],
            )
        )

    def variables_changed(self, names: frozenset[str], only: Device | None = None) -> None:
        """Re-evaluate outputs whose last expression referenced one of ``names``."""
        for dev in list(self.devices.values()):
            if only is not None and dev is not only:
                continue
            for out_id, refs in list(dev.output_refs.items()):
                if refs & names:
                    self._evaluate_output(dev, out_id)

    def cmd_remove_device(self, params: Params) -> None:
        dev = self._device("REMOVE-DEVICE", params)
        if dev is None:
            return
        self._remove_device(dev)
        self.reply("REMOVE-DEVICE", "OK", dev.device_id)

    def _remove_device(self, dev: Device) -> None:
        self.devices.pop(dev.device_id, None)
        self.sim._unregister_device(dev)
        log.info("satellite device removed", extra=self._log_extra(device_id=dev.device_id))

    def _key_of(self, cmd: str, dev: Device, params: Params, second: str) -> str | None:
        """Validate KEY/CONTROLID and ``second`` (PRESSED/DIRECTION) in Companion's order.

        Returns the control name (``"5"`` or the control id) or None after an error.
        """
        if dev.controls is not None:
            cid = _present(params, "CONTROLID")
            if cid is None:
                self.error(cmd, "Missing CONTROLID", dev.device_id)
                return None
            if _nonempty(params, second) is None:
                self.error(cmd, f"Missing {second}", dev.device_id)
                return None
            if cid not in dev.controls:
                self.error(cmd, "Unknown CONTROLID", dev.device_id)
                return None
            return cid
        key = params.get("KEY")
        if key is None or key == "" or key is False:
            self.error(cmd, "Missing KEY", dev.device_id)
            return None
        index = _grid_index(key, dev)
        if index is None:
            self.error(cmd, "Invalid KEY", dev.device_id)
            return None
        if _nonempty(params, second) is None:
            self.error(cmd, f"Missing {second}", dev.device_id)
            return None
        return str(index)

    def _cell(self, dev: Device, name: str) -> tuple[int, int]:
        if dev.controls is not None:
            ctl = dev.controls[name]
            return ctl.row, ctl.column
        index = int(name)
        return index // dev.cols, index % dev.cols

    def cmd_key_press(self, params: Params) -> None:
        cmd = "KEY-PRESS"
        dev = self._device(cmd, params)
        if dev is None:
            return
        name = self._key_of(cmd, dev, params, "PRESSED")
        if name is None:
            return
        pressed = not is_falsey(params.get("PRESSED"))
        self.reply(cmd, "OK", dev.device_id)
        source = f"satellite-device:{dev.device_id}"
        if pressed:
            row, col = self._cell(dev, name)
            loc = (dev.page, row, col)
            dev.held[name] = loc
            self.sim._press(loc, True, source, dev)
        else:
            held = dev.held.pop(name, None)
            if held is None:
                row, col = self._cell(dev, name)
                held = (dev.page, row, col)
            self.sim._press(held, False, source, dev)

    def cmd_key_rotate(self, params: Params) -> None:
        cmd = "KEY-ROTATE"
        dev = self._device(cmd, params)
        if dev is None:
            return
        name = self._key_of(cmd, dev, params, "DIRECTION")
        if name is None:
            return
        amount = self.sim.rotation_amount(params["DIRECTION"])
        self.reply(cmd, "OK", dev.device_id)
        row, col = self._cell(dev, name)
        self.sim._rotate((dev.page, row, col), amount, f"satellite-device:{dev.device_id}", dev)

    def cmd_pincode_key(self, params: Params) -> None:
        cmd = "PINCODE-KEY"
        dev = self._device(cmd, params)
        if dev is None:
            return
        key = _present(params, "KEY")
        if key is None:
            self.error(cmd, "Missing KEY", dev.device_id)
            return
        n = js_number(key)
        if n is None or not n.is_integer() or not 0 <= n <= 9:
            self.error(cmd, "Invalid KEY", dev.device_id)
            return
        self.reply(cmd, "OK", dev.device_id)  # the simulator has no pin lock: digits are ignored

    def cmd_set_variable_value(self, params: Params) -> None:
        cmd = "SET-VARIABLE-VALUE"
        dev = self._device(cmd, params)
        if dev is None:
            return
        variable = _present(params, "VARIABLE")
        if variable is None:
            self.error(cmd, "Missing VARIABLE", dev.device_id)
            return
        raw = params.get("VALUE")
        if not isinstance(raw, str):
            self.error(cmd, "Missing VALUE", dev.device_id)
            return
        value = b64_decode_lenient(raw)
        self.reply(cmd, "OK", dev.device_id, VARIABLE=variable)
        target = self.sim.surface_settings(dev.surface_id).inputs.get(variable)
        if variable in dev.inputs and target and target in self.sim.custom_variables:
            self.sim.set_custom_variable(target, value)
        else:
            log.debug(
                "satellite input dropped (not declared or not bound)",
                extra=self._log_extra(device_id=dev.device_id, variable=variable),
            )

    def cmd_firmware_update_info(self, params: Params) -> None:
        cmd = "FIRMWARE-UPDATE-INFO"
        dev = self._device(cmd, params)
        if dev is None:
            return
        url = params.get("UPDATE_URL")
        if not isinstance(url, str):
            self.error(cmd, "Missing UPDATE_URL", dev.device_id)
            return
        dev.firmware_update_url = url
        self.reply(cmd, "OK", dev.device_id)

    def cmd_change_page(self, params: Params) -> None:
        cmd = "CHANGE-PAGE"
        dev = self._device(cmd, params)
        if dev is None:
            return
        if "DIRECTION" not in params:
            self.error(cmd, "Missing DIRECTION", dev.device_id)
            return
        forward = is_truthy(params["DIRECTION"])
        self.reply(cmd, "OK", dev.device_id)
        settings = self.sim.surface_settings(dev.surface_id)
        if dev.can_change_page and settings.can_change_page:
            self.sim.change_device_page(dev, "+1" if forward else "-1")

    def redraw(self, dev: Device) -> None:
        """A KEY-STATE for every control of the device (full redraw)."""
        for ident, row, col, style in dev.cells():
            self._queue_key_state(dev, ident, (dev.page, row, col), style)

    def _queue_key_state(
        self, dev: Device, ident: tuple[str, Any], loc: Location, style: RenderStyle
    ) -> None:
        args: list[tuple[str, Any]] = [ident]
        if self.sim.api >= (1, 10, 0):
            args.append(("LOCATION", format_location(loc)))
        args.extend(style_args(self.sim.look_at(loc), style))
        self.send_state(
            ("K", dev.device_id, ident[1]), format_line("KEY-STATE", None, dev.device_id, args)
        )

    # --- subscriptions ------------------------------------------------------------

    def _subs_enabled(self, cmd: str) -> bool:
        if not self.sim.subscriptions:
            self.error(cmd, "Subscriptions not enabled")
            return False
        return True

    def _sub(self, cmd: str, params: Params) -> Subscription | None:
        if not self._subs_enabled(cmd):
            return None
        sub_id = _present(params, "SUBID")
        if sub_id is None:
            self.error(cmd, "Missing SUBID")
            return None
        sub = self.subs.get(sub_id)
        if sub is None:
            self.error(cmd, "Unknown SUBID")
        return sub

    def cmd_add_sub(self, params: Params) -> None:
        cmd = "ADD-SUB"
        if not self._subs_enabled(cmd):
            return
        sub_id = _present(params, "SUBID")
        if sub_id is None:
            self.error(cmd, "Missing SUBID")
            return
        if not _ID_RE.match(sub_id):
            self.error(cmd, "Invalid SUBID")
            return
        if sub_id in self.subs:
            self.error(cmd, "SUBID already in use")
            return
        location = _present(params, "LOCATION")
        if location is None:
            self.error(cmd, "Missing LOCATION")
            return
        if not _LOCATION_RE.match(location):
            self.error(cmd, "Invalid LOCATION")
            return
        page, row, col = (int(p) for p in location.split("/"))
        bitmap_format = "rgb"
        if self.sim.api >= (1, 12, 0) and params.get("BITMAP_FORMAT") in ("png", "webp"):
            bitmap_format = str(params["BITMAP_FORMAT"])
        if "STYLE" in params:
            try:
                preset = b64_decode_json(params["STYLE"])
            except Base64Error:
                self.error(cmd, "Invalid STYLE")
                return
            style = _loose_preset(preset, bitmap_format)
        else:
            size = _bitmap_size(params.get("BITMAP"))
            style = RenderStyle(
                bitmap=(size, size) if size else None,
                colors=_colors(params.get("COLORS")),
                text=is_truthy(params.get("TEXT")),
                text_style=is_truthy(params.get("TEXT_STYLE")),
                bitmap_format=bitmap_format,
            )
        sub = Subscription(sub_id, (page, row, col), style)
        self.subs[sub_id] = sub
        log.info(
            "satellite subscription added", extra=self._log_extra(sub_id=sub_id, location=location)
        )
        self.reply(cmd, "OK", SUBID=sub_id)
        self.later(0, self._queue_sub_state, sub)

    def _queue_sub_state(self, sub: Subscription) -> None:
        if self.subs.get(sub.sub_id) is not sub:
            return
        args: list[tuple[str, Any]] = [("SUBID", sub.sub_id)]
        args.extend(style_args(self.sim.look_at(sub.location), sub.style))
        self.send_state(("S", sub.sub_id), format_line("SUB-STATE", args=args))

    def cmd_remove_sub(self, params: Params) -> None:
        sub = self._sub("REMOVE-SUB", params)
        if sub is None:
            return
        del self.subs[sub.sub_id]
        self.reply("REMOVE-SUB", "OK", SUBID=sub.sub_id)

    def cmd_sub_press(self, params: Params) -> None:
        cmd = "SUB-PRESS"
        sub = self._sub(cmd, params)
        if sub is None:
            return
        if _nonempty(params, "PRESSED") is None:
            self.error(cmd, "Missing PRESSED")
            return
        pressed = not is_falsey(params.get("PRESSED"))
        self.reply(cmd, "OK", SUBID=sub.sub_id)
        self.sim._press(sub.location, pressed, f"satellite-sub:{self.id}:{sub.sub_id}", None)

    def cmd_sub_rotate(self, params: Params) -> None:
        cmd = "SUB-ROTATE"
        sub = self._sub(cmd, params)
        if sub is None:
            return
        if _nonempty(params, "DIRECTION") is None:
            self.error(cmd, "Missing DIRECTION")
            return
        amount = self.sim.rotation_amount(params["DIRECTION"])
        self.reply(cmd, "OK", SUBID=sub.sub_id)
        self.sim._rotate(sub.location, amount, f"satellite-sub:{self.id}:{sub.sub_id}", None)

    # --- model changes ------------------------------------------------------------

    def location_changed(self, loc: Location) -> None:
        """The button at ``loc`` was re-rendered: SUB-STATE/KEY-STATE to whoever shows it."""
        for sub in self.subs.values():
            if sub.location == loc:
                self._queue_sub_state(sub)
        for dev in self.devices.values():
            if dev.page != loc[0]:
                continue
            for ident, style in dev.cells_at(loc[1], loc[2]):
                self._queue_key_state(dev, ident, loc, style)

    def forget(self) -> None:
        """Connection gone: devices removed (ids freed), subscriptions dropped."""
        for dev in list(self.devices.values()):
            self._remove_device(dev)
        self.subs.clear()


def _grid_number(value: str | bool, maximum: int) -> int | None:
    if not isinstance(value, str):
        return None
    n = js_number(value)
    if n is None or value.strip() == "" or not 1 <= n <= maximum:
        return None
    return int(n)


def _grid_index(key: str | bool, dev: Device) -> int | None:
    if not isinstance(key, str):
        return None
    if _INDEX_RE.match(key):
        index = int(key)
        return index if index < dev.cols * dev.rows else None
    m = _ROWCOL_RE.match(key)
    if m:
        row, col = int(m.group(1)), int(m.group(2))
        if row < dev.rows and col < dev.cols:
            return row * dev.cols + col
    return None


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strict_preset(preset: Any, bitmap_format: str) -> RenderStyle | None:
    """A layout-manifest style preset, schema-checked (unknown keys stripped)."""
    if not isinstance(preset, dict):
        return None
    bitmap = preset.get("bitmap")
    size: tuple[int, int] | None = None
    if bitmap is not None:
        if not isinstance(bitmap, dict):
            return None
        w, h = bitmap.get("w"), bitmap.get("h")
        if not (_is_number(w) and _is_number(h) and w >= 0 and h >= 0):
            return None
        size = (int(w), int(h))
    for key in ("text", "textStyle"):
        if key in preset and not isinstance(preset[key], bool):
            return None
    colors = preset.get("colors")
    if colors is not None and colors not in ("hex", "rgb"):
        return None
    leds = preset.get("leds")
    if leds is not None:
        if not isinstance(leds, dict):
            return None
        seg = leds.get("segments")
        if not (_is_number(seg) and 1 <= seg <= 200) or leds.get("mode") not in (
            "full-ring",
            "simple",
        ):
            return None
    return RenderStyle(
        bitmap=size,
        colors=colors,
        text=bool(preset.get("text", False)),
        text_style=bool(preset.get("textStyle", False)),
        bitmap_format=bitmap_format,
    )


def _loose_preset(preset: Any, bitmap_format: str) -> RenderStyle:
    """An ADD-SUB ``STYLE``: only ``JSON.parse``-d by Companion, read defensively."""
    if not isinstance(preset, dict):
        return RenderStyle(bitmap_format=bitmap_format)
    bitmap = preset.get("bitmap")
    size: tuple[int, int] | None = None
    if isinstance(bitmap, dict) and _is_number(bitmap.get("w")) and _is_number(bitmap.get("h")):
        size = (max(0, int(bitmap["w"])), max(0, int(bitmap["h"])))
    colors = preset.get("colors")
    return RenderStyle(
        bitmap=size,
        colors=colors if colors in ("hex", "rgb") else ("hex" if colors else None),
        text=bool(preset.get("text")),
        text_style=bool(preset.get("textStyle")),
        bitmap_format=bitmap_format,
    )


def parse_manifest(value: str | bool, bitmap_format: str) -> dict[str, Control] | None:
    """Validate a LAYOUT_MANIFEST; None when Companion would say ``Invalid LAYOUT_MANIFEST``."""
    try:
        doc = b64_decode_json(value)
    except Base64Error:
        return None
    if not isinstance(doc, dict):
        return None
    presets_doc, controls_doc = doc.get("stylePresets"), doc.get("controls")
    if not isinstance(presets_doc, dict) or not isinstance(controls_doc, dict):
        return None
    presets: dict[str, RenderStyle] = {}
    for name, preset in presets_doc.items():
        parsed = _strict_preset(preset, bitmap_format)
        if parsed is None:
            return None
        presets[name] = parsed
    if "default" not in presets:
        return None
    controls: dict[str, Control] = {}
    for cid, ctl in controls_doc.items():
        if not _ID_RE.match(cid) or not isinstance(ctl, dict):
            return None
        row, col = ctl.get("row"), ctl.get("column")
        if not (_is_number(row) and _is_number(col) and row >= 0 and col >= 0):
            return None
        preset_name = ctl.get("stylePreset")
        if preset_name is not None and not isinstance(preset_name, str):
            return None
        style = presets.get(preset_name or "default", presets["default"])
        controls[cid] = Control(int(row), int(col), style)
    return controls


def parse_variables(value: str | bool) -> tuple[list[str], list[str]] | None:
    """Validate VARIABLES; returns (input ids, output ids) or None (``Invalid VARIABLES``)."""
    try:
        doc = b64_decode_json(value)
    except Base64Error:
        return None
    if doc is None:
        return [], []
    if not isinstance(doc, list):
        return None
    inputs: list[str] = []
    outputs: list[str] = []
    for item in doc:
        if not isinstance(item, dict):
            return None
        var_id, kind, name = item.get("id"), item.get("type"), item.get("name")
        if not isinstance(var_id, str) or not isinstance(name, str):
            return None
        if kind not in ("input", "output"):
            return None
        if "description" in item and not isinstance(item["description"], str):
            return None
        if var_id in _FORBIDDEN_IDS:
            continue
        (inputs if kind == "input" else outputs).append(var_id)
    return inputs, outputs


def parse_config_fields(value: str | bool) -> dict[str, Any] | None:
    """Validate CONFIG_FIELDS; returns the default values of non-static fields, or None.

    An empty dict means "only static text": no ``DEVICE-CONFIG`` is sent then.
    """
    try:
        doc = b64_decode_json(value)
    except Base64Error:
        return None
    if not isinstance(doc, list):
        return None
    defaults: dict[str, Any] = {}
    for item in doc:
        if not isinstance(item, dict):
            return None
        fid, label, kind = item.get("id"), item.get("label"), item.get("type")
        if not isinstance(fid, str) or not isinstance(label, str) or kind not in _CONFIG_TYPES:
            return None
        if kind == "static-text":
            continue
        if kind == "dropdown":
            choices = item.get("choices")
            if not isinstance(choices, list) or not choices:
                return None
            if not all(isinstance(c, dict) and "id" in c and "label" in c for c in choices):
                return None
            defaults[fid] = item.get("default", choices[0]["id"])
        elif kind == "number":
            if not _is_number(item.get("min")) or not _is_number(item.get("max")):
                return None
            defaults[fid] = item.get("default", item["min"])
        elif kind == "checkbox":
            defaults[fid] = bool(item.get("default", False))
        else:
            defaults[fid] = item.get("default", "")
    return defaults


_Handler = Callable[[SatelliteConnection, Params], None]
_COMMANDS: dict[str, tuple[tuple[int, int, int], _Handler]] = {
    "ADD-DEVICE": ((1, 0, 0), SatelliteConnection.cmd_add_device),
    "REMOVE-DEVICE": ((1, 0, 0), SatelliteConnection.cmd_remove_device),
    "KEY-PRESS": ((1, 0, 0), SatelliteConnection.cmd_key_press),
    "KEY-ROTATE": ((1, 3, 0), SatelliteConnection.cmd_key_rotate),
    "PINCODE-KEY": ((1, 8, 0), SatelliteConnection.cmd_pincode_key),
    "SET-VARIABLE-VALUE": ((1, 7, 0), SatelliteConnection.cmd_set_variable_value),
    "FIRMWARE-UPDATE-INFO": ((1, 10, 0), SatelliteConnection.cmd_firmware_update_info),
    "CHANGE-PAGE": ((1, 10, 0), SatelliteConnection.cmd_change_page),
    "ADD-SUB": ((1, 10, 0), SatelliteConnection.cmd_add_sub),
    "REMOVE-SUB": ((1, 10, 0), SatelliteConnection.cmd_remove_sub),
    "SUB-PRESS": ((1, 10, 0), SatelliteConnection.cmd_sub_press),
    "SUB-ROTATE": ((1, 10, 0), SatelliteConnection.cmd_sub_rotate),
}


# --- transports ----------------------------------------------------------------------


class TcpSatelliteConnection(SatelliteConnection):
    """TCP 16622: idle after ``idle_timeout`` s without traffic in either direction."""

    kind = "tcp"

    def __init__(
        self,
        sim: CompanionSimulator,
        conn_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__(sim, conn_id)
        self.reader = reader
        self.writer = writer

    async def _write(self, line: str) -> None:
        await self._write_raw(line.encode("utf-8"))

    async def _write_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def _read_loop(self, silent: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.closing:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                if silent:
                    continue
                await self.sim._wait_unstalled()
                self.last_activity = loop.time()
                await self.feed(data)
        except (ConnectionError, OSError):
            pass

    async def _idle_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = self.last_activity + self.sim.idle_timeout - loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if self.sim.stalled:
                self.last_activity = loop.time()
                continue
            log.info("satellite idle timeout", extra=self._log_extra(timeout=self.sim.idle_timeout))
            self.close(flush=False)
            return


class WsSatelliteConnection(SatelliteConnection):
    """WebSocket 16623: idle after ``idle_timeout`` s without a client frame,
    checked every ``ws_idle_check_interval`` s. One message per text frame."""

    kind = "ws"

    def __init__(
        self, sim: CompanionSimulator, conn_id: str, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        super().__init__(sim, conn_id)
        self.ws = ws
        self.request = request
        self.last_frame = self.last_activity

    def restart_idle_timer(self) -> None:
        super().restart_idle_timer()
        self.last_frame = self.last_activity

    async def _write(self, line: str) -> None:
        await self.ws.send_str(line)

    async def _write_raw(self, data: bytes) -> None:
        try:
            await self.ws.send_str(data.decode("utf-8"))
        except UnicodeDecodeError:
            await self.ws.send_bytes(data)

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    async def _read_loop(self, silent: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.closing:
                msg = await self.ws.receive()
                if msg.type == WSMsgType.TEXT:
                    data: bytes | str = msg.data
                elif msg.type == WSMsgType.BINARY:
                    data = msg.data
                else:
                    break
                if silent:
                    continue
                await self.sim._wait_unstalled()
                self.last_frame = self.last_activity = loop.time()
                await self.feed(data)
        except (ConnectionError, OSError, RuntimeError):
            pass

    async def _idle_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sim.ws_idle_check_interval)
            if self.sim.stalled:
                self.last_frame = loop.time()
                continue
            if loop.time() - self.last_frame > self.sim.idle_timeout:
                log.info(
                    "satellite idle timeout", extra=self._log_extra(timeout=self.sim.idle_timeout)
                )
                self.close(flush=False)
                return
