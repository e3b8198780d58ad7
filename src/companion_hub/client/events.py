"""What :class:`~companion_hub.client.protocol.ClientProtocol` reports, as in ``h11``:
one frozen dataclass per kind of happening, returned in order by
:meth:`~companion_hub.client.protocol.ClientProtocol.receive_frame` and
:meth:`~companion_hub.client.protocol.ClientProtocol.connection_lost`.

Changes of entries are not events: the protocol applies them to the mirror, whose
listeners see them as :class:`~companion_hub.client.messages.Change`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import HubError
from .messages import Event, Welcome

__all__ = [
    "CommandReceived",
    "ErrorReceived",
    "EventReceived",
    "EventsDropped",
    "HelloRefused",
    "MalformedMessage",
    "ProtocolEvent",
    "RequestDone",
    "RequestFailed",
    "SubscriptionLost",
    "Welcomed",
]


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The hub accepted the ``hello``; ``resumed`` when it is the same hub as before."""

    welcome: Welcome
    resumed: bool


@dataclass(frozen=True, slots=True)
class HelloRefused:
    """The hub answered the ``hello`` with an error (e.g. ``UNAUTHORIZED``)."""

    error: HubError


@dataclass(frozen=True, slots=True)
class RequestDone:
    """A request succeeded: ``result`` is the ``result`` object, or a subscription's
    snapshot ``rev`` once its last chunk is in the mirror."""

    request_id: str
    result: Any


@dataclass(frozen=True, slots=True)
class RequestFailed:
    request_id: str
    error: HubError


@dataclass(frozen=True, slots=True)
class SubscriptionLost:
    """The hub refused to re-establish a subscription after a reconnection."""

    sub_id: str
    error: HubError


@dataclass(frozen=True, slots=True)
class EventReceived:
    event: Event


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """The hub's event queue for this connection overflowed: ``count`` were lost."""

    count: int


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A command for a namespace this client owns; answer with
    :meth:`ClientProtocol.send_reply`. ``connection`` is the connection it came on."""

    id: Any
    name: str
    params: dict[str, Any]
    source: str
    deadline: int | None
    connection: int


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """An ``error`` message not tied to a pending request."""

    error: HubError


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A frame or message the protocol could not use; it was ignored."""

    message: Any
    reason: str


ProtocolEvent = (
    Welcomed
    | HelloRefused
    | RequestDone
    | RequestFailed
    | SubscriptionLost
    | EventReceived
    | EventsDropped
    | CommandReceived
    | ErrorReceived
    | MalformedMessage
)
