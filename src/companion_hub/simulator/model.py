"""The simulated Companion's values: variables, colours, templates, buttons, styles.

No I/O here. The live state (:mod:`.state`) is made of these, and the Satellite
sessions turn changes into messages; this module knows how a value is written, how a
button looks, and how a style turns a look into ``KEY-STATE`` / ``SUB-STATE``
arguments (in the order Companion's ``SatelliteRenderUtil.ts`` writes them).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

from companion_hub.adapters.companion.codec import b64_text

# --- values --------------------------------------------------------------------------


class _Undefined:
    """JavaScript ``undefined``: a custom variable that exists but has no value."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()


def js_number_text(value: float) -> str:
    """A number as JavaScript's ``String(n)`` writes it (good enough for our values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def value_text(value: Any) -> str | None:
    """The text form Companion uses for a variable value, or None for undefined.

    Strings as is, numbers in JavaScript form, booleans ``true``/``false``,
    ``None`` (JSON null) as ``null``, objects and arrays as compact JSON.
    """
    if value is UNDEFINED:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number_text(value)
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_JS_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def js_number(text: str) -> float | None:
    """``Number(text)`` for the decimal forms we care about; None for NaN."""
    if text.strip() == "":
        return 0.0
    if not _JS_NUMBER.match(text):
        return None
    return float(text)


# --- colours -------------------------------------------------------------------------

_NAMED: Final[dict[str, int]] = {
    "black": 0x000000,
    "white": 0xFFFFFF,
    "red": 0xFF0000,
    "lime": 0x00FF00,
    "green": 0x008000,
    "blue": 0x0000FF,
    "yellow": 0xFFFF00,
    "orange": 0xFFA500,
    "purple": 0x800080,
    "grey": 0x808080,
    "gray": 0x808080,
    "cyan": 0x00FFFF,
    "magenta": 0xFF00FF,
}
_RGB_FN = re.compile(r"^rgba?\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*(,\s*[\d.]+\s*)?\)$")


def parse_color(value: Any) -> int | None:
    """A colour as 0xRRGGBB from ``#rrggbb``, ``#rgb``, ``rgb(r,g,b)``, a CSS name or an int.

    None if it is not a colour we understand (callers ignore it, like Companion).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 0xFFFFFF else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in _NAMED:
        return _NAMED[text]
    if text.startswith("#"):
        digits = text[1:]
        if len(digits) == 3 and all(c in "0123456789abcdef" for c in digits):
            digits = "".join(c * 2 for c in digits)
        if len(digits) in (6, 8) and all(c in "0123456789abcdef" for c in digits):
            return int(digits[:6], 16)
        return None
    m = _RGB_FN.match(text)
    if m:
        r, g, b = (int(m.group(i)) for i in (1, 2, 3))
        if max(r, g, b) <= 255:
            return (r << 16) | (g << 8) | b
    return None


def color_hex(color: int) -> str:
    return f"#{color:06x}"


def color_css(color: int) -> str:
    """Companion's ``rgb`` colour mode: CSS text with the spaces removed."""
    return f"rgba({(color >> 16) & 255},{(color >> 8) & 255},{color & 255},1)"


# --- templates -----------------------------------------------------------------------

_REF = re.compile(r"\$\(([^:$()\s]+):([^)$\s]+)\)")


def template_refs(template: str) -> frozenset[str]:
    """The ``label:name`` variables a text template references."""
    return frozenset(f"{m.group(1)}:{m.group(2)}" for m in _REF.finditer(template))


def render_template(template: str, lookup: Any) -> str:
    """Replace each ``$(label:name)`` with its text; unknown variables give ``$NA``.

    ``lookup(label, name)`` returns the value or UNDEFINED.
    """

    def sub(m: re.Match[str]) -> str:
        text = value_text(lookup(m.group(1), m.group(2)))
        return "$NA" if text is None else text

    return _REF.sub(sub, template)


# --- buttons -------------------------------------------------------------------------

BUTTON_TYPES: Final = ("BUTTON", "PAGEUP", "PAGEDOWN", "PAGENUM")
_DURATION = r"\d{1,6}(?::\d{2}){0,2}"
_BEHAVIOUR = re.compile(
    r"^(none|latch|counter:[\w.-]+|set:[\w.-]+=.*|swap:[\w.-]+,[\w.-]+|page:([+-]1|\d+)"
    r"|timer-(start|stop):[\w.-]+|timer-reset:[\w.-]+=" + _DURATION + r")$",
    re.S,
)


def check_behaviour(behaviour: str) -> str:
    """Validate a press behaviour string (see docs/simulator.md); returns it."""
    if not _BEHAVIOUR.match(behaviour):
        raise ValueError(
            f"unknown behaviour {behaviour!r}: expected none, latch, counter:<var>, "
            "set:<var>=<value>, swap:<var>,<var>, timer-start:<var>, timer-stop:<var>, "
            "timer-reset:<var>=<mm:ss> or page:<n|+1|-1>"
        )
    return behaviour


# --- countdown timers ----------------------------------------------------------------

_DURATION_TEXT = re.compile(r"^\s*(\d{1,6})(?::(\d{1,2}))?(?::(\d{1,2}))?\s*$")


def parse_duration(value: Any) -> int | None:
    """Seconds from ``ss``, ``mm:ss`` or ``h:mm:ss`` text or a number; None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if math.isfinite(value) and value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _DURATION_TEXT.match(value)
    if m is None:
        return None
    parts = [int(p) for p in m.groups() if p is not None]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def format_duration(seconds: int) -> str:
    """``mm:ss`` (``h:mm:ss`` from an hour on), as a stage timer shows it."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


# --- feedbacks -----------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    """A colour rule: while variable ``label:name``'s text is ``equals``, the button
    shows ``bgcolor``/``color`` (None: its own). A button's first matching rule wins."""

    variable: str  # "label:name", e.g. "custom:program"
    equals: str  # compared with the variable's text form (value_text)
    bgcolor: int | None = None
    color: int | None = None

    def matches(self, lookup: Any) -> bool:
        """``lookup(label, name)`` returns the value or UNDEFINED."""
        label, _, name = self.variable.partition(":")
        return value_text(lookup(label, name)) == self.equals


@dataclass(eq=False)
class Button:
    """One control at a location. ``text`` is the template; ``rendered_text`` its result."""

    text: str = ""
    bgcolor: int = 0x000000
    color: int = 0xFFFFFF
    font_size: int | str = "auto"
    type: str = "BUTTON"
    behaviour: str = "none"
    rendered_text: str = ""
    latched: bool = False
    held_by: set[str] = field(default_factory=set)
    refs: frozenset[str] = frozenset()  # the variables its text and feedbacks read
    feedbacks: tuple[Feedback, ...] = ()
    active_feedback: Feedback | None = None  # the first matching one, or None

    def update_refs(self) -> None:
        """Recompute :attr:`refs` after the text or the feedbacks changed."""
        self.refs = template_refs(self.text) | frozenset(f.variable for f in self.feedbacks)

    def apply_feedbacks(self, lookup: Any) -> None:
        """Pick the first feedback whose condition holds (``lookup(label, name)``)."""
        self.active_feedback = next((f for f in self.feedbacks if f.matches(lookup)), None)

    @property
    def pressed(self) -> bool:
        """The visual pushed state: held down, or latched for a latch button."""
        if self.behaviour == "latch":
            return self.latched
        return bool(self.held_by)

    @property
    def steps(self) -> int:
        """Number of steps (a latch button has two: off and on); 0 for page buttons."""
        if self.type != "BUTTON":
            return 0
        return 2 if self.behaviour == "latch" else 1

    def look(self) -> Look:
        """What it shows: its colours, or those of the active feedback."""
        fb = self.active_feedback
        return Look(
            pressed=self.pressed,
            type=self.type,
            bgcolor=fb.bgcolor if fb is not None and fb.bgcolor is not None else self.bgcolor,
            color=fb.color if fb is not None and fb.color is not None else self.color,
            text=self.rendered_text,
            font_size=self.font_size,
        )


@dataclass(frozen=True)
class Look:
    """What a render shows. ``bgcolor``/``color`` None means "no draw style" (empty location)."""

    pressed: bool = False
    type: str = "BUTTON"
    bgcolor: int | None = None
    color: int | None = None
    text: str = ""
    font_size: int | str = "auto"


# --- render styles -------------------------------------------------------------------


@dataclass(frozen=True)
class RenderStyle:
    """What a device control or subscription asked to receive (a style preset)."""

    bitmap: tuple[int, int] | None = None
    colors: str | None = None  # "hex" | "rgb"
    text: bool = False
    text_style: bool = False
    bitmap_format: str = "rgb"  # rgb | png | webp (webp is served as png, see docs)


def style_args(look: Look, style: RenderStyle) -> list[tuple[str, Any]]:
    """``PRESSED``, ``TYPE`` and the style-dependent arguments, in Companion's order."""
    args: list[tuple[str, Any]] = [("PRESSED", look.pressed), ("TYPE", look.type)]
    if style.bitmap is not None:
        w, h = style.bitmap
        bg = look.bgcolor if look.bgcolor is not None else 0
        if style.bitmap_format == "rgb":
            if w > 0 and h > 0:
                args.append(("BITMAP", rgb_bitmap_b64(w, h, bg)))
        else:
            args.append(("BITMAP", png_data_url(w, h, bg) if w > 0 and h > 0 else ""))
    if style.colors:
        if style.colors == "rgb":
            bg_text = color_css(look.bgcolor) if look.bgcolor is not None else "rgb(0,0,0)"
            fg_text = color_css(look.color) if look.color is not None else "rgb(0,0,0)"
        else:
            bg_text = color_hex(look.bgcolor or 0)
            fg_text = color_hex(look.color or 0)
        args.append(("COLOR", bg_text))
        args.append(("TEXTCOLOR", fg_text))
    if style.text:
        args.append(("TEXT", b64_text(look.text)))
    if style.text_style:
        args.append(("FONT_SIZE", look.font_size))
    return args


@functools.lru_cache(maxsize=256)
def rgb_bitmap_b64(w: int, h: int, color: int) -> str:
    """A solid w x h image as base64 of raw RGB bytes (row-major)."""
    pixel = bytes(((color >> 16) & 255, (color >> 8) & 255, color & 255))
    return base64.b64encode(pixel * (w * h)).decode("ascii")


@functools.lru_cache(maxsize=256)
def png_data_url(w: int, h: int, color: int) -> str:
    """A solid-colour w x h PNG as a ``data:image/png;base64,`` URL."""
    return "data:image/png;base64," + base64.b64encode(solid_png(w, h, color)).decode("ascii")


def solid_png(w: int, h: int, color: int) -> bytes:
    """Encode a solid-colour 8-bit RGB PNG (no dependencies: zlib + struct)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    pixel = bytes(((color >> 16) & 255, (color >> 8) & 255, color & 255))
    raw = (b"\x00" + pixel * w) * h  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


# --- connections ---------------------------------------------------------------------

# Companion's InstanceStatus mapping from a module's level to (category, shown level).
_STATUS_LEVELS: Final[dict[str, tuple[str | None, str]]] = {
    "ok": ("good", "ok"),
    "connecting": ("error", "Connecting"),
    "disconnected": ("error", "Disconnected"),
    "connection_failure": ("error", "Connection Failure"),
    "crashed": ("error", "Crashed"),
    "unknown_error": ("error", "ERROR"),
    "bad_config": ("warning", "Bad Configuration"),
    "unknown_warning": ("warning", "Warning"),
    "initializing": ("warning", "Initializing"),
    "authentication_failure": ("warning", "Authentication Failure"),
}


def module_status(level: str | None, message: str | None = None) -> dict[str, str | None]:
    """The status object Companion stores for a module-reported level (``Instance/Status.ts``)."""
    if level is None:
        return {"category": None, "level": None, "message": message}
    category, shown = _STATUS_LEVELS.get(level, ("warning", level))
    return {"category": category, "level": shown, "message": message}


@dataclass
class Connection:
    """A module connection (``GET /api/connections``)."""

    id: str
    label: str
    module_id: str
    enabled: bool = True
    status: dict[str, str | None] | None = field(default_factory=lambda: module_status("ok"))

    def as_list_item(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "moduleId": self.module_id,
            "enabled": self.enabled,
            "status": self.status,
        }

    def as_status(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "enabled": self.enabled, "status": self.status}


# --- locations -----------------------------------------------------------------------

Location = tuple[int, int, int]  # page (1-based), row, column


def format_location(loc: Location) -> str:
    return f"{loc[0]}/{loc[1]}/{loc[2]}"
