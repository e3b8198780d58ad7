"""What the bridge puts in MQTT messages and reads out of them. Pure.

- **State** (``<prefix>/state/...``): ``{"value", "version", "rev", "stale", "ts",
  "owner"}`` (and ``"stale_since"`` while stale), spliced from the entry's canonical
  JSON without re-encoding the value.
- **Plain values** (``<prefix>/value/...``): a string as its UTF-8 text (no quotes,
  what a relay or a tally light compares against), anything else as JSON text
  (``true``, ``42``, ``{"a":1}``); ``null`` as the text ``null``.
- **Results**: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code",
  "message"[, "details"]}}``, with the command's ``target`` and ``name`` and, when the
  request named one, its ``id``.
- **Imported values**: JSON when the payload parses as JSON (``format = "json"``),
  else its text; an empty payload is a cleared retained message: the key is deleted.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.commands import Outcome
from ...core.errors import ErrorCode, HubError
from ...core.limits import MAX_DEPTH
from ...core.store import Entry
from ...protocol import encode as wire
from ...protocol.messages import _nests_within

_decode = msgspec.json.Decoder().decode
_decode_str = msgspec.json.Decoder(str).decode


def state_payload(e: Entry) -> bytes:
    stale = b'true,"stale_since":%d' % e.stale_since if e.stale else b"false"
    return b'{"value":%b,"version":%d,"rev":%d,"stale":%b,"ts":%d,"owner":"%b"}' % (
        e.raw,
        e.version,
        e.rev,
        stale,
        e.ts,
        e.owner.encode(),
    )


def plain_payload(e: Entry) -> bytes:
    raw = e.raw
    if raw[:1] == b'"':
        return _decode_str(raw).encode()
    return raw


def result_payload(
    outcome: Outcome, target: str, name: str, request_id: str | None = None
) -> bytes:
    msg: dict[str, Any] = {"ok": outcome.ok, "target": target, "name": name}
    if request_id is not None:
        msg["id"] = request_id
    if outcome.ok:
        msg["result"] = outcome.result
    else:
        err = outcome.error or HubError(ErrorCode.INTERNAL, "no outcome")
        msg["error"] = err.to_wire()
    return wire.encode(msg)


def error_payload(err: HubError, target: str, name: str, request_id: str | None = None) -> bytes:
    return result_payload(Outcome(False, None, err), target, name, request_id)


def command_params(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """A command request's params: a JSON object, or nothing for an empty payload.
    Raises BAD_REQUEST (or TOO_LARGE) with the reason."""
    if len(payload) > max_bytes:
        raise HubError(ErrorCode.TOO_LARGE, f"params larger than {max_bytes} bytes")
    if not payload.strip():
        return {}
    if not _nests_within(payload, MAX_DEPTH):
        raise HubError(ErrorCode.BAD_REQUEST, f"params nested deeper than {MAX_DEPTH}")
    try:
        params = _decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise HubError(ErrorCode.BAD_REQUEST, f"params are not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise HubError(ErrorCode.BAD_REQUEST, "params must be a JSON object")
    return params


def imported_value(payload: bytes, fmt: str) -> Any:
    """The value of an imported message (never called for an empty payload).
    Raises BAD_REQUEST when the payload is not UTF-8 text."""
    if fmt == "json" and _nests_within(payload, MAX_DEPTH):
        try:
            return _decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise HubError(ErrorCode.BAD_REQUEST, "payload is neither JSON nor UTF-8 text") from None
