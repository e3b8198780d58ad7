"""The Python SDK of companion-hub, built only on the public client protocol (v1).

::

    from companion_hub.client import HubClient

    async with HubClient("ws://127.0.0.1:8420/ws", "tally") as hub:
        await hub.set("app.tally.status", "live")
        async for change in hub.watch("companion.buttons.**"):
            print(change.key, change.value)

:class:`SyncHubClient` is the blocking twin for scripts; :func:`connect_raw` gives a
:class:`RawConnection` that sends and receives raw protocol messages (for tests,
benchmarks and tools). See ``docs/sdk.md``.

Modules: ``protocol`` (the sans-I/O protocol state machine), ``connection`` (its
asyncio driver), ``mirror`` (the local copy of subscribed entries), ``streams``
(subscriptions, watches, event streams), ``handlers`` (inbound commands),
``messages`` (typed values of the hub's data), ``wire`` (frames), ``errors``,
``hub_client`` (the facade), ``sync``, ``raw`` and ``tls`` (which certificates a
``wss://`` connection trusts).
"""

from __future__ import annotations

from .connection import ClientState
from .errors import (
    BadRequest,
    Conflict,
    ConnectionClosed,
    ErrorCode,
    Failed,
    Forbidden,
    HubError,
    Internal,
    LimitExceeded,
    NotFound,
    NotOwner,
    RateLimited,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .handlers import CommandHandler
from .hub_client import ConnectHook, DisconnectHook, HubClient
from .messages import Change, Entry, Event, HubLimits, Removal, Welcome, WriteResult
from .mirror import Mirror
from .protocol import ClientProtocol
from .raw import RawConnection, connect_raw
from .streams import EventStream, Subscription, Watch
from .sync import SyncHubClient, SyncSubscription

__all__ = [
    "BadRequest",
    "Change",
    "ClientProtocol",
    "ClientState",
    "CommandHandler",
    "Conflict",
    "ConnectHook",
    "ConnectionClosed",
    "DisconnectHook",
    "Entry",
    "ErrorCode",
    "Event",
    "EventStream",
    "Failed",
    "Forbidden",
    "HubClient",
    "HubError",
    "HubLimits",
    "Internal",
    "LimitExceeded",
    "Mirror",
    "NotFound",
    "NotOwner",
    "RateLimited",
    "RawConnection",
    "Removal",
    "Subscription",
    "SyncHubClient",
    "SyncSubscription",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Watch",
    "Welcome",
    "WriteResult",
    "connect_raw",
]
