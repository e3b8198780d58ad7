"""Keys and patterns on the client side (spec sections 3-4), sans I/O.

The SDK validates patterns before sending them, matches delta keys against its
subscriptions, and decides whether a read can be answered from the local mirror
(:func:`covers`). Patterns are kept as tuples of segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import BadRequest

Pattern = tuple[str, ...]

STAR = "*"
GLOBSTAR = "**"
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CLIENT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def is_valid_client_name(name: str) -> bool:
    """``[a-z0-9][a-z0-9_-]{0,62}`` (spec section 2)."""
    return _CLIENT_RE.fullmatch(name) is not None


def is_key(text: str) -> bool:
    """Is ``text`` a plain key (no wildcard segments)?"""
    return all(_SEGMENT_RE.fullmatch(s) for s in text.split("."))


def parse(text: str) -> Pattern:
    """Validate a pattern (a plain key is a pattern too); raises :class:`BadRequest`."""
    if not isinstance(text, str) or not text:
        raise BadRequest(f"invalid pattern {text!r}")
    segs = tuple(text.split("."))
    last = len(segs) - 1
    for i, s in enumerate(segs):
        if s == STAR or (s == GLOBSTAR and i == last):
            continue
        if s == GLOBSTAR:
            raise BadRequest(f"invalid pattern {text!r}: '**' is allowed only as the last segment")
        if _SEGMENT_RE.fullmatch(s) is None:
            raise BadRequest(
                f"invalid pattern {text!r}: segment {s!r} must be '*', a trailing '**' "
                "or 1-64 characters from [A-Za-z0-9_-]"
            )
    return segs


def match(pattern: Pattern, key: str) -> bool:
    """Does ``key`` match ``pattern``? (``*`` one segment, trailing ``**`` zero or more.)"""
    segs = key.split(".")
    if pattern and pattern[-1] == GLOBSTAR:
        head = pattern[:-1]
        if len(segs) < len(head):
            return False
        return all(p == STAR or p == s for p, s in zip(head, segs, strict=False))
    if len(segs) != len(pattern):
        return False
    return all(p == STAR or p == s for p, s in zip(pattern, segs, strict=True))


def match_any(patterns: Iterable[Pattern], key: str) -> bool:
    return any(match(p, key) for p in patterns)


def covers(outer: Pattern, inner: Pattern) -> bool:
    """Does every key matching ``inner`` also match ``outer``?

    >>> covers(("a", "**"), ("a", "*", "c"))
    True
    >>> covers(("a", "b", "**"), ("a", "**"))   # "a" itself is not under a.b
    False
    """
    i = 0
    while True:
        if i == len(outer):
            return i == len(inner)
        o = outer[i]
        if o == GLOBSTAR:
            return True
        if i == len(inner):
            return False
        n = inner[i]
        if n == GLOBSTAR:
            return False
        if o != STAR and o != n:
            return False
        i += 1
