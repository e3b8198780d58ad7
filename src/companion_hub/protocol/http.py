"""The HTTP API's request and response bodies (docs/http.md), as msgspec Structs.

The handlers in ``companion_hub.server.api`` decode request bodies with these types
(so a body that does not fit is a 400 naming the field), and
``companion_hub.server.openapi`` generates the OpenAPI document's schemas from the
same types: the documentation cannot drift from what is validated. Responses are
mostly spliced from already-encoded bytes (``protocol.encode``) for speed; their
Structs here describe those bytes for the OpenAPI document, and the tests check the
bytes against them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "CommandReply",
    "CommandRequest",
    "DeltaEvent",
    "Entry",
    "ErrorBody",
    "ErrorReply",
    "EventReply",
    "EventRequest",
    "Health",
    "LogReply",
    "Removed",
    "Snapshot",
    "StateReply",
    "WriteReply",
]

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """An error: ``code`` for programs (protocol section 14), ``message`` for people."""

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorReply(msgspec.Struct):
    """The body of every 4xx/5xx answer of the HTTP API."""

    error: ErrorBody


class CommandRequest(msgspec.Struct):
    """``POST /api/commands``: call ``name`` on the namespace ``target``."""

    target: NonEmpty
    name: NonEmpty
    params: dict[str, Any] = {}
    timeout_ms: Positive | None = None
    idempotency_key: str | None = None


class CommandReply(msgspec.Struct, omit_defaults=True):
    """A command's outcome: ``{"ok":true,"result":...}`` or ``{"ok":false,"error":...}``."""

    ok: bool
    result: Any = None
    error: ErrorBody | None = None


class EventRequest(msgspec.Struct):
    """``POST /api/events``: publish ``data`` under ``key`` (a key the caller owns)."""

    key: NonEmpty
    data: Any = None


class EventReply(msgspec.Struct):
    """How many subscribers the event was delivered to."""

    delivered: Count


class WriteReply(msgspec.Struct):
    """A write's outcome: the key's new version and the change's revision."""

    key: str
    version: Count
    rev: Count


class Entry(msgspec.Struct, omit_defaults=True):
    """A key's current entry (protocol section 4.4)."""

    key: str
    value: Any
    version: Count
    rev: Count
    owner: str
    stale: bool
    ts: int
    stale_since: int | None = None


class StateReply(msgspec.Struct):
    """``GET /api/state``: the matching entries at revision ``rev``, sorted by key."""

    rev: Count
    entries: list[Entry]


class Removed(msgspec.Struct):
    """A key deleted after ``since`` (an incremental snapshot's ``removed``)."""

    key: str
    version: Count
    rev: Count


class Snapshot(msgspec.Struct):
    """The data of the stream's first ``snapshot`` event."""

    rev: Count
    mode: Literal["full", "incremental"]
    hub: str
    entries: list[Entry]
    removed: list[Removed]


class DeltaEvent(msgspec.Struct, omit_defaults=True):
    """The data of a stream's ``delta`` event: the WebSocket's delta message."""

    op: Literal["delta"]
    key: str
    version: Count
    rev: Count
    owner: str
    value: Any = None
    deleted: bool = False
    stale: bool = False
    stale_since: int | None = None
    ts: int | None = None


class Health(msgspec.Struct, omit_defaults=True):
    """``/health/live`` and ``/health/ready``."""

    status: Literal["ok", "error"]
    error: str | None = None
    hub: str | None = None
    rev: Count | None = None
    durable_rev: int | None = None
    log_pending: Count | None = None


class LogReply(msgspec.Struct):
    """``GET /api/log``: one page of the event log (docs/protocol.md section 19.2)."""

    records: list[dict[str, Any]]
    next: str | None
    more: bool
    next_from_rev: int | None
    next_after_id: int | None
