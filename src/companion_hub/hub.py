"""The hub: one event loop's worth of state, subscriptions, sessions and routing.

The hub wires the core together. Every committed change reaches
:meth:`Hub._fan_out`, which finds the connections whose subscriptions match the key
(through the pattern index), encodes the delta once, and pushes the same bytes into
each connection's coalescing queue. Nothing here awaits: a snapshot captured and a
subscription registered in the same synchronous step can neither miss nor repeat
a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import SERVER_NAME, __version__
from .access import AccessControl
from .core.acl import Role
from .core.commands import CommandRouter, InFlight, Outcome, ResultCallback
from .core.delivery import DeliveryQueue, Delta
from .core.errors import CompanionHubError, ErrorCode, HubError
from .core.keys import Pattern
from .core.limits import Limits
from .core.patterns import PatternIndex
from .core.store import Change, Store
from .core.writer import Writer
from .eventlog.recorder import Recorder, Recovered, recover
from .eventlog.store import SCHEMA, EventLog, LogSettings
from .protocol import encode as wire
from .protocol.session import SessionCounters
from .supervisor import Supervisor

if TYPE_CHECKING:
    from .protocol.session import HubSession

log = logging.getLogger("companion_hub.hub")

HUB_NAMESPACE = "hub"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 8420
    heartbeat_ms: int = 10_000
    limits: Limits = field(default_factory=Limits)
    # connection caps (see server/listener.py): over a cap, 503 and close
    max_connections: int = 4096
    max_connections_per_address: int = 512
    # a connection must complete a request's headers within this (also: idle
    # keep-alive HTTP connections are closed after it)
    request_header_timeout: float = 10.0
    # hub.clients.<name> of a client that left and owns no keys is deleted after this
    # (one-off clients such as CLI calls would otherwise pile up)
    client_record_ttl: float = 3600.0
    # extra namespaces granted to clients: client name -> namespaces
    grants: dict[str, list[str]] = field(default_factory=dict)
    # bytes per outgoing frame (the writer batches messages up to this size)
    frame_target_bytes: int = 64 * 1024
    snapshot_chunk_bytes: int = 64 * 1024
    # A connection's writer that wakes from idle for new output waits this long first,
    # so that changes arriving together leave in one frame (fewer, fuller frames at low
    # rates; a busy writer never waits). 0 sends at once. See docs/adr/0009.
    flush_delay_ms: float = 5.0
    # Delivery window: at most this many bytes sent to a client and not yet
    # confirmed by its pong; beyond it, deltas wait (and coalesce) in the hub.
    delivery_window_bytes: int = 128 * 1024
    # Security (docs/security.md). Without a token file every client name is accepted
    # (the development mode), which a hub listening beyond loopback refuses unless
    # allow_anonymous is set.
    tokens_file: str | None = None
    allow_anonymous: bool = False
    roles: dict[str, Role] = field(default_factory=dict)  # over the built-in ones
    allowed_origins: list[str] = field(default_factory=list)  # besides the hub's own
    tls_cert: str | None = None  # PEM: serve wss:// and https:// on the same port
    tls_key: str | None = None
    # failed authentications from one address: after this many within the window,
    # its attempts are refused for lockout seconds
    auth_failures: int = 5
    auth_failure_window: float = 60.0
    auth_lockout: float = 60.0
    # The event log: a directory (the database is <dir>/hub.sqlite3), ":memory:" for
    # a log that lives as long as the process, or None for no log at all.
    data_dir: str | None = None
    log_flush_interval: float = 0.02
    log_max_pending: int = 200_000
    log_snapshot_every: int = 200_000
    log_retention_changes: int = 5_000_000
    log_retention_days: float = 30.0


@dataclass
class AdapterCounters:
    """Plain counters an adapter keeps for the metrics (see Hub.adapter_counters)."""

    reconnects: int = 0  # the link synchronised again after a drop
    link_drops: int = 0  # the link went down after being connected


class DataDirInUse(CompanionHubError):
    """Another hub process holds the data directory."""


class Hub:
    def __init__(self, config: HubConfig | None = None, *, hub_id: str | None = None) -> None:
        self.config = config or HubConfig()
        self.limits = self.config.limits
        self.hub_id = hub_id or secrets.token_hex(8)
        self.started_ms = now_ms()
        self.store = Store(
            clock_ms=now_ms,
            decode=wire.decode_value,
            encode=wire.encode_value,
            limits=self.limits,
            history_limit=self.limits.history_changes,
        )
        self.index: PatternIndex[DeliveryQueue] = PatternIndex()
        self.event_index: PatternIndex[DeliveryQueue] = PatternIndex()
        self.router = CommandRouter(
            max_in_flight_per_caller=self.limits.commands_in_flight,
            idempotency_keys_per_client=self.limits.idempotency_keys_per_client,
            idempotency_bytes=self.limits.idempotency_bytes,
            max_result_bytes=self.limits.value_bytes,
            encode=wire.encode_value,
            decode=wire.decode_value,
        )
        self.sessions: dict[str, HubSession] = {}  # client name -> live session
        # plain counters and states for the metrics (companion_hub.metrics reads them
        # at scrape time; nothing here calls prometheus_client)
        self.session_counters = SessionCounters()
        self.adapter_links: dict[str, dict[str, str]] = {}  # name -> link -> state
        self.adapter_stats: dict[str, AdapterCounters] = {}
        # called once per finished command with its duration in seconds (the metrics)
        self.command_observer: Callable[[InFlight, Outcome, float], None] | None = None
        self.metrics: Any = None  # companion_hub.metrics.HubMetrics, once attached
        self.router.on_finish = self._record_command
        self.access = AccessControl(
            tokens_file=self.config.tokens_file,
            roles=self.config.roles,
            failures=self.config.auth_failures,
            window=self.config.auth_failure_window,
            lockout=self.config.auth_lockout,
            record=self._record_auth,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flush_due: list[asyncio.Event] = []  # writers to wake at the flush tick
        self.supervisor = Supervisor("hub")
        self._client_expiry: dict[str, asyncio.TimerHandle] = {}
        self._epochs = itertools.count(1)
        self.event_log: EventLog | None = None
        # replies of durable writes waiting for the log: (rev, seq, send)
        self._durable_waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._durable_seq = 0
        self._lock: IO[str] | None = None
        self.recorder: Recorder | None = None
        self.recovered: Recovered | None = None
        if self.config.data_dir is not None:
            self._open_log()
        self.store.add_listener(self._fan_out)
        self.store.register_namespace(HUB_NAMESPACE, HUB_NAMESPACE)
        # the hub's own writes (hub.* keys) are exempt from log back-pressure: they
        # are bounded by the number of clients and adapters
        self._hub_writer = self.store.writer(HUB_NAMESPACE, {HUB_NAMESPACE})
        if self.recovered is not None:
            # the hub's own keys are rebuilt, not restored: their removal is a change too
            hub_ns = self.store.namespace(HUB_NAMESPACE)
            for key in [] if hub_ns is None else [k for k in hub_ns.entries if k != "hub.info"]:
                self._hub_writer.delete(key)
            if self.recorder is not None:
                rec = self.recovered
                self.recorder.session(
                    "hub-start",
                    HUB_NAMESPACE,
                    reason="clean restart" if rec.clean else "restart after an unclean stop",
                    extra={
                        "restored_keys": rec.keys,
                        "marked_stale": rec.flipped,
                        "rev": rec.rev,
                        "logged_rev": rec.logged_rev,
                        "version_floor": rec.version_floor,
                    },
                )
        self.set_hub_key(
            "hub.info", {"version": __version__, "started": self.started_ms, "hub": self.hub_id}
        )

    def _open_log(self) -> None:
        """Open the event log, take the hub id from it and recover the state (blocking:
        the hub is not serving yet)."""
        cfg = self.config
        assert cfg.data_dir is not None
        if cfg.data_dir == ":memory:":
            path = ":memory:"
        else:
            Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
            path = str(Path(cfg.data_dir) / "hub.sqlite3")
            # one hub per data directory: two would interleave revisions in one history
            self._lock = open(Path(cfg.data_dir) / "hub.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock.close()
                raise DataDirInUse(
                    f"another hub is using the data directory {cfg.data_dir}: stop it, "
                    "or give this one another directory with --data-dir"
                ) from None
        event_log = EventLog(
            LogSettings(
                path=path,
                flush_interval=cfg.log_flush_interval,
                max_pending=cfg.log_max_pending,
                snapshot_every=cfg.log_snapshot_every,
                retention_changes=cfg.log_retention_changes,
                retention_days=cfg.log_retention_days,
            )
        )
        stored_id = event_log.meta("hub_id")
        if stored_id is None:
            event_log.set_meta("hub_id", self.hub_id)
        else:
            self.hub_id = stored_id
        event_log.set_meta("schema", str(SCHEMA))  # opening upgraded it (eventlog.store)
        # after a crash: at most this many acknowledged changes can be missing from the
        # log. Writers are held at max_pending (one batch and one frame on top); the
        # hub's own exempt writes are stale flips, at most one per key per disconnect:
        # per restored key (recover adds those) and per key created in the lost window
        # (at most max_pending more)
        crash_gap = 2 * cfg.log_max_pending + 50_000 + 10_000
        self.recovered = recover(
            event_log, self.store, self.limits.history_changes, crash_gap=crash_gap
        )
        log.info(
            "state recovered from the event log",
            extra={
                "path": path,
                "hub": self.hub_id,
                "rev": self.recovered.rev,
                "clean": self.recovered.clean,
                "keys": self.recovered.keys,
                "replayed": self.recovered.changes_replayed,
                "marked_stale": self.recovered.flipped,
                "seconds": round(self.recovered.seconds, 3),
            },
        )
        self.event_log = event_log
        self.recorder = Recorder(event_log, self.store, cfg.log_snapshot_every)

    def _record_command(self, cmd: InFlight, outcome: Outcome) -> None:
        """Every executed command, once, with its outcome (also when its caller left):
        to the log and the metrics."""
        observer = self.command_observer
        if observer is not None:
            observer(cmd, outcome, max(0, now_ms() - cmd.started_ms) / 1000)
        if self.recorder is not None:
            self.recorder.command(
                caller=cmd.source,
                target=cmd.target,
                name=cmd.name,
                params=cmd.params,
                ok=outcome.ok,
                result=outcome.result,
                error=None if outcome.error is None else outcome.error.to_wire(),
                duration_ms=float(now_ms() - cmd.started_ms),
            )

    def record_session(
        self, event: str, client: str, *, address: str, session: str, reason: str = ""
    ) -> None:
        """A session event for the log: connect, disconnect, takeover."""
        if self.recorder is not None:
            self.recorder.session(event, client, address=address, session=session, reason=reason)

    def register_namespace(self, name: str, owner: str) -> None:
        """Create (or confirm) a namespace and record it in the log."""
        known = self.store.namespace(name)
        self.store.register_namespace(name, owner)
        if known is None and self.recorder is not None:
            self.recorder.namespace(name, owner)

    @property
    def log_over_limit(self) -> bool:
        return self.event_log is not None and self.event_log.over_limit

    async def wait_log_room(self) -> None:
        """Hold a writer while the log's backlog is over its limit (the disk is behind):
        resume when half of it is written."""
        event_log = self.event_log
        if event_log is None:
            return
        low = event_log.settings.max_pending // 2
        while event_log.pending > low:  # noqa: ASYNC110 - the writer is a thread
            await asyncio.sleep(0.005)

    @property
    def server_name(self) -> str:
        return SERVER_NAME

    # --- the fan-out: the hot path ---------------------------------------------------

    def _fan_out(self, change: Change) -> None:
        queues = self.index.match(change.key)
        if not queues:
            return
        e = change.entry
        data = (
            wire.deleted_delta(change.key, change.version, change.rev, change.owner)
            if e is None
            else wire.delta(e)
        )
        DeliveryQueue.push_delta_to(queues, change.key, Delta(change.rev, data))

    def publish_event(self, key: str, data: Any, source: str) -> int:
        if self.recorder is not None:
            self.recorder.event(key, data, source)
        queues = self.event_index.match(key)
        if queues:
            msg = wire.event(key, wire.encode(data), source, now_ms())
            n = 0
            for q in queues:
                if q.may_read is None or q.may_read(key):
                    q.push_event(msg)
                    n += 1
            return n
        return 0

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(self, queue: DeliveryQueue, patterns: Sequence[Pattern], events: bool) -> None:
        for p in patterns:
            self.index.add(p, queue)
            if events:
                self.event_index.add(p, queue)

    def unsubscribe(self, queue: DeliveryQueue, patterns: Sequence[Pattern], events: bool) -> None:
        for p in patterns:
            self.index.remove(p, queue)
            if events:
                self.event_index.remove(p, queue)

    def new_epoch(self) -> int:
        """A fresh write epoch for a session or adapter run (see Store.sync)."""
        return next(self._epochs)

    # --- the hub's own keys ---------------------------------------------------------

    def writer(self, actor: str, owned: Collection[str], epoch: int = 0) -> Writer:
        """The write handle of an owner (a session, an adapter, a bridge): the one
        write path, with the hub's limits. Drivers await :meth:`wait_log_room` before
        taking more input."""
        return self.store.writer(actor, owned, epoch)

    def mark_stale(self, namespace: str, prefix: str | None = None) -> int:
        """The hub's judgement that an owner is gone: its keys turn stale."""
        return self.store.mark_stale(namespace, actor=HUB_NAMESPACE, prefix=prefix)

    def set_hub_key(self, key: str, value: Any) -> None:
        self._hub_writer.set(key, value)

    def namespaces_for(self, client: str) -> list[str]:
        """The namespaces ``client`` may own at most (any role's default and grants)."""
        return [f"app.{client}", *self.grants_for(client)]

    def grants_for(self, client: str) -> list[str]:
        return list(self.config.grants.get(client, []))

    # --- access (docs/security.md) ---------------------------------------------------------

    @property
    def auth_required(self) -> bool:
        return self.access.enabled

    def _record_auth(self, client: str, address: str, event: str, reason: str) -> None:
        self.record_session(event, client or "?", address=address, session="", reason=reason)

    def reload_tokens(self) -> int:
        """Re-read the token file (SIGHUP): connections of revoked or changed tokens
        close with 1008. Returns how many were closed."""
        changed = self.access.reload()
        closed = 0
        for s in list(self.sessions.values()):
            if s.identity.token is not None and s.identity.token in changed:
                s.request_close(1008, "token revoked")
                closed += 1
        if closed:
            log.info("connections of revoked tokens closed", extra={"closed": closed})
        return closed

    def client_connected(self, session: HubSession) -> None:
        timer = self._client_expiry.pop(session.client, None)
        if timer is not None:
            timer.cancel()
        self.set_hub_key(
            f"hub.clients.{session.client}",
            {
                "connected": True,
                "since": now_ms(),
                "session": session.session_id,
                "address": session.address,
            },
        )

    def client_disconnected(self, session: HubSession) -> None:
        self.set_hub_key(
            f"hub.clients.{session.client}",
            {
                "connected": False,
                "since": now_ms(),
                "session": session.session_id,
                "address": session.address,
            },
        )
        name = session.client
        old = self._client_expiry.pop(name, None)
        if old is not None:
            old.cancel()
        self._client_expiry[name] = asyncio.get_running_loop().call_later(
            self.config.client_record_ttl, self._expire_client, name
        )

    def _expire_client(self, name: str) -> None:
        """Forget a client that left ``client_record_ttl`` ago and owns no keys (its
        record says nothing a client could act on; one that owns keys keeps it, as the
        keys' owner)."""
        self._client_expiry.pop(name, None)
        if name in self.sessions:
            return
        for ns_name in self.namespaces_for(name):
            ns = self.store.namespace(ns_name)
            if ns is not None and ns.owner == name and ns.entries:
                return
        self._hub_writer.discard(f"hub.clients.{name}")

    def adapter_counters(self, name: str) -> AdapterCounters:
        """The metrics counters of the adapter ``name`` (created on first use)."""
        counters = self.adapter_stats.get(name)
        if counters is None:
            counters = self.adapter_stats[name] = AdapterCounters()
        return counters

    def set_adapter_state(self, name: str, state: str, detail: str = "", **extra: Any) -> None:
        links = {"adapter": state}
        for link in ("satellite", "http"):
            sub = extra.get(link)
            if isinstance(sub, dict) and isinstance(sub.get("state"), str):
                links[link] = sub["state"]
        self.adapter_links[name] = links
        self.set_hub_key(
            f"hub.adapters.{name}",
            {"state": state, "detail": detail, "since": now_ms(), **extra},
        )

    def welcome_limits(self) -> dict[str, int]:
        lim = self.limits.to_wire()
        lim["oldest_rev"] = self.store.oldest_resumable
        return lim

    # --- commands -------------------------------------------------------------------

    def dispatch_command(
        self,
        *,
        caller: object,
        source: str,
        target: str,
        name: str,
        params: dict[str, Any],
        timeout_ms: int | None,
        idempotency_key: str | None,
        on_result: ResultCallback,
    ) -> None:
        """Route a command; ``on_result`` gets exactly one outcome (maybe right away).

        Raises HubError when the command is refused before delivery.
        """
        if self.router.owner_of(target) is None:
            ns = self.store.namespace_of(target)
            if ns is not None and ns.name != target:  # a key below a namespace
                raise HubError(
                    ErrorCode.UNAVAILABLE,
                    f"the target must be a namespace: {ns.name!r}, not the key {target!r}",
                    {"target": target, "namespace": ns.name},
                )
        cmd = self.router.submit(
            caller=caller,
            source=source,
            target=target,
            name=name,
            params=params,
            timeout_ms=timeout_ms,
            idempotency_key=idempotency_key,
            now_ms=now_ms(),
            on_result=on_result,
        )
        if cmd is not None and self.router.get(cmd.hid) is cmd:
            delay = max(0.0, (cmd.deadline_ms - now_ms()) / 1000)
            cmd.timer = asyncio.get_running_loop().call_later(delay, self.router.expire, cmd.hid)

    # --- background work --------------------------------------------------------------

    def wake_at_flush_tick(self, wake: asyncio.Event) -> None:
        """Set ``wake`` (a connection writer's) at the next flush tick,
        ``flush_delay_ms`` after the first call that found none pending: the writers
        that deltas wake from idle share one timer and wake once, with whatever
        arrived meanwhile in one frame (docs/adr/0009). At once with no delay."""
        delay = self.config.flush_delay_ms
        if delay <= 0:
            wake.set()
            return
        due = self._flush_due
        due.append(wake)
        if len(due) == 1:
            asyncio.get_running_loop().call_later(delay / 1000, self._flush_tick)

    def _flush_tick(self) -> None:
        due, self._flush_due = self._flush_due, []
        for wake in due:
            wake.set()

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task until it ends; cancelled on shutdown."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_background(self) -> None:
        self.supervisor.spawn("progress", self._progress_loop)
        if self.metrics is not None:
            self.metrics.start()  # the event-loop lag probe (idempotent)
        if self.event_log is not None:
            loop = asyncio.get_running_loop()

            def durable_advanced() -> None:  # the writer thread, while someone waits
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(self._durable_advanced)

            self.event_log.on_durable = durable_advanced
            self.event_log.start()

    # --- durable writes ----------------------------------------------------------------

    def after_durable(self, rev: int, fn: Callable[[], None]) -> None:
        """Call ``fn`` (on the loop) once the event log has revision ``rev`` on disk: at
        once when it already has, or when the hub keeps no log or keeps it in memory
        only (nothing more durable is coming)."""
        event_log = self.event_log
        if event_log is None or event_log.settings.path == ":memory:":
            fn()
            return
        if event_log.durable_rev >= rev:
            fn()
            return
        self._durable_seq += 1
        heapq.heappush(self._durable_waiters, (rev, self._durable_seq, fn))
        event_log.durable_wanted = True
        # the writer may have passed ``rev`` before it saw the flag: look again
        if event_log.durable_rev >= rev:
            self._durable_advanced()

    def _durable_advanced(self) -> None:
        """The log's durable revision moved (or the log closed): answer the waiters."""
        event_log = self.event_log
        durable = event_log.durable_rev if event_log is not None else None
        waiters = self._durable_waiters
        while waiters and (durable is None or waiters[0][0] <= durable):
            _, _, fn = heapq.heappop(waiters)
            try:
                fn()
            except Exception:
                log.exception("durable write reply failed")
        if not waiters and event_log is not None:
            event_log.durable_wanted = False

    async def _progress_loop(self) -> None:
        hb = self.config.heartbeat_ms
        interval = max(0.01, hb / 4000)
        while True:
            await asyncio.sleep(interval)
            rev = self.store.rev
            now = now_ms()
            for s in list(self.sessions.values()):
                s.tick(rev, now)

    async def shutdown(self) -> None:
        """Close every session and cancel every background task."""
        sessions = list(self.sessions.values())
        for s in sessions:
            s.request_close(1001, "hub shutting down")
        # let each connection finish its cleanup (its keys turn stale) while the log is
        # still open: the final snapshot then needs no stale flips at the next start
        deadline = time.monotonic() + 3.0
        while self.sessions and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await self.supervisor.stop()
        for timer in self._client_expiry.values():
            timer.cancel()
        self._client_expiry.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.event_log is not None and self.recorder is not None:
            self.recorder.snapshot()  # a fast start next time
            await asyncio.to_thread(self.event_log.close)
            clean = not self.event_log.pending
            self.event_log = None
            if clean:  # everything is on disk: answer the last durable writes
                self._durable_advanced()
            self._durable_waiters.clear()
        if self._lock is not None:
            self._lock.close()  # releases the data directory
            self._lock = None
