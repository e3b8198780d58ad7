"""MQTT topics and the hub's keys: the bridge's topic tree and the import rules. Pure.

The bridge's own tree, under a prefix (``companion-hub`` by default)::

    <prefix>/status                          online | offline (retained, the Last Will)
    <prefix>/state/<key, dots as slashes>    {"value", "version", "rev", "stale", "ts", "owner"}
    <prefix>/value/<key, dots as slashes>    the bare value (plain mode)
    <prefix>/command/<target>/<name>[/<id>]  a command request (JSON params)
    <prefix>/reply/<target>/<name>[/<id>]    its result, when the request has no
                                             MQTT 5 Response Topic

A key's segments (``[A-Za-z0-9_-]``) are valid topic levels, so a key maps to a topic
and back without escaping.

An import rule maps an MQTT topic filter to a key template of the bridge's namespace:
``tasmota/+/STATE`` -> ``mqtt.tasmota.<+>.state``. In the template, ``<+>`` is the next
``+`` level of the topic (in order), ``<1>``, ``<2>``... the first, second ``+`` level,
and ``<#>`` the levels matched by a trailing ``#``, joined by dots. A topic level that
cannot be a key segment makes no key (the message is refused and counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...core.keys import is_valid_key, is_valid_segment

STATE = "state"
VALUE = "value"
COMMAND = "command"
REPLY = "reply"
STATUS = "status"

_PLACEHOLDER = re.compile(r"<(\+|#|[1-9][0-9]?)>")
_LITERAL = re.compile(r"[A-Za-z0-9_.-]*")


class TopicError(ValueError):
    """A topic filter, a template or a prefix is not usable; the message says why."""


# --- the bridge's own tree ---------------------------------------------------------------


def check_prefix(prefix: str) -> str:
    """A prefix is one or more topic levels without wildcards, ``$`` or empty levels."""
    if not prefix or prefix.startswith(("/", "$")) or prefix.endswith("/"):
        raise TopicError(f"prefix {prefix!r}: levels without a leading '$' or '/', no trailing '/'")
    levels = prefix.split("/")
    if any(not lv or "+" in lv or "#" in lv for lv in levels):
        raise TopicError(f"prefix {prefix!r}: no empty levels and no wildcards")
    if len(prefix.encode()) > 1024:
        raise TopicError("prefix: at most 1024 bytes")
    return prefix


def key_topic(prefix: str, kind: str, key: str) -> str:
    """``<prefix>/<kind>/<key with dots as slashes>``."""
    return f"{prefix}/{kind}/{key.replace('.', '/')}"


def topic_key(prefix: str, kind: str, topic: str) -> str | None:
    """The key of a ``<prefix>/<kind>/...`` topic, None if it is not one."""
    head = f"{prefix}/{kind}/"
    if not topic.startswith(head):
        return None
    key = topic[len(head) :].replace("/", ".")
    return key if is_valid_key(key) else None


@dataclass(frozen=True, slots=True)
class CommandTopic:
    target: str
    name: str
    request_id: str | None


def parse_command_topic(prefix: str, topic: str) -> CommandTopic | None:
    """``<prefix>/command/<target>/<name>[/<id>]``, None if the topic is not one."""
    head = f"{prefix}/{COMMAND}/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) not in (2, 3):
        return None
    target, name = parts[0], parts[1]
    request_id = parts[2] if len(parts) == 3 else None
    if not is_valid_key(target) or not is_valid_segment(name):
        return None
    if request_id is not None and not 0 < len(request_id) <= 128:
        return None
    return CommandTopic(target, name, request_id)


def reply_topic(prefix: str, cmd: CommandTopic) -> str:
    tail = f"/{cmd.request_id}" if cmd.request_id else ""
    return f"{prefix}/{REPLY}/{cmd.target}/{cmd.name}{tail}"


# --- topic filters -------------------------------------------------------------------------


def check_filter(text: str) -> list[str]:
    """A valid MQTT topic filter's levels; ``#`` only last, wildcards alone in a level."""
    if not text or len(text.encode()) > 65535:
        raise TopicError(f"topic filter {text!r}: empty or too long")
    levels = text.split("/")
    for i, lv in enumerate(levels):
        if lv == "#":
            if i != len(levels) - 1:
                raise TopicError(f"topic filter {text!r}: '#' must be the last level")
        elif lv == "+":
            continue
        elif "+" in lv or "#" in lv:
            raise TopicError(f"topic filter {text!r}: a wildcard must be a whole level")
    return levels


def filter_matches(levels: list[str] | tuple[str, ...], topic: str) -> list[str] | None:
    """Match ``topic`` against a filter's levels: the ``+`` levels in order, then (for a
    trailing ``#``) the remaining levels joined by ``/`` as the last item. None: no match.
    Topics starting with ``$`` never match a leading wildcard (MQTT 4.7.2)."""
    parts = topic.split("/")
    captures: list[str] = []
    for i, lv in enumerate(levels):
        if lv == "#":
            if i == 0 and topic.startswith("$"):
                return None
            captures.append("/".join(parts[i:]))
            return captures
        if i >= len(parts):
            return None
        if lv == "+":
            if i == 0 and topic.startswith("$"):
                return None
            captures.append(parts[i])
        elif lv != parts[i]:
            return None
    return captures if len(parts) == len(levels) else None


def filters_overlap(a: list[str] | tuple[str, ...], b: list[str] | tuple[str, ...]) -> bool:
    """Could one topic match both filters?"""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and x != "+" and y != "+":
            return False
    return True


# --- import rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRule:
    """One ``[[mqtt.import]]``: a topic filter, the key template it fills, and an
    optional availability topic filter of the same devices."""

    topic: str
    key: str
    availability: str | None = None
    online: str = "online"
    offline: str = "offline"
    format: str = "json"  # "json": JSON when it parses, else the text; "text": always text

    def __post_init__(self) -> None:
        levels = check_filter(self.topic)
        object.__setattr__(self, "_levels", tuple(levels))
        pluses = levels.count("+")
        hashed = levels[-1] == "#"
        seq = 0
        for m in _PLACEHOLDER.finditer(self.key):
            p = m.group(1)
            if p == "+":
                seq += 1
                if seq > pluses:
                    raise TopicError(f"key {self.key!r}: more <+> than '+' levels in {self.topic}")
            elif p == "#":
                if not hashed:
                    raise TopicError(f"key {self.key!r}: <#> needs a filter ending in '#'")
            elif int(p) > pluses:
                raise TopicError(f"key {self.key!r}: <{p}> but {self.topic} has {pluses} '+'")
        literal = _PLACEHOLDER.sub("x", self.key)
        if not _LITERAL.fullmatch(literal) or not is_valid_key(literal):
            raise TopicError(f"key {self.key!r}: segments of [A-Za-z0-9_-] and placeholders")
        if self.format not in ("json", "text"):
            raise TopicError(f"format {self.format!r}: 'json' or 'text'")
        if self.availability is not None:
            av = check_filter(self.availability)
            if "#" in av or av.count("+") != pluses:
                raise TopicError(
                    f"availability {self.availability!r}: needs exactly the {pluses} '+' "
                    f"levels of {self.topic} (they name the device) and no '#'"
                )
            object.__setattr__(self, "_av_levels", tuple(av))
        else:
            object.__setattr__(self, "_av_levels", None)

    @property
    def levels(self) -> tuple[str, ...]:
        return self._levels  # type: ignore[attr-defined,no-any-return]

    @property
    def availability_levels(self) -> tuple[str, ...] | None:
        return self._av_levels  # type: ignore[attr-defined,no-any-return]

    def namespace_ok(self, namespace: str) -> bool:
        """Is every key this rule can make under ``namespace``?"""
        return self.key.startswith(namespace + ".") and "<" not in self.key[: len(namespace)]

    def match(self, topic: str) -> list[str] | None:
        return filter_matches(self.levels, topic)

    def device(self, captures: list[str]) -> tuple[str, ...]:
        """The ``+`` captures: what names the device (for its availability)."""
        return tuple(captures[: self.levels.count("+")])

    def key_for(self, captures: list[str]) -> str | None:
        """The key for a matched topic's captures, None if a level is not a segment."""
        pluses = captures[: self.levels.count("+")]
        rest = captures[len(pluses)] if len(captures) > len(pluses) else ""
        seq = iter(pluses)
        failed = False

        def fill(m: re.Match[str]) -> str:
            nonlocal failed
            p = m.group(1)
            if p == "+":
                value = next(seq, "")
            elif p == "#":
                levels = rest.split("/") if rest else []
                if not levels or not all(is_valid_segment(s) for s in levels):
                    failed = True
                    return "x"
                return ".".join(levels)
            else:
                value = pluses[int(p) - 1]
            if not is_valid_segment(value):
                failed = True
                return "x"
            return value

        key = _PLACEHOLDER.sub(fill, self.key)
        return None if failed or not is_valid_key(key) else key

    def availability_match(self, topic: str) -> tuple[str, ...] | None:
        levels = self.availability_levels
        if levels is None:
            return None
        caps = filter_matches(levels, topic)
        return None if caps is None else tuple(caps)

    def availability_state(self, payload: bytes) -> bool | None:
        """True for online, False for offline, None for anything else. Compared without
        case and surrounding space; a JSON object's ``"state"`` (zigbee2mqtt) counts."""
        text = payload.decode("utf-8", "replace").strip()
        if text.startswith("{"):
            m = re.search(r'"state"\s*:\s*"([^"]*)"', text)
            text = m.group(1) if m else text
        low = text.strip('"').lower()
        if low == self.online.lower():
            return True
        if low == self.offline.lower():
            return False
        return None
