"""ASN.1 BER (X.690) tag-length-value encoding, as far as Ember+ needs it.

Every BER element is a *tag* (a class: universal, application, context or private; a
constructed flag, set when the content is itself a series of elements; a number, on
one byte below 31, else base-128 on the following bytes), a *length* and the content.
Lengths are definite (one byte below 128, else ``0x80 | n`` and ``n`` big-endian
bytes) or, for constructed elements only, indefinite (``0x80``, the content ends with
the two zero bytes of an end-of-contents marker). This module decodes both and
encodes definite, minimal lengths.

The universal types used here: BOOLEAN (1), INTEGER (2, minimal two's complement),
OCTET STRING (4), NULL (5), REAL (9), UTF8String (12), RELATIVE-OID (13: base-128
sub-identifiers; Ember+ paths such as ``0.3.2.0.1``), SEQUENCE (16) and SET (17).

REAL follows the convention of the Ember+ reference libraries, which differs from
X.690: binary form, base 2, and the exponent is the power of two of the mantissa's
*leading* bit (the value is ``1.fraction * 2**exponent`` with the mantissa's bits as
the fraction), not ``mantissa * 2**exponent``. The special values (+/-infinity, NaN,
-0) and the decimal (ISO 6093) forms are decoded too.

Decoding is for hostile input: nesting depth, element count and every length are
bounded (:class:`Limits`), and anything malformed raises :class:`BerError` and nothing
else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum


class BerError(ValueError):
    """Malformed or out-of-bounds BER (the only exception decoding raises)."""


class TagClass(IntEnum):
    UNIVERSAL = 0
    APPLICATION = 1
    CONTEXT = 2
    PRIVATE = 3


@dataclass(frozen=True, slots=True)
class Tag:
    cls: TagClass
    number: int
    constructed: bool = False

    def __str__(self) -> str:
        kind = "C" if self.constructed else "P"
        return f"{self.cls.name}[{self.number}]{kind}"


def application(number: int) -> Tag:
    """``[APPLICATION n]``, constructed (as every application tag in Glow)."""
    return Tag(TagClass.APPLICATION, number, True)


def context(number: int) -> Tag:
    """``[n]``, constructed (Glow's explicit context tags)."""
    return Tag(TagClass.CONTEXT, number, True)


# universal tags
BOOLEAN = Tag(TagClass.UNIVERSAL, 1)
INTEGER = Tag(TagClass.UNIVERSAL, 2)
OCTET_STRING = Tag(TagClass.UNIVERSAL, 4)
NULL = Tag(TagClass.UNIVERSAL, 5)
REAL = Tag(TagClass.UNIVERSAL, 9)
UTF8_STRING = Tag(TagClass.UNIVERSAL, 12)
RELATIVE_OID = Tag(TagClass.UNIVERSAL, 13)
SEQUENCE = Tag(TagClass.UNIVERSAL, 16, True)
SET = Tag(TagClass.UNIVERSAL, 17, True)

MAX_TAG_NUMBER = (1 << 28) - 1
MAX_INTEGER_BYTES = 16
MAX_OID_COMPONENT = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what :func:`decode` accepts."""

    max_depth: int = 64
    max_elements: int = 500_000
    max_length: int = 16 * 1024 * 1024  # of the input and of any one element


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Tlv:
    """One element: primitive (``content``) or constructed (``children``)."""

    tag: Tag
    content: bytes = b""
    children: list[Tlv] = field(default_factory=list)

    def child(self, tag: Tag) -> Tlv | None:
        """The first child with ``tag``."""
        for c in self.children:
            if c.tag == tag:
                return c
        return None


def primitive(tag: Tag, content: bytes) -> Tlv:
    return Tlv(tag, content)


def constructed(tag: Tag, children: list[Tlv]) -> Tlv:
    return Tlv(Tag(tag.cls, tag.number, True), b"", children)


# --- encoding ---------------------------------------------------------------------


def encode_tag(tag: Tag) -> bytes:
    if not 0 <= tag.number <= MAX_TAG_NUMBER:
        raise BerError(f"tag number out of range: {tag.number}")
    first = (int(tag.cls) << 6) | (0x20 if tag.constructed else 0)
    if tag.number < 31:
        return bytes([first | tag.number])
    out = [tag.number & 0x7F]
    n = tag.number >> 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes([first | 0x1F, *reversed(out)])


def encode_length(n: int) -> bytes:
    if n < 0:
        raise BerError("negative length")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(body) > 4:
        raise BerError("length too large")
    return bytes([0x80 | len(body)]) + body


def encode(tlv: Tlv) -> bytes:
    """The element as BER with definite, minimal lengths."""
    content = b"".join(encode(c) for c in tlv.children) if tlv.tag.constructed else tlv.content
    return encode_tag(tlv.tag) + encode_length(len(content)) + content


# --- decoding ---------------------------------------------------------------------


class _Decoder:
    __slots__ = ("count", "data", "limits")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.limits = limits
        self.count = 0

    def tag(self, pos: int, end: int) -> tuple[Tag, int]:
        if pos >= end:
            raise BerError("truncated tag")
        b = self.data[pos]
        pos += 1
        cls = TagClass(b >> 6)
        cons = bool(b & 0x20)
        number = b & 0x1F
        if number == 0x1F:
            number = 0
            for i in range(5):
                if pos >= end:
                    raise BerError("truncated tag number")
                c = self.data[pos]
                pos += 1
                if i == 0 and c == 0x80:
                    raise BerError("tag number with leading zero")
                number = (number << 7) | (c & 0x7F)
                if not c & 0x80:
                    break
            else:
                raise BerError("tag number too long")
            if number > MAX_TAG_NUMBER:
                raise BerError("tag number too large")
        return Tag(cls, number, cons), pos

    def length(self, pos: int, end: int) -> tuple[int | None, int]:
        if pos >= end:
            raise BerError("truncated length")
        b = self.data[pos]
        pos += 1
        if b < 0x80:
            return b, pos
        if b == 0x80:
            return None, pos  # indefinite
        n = b & 0x7F
        if n > 4 or b == 0xFF:
            raise BerError("length field too long")
        if pos + n > end:
            raise BerError("truncated length")
        value = int.from_bytes(self.data[pos : pos + n], "big")
        if value > self.limits.max_length:
            raise BerError("element too long")
        return value, pos + n

    def element(self, pos: int, end: int, depth: int) -> tuple[Tlv, int]:
        if depth > self.limits.max_depth:
            raise BerError("nesting too deep")
        self.count += 1
        if self.count > self.limits.max_elements:
            raise BerError("too many elements")
        tag, pos = self.tag(pos, end)
        length, pos = self.length(pos, end)
        if length is None:
            if not tag.constructed:
                raise BerError("indefinite length on a primitive element")
            children: list[Tlv] = []
            while True:
                if pos + 2 > end:
                    raise BerError("missing end-of-contents")
                if self.data[pos] == 0 and self.data[pos + 1] == 0:
                    return Tlv(tag, b"", children), pos + 2
                child, pos = self.element(pos, end, depth + 1)
                children.append(child)
        stop = pos + length
        if stop > end:
            raise BerError("element longer than its container")
        if not tag.constructed:
            if tag.cls == TagClass.UNIVERSAL and tag.number == 0:
                raise BerError("unexpected end-of-contents")
            return Tlv(tag, self.data[pos:stop]), stop
        children = []
        while pos < stop:
            child, pos = self.element(pos, stop, depth + 1)
            children.append(child)
        return Tlv(tag, b"", children), stop


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Tlv:
    """Exactly one element filling ``data``."""
    elements = decode_all(data, limits)
    if len(elements) != 1:
        raise BerError(f"expected one element, got {len(elements)}")
    return elements[0]


def decode_all(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Tlv]:
    """Every top-level element in ``data`` (which must end on an element boundary)."""
    if len(data) > limits.max_length:
        raise BerError("input too long")
    dec = _Decoder(bytes(data), limits)
    out: list[Tlv] = []
    pos, end = 0, len(dec.data)
    try:
        while pos < end:
            el, pos = dec.element(pos, end, 1)
            out.append(el)
    except RecursionError as exc:  # pragma: no cover - max_depth keeps far below
        raise BerError("nesting too deep") from exc
    return out


# --- universal values -------------------------------------------------------------


def encode_integer(n: int) -> bytes:
    size = ((n if n >= 0 else -n - 1).bit_length() + 8) // 8
    return n.to_bytes(size, "big", signed=True)


def decode_integer(content: bytes) -> int:
    if not content:
        raise BerError("empty INTEGER")
    if len(content) > MAX_INTEGER_BYTES:
        raise BerError("INTEGER too long")
    return int.from_bytes(content, "big", signed=True)


def encode_boolean(value: bool) -> bytes:
    return b"\xff" if value else b"\x00"


def decode_boolean(content: bytes) -> bool:
    if len(content) != 1:
        raise BerError("BOOLEAN must be one byte")
    return content[0] != 0


def encode_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise BerError("text not encodable as UTF-8") from exc


def decode_utf8(content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BerError("invalid UTF-8") from exc


def encode_relative_oid(path: tuple[int, ...] | list[int]) -> bytes:
    out = bytearray()
    for component in path:
        if not 0 <= component <= MAX_OID_COMPONENT:
            raise BerError(f"RELATIVE-OID component out of range: {component}")
        chunk = [component & 0x7F]
        n = component >> 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def decode_relative_oid(content: bytes) -> tuple[int, ...]:
    out: list[int] = []
    n = 0
    fresh = True
    for b in content:
        if fresh and b == 0x80:
            raise BerError("RELATIVE-OID component with leading zero")
        n = (n << 7) | (b & 0x7F)
        if n > MAX_OID_COMPONENT:
            raise BerError("RELATIVE-OID component too large")
        if b & 0x80:
            fresh = False
        else:
            out.append(n)
            n = 0
            fresh = True
    if not fresh:
        raise BerError("truncated RELATIVE-OID")
    return tuple(out)


def encode_real(value: float) -> bytes:
    """The Ember+ form (see the module docstring); 0.0 and -0.0 both as empty content."""
    if value == 0:
        return b""
    if math.isnan(value):
        return b"\x42"
    if math.isinf(value):
        return b"\x40" if value > 0 else b"\x41"
    mantissa, exp = math.frexp(abs(value))  # value = mantissa * 2**exp, 0.5 <= mantissa < 1
    n = int(mantissa * (1 << 53))  # exact: a double has at most 53 significant bits
    while not n & 1:
        n >>= 1
    exponent = exp - 1  # the power of two of the leading bit
    exp_bytes = encode_integer(exponent)
    first = 0x80 | (0x40 if value < 0 else 0) | (len(exp_bytes) - 1)
    return bytes([first]) + exp_bytes + n.to_bytes((n.bit_length() + 7) // 8, "big")


def decode_real(content: bytes) -> float:
    if not content:
        return 0.0
    first = content[0]
    if first & 0x80:  # binary
        pos = 1
        exp_len = (first & 0x03) + 1
        if exp_len == 4:
            if len(content) < 2:
                raise BerError("truncated REAL exponent length")
            exp_len = content[1]
            pos = 2
            if not 1 <= exp_len <= 4:
                raise BerError("REAL exponent too long")
        if len(content) < pos + exp_len:
            raise BerError("truncated REAL exponent")
        exponent = int.from_bytes(content[pos : pos + exp_len], "big", signed=True)
        digits = content[pos + exp_len :]
        if len(digits) > MAX_INTEGER_BYTES:
            raise BerError("REAL mantissa too long")
        n = int.from_bytes(digits, "big")
        if n == 0:
            return -0.0 if first & 0x40 else 0.0
        try:
            result = math.ldexp(float(n), exponent - (n.bit_length() - 1))
        except OverflowError as exc:
            raise BerError("REAL out of range") from exc
        return -result if first & 0x40 else result
    if first & 0x40:  # special values
        if len(content) != 1:
            raise BerError("bad REAL special value")
        special = {0x40: math.inf, 0x41: -math.inf, 0x42: math.nan, 0x43: -0.0}
        if first not in special:
            raise BerError("unknown REAL special value")
        return special[first]
    # decimal (ISO 6093 NR1/NR2/NR3)
    if first & 0x3F not in (1, 2, 3) or len(content) > 64:
        raise BerError("bad decimal REAL")
    try:
        text = content[1:].decode("ascii").strip().replace(",", ".")
        return float(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BerError("bad decimal REAL") from exc


# --- convenience: typed universal elements ----------------------------------------


def integer(n: int) -> Tlv:
    return Tlv(INTEGER, encode_integer(n))


def boolean(value: bool) -> Tlv:
    return Tlv(BOOLEAN, encode_boolean(value))


def utf8(text: str) -> Tlv:
    return Tlv(UTF8_STRING, encode_utf8(text))


def real(value: float) -> Tlv:
    return Tlv(REAL, encode_real(value))


def relative_oid(path: tuple[int, ...] | list[int]) -> Tlv:
    return Tlv(RELATIVE_OID, encode_relative_oid(path))


def null() -> Tlv:
    return Tlv(NULL, b"")


def octets(data: bytes) -> Tlv:
    return Tlv(OCTET_STRING, bytes(data))


def expect(tlv: Tlv, tag: Tag) -> Tlv:
    """``tlv`` if it has ``tag``, else :class:`BerError`."""
    if tlv.tag != tag:
        raise BerError(f"expected {tag}, got {tlv.tag}")
    return tlv


def single(tlv: Tlv) -> Tlv:
    """The one child of an explicit (constructed) context tag."""
    if not tlv.tag.constructed or len(tlv.children) != 1:
        raise BerError(f"{tlv.tag} must hold exactly one element")
    return tlv.children[0]
