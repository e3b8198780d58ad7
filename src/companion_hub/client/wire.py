"""Frames of protocol v1 (spec section 1): UTF-8 JSON text, one message object or a
JSON array of message objects (a batch, processed in order)."""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import Internal

__all__ = ["ENCODE_ERRORS", "decode_frame", "encode"]

Message = dict[str, Any]

encode = msgspec.json.encode
"""Encode a message (or a batch) as the UTF-8 JSON payload of a text frame."""

ENCODE_ERRORS = (TypeError, ValueError, OverflowError)
"""What :func:`encode` raises for something that is not JSON."""

_decode = msgspec.json.decode


def decode_frame(data: str | bytes) -> list[Message]:
    """The messages of one frame, in order. Array items that are not objects are
    skipped; a frame that is not JSON, or is neither an object nor an array, raises
    :class:`~companion_hub.client.errors.Internal` (the hub does not send such frames)."""
    try:
        obj = _decode(data)
    except msgspec.DecodeError as exc:
        raise Internal(f"unreadable frame from the hub: not JSON: {exc}") from None
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list):
        return [m for m in obj if isinstance(m, dict)]
    raise Internal(f"unreadable frame from the hub: a JSON {type(obj).__name__}")
