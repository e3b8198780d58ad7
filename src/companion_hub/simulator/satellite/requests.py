"""How Companion reads what a Satellite client sends (the server side).

Pure functions over parsed parameters (the shared codec's ``Params``): Companion's rule
for each field (what counts as missing, as a number, as a bitmap size, ...) and, per
command, its validation order and error texts. A failed check gives a
:class:`Refusal`, answered with ``<CMD> ERROR ... MESSAGE="<text>"``. The checks that
need live state (does the device exist here, is its id registered on another
connection) are made by :mod:`.commands`, in their place in the order.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from companion_hub.adapters.companion.codec import (
    Base64Error,
    Params,
    b64_decode_json,
    b64_decode_lenient,
    is_falsey,
    is_truthy,
)

from ..model import Location, RenderStyle, js_number
from .documents import (
    ID_PATTERN,
    loose_preset,
    parse_config_fields,
    parse_manifest,
    parse_variables,
)
from .surfaces import Control, Device

Version = tuple[int, int, int]

_LOCATION = re.compile(r"^\d+/\d+/\d+$")  # ADD-SUB: digits only
_KEY_INDEX = re.compile(r"^\+?\d+$")
_KEY_ROW_COLUMN = re.compile(r"^\+?(\d+)/\+?(\d+)$")
_RESERVED_PREFIXES = ("emulator:", "group:")


@dataclass(frozen=True)
class Refusal:
    """A command Companion refuses, with its error text (and the device, once known)."""

    message: str
    device_id: str | None = None


# --- single fields ---------------------------------------------------------------------


def present(params: Params, key: str) -> str | None:
    """A required string parameter: None when absent, empty or a bare flag."""
    value = params.get(key)
    if isinstance(value, str) and value != "":
        return value
    return None


def nonempty(params: Params, key: str) -> str | bool | None:
    """A required value that may be a bare flag (``PRESSED``, ``DIRECTION``)."""
    value = params.get(key)
    if value is None or value == "" or value is False:
        return None
    return value


def bitmap_size(value: str | bool | None) -> int | None:
    """``BITMAPS``/``BITMAP``: falsey → none, number ≥ 5 → that size, else 72 px."""
    if is_falsey(value):
        return None
    if isinstance(value, str):
        n = js_number(value)
        if n is not None and n >= 5:
            return int(n)
    return 72


def colors(value: str | bool | None) -> str | None:
    """``COLORS``: falsey → none, ``hex``/``rgb`` as given, anything else ``hex``."""
    if is_falsey(value):
        return None
    return value if value in ("hex", "rgb") else "hex"


def bitmap_format(params: Params, api: Version) -> str:
    """``BITMAP_FORMAT`` (API 1.12): ``png`` or ``webp``, anything else ``rgb``."""
    value = params.get("BITMAP_FORMAT")
    if api >= (1, 12, 0) and value in ("png", "webp"):
        return str(value)
    return "rgb"


def flag_style(params: Params, bitmap_key: str, image_format: str) -> RenderStyle:
    """The style of a grid device or a subscription without ``STYLE``: from
    ``bitmap_key`` (``BITMAPS``/``BITMAP``), ``COLORS``, ``TEXT`` and ``TEXT_STYLE``."""
    size = bitmap_size(params.get(bitmap_key))
    return RenderStyle(
        bitmap=(size, size) if size else None,
        colors=colors(params.get("COLORS")),
        text=is_truthy(params.get("TEXT")),
        text_style=is_truthy(params.get("TEXT_STYLE")),
        bitmap_format=image_format,
    )


def grid_number(value: str | bool, maximum: int) -> int | None:
    """``KEYS_TOTAL``/``KEYS_PER_ROW``: a number in ``1..maximum``, else None."""
    if not isinstance(value, str):
        return None
    n = js_number(value)
    if n is None or value.strip() == "" or not 1 <= n <= maximum:
        return None
    return int(n)


def key_index(key: str | bool, columns: int, rows: int) -> int | None:
    """A grid ``KEY``: an index or ``row/column`` (optional ``+`` signs) inside the grid."""
    if not isinstance(key, str):
        return None
    if _KEY_INDEX.match(key):
        index = int(key)
        return index if index < columns * rows else None
    m = _KEY_ROW_COLUMN.match(key)
    if m:
        row, col = int(m.group(1)), int(m.group(2))
        if row < rows and col < columns:
            return row * columns + col
    return None


def rotation_delta(direction: str | bool, api: Version) -> float:
    """Signed steps for a ``DIRECTION`` value: a signed amount since API 1.14 (``0``
    is one step left), before that left or right by string comparison with ``"1"``."""
    text = "1" if direction is True else str(direction)
    if api >= (1, 14, 0):
        n = js_number(text)
        if n is None:
            return 1.0 if text >= "1" else -1.0
        return -1.0 if n == 0 else n
    return 1.0 if text >= "1" else -1.0


def pressed(params: Params) -> bool:
    """``PRESSED``: a press unless falsey (so ``PRESSED=no`` is a press)."""
    return not is_falsey(params.get("PRESSED"))


# --- ADD-DEVICE --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    product_name: str
    base_surface_id: str  # SERIAL, else DEVICEID (before any -devN suffix)


@dataclass(frozen=True)
class DeviceDeclaration:
    """Everything ADD-DEVICE declares besides the identity."""

    columns: int
    rows: int
    keys_total: int  # grid mode
    style: RenderStyle  # grid mode
    controls: dict[str, Control] | None  # manifest mode
    inputs: list[str]
    outputs: list[str]
    config_defaults: dict[str, Any] | None
    serial_is_unique: bool
    can_change_page: bool
    pincode_lock: str | None
    brightness_slider: bool


def device_identity(params: Params, api: Version) -> DeviceIdentity | Refusal:
    """The first ADD-DEVICE checks: ``DEVICEID``, ``PRODUCT_NAME``, reserved ids."""
    device_id = present(params, "DEVICEID")
    if device_id is None:
        return Refusal("Missing DEVICEID")
    product = present(params, "PRODUCT_NAME")
    if product is None:
        return Refusal("Missing PRODUCT_NAME", device_id)
    serial = present(params, "SERIAL") if api >= (1, 10, 0) else None
    base_id = serial or device_id
    if base_id.startswith(_RESERVED_PREFIXES):
        return Refusal("Reserved SERIAL" if serial else "Reserved DEVICEID", device_id)
    return DeviceIdentity(device_id, product, base_id)


def device_declaration(params: Params, api: Version, device_id: str) -> DeviceDeclaration | Refusal:
    """The remaining ADD-DEVICE checks, in order: the layout (manifest or grid),
    ``VARIABLES``, ``CONFIG_FIELDS``; then the optional flags."""
    image_format = bitmap_format(params, api)
    controls: dict[str, Control] | None = None
    keys_total = 0
    style = RenderStyle()
    if api >= (1, 9, 0) and "LAYOUT_MANIFEST" in params:
        controls = parse_manifest(params["LAYOUT_MANIFEST"], image_format)
        if controls is None:
            return Refusal("Invalid LAYOUT_MANIFEST", device_id)
        columns = max((c.column for c in controls.values()), default=-1) + 1
        rows = max((c.row for c in controls.values()), default=-1) + 1
    else:
        total = grid_number(params.get("KEYS_TOTAL", "32"), 2000)
        if total is None:
            return Refusal("Invalid KEYS_TOTAL", device_id)
        per_row = grid_number(params.get("KEYS_PER_ROW", "8"), 1000)
        if per_row is None:
            return Refusal("Invalid KEYS_PER_ROW", device_id)
        keys_total, columns = total, per_row
        rows = -(-total // per_row)
        style = flag_style(params, "BITMAPS", image_format)
    inputs: list[str] = []
    outputs: list[str] = []
    if api >= (1, 7, 0) and "VARIABLES" in params:
        variables = parse_variables(params["VARIABLES"])
        if variables is None:
            return Refusal("Invalid VARIABLES", device_id)
        inputs, outputs = variables
    config_defaults: dict[str, Any] | None = None
    if api >= (1, 10, 0) and "CONFIG_FIELDS" in params:
        config_defaults = parse_config_fields(params["CONFIG_FIELDS"])
        if config_defaults is None:
            return Refusal("Invalid CONFIG_FIELDS", device_id)
    unique = True
    if api >= (1, 10, 0) and "SERIAL_IS_UNIQUE" in params:
        unique = is_truthy(params["SERIAL_IS_UNIQUE"])
    pin = params.get("PINCODE_LOCK") if api >= (1, 8, 0) else None
    can_change = params.get("CAN_CHANGE_PAGE") if api >= (1, 10, 0) else None
    return DeviceDeclaration(
        columns=columns,
        rows=rows,
        keys_total=keys_total,
        style=style,
        controls=controls,
        inputs=inputs,
        outputs=outputs,
        config_defaults=config_defaults,
        serial_is_unique=unique,
        can_change_page=isinstance(can_change, str) and can_change != "",
        pincode_lock=pin if pin in ("FULL", "PARTIAL") else None,
        brightness_slider="BRIGHTNESS" not in params or is_truthy(params.get("BRIGHTNESS")),
    )


# --- device commands ---------------------------------------------------------------------


def key_target(params: Params, device: Device, second: str) -> str | Refusal:
    """KEY-PRESS/KEY-ROTATE: the control (``"5"`` or a control id) after checking
    ``KEY``/``CONTROLID`` and ``second`` (``PRESSED``/``DIRECTION``) in Companion's order."""
    device_id = device.device_id
    if device.controls is not None:
        cid = present(params, "CONTROLID")
        if cid is None:
            return Refusal("Missing CONTROLID", device_id)
        if nonempty(params, second) is None:
            return Refusal(f"Missing {second}", device_id)
        if cid not in device.controls:
            return Refusal("Unknown CONTROLID", device_id)
        return cid
    key = nonempty(params, "KEY")
    if key is None:
        return Refusal("Missing KEY", device_id)
    index = key_index(key, device.cols, device.rows)
    if index is None:
        return Refusal("Invalid KEY", device_id)
    if nonempty(params, second) is None:
        return Refusal(f"Missing {second}", device_id)
    return str(index)


def pincode_refusal(params: Params, device_id: str) -> Refusal | None:
    """PINCODE-KEY: ``KEY`` must be a digit 0..9."""
    key = present(params, "KEY")
    if key is None:
        return Refusal("Missing KEY", device_id)
    n = js_number(key)
    if n is None or not n.is_integer() or not 0 <= n <= 9:
        return Refusal("Invalid KEY", device_id)
    return None


def variable_value(params: Params, device_id: str) -> tuple[str, str] | Refusal:
    """SET-VARIABLE-VALUE: (``VARIABLE``, decoded ``VALUE``)."""
    variable = present(params, "VARIABLE")
    if variable is None:
        return Refusal("Missing VARIABLE", device_id)
    raw = params.get("VALUE")
    if not isinstance(raw, str):
        return Refusal("Missing VALUE", device_id)
    return variable, b64_decode_lenient(raw)


# --- ADD-SUB -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionRequest:
    sub_id: str
    location: Location
    style: RenderStyle


def subscription_request(
    params: Params, api: Version, in_use: Container[str]
) -> SubscriptionRequest | Refusal:
    """ADD-SUB's checks after the setting, in order: ``SUBID`` (missing, invalid, in
    use), ``LOCATION`` (missing, invalid), ``STYLE``."""
    sub_id = present(params, "SUBID")
    if sub_id is None:
        return Refusal("Missing SUBID")
    if not ID_PATTERN.match(sub_id):
        return Refusal("Invalid SUBID")
    if sub_id in in_use:
        return Refusal("SUBID already in use")
    location = present(params, "LOCATION")
    if location is None:
        return Refusal("Missing LOCATION")
    if not _LOCATION.match(location):
        return Refusal("Invalid LOCATION")
    page, row, col = (int(p) for p in location.split("/"))
    image_format = bitmap_format(params, api)
    if "STYLE" in params:
        try:
            preset = b64_decode_json(params["STYLE"])
        except Base64Error:
            return Refusal("Invalid STYLE")
        style = loose_preset(preset, image_format)
    else:
        style = flag_style(params, "BITMAP", image_format)
    return SubscriptionRequest(sub_id, (page, row, col), style)
