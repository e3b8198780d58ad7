"""Outbound messages of protocol v1, encoded to bytes.

Deltas and snapshot entries are built by splicing bytes: keys and namespace names
can only contain ``[A-Za-z0-9_.-]`` (validated on the way in), so they need no
escaping, and values are already stored as canonical JSON. Each delta is encoded
once per change and the same bytes go to every connection that receives it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from ..core.errors import ErrorCode, HubError
from ..core.store import Entry

_enc = msgspec.json.Encoder()
encode = _enc.encode
decode_value = msgspec.json.Decoder().decode

_BOOL = (b"false", b"true")


def encode_value(value: Any) -> bytes:
    """Canonical JSON of a value; raises BAD_REQUEST for what JSON cannot carry."""
    try:
        return encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise HubError(ErrorCode.BAD_REQUEST, f"value is not JSON: {exc}") from None


def _stale(e: Entry) -> bytes:
    """``"stale":false`` or ``"stale":true,"stale_since":N`` (revision 2)."""
    if e.stale:
        return b'"stale":true,"stale_since":%d' % e.stale_since
    return b'"stale":false'


def delta(e: Entry) -> bytes:
    return b'{"op":"delta","key":"%b","value":%b,"version":%d,"rev":%d,"owner":"%b",%b,"ts":%d}' % (
        e.key.encode(),
        e.raw,
        e.version,
        e.rev,
        e.owner.encode(),
        _stale(e),
        e.ts,
    )


def deleted_delta(key: str, version: int, rev: int, owner: str) -> bytes:
    return b'{"op":"delta","key":"%b","deleted":true,"version":%d,"rev":%d,"owner":"%b"}' % (
        key.encode(),
        version,
        rev,
        owner.encode(),
    )


def entry(e: Entry) -> bytes:
    return b'{"key":"%b","value":%b,"version":%d,"rev":%d,"owner":"%b",%b,"ts":%d}' % (
        e.key.encode(),
        e.raw,
        e.version,
        e.rev,
        e.owner.encode(),
        _stale(e),
        e.ts,
    )


def removed_entry(key: str, version: int, rev: int) -> bytes:
    """An item of an incremental snapshot's ``removed``: a key deleted after ``since``."""
    return b'{"key":"%b","version":%d,"rev":%d}' % (key.encode(), version, rev)


def entries_array(entries: Sequence[Entry]) -> bytes:
    return b"[" + b",".join([entry(e) for e in entries]) + b"]"


def result_ok(rid: Any, result: Any) -> bytes:
    return encode({"op": "result", "id": rid, "ok": True, "result": result})


def result_raw(rid: Any, result_json: bytes) -> bytes:
    """A successful result whose ``result`` is already JSON."""
    return b'{"op":"result","id":%b,"ok":true,"result":%b}' % (encode(rid), result_json)


def result_error(rid: Any, err: HubError) -> bytes:
    return encode({"op": "result", "id": rid, "ok": False, "error": err.to_wire()})


def error(err: HubError, rid: Any = None) -> bytes:
    msg: dict[str, Any] = {"op": "error", "code": str(err.code), "message": err.message}
    if err.details is not None:
        msg["details"] = err.details
    if rid is not None:
        msg["id"] = rid
    return encode(msg)


def progress(rev: int) -> bytes:
    return b'{"op":"progress","rev":%d}' % rev


def dropped(n: int) -> bytes:
    return b'{"op":"dropped","events":%d}' % n


def event(key: str, data_json: bytes, source: str, ts: int) -> bytes:
    return b'{"op":"event","key":"%b","data":%b,"source":%b,"ts":%d}' % (
        key.encode(),
        data_json,
        encode(source),
        ts,
    )


def snapshot_chunks(
    rid: Any,
    sub: str,
    rev: int,
    mode: str,
    entries: Sequence[Entry],
    removed: Sequence[tuple[str, int, int]],
    chunk_bytes: int,
) -> Iterator[bytes]:
    """The snapshot as one or more messages of about ``chunk_bytes`` each, encoded lazily.

    ``entries`` must not change while this runs; the store's entries are immutable,
    so a list of them captured at subscribe time is a consistent snapshot.
    ``removed`` (incremental snapshots): (key, version, rev) of each key deleted
    after ``since``, its delete's version and revision.
    """
    head = b'{"op":"snapshot","id":%b,"sub":%b,"rev":%d,"mode":"%b","entries":[' % (
        encode(rid),
        encode(sub),
        rev,
        mode.encode(),
    )
    parts: list[bytes] = []
    size = 0
    n = len(entries)
    i = 0
    while i < n:
        b = entry(entries[i])
        i += 1
        parts.append(b)
        size += len(b) + 1
        if size >= chunk_bytes and (i < n or removed):
            yield head + b",".join(parts) + b'],"removed":[],"done":false}'
            parts = []
            size = 0
    removed_json = b"[" + b",".join([removed_entry(*r) for r in removed]) + b"]"
    yield head + b",".join(parts) + b'],"removed":' + removed_json + b',"done":true}'


def batch(messages: list[bytes]) -> bytes:
    """One frame: the message itself, or a JSON array of several. Takes over
    ``messages`` (its ends get the brackets): one copy of the frame's bytes, not three
    (``b"[" + joined + b"]"`` copied a 64 KiB frame twice more)."""
    n = len(messages)
    if n == 1:
        return messages[0]
    if n < 16:  # a small frame: the copies cost less than changing the list
        return b"[" + b",".join(messages) + b"]"
    messages[0] = b"[" + messages[0]
    messages[-1] += b"]"
    return b",".join(messages)
