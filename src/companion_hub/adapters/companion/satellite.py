"""A Satellite protocol client as a sans-I/O state machine (bytes in, events and bytes out).

It follows the official Satellite client's behaviour: read ``BEGIN`` and (API >= 1.10)
``CAPS``; with button subscriptions available, ``ADD-SUB`` every
configured location and mirror ``SUB-STATE``; otherwise (or to exchange transferable
values) register a virtual surface with ``ADD-DEVICE`` and mirror the ``KEY-STATE`` of
the page Companion shows on it. The asyncio driver (:mod:`.link`) owns the socket,
time, keep-alive and reconnection; this class owns the protocol.

Every field that arrives is treated as hostile: numbers and locations are parsed with
the bounded parsers of :mod:`.codec`, only locations inside the configured grid are
reported, and a bad message is ignored and counted (:attr:`SatelliteProtocol.problems`)
rather than raised, so nothing Companion sends can kill the link task.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .buttons import button_value
from .codec import (
    Base64Error,
    LineBuffer,
    LineTooLong,
    Params,
    b64_decode_text,
    b64_json,
    b64_text,
    format_line,
    parse_decimal,
    parse_int,
    parse_line,
    parse_location,
    parse_version,
)
from .events import (
    Began,
    Brightness,
    ButtonRendered,
    Capabilities,
    DevicePage,
    Event,
    MirrorMode,
    OutputValue,
    Pong,
    ProtocolError,
    Registering,
    Reply,
    Synced,
)

log = logging.getLogger("companion_hub.adapters.companion")

# Commands whose replies the driver correlates with requests.
REQUEST_COMMANDS = frozenset(
    {"SUB-PRESS", "SUB-ROTATE", "SET-VARIABLE-VALUE", "KEY-PRESS", "KEY-ROTATE", "REMOVE-SUB"}
)


@dataclass(frozen=True)
class Transferable:
    id: str
    type: str  # "input" or "output"
    name: str
    description: str = ""


@dataclass
class SatelliteOptions:
    device_id: str
    product_name: str = "companion-hub"
    pages: list[int] = field(default_factory=lambda: list(range(1, 9)))
    rows: int = 4
    columns: int = 8
    bitmaps: int | None = None  # pixels, or None for no images
    subscriptions: bool = True  # use button subscriptions when Companion offers them
    variables: list[Transferable] = field(default_factory=list)


_COMMAND_WORD = re.compile(r"[A-Z][A-Z0-9_-]{0,63}")

Loc = tuple[int, int, int]  # page, row, column


class ProtocolState(StrEnum):
    """Where a connection is in its life: each state only ever moves to the next one."""

    AWAITING_BEGIN = "awaiting-begin"
    AWAITING_CAPS = "awaiting-caps"  # API >= 1.10: CAPS comes right after BEGIN
    REGISTERING = "registering"  # ADD-SUB / ADD-DEVICE sent, not every answer in yet
    SYNCED = "synced"  # every registration answered, every location reported

    @property
    def handshaking(self) -> bool:
        """Still waiting for Companion's BEGIN (and CAPS)."""
        return self in (ProtocolState.AWAITING_BEGIN, ProtocolState.AWAITING_CAPS)


def location_of(subid: str) -> tuple[int, int, int] | None:
    """``page/row/column`` as numbers (no grid check: for ids this client made)."""
    parts = subid.split("/")
    if len(parts) != 3:
        return None
    nums = [parse_int(x, 0, 10**9) for x in parts]
    if None in nums:
        return None
    p, r, c = (n for n in nums if n is not None)
    return p, r, c


class SatelliteProtocol:
    """One Satellite connection's protocol state. Create a new one per connection.

    :attr:`problems` counts, per :data:`PROBLEM_KINDS` kind, what was ignored on this
    connection. So that a misbehaving peer cannot flood the log, a non-fatal
    :class:`ProtocolError` event is emitted only the first time its kind occurs on a
    connection (later ones are only counted); fatal ones are always emitted.
    """

    def __init__(self, options: SatelliteOptions, inputs: dict[str, str] | None = None) -> None:
        self.options = options
        self.inputs = dict(inputs or {})  # last values set for transferable inputs
        self._buffer = LineBuffer()
        self._out: list[str] = []
        self._events: list[Event] = []
        self.companion_version = ""
        self.api_version = ""
        self.api = (0, 0, 0)
        self.subscriptions_available = False
        self.state = ProtocolState.AWAITING_BEGIN
        self.mode: MirrorMode | None = None
        self.device_page: int | None = None
        self._subs_pending: set[str] = set()  # ADD-SUB sent, no reply yet
        self._subs_unrendered: set[str] = set()  # ADD-SUB OK, no SUB-STATE yet
        self._device_pending = False
        self._keys_unrendered: set[int] = set()
        self._pages = frozenset(options.pages)
        self._outputs = frozenset(v.id for v in options.variables if v.type == "output")
        self.problems: dict[str, int] = {}

    # --- I/O boundary -----------------------------------------------------------------

    def receive_data(self, data: bytes | str) -> None:
        """Feed bytes (or text frames) as received, in any chunking.

        This never raises, whatever the input: anything unusable becomes a
        :class:`ProtocolError` event (fatal when the connection must be dropped) and
        is counted in :attr:`problems`.
        """
        for line in self._buffer.feed(data):
            if line.strip():
                self._handle_line(line)
        try:
            self._buffer.check()
        except LineTooLong as exc:
            self._problem("line-too-long", str(exc), fatal=True)

    def _problem(self, kind: str, message: str, fatal: bool = False) -> None:
        """Count a problem; emit it if fatal or the first of its kind on this connection."""
        seen = self.problems.get(kind, 0)
        self.problems[kind] = seen + 1
        if fatal or not seen:
            self._events.append(ProtocolError(message, fatal, kind))

    def events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    def data_to_send(self) -> str:
        out = "".join(self._out)
        self._out = []
        return out

    def _send(self, cmd: str, device: bool = False, **args: Any) -> None:
        self._out.append(
            format_line(
                cmd, device_id=self.options.device_id if device else None, args=args.items()
            )
        )

    # --- requests ---------------------------------------------------------------------

    def ping(self, token: str) -> None:
        self._out.append(f"PING {token}\n")

    def sub_press(self, subid: str, pressed: bool) -> None:
        self._send("SUB-PRESS", SUBID=subid, PRESSED=pressed)

    def sub_rotate(self, subid: str, amount: int) -> None:
        self._send("SUB-ROTATE", SUBID=subid, DIRECTION=amount)

    def set_input(self, variable: str, value: str) -> None:
        self.inputs[variable] = value
        self._send("SET-VARIABLE-VALUE", device=True, VARIABLE=variable, VALUE=b64_text(value))

    def quit(self) -> None:
        self._out.append("QUIT\n")

    # --- handling -----------------------------------------------------------------------

    def _handle_line(self, line: str) -> None:
        cmd, params = parse_line(line)
        handler = _HANDLERS.get(cmd)
        if handler is None:
            if _COMMAND_WORD.fullmatch(cmd) is None:
                self._problem("malformed", f"not a Satellite message, ignored: {line[:80]!r}")
            else:
                self._problem("unknown-message", f"unknown message ignored: {line[:80]!r}")
            return
        try:
            handler(self, params)
        except Base64Error as exc:
            self._problem("bad-base64", f"{cmd}: {exc}; message ignored")
        except (ValueError, KeyError) as exc:
            self._problem("malformed", f"{cmd}: malformed ({exc}); message ignored")
        except Exception:  # a bug here must not take the link down with it
            log.exception("satellite message handler failed", extra={"command": cmd})
            self._problem("internal", f"{cmd}: internal error while handling it; ignored")

    def _on_begin(self, p: Params) -> None:
        if self.state is not ProtocolState.AWAITING_BEGIN:
            self._problem("unexpected", "BEGIN after the connection began; ignored")
            return
        api = p.get("ApiVersion")
        self.companion_version = str(p.get("CompanionVersion", ""))
        self.api_version = str(api) if isinstance(api, str) else ""
        self.api = parse_version(self.api_version)
        self._events.append(Began(self.companion_version, self.api_version))
        if self.api < (1, 7):
            self._problem(
                "incompatible",
                f"Companion API {self.api_version or '?'} is too old (need 1.7+)",
                fatal=True,
            )
            return
        if self.api >= (1, 10):
            self.state = ProtocolState.AWAITING_CAPS
        else:
            self._register()

    def _on_caps(self, p: Params) -> None:
        self.subscriptions_available = p.get("SUBSCRIPTIONS") == "1"
        self._events.append(Capabilities(self.subscriptions_available, dict(p)))
        if self.state is ProtocolState.AWAITING_CAPS:
            self._register()

    def _style_args(self, prefix_bitmap: str) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.options.bitmaps:
            args[prefix_bitmap] = self.options.bitmaps
            if self.api >= (1, 12):
                args["BITMAP_FORMAT"] = "png"
        args.update(COLORS="hex", TEXT=True, TEXT_STYLE=True)
        return args

    def _register(self) -> None:
        self.state = ProtocolState.REGISTERING
        o = self.options
        use_subs = o.subscriptions and self.subscriptions_available
        if use_subs:
            self.mode = MirrorMode.SUBSCRIPTIONS
            for page in o.pages:
                for row in range(o.rows):
                    for col in range(o.columns):
                        subid = f"{page}/{row}/{col}"
                        self._subs_pending.add(subid)
                        self._send(
                            "ADD-SUB", SUBID=subid, LOCATION=subid, **self._style_args("BITMAP")
                        )
            detail = f"button subscriptions for pages {_ranges(o.pages)}"
        else:
            self.mode = MirrorMode.DEVICE
            detail = (
                "button subscriptions are off in Companion: mirroring only the page shown on the "
                "hub's virtual surface. Enable Settings > Protocols > Satellite > 'Button "
                "Subscriptions API' to mirror every page"
                if o.subscriptions and self.api >= (1, 10)
                else "mirroring the page shown on the hub's virtual surface"
            )
        if not use_subs or o.variables:  # a device is needed (transferable values need one)
            self._add_device()
        self._events.append(Registering(self.mode, detail))
        self._check_synced()

    def _add_device(self) -> None:
        o = self.options
        args: dict[str, Any] = {
            "PRODUCT_NAME": o.product_name,
            "KEYS_TOTAL": o.rows * o.columns,
            "KEYS_PER_ROW": o.columns,
        }
        args.update(self._style_args("BITMAPS"))
        args["BRIGHTNESS"] = False
        if o.variables:
            args["VARIABLES"] = b64_json(
                [
                    {"id": v.id, "type": v.type, "name": v.name}
                    | ({"description": v.description} if v.description else {})
                    for v in o.variables
                ]
            )
        self._device_pending = True
        self._send("ADD-DEVICE", device=True, **args)

    def retry_add_device(self) -> None:
        """The driver's reply timeout for ADD-DEVICE ran out (e.g. a half-open older
        connection still holds the id): ask again."""
        if self._device_pending:
            self._add_device()

    @property
    def awaiting_device(self) -> bool:
        return self._device_pending

    def _check_synced(self) -> None:
        if self.state is not ProtocolState.REGISTERING or self.mode is None:
            return
        if self._subs_pending or self._subs_unrendered or self._device_pending:
            return
        if self.mode is MirrorMode.DEVICE and self._keys_unrendered:
            return
        self.state = ProtocolState.SYNCED
        self._events.append(Synced(self.mode))

    def _on_add_sub(self, p: Params) -> None:
        ok, msg = _reply_status(p)
        subid = p.get("SUBID")
        if ok:
            if not isinstance(subid, str) or subid not in self._subs_pending:
                # only what this client asked for may hold up (or join) the sync
                self._problem("unexpected", f"ADD-SUB OK for {str(subid)[:40]!r}: not asked")
                return
            self._subs_pending.discard(subid)
            self._subs_unrendered.add(subid)
        else:
            if msg == "Subscriptions not enabled":
                # the setting changed: Companion closes every connection anyway
                self._problem(
                    "subscriptions-disabled", "ADD-SUB: Subscriptions not enabled", fatal=True
                )
                return
            # errors carry no SUBID: they answer the oldest pending ADD-SUB
            if self._subs_pending:
                first = min(self._subs_pending, key=_loc_key)
                self._subs_pending.discard(first)
            self._problem("add-sub-failed", f"ADD-SUB failed: {msg[:200]}")
        self._check_synced()

    def _location(self, cmd: str, field_name: str, value: str | bool | None) -> Loc | None:
        """A SUBID/LOCATION inside the configured grid, else None (counted)."""
        loc = parse_location(value, self._pages, self.options.rows, self.options.columns)
        if loc is None:
            shown = f"{value[:40]!r}" if isinstance(value, str) else "missing"
            self._problem(
                "bad-location",
                f"{cmd}: {field_name} {shown} is not a configured page/row/column; ignored",
            )
        return loc

    def _on_sub_state(self, p: Params) -> None:
        subid = p.get("SUBID")
        loc = self._location("SUB-STATE", "SUBID", subid)
        if loc is None or not isinstance(subid, str):
            return
        state = self._render(p)
        self._events.append(ButtonRendered(*loc, state))
        if subid in self._subs_unrendered:
            self._subs_unrendered.discard(subid)
            self._check_synced()

    def _on_add_device(self, p: Params) -> None:
        ok, msg = _reply_status(p)
        if not self._device_pending:
            return
        if ok:
            self._device_pending = False
            if self.mode is MirrorMode.DEVICE:
                self._keys_unrendered = set(range(self.options.rows * self.options.columns))
            # registration resets bound inputs: send every input's last value again
            for var, value in self.inputs.items():
                self._send("SET-VARIABLE-VALUE", device=True, VARIABLE=var, VALUE=b64_text(value))
        elif msg == "Device exists elsewhere":
            # sent to the *old* connection; the driver's timeout retries on the new one
            self._problem("add-device-failed", "ADD-DEVICE: device exists elsewhere")
            return
        else:
            self._device_pending = False
            self._problem("add-device-failed", f"ADD-DEVICE failed: {msg[:200]}", fatal=True)
        self._check_synced()

    def _on_key_state(self, p: Params) -> None:
        if "KEY" in p:
            keys = self.options.rows * self.options.columns
            key = parse_int(p["KEY"], 0, keys - 1)
            if key is None:
                self._problem(
                    "bad-number", f"KEY-STATE: KEY {str(p['KEY'])[:40]!r} is not 0..{keys - 1}"
                )
                return
            # the key was drawn even if its location is not mirrored: it counts for the sync
            self._keys_unrendered.discard(key)
        if "LOCATION" in p:
            loc = self._location("KEY-STATE", "LOCATION", p["LOCATION"])
            if loc is not None:
                page = loc[0]
                if page != self.device_page:
                    self.device_page = page
                    self._events.append(DevicePage(page))
                if self.mode is MirrorMode.DEVICE:
                    self._events.append(ButtonRendered(*loc, self._render(p)))
        self._check_synced()

    def _on_variable_value(self, p: Params) -> None:
        var = p.get("VARIABLE")
        if not isinstance(var, str):
            raise ValueError("VARIABLE-VALUE without VARIABLE")
        if var not in self._outputs:
            self._problem(
                "unknown-variable", f"VARIABLE-VALUE for {var[:40]!r}: not a declared output"
            )
            return
        self._events.append(OutputValue(var, b64_decode_text(p.get("VALUE", False))))

    def _on_brightness(self, p: Params) -> None:
        value = parse_decimal(p.get("VALUE"), 0, 100)
        if value is None:
            shown = str(p.get("VALUE"))[:40]
            self._problem("bad-number", f"BRIGHTNESS: VALUE {shown!r} is not 0..100; ignored")
            return
        self._events.append(Brightness(value))

    def _on_ping(self, p: Params) -> None:
        self._out.append("PONG\n")

    def _on_pong(self, p: Params) -> None:
        self._events.append(Pong())

    def _on_request_reply(self, cmd: str, p: Params) -> None:
        ok, msg = _reply_status(p)
        self._events.append(Reply(cmd, ok, msg, p))

    def _on_error(self, p: Params) -> None:
        msg = p.get("MESSAGE", "")
        text = msg if isinstance(msg, str) else ""
        fatal = text == "Line too long"
        self._problem("companion-error", f"Companion says: {text[:200]}", fatal)

    def _ignore(self, p: Params) -> None:
        return None

    def _render(self, p: Params) -> dict[str, Any] | None:
        value, problem = button_value(p)
        if problem:
            self._problem("bad-number", problem)
        return value


def _reply_status(p: Params) -> tuple[bool, str]:
    """A reply's (OK?, MESSAGE)."""
    msg = p.get("MESSAGE", "")
    return p.get("OK") is True, msg if isinstance(msg, str) else ""


def _loc_key(subid: str) -> tuple[int, ...]:
    loc = location_of(subid)
    return loc if loc is not None else (1 << 30,)


def _ranges(pages: Iterable[int]) -> str:
    ps = sorted(pages)
    if ps and ps == list(range(ps[0], ps[-1] + 1)):
        return f"{ps[0]}-{ps[-1]}" if len(ps) > 1 else str(ps[0])
    return ",".join(map(str, ps))


def _req(cmd: str) -> Any:
    return lambda self, p: self._on_request_reply(cmd, p)


_HANDLERS: dict[str, Any] = {
    "BEGIN": SatelliteProtocol._on_begin,
    "CAPS": SatelliteProtocol._on_caps,
    "ADD-SUB": SatelliteProtocol._on_add_sub,
    "SUB-STATE": SatelliteProtocol._on_sub_state,
    "ADD-DEVICE": SatelliteProtocol._on_add_device,
    "KEY-STATE": SatelliteProtocol._on_key_state,
    "VARIABLE-VALUE": SatelliteProtocol._on_variable_value,
    "BRIGHTNESS": SatelliteProtocol._on_brightness,
    "PING": SatelliteProtocol._on_ping,
    "PONG": SatelliteProtocol._on_pong,
    "ERROR": SatelliteProtocol._on_error,
    "KEYS-CLEAR": SatelliteProtocol._ignore,
    "LOCKED-STATE": SatelliteProtocol._ignore,
    "DEVICE-CONFIG": SatelliteProtocol._ignore,
    "REMOVE-DEVICE": SatelliteProtocol._ignore,
    **{cmd: _req(cmd) for cmd in REQUEST_COMMANDS},
}
