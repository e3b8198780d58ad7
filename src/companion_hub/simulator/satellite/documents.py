"""The JSON documents a Satellite client sends in base64 fields, read as Companion does.

``LAYOUT_MANIFEST`` (controls and their style presets), ``VARIABLES`` (transferable
values), ``CONFIG_FIELDS`` (device settings) on ``ADD-DEVICE``, and ``STYLE`` on
``ADD-SUB``. Pure functions; a document Companion would refuse gives None (the caller
answers ``Invalid <FIELD>``).
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from companion_hub.adapters.companion.codec import Base64Error, b64_decode_json

from ..model import RenderStyle
from .surfaces import Control

ID_PATTERN = re.compile(r"^[a-zA-Z0-9\-/]+$")  # layout control ids and SUBIDs
_FORBIDDEN_IDS = frozenset({"__proto__", "constructor", "prototype"})
_CONFIG_TYPES = frozenset({"static-text", "textinput", "dropdown", "number", "checkbox"})


def is_number(value: Any) -> TypeGuard[float]:
    """A JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def strict_preset(preset: Any, bitmap_format: str) -> RenderStyle | None:
    """A layout-manifest style preset, schema-checked (unknown keys stripped)."""
    if not isinstance(preset, dict):
        return None
    bitmap = preset.get("bitmap")
    size: tuple[int, int] | None = None
    if bitmap is not None:
        if not isinstance(bitmap, dict):
            return None
        w, h = bitmap.get("w"), bitmap.get("h")
        if not (is_number(w) and is_number(h) and w >= 0 and h >= 0):
            return None
        size = (int(w), int(h))
    for key in ("text", "textStyle"):
        if key in preset and not isinstance(preset[key], bool):
            return None
    colors = preset.get("colors")
    if colors is not None and colors not in ("hex", "rgb"):
        return None
    leds = preset.get("leds")
    if leds is not None:
        if not isinstance(leds, dict):
            return None
        seg = leds.get("segments")
        if not (is_number(seg) and 1 <= seg <= 200) or leds.get("mode") not in (
            "full-ring",
            "simple",
        ):
            return None
    return RenderStyle(
        bitmap=size,
        colors=colors,
        text=bool(preset.get("text", False)),
        text_style=bool(preset.get("textStyle", False)),
        bitmap_format=bitmap_format,
    )


def loose_preset(preset: Any, bitmap_format: str) -> RenderStyle:
    """An ADD-SUB ``STYLE``: only ``JSON.parse``-d by Companion, read defensively."""
    if not isinstance(preset, dict):
        return RenderStyle(bitmap_format=bitmap_format)
    bitmap = preset.get("bitmap")
    size: tuple[int, int] | None = None
    if isinstance(bitmap, dict) and is_number(bitmap.get("w")) and is_number(bitmap.get("h")):
        size = (max(0, int(bitmap["w"])), max(0, int(bitmap["h"])))
    colors = preset.get("colors")
    return RenderStyle(
        bitmap=size,
        colors=colors if colors in ("hex", "rgb") else ("hex" if colors else None),
        text=bool(preset.get("text")),
        text_style=bool(preset.get("textStyle")),
        bitmap_format=bitmap_format,
    )


def parse_manifest(value: str | bool, bitmap_format: str) -> dict[str, Control] | None:
    """Validate a LAYOUT_MANIFEST; None when Companion would say ``Invalid LAYOUT_MANIFEST``."""
    try:
        doc = b64_decode_json(value)
    except Base64Error:
        return None
    if not isinstance(doc, dict):
        return None
    presets_doc, controls_doc = doc.get("stylePresets"), doc.get("controls")
    if not isinstance(presets_doc, dict) or not isinstance(controls_doc, dict):
        return None
    presets: dict[str, RenderStyle] = {}
    for name, preset in presets_doc.items():
        parsed = strict_preset(preset, bitmap_format)
        if parsed is None:
            return None
        presets[name] = parsed
    if "default" not in presets:
        return None
    controls: dict[str, Control] = {}
    for cid, ctl in controls_doc.items():
        if not ID_PATTERN.match(cid) or not isinstance(ctl, dict):
            return None
        row, col = ctl.get("row"), ctl.get("column")
        if not (is_number(row) and is_number(col) and row >= 0 and col >= 0):
            return None
        preset_name = ctl.get("stylePreset")
        if preset_name is not None and not isinstance(preset_name, str):
            return None
        style = presets.get(preset_name or "default", presets["default"])
        controls[cid] = Control(int(row), int(col), style)
    return controls


def parse_variables(value: str | bool) -> tuple[list[str], list[str]] | None:
    """Validate VARIABLES; returns (input ids, output ids) or None (``Invalid VARIABLES``)."""
    try:
        doc = b64_decode_json(value)
    except Base64Error:
        return None
    if doc is None:
        return [], []
    if not isinstance(doc, list):
        return None
    inputs: list[str] = []
    outputs: list[str] = []
    for item in doc:
        if not isinstance(item, dict):
            return None
        var_id, kind, name = item.get("id"), item.get("type"), item.get("name")
        if not isinstance(var_id, str) or not isinstance(name, str):
            return None
        if kind not in ("input", "output"):
            return None
        if "description" in item and not isinstance(item["description"], str):
            return None
        if var_id in _FORBIDDEN_IDS:
            continue
        (inputs if kind == "input" else outputs).append(var_id)
    return inputs, outputs


def parse_config_fields(value: str | bool) -> dict[str, Any] | None:
    """Validate CONFIG_FIELDS; returns the default values of non-static fields, or None.

    An empty dict means "only static text": no ``DEVICE-CONFIG`` is sent then.
    """
    try:
        doc = b64_decode_json(value)
    except Base64Error:
        return None
    if not isinstance(doc, list):
        return None
    defaults: dict[str, Any] = {}
    for item in doc:
        if not isinstance(item, dict):
            return None
        fid, label, kind = item.get("id"), item.get("label"), item.get("type")
        if not isinstance(fid, str) or not isinstance(label, str) or kind not in _CONFIG_TYPES:
            return None
        if kind == "static-text":
            continue
        if kind == "dropdown":
            choices = item.get("choices")
            if not isinstance(choices, list) or not choices:
                return None
            if not all(isinstance(c, dict) and "id" in c and "label" in c for c in choices):
                return None
            defaults[fid] = item.get("default", choices[0]["id"])
        elif kind == "number":
            if not is_number(item.get("min")) or not is_number(item.get("max")):
                return None
            defaults[fid] = item.get("default", item["min"])
        elif kind == "checkbox":
            defaults[fid] = bool(item.get("default", False))
        else:
            defaults[fid] = item.get("default", "")
    return defaults
