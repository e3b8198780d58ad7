"""The hub's data as typed values: what the SDK reads out of ``welcome``, entries,
deltas, snapshots' ``removed`` lists, events and write results (spec sections 2-7).

Every reader here is lenient about what protocol revision 2 added (``owner`` on
deltas, ``stale_since``, versions in ``removed``, ``limits.oldest_rev``): a hub that
does not send them yet gives ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Change",
    "Entry",
    "Event",
    "HubLimits",
    "Removal",
    "Welcome",
    "WriteResult",
    "entries_from_result",
    "entry_from_wire",
    "event_from_wire",
    "removal_from_wire",
    "welcome_from_wire",
    "write_result_from_wire",
]

DEFAULT_HEARTBEAT_MS = 10_000


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's state as the client knows it (spec section 3).

    ``owner`` is the namespace that owns the key. ``stale_since`` is set on a stale
    entry: milliseconds since the Unix epoch when it went stale (``ts`` stays the time
    of the last value change). A hub before protocol revision 2 sends neither on
    deltas; the mirror then keeps the owner of the key's previous entry.
    """

    key: str
    value: Any
    version: int
    rev: int
    stale: bool = False
    ts: int | None = None
    owner: str | None = None
    stale_since: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One change of a watched key, as yielded by :meth:`HubClient.watch`.

    ``deleted`` changes have ``value=None``, ``ts=None`` and ``stale_since=None``. A
    deletion learnt from a full snapshot rather than from a delta carries the
    snapshot's ``rev`` and the lowest version the deletion can have (the last version
    seen + 1); one learnt from an incremental snapshot of a revision 2 hub carries the
    deletion's own version and rev.
    """

    key: str
    value: Any
    version: int
    rev: int
    stale: bool = False
    deleted: bool = False
    ts: int | None = None
    owner: str | None = None
    stale_since: int | None = None

    @staticmethod
    def of(entry: Entry) -> Change:
        """The change that makes ``entry`` current."""
        return Change(
            entry.key,
            entry.value,
            entry.version,
            entry.rev,
            entry.stale,
            False,
            entry.ts,
            entry.owner,
            entry.stale_since,
        )

    @staticmethod
    def deletion(key: str, version: int, rev: int, owner: str | None) -> Change:
        return Change(key, None, version, rev, deleted=True, owner=owner)


@dataclass(frozen=True, slots=True)
class Removal:
    """A key an incremental snapshot reports deleted since ``since``.

    ``version`` and ``rev`` are the deletion's (protocol revision 2); ``None`` when the
    hub sent the key alone.
    """

    key: str
    version: int | None = None
    rev: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An ephemeral event (spec section 7)."""

    key: str
    data: Any
    source: str
    ts: int | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The reply to a write: the key's version and the revision of the change."""

    key: str
    version: int
    rev: int


@dataclass(frozen=True, slots=True)
class HubLimits:
    """The limits the hub announced in its ``welcome`` (``None``: not announced).

    ``oldest_rev`` is the oldest revision from which an incremental resume is still
    possible; ``raw`` holds every limit as sent, including ones this SDK does not name.
    """

    frame_bytes: int | None = None
    value_bytes: int | None = None
    key_bytes: int | None = None
    subscriptions: int | None = None
    patterns_per_subscription: int | None = None
    commands_in_flight: int | None = None
    event_queue: int | None = None
    requests_per_second: int | None = None
    oldest_rev: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The hub's ``welcome`` (spec section 2); ``raw`` is the message as received."""

    hub: str
    session: str | None
    rev: int
    namespaces: tuple[str, ...]
    heartbeat_ms: int
    server: str | None
    limits: HubLimits
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def entry_from_wire(obj: dict[str, Any], owner: str | None = None) -> Entry:
    """An :class:`Entry` from the protocol's entry object (snapshot, get, delta).

    ``owner`` is used when ``obj`` carries none. Raises ``KeyError``, ``TypeError`` or
    ``ValueError`` when ``key``, ``version`` or ``rev`` is missing or malformed.
    """
    key = obj["key"]
    if not isinstance(key, str):
        raise TypeError(f"entry key {key!r} is not a string")
    stale = bool(obj.get("stale", False))
    own = obj.get("owner", owner)
    return Entry(
        key=key,
        value=obj.get("value"),
        version=int(obj["version"]),
        rev=int(obj["rev"]),
        stale=stale,
        ts=_int_or_none(obj.get("ts")),
        owner=own if isinstance(own, str) else owner,
        stale_since=_int_or_none(obj.get("stale_since")) if stale else None,
    )


def removal_from_wire(item: Any) -> Removal:
    """An item of a snapshot's ``removed``: ``{"key", "version", "rev"}`` (revision 2)
    or a plain key string (earlier hubs)."""
    if isinstance(item, str):
        return Removal(item)
    if isinstance(item, dict) and isinstance(item.get("key"), str):
        version = _int_or_none(item.get("version"))
        rev = _int_or_none(item.get("rev"))
        if version is None or rev is None:
            return Removal(item["key"])
        return Removal(item["key"], version, rev)
    raise ValueError(f"malformed item in a snapshot's removed list: {item!r}")


def event_from_wire(msg: dict[str, Any]) -> Event:
    return Event(
        str(msg.get("key")),
        msg.get("data"),
        str(msg.get("source", "")),
        _int_or_none(msg.get("ts")),
    )


def _limits_from_wire(obj: Any) -> HubLimits:
    if not isinstance(obj, dict):
        return HubLimits()
    known = {
        name: _int_or_none(obj.get(name))
        for name in HubLimits.__dataclass_fields__
        if name != "raw"
    }
    return HubLimits(**known, raw=dict(obj))


def welcome_from_wire(msg: dict[str, Any]) -> Welcome:
    hb = _int_or_none(msg.get("heartbeat_ms"))
    namespaces = msg.get("namespaces")
    return Welcome(
        hub=str(msg.get("hub", "")),
        session=_str_or_none(msg.get("session")),
        rev=_int_or_none(msg.get("rev")) or 0,
        namespaces=tuple(n for n in namespaces if isinstance(n, str))
        if isinstance(namespaces, list)
        else (),
        heartbeat_ms=hb if hb is not None and hb > 0 else DEFAULT_HEARTBEAT_MS,
        server=_str_or_none(msg.get("server")),
        limits=_limits_from_wire(msg.get("limits")),
        raw=msg,
    )


def entries_from_result(result: Any) -> list[Entry]:
    """The entries of a ``get`` result ``{"rev", "entries"}``."""
    if not isinstance(result, dict):
        return []
    return [entry_from_wire(e) for e in result.get("entries") or () if isinstance(e, dict)]


def write_result_from_wire(key: str, result: dict[str, Any]) -> WriteResult:
    return WriteResult(key, int(result["version"]), int(result["rev"]))
