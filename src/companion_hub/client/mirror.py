"""The local mirror of subscribed entries, sans I/O.

The mirror is fed the hub's messages (``welcome``, ``snapshot``, ``delta``,
``progress``) in the order they arrive and keeps the entries of every key that
matches one of the client's subscriptions. It enforces the three guarantees of
the spec (section 4) on the client side, whatever the delivery looks like:

1. **Per key, versions only increase.** A change is applied only if its
   ``version`` is higher than the one held, or equal with a higher ``rev`` (a
   stale flip). Anything else (a duplicate, an older value after a resume) is
   ignored. Deleted keys leave a tombstone with their last version, so that an
   old value can not resurrect them.
2. **Convergence.** Once the newest change of each key has been seen, the mirror
   holds exactly the hub's state; the order of older deliveries does not matter.
3. **Resume equals a fresh snapshot.** A ``full`` snapshot replaces everything held
   for the subscription's patterns (keys it does not list are removed); an
   ``incremental`` one applies its entries and ``removed`` keys. Chunked
   snapshots (``done: false``) are accumulated and applied at once on the last
   chunk. When the hub id changes (a different hub, or a restart without
   persistent history) versions are meaningless: every held entry becomes
   *unverified* and the next full snapshots replace them whatever their versions.

The mirror also tracks the resume point: the highest ``rev`` of any delta,
completed snapshot or progress message.

Example::

    m = Mirror()
    m.on_welcome("hub-1")
    m.add_sub("s1", [("app", "**")])
    m.on_snapshot({"sub": "s1", "rev": 5, "mode": "full", "done": True,
                   "entries": [{"key": "app.x.a", "value": 1, "version": 1, "rev": 5}]})
    m.on_delta({"key": "app.x.a", "value": 2, "version": 2, "rev": 6})
    assert m.get("app.x.a").value == 2 and m.rev == 6
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .patterns import Pattern, covers, match_any

__all__ = ["Change", "Entry", "Mirror"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's state as the client knows it.

    ``owner`` comes from snapshots and ``get``; deltas do not carry it, so it is
    kept from the previous entry of the key (None for a key first seen in a delta).
    """

    key: str
    value: Any
    version: int
    rev: int
    stale: bool = False
    ts: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One change of a watched key, as yielded by :meth:`HubClient.watch`.

    ``deleted`` changes have ``value=None`` and ``ts=None``. A deletion learnt from a
    snapshot rather than from a delta carries the snapshot's ``rev`` and the lowest
    version the deletion can have (the last version seen + 1).
    """

    key: str
    value: Any
    version: int
    rev: int
    stale: bool = False
    deleted: bool = False
    ts: int | None = None

    @staticmethod
    def of(entry: Entry) -> Change:
        return Change(
            entry.key, entry.value, entry.version, entry.rev, entry.stale, False, entry.ts
        )


Listener = Callable[[Change], None]


def _newer(version: int, rev: int, have_version: int, have_rev: int) -> bool:
    return version > have_version or (version == have_version and rev > have_rev)


def entry_from_wire(e: dict[str, Any], owner: str | None = None) -> Entry:
    """An :class:`Entry` from the protocol's entry object (snapshot, get, delta)."""
    ts = e.get("ts")
    own = e.get("owner", owner)
    return Entry(
        key=e["key"],
        value=e.get("value"),
        version=int(e["version"]),
        rev=int(e["rev"]),
        stale=bool(e.get("stale", False)),
        ts=ts if isinstance(ts, int) else None,
        owner=own if isinstance(own, str) else None,
    )


@dataclass(slots=True)
class _Sub:
    patterns: tuple[Pattern, ...]
    synced: bool = False  # a complete snapshot has been applied (on any connection)
    chunk_entries: list[dict[str, Any]] = field(default_factory=list)
    chunk_removed: list[str] = field(default_factory=list)

    def reset_chunks(self) -> None:
        self.chunk_entries = []
        self.chunk_removed = []


class Mirror:
    """Entries of the subscribed keys, kept consistent with the spec's guarantees."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.hub: str | None = None
        self.rev = 0  # the resume point
        self._tombs: dict[str, tuple[int, int]] = {}  # key -> (version, rev) of the delete
        self._unverified: set[str] = set()  # held entries from a previous hub id
        self._subs: dict[str, _Sub] = {}
        self._listeners: list[Listener] = []

    # --- listeners ------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        try:
            self._listeners.remove(fn)
        except ValueError:
            pass

    def _emit(self, change: Change) -> None:
        for fn in list(self._listeners):
            fn(change)

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def matching(self, patterns: Sequence[Pattern]) -> dict[str, Entry]:
        """Held entries matching any of ``patterns``, sorted by key."""
        return {k: self.entries[k] for k in sorted(self.entries) if match_any(patterns, k)}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self.entries.values()))

    # --- subscriptions --------------------------------------------------------------

    def add_sub(self, sub: str, patterns: Iterable[Pattern]) -> None:
        self._subs[sub] = _Sub(tuple(patterns))

    def remove_sub(self, sub: str) -> None:
        """Forget a subscription and every held key no other subscription covers."""
        if self._subs.pop(sub, None) is None:
            return
        for key in [k for k in self.entries if not self.wanted(k)]:
            del self.entries[key]
            self._unverified.discard(key)
        for key in [k for k in self._tombs if not self.wanted(k)]:
            del self._tombs[key]

    def has_sub(self, sub: str) -> bool:
        return sub in self._subs

    def is_synced(self, sub: str) -> bool:
        s = self._subs.get(sub)
        return s is not None and s.synced

    def wanted(self, key: str) -> bool:
        """Does any subscription (synced or not) match ``key``?"""
        return any(match_any(s.patterns, key) for s in self._subs.values())

    def covered(self, pattern: Pattern) -> bool:
        """Can a read of ``pattern`` be answered from the mirror (a synced sub covers it)?"""
        return any(
            s.synced and any(covers(p, pattern) for p in s.patterns) for s in self._subs.values()
        )

    # --- connection -----------------------------------------------------------------

    def on_welcome(self, hub: str) -> bool:
        """A (re)connection was welcomed by hub ``hub``; True when it is the same hub.

        With a different hub id every held entry becomes unverified, the resume point
        goes back to 0 and every subscription must get a full snapshot.
        """
        same = self.hub == hub
        if not same:
            if self.hub is not None:
                self._unverified = set(self.entries)
                self._tombs.clear()
            self.hub = hub
            self.rev = 0
        for s in self._subs.values():
            s.reset_chunks()
            if not same:
                s.synced = False
        return same

    def resume(self) -> dict[str, Any] | None:
        """The ``resume`` object for ``hello``, or None before any welcome."""
        if self.hub is None:
            return None
        return {"hub": self.hub, "rev": self.rev}

    def since(self, sub: str) -> int | None:
        """The ``since`` to subscribe ``sub`` with: the resume point if it was synced."""
        s = self._subs.get(sub)
        if s is None or not s.synced or self.rev <= 0:
            return None
        return self.rev

    def _advance(self, rev: int) -> None:
        self.rev = max(self.rev, rev)

    # --- messages -------------------------------------------------------------------

    def on_progress(self, rev: int) -> None:
        self._advance(rev)

    def on_snapshot(self, msg: dict[str, Any]) -> bool:
        """Take one snapshot message; returns True when it was the last chunk (``done``).

        Chunks are accumulated and applied together once the last one arrives.
        """
        done = bool(msg.get("done", True))
        s = self._subs.get(msg.get("sub", ""))
        if s is None:
            return done
        s.chunk_entries.extend(msg.get("entries") or ())
        # revision 2: {"key", "version", "rev"} per deleted key (a key alone before)
        s.chunk_removed.extend(
            r["key"] if isinstance(r, dict) else r for r in msg.get("removed") or ()
        )
        if not done:
            return False
        rev = int(msg.get("rev", 0))
        entries = [entry_from_wire(e) for e in s.chunk_entries]
        removed = s.chunk_removed
        s.reset_chunks()
        if msg.get("mode", "full") == "full":
            present = {e.key for e in entries}
            for key, have in list(self.entries.items()):
                if (
                    key not in present
                    and match_any(s.patterns, key)
                    and (have.rev <= rev or key in self._unverified)
                ):
                    self._drop(key, rev)
        for e in entries:
            self._apply(e)
        for key in removed:
            self._drop(key, rev)
        s.synced = True
        self._advance(rev)
        return True

    def on_delta(self, msg: dict[str, Any]) -> Change | None:
        """Apply a delta; returns the resulting change, or None if it was ignored."""
        key = msg["key"]
        rev = int(msg["rev"])
        version = int(msg["version"])
        self._advance(rev)
        if not self.wanted(key):
            return None  # e.g. a delta already on the wire when we unsubscribed
        have = self.entries.get(key)
        if msg.get("deleted"):
            if key in self._unverified:
                self._unverified.discard(key)
            elif have is not None:
                if not _newer(version, rev, have.version, have.rev):
                    return None
            elif key in self._tombs and not _newer(version, rev, *self._tombs[key]):
                return None
            self._tombs[key] = (version, rev)
            if have is None:
                return None
            del self.entries[key]
            change = Change(key, None, version, rev, False, True, None)
            self._emit(change)
            return change
        entry = entry_from_wire(msg, have.owner if have is not None else None)
        return self._apply(entry)

    # --- the two mutations ----------------------------------------------------------

    def _apply(self, e: Entry) -> Change | None:
        key = e.key
        have = self.entries.get(key)
        if key in self._unverified:
            self._unverified.discard(key)
        elif have is not None:
            if not _newer(e.version, e.rev, have.version, have.rev):
                return None
        elif key in self._tombs and not _newer(e.version, e.rev, *self._tombs[key]):
            return None
        self.entries[key] = e
        self._tombs.pop(key, None)
        if have == e:
            return None
        change = Change.of(e)
        self._emit(change)
        return change

    def _drop(self, key: str, rev: int) -> None:
        """A snapshot says ``key`` no longer exists (as of ``rev``)."""
        have = self.entries.pop(key, None)
        if have is None:
            return
        if key in self._unverified:
            self._unverified.discard(key)  # versions of another hub: no tombstone
        else:
            self._tombs[key] = (have.version + 1, max(rev, have.rev))
        self._emit(Change(key, None, have.version + 1, rev, False, True, None))
