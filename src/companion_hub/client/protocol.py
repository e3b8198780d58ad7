"""The client side of protocol v1, sans I/O: a state machine fed with frames.

:class:`ClientProtocol` knows everything about the conversation with the hub and
nothing about sockets, tasks or time, in the manner of the ``websockets`` library's
protocol objects:

- a driver calls :meth:`~ClientProtocol.connect` when a WebSocket opens and
  :meth:`~ClientProtocol.connection_lost` when it closes; between the two it hands
  every received text frame to :meth:`~ClientProtocol.receive_frame`, which returns
  :mod:`~companion_hub.client.events` (frozen dataclasses, ``match``-able);
- whatever the hub must be sent (the ``hello``, requests, re-subscriptions, replies
  to commands) is queued; the driver takes it with
  :meth:`~ClientProtocol.data_to_send` and writes it, in order.

It builds the ``hello`` (with ``resume`` once it knows a hub id), reads the
``welcome``, re-subscribes every subscription on each new connection (with
``since`` on the same hub), allocates request ids and correlates ``result`` and
``snapshot`` replies with the requests, feeds ``snapshot``/``delta``/``progress``
to the :class:`~companion_hub.client.mirror.Mirror` (which holds the resume point:
the highest ``rev`` of any delta, completed snapshot or progress), and turns
``event``, ``dropped``, inbound ``command`` and stray ``error`` messages into
events. ::

    p = ClientProtocol("tally")
    p.connect()
    hello = p.data_to_send()               # [b'{"op":"hello",...}']
    [welcomed] = p.receive_frame(b'{"op":"welcome","hub":"h1","rev":3}')
    rid = p.send_request({"op": "get", "patterns": ["hub.**"]}, RequestKind.READ)
    [done] = p.receive_frame(b'{"op":"result","id":"1","ok":true,"result":{}}')
    assert isinstance(done, RequestDone) and done.request_id == rid
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..core import keys
from ..core.errors import HubError as CoreHubError
from .errors import (
    BadRequest,
    ErrorCode,
    HubError,
    Internal,
    Unavailable,
    error_from_wire,
)
from .events import (
    CommandReceived,
    ErrorReceived,
    EventReceived,
    EventsDropped,
    HelloRefused,
    MalformedMessage,
    ProtocolEvent,
    RequestDone,
    RequestFailed,
    SubscriptionLost,
    Welcomed,
)
from .messages import Welcome, event_from_wire, welcome_from_wire
from .mirror import Mirror
from .wire import ENCODE_ERRORS, decode_frame, encode

__all__ = [
    "HELLO_ID",
    "PROTOCOL_VERSION",
    "ClientProtocol",
    "ProtocolEvent",
    "ProtocolState",
    "RequestKind",
    "SubscriptionSpec",
    "hello_message",
    "is_key",
    "parse_patterns",
]

PROTOCOL_VERSION = 1
HELLO_ID = "hello"

# The SDK checks the grammar of keys and patterns; their length limit is the hub's
# (configurable, announced in welcome.limits.key_bytes) and the hub enforces it.
_ANY_LENGTH = sys.maxsize


class ProtocolState(Enum):
    """Where the protocol is in the life of one connection."""

    DISCONNECTED = "disconnected"
    """No connection (before the first one, or between two)."""
    HANDSHAKE = "handshake"
    """``hello`` queued; waiting for ``welcome``."""
    OPEN = "open"
    """Welcomed: requests may be sent."""


class RequestKind(Enum):
    """What a request is, which decides what a lost connection means for it."""

    READ = "read"
    """``get``, ``unsubscribe``: nothing happened; a retry is safe."""
    WRITE = "write"
    """``set``, ``delete``, ``sync``, ``publish``: it may have been applied."""
    COMMAND = "command"
    """It may have been executed."""
    SUBSCRIBE = "subscribe"
    """A new subscription: forgotten if the connection drops before its snapshot."""
    RESUBSCRIBE = "resubscribe"
    """Sent by the protocol itself after a reconnection; retried on the next one."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A subscription as sent to the hub (and sent again after a reconnection)."""

    id: str
    patterns: tuple[str, ...]
    parsed: tuple[keys.Pattern, ...]
    events: bool


# --- helpers shared with the raw connection -------------------------------------------


def hello_message(
    client: str,
    *,
    token: str | None = None,
    resume: Mapping[str, Any] | None = None,
    protocol: int | None = PROTOCOL_VERSION,
    **fields: Any,
) -> dict[str, Any]:
    """The ``hello`` message (spec section 2); ``None`` arguments are left out."""
    msg: dict[str, Any] = {"op": "hello", "id": HELLO_ID, "client": client}
    if protocol is not None:
        msg["protocol"] = protocol
    if token is not None:
        msg["token"] = token
    if resume is not None:
        msg["resume"] = dict(resume)
    msg.update(fields)
    return msg


def parse_patterns(texts: Iterable[str]) -> tuple[keys.Pattern, ...]:
    """Parse patterns with the hub's grammar (:mod:`companion_hub.core.keys`); an
    invalid one raises :class:`BadRequest` with the hub's own message."""
    try:
        return tuple(keys.parse_pattern(t, _ANY_LENGTH) for t in texts)
    except CoreHubError as exc:
        raise error_from_wire(exc.to_wire()) from None


def is_key(text: str) -> bool:
    """Is ``text`` a plain key (no wildcard segment)?"""
    return keys.is_valid_key(text, _ANY_LENGTH)


def _connection_lost_error(kind: RequestKind, reason: str) -> Unavailable:
    if kind is RequestKind.WRITE:
        return Unavailable(
            f"connection lost before the reply ({reason}); the write may have been applied"
        )
    if kind is RequestKind.COMMAND:
        return Unavailable(
            f"connection lost before the result ({reason}); the command may have been executed"
        )
    return Unavailable(f"connection lost ({reason})")


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: RequestKind
    sub_id: str | None = None


class ClientProtocol:
    """The client's side of its session with the hub, across connections.

    :param client: the client name, ``[a-z0-9][a-z0-9_-]{0,62}`` (else :class:`BadRequest`).
    :param token: sent in every ``hello`` when not None.
    :param mirror: the mirror to keep (a new one by default).
    """

    def __init__(self, client: str, token: str | None = None, mirror: Mirror | None = None):
        if not keys.is_valid_client_name(client):
            raise BadRequest(f"invalid client name {client!r}: [a-z0-9][a-z0-9_-]{{0,62}}")
        self.client = client
        self.token = token
        self.mirror = mirror if mirror is not None else Mirror()
        self.state = ProtocolState.DISCONNECTED
        self.welcome: Welcome | None = None
        self.connection = 0  # how many connections were started: the current one's number
        self._subscriptions: dict[str, SubscriptionSpec] = {}
        self._pending: dict[str, _Pending] = {}
        self._request_ids = itertools.count(1)
        self._sub_ids = itertools.count(1)
        self._outgoing: list[bytes] = []

    def __repr__(self) -> str:
        return f"<ClientProtocol {self.client} {self.state.value} connection={self.connection}>"

    @property
    def subscriptions(self) -> Mapping[str, SubscriptionSpec]:
        return self._subscriptions

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    def data_to_send(self) -> list[bytes]:
        """The frames to write, in order (each a complete text frame's payload)."""
        frames, self._outgoing = self._outgoing, []
        return frames

    # --- connection life cycle ----------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """The ``hello`` for the next connection (with ``resume`` after a welcome)."""
        return hello_message(self.client, token=self.token, resume=self.mirror.resume())

    def connect(self) -> None:
        """A WebSocket is open: queue the ``hello``."""
        if self.state is not ProtocolState.DISCONNECTED:
            raise RuntimeError(f"connect() while {self.state.value}")
        self.connection += 1
        self.state = ProtocolState.HANDSHAKE
        self._outgoing.append(encode(self.hello()))

    def connection_lost(self, reason: str) -> list[ProtocolEvent]:
        """The WebSocket is gone: every request waiting on it fails, with a message that
        says whether it may have been applied. A subscription whose first snapshot had
        not arrived is forgotten; the others are re-sent on the next connection."""
        self.state = ProtocolState.DISCONNECTED
        self._outgoing.clear()
        pending, self._pending = self._pending, {}
        events: list[ProtocolEvent] = []
        for request_id, p in pending.items():
            if p.kind is RequestKind.RESUBSCRIBE:
                continue
            if p.kind is RequestKind.SUBSCRIBE and p.sub_id is not None:
                self.forget_subscription(p.sub_id)
            events.append(RequestFailed(request_id, _connection_lost_error(p.kind, reason)))
        return events

    # --- requests ---------------------------------------------------------------------

    def send_request(
        self, message: Mapping[str, Any], kind: RequestKind, *, sub_id: str | None = None
    ) -> str:
        """Queue ``message`` with a new request id; returns the id. Its outcome comes as
        :class:`RequestDone` or :class:`RequestFailed` with that id."""
        if self.state is not ProtocolState.OPEN:
            raise Unavailable(f"not connected to the hub ({self.state.value})")
        request_id = str(next(self._request_ids))
        try:
            frame = encode({**message, "id": request_id})
        except ENCODE_ERRORS as exc:
            raise BadRequest(f"not JSON: {exc}") from None
        self._pending[request_id] = _Pending(kind, sub_id)
        self._outgoing.append(frame)
        return request_id

    def forget_request(self, request_id: str) -> None:
        """Stop waiting for a request (given up on by its caller); a late reply is ignored."""
        self._pending.pop(request_id, None)

    def subscribe(
        self, patterns: Sequence[str], *, events: bool = False
    ) -> tuple[SubscriptionSpec, str]:
        """Register a subscription and queue its ``subscribe``; returns it and the request
        id. The request is done when the snapshot is complete in the mirror."""
        if not patterns:
            raise BadRequest("a subscription needs at least one pattern")
        parsed = parse_patterns(patterns)
        if self.state is not ProtocolState.OPEN:
            raise Unavailable(f"not connected to the hub ({self.state.value})")
        spec = SubscriptionSpec(f"s{next(self._sub_ids)}", tuple(patterns), parsed, events)
        self._subscriptions[spec.id] = spec
        self.mirror.add_sub(spec.id, parsed)
        request_id = self.send_request(
            self._subscribe_message(spec), RequestKind.SUBSCRIBE, sub_id=spec.id
        )
        return spec, request_id

    def unsubscribe(self, sub_id: str) -> str | None:
        """Forget a subscription; returns the id of the queued ``unsubscribe``, or None
        when there is nothing to tell the hub (unknown, or not connected)."""
        if sub_id not in self._subscriptions:
            return None
        self.forget_subscription(sub_id)
        if self.state is not ProtocolState.OPEN:
            return None
        return self.send_request({"op": "unsubscribe", "sub": sub_id}, RequestKind.READ)

    def forget_subscription(self, sub_id: str) -> None:
        """Drop a subscription locally (not re-sent; its keys leave the mirror)."""
        self._subscriptions.pop(sub_id, None)
        self.mirror.remove_sub(sub_id)

    def send_reply(self, command: CommandReceived, outcome: Mapping[str, Any]) -> bool:
        """Queue the ``reply`` to an inbound command: ``outcome`` is ``{"ok": True,
        "result": ...}`` or ``{"ok": False, "error": {...}}``. False (nothing queued)
        when the command came on an earlier connection: the hub already answered it."""
        if self.state is not ProtocolState.OPEN or command.connection != self.connection:
            return False
        try:
            frame = encode({"op": "reply", "id": command.id, **outcome})
        except ENCODE_ERRORS as exc:
            error = {
                "code": str(ErrorCode.FAILED),
                "message": f"the handler's result is not JSON: {exc}",
            }
            frame = encode({"op": "reply", "id": command.id, "ok": False, "error": error})
        self._outgoing.append(frame)
        return True

    def _subscribe_message(self, spec: SubscriptionSpec) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "op": "subscribe",
            "sub": spec.id,
            "patterns": list(spec.patterns),
            "snapshot": True,
            "events": spec.events,
        }
        since = self.mirror.since(spec.id)
        if since is not None:
            msg["since"] = since
        return msg

    # --- received data ----------------------------------------------------------------

    def receive_frame(self, data: str | bytes) -> list[ProtocolEvent]:
        """Process one received text frame; returns what happened, in order."""
        events: list[ProtocolEvent] = []
        try:
            messages = decode_frame(data)
        except Internal as exc:
            return [MalformedMessage(data, exc.message)]
        for msg in messages:
            if self.state is ProtocolState.HANDSHAKE:
                self._receive_handshake(msg, events)
            elif self.state is ProtocolState.OPEN:
                try:
                    self._receive(msg, events)
                except (KeyError, TypeError, ValueError) as exc:
                    events.append(MalformedMessage(msg, f"{type(exc).__name__}: {exc}"))
        return events

    def _receive_handshake(self, msg: dict[str, Any], events: list[ProtocolEvent]) -> None:
        op = msg.get("op")
        if op == "welcome":
            welcome = welcome_from_wire(msg)
            self.welcome = welcome
            resumed = self.mirror.on_welcome(welcome.hub)
            self.state = ProtocolState.OPEN
            # every subscription again, in one frame, before any new request
            batch = []
            for spec in self._subscriptions.values():
                request_id = str(next(self._request_ids))
                self._pending[request_id] = _Pending(RequestKind.RESUBSCRIBE, spec.id)
                batch.append({**self._subscribe_message(spec), "id": request_id})
            if batch:
                self._outgoing.append(encode(batch))
            events.append(Welcomed(welcome, resumed))
        elif op == "error" or (op == "result" and msg.get("ok") is False):
            error = error_from_wire(msg.get("error") if op == "result" else msg)
            self.state = ProtocolState.DISCONNECTED
            events.append(HelloRefused(error))
        # anything else before the welcome is ignored

    def _receive(self, msg: dict[str, Any], events: list[ProtocolEvent]) -> None:
        op = msg.get("op")
        if op == "delta":
            self.mirror.on_delta(msg)
        elif op == "result":
            request_id = str(msg.get("id"))
            p = self._pending.pop(request_id, None)
            if p is not None:
                if msg.get("ok"):
                    self._done(request_id, p, msg.get("result"), events)
                else:
                    self._failed(request_id, p, error_from_wire(msg.get("error")), events)
        elif op == "snapshot":
            if self.mirror.on_snapshot(msg):
                request_id = str(msg.get("id"))
                p = self._pending.pop(request_id, None)
                if p is not None:
                    self._done(request_id, p, msg.get("rev"), events)
        elif op == "progress":
            rev = msg.get("rev")
            if isinstance(rev, int):
                self.mirror.on_progress(rev)
        elif op == "event":
            events.append(EventReceived(event_from_wire(msg)))
        elif op == "dropped":
            count = msg.get("events")
            if isinstance(count, int):
                events.append(EventsDropped(count))
        elif op == "command":
            params = msg.get("params")
            deadline = msg.get("deadline")
            events.append(
                CommandReceived(
                    id=msg.get("id"),
                    name=str(msg.get("name", "")),
                    params=params if isinstance(params, dict) else {},
                    source=str(msg.get("source", "")),
                    deadline=deadline if isinstance(deadline, int) else None,
                    connection=self.connection,
                )
            )
        elif op == "error":
            error_id = msg.get("id")
            p = self._pending.pop(str(error_id), None) if error_id is not None else None
            if p is not None:
                self._failed(str(error_id), p, error_from_wire(msg), events)
            else:
                events.append(ErrorReceived(error_from_wire(msg)))
        # other ops (a welcome again, ops of later revisions) are ignored

    def _done(self, request_id: str, p: _Pending, result: Any, events: list[ProtocolEvent]) -> None:
        if p.kind is not RequestKind.RESUBSCRIBE:  # nobody waits for those
            events.append(RequestDone(request_id, result))

    def _failed(
        self, request_id: str, p: _Pending, error: HubError, events: list[ProtocolEvent]
    ) -> None:
        if p.kind is RequestKind.SUBSCRIBE and p.sub_id is not None:
            self.forget_subscription(p.sub_id)
        if p.kind is RequestKind.RESUBSCRIBE:
            if p.sub_id is not None and p.sub_id in self._subscriptions:
                self.forget_subscription(p.sub_id)
                events.append(SubscriptionLost(p.sub_id, error))
        else:
            events.append(RequestFailed(request_id, error))
