"""A link's state as adapters and bridges publish it in ``hub.adapters.<name>``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LinkState(StrEnum):
    """A link's state. The values are what users see in ``hub.adapters.<name>``."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"  # the link's task failed unexpectedly and waits for its restart
    OFF = "off"  # the HTTP link is not configured (never the adapter's own state)


@dataclass(frozen=True)
class LinkStatus:
    """One link's state, why, and (after a drop) when it is retried (epoch seconds)."""

    state: LinkState
    detail: str = ""
    retry_at: float | None = None
