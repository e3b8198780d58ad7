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
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from ...core.commands import InFlight, Outcome, ReplyStatus
from ...core.errors import ErrorCode, HubError
from ...core.writer import Writer
from ...logs import Throttle
from ...supervisor import Backoff, Supervisor
from .commands import (
    amount_param,
    custom_variable_params,
    input_params,
    location_param,
    style_params,
    unknown_command,
)
from .config import CompanionConfig, default_device_id
from .ember.consumer import Event as EmberEvent
from .ember.consumer import VariableChanged, VariablesListed
from .ember_link import EmberLink
from .events import (
    Began,
    Brightness,
    ButtonRendered,
    Capabilities,
    DevicePage,
    Event,
    MirrorMode,
    OutputValue,
    Registering,
    Synced,
)
from .export import Exporter
from .http import CompanionHttp, HttpError, PollResult, VariableRef
from .layout import Layout
from .link import LinkDown, ReplyTimeout, SatelliteLink
from .satellite import SatelliteOptions
from .status import LinkState, LinkStatus, adapter_status
from .writes import UpstreamWrites

if TYPE_CHECKING:
    from ...hub import Hub

__all__ = ["CompanionAdapter", "CompanionConfig"]  # the config is imported from here too

log = logging.getLogger("companion_hub.adapters.companion")
_throttled = Throttle(log, interval=5.0)

EMBER_KINDS = ("internal", "custom")  # the variables Companion's Ember+ provider lists


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
        self._satellite_writer = self.writer
        self.device_id = config.device_id or default_device_id(hub.config.port, config.name)
        self.variable_refs = [VariableRef.parse(v) for v in config.variables]
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
        # Ember+ (TCP 9092): every internal and custom variable, pushed; HTTP polling of
        # the listed variables is the fallback while it is unreachable
        self.ember = (
            EmberLink(
                config.host,
                config.ember_port,
                on_event=self._on_ember_event,
                on_state=self._on_ember_state,
                timing=config.ember_timing,
                hold=self._hold,
            )
            if config.ember
            else None
        )
        self.ember_up = False
        self._ember_writer = self.writer
        self._ember_counts: dict[str, int] = {}
        self._ember_status = LinkStatus(LinkState.CONNECTING if config.ember else LinkState.OFF)
        self._info: dict[str, Any] = {}
        self._sat_status = LinkStatus(LinkState.CONNECTING, "starting")
        self._http_status = LinkStatus(LinkState.CONNECTING if config.http else LinkState.OFF)
        self._uptime: float | None = None
        self._held: set[str] = set()  # locations pressed with `down` and not released
        self.supervisor = Supervisor(f"companion:{config.name}")
        self.writes = UpstreamWrites(config.name, self._publish_state)
        self._poll_now = asyncio.Event()
        self._synced_event = asyncio.Event()
        self._surface: dict[str, Any] = {}
        self._published: tuple[str, str, str] | None = None
        # metrics: Satellite link drops and reconnects (plain counters on the hub)
        self.counters = hub.adapter_counters(config.name)
        self._dropped = False  # the link went down after a sync, not synchronised since
        # hub keys -> Companion custom variables over the HTTP link (export.py)
        self.export = (
            Exporter(
                hub.store,
                config.exports,
                name=config.name,
                namespace=config.namespace,
                http=lambda: self.http if self.http_up else None,
                publish=self._publish_state,
            )
            if config.exports and self.http is not None
            else None
        )

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        hub = self.hub
        hub.register_namespace(self.config.namespace, self.actor)
        hub.router.set_owner(self.config.namespace, self)
        self._publish_state()
        timing = self.config.timing

        def spawn(link: str, run: Any, on_crash: Any, base: float = timing.backoff_base) -> None:
            # the links handle the failures they expect (reconnecting with their own
            # back-off); the supervisor restarts them after anything else
            self.supervisor.spawn(
                f"companion-{link}:{self.config.name}",
                run,
                on_crash=on_crash,
                backoff=Backoff(base, timing.backoff_max),
                stable_after=timing.stable_after,
            )

        spawn("satellite", self.satellite.run, self._satellite_crashed)
        if self.http is not None:
            base = max(timing.backoff_base, self.config.poll_interval)
            spawn("http", self._poll_loop, self._http_crashed, base)
        if self.ember is not None:
            spawn("ember", self.ember.run, self._ember_crashed)
        if self.export is not None:
            self.export.start()
            self.supervisor.spawn(f"companion-export:{self.config.name}", self.export.run)

    async def stop(self) -> None:
        """Release held buttons, stop the links, mark the namespace stale. Never raises
        a task's old exception: the hub's shutdown must go on."""
        if self._held and self.http is not None:
            for loc in list(self._held):
                with contextlib.suppress(HttpError):
                    await self.http.location(loc, "up")
            self._held.clear()
        if self.export is not None:
            self.export.stop()  # the store listener goes; the task stops with the others
        await self.supervisor.stop()
        self.writes.close()
        if self.http is not None:
            await self.http.close()
        self.hub.router.owner_gone(self, "the Companion adapter stopped")
        self.writer.mark_stale()
        self._sat_status = LinkStatus(LinkState.DISCONNECTED, "adapter stopped")
        self._http_status = LinkStatus(
            LinkState.DISCONNECTED if self.config.http else LinkState.OFF,
            self._http_status.detail,
        )
        if self.ember is not None:
            self._ember_status = LinkStatus(LinkState.DISCONNECTED, "adapter stopped")
        self._publish_state()

    async def _hold(self) -> None:
        """Back-pressure: the links wait here while the event log is behind."""
        if self.hub.log_over_limit:
            await self.hub.wait_log_room()

    # --- crashes (the supervisor restarts the task after this) -------------------------------

    def _satellite_crashed(self, exc: BaseException) -> None:
        self._count_drop()
        n = self._mark_satellite_keys_stale()
        self._sat_status = LinkStatus(
            LinkState.ERROR, f"internal error: {type(exc).__name__}: {exc}"[:300]
        )
        self._publish_state()
        log.warning("Companion Satellite keys marked stale", extra={"stale_keys": n})

    def _http_crashed(self, exc: BaseException) -> None:
        n = self._mark_http_keys_stale()
        self.http_up = False
        self._http_status = LinkStatus(
            LinkState.ERROR, f"internal error: {type(exc).__name__}: {exc}"[:300]
        )
        self._publish_state()
        log.warning("Companion HTTP keys marked stale", extra={"stale_keys": n})

    def _mark_satellite_keys_stale(self) -> int:
        """The Satellite link is gone: what it mirrors turns stale. Returns the count."""
        lay = self.layout
        self._synced_event.clear()
        return sum(self.writer.mark_stale(p) for p in (lay.buttons, lay.surfaces, lay.info))

    def _mark_http_keys_stale(self) -> int:
        """The HTTP link is gone: what it mirrors turns stale. Returns the count."""
        lay = self.layout
        return sum(
            self.writer.mark_stale(p) for p in (*self._http_variable_prefixes(), lay.connections)
        )

    def _http_refs(self) -> list[VariableRef]:
        """The variables HTTP polls: all listed ones, or only module variables while
        Ember+ brings the internal and custom ones."""
        if not self.ember_up:
            return self.variable_refs
        return [r for r in self.variable_refs if r.connection not in EMBER_KINDS]

    def _http_variable_prefixes(self, *, sync: bool = False) -> list[str]:
        """The parts of ``<ns>.variables`` that HTTP polling answers for: all of it
        without Ember+. With Ember+ configured, the internal and custom variables are
        Ember+'s to list and delete (``sync``: a variable HTTP does not poll is not
        gone, only unobserved), and to mark stale while it is up."""
        lay = self.layout
        if self.ember is None or (not sync and not self.ember_up):
            return [lay.variables]
        conns = sorted({r.connection for r in self.variable_refs} - set(EMBER_KINDS))
        return [f"{lay.variables}.{c}" for c in conns]

    def _publish_state(self) -> None:
        state, detail, extra = adapter_status(
            self._sat_status,
            self._http_status,
            self.writes.refused,
            self.writes.last_refused,
            ember=self._ember_status,
        )
        if self.export is not None:
            extra["export"] = self.export.status()
        snapshot = (state, detail, repr(extra))
        if snapshot == self._published:
            return  # unchanged: no new version (and `since` keeps its meaning)
        self._published = snapshot
        self.hub.set_adapter_state(self.config.name, state, detail, **extra)

    # --- Satellite events ----------------------------------------------------------------------

    def _count_drop(self) -> None:
        if self._sat_status.state is LinkState.CONNECTED:
            self.counters.link_drops += 1
            self._dropped = True

    def _on_satellite_state(self, state: LinkState, detail: str, retry: float | None) -> None:
        if state is LinkState.DISCONNECTED:
            self._count_drop()
            n = self._mark_satellite_keys_stale()
            log.warning(
                "Companion Satellite link down",
                extra={"reason": detail, "stale_keys": n, "retry_in_s": _secs(retry)},
            )
        self._sat_status = LinkStatus(state, detail, retry)
        self._publish_state()

    def _on_satellite_event(self, ev: Event) -> None:
        lay = self.layout
        if isinstance(ev, Began):
            self._satellite_writer = self.writer.with_epoch(self.hub.new_epoch())
            self._info = {
                "companion_version": ev.companion_version,
                "api_version": ev.api_version,
                "capabilities": {},
                "subscriptions": False,
                "mode": None,
            }
            self.writes.write(lay.info, self._info, self._satellite_writer)
        elif isinstance(ev, Capabilities):
            self._info["capabilities"] = {k: v for k, v in ev.flags.items()}
            self._info["subscriptions"] = ev.subscriptions
            self.writes.write(lay.info, self._info, self._satellite_writer)
        elif isinstance(ev, Registering):
            self._info["mode"] = ev.mode.value
            self._info["detail"] = ev.detail
            self.writes.write(lay.info, self._info, self._satellite_writer)
            self._sat_status = LinkStatus(LinkState.CONNECTING, ev.detail)
            self._publish_state()
        elif isinstance(ev, ButtonRendered):
            key = lay.button(ev.page, ev.row, ev.column)
            if ev.state is None:
                self.writes.delete(key, self._satellite_writer)
            else:
                self.writes.write(key, ev.state, self._satellite_writer)
        elif isinstance(ev, DevicePage):
            self._surface["page"] = ev.page
            self._write_surface()
        elif isinstance(ev, Brightness):
            self._surface["brightness"] = ev.value
            self._write_surface()
        elif isinstance(ev, OutputValue):
            out_key = lay.surface_output(self.device_id, ev.variable)
            if out_key is not None:
                self.writes.write(out_key, ev.value, self._satellite_writer)
        elif isinstance(ev, Synced):
            self._on_synced(ev.mode)

    def _write_surface(self) -> None:
        self._surface["mode"] = self._info.get("mode")
        self.writes.write(
            self.layout.surface(self.device_id), dict(self._surface), self._satellite_writer
        )

    def _on_synced(self, mode: MirrorMode) -> None:
        lay = self.layout
        prefix: str | None
        if mode is MirrorMode.SUBSCRIPTIONS:
            prefix = lay.buttons
        else:
            page = self.satellite.proto.device_page if self.satellite.proto else None
            prefix = lay.button_page(page) if page is not None else None
        removed = [] if prefix is None else self._satellite_writer.sync(prefix)
        # transferable inputs and the surface are re-written on every registration
        for var, value in self.satellite.inputs.items():
            self.writes.write(lay.surface_input(self.device_id, var), value, self._satellite_writer)
        self._sat_status = LinkStatus(
            LinkState.CONNECTED, str(self._info.get("detail", mode.value))
        )
        if self._dropped:
            self._dropped = False
            self.counters.reconnects += 1
        log.info(
            "Companion Satellite link synchronised",
            extra={"mode": mode.value, "removed_keys": len(removed)},
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
                result = await self.http.poll(self._http_refs(), partial(self._write_values, w=w))
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
        if self._http_status.state is not LinkState.DISCONNECTED:
            n = self._mark_http_keys_stale()
            log.warning("Companion HTTP API unreachable", extra={"reason": detail, "stale_keys": n})
        self.http_up = False
        self._http_status = LinkStatus(LinkState.DISCONNECTED, detail)
        self._publish_state()

    def _write_values(self, batch: dict[VariableRef, str | None], *, w: Writer) -> None:
        """Variables as they come in (equal values change nothing; 404 deletes)."""
        lay = self.layout
        for ref, value in batch.items():
            key = lay.variable(ref.connection, ref.name)
            if key is None:
                continue
            if value is None:
                self.writes.delete(key, w)
            else:
                self.writes.write(key, value, w)

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
                        self.writes.refuse(key, HubError(ErrorCode.TOO_LARGE, result.failed[ref]))
        for conn in result.connections:
            self.writes.write(lay.connection(conn.label), conn.as_state(), w)
        if result.skipped_connections:
            _throttled.warning(
                "skipped-connections",
                "Companion listed connections the adapter cannot read; skipped",
                adapter=self.config.name,
                skipped=result.skipped_connections,
            )
        for prefix in self._http_variable_prefixes(sync=True):
            w.sync(prefix)
        w.sync(lay.connections)
        restarted = (
            self._uptime is not None and result.uptime is not None and result.uptime < self._uptime
        )
        self._uptime = result.uptime
        was_down = not self.http_up
        self.http_up = True
        self._http_status = LinkStatus(LinkState.CONNECTED, self._polling_detail())
        self._publish_state()
        if restarted:
            log.warning("Companion restarted (uptime went back): resynchronising")
            self.satellite.reset("Companion restarted")
        if was_down and self._held:
            self._spawn(self._release_held("the HTTP link came back"))
        if self.export is not None and (was_down or restarted):
            self.export.resync("Companion restarted" if restarted else "the HTTP link is up")

    def _polling_detail(self) -> str:
        n = len(self._http_refs())
        if self.ember_up:
            return f"polling {n} module variables (internal and custom ones by Ember+)"
        if not self.variable_refs:
            hint = "list them with --companion-variable (or `variables` in [[companion]])"
            if self.ember is not None:
                return f"0 variables configured: {hint} or enable Ember+ in Companion"
            return f"0 variables configured: {hint}"
        return f"polling {n} variables"

    # --- Ember+ ---------------------------------------------------------------------------------

    def _on_ember_state(self, state: LinkState, detail: str, retry: float | None) -> None:
        if state is LinkState.CONNECTING and (
            self.ember_up or self._ember_status.state is LinkState.DISCONNECTED
        ):
            # reconnecting after Companion rebuilt its tree (the values stay as they are
            # until the new listing, which syncs them), or retrying an unreachable
            # provider (the status keeps saying why: no new version per attempt)
            return
        if state is LinkState.DISCONNECTED and (
            self.ember_up or self._ember_status.state is not LinkState.DISCONNECTED
        ):
            was_up = self.ember_up
            self.ember_up = False
            n = self._mark_ember_keys_stale() if was_up else 0
            log.warning(
                "Ember+ unreachable: internal and custom variables by HTTP polling of the "
                "listed ones",
                extra={
                    "adapter": self.config.name,
                    "reason": detail,
                    "stale_keys": n,
                    "polled_variables": len(self.variable_refs),
                    **(
                        {}
                        if self.variable_refs
                        else {
                            "hint": "0 variables configured: list them with "
                            "--companion-variable or enable Ember+ in Companion "
                            "(Settings > Protocols > Ember+)"
                        }
                    ),
                },
            )
            self._poll_now.set()  # the fallback starts now
        self._ember_status = LinkStatus(state, detail, retry)
        if self.http_up:
            self._http_status = LinkStatus(LinkState.CONNECTED, self._polling_detail())
        self._publish_state()

    def _mark_ember_keys_stale(self) -> int:
        lay = self.layout
        return sum(self.writer.mark_stale(f"{lay.variables}.{k}") for k in EMBER_KINDS)

    def _ember_crashed(self, exc: BaseException) -> None:
        self.ember_up = False
        n = self._mark_ember_keys_stale()
        self._ember_status = LinkStatus(
            LinkState.ERROR, f"internal error: {type(exc).__name__}: {exc}"[:300]
        )
        self._publish_state()
        log.warning("Ember+ keys marked stale", extra={"stale_keys": n})

    def _on_ember_event(self, ev: EmberEvent) -> None:
        lay = self.layout
        if isinstance(ev, VariablesListed):
            # a new listing (a new connection, after a rebuild too): one epoch, and what
            # it does not list is deleted
            w = self.writer.with_epoch(self.hub.new_epoch())
            self._ember_writer = w
            skipped = []
            for name, value in ev.values.items():
                key = lay.variable(ev.kind, name)
                if key is None:
                    skipped.append(name)
                self.writes.write(key, value, w)
            if skipped:
                _throttled.warning(
                    f"ember-names:{ev.kind}",
                    "Companion variables whose names cannot be key segments were skipped",
                    adapter=self.config.name,
                    variables=ev.kind,
                    names=skipped[:10],
                )
            removed = w.sync(f"{lay.variables}.{ev.kind}")
            self._ember_counts[ev.kind] = len(ev.values)
            if ev.kind == "custom":
                first = not self.ember_up
                self.ember_up = True
                if self.http_up:
                    self._http_status = LinkStatus(LinkState.CONNECTED, self._polling_detail())
                if first:
                    log.info(
                        "Ember+ lists Companion's variables",
                        extra={
                            "adapter": self.config.name,
                            "internal": self._ember_counts.get("internal", 0),
                            "custom": self._ember_counts.get("custom", 0),
                            "removed": len(removed),
                        },
                    )
        elif isinstance(ev, VariableChanged):
            self.writes.write(lay.variable(ev.kind, ev.name), ev.value, self._ember_writer)

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
                "the HTTP link to Companion is down: "
                f"{self._http_status.detail or 'not connected yet'}",
            )
        return self.http

    async def _execute(self, name: str, params: dict[str, Any]) -> Any:
        if name in ("press", "down", "up"):
            loc = location_param(params)
            http = self._need_http()
            if name == "down":
                self._held.add(loc)  # before sending: a lost reply must not hide a press
            await http.location(loc, name)
            if name == "up":
                self._held.discard(loc)
            return {"location": loc, "via": "http"}
        if name == "rotate":
            loc = location_param(params)
            return await self._rotate(loc, amount_param(params))
        if name == "set_variable":
            var, value = custom_variable_params(params)
            await self._need_http().set_custom_variable(var, value)
            self._poll_now.set()
            return {"name": var}
        if name == "set_style":
            loc = location_param(params)
            style = style_params(params)
            await self._need_http().location(loc, "style", style)
            return {
                "location": loc,
                "note": "Companion 5.x accepts style changes over HTTP but does not apply them",
            }
        if name == "set_input":
            declared = {v.id for v in self.config.transferable if v.type == "input"}
            var, text = input_params(params, declared)
            reply = await self.satellite.set_input(var, text)
            if not reply.ok:
                raise HubError(ErrorCode.FAILED, f"Companion: {reply.message}")
            key = self.layout.surface_input(self.device_id, var)
            if key is not None:
                self.writes.write(key, text, self._satellite_writer)
            return {"name": var}
        if name == "refresh":
            return await self._refresh()
        raise unknown_command(name)

    async def _rotate(self, loc: str, amount: int) -> dict[str, Any]:
        link = self.satellite
        proto = link.proto
        if proto is not None and proto.mode is MirrorMode.SUBSCRIPTIONS and link.synced:
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
