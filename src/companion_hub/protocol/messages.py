"""Inbound messages of protocol v1 as typed structs, and the frame decoder.

Decoding and validation are one step (msgspec): a frame is either one message
object or an array of them. A message that fails validation becomes a
:class:`BadMessage` carrying the request ``id`` (when one could be recovered) and a
clear error, so that the session can answer it without closing the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..core.errors import ErrorCode, HubError

RequestId = str | int | None


class _Msg(msgspec.Struct, tag_field="op", forbid_unknown_fields=False, omit_defaults=True):
    id: RequestId = None


class Resume(msgspec.Struct, forbid_unknown_fields=False):
    hub: str
    rev: int


class Hello(_Msg, tag="hello"):
    client: str = ""
    token: str | None = None
    protocol: int = 1
    resume: Resume | None = None


class Subscribe(_Msg, tag="subscribe"):
    sub: str = ""
    patterns: list[str] = []
    snapshot: bool = True
    events: bool = False
    since: int | None = None


class Unsubscribe(_Msg, tag="unsubscribe"):
    sub: str = ""


class Get(_Msg, tag="get"):
    patterns: list[str] = []


class BatchEntry(msgspec.Struct, forbid_unknown_fields=False):
    key: str
    value: Any = msgspec.UNSET
    expect_version: int | None = None


class Set(_Msg, tag="set"):
    key: str | None = None
    value: Any = msgspec.UNSET
    expect_version: int | None = None
    entries: list[BatchEntry] | None = None


class Delete(_Msg, tag="delete"):
    key: str = ""
    expect_version: int | None = None


class Sync(_Msg, tag="sync"):
    pass


class Publish(_Msg, tag="publish"):
    key: str = ""
    data: Any = None


class Command(_Msg, tag="command"):
    target: str = ""
    name: str = ""
    params: dict[str, Any] = {}
    timeout_ms: int | None = None
    idempotency_key: str | None = None


class ErrorBody(msgspec.Struct, forbid_unknown_fields=False):
    code: str = "FAILED"
    message: str = ""
    details: Any = None


class Reply(_Msg, tag="reply"):
    ok: bool = False
    result: Any = None
    error: ErrorBody | None = None


Message = Hello | Subscribe | Unsubscribe | Get | Set | Delete | Sync | Publish | Command | Reply
KNOWN_OPS = frozenset(
    t.__struct_config__.tag
    for t in (Hello, Subscribe, Unsubscribe, Get, Set, Delete, Sync, Publish, Command, Reply)
)


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message that could not be accepted; ``id`` is echoed when it was readable."""

    id: RequestId
    op: str | None
    error: HubError


_typed = msgspec.json.Decoder(Message)
_frame = msgspec.json.Decoder(Message | list[msgspec.Raw])
_loose = msgspec.json.Decoder()


class FrameError(Exception):
    """The frame as a whole is unusable (not JSON, not an object or array)."""


def _explain(raw: bytes | msgspec.Raw, exc: msgspec.ValidationError) -> BadMessage:
    try:
        obj = _loose.decode(raw)
    except msgspec.DecodeError:
        return BadMessage(None, None, HubError(ErrorCode.BAD_REQUEST, f"invalid JSON: {exc}"))
    if not isinstance(obj, dict):
        return BadMessage(
            None,
            None,
            HubError(ErrorCode.BAD_REQUEST, "each message must be a JSON object"),
        )
    rid = obj.get("id")
    if not isinstance(rid, str | int) or isinstance(rid, bool):
        rid = None
    op = obj.get("op")
    if not isinstance(op, str):
        return BadMessage(rid, None, HubError(ErrorCode.BAD_REQUEST, "missing string field 'op'"))
    if op not in KNOWN_OPS:
        return BadMessage(rid, op, HubError(ErrorCode.BAD_REQUEST, f"unknown op {op!r}"))
    return BadMessage(rid, op, HubError(ErrorCode.BAD_REQUEST, f"invalid {op!r} message: {exc}"))


def decode_frame(data: bytes | str) -> list[Message | BadMessage]:
    """Decode one text frame into its messages, in order.

    Raises :class:`FrameError` if the frame is not JSON or is neither an object nor
    an array; a bad message inside a valid frame becomes a :class:`BadMessage`.
    """
    try:
        decoded = _frame.decode(data)
    except msgspec.ValidationError as exc:
        raw = data.encode() if isinstance(data, str) else data
        try:
            top = _loose.decode(raw)
        except msgspec.DecodeError:
            raise FrameError(f"invalid JSON: {exc}") from None
        if not isinstance(top, dict):
            raise FrameError("a frame must be a JSON object or an array of objects") from None
        return [_explain(raw, exc)]
    except msgspec.DecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from None
    if not isinstance(decoded, list):
        return [decoded]
    out: list[Message | BadMessage] = []
    for item in decoded:
        try:
            out.append(_typed.decode(item))
        except msgspec.ValidationError as exc:
            out.append(_explain(item, exc))
        except msgspec.DecodeError as exc:  # pragma: no cover - Raw is valid JSON
            out.append(BadMessage(None, None, HubError(ErrorCode.BAD_REQUEST, str(exc))))
    return out
