"""Roles and identities: what a connection may read, own, call and publish (protocol
section 9). Pure: the token file and its verification live in ``companion_hub.auth``.

A :class:`Role` is a set of permissions from the configuration (or one of the
built-in roles); an :class:`Identity` is who a connection (or an HTTP request) turned
out to be: a client name, the token it used, and its role. Without tokens (the
development mode) every connection gets :data:`DEVELOPMENT`, which allows everything,
so the protocol behaves exactly as it does without auth.

Command permissions are ``"TARGET:NAME"`` patterns: TARGET is a key pattern over the
target namespace (``companion``, ``app.*``, ``**``), NAME a command name or ``*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .keys import GLOBSTAR, Pattern, compile_patterns, match, parse_pattern

CLIENT_PLACEHOLDER = "{client}"


@dataclass(frozen=True)
class Role:
    name: str
    read: tuple[str, ...] = ("**",)  # key patterns this role may read
    own: tuple[str, ...] = (f"app.{CLIENT_PLACEHOLDER}",)  # namespaces it owns
    call: tuple[str, ...] = ()  # "TARGET:NAME" patterns of commands it may call
    log: bool = False  # may read the event log (GET /api/log)
    publish: bool = True  # may publish events (under the namespaces it owns)

    def check(self) -> None:
        """ValueError with a message naming what is wrong."""
        for p in self.read:
            parse_pattern(p)
        for c in self.call:
            target, sep, name = c.partition(":")
            if not sep or not target or not name:
                raise ValueError(f"role {self.name!r}: call {c!r}: expected 'TARGET:NAME'")
            parse_pattern(target)
        for ns in self.own:
            if not ns or ns.startswith("hub"):
                raise ValueError(f"role {self.name!r}: own {ns!r} is not allowed")


BUILTIN_ROLES: dict[str, Role] = {
    # a stage display, a dashboard: reads everything, writes nothing
    "viewer": Role("viewer", own=(), publish=False),
    # an application: its own namespace, commands to other applications
    "app": Role("app", call=("app.*:*",)),
    # an operator panel: also presses Companion's buttons
    "operator": Role("operator", call=("companion:*", "app.*:*")),
    # everything, the event log included
    "admin": Role("admin", call=("**:*",), log=True),
}

# no tokens configured: everything is allowed (the protocol without section 9)
DEVELOPMENT = Role("development", call=("**:*",), log=True)


class Reader:
    """A role's read permission as a callable ``reader(key) -> bool``, shared by every
    connection with the same read patterns (so the fan-out decides once per change
    for all of them) and remembering its verdict per key (keys never change)."""

    __slots__ = ("_cache", "_rx")

    _MAX_CACHE = 1_000_000

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self._rx = compile_patterns(patterns) if patterns else None
        self._cache: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        v = self._cache.get(key)
        if v is None:
            v = self._rx is not None and self._rx.fullmatch(key) is not None
            if len(self._cache) >= self._MAX_CACHE:
                self._cache.clear()
            self._cache[key] = v
        return v


_READERS: dict[tuple[str, ...], Reader] = {}


def reader_for(read: tuple[str, ...]) -> Reader:
    """The shared :class:`Reader` of these read patterns."""
    r = _READERS.get(read)
    if r is None:
        if len(_READERS) > 1000:
            _READERS.clear()
        r = _READERS[read] = Reader([parse_pattern(p) for p in read])
    return r


@dataclass(frozen=True)
class Identity:
    """Who is connected. ``token`` is the token's name (never the secret), None in the
    development mode; ``enforced`` says whether the role's limits apply."""

    client: str
    role: Role
    token: str | None = None
    enforced: bool = False
    _read_all: bool = field(init=False, repr=False, compare=False)
    _reader: Reader | None = field(init=False, repr=False, compare=False)
    _calls: tuple[tuple[Pattern, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        read = [parse_pattern(p) for p in self.role.read]
        read_all = not self.enforced or any(p == (GLOBSTAR,) for p in read)
        object.__setattr__(self, "_read_all", read_all)
        object.__setattr__(self, "_reader", None if read_all else reader_for(self.role.read))
        calls = []
        for c in self.role.call:
            target, _, name = c.partition(":")
            calls.append((parse_pattern(target), name))
        object.__setattr__(self, "_calls", tuple(calls))

    @property
    def reads_everything(self) -> bool:
        return self._read_all

    @property
    def reader(self) -> Reader | None:
        """The shared read check, None when this identity reads everything."""
        return self._reader

    def may_read(self, key: str) -> bool:
        r = self._reader
        return True if r is None else r(key)

    def readable(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if self.may_read(k)]

    def may_call(self, target: str, name: str) -> bool:
        if not self.enforced:
            return True
        return any(match(tp, target) and (np == "*" or np == name) for tp, np in self._calls)

    @property
    def may_publish(self) -> bool:
        return not self.enforced or self.role.publish

    @property
    def may_read_log(self) -> bool:
        return not self.enforced or self.role.log

    def namespaces(self, grants: Sequence[str] = ()) -> list[str]:
        """The namespaces this identity owns: the role's (``{client}`` filled in) and
        the configuration's grants for the client."""
        own = [ns.replace(CLIENT_PLACEHOLDER, self.client) for ns in self.role.own]
        return list(dict.fromkeys([*own, *grants]))


def development(client: str) -> Identity:
    return Identity(client, DEVELOPMENT)
