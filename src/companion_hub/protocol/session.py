"""The hub's side of one client connection, sans I/O: every rule of protocol v1.

A :class:`HubSession` takes what arrived (a text or binary frame's data, a pong, the
hello timer running out, the connection ending) and the time, and turns it into what
to send: replies, snapshots and deltas wait in its :class:`DeliveryQueue` (drained a
frame at a time by :meth:`next_frame`), window pings in :meth:`pings`, and a
decision to close in :attr:`close_request`. It never reads or writes a socket and
never waits: where the rules say "hold this client" (the event log is behind, or
replies pile up unread), :meth:`process` stops and returns why, and the driver
waits for the condition before calling it again. The asyncio/aiohttp driver is
``companion_hub.server.session``; the unit tests drive this class directly.

The hub-wide state a session acts on (the store, the subscription index, the
command router, the event log's durability) comes through :class:`SessionHost`,
which the hub implements; those are the callback seams of a connection.

Delivery window (:class:`~companion_hub.core.window.DeliveryWindow`): at most
``window_bytes`` of deltas sent and not yet confirmed by a pong; the session asks
for a ping every quarter window (see :meth:`frame_sent`). Replies are exempt.
"""

from __future__ import annotations

import enum
import logging
import secrets
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..core.acl import Identity, development
from ..core.commands import CommandRouter, InFlight, Outcome, ReplyStatus, ResultCallback
from ..core.delivery import DeliveryQueue
from ..core.errors import ErrorCode, HubError
from ..core.keys import Pattern, is_valid_client_name, parse_pattern
from ..core.limits import Limits
from ..core.ratelimit import TokenBucket
from ..core.store import Entry, Store
from ..core.window import DeliveryWindow
from . import encode as wire
from . import messages as m
from .snapshot import take_snapshot

if TYPE_CHECKING:
    from ..core.writer import Writer

log = logging.getLogger("companion_hub.session")

PROTOCOL = 1
CLOSE_POLICY = 1008  # a bad first message (protocol section 2)
CLOSE_REPLACED = 4000  # another connection took the client name over
# A client that sends requests but does not read the replies is held (its frames
# are not read) once this many bytes of replies wait for it ...
CONTROL_BACKLOG_BYTES = 4 * 1024 * 1024
# ... or while this many snapshots/barriers wait (each may hold a list of entries)
BARRIER_BACKLOG = 256


class SessionState(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"
    AUTHENTICATING = "authenticating"  # hello received; the driver checks its token
    OPEN = "open"  # welcomed: requests are handled
    CLOSING = "closing"  # a close was decided (see close_request); input is ignored
    CLOSED = "closed"  # the connection ended and the session cleaned up


class Hold(enum.Enum):
    """Why :meth:`HubSession.process` stopped before the end of its input."""

    AUTHENTICATING = "check the hello's token (AccessControl.authenticate), then call "
    "authenticated() or auth_failed()"
    LOG_BEHIND = "the event log is behind: wait for room (Hub.wait_log_room)"
    REPLIES_UNREAD = "replies pile up unread: wait until the client reads (has_room)"


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionSettings:
    heartbeat_ms: int
    window_bytes: int
    frame_target_bytes: int
    snapshot_chunk_bytes: int


class SessionCounters:
    """Plain counters shared by the sessions of one hub, read by its metrics at scrape
    time (``companion_hub.metrics``). Only integer increments on the hot path; the
    queues' own delta counters are folded in here when their session ends."""

    def __init__(self) -> None:
        self.opened = 0  # sessions started (connections accepted)
        # sessions started and not yet ended (weak: a dropped session cannot leak)
        self.live: weakref.WeakSet[HubSession] = weakref.WeakSet()
        self.frames_in = 0  # text frames received
        self.messages_in: defaultdict[type, int] = defaultdict(int)  # by message class
        self.frames_out = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.window_stalls = 0  # a session's deltas waited behind its full window
        # DeliveryQueue.deltas_sent / .coalesced of the sessions that ended
        self.deltas_sent = 0
        self.deltas_coalesced = 0


class SessionHost(Protocol):
    """What a session needs from the hub (implemented by ``Hub``)."""

    hub_id: str
    session_counters: SessionCounters
    limits: Limits
    store: Store
    router: CommandRouter
    sessions: dict[str, HubSession]

    @property
    def server_name(self) -> str: ...
    @property
    def log_over_limit(self) -> bool: ...
    @property
    def auth_required(self) -> bool: ...
    def grants_for(self, client: str) -> list[str]: ...
    def new_epoch(self) -> int: ...
    def writer(self, actor: str, owned: Collection[str], epoch: int = 0) -> Writer: ...
    def register_namespace(self, name: str, owner: str) -> None: ...
    def welcome_limits(self) -> dict[str, int]: ...
    def subscribe(self, queue: DeliveryQueue, patterns: list[Pattern], events: bool) -> None: ...
    def unsubscribe(self, queue: DeliveryQueue, patterns: list[Pattern], events: bool) -> None: ...
    def publish_event(self, key: str, data: Any, source: str) -> int: ...
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
    ) -> None: ...
    def after_durable(self, rev: int, fn: Callable[[], None]) -> None: ...
    def mark_stale(self, namespace: str, prefix: str | None = None) -> int: ...
    def client_connected(self, session: HubSession) -> None: ...
    def client_disconnected(self, session: HubSession) -> None: ...
    def record_session(
        self, event: str, client: str, *, address: str, session: str, reason: str = ""
    ) -> None: ...


@dataclass(slots=True)
class _Sub:
    patterns: list[Pattern]
    events: bool


class HubSession:
    """The protocol state of one connection (see the module's docstring)."""

    def __init__(
        self,
        host: SessionHost,
        settings: SessionSettings,
        address: str,
        *,
        now: float,
        now_ms: int,
        on_output: Callable[[], None] = lambda: None,
        on_delta: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.address = address
        self.session_id = secrets.token_hex(8)
        self.state = SessionState.AWAITING_HELLO
        self.client = ""
        self.owned: frozenset[str] = frozenset()
        self.epoch = host.new_epoch()  # marks the keys this connection writes (for sync)
        self.writer = host.writer("", (), self.epoch)  # replaced after hello
        self.subs: dict[str, _Sub] = {}
        self.resume_hub: str | None = None
        self.identity = development("")  # who this is, once welcomed
        self.auth_request: tuple[str, str | None] | None = None  # (client, token)
        self._hello: m.Hello | None = None
        self.replaced = False
        self.close_request: CloseRequest | None = None
        # frames to send before closing (the error that explains a close)
        self.final_frames: list[bytes] = []
        self.connection: object = None  # the driver's handle (diagnostics, tests)
        self._on_output = on_output
        # on_delta: deltas found the queue empty (the driver may wake a little later)
        self.queue = DeliveryQueue(host.limits.event_queue, notify=on_output, notify_delta=on_delta)
        self.window = DeliveryWindow(settings.window_bytes, max(1, settings.window_bytes // 4))
        self._pings: deque[bytes] = deque()  # pings the window asked for
        self._input: deque[m.Message | m.BadMessage] = deque()
        self.last_send_ms = now_ms
        self._last_tick_ms = now_ms  # the window's heartbeat tick
        self.bad_frames = 0
        rps = host.limits.requests_per_second
        self._bucket = TokenBucket(rps, rps, now)
        # deltas wait behind a full delivery window (counted once per stall)
        self.stalled = False
        self._counters = counters = host.session_counters
        counters.opened += 1
        counters.live.add(self)

    def __repr__(self) -> str:
        return f"<HubSession {self.client or '?'} {self.session_id} {self.state.value}>"

    @property
    def open(self) -> bool:
        return self.state is SessionState.OPEN

    # --- input ----------------------------------------------------------------------

    def receive_text(self, data: str | bytes) -> None:
        """A text frame's payload. Its messages wait for :meth:`process`."""
        self._counters.frames_in += 1
        if self.state is SessionState.AWAITING_HELLO:
            self._first_frame(data)
            return
        if self.state not in (SessionState.OPEN, SessionState.AUTHENTICATING):
            return
        try:
            items = m.decode_frame(data)
        except m.FrameError as exc:
            self._bad_frame(exc)
            self._send(wire.error(HubError(ErrorCode.BAD_REQUEST, str(exc))))
            return
        self._input.extend(items)

    def receive_binary(self) -> None:
        err = HubError(ErrorCode.BAD_REQUEST, "binary frames are not supported; send text")
        if self.state is SessionState.AWAITING_HELLO:
            self._refuse(err, None)
        elif self.state is SessionState.OPEN:
            self._send(wire.error(err))

    def receive_pong(self, payload: bytes) -> None:
        """Any pong goes to the delivery window (see core/window.py): ours confirm what
        was sent before their ping; one we cannot match (RFC 6455 lets a peer answer
        only the latest ping, and the heartbeat's pings are empty) asks for a probe."""
        opened, ping = self.window.on_pong(payload)
        if ping is not None:
            self._pings.append(ping)
        if opened or ping is not None:
            self._on_output()

    def hello_timed_out(self) -> None:
        if self.state is SessionState.AWAITING_HELLO:
            self._refuse(HubError(ErrorCode.BAD_REQUEST, "no hello within 10 s"), None)

    def process(self, now: float) -> Hold | None:
        """Handle the waiting messages in order; stop early (returning why) when the
        client must be held. Call again once the condition has passed."""
        if self.state is SessionState.AUTHENTICATING:
            return Hold.AUTHENTICATING
        host = self.host
        q = self.queue
        while self._input and self.state is SessionState.OPEN:
            if host.log_over_limit:  # the disk is behind: hold this writer briefly
                return Hold.LOG_BEHIND
            if q.control_bytes > CONTROL_BACKLOG_BYTES or q.ordered_backlog > BARRIER_BACKLOG:
                return Hold.REPLIES_UNREAD
            self._handle(self._input.popleft(), now)
        return None

    def has_room(self) -> bool:
        """May a held reader go on? (With hysteresis: half the limits.)"""
        q = self.queue
        return (
            q.control_bytes < CONTROL_BACKLOG_BYTES // 2
            and q.ordered_backlog < BARRIER_BACKLOG // 2
        )

    def tick(self, rev: int, now_ms: int) -> None:
        """Called a few times per heartbeat: tell an idle subscriber that the hub moved
        on (protocol section 4), and re-probe a delivery window that stayed full for a
        heartbeat (its pings may have gone unanswered: a later ping's pong does not
        name them)."""
        hb = self.settings.heartbeat_ms
        if now_ms - self._last_tick_ms >= hb:  # once per heartbeat interval
            self._last_tick_ms = now_ms
            probe = self.window.on_heartbeat()
            if probe is not None:
                self._pings.append(probe)
                self._on_output()
        q = self.queue
        if (
            self.state is SessionState.OPEN
            and self.subs
            and q.last_rev < rev
            and q.is_empty()
            and now_ms - self.last_send_ms >= hb
        ):
            q.push_control(wire.progress(rev), barrier_rev=rev)

    def connection_lost(self, close_code: int | None) -> None:
        """The connection ended: unsubscribe, end commands, and, unless another
        connection took over, mark the client's keys stale."""
        if self.state is SessionState.CLOSED:
            return
        was_welcomed = self.client != ""
        self.state = SessionState.CLOSED
        counters = self._counters
        if self in counters.live:
            counters.live.discard(self)
            counters.deltas_sent += self.queue.deltas_sent
            counters.deltas_coalesced += self.queue.coalesced
        self._input.clear()
        host = self.host
        self._unsubscribe_all()
        host.router.caller_gone(self)
        if self.replaced or not was_welcomed or host.sessions.get(self.client) is not self:
            return
        del host.sessions[self.client]
        host.router.owner_gone(self, "the owner disconnected")
        for ns in self.owned:
            host.mark_stale(ns)
        host.client_disconnected(self)
        host.record_session(
            "disconnect",
            self.client,
            address=self.address,
            session=self.session_id,
            reason=f"close code {close_code}",
        )
        log.info(
            "client disconnected",
            extra={"client": self.client, "session": self.session_id, "close_code": close_code},
        )

    # --- output ---------------------------------------------------------------------

    def pings(self) -> Iterator[bytes]:
        """Payloads of the pings to send now (the window's probes)."""
        while self._pings:
            yield self._pings.popleft()

    def next_frame(self) -> bytes | None:
        """The next frame to send (a batch of messages), or None for nothing now."""
        q = self.queue
        stream = self.window.can_send()
        msgs = q.take(self.settings.frame_target_bytes, wire.dropped, stream=stream)
        if stream:
            self.stalled = False
        elif not self.stalled and (q.pending or q.ordered_backlog):
            self.stalled = True
            self._counters.window_stalls += 1
        if not msgs:
            return None
        c = self._counters
        c.frames_out += 1
        c.messages_out += len(msgs)
        return wire.batch(msgs)

    def frame_sent(self, size: int, now_ms: int) -> bytes | None:
        """A frame of ``size`` bytes went out; returns a ping to send for the window."""
        self.last_send_ms = now_ms
        self._counters.bytes_out += size
        return self.window.on_sent(size)

    def request_close(self, code: int, reason: str) -> None:
        """Decide to close (the driver sees :attr:`close_request`)."""
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason)
        if self.state in (
            SessionState.AWAITING_HELLO,
            SessionState.AUTHENTICATING,
            SessionState.OPEN,
        ):
            self.state = SessionState.CLOSING
        self._on_output()

    # --- takeover and commands (called by the hub) ---------------------------------------

    def replace(self) -> None:
        """A newer connection of the same client takes over: hand ownership over now,
        without marking anything stale, and close this connection with 4000."""
        self.replaced = True
        self.owned = frozenset()  # the new connection owns the namespaces from now on
        self.writer.owned = self.owned
        host = self.host
        if host.sessions.get(self.client) is self:
            del host.sessions[self.client]
        host.router.owner_gone(self, "the owner's connection was replaced")
        self._unsubscribe_all()
        self.request_close(CLOSE_REPLACED, "replaced")

    def deliver_command(self, cmd: InFlight) -> None:
        self._send(
            wire.encode(
                {
                    "op": "command",
                    "id": cmd.hid,
                    "source": cmd.source,
                    "name": cmd.name,
                    "params": cmd.params,
                    "deadline": cmd.deadline_ms,
                }
            )
        )

    # --- the handshake --------------------------------------------------------------------

    def _first_frame(self, data: str | bytes) -> None:
        try:
            msgs = m.decode_frame(data)
        except m.FrameError as exc:
            self._bad_frame(exc)
            self._refuse(HubError(ErrorCode.BAD_REQUEST, str(exc)), None)
            return
        first = msgs[0] if msgs else None
        if first is not None:
            self._counters.messages_in[type(first)] += 1
        if not isinstance(first, m.Hello):
            rid = first.id if first is not None else None
            self._refuse(HubError(ErrorCode.BAD_REQUEST, "the first message must be 'hello'"), rid)
            return
        if not is_valid_client_name(first.client):
            self._refuse(
                HubError(
                    ErrorCode.BAD_REQUEST,
                    f"invalid client name {first.client!r}: [a-z0-9][a-z0-9_-]{{0,62}}",
                ),
                first.id,
            )
            return
        if first.protocol != PROTOCOL:
            self._refuse(
                HubError(
                    ErrorCode.BAD_REQUEST,
                    f"unsupported protocol {first.protocol}; this hub speaks {PROTOCOL}",
                ),
                first.id,
            )
            return
        self._input.extend(msgs[1:])
        if self.host.auth_required:
            self._hello = first
            self.auth_request = (first.client, first.token)
            self.state = SessionState.AUTHENTICATING
            return
        self._welcome(first, development(first.client))

    def authenticated(self, identity: Identity) -> None:
        """The driver checked the hello's token: this is who the client is."""
        hello = self._hello
        if self.state is not SessionState.AUTHENTICATING or hello is None:
            return
        self.auth_request = self._hello = None
        old = self.host.sessions.get(hello.client)
        if old is not None and old.identity.token != identity.token:
            self._refuse(
                HubError(
                    ErrorCode.FORBIDDEN,
                    f"client {hello.client!r} is connected with another token: only the "
                    "same identity may replace it",
                ),
                hello.id,
            )
            return
        self._welcome(hello, identity)

    def auth_failed(self, err: HubError) -> None:
        """The hello's token was refused (UNAUTHORIZED): the error, then close 1008."""
        hello = self._hello
        if self.state is not SessionState.AUTHENTICATING or hello is None:
            return
        self.auth_request = self._hello = None
        self._refuse(err, hello.id)

    def _refuse(self, err: HubError, rid: m.RequestId) -> None:
        """A bad first message: the error, then close 1008 (protocol section 2)."""
        self.final_frames.append(wire.error(err, rid))
        self.request_close(CLOSE_POLICY, err.message[:120])

    def _welcome(self, hello: m.Hello, identity: Identity) -> None:
        host = self.host
        self.client = hello.client
        self.identity = identity
        self.queue.may_read = identity.reader  # shared by the role: see Hub._fan_out
        self.resume_hub = hello.resume.hub if hello.resume is not None else None
        old = host.sessions.get(self.client)
        if old is not None:
            old.replace()
            host.record_session(
                "takeover", self.client, address=self.address, session=old.session_id
            )
        owned = []
        for ns in identity.namespaces(host.grants_for(self.client)):
            try:
                host.register_namespace(ns, self.client)
            except HubError as exc:
                log.warning(
                    "namespace not granted",
                    extra={"client": self.client, "namespace": ns, "reason": exc.message},
                )
                continue
            owned.append(ns)
            host.router.set_owner(ns, self)
        self.owned = frozenset(owned)
        self.writer = host.writer(self.client, self.owned, self.epoch)
        self.state = SessionState.OPEN
        host.sessions[self.client] = self
        host.client_connected(self)
        host.record_session("connect", self.client, address=self.address, session=self.session_id)
        log.info(
            "client connected",
            extra={
                "client": self.client,
                "session": self.session_id,
                "address": self.address,
                "takeover": old is not None,
            },
        )
        self._send(
            wire.encode(
                {
                    "op": "welcome",
                    "id": hello.id,
                    "session": self.session_id,
                    "hub": host.hub_id,
                    "rev": host.store.rev,
                    "namespaces": owned,
                    "heartbeat_ms": self.settings.heartbeat_ms,
                    "server": host.server_name,
                    "limits": host.welcome_limits(),
                }
            )
        )

    # --- helpers --------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.queue.push_control(data)

    def _reply(self, data: bytes, durable_rev: int) -> None:
        """Send a write's reply; with ``durable_rev`` (a ``durable: true`` write) only
        once the event log has that revision on disk."""
        if not durable_rev:
            self._send(data)
            return

        def send() -> None:
            if self.state is SessionState.OPEN:
                self._send(data)

        self.host.after_durable(durable_rev, send)

    def _bad_frame(self, exc: Exception) -> None:
        """An unusable frame (not JSON, invalid UTF-8, nested too deep) is answered with
        BAD_REQUEST and the connection kept; logged once per connection, without a
        traceback, so that a client cannot flood the log."""
        self.bad_frames += 1
        if self.bad_frames == 1:
            log.warning(
                "unusable frame answered with BAD_REQUEST (logged once per connection)",
                extra={"client": self.client, "address": self.address, "error": str(exc)[:200]},
            )

    def _unsubscribe_all(self) -> None:
        for sub in self.subs.values():
            self.host.unsubscribe(self.queue, sub.patterns, sub.events)
        self.subs.clear()

    @staticmethod
    def _error_reply(rid: m.RequestId, err: HubError) -> bytes:
        if rid is None:
            return wire.error(err)
        return wire.result_error(rid, err)

    def _patterns(self, texts: list[str]) -> list[Pattern]:
        lim = self.host.limits
        if not texts:
            raise HubError(ErrorCode.BAD_REQUEST, "'patterns' must be a non-empty list")
        if len(texts) > lim.patterns_per_subscription:
            raise HubError(
                ErrorCode.LIMIT_EXCEEDED,
                f"more than {lim.patterns_per_subscription} patterns",
            )
        return [parse_pattern(t, lim.key_bytes) for t in texts]

    # --- requests ---------------------------------------------------------------------

    def _handle(self, msg: m.Message | m.BadMessage, now: float) -> None:
        self._counters.messages_in[type(msg)] += 1
        if isinstance(msg, m.BadMessage):
            self._send(self._error_reply(msg.id, msg.error))
            return
        if not isinstance(msg, m.Reply) and not self._bucket.take(now):
            err = HubError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.host.limits.requests_per_second} requests per second",
            )
            self._send(self._error_reply(msg.id, err))
            return
        try:
            handler = _HANDLERS[type(msg)]
            handler(self, msg)
        except HubError as err:
            if err.code is ErrorCode.NOT_OWNER and self.identity.enforced:
                # with tokens, what a role may write is its permission: FORBIDDEN
                err = HubError(ErrorCode.FORBIDDEN, err.message, err.details)
            self._send(self._error_reply(msg.id, err))
        except Exception:
            log.exception("internal error", extra={"client": self.client, "op": type(msg).__name__})
            self._send(self._error_reply(msg.id, HubError(ErrorCode.INTERNAL, "internal error")))

    def _on_hello(self, msg: m.Hello) -> None:
        raise HubError(ErrorCode.BAD_REQUEST, "already said hello on this connection")

    def _on_subscribe(self, msg: m.Subscribe) -> None:
        host = self.host
        lim = host.limits
        if not msg.sub:
            raise HubError(ErrorCode.BAD_REQUEST, "'sub' must be a non-empty string")
        if msg.sub in self.subs:
            raise HubError(ErrorCode.BAD_REQUEST, f"subscription {msg.sub!r} already exists")
        if len(self.subs) >= lim.subscriptions:
            raise HubError(ErrorCode.LIMIT_EXCEEDED, f"more than {lim.subscriptions} subscriptions")
        patterns = self._patterns(msg.patterns)
        # --- one synchronous step: snapshot and registration, nothing in between ---
        snap = None
        if msg.snapshot:
            since = msg.since if self.resume_hub == host.hub_id else None
            snap = take_snapshot(host.store, patterns, since, self.identity)
        rev = host.store.rev
        host.subscribe(self.queue, patterns, msg.events)
        self.subs[msg.sub] = _Sub(patterns, msg.events)
        if snap is not None:
            self.queue.push_lazy(
                wire.snapshot_chunks(
                    msg.id,
                    msg.sub,
                    snap.rev,
                    snap.mode,
                    snap.entries,
                    snap.removed,
                    self.settings.snapshot_chunk_bytes,
                ),
                rev,
            )
        else:
            self.queue.push_control(wire.result_ok(msg.id, {"rev": rev}), barrier_rev=rev)

    def _on_unsubscribe(self, msg: m.Unsubscribe) -> None:
        sub = self.subs.pop(msg.sub, None)
        if sub is None:
            raise HubError(ErrorCode.NOT_FOUND, f"no subscription {msg.sub!r}")
        self.host.unsubscribe(self.queue, sub.patterns, sub.events)
        self._send(wire.result_ok(msg.id, {}))

    def _on_get(self, msg: m.Get) -> None:
        store = self.host.store
        patterns = self._patterns(msg.patterns)
        entries = store.matching(patterns)
        ident = self.identity
        if not ident.reads_everything:
            entries = [e for e in entries if ident.may_read(e.key)]
        entries.sort(key=_by_key)
        body = b'{"rev":%d,"entries":%b}' % (store.rev, wire.entries_array(entries))
        self._send(wire.result_raw(msg.id, body))

    def _on_set(self, msg: m.Set) -> None:
        writer = self.writer
        if msg.entries is not None:
            if msg.key is not None:
                raise HubError(ErrorCode.BAD_REQUEST, "give either 'key' or 'entries', not both")
            for i, be in enumerate(msg.entries):
                if be.value is msgspec.UNSET:
                    raise HubError(
                        ErrorCode.BAD_REQUEST,
                        f"entry {i}: missing 'value'",
                        {"index": i, "key": be.key},
                    )
            results = writer.set_many([(be.key, be.value, be.expect_version) for be in msg.entries])
            self._reply(
                wire.result_ok(
                    msg.id,
                    {
                        "results": [
                            {"key": r.key, "version": r.version, "rev": r.rev} for r in results
                        ]
                    },
                ),
                max((r.rev for r in results), default=0) if msg.durable else 0,
            )
            return
        if msg.key is None:
            raise HubError(ErrorCode.BAD_REQUEST, "missing 'key' (or 'entries')")
        if msg.value is msgspec.UNSET:
            raise HubError(ErrorCode.BAD_REQUEST, "missing 'value'")
        r = writer.set(msg.key, msg.value, msg.expect_version)
        self._reply(
            b'{"op":"result","id":%b,"ok":true,"result":{"version":%d,"rev":%d}}'
            % (wire.encode(msg.id), r.version, r.rev),
            r.rev if msg.durable else 0,
        )

    def _on_delete(self, msg: m.Delete) -> None:
        r = self.writer.delete(msg.key, msg.expect_version)
        self._reply(
            wire.result_ok(msg.id, {"version": r.version, "rev": r.rev}),
            r.rev if msg.durable else 0,
        )

    def _on_sync(self, msg: m.Sync) -> None:
        deleted = self.writer.sync()
        self._send(wire.result_ok(msg.id, {"deleted": len(deleted), "rev": self.host.store.rev}))

    def _on_publish(self, msg: m.Publish) -> None:
        if not self.identity.may_publish:
            raise HubError(ErrorCode.FORBIDDEN, "your role may not publish events")
        key = self.writer.check_key(msg.key)
        ns = self.host.store.namespace_of(key)
        if ns is None or ns.name not in self.owned:
            raise HubError(ErrorCode.NOT_OWNER, f"you do not own the namespace of {key!r}")
        self.writer.encode(msg.data)  # within value_bytes
        n = self.host.publish_event(key, msg.data, self.client)
        self._send(wire.result_ok(msg.id, {"delivered": n}))

    def _on_command(self, msg: m.Command) -> None:
        if msg.id is None:
            raise HubError(ErrorCode.BAD_REQUEST, "a command needs an 'id'")
        if not msg.target or not msg.name:
            raise HubError(ErrorCode.BAD_REQUEST, "a command needs 'target' and 'name'")
        if msg.timeout_ms is not None and msg.timeout_ms <= 0:
            raise HubError(ErrorCode.BAD_REQUEST, "'timeout_ms' must be positive")
        if not self.identity.may_call(msg.target, msg.name):
            raise HubError(
                ErrorCode.FORBIDDEN,
                f"your role may not call {msg.name!r} on {msg.target!r}",
                {"target": msg.target, "name": msg.name},
            )
        rid = msg.id

        def on_result(outcome: Outcome) -> None:
            if outcome.ok:
                self._send(wire.result_ok(rid, outcome.result))
            else:
                assert outcome.error is not None
                self._send(wire.result_error(rid, outcome.error))

        self.host.dispatch_command(
            caller=self,
            source=self.client,
            target=msg.target,
            name=msg.name,
            params=msg.params,
            timeout_ms=msg.timeout_ms,
            idempotency_key=msg.idempotency_key,
            on_result=on_result,
        )

    def _on_reply(self, msg: m.Reply) -> None:
        if not isinstance(msg.id, str):
            raise HubError(ErrorCode.BAD_REQUEST, "a reply needs the command's 'id'")
        if msg.ok:
            outcome = Outcome(True, msg.result)
        else:
            body = msg.error or m.ErrorBody()
            try:
                code = ErrorCode(body.code)
            except ValueError:
                code = ErrorCode.FAILED
            details = body.details if isinstance(body.details, dict) else None
            outcome = Outcome(False, None, HubError(code, body.message or str(code), details))
        router = self.host.router
        status = router.reply(self, msg.id, outcome)
        if status is ReplyStatus.TOO_LARGE:
            # the caller got TOO_LARGE; the owner learns why its reply went nowhere
            self._send(
                wire.error(
                    HubError(
                        ErrorCode.TOO_LARGE,
                        f"the reply to {msg.id!r} is larger than {router.max_result_bytes} "
                        "bytes; its caller got TOO_LARGE",
                        {"id": msg.id, "limit": router.max_result_bytes},
                    )
                )
            )
        elif not status:
            self._send(
                wire.error(
                    HubError(
                        ErrorCode.NOT_FOUND,
                        f"no command {msg.id!r} in flight to you (it may have timed out)",
                    )
                )
            )


def _by_key(e: Entry) -> str:
    return e.key


_HANDLERS: dict[type, Callable[[HubSession, Any], None]] = {
    m.Hello: HubSession._on_hello,
    m.Subscribe: HubSession._on_subscribe,
    m.Unsubscribe: HubSession._on_unsubscribe,
    m.Get: HubSession._on_get,
    m.Set: HubSession._on_set,
    m.Delete: HubSession._on_delete,
    m.Sync: HubSession._on_sync,
    m.Publish: HubSession._on_publish,
    m.Command: HubSession._on_command,
    m.Reply: HubSession._on_reply,
}
