"""Inbound messages of protocol v1 as typed structs, and the frame decoder.

Decoding and validation are one step (msgspec): a frame is either one message
object or an array of them. A message that fails validation becomes a
:class:`BadMessage` carrying the request ``id`` (when one could be recovered) and a
clear error, so that the session can answer it without closing the connection.

:func:`decode_frame` never raises anything but :class:`FrameError`, whatever the
bytes. Two things need care before msgspec sees a frame:

* **UTF-8.** msgspec checks UTF-8 only inside the strings it returns, and raises
  ``UnicodeDecodeError`` (not a ``DecodeError``) when one is invalid; bytes it skips
  (unknown fields) are not checked at all. The frame is therefore checked as a
  whole first (RFC 6455 section 8.1 requires text frames to be valid UTF-8).
* **Nesting.** msgspec recurses once per array or object, both when it decodes into
  ``Any`` and when it skips a field, and raises ``RecursionError`` near the
  interpreter's recursion limit; a value that decoded a few levels above that limit
  would then fail to re-encode, or to compare (``jsonvalue.json_equal`` recurses
  too), deeper in the hub's stack. Messages may nest at most
  :data:`~companion_hub.core.limits.MAX_DEPTH` levels below the message object, checked
  on the bytes, without recursion, before msgspec recurses into them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import msgspec

from ..core.errors import CompanionHubError, ErrorCode, HubError
from ..core.limits import MAX_DEPTH

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
    durable: bool = False  # reply once the change is on disk in the event log


class Delete(_Msg, tag="delete"):
    key: str = ""
    expect_version: int | None = None
    durable: bool = False


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
_OP_OF: dict[type, str] = {
    t: str(t.__struct_config__.tag)
    for t in (Hello, Subscribe, Unsubscribe, Get, Set, Delete, Sync, Publish, Command, Reply)
}
KNOWN_OPS = frozenset(_OP_OF.values())


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message that could not be accepted; ``id`` is echoed when it was readable."""

    id: RequestId
    op: str | None
    error: HubError


class FrameErrorKind(StrEnum):
    """Why a frame was unusable as a whole."""

    INVALID_UTF8 = "invalid_utf8"
    """Not UTF-8 text. RFC 6455 section 8.1 would fail the connection (close 1007);
    the hub answers ``BAD_REQUEST`` and keeps it, like any malformed message."""
    INVALID_JSON = "invalid_json"
    """Not JSON (or, defensively, JSON nested too deep for the decoder's stack)."""
    NOT_MESSAGES = "not_messages"
    """JSON, but neither an object nor an array."""


class FrameError(CompanionHubError):
    """The frame as a whole is unusable (not UTF-8, not JSON, not an object or array)."""

    def __init__(self, message: str, kind: FrameErrorKind = FrameErrorKind.INVALID_JSON) -> None:
        super().__init__(message)
        self.kind = kind


# A message nests this many levels: the message object, then MAX_DEPTH below it.
MESSAGE_DEPTH = MAX_DEPTH + 1

_batch = msgspec.json.Decoder(Message | list[Message])
_decode_batch = _batch.decode
_typed = msgspec.json.Decoder(Message)
_frame = msgspec.json.Decoder(Message | list[msgspec.Raw])
_loose = msgspec.json.Decoder()

_TOO_DEEP = HubError(
    ErrorCode.BAD_REQUEST,
    f"the message nests arrays and objects more than {MAX_DEPTH} levels deep",
)


def decode_frame(data: bytes | str) -> list[Message | BadMessage]:
    """Decode one text frame into its messages, in order.

    Raises :class:`FrameError` (and nothing else, for any input) if the frame is not
    UTF-8, not JSON, or neither an object nor an array; a bad message inside a valid
    frame, including one nested deeper than the limit, becomes a :class:`BadMessage`.
    Every value in a returned message nests at most ``MAX_DEPTH`` levels, so it can be
    re-encoded and compared without running out of stack.
    """
    if not data.isascii():
        data = _utf8(data)
    if len(data) > _SHALLOW_BYTES:
        if isinstance(data, str):
            data = data.encode()  # ASCII: the checks work on bytes
        if not _nests_within(data, MESSAGE_DEPTH):
            return _decode_deep(data)
    return _decode(data)


# --- decoding a frame known to nest no deeper than the limit ------------------------


def _decode(data: bytes | str) -> list[Message | BadMessage]:
    """The common case in one msgspec call; a frame with a bad message is decoded
    again message by message, to say which one is bad and why."""
    try:
        decoded = _decode_batch(data)
    except msgspec.ValidationError:
        return _decode_each(data)
    except msgspec.DecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - only with a nearly exhausted stack
        raise FrameError("invalid JSON: nested too deep to decode here") from None
    if type(decoded) is list:
        return cast("list[Message | BadMessage]", decoded)
    return [cast("Message", decoded)]


def _decode_each(data: bytes | str) -> list[Message | BadMessage]:
    try:
        decoded = _frame.decode(data)
    except msgspec.ValidationError as exc:  # the top level is not an array
        try:
            head = _head.decode(data)
        except msgspec.ValidationError:
            raise FrameError(
                "a frame must be a JSON object or an array of objects",
                FrameErrorKind.NOT_MESSAGES,
            ) from None
        except msgspec.DecodeError:
            raise FrameError(f"invalid JSON: {exc}") from None
        return [_explain(head, exc)]
    except msgspec.DecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - only with a nearly exhausted stack
        raise FrameError("invalid JSON: nested too deep to decode here") from None
    if not isinstance(decoded, list):  # pragma: no cover - the batch decoder took it
        return [decoded]
    out: list[Message | BadMessage] = []
    for item in decoded:
        try:
            out.append(_typed.decode(item))
        except msgspec.ValidationError as exc:
            try:
                out.append(_explain(_head.decode(item), exc))
            except msgspec.DecodeError:  # not an object (Raw is valid JSON)
                out.append(BadMessage(None, None, _NOT_AN_OBJECT))
    return out


class _Head(msgspec.Struct, forbid_unknown_fields=False):
    """Just the ``op`` and ``id`` of a message that failed validation, undecoded: the
    rest is skipped, so a number out of range elsewhere cannot hide the ``id``."""

    op: msgspec.Raw = msgspec.Raw()
    id: msgspec.Raw = msgspec.Raw()


_head = msgspec.json.Decoder(_Head)
_NOT_AN_OBJECT = HubError(ErrorCode.BAD_REQUEST, "each message must be a JSON object")


def _explain(head: _Head, exc: msgspec.ValidationError) -> BadMessage:
    rid = _request_id(_raw_value(head.id))
    op = _raw_value(head.op)
    if not isinstance(op, str):
        return BadMessage(rid, None, HubError(ErrorCode.BAD_REQUEST, "missing string field 'op'"))
    if op not in KNOWN_OPS:
        return BadMessage(rid, op, HubError(ErrorCode.BAD_REQUEST, f"unknown op {op!r}"))
    return BadMessage(rid, op, HubError(ErrorCode.BAD_REQUEST, f"invalid {op!r} message: {exc}"))


def _raw_value(raw: msgspec.Raw) -> Any:
    if not raw:
        return None
    try:
        return _loose.decode(raw)
    except msgspec.DecodeError:  # a number out of range
        return None


def _request_id(rid: Any) -> RequestId:
    if isinstance(rid, str | int) and not isinstance(rid, bool):
        return rid
    return None


# --- UTF-8 ---------------------------------------------------------------------------


def _utf8(data: bytes | str) -> bytes:
    """The frame as bytes, checked to be UTF-8 (strict: no surrogates, no overlong
    forms, as RFC 3629 and so RFC 6455 require). ASCII frames never come here."""
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FrameError(
                f"invalid UTF-8: a lone surrogate at character {exc.start}",
                FrameErrorKind.INVALID_UTF8,
            ) from None
    data = bytes(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(
            f"invalid UTF-8 at byte {exc.start}: {exc.reason}", FrameErrorKind.INVALID_UTF8
        ) from None
    return data


# --- nesting, measured on the bytes ------------------------------------------------
#
# Both checks below see a frame as its brackets outside strings. Strings are found by
# their quotes once the two escapes that can hide a quote are gone: ``\\`` and ``\"``
# (replaced left to right, which pairs backslashes exactly as JSON does). UTF-8 is
# checked first, so no byte of a multi-byte character can look like a quote or a
# bracket. For any frame the depth found this way bounds how deep msgspec can recurse
# before it either finishes or stops at the first syntax error: up to that error the
# two read the same brackets and strings.

# A frame this short cannot nest deeper than MESSAGE_DEPTH (each level takes 2 bytes).
_SHALLOW_BYTES = 2 * MESSAGE_DEPTH + 1
_FOLD = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_LONG_SKELETON = 16 * 1024
# Below this size, counting the openers first (a table-only translate: no per-call
# set-up for deletions) usually settles it sooner than extracting the structure.
_SMALL_BYTES = 1024
_OPENER_FLAGS = bytes(1 if b in b"[{" else 0 for b in range(256))
_FEW_STRINGS_BYTES = 4096
_BACKSLASH = ord("\\")
_FOLD_ESCAPES = bytes.maketrans(b"{}/bfnrtu", b"[]eeeeeee")
_NOT_STRUCTURE_OR_ESCAPE = bytes(b for b in range(256) if b not in b'"[]{}\\/bfnrtu')


def _nests_within(data: bytes, depth: int) -> bool:
    """True if the brackets of ``data`` balance and nest at most ``depth`` deep (or if
    it has at most ``depth`` brackets at all).

    Only C-level bytes operations, no recursion and no per-byte Python loop: the
    brackets outside strings are extracted, then innermost pairs removed ``depth``
    times (a frame with fewer brackets than that is done after one ``translate``).
    """
    if len(data) < _SMALL_BYTES and data.translate(_OPENER_FLAGS).count(1) <= depth:
        return True  # the common small frame: too few brackets to nest deeper
    skeleton = _few_strings_skeleton(data) if len(data) >= _FEW_STRINGS_BYTES else None
    if skeleton is None:
        structure = data.translate(_FOLD, _NOT_STRUCTURE)  # brackets and quotes
        quotes = structure.count(b'"')
        if len(structure) - quotes <= depth:
            return True  # too few brackets to nest deeper, in strings or not
        if quotes and b"\\" in data:
            structure = _unescaped_structure(data)
            quotes = structure.count(b'"')
        skeleton = _outside_strings(structure, quotes)
    too_deep = b"[" * (depth + 1)
    for _ in range(depth):
        if not skeleton:
            return True
        if len(skeleton) > _LONG_SKELETON and too_deep in skeleton:
            return False  # the usual shape of a hostile frame: spare the rounds
        inner = skeleton.replace(b"[]", b"")
        if len(inner) == len(skeleton):
            return False  # unbalanced
        skeleton = inner
    return not skeleton


def _unescaped_structure(data: bytes) -> bytes:
    """The brackets and the quotes that are not escaped, of a frame with backslashes.

    Backslashes are kept, and so is every byte that can follow one in an escape (as
    ``e`` unless it is a quote or a backslash), so that each escape stays a pair of
    adjacent bytes; ``\\\\`` and then ``\\"`` are removed left to right (which pairs
    backslashes as JSON does), then the other escapes and the markers."""
    structure = data.translate(_FOLD_ESCAPES, _NOT_STRUCTURE_OR_ESCAPE)
    structure = structure.replace(b"\\\\", b"").replace(b'\\"', b"")
    return structure.translate(None, b"\\e")


def _outside_strings(structure: bytes, quotes: int) -> bytes:
    """The brackets outside strings, from the brackets and ``quotes`` quotes of a
    frame. With the strings' other bytes gone, nearly every string is an adjacent
    pair of quotes; only if some are not (brackets inside) are strings split out."""
    if not quotes:
        return structure
    if structure.count(b'""') * 2 == quotes:  # every string is an adjacent pair
        return structure.translate(None, b'"')
    structure = structure.replace(b'""', b"")  # keeps quote parity: strings merge or go
    return b"".join(structure.split(b'"')[::2])


def _few_strings_skeleton(data: bytes) -> bytes | None:
    """The brackets outside strings of a frame with few, long strings (at most one
    quote per 2 KiB), found by jumping from quote to quote with ``find`` (memchr), so
    that the strings' bytes are never touched; None for a frame with more quotes. A
    quote is escaped when an odd number of backslashes precedes it."""
    pieces: list[bytes] = []
    start = 0  # where the text outside strings resumes
    pos = 0
    inside = False
    for _ in range(len(data) // _FEW_STRINGS_BYTES * 2):
        quote = data.find(b'"', pos)
        if quote < 0:
            if not inside:  # (an unterminated string runs to the end)
                pieces.append(data[start:])
            return b"".join(pieces).translate(_FOLD, _NOT_BRACKETS)
        pos = quote + 1
        if inside:
            backslashes = 0
            while data[quote - 1 - backslashes] == _BACKSLASH:
                backslashes += 1
            if backslashes % 2:
                continue  # an escaped quote, inside the string
            start = pos
        else:
            pieces.append(data[start:quote])
        inside = not inside
    return None


# A run of openers (or closers) with whatever else comes before the next bracket
# of the other kind: strings are masked, so what is in between is scalars and commas.
_RUN = re.compile(rb"[\[{][^\]}]*|[\]}][^\[{]*")
_OPENERS = frozenset(b"[{")
_NOT_OPENERS = bytes(b for b in range(256) if b not in b"[{")
_NOT_CLOSERS = bytes(b for b in range(256) if b not in b"]}")


def _mask_strings(data: bytes) -> bytes:
    """``data`` with every string's contents (and escapes) blanked: same length, same
    positions, and the only brackets and commas left are structural."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    parts = data.split(b'"')
    parts[1::2] = [b"_" * len(p) for p in parts[1::2]]
    return b'"'.join(parts)


def _cut_deep(data: bytes) -> tuple[bytes, list[int]]:
    """Replace every array or object that starts deeper than a message may nest with
    ``null``; return the new frame and the indices of the messages that were cut.

    The frame's depth is followed run by run (one regex match per run of openers or
    closers, so ``[[[[...]]]]`` or ``{"a":{"a":...}}`` costs two steps), with strings
    masked, and a region being cut is crossed in chunks (:func:`_skip`). A region
    left open at the end is cut to the end; a closer with nothing open stops the walk,
    since msgspec will reject the frame there before recursing any further.
    """
    masked = _mask_strings(data)
    first = len(masked) - len(masked.lstrip())
    batch = masked[first : first + 1] == b"["
    limit = MESSAGE_DEPTH + 1 if batch else MESSAGE_DEPTH
    depth = 0
    element = 0  # the batch element being read: top-level commas so far
    gap = first + 1  # where the top-level text since the last element begins
    cut = -1  # the start of the region being cut, if one is open
    kept = 0  # data[:kept] is in pieces already
    pieces: list[bytes] = []
    deep: list[int] = []
    pos = 0
    step = _SKIP_STEP
    while True:
        if cut >= 0:
            pos, depth, step = _skip(masked, pos, depth - limit, step)
            depth += limit
        run = _RUN.search(masked, pos)
        if run is None:
            break
        start, pos = run.span()
        if masked[start] in _OPENERS:
            n = masked.count(b"[", start, pos) + masked.count(b"{", start, pos)
            if batch and depth < 2 <= depth + n:  # an element opens in this run
                element += masked.count(b",", gap, _bracket(masked, start, pos, n, 1 - depth))
            if depth <= limit < depth + n:
                cut = _bracket(masked, start, pos, n, limit - depth)
                if not deep or deep[-1] != element:
                    deep.append(element)
            depth += n
        else:
            n = masked.count(b"]", start, pos) + masked.count(b"}", start, pos)
            if n > depth:
                break  # closes more than is open: msgspec stops here
            if cut >= 0 and depth - n <= limit:
                pieces += (data[kept:cut], b"null")
                kept = _bracket(masked, start, pos, n, depth - limit - 1) + 1
                cut = -1
            if batch and depth - n <= 1 < depth:  # an element closes in this run
                gap = _bracket(masked, start, pos, n, depth - 2) + 1
            depth -= n
    if cut >= 0:
        pieces += (data[kept:cut], b"null")
        kept = len(data)
    pieces.append(data[kept:])
    return b"".join(pieces), deep


_SKIP_STEP = 64


def _skip(masked: bytes, pos: int, above: int, step: int) -> tuple[int, int, int]:
    """Cross a region being cut, ``above`` levels above the limit at ``pos``, in whole
    chunks that cannot close it (fewer closers than ``above``); return where the walk
    resumes, the levels above the limit there, and the next chunk size. Chunks double
    while they pass and halve when they do not, so even a region that zigzags (which
    makes runs short) costs a few steps per doubling of its length, not one per run."""
    size = len(masked)
    while pos < size:
        stop = pos + step
        closers = masked.count(b"]", pos, stop) + masked.count(b"}", pos, stop)
        if closers >= above:
            return pos, above, max(step // 2, _SKIP_STEP)
        above += masked.count(b"[", pos, stop) + masked.count(b"{", pos, stop) - closers
        pos = stop
        step *= 2
    return pos, above, step


def _bracket(masked: bytes, start: int, end: int, n: int, i: int) -> int:
    """The position of the ``i``-th (from 0) of the ``n`` brackets of the run
    ``start:end`` (openers or closers, as the run starts). The callers ask for one at
    most the nesting limit from one end of the run, and most runs are a block of
    brackets with scalars before or after it, so this rarely walks far."""
    kind, other = (b"[{", _NOT_OPENERS) if masked[start] in _OPENERS else (b"]}", _NOT_CLOSERS)
    run = masked[start:end]
    lead = len(run) - len(run.lstrip(kind))
    if i < lead:
        return start + i
    body = run.rstrip(other)
    if n - i <= len(body) - len(body.rstrip(kind)):
        return start + len(body) - (n - i)
    if i <= n - 1 - i:
        found = itertools.islice(re.finditer(b"[%b]" % re.escape(kind), run), i, None)
        return start + next(found).start()
    stop = len(body)
    for _ in range(n - i):
        stop = max(run.rfind(kind[:1], 0, stop), run.rfind(kind[1:], 0, stop))
    return start + stop


def _decode_deep(data: bytes) -> list[Message | BadMessage]:
    """A frame that nests too deep somewhere (or whose brackets do not balance): the
    messages that nest too deep are cut down to the limit, the frame decoded as usual,
    and those messages answered with BAD_REQUEST, their ``id`` echoed when readable.
    What lies below the limit is skipped by counting brackets, not parsed."""
    cut, deep = _cut_deep(data)
    out = _decode(cut)
    for i in deep:
        if i < len(out):
            out[i] = _too_deep(out[i])
    return out


def _too_deep(item: Message | BadMessage) -> BadMessage:
    op = item.op if isinstance(item, BadMessage) else _OP_OF[type(item)]
    return BadMessage(item.id, op, _TOO_DEEP)
