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
import itertools
import logging
import secrets
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import SERVER_NAME, __version__
from ..core.commands import CommandRouter, ResultCallback
from ..core.delivery import DeliveryQueue, Delta
from ..core.keys import Pattern
from ..core.limits import Limits
from ..core.patterns import PatternIndex
from ..core.store import Change, Store
from ..protocol import encode as wire

if TYPE_CHECKING:
    from .session import Session

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
    # extra namespaces granted to clients: client name -> namespaces
    grants: dict[str, list[str]] = field(default_factory=dict)
    # bytes per outgoing frame (the writer batches messages up to this size)
    frame_target_bytes: int = 64 * 1024
    snapshot_chunk_bytes: int = 64 * 1024
    # Delivery window: at most this many bytes sent to a client and not yet
    # confirmed by its pong; beyond it, deltas wait (and coalesce) in the hub.
    delivery_window_bytes: int = 128 * 1024


class Hub:
    def __init__(self, config: HubConfig | None = None, *, hub_id: str | None = None) -> None:
        self.config = config or HubConfig()
        self.limits = self.config.limits
        self.hub_id = hub_id or secrets.token_hex(8)
        self.started_ms = now_ms()
        self.store = Store(
            clock_ms=now_ms,
            decode=wire.decode_value,
            history_limit=self.limits.history_changes,
        )
        self.index: PatternIndex[DeliveryQueue] = PatternIndex()
        self.event_index: PatternIndex[DeliveryQueue] = PatternIndex()
        self.router = CommandRouter(
            max_in_flight_per_caller=self.limits.commands_in_flight,
            idempotency_keys_per_client=self.limits.idempotency_keys_per_client,
        )
        self.sessions: dict[str, Session] = {}  # client name -> live session
        self._tasks: set[asyncio.Task[Any]] = set()
        self._epochs = itertools.count(1)
        self.store.add_listener(self._fan_out)
        self.store.register_namespace(HUB_NAMESPACE, HUB_NAMESPACE)
        self._hub_owned = frozenset({HUB_NAMESPACE})
        self.set_hub_key(
            "hub.info", {"version": __version__, "started": self.started_ms, "hub": self.hub_id}
        )

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
            wire.deleted_delta(change.key, change.version, change.rev)
            if e is None
            else wire.delta(e)
        )
        d = Delta(change.rev, data)
        key = change.key
        for q in queues:
            q.push_delta(key, d)

    def publish_event(self, key: str, data: Any, source: str) -> int:
        queues = self.event_index.match(key)
        if queues:
            msg = wire.event(key, wire.encode(data), source, now_ms())
            for q in queues:
                q.push_event(msg)
        return len(queues)

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

    def set_hub_key(self, key: str, value: Any) -> None:
        raw = wire.encode(value)
        self.store.set(self._hub_owned, key, raw, value)

    def namespaces_for(self, client: str) -> list[str]:
        return [f"app.{client}", *self.config.grants.get(client, [])]

    def client_connected(self, session: Session) -> None:
        self.set_hub_key(
            f"hub.clients.{session.client}",
            {
                "connected": True,
                "since": now_ms(),
                "session": session.session_id,
                "address": session.address,
            },
        )

    def client_disconnected(self, session: Session) -> None:
        self.set_hub_key(
            f"hub.clients.{session.client}",
            {
                "connected": False,
                "since": now_ms(),
                "session": session.session_id,
                "address": session.address,
            },
        )

    def set_adapter_state(self, name: str, state: str, detail: str = "", **extra: Any) -> None:
        self.set_hub_key(
            f"hub.adapters.{name}",
            {"state": state, "detail": detail, "since": now_ms(), **extra},
        )

    def welcome_limits(self) -> dict[str, int]:
        lim = self.limits.to_wire()
        lim["oldest_rev"] = self.store.oldest_resumable
        return lim

    def all_sessions(self) -> Collection[Session]:
        return list(self.sessions.values())

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

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task until it ends; cancelled on shutdown."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_background(self) -> None:
        self.track(asyncio.get_running_loop().create_task(self._progress_loop(), name="progress"))

    async def _progress_loop(self) -> None:
        hb = self.config.heartbeat_ms
        interval = max(0.01, hb / 4000)
        while True:
            await asyncio.sleep(interval)
            rev = self.store.rev
            now = now_ms()
            for s in list(self.sessions.values()):
                s.maybe_progress(rev, now, hb)

    async def shutdown(self) -> None:
        """Close every session and cancel every background task."""
        sessions = list(self.sessions.values())
        if sessions:
            await asyncio.gather(*(s.close(1001, b"hub shutting down") for s in sessions))
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
