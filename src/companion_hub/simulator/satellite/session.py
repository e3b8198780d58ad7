"""One Satellite connection's server logic, as Companion has it, without I/O.

A sans-I/O protocol object: the driver (:mod:`.transport`) hands it complete lines
(:meth:`SatelliteSession.receive_line`) and writes what it queues in its
:class:`~.outbox.Outbox`. The session says hello, dispatches each command
(:mod:`.commands`), holds the connection's devices and subscriptions, decides when the
connection closes, and turns model changes (:meth:`~SatelliteSession.location_changed`,
:meth:`~SatelliteSession.variables_changed`) into ``KEY-STATE``, ``SUB-STATE`` and
``VARIABLE-VALUE`` messages. What Companion sends "on the next loop turn" or "10 ms
later" is scheduled through the driver (:class:`Driver`), which also owns the socket.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from companion_hub.adapters.companion.codec import b64_text, format_line, parse_line

from ..model import Location, RenderStyle, format_location, style_args
from .commands import COMMANDS
from .outbox import Outbox
from .requests import Refusal
from .surfaces import ControlRef, Device, Subscription

if TYPE_CHECKING:
    from ..core import CompanionSimulator

log = logging.getLogger("companion_hub.simulator")


class Driver(Protocol):
    """What a session needs from the connection that carries it."""

    def output_ready(self) -> None:
        """Something was queued in the outbox: write it."""

    def abort(self) -> None:
        """Close the socket at once; what is still queued is lost."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``delay`` seconds (0: on the next loop turn), unless
        the session is closing by then."""


class SessionState(Enum):
    """Open, or closing one of two ways."""

    OPEN = "open"
    DRAINING = "draining"  # closing once the queued messages are written (QUIT, too long)
    CLOSED = "closed"  # closed, or closing at once: nothing more is queued


class SatelliteSession:
    """The server side of one Satellite connection (TCP or WebSocket)."""

    def __init__(self, sim: CompanionSimulator, conn_id: str, kind: str, driver: Driver) -> None:
        self.sim = sim
        self.id = conn_id
        self.kind = kind  # the transport, "tcp" or "ws"
        self.driver = driver
        self.devices: dict[str, Device] = {}
        self.subs: dict[str, Subscription] = {}
        self.outbox = Outbox()
        self.state = SessionState.OPEN

    @property
    def closing(self) -> bool:
        return self.state is not SessionState.OPEN

    # --- output -------------------------------------------------------------------

    def log_extra(self, **fields: Any) -> dict[str, Any]:
        return {"conn": self.id, "transport": self.kind, **fields}

    def _has_room(self) -> bool:
        """Room for one more message; a client that does not read is dropped."""
        if len(self.outbox) < self.sim.max_queued_messages:
            return True
        log.warning(
            "satellite client does not read; closing",
            extra=self.log_extra(queued=len(self.outbox)),
        )
        self.state = SessionState.CLOSED
        self.driver.abort()
        return False

    def send(self, message: str | bytes) -> None:
        """Queue one message (a reply or an event; bytes for fault injection), in order."""
        if self.closing or not self._has_room():
            return
        self.outbox.put(message)
        self.driver.output_ready()

    def send_state(self, key: Hashable, line: str) -> None:
        """Queue a state message, replacing a not yet written one with the same key."""
        if self.closing or self.outbox.replace_state(key, line) or not self._has_room():
            return
        self.outbox.put_state(key, line)
        self.driver.output_ready()

    def ok(self, cmd: str, device_id: str | None = None, **args: Any) -> None:
        self.send(format_line(cmd, "OK", device_id, args.items()))

    def error(self, cmd: str, message: str, device_id: str | None = None) -> None:
        self.send(format_line(cmd, "ERROR", device_id, [("MESSAGE", message)]))

    def refuse(self, cmd: str, refusal: Refusal) -> None:
        self.error(cmd, refusal.message, refusal.device_id)

    def close(self, *, flush: bool) -> None:
        """Close the connection; with ``flush`` after the queued messages are written."""
        if self.closing:
            if not flush:
                self.driver.abort()
            return
        if flush:
            self.state = SessionState.DRAINING
            self.outbox.put_close()
            self.driver.output_ready()
        else:
            self.state = SessionState.CLOSED
            self.driver.abort()

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.driver.call_later(delay, functools.partial(fn, *args))

    # --- input --------------------------------------------------------------------

    def hello(self) -> None:
        """``BEGIN`` and (API 1.10+) ``CAPS``: sent on connect, before anything is read."""
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

    def receive_line(self, line: str) -> None:
        """Handle one complete line. A failing handler is logged and sends nothing, as
        in Companion; it never takes the connection down."""
        try:
            self._handle_line(line)
        except Exception:
            log.exception("satellite handler failed", extra=self.log_extra(line=line[:200]))

    def line_too_long(self, chars: int) -> None:
        """The unterminated rest of the input passed the cap: an error, then close."""
        log.info("satellite line too long", extra=self.log_extra(chars=chars))
        self.send(format_line("ERROR", "ERROR", args=[("MESSAGE", "Line too long")]))
        self.close(flush=True)

    def _handle_line(self, line: str) -> None:
        cmd, params = parse_line(line)
        if self.sim._take_dropped(cmd):
            log.info("satellite reply dropped (fault injection)", extra=self.log_extra(cmd=cmd))
            return
        if cmd == "PING":
            body = line.replace("\r", "", 1).partition(" ")[2]
            self.send(f"PONG {body} \n")  # the body is echoed as it came, not parsed
            return
        if cmd == "PONG":
            return
        if cmd == "QUIT":
            self.close(flush=True)
            return
        entry = COMMANDS.get(cmd)
        if entry is None or self.sim.api < entry[0]:
            self.send(format_line("ERROR", args=[("MESSAGE", f"Unknown command: {cmd}")]))
            return
        entry[1](self, params)

    # --- devices ------------------------------------------------------------------

    def remove_device(self, dev: Device) -> None:
        self.devices.pop(dev.device_id, None)
        self.sim._unregister_device(dev)
        log.info("satellite device removed", extra=self.log_extra(device_id=dev.device_id))

    def evaluate_output(self, dev: Device, out_id: str, *, initial: bool = False) -> None:
        """Send a transferable output's value if it changed (or, ``initial``, anyway)."""
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
        args = [("VARIABLE", out_id), ("VALUE", b64_text(text))]
        self.send(format_line("VARIABLE-VALUE", None, dev.device_id, args))

    # --- model changes ------------------------------------------------------------

    def queue_sub_state(self, sub: Subscription) -> None:
        if self.subs.get(sub.sub_id) is not sub:
            return
        args: list[tuple[str, Any]] = [("SUBID", sub.sub_id)]
        args.extend(style_args(self.sim.look_at(sub.location), sub.style))
        self.send_state(("S", sub.sub_id), format_line("SUB-STATE", args=args))

    def _queue_key_state(
        self, dev: Device, ref: ControlRef, loc: Location, style: RenderStyle
    ) -> None:
        args: list[tuple[str, Any]] = [ref]
        if self.sim.api >= (1, 10, 0):
            args.append(("LOCATION", format_location(loc)))
        args.extend(style_args(self.sim.look_at(loc), style))
        self.send_state(
            ("K", dev.device_id, ref[1]), format_line("KEY-STATE", None, dev.device_id, args)
        )

    def redraw(self, dev: Device) -> None:
        """A KEY-STATE for every control of the device (full redraw)."""
        for ref, row, col, style in dev.cells():
            self._queue_key_state(dev, ref, (dev.page, row, col), style)

    def location_changed(self, loc: Location) -> None:
        """The button at ``loc`` was re-rendered: SUB-STATE/KEY-STATE to whoever shows it."""
        for sub in self.subs.values():
            if sub.location == loc:
                self.queue_sub_state(sub)
        for dev in self.devices.values():
            if dev.page != loc[0]:
                continue
            for ref, style in dev.cells_at(loc[1], loc[2]):
                self._queue_key_state(dev, ref, loc, style)

    def variables_changed(self, names: frozenset[str], only: Device | None = None) -> None:
        """Re-evaluate outputs whose last expression referenced one of ``names``."""
        for dev in list(self.devices.values()):
            if only is not None and dev is not only:
                continue
            for out_id, refs in list(dev.output_refs.items()):
                if refs & names:
                    self.evaluate_output(dev, out_id)

    def connection_lost(self) -> None:
        """The connection is gone: devices removed (ids freed), subscriptions dropped."""
        if self.state is SessionState.OPEN:
            self.state = SessionState.CLOSED
        for dev in list(self.devices.values()):
            self.remove_device(dev)
        self.subs.clear()
