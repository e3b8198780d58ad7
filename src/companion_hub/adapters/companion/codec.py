"""The Satellite protocol's line format, without I/O.

Used by both sides: the adapter (a Satellite client) and the simulator (a fake
Companion, the server side). Companion writes
``CMD [OK|ERROR] [DEVICEID="id"] KEY=value ... \\n`` with strings in double quotes
and *no escaping*, booleans as 1/0 and bare numbers, and every line ends with a space
before the newline. It parses with backslash escapes, toggling quotes, and splits each
token at its first ``=``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from collections.abc import Collection, Iterable
from typing import Any

from ...core.errors import CompanionHubError

Params = dict[str, "str | bool"]

# Companion closes a connection whose unterminated line exceeds this (since 5.0.0).
MAX_LINE_CHARS = 2 * 1024 * 1024


class LineTooLong(CompanionHubError):
    """The peer sent more than MAX_LINE_CHARS without a newline."""


class Base64Error(CompanionHubError, ValueError):
    """A base64 field that does not decode."""


def parse_line(line: str) -> tuple[str, Params]:
    """Split one received line (without its ``\\n``) into (COMMAND, params).

    Exactly Companion's ``parseLineParameters``: the first ``\\r`` is dropped, the
    command word is upper-cased, a bare token is the flag ``True``, ``\\`` escapes the
    next character, quotes toggle and are dropped, the last repeated key wins.
    """
    line = line.replace("\r", "", 1)
    head, _, body = line.partition(" ")
    tokens: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == "\\":
            if i + 1 < n:
                buf.append(body[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            tokens.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    tokens.append("".join(buf))
    params: Params = {}
    for tok in tokens:
        if not tok:
            continue
        key, eq, val = tok.partition("=")
        if not eq:
            params[tok] = True
        elif key and key not in _FORBIDDEN_KEYS:
            params[key] = val
    return head.upper(), params


_FORBIDDEN_KEYS = frozenset({"__proto__", "constructor", "prototype"})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)  # like JavaScript
    return f'"{value}"'


def format_line(
    cmd: str,
    status: str | None = None,
    device_id: str | None = None,
    args: Iterable[tuple[str, Any]] = (),
) -> str:
    """A line as Companion writes it, including the trailing ``" \\n"``.

    String values are quoted and not escaped: callers keep ``"``, ``\\`` and newlines
    out of them (free text goes in base64).
    """
    parts = [cmd]
    if status:
        parts.append(status)
    if device_id is not None:
        parts.append(f'DEVICEID="{device_id}"')
    parts.extend(f"{key}={_text(value)}" for key, value in args)
    parts.append("\n")
    return " ".join(parts)


# --- value encodings -------------------------------------------------------------------
#
# Flags are read the way Companion reads them: ``is_falsey`` ("pressed unless falsey")
# and ``is_truthy`` ("only if truthy") disagree on values such as ``no`` or ``0.5``.
# Free text and JSON travel as base64 of UTF-8.


def is_falsey(value: str | bool | None) -> bool:
    if value is None or value is False:
        return True
    if value is True:
        return False
    return value in ("", "0") or value.lower() == "false"


def is_truthy(value: str | bool | None) -> bool:
    if value is True:
        return True
    if value is None or value is False:
        return False
    if value.lower() in ("true", "yes"):
        return True
    try:
        return float(value) >= 1 and value.strip() == value and value != ""
    except ValueError:
        return False


def b64_text(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def b64_decode_text(value: str | bool) -> str:
    """Decode a base64 UTF-8 field (padding optional, as Node accepts)."""
    if value is True:
        raise Base64Error("missing value")
    if value is False:
        return ""
    raw = value.strip()
    raw += "=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII text
        raise Base64Error(f"invalid base64 text: {exc}") from None


def b64_decode_lenient(value: str) -> str:
    """Decode base64 the way Companion (Node's ``Buffer.from(x, 'base64')``) does: never fails.

    Characters outside the alphabet are skipped, padding is optional, a dangling
    final character is dropped, invalid UTF-8 becomes U+FFFD. The server side's
    reading; a client uses the strict :func:`b64_decode_text`.
    """
    chars = "".join(c for c in value if c.isalnum() or c in "+/-_")
    chars = chars.replace("-", "+").replace("_", "/")
    if len(chars) % 4 == 1:
        chars = chars[:-1]
    chars += "=" * (-len(chars) % 4)
    try:
        return base64.b64decode(chars).decode("utf-8", "replace")
    except binascii.Error:  # pragma: no cover - the alphabet is already filtered
        return ""


def b64_json(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode("ascii")


def b64_decode_json(value: str | bool) -> Any:
    text = b64_decode_text(value)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Base64Error(f"invalid JSON in base64 field: {exc}") from None


# --- numbers, locations and versions -----------------------------------------------------
#
# Everything below parses a field Companion (or anything else on the port) wrote, so it
# must never raise and never let a hostile value through: ``int(float(x))`` raises
# OverflowError on ``inf``/``1e999``, ``int`` accepts ``" 5 "``, ``"5_0"`` and Unicode
# digits, and a 300-digit page number would become a state key. Only plain ASCII
# decimals are accepted, with a bounded number of digits (so conversion cost is
# bounded too), and only inside the range the caller asks for.

_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]{1,18}(?:\.[0-9]{0,18})?")
_LOCATION_TEXT = re.compile(r"([0-9]{1,9})/([0-9]{1,9})/([0-9]{1,9})")
_VERSION_PART = re.compile(r"[0-9]{1,9}")
_WORD = re.compile(r"[a-z]{1,16}")
_NUMBER_WORDS = frozenset({"inf", "infinity", "nan"})

# Companion's font sizes are "auto" or a point size (its menu offers 7 to 44).
FONT_SIZE_RANGE = (1, 1000)


def parse_int(value: str | bool | None, lo: int, hi: int) -> int | None:
    """A decimal integer in ``lo..hi`` (inclusive), or None for anything else.

    Accepts what Companion writes for an integer (``5``, ``-1``; a sign and up to 18
    ASCII digits) and rejects everything else: a bare flag (``True``), fractions,
    exponents, ``inf``/``nan``, whitespace, out-of-range values.
    """
    if not isinstance(value, str) or _INT_TEXT.fullmatch(value) is None:
        return None
    n = int(value)
    return n if lo <= n <= hi else None


def parse_decimal(value: str | bool | None, lo: int, hi: int) -> int | None:
    """Like :func:`parse_int`, but a plain decimal fraction (``14.0``, ``50.5``) is
    accepted too and truncated toward zero.

    Companion writes numbers with JavaScript's ``String(n)``, so a computed font size
    or brightness can arrive as a fraction; ``1e+21``, ``Infinity`` and ``NaN`` (what
    JavaScript writes for the non-finite and the huge) are rejected.
    """
    if not isinstance(value, str) or _DECIMAL_TEXT.fullmatch(value) is None:
        return None
    n = int(value.partition(".")[0])
    return n if lo <= n <= hi else None


def parse_font_size(value: str | bool | None) -> int | str | None:
    """``FONT_SIZE``: a size in :data:`FONT_SIZE_RANGE`, a short lower-case word such
    as ``auto`` (kept as is), or None when the field is unusable and must be dropped."""
    n = parse_decimal(value, *FONT_SIZE_RANGE)
    if n is not None:
        return n
    if isinstance(value, str) and _WORD.fullmatch(value) and value not in _NUMBER_WORDS:
        return value
    return None


def parse_location(
    value: str | bool | None, pages: Collection[int], rows: int, columns: int
) -> tuple[int, int, int] | None:
    """``page/row/column`` inside the configured grid, or None.

    The page must be one of ``pages``, and ``0 <= row < rows``, ``0 <= column <
    columns``: a location outside the grid would become a state key the hub never
    configured.
    """
    if not isinstance(value, str):
        return None
    m = _LOCATION_TEXT.fullmatch(value)
    if m is None:
        return None
    page, row, column = int(m[1]), int(m[2]), int(m[3])
    if page not in pages or not (0 <= row < rows and 0 <= column < columns):
        return None
    return page, row, column


def parse_version(text: str) -> tuple[int, int, int]:
    """A version such as ``ApiVersion`` as ``(major, minor, patch)``, for comparisons.

    ``"1.14.0"`` → ``(1, 14, 0)``. A pre-release or build suffix (``-beta``,
    ``+9012-stable``) is ignored; the numbers are read up to the first part that is not
    a plain decimal of at most 9 digits, and missing parts count as 0, so any text gives
    a small tuple (``"abc"`` → ``(0, 0, 0)``, ``"1.x"`` → ``(1, 0, 0)``).
    """
    core = text.split("+", 1)[0].split("-", 1)[0]
    parts: list[int] = []
    for part in core.split(".")[:3]:
        if _VERSION_PART.fullmatch(part) is None:
            break
        parts.append(int(part))
    parts.extend([0] * (3 - len(parts)))
    return parts[0], parts[1], parts[2]


# --- framing -------------------------------------------------------------------------


class LineBuffer:
    """Bytes (or text frames) in, complete lines out; bounded.

    A UTF-8 character split across chunks is handled. A line longer than
    ``max_chars`` is dropped and sets ``overflowed`` (:meth:`check` raises
    :class:`LineTooLong` for it), whether it is still unterminated or its newline came
    in the same chunk as its tail: how the bytes happen to be split into reads must
    not decide whether an over-long line counts. The complete lines of a chunk that
    are within the limit still count (as Companion does).
    """

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self.max_chars = max_chars
        self.overflowed = False

    def feed(self, data: bytes | str) -> list[str]:
        text = data if isinstance(data, str) else self._decoder.decode(data)
        if not text:
            return []
        text = self._partial + text
        *lines, self._partial = text.split("\n")
        limit = self.max_chars
        if len(self._partial) > limit:
            self._partial = ""
            self.overflowed = True
        if lines and max(map(len, lines)) > limit:
            lines = [line for line in lines if len(line) <= limit]
            self.overflowed = True
        return lines

    def check(self) -> None:
        """Raise :class:`LineTooLong` (once) if the last feed overflowed."""
        if self.overflowed:
            self.overflowed = False
            raise LineTooLong(f"more than {self.max_chars} characters without a newline")

    @property
    def pending(self) -> int:
        return len(self._partial)
