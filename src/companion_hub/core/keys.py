"""Keys, patterns and names (protocol sections 2-4).

A key is dot-separated segments of 1-64 characters from ``[A-Za-z0-9_-]``. Because
no key can contain a quote or a backslash, keys can be spliced into JSON text
without escaping; the protocol encoder relies on that.

A pattern is a key whose segments may also be ``*`` (exactly one segment) or,
as the last segment only, ``**`` (zero or more segments).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import ErrorCode, HubError
from .limits import MAX_SEGMENT_CHARS

_SEGMENT = rf"[A-Za-z0-9_-]{{1,{MAX_SEGMENT_CHARS}}}"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_CLIENT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SEGMENT_RE = re.compile(_SEGMENT)

Pattern = tuple[str, ...]
"""A parsed pattern: its segments, with ``*`` and ``**`` kept as such."""

STAR = "*"
GLOBSTAR = "**"


def is_valid_key(key: object, max_bytes: int = 256) -> bool:
    return isinstance(key, str) and len(key) <= max_bytes and _KEY_RE.fullmatch(key) is not None


def check_key(key: object, max_bytes: int = 256) -> str:
    """Return ``key`` if it is a valid key, else raise ``BAD_REQUEST``."""
    if is_valid_key(key, max_bytes):
        return key  # type: ignore[return-value]
    if isinstance(key, str) and len(key.encode()) > max_bytes:
        raise HubError(ErrorCode.BAD_REQUEST, f"key longer than {max_bytes} bytes")
    raise HubError(
        ErrorCode.BAD_REQUEST,
        f"invalid key {key!r}: dot-separated segments of 1-{MAX_SEGMENT_CHARS} "
        "characters from [A-Za-z0-9_-]",
    )


def is_valid_segment(name: object) -> bool:
    """Can ``name`` be one segment of a key (``[A-Za-z0-9_-]``, 1-64 characters)?"""
    return isinstance(name, str) and _SEGMENT_RE.fullmatch(name) is not None


def is_valid_client_name(name: object) -> bool:
    return isinstance(name, str) and _CLIENT_RE.fullmatch(name) is not None


def parse_pattern(text: object, max_bytes: int = 256) -> Pattern:
    """Parse and validate a subscription pattern, raising ``BAD_REQUEST`` if invalid."""
    if not isinstance(text, str) or not text:
        raise HubError(ErrorCode.BAD_REQUEST, f"invalid pattern {text!r}")
    if len(text) > max_bytes:
        raise HubError(ErrorCode.BAD_REQUEST, f"pattern longer than {max_bytes} bytes")
    segments = tuple(text.split("."))
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == STAR:
            continue
        if seg == GLOBSTAR:
            if i != last:
                raise HubError(
                    ErrorCode.BAD_REQUEST,
                    f"invalid pattern {text!r}: '**' is allowed only as the last segment",
                )
            continue
        if _SEGMENT_RE.fullmatch(seg) is None:
            raise HubError(
                ErrorCode.BAD_REQUEST,
                f"invalid pattern {text!r}: segment {seg!r} must be '*', a trailing '**' "
                f"or 1-{MAX_SEGMENT_CHARS} characters from [A-Za-z0-9_-]",
            )
    return segments


def pattern_text(pattern: Pattern) -> str:
    return ".".join(pattern)


def match(pattern: Pattern, key: str) -> bool:
    """Does ``key`` match ``pattern``? (Reference implementation; the index is faster.)"""
    segs = key.split(".")
    n = len(pattern)
    if n and pattern[-1] == GLOBSTAR:
        head = pattern[:-1]
        if len(segs) < len(head):
            return False
        segs = segs[: len(head)]
        pattern = head
    elif len(segs) != n:
        return False
    return all(p == STAR or p == s for p, s in zip(pattern, segs, strict=True))


def compile_patterns(patterns: Sequence[Pattern]) -> re.Pattern[str]:
    """One regular expression whose ``fullmatch`` is :func:`match` of any of
    ``patterns`` (faster over many keys; checked against :func:`match` by a property
    test)."""
    alts = []
    for p in patterns:
        segs = list(p)
        tail = ""
        if segs and segs[-1] == GLOBSTAR:
            segs.pop()
            tail = r"(?:\..+)?" if segs else r".*"
        alts.append(r"\.".join("[^.]+" if s == STAR else re.escape(s) for s in segs) + tail)
    return re.compile("|".join(f"(?:{a})" for a in alts))


def literal_prefix(pattern: Pattern) -> tuple[str, bool]:
    """The pattern's leading literal segments joined (``""`` when it starts with a
    wildcard), and whether that is the whole pattern (an exact key). Every key the
    pattern matches is that prefix or starts with ``prefix + "."``."""
    lit: list[str] = []
    for seg in pattern:
        if seg in (STAR, GLOBSTAR):
            break
        lit.append(seg)
    return ".".join(lit), len(lit) == len(pattern)


def could_match_under(pattern: Pattern, prefix: str) -> bool:
    """Could ``pattern`` match ``prefix`` or any key below it?"""
    for p, s in zip(pattern, prefix.split("."), strict=False):
        if p == GLOBSTAR:
            return True
        if p != STAR and p != s:
            return False
    return len(pattern) >= prefix.count(".") + 1 or (bool(pattern) and pattern[-1] == GLOBSTAR)


def is_prefix_of(prefix: str, key: str) -> bool:
    """Is the key ``prefix`` equal to ``key`` or a segment-wise prefix of it?"""
    return key == prefix or key.startswith(prefix + ".")
