"""The Python SDK of companion-hub, built only on the public client protocol (v1).

::

    from companion_hub.client import HubClient

    async with HubClient("ws://127.0.0.1:8420/ws", "tally") as hub:
        await hub.set("app.tally.status", "live")
        async for change in hub.watch("companion.buttons.**"):
            print(change.key, change.value)

:class:`SyncHubClient` is the blocking twin for scripts. See ``docs/sdk.md``.
"""

from __future__ import annotations

from .errors import (
    BadRequest,
    Conflict,
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
from .hub_client import (
    CommandHandler,
    ConnectHook,
    Event,
    EventStream,
    HubClient,
    Subscription,
    Watch,
    WriteResult,
)
from .mirror import Change, Entry, Mirror
from .sync import SyncHubClient, SyncSubscription

__all__ = [
    "BadRequest",
    "Change",
    "CommandHandler",
    "Conflict",
    "ConnectHook",
    "Entry",
    "ErrorCode",
    "Event",
    "EventStream",
    "Failed",
    "Forbidden",
    "HubClient",
    "HubError",
    "Internal",
    "LimitExceeded",
    "Mirror",
    "NotFound",
    "NotOwner",
    "RateLimited",
    "Subscription",
    "SyncHubClient",
    "SyncSubscription",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Watch",
    "WriteResult",
]
