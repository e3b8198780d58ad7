"""The Companion adapter: owns a namespace, mirrors Companion into it, runs commands.

Two links feed the namespace (see :mod:`.layout` for the keys):

- the **Satellite link** (:class:`.link.SatelliteLink`): buttons, the virtual surface,
  transferable outputs and ``<ns>.info``;
- the **HTTP link** (polling :class:`.http.CompanionHttp`): variables and connections,
  and the commands that need HTTP.

When a link drops, every key derived from it turns stale (at once when the drop is
seen, at the latest after the Satellite dead-link timeout or one failed poll). After
the link is back and resynchronised, keys are written again (equal values clear the
stale flag) and keys that were not re-written — buttons or variables that vanished
meanwhile — are deleted.

Commands (target = the namespace): ``press``, ``down``, ``up``, ``rotate``,
``set_variable``, ``set_style``, ``set_input``, ``refresh``. A command is sent to
Companion once and never re-sent after a reconnect. ``press`` goes over HTTP, where
Companion itself releases the button 20 ms later, so no link drop can leave it held;
a button held with ``down`` is released by the adapter when the link that pressed it
comes back after a drop, or when the adapter stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ...core.commands import InFlight, Outcome, ReplyStatus
from ...core.errors import ErrorCode, HubError
from ...core.writer import Writer
from ...logs import Throttle
from ...protocol import encode as wire
from ...supervisor import Backoff, Supervisor
from .http import CompanionHttp, HttpError, PollResult, VariableRef
from .layout import Layout, valid_segment
from .link import LinkDown, LinkTiming, ReplyTimeout, SatelliteLink
from .satellite import (
    Began,
    Brightness,
    ButtonRendered,
    Capabilities,
    DevicePage,
    Event,
    OutputValue,
    Registering,
    SatelliteOptions,
    Synced,
    Transferable,
)

if TYPE_CHECKING:
    from ...server.hub import Hub

log = logging.getLogger("companion_hub.adapters.companion")
_throttled = Throttle(log, interval=5.0)

_LOCATION = re.compile(r"^(\d+)/(-?\d+)/(-?\d+)$")
COMMANDS = ("press", "down", "up", "rotate", "set_variable", "set_style", "set_input", "refresh")


@dataclass
class CompanionConfig:
    """One Companion instance (a ``[[companion]]`` table in the configuration)."""

    host: str = "127.0.0.1"
    name: str = "companion"  # the adapter's name in hub.adapters.<name>
    namespace: str = "companion"
    transport: str = "tcp"  # "tcp" (16622) or "ws" (16623)
    satellite_port: int | None = None  # default by transport
    http_port: int = 8000
    http: bool = True
    pages: list[int] = field(default_factory=lambda: list(range(1, 9)))
    rows: int = 4
    columns: int = 8
    variables: list[str] = field(default_factory=list)  # "custom:cue", "internal:time_hms", ...
    poll_interval: float = 1.0
    bitmaps: bool = False
    bitmap_size: int = 72
    transferable: list[Transferable] = field(default_factory=list)
    device_id: str | None = None  # default: stable per host and hub port
    timing: LinkTiming = field(default_factory=LinkTiming)

    @property
    def port(self) -> int:
        if self.satellite_port is not None:
            return self.satellite_port
        return 16623 if self.transport == "ws" else 16622


def default_device_id(hub_port: int, name: str) -> str:
    digest = hashlib.sha1(f"{socket.gethostname()}:{hub_port}:{name}".encode()).hexdigest()
    return f"companion-hub-{digest[:10]}"


def parse_location(value: Any) -> str:
    if not isinstance(value, str) or not _LOCATION.match(value):
        raise HubError(
            ErrorCode.BAD_REQUEST, "params.location must be 'page/row/column', e.g. '1/0/2'"
        )
    return value


class CompanionAdapter:
    """In-process owner of the Companion namespace."""

    def __init__(self, hub: Hub, config: CompanionConfig) -> None:
        self.hub = hub
        self.config = config
        self.layout = Layout(config.namespace)
        self.owned = frozenset({config.namespace})
        self.actor = f"adapter:{config.name}"  # owner of the namespace, actor in the log
        # the one write path; each Satellite session and each poll is a new epoch
        self.writer: Writer = hub.writer(self.actor, self.owned)
        self._sat = self.writer
        self.device_id = config.device_id or default_device_id(hub.config.port, config.name)
        self.refs = [VariableRef.parse(v) for v in config.variables]
        self.satellite = SatelliteLink(
            SatelliteOptions(
                device_id=self.device_id,
                pages=list(config.pages),
                rows=config.rows,
                columns=config.columns,
                bitmaps=config.bitmap_size if config.bitmaps else None,
                variables=list(config.transferable),
            ),
            config.host,
            config.port,
            transport=config.transport,
            on_event=self._on_satellite_event,
            on_state=self._on_satellite_state,
            timing=config.timing,
            hold=self._hold,
        )
        self.http = (
            CompanionHttp(config.host, config.http_port, max_value_bytes=hub.limits.value_bytes)
            if config.http
            else None
        )
        self.http_up = False
        self._info: dict[str, Any] = {}
        self._sat_state: tuple[str, str, float | None] = ("connecting", "starting", None)
        self._http_state = "connecting" if config.http else "off"
        self._http_detail = ""
        self._uptime: float | None = None
        self._held: set[str] = set()  # locations pressed with `down` and not released
        self.supervisor = Supervisor(f"companion:{config.name}")
        self.refused = 0  # upstream values refused by the write rules (too large, bad key)
        self._last_refused = ""
        self._refused_flush: asyncio.TimerHandle | None = None
        self._poll_now = asyncio.Event()
        self._synced_event = asyncio.Event()
        self._surface: dict[str, Any] = {}
        self._published: tuple[str, str, str] | None = None

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        hub = self.hub
        hub.register_namespace(self.config.namespace, self.actor)
        hub.router.set_owner(self.config.namespace, self)
        self._publish_state()
        timing = self.config.timing
        # the links handle the failures they expect (reconnecting with their own
        # back-off); the supervisor restarts them after anything else
        self.supervisor.spawn(
            f"companion-satellite:{self.config.name}",
            self.satellite.run,
            on_crash=self._satellite_crashed,
            backoff=Backoff(timing.backoff_base, timing.backoff_max),
            stable_after=timing.stable_after,
        )
        if self.http is not None:
            self.supervisor.spawn(
                f"companion-http:{self.config.name}",
                self._poll_loop,
                on_crash=self._http_crashed,
                backoff=Backoff(
                    max(timing.backoff_base, self.config.poll_interval), timing.backoff_max
                ),
                stable_after=timing.stable_after,
            )

    async def stop(self) -> None:
        """Release held buttons, stop the links, mark the namespace stale. Never raises
        a task's old exception: the hub's shutdown must go on."""
        if self._held and self.http is not None:
            for loc in list(self._held):
                with contextlib.suppress(HttpError):
                    await self.http.location(loc, "up")
            self._held.clear()
        await self.supervisor.stop()
        if self._refused_flush is not None:
            self._refused_flush.cancel()
            self._refused_flush = None
        if self.http is not None:
            await self.http.close()
        self.hub.router.owner_gone(self, "the Companion adapter stopped")
        self.writer.mark_stale()
        self._sat_state = ("disconnected", "adapter stopped", None)
        self._http_state = "disconnected" if self.config.http else "off"
        self._publish_state()

    async def _hold(self) -> None:
        """Back-pressure: the links wait here while the event log is behind."""
        if self.hub.log_over_limit:
            await self.hub.wait_log_room()

    # --- crashes (the supervisor restarts the task after this) -------------------------------

    def _satellite_crashed(self, exc: BaseException) -> None:
        n = 0
        for prefix in (self.layout.buttons, self.layout.surfaces, self.layout.info):
            n += self.writer.mark_stale(prefix)
        self._synced_event.clear()
        self._sat_state = ("error", f"internal error: {type(exc).__name__}: {exc}"[:300], None)
        self._publish_state()
        log.warning("Companion Satellite keys marked stale", extra={"stale_keys": n})

    def _http_crashed(self, exc: BaseException) -> None:
        n = 0
        for prefix in (self.layout.variables, self.layout.connections):
            n += self.writer.mark_stale(prefix)
        self.http_up = False
        self._http_state = "error"
        self._http_detail = f"internal error: {type(exc).__name__}: {exc}"[:300]
        self._publish_state()
        log.warning("Companion HTTP keys marked stale", extra={"stale_keys": n})

    # --- store helpers ----------------------------------------------------------------------

    def _write(self, key: str | None, value: Any, w: Writer) -> None:
        """Write an upstream value. One the write rules refuse (too large, a key that
        breaks the grammar) is logged (rate-limited), counted in the status, and the
        key keeps its last good value."""
        if key is None:
            return
        try:
            w.set(key, value)
        except HubError as exc:
            self._refuse(key, exc)
            with contextlib.suppress(HubError):
                w.touch(key)  # keep the last good value: sync must not delete it

    def _delete(self, key: str) -> None:
        try:
            self._sat.discard(key)
        except HubError as exc:
            self._refuse(key, exc)

    def _refuse(self, key: str, exc: HubError) -> None:
        self.refused += 1
        self._last_refused = f"{key[:120]}: {exc.message}"[:300]
        _throttled.warning(
            f"refused:{exc.code}",
            "a value from Companion was refused; the key keeps its last good value",
            adapter=self.config.name,
            key=key[:120],
            code=str(exc.code),
            reason=exc.message,
            refused_total=self.refused,
        )
        if self._refused_flush is None:  # the status says so, at most once a second
            self._refused_flush = asyncio.get_running_loop().call_later(1.0, self._flush_refused)

    def _flush_refused(self) -> None:
        self._refused_flush = None
        self._publish_state()

    def _publish_state(self) -> None:
        sat_state, sat_detail, retry = self._sat_state
        if "error" in (sat_state, self._http_state):
            state = "error"
        elif sat_state == "connected" and self._http_state in ("connected", "off"):
            state = "connected"
        elif "disconnected" in (sat_state, self._http_state):
            state = "disconnected"
        else:
            state = "connecting"
        extra: dict[str, Any] = {
            "satellite": {"state": sat_state, "detail": sat_detail},
            "http": {"state": self._http_state, "detail": self._http_detail},
            "next_retry": None if retry is None else int(retry * 1000),
        }
        if self.refused:
            extra["refused"] = {"count": self.refused, "last": self._last_refused}
        if state == "error":
            detail = sat_detail if sat_state == "error" else self._http_detail
        else:
            detail = sat_detail if sat_state != "connected" else self._http_detail or sat_detail
        snapshot = (state, detail, repr(extra))
        if snapshot == self._published:
            return  # unchanged: no new version (and `since` keeps its meaning)
        self._published = snapshot
        self.hub.set_adapter_state(self.config.name, state, detail, **extra)

    # --- Satellite events ----------------------------------------------------------------------

    def _on_satellite_state(self, state: str, detail: str, retry: float | None) -> None:
        if state == "disconnected":
            n = 0
            for prefix in (self.layout.buttons, self.layout.surfaces, self.layout.info):
                n += self.writer.mark_stale(prefix)
            self._synced_event.clear()
            log.warning(
                "Companion Satellite link down",
                extra={"reason": detail, "stale_keys": n, "retry_in_s": _secs(retry)},
            )
        self._sat_state = (state, detail, retry)
        self._publish_state()

    def _on_satellite_event(self, ev: Event) -> None:
        lay = self.layout
        if isinstance(ev, Began):
            self._sat = self.writer.with_epoch(self.hub.new_epoch())
            self._info = {
                "companion_version": ev.companion_version,
                "api_version": ev.api_version,
                "capabilities": {},
                "subscriptions": False,
                "mode": None,
            }
            self._write(lay.info, self._info, self._sat)
        elif isinstance(ev, Capabilities):
            self._info["capabilities"] = {k: v for k, v in ev.flags.items()}
            self._info["subscriptions"] = ev.subscriptions
            self._write(lay.info, self._info, self._sat)
        elif isinstance(ev, Registering):
            self._info["mode"] = ev.mode
            self._info["detail"] = ev.detail
            self._write(lay.info, self._info, self._sat)
            self._sat_state = ("connecting", ev.detail, None)
            self._publish_state()
        elif isinstance(ev, ButtonRendered):
            key = lay.button(ev.page, ev.row, ev.column)
            if ev.state is None:
                self._delete(key)
            else:
                self._write(key, ev.state, self._sat)
        elif isinstance(ev, DevicePage):
            self._surface["page"] = ev.page
            self._write_surface()
        elif isinstance(ev, Brightness):
            self._surface["brightness"] = ev.value
            self._write_surface()
        elif isinstance(ev, OutputValue):
            out_key = lay.surface_output(self.device_id, ev.variable)
            if out_key is not None:
                self._write(out_key, ev.value, self._sat)
        elif isinstance(ev, Synced):
            self._on_synced(ev.mode)

    def _write_surface(self) -> None:
        self._surface["mode"] = self._info.get("mode")
        self._write(self.layout.surface(self.device_id), dict(self._surface), self._sat)

    def _on_synced(self, mode: str) -> None:
        lay = self.layout
        prefix: str | None
        if mode == "subscriptions":
            prefix = lay.buttons
        else:
            page = self.satellite.proto.device_page if self.satellite.proto else None
            prefix = lay.button_page(page) if page is not None else None
        removed = [] if prefix is None else self._sat.sync(prefix)
        # transferable inputs and the surface are re-written on every registration
        for var, value in self.satellite.inputs.items():
            self._write(lay.surface_input(self.device_id, var), value, self._sat)
        self._sat_state = ("connected", str(self._info.get("detail", mode)), None)
        log.info(
            "Companion Satellite link synchronised",
            extra={"mode": mode, "removed_keys": len(removed)},
        )
        self._publish_state()
        self._synced_event.set()
        if self._held:
            self._spawn(self._release_held("the Satellite link came back"))

    # --- HTTP polling ---------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        assert self.http is not None
        failures = 0
        while True:
            await self._hold()
            w = self.writer.with_epoch(self.hub.new_epoch())
            try:
                result = await self.http.poll(self.refs, partial(self._write_values, w=w))
            except HttpError as exc:
                failures += 1
                self._http_down(str(exc))
                delay = min(self.config.timing.backoff_max, self.config.poll_interval * failures)
            else:
                failures = 0
                self._http_polled(result, w)
                delay = self.config.poll_interval
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), delay)

    def _http_down(self, detail: str) -> None:
        if self._http_state != "disconnected":
            n = 0
            for prefix in (self.layout.variables, self.layout.connections):
                n += self.writer.mark_stale(prefix)
            log.warning("Companion HTTP API unreachable", extra={"reason": detail, "stale_keys": n})
        self.http_up = False
        self._http_state, self._http_detail = "disconnected", detail
        self._publish_state()

    def _write_values(self, batch: dict[VariableRef, str | None], *, w: Writer) -> None:
        """Variables as they come in (equal values change nothing; 404 deletes)."""
        lay = self.layout
        for ref, value in batch.items():
            key = lay.variable(ref.connection, ref.name)
            if key is None:
                continue
            if value is None:
                self._delete(key)
            else:
                self._write(key, value, w)

    def _http_polled(self, result: PollResult, w: Writer) -> None:
        lay = self.layout
        if result.failed:
            _throttled.warning(
                "variables-failed",
                "some Companion variables could not be read; kept as they were",
                adapter=self.config.name,
                failed={str(r): why for r, why in list(result.failed.items())[:10]},
            )
            # not re-read this time: keep them (do not let sync delete them)
            for ref in result.failed:
                key = lay.variable(ref.connection, ref.name)
                if key is not None:
                    w.touch(key)
                    if ref in result.too_large:  # refused by the size rule: say so
                        self._refuse(key, HubError(ErrorCode.TOO_LARGE, result.failed[ref]))
        for conn in result.connections:
            self._write(lay.connection(conn.label), conn.as_state(), w)
        if result.skipped_connections:
            _throttled.warning(
                "skipped-connections",
                "Companion listed connections the adapter cannot read; skipped",
                adapter=self.config.name,
                skipped=result.skipped_connections,
            )
        w.sync(lay.variables)
        w.sync(lay.connections)
        restarted = (
            self._uptime is not None and result.uptime is not None and result.uptime < self._uptime
        )
        self._uptime = result.uptime
        was_down = not self.http_up
        self.http_up = True
        self._http_state, self._http_detail = "connected", f"polling {len(self.refs)} variables"
        self._publish_state()
        if restarted:
            log.warning("Companion restarted (uptime went back): resynchronising")
            self.satellite.reset("Companion restarted")
        if was_down and self._held:
            self._spawn(self._release_held("the HTTP link came back"))

    # --- commands --------------------------------------------------------------------------------

    def deliver_command(self, cmd: InFlight) -> None:
        self._spawn(self._run_command(cmd))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.hub.track(task)

    async def _run_command(self, cmd: InFlight) -> None:
        try:
            result = await self._execute(cmd.name, cmd.params)
            outcome = Outcome(True, result)
        except HubError as exc:
            outcome = Outcome(False, None, exc)
        except (LinkDown, ReplyTimeout) as exc:
            code = ErrorCode.TIMEOUT if isinstance(exc, ReplyTimeout) else ErrorCode.UNAVAILABLE
            outcome = Outcome.failure(code, str(exc))
        except HttpError as exc:
            code = ErrorCode.UNAVAILABLE if exc.status is None else ErrorCode.FAILED
            outcome = Outcome.failure(code, exc.text)
        except Exception:
            log.exception("companion command failed", extra={"command": cmd.name})
            outcome = Outcome.failure(ErrorCode.INTERNAL, "internal error in the Companion adapter")
        status = self.hub.router.reply(self, cmd.hid, outcome)
        if status is ReplyStatus.TOO_LARGE or status is ReplyStatus.NOT_JSON:
            log.warning(
                "a Companion command's result was refused",
                extra={"command": cmd.name, "status": status.value},
            )

    def _need_http(self) -> CompanionHttp:
        if self.http is None:
            raise HubError(ErrorCode.UNAVAILABLE, "the HTTP link to Companion is not configured")
        if not self.http_up:
            raise HubError(
                ErrorCode.UNAVAILABLE,
                f"the HTTP link to Companion is down: {self._http_detail or 'not connected yet'}",
            )
        return self.http

    async def _execute(self, name: str, params: dict[str, Any]) -> Any:
        if name in ("press", "down", "up"):
            loc = parse_location(params.get("location"))
            http = self._need_http()
            if name == "down":
                self._held.add(loc)  # before sending: a lost reply must not hide a press
            await http.location(loc, name)
            if name == "up":
                self._held.discard(loc)
            return {"location": loc, "via": "http"}
        if name == "rotate":
            loc = parse_location(params.get("location"))
            amount = params.get("amount", params.get("steps", 1))
            if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
                raise HubError(ErrorCode.BAD_REQUEST, "params.amount must be a non-zero integer")
            return await self._rotate(loc, amount)
        if name == "set_variable":
            var = params.get("name")
            if not isinstance(var, str) or not var:
                raise HubError(ErrorCode.BAD_REQUEST, "params.name must be a custom variable name")
            if "value" not in params:
                raise HubError(ErrorCode.BAD_REQUEST, "params.value is required")
            await self._need_http().set_custom_variable(var, params["value"])
            self._poll_now.set()
            return {"name": var}
        if name == "set_style":
            loc = parse_location(params.get("location"))
            fields: tuple[str, ...] = ("text", "bgcolor", "color", "size")
            style: dict[str, str] = {k: str(params[k]) for k in fields if k in params}
            if not style:
                raise HubError(
                    ErrorCode.BAD_REQUEST, "give at least one of text, bgcolor, color, size"
                )
            await self._need_http().location(loc, "style", style)
            return {
                "location": loc,
                "note": "Companion 5.x accepts style changes over HTTP but does not apply them",
            }
        if name == "set_input":
            var = params.get("name")
            value = params.get("value")
            declared = {v.id for v in self.config.transferable if v.type == "input"}
            if var not in declared:
                raise HubError(
                    ErrorCode.BAD_REQUEST,
                    f"params.name must be a declared transferable input: {sorted(declared)}",
                )
            assert isinstance(var, str)
            text = value if isinstance(value, str) else wire.encode_value(value).decode()
            reply = await self.satellite.set_input(var, text)
            if not reply.ok:
                raise HubError(ErrorCode.FAILED, f"Companion: {reply.message}")
            key = self.layout.surface_input(self.device_id, var)
            if key is not None:
                self._write(key, text, self._sat)
            return {"name": var}
        if name == "refresh":
            return await self._refresh()
        raise HubError(
            ErrorCode.NOT_FOUND, f"unknown command {name!r}; one of: {', '.join(COMMANDS)}"
        )

    async def _rotate(self, loc: str, amount: int) -> dict[str, Any]:
        link = self.satellite
        proto = link.proto
        if proto is not None and proto.mode == "subscriptions" and link.synced:
            subid = loc
            if proto.api >= (1, 14):
                reply = await link.request(
                    "SUB-ROTATE", subid, lambda p: p.sub_rotate(subid, amount)
                )
                if not reply.ok:
                    raise HubError(ErrorCode.FAILED, f"Companion: {reply.message}")
                return {"location": loc, "amount": amount, "via": "satellite"}
        http = self._need_http()
        action = "rotate-right" if amount > 0 else "rotate-left"
        for _ in range(abs(amount)):
            await http.location(loc, action)
        return {"location": loc, "amount": amount, "via": "http"}

    async def _refresh(self) -> dict[str, Any]:
        self._poll_now.set()
        self._synced_event.clear()
        self.satellite.reset("refresh requested")
        try:
            await asyncio.wait_for(self._synced_event.wait(), 10.0)
        except TimeoutError:
            raise HubError(
                ErrorCode.TIMEOUT, "Companion did not resynchronise within 10 s"
            ) from None
        return {"synced": True}

    async def _release_held(self, why: str) -> None:
        if self.http is None or not self.http_up:
            return
        for loc in list(self._held):
            try:
                await self.http.location(loc, "up")
            except HttpError as exc:
                log.warning(
                    "could not release a held button", extra={"location": loc, "error": str(exc)}
                )
                continue
            self._held.discard(loc)
            log.info("released a held button", extra={"location": loc, "why": why})


def _secs(t: float | None) -> float | None:
    return None if t is None else round(t - time.time(), 1)


def transferable_from_config(items: list[dict[str, Any]]) -> list[Transferable]:
    out = []
    for item in items:
        vid, vtype = item.get("id"), item.get("type")
        if not isinstance(vid, str) or not valid_segment(vid) or vtype not in ("input", "output"):
            raise ValueError(f"transferable value {item!r}: needs an id and type input|output")
        out.append(
            Transferable(vid, vtype, str(item.get("name", vid)), str(item.get("description", "")))
        )
    return out
