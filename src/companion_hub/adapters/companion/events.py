"""What the Satellite client reports: the events of :class:`.satellite.SatelliteProtocol`.

Plain immutable values; the driver (:mod:`.link`) and the adapter act on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .codec import Params


class MirrorMode(StrEnum):
    """How the buttons are mirrored. The value is shown to users (``<ns>.info``)."""

    SUBSCRIPTIONS = "subscriptions"  # ADD-SUB for every configured location
    DEVICE = "device"  # a virtual surface: only the page Companion shows on it


@dataclass(frozen=True)
class Began:
    companion_version: str
    api_version: str


@dataclass(frozen=True)
class Capabilities:
    subscriptions: bool
    flags: dict[str, str | bool]


@dataclass(frozen=True)
class Registering:
    """Registration requests were queued; ``detail`` says what is mirrored and why."""

    mode: MirrorMode
    detail: str


@dataclass(frozen=True)
class ButtonRendered:
    page: int
    row: int
    column: int
    state: dict[str, Any] | None  # None: nothing at this location (an empty render)


@dataclass(frozen=True)
class DevicePage:
    page: int


@dataclass(frozen=True)
class OutputValue:
    variable: str
    value: str


@dataclass(frozen=True)
class Brightness:
    value: int


@dataclass(frozen=True)
class Synced:
    """Every registration was answered and every location reported its state."""

    mode: MirrorMode


@dataclass(frozen=True)
class Reply:
    command: str
    ok: bool
    message: str
    params: Params


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class ProtocolError:
    """Something Companion sent could not be used (or Companion reported an error).

    ``kind`` is a short stable identifier (see :data:`PROBLEM_KINDS`) for counting and
    for the driver's decisions, e.g. "incompatible" (the API is too old: reconnecting
    soon will not help). A fatal one means the connection must be dropped.
    """

    message: str
    fatal: bool = False
    kind: str = "malformed"


# The kinds of ProtocolError, each counted per connection in SatelliteProtocol.problems.
PROBLEM_KINDS = frozenset(
    {
        "malformed",  # not a Satellite message, or a required field is missing
        "unknown-message",  # a well-formed command this client does not know
        "unexpected",  # a known message that makes no sense now (e.g. a second BEGIN)
        "bad-number",  # a number field that is not a number in its allowed range
        "bad-location",  # SUBID/LOCATION missing, malformed or outside the configured grid
        "bad-base64",  # a base64 text field that does not decode to UTF-8
        "unknown-variable",  # a VARIABLE-VALUE for a variable that is not a declared output
        "companion-error",  # Companion answered ERROR
        "add-sub-failed",  # an ADD-SUB was refused
        "add-device-failed",  # ADD-DEVICE was refused (fatal unless "exists elsewhere")
        "subscriptions-disabled",  # the setting was switched off (fatal)
        "line-too-long",  # more than MAX_LINE_CHARS without a newline (fatal)
        "incompatible",  # Companion's API is older than 1.7 (fatal)
        "internal",  # a bug in this module, caught so the link survives
    }
)


Event = (
    Began
    | Capabilities
    | Registering
    | ButtonRendered
    | DevicePage
    | OutputValue
    | Brightness
    | Synced
    | Reply
    | Pong
    | ProtocolError
)
