"""A button's look as Companion streams it, turned into the hub's button value.

``KEY-STATE`` and ``SUB-STATE`` carry the same style arguments; the value stored under
``<ns>.buttons.<page>.<row>.<column>`` is made from them here, by a pure function.
"""

from __future__ import annotations

from typing import Any

from .codec import Params, b64_decode_text, is_falsey, parse_font_size


def button_value(params: Params) -> tuple[dict[str, Any] | None, str]:
    """The button value for a state message's arguments, and a problem ("" if none).

    The value is None for an empty location (no text, black, not pressed, a plain
    button): such a location has no key. An unusable ``FONT_SIZE`` is left out and
    described in the problem. Raises :class:`~.codec.Base64Error` for a ``TEXT`` that
    is not base64 of UTF-8.
    """
    text = b64_decode_text(params.get("TEXT", False)) if "TEXT" in params else ""
    value: dict[str, Any] = {
        "text": text,
        "bgcolor": _text_or(params.get("COLOR"), "#000000"),
        "color": _text_or(params.get("TEXTCOLOR"), "#ffffff"),
        "pressed": not is_falsey(params.get("PRESSED")),
        "type": _text_or(params.get("TYPE"), "BUTTON"),
    }
    problem = ""
    if "FONT_SIZE" in params:
        size = parse_font_size(params["FONT_SIZE"])
        if size is None:
            shown = str(params["FONT_SIZE"])[:40]
            problem = f"FONT_SIZE {shown!r} is not a size; field dropped"
        else:
            value["font_size"] = size
    bitmap = params.get("BITMAP")
    if isinstance(bitmap, str) and bitmap.startswith("data:"):
        value["image"] = bitmap
    if (
        not text
        and value["bgcolor"] in ("#000000", "rgb(0,0,0)")
        and not value["pressed"]
        and value["type"] == "BUTTON"
    ):
        return None, problem  # nothing there
    return value, problem


def _text_or(value: str | bool | None, default: str) -> str:
    return value if isinstance(value, str) and value else default
