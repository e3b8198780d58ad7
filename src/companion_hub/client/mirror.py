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
   ``incremental`` one applies its entries and ``removed`` keys. A removal that
   carries the deletion's version and rev (protocol revision 2) is applied like a
   deleted delta: it does not remove a newer entry, and its tombstone is exact. A
   bare key (earlier hubs) removes whatever is held. Chunked snapshots
   (``done: false``) are accumulated and applied at once on the last chunk. When the
   hub id changes (a different hub, or a restart without persistent history)
   versions are meaningless: every held entry becomes *unverified* and the next full
   snapshots replace them whatever their versions.

The mirror also tracks the resume point: the highest ``rev`` of any delta,
completed snapshot or progress message.

Patterns are those of :mod:`companion_hub.core.keys` (the one grammar), parsed with
:func:`~companion_hub.core.keys.parse_pattern`.

Example::

    m = Mirror()
    m.on_welcome("hub-1")
    m.add_sub("s1", [parse_pattern("app.**")])
    m.on_snapshot({"sub": "s1", "rev": 5, "mode": "full", "done": True,
                   "entries": [{"key": "app.x.a", "value": 1, "version": 1, "rev": 5}]})
    m.on_delta({"key": "app.x.a", "value": 2, "version": 2, "rev": 6})
    assert m.get("app.x.a").value == 2 and m.rev == 6
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.keys import GLOBSTAR, STAR, Pattern, match
from .messages import Change, Entry, Removal, entry_from_wire, removal_from_wire

__all__ = ["Change", "Entry", "Mirror", "covers"]


Listener = Callable[[Change], None]


def _newer(version: int, rev: int, have_version: int, have_rev: int) -> bool:
    return version > have_version or (version == have_version and rev > have_rev)


def matches_any(patterns: Iterable[Pattern], key: str) -> bool:
    return any(match(p, key) for p in patterns)


def covers(outer: Pattern, inner: Pattern) -> bool:
    """Does every key matching ``inner`` also match ``outer``? (Can a subscription to
    ``outer`` answer a read of ``inner``?)

    >>> covers(("a", "**"), ("a", "*", "c"))
    True
    >>> covers(("a", "b", "**"), ("a", "**"))   # "a" itself is not under a.b
    False
    """
    for i, o in enumerate(outer):
        if o == GLOBSTAR:
            return True
        if i == len(inner) or inner[i] == GLOBSTAR or (o != STAR and o != inner[i]):
            return False
    return len(inner) == len(outer)


@dataclass(slots=True)
class _SubscriptionState:
    patterns: tuple[Pattern, ...]
    synced: bool = False  # a complete snapshot has been applied (on any connection)
    chunk_entries: list[dict[str, Any]] = field(default_factory=list)
    chunk_removed: list[Any] = field(default_factory=list)  # as received

    def reset_chunks(self) -> None:
        self.chunk_entries = []
        self.chunk_removed = []


class Mirror:
    """Entries of the subscribed keys, kept consistent with the spec's guarantees."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.hub: str | None = None
        self.rev = 0  # the resume point
        self._tombstones: dict[str, tuple[int, int]] = {}  # key -> (version, rev) of the delete
        self._unverified: set[str] = set()  # held entries from a previous hub id
        self._subs: dict[str, _SubscriptionState] = {}
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
        return {k: self.entries[k] for k in sorted(self.entries) if matches_any(patterns, k)}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self.entries.values()))

    # --- subscriptions --------------------------------------------------------------

    def add_sub(self, sub: str, patterns: Iterable[Pattern]) -> None:
        self._subs[sub] = _SubscriptionState(tuple(patterns))

    def remove_sub(self, sub: str) -> None:
        """Forget a subscription and every held key no other subscription covers."""
        if self._subs.pop(sub, None) is None:
            return
        for key in [k for k in self.entries if not self.wanted(k)]:
            del self.entries[key]
            self._unverified.discard(key)
        for key in [k for k in self._tombstones if not self.wanted(k)]:
            del self._tombstones[key]

    def has_sub(self, sub: str) -> bool:
        return sub in self._subs

    def is_synced(self, sub: str) -> bool:
        s = self._subs.get(sub)
        return s is not None and s.synced

    def wanted(self, key: str) -> bool:
        """Does any subscription (synced or not) match ``key``?"""
        return any(matches_any(s.patterns, key) for s in self._subs.values())

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
                self._tombstones.clear()
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

        Chunks are accumulated and applied together once the last one arrives; a
        malformed entry or removal raises (``KeyError``, ``TypeError``, ``ValueError``)
        before anything is applied.
        """
        done = bool(msg.get("done", True))
        s = self._subs.get(msg.get("sub", ""))
        if s is None:
            return done
        s.chunk_entries.extend(msg.get("entries") or ())
        s.chunk_removed.extend(msg.get("removed") or ())
        if not done:
            return False
        chunk_entries, chunk_removed = s.chunk_entries, s.chunk_removed
        s.reset_chunks()
        rev = int(msg.get("rev", 0))
        entries = [entry_from_wire(e) for e in chunk_entries]
        removals = [removal_from_wire(r) for r in chunk_removed]
        if msg.get("mode", "full") == "full":
            present = {e.key for e in entries}
            for key, have in list(self.entries.items()):
                if (
                    key not in present
                    and matches_any(s.patterns, key)
                    and (have.rev <= rev or key in self._unverified)
                ):
                    self._drop(key, rev)
        for e in entries:
            self._apply(e)
        for removal in removals:
            self._remove(removal, rev)
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
        owner = have.owner if have is not None else None
        if msg.get("deleted"):
            sent_owner = msg.get("owner")
            return self._delete(
                key, version, rev, sent_owner if isinstance(sent_owner, str) else owner
            )
        return self._apply(entry_from_wire(msg, owner))

    # --- the mutations --------------------------------------------------------------

    def _apply(self, e: Entry) -> Change | None:
        key = e.key
        have = self.entries.get(key)
        if key in self._unverified:
            self._unverified.discard(key)
        elif have is not None:
            if not _newer(e.version, e.rev, have.version, have.rev):
                return None
        elif key in self._tombstones and not _newer(e.version, e.rev, *self._tombstones[key]):
            return None
        self.entries[key] = e
        self._tombstones.pop(key, None)
        if have == e:
            return None
        change = Change.of(e)
        self._emit(change)
        return change

    def _delete(self, key: str, version: int, rev: int, owner: str | None) -> Change | None:
        """``key`` was deleted at ``version``/``rev`` (a delta, or a removal with versions)."""
        have = self.entries.get(key)
        if key in self._unverified:
            self._unverified.discard(key)
        elif have is not None:
            if not _newer(version, rev, have.version, have.rev):
                return None
        elif key in self._tombstones and not _newer(version, rev, *self._tombstones[key]):
            return None
        self._tombstones[key] = (version, rev)
        if have is None:
            return None
        del self.entries[key]
        change = Change.deletion(key, version, rev, owner or have.owner)
        self._emit(change)
        return change

    def _remove(self, removal: Removal, snapshot_rev: int) -> None:
        """An incremental snapshot (of ``snapshot_rev``) says ``removal.key`` is gone."""
        if not self.wanted(removal.key):
            return
        if removal.version is None or removal.rev is None:
            self._drop(removal.key, snapshot_rev)
        else:
            self._delete(removal.key, removal.version, removal.rev, None)

    def _drop(self, key: str, rev: int) -> None:
        """A snapshot says ``key`` no longer exists (as of ``rev``), without saying at
        which version it was deleted: assume the lowest version the deletion can have."""
        have = self.entries.pop(key, None)
        if have is None:
            return
        if key in self._unverified:
            self._unverified.discard(key)  # versions of another hub: no tombstone
        else:
            self._tombstones[key] = (have.version + 1, max(rev, have.rev))
        self._emit(Change.deletion(key, have.version + 1, rev, have.owner))
