"""The canonical state store: entries, namespaces, the single commit path.

Every change — a write, a delete, a stale flip — goes through :meth:`Store._commit`,
which assigns the next hub-wide revision, records the key in the bounded change
history (for incremental resume) and hands the change, with the actor that made
it, to the listeners (the fan-out to subscribers and the event log's recorder).
Writes come only through a :class:`~companion_hub.core.writer.Writer` (see
:meth:`Store.writer`), which enforces the key, size and ownership rules. The store
does no I/O.

Values are kept as their canonical JSON encoding (``raw``), not as Python objects:
the hub never interprets values, deltas and snapshots splice the bytes in, and a
bytes object costs far less memory than a decoded dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from .errors import ErrorCode, HubError
from .jsonvalue import json_equal
from .keys import GLOBSTAR, STAR, Pattern, compile_patterns, could_match_under, is_prefix_of
from .limits import Limits
from .writer import Encoder, SetOp, Writer, WriteResult

Decoder = Callable[[bytes], Any]

__all__ = ["Change", "Entry", "Namespace", "SetOp", "Store", "WriteResult", "Writer"]


class Entry(msgspec.Struct, gc=False):
    """One key's current state. Immutable once committed (a change creates a new
    Entry), except ``wepoch``, which is not part of the wire format.

    A msgspec Struct without GC tracking: the fields never form cycles, and at a
    million keys the 16 bytes of GC header per entry matter.
    """

    key: str
    raw: bytes  # canonical JSON of the value
    version: int
    rev: int
    owner: str  # the namespace
    stale: bool
    ts: int
    # write epoch: the session (or adapter run) that last wrote the key, for `sync`
    wepoch: int = 0
    # when the key went stale (epoch ms; 0 while fresh). ``ts`` stays the time of the
    # last value change
    stale_since: int = 0


class Change:
    """A committed change: ``entry`` is the new state, or None when the key was deleted;
    ``actor`` is who made it (a client name, ``adapter:<name>`` or ``hub``)."""

    __slots__ = ("actor", "entry", "key", "owner", "rev", "version")

    def __init__(
        self, key: str, rev: int, version: int, entry: Entry | None, actor: str, owner: str
    ) -> None:
        self.key = key
        self.rev = rev
        self.version = version
        self.entry = entry
        self.actor = actor
        self.owner = owner  # the namespace of the key (also for a delete)

    @property
    def deleted(self) -> bool:
        return self.entry is None


class Namespace:
    """A key prefix with exactly one owner (a client name, ``hub`` or an adapter)."""

    __slots__ = ("entries", "name", "owner", "tombstones")

    def __init__(self, name: str, owner: str) -> None:
        self.name = name
        self.owner = owner
        self.entries: dict[str, Entry] = {}
        # last version of each deleted key, so that versions are never reused
        self.tombstones: dict[str, int] = {}


Listener = Callable[[Change], None]

_EMPTY = b""


def _exact(raw: bytes) -> bytes:
    """``raw`` copied into a block of its own size, for a value the store keeps.
    msgspec's encoder returns its growing buffer unshrunk: a 44-byte value held a
    118-byte allocation, ~40 of a million keys' bytes each (docs/adr/0010). A join
    of two parts always makes a new object; ~70 ns."""
    return _EMPTY.join((raw, _EMPTY))


class Store:
    """The state store. Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        *,
        clock_ms: Callable[[], int],
        decode: Decoder,
        encode: Encoder = msgspec.json.encode,
        limits: Limits | None = None,
        history_limit: int = 1_000_000,
        start_rev: int = 0,
    ) -> None:
        self._clock_ms = clock_ms
        self._decode = decode
        self._encode = encode
        self.limits = limits or Limits()
        self.rev = start_rev
        self._namespaces: dict[str, Namespace] = {}
        self._listeners: list[Listener] = []
        self._history_limit = max(1, history_limit)
        self._hist: list[str] = []  # _hist[i] is the key changed at revision _hist_base + i
        self._hist_base = start_rev + 1
        self._last_ts = 0
        self._unknown = (0, 0)  # revisions lost in a crash (see restore)
        # resuming from before this revision gives a full snapshot (see restore)
        self._resume_floor = 0
        # a key with no history starts above this version (see restore)
        self.version_floor = 0

    def _now(self) -> int:
        """The clock, reusing the previous int object while the millisecond is the same
        (a bulk load of a million keys would otherwise hold a million equal ints)."""
        t = self._clock_ms()
        if t == self._last_ts:
            return self._last_ts
        self._last_ts = t
        return t

    def restore(
        self,
        *,
        rev: int,
        namespaces: Iterable[tuple[str, str]],
        entries: Iterable[Entry],
        tombstones: dict[str, int],
        history: list[str],
        gap: int = 0,
        version_floor: int = 0,
        stale_namespaces: Container[str] = (),
    ) -> int:
        """Load a recovered state (start-up only: no listeners are called).

        ``history`` holds the keys changed at revisions ``rev - len(history) + 1 .. rev``
        so that clients resuming from before the restart get incremental snapshots.

        ``gap`` (after a crash): revisions ``rev+1 .. rev+gap`` may have been handed out
        before the crash without reaching the log. They are skipped, never reused, and a
        client resuming from inside them gets a full snapshot; every version moves up by
        ``gap`` for the same reason, and ``version_floor`` (which the caller raised by
        ``gap``) lifts the first version of a key that has no history at all, since the
        lost writes may have created it.

        Entries of ``stale_namespaces`` are restored stale (their owners are gone until
        they come back). This costs no revisions and no log rows; if any entry had to
        be flipped, a client resuming from before the restart gets a full snapshot
        instead of an incremental one, which carries the same entries. Returns the
        number of entries flipped.
        """
        for name, owner in namespaces:
            self.register_namespace(name, owner)
        flipped = 0
        now = self._now()
        for e in entries:
            ns = self.namespace_of(e.key)
            if ns is None:  # not in the namespace table (an old or damaged log)
                owner = e.owner[4:] if e.owner.startswith("app.") else f"adapter:{e.owner}"
                ns = self.register_namespace(e.owner, owner)
            if not e.stale and ns.name in stale_namespaces:
                e.stale = True
                e.stale_since = now
                flipped += 1
            elif e.stale and not e.stale_since:
                e.stale_since = now  # logged before the time was kept: at least since now
            ns.entries[e.key] = e
        for key, version in tombstones.items():
            ns = self.namespace_of(key)
            if ns is not None and key not in ns.entries:
                ns.tombstones[key] = version
        if gap:
            for ns in self._namespaces.values():
                for e in ns.entries.values():
                    e.version += gap
                for key in ns.tombstones:
                    ns.tombstones[key] += gap
            self._unknown = (rev, rev + gap)
            history = [*history, *([""] * gap)]  # "" = not known (skipped when read)
            rev += gap
        self.version_floor = version_floor
        self.rev = rev
        if flipped:
            self._resume_floor = rev
        keep = history[-self._history_limit :]
        self._hist = list(keep)
        self._hist_base = rev - len(keep) + 1
        return flipped

    # --- namespaces -----------------------------------------------------------------

    def writer(
        self, actor: str, owned: Iterable[str], epoch: int = 0, limits: Limits | None = None
    ) -> Writer:
        """The write handle of ``actor``, owner of the namespaces ``owned``."""
        return Writer(
            self,
            actor=actor,
            owned=frozenset(owned),
            limits=limits or self.limits,
            encode=self._encode,
            epoch=epoch,
        )

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (a bridge that stops); nothing if it is not one."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def register_namespace(self, name: str, owner: str) -> Namespace:
        """Create namespace ``name`` owned by ``owner``; idempotent for the same owner."""
        ns = self._namespaces.get(name)
        if ns is not None:
            if ns.owner != owner:
                raise HubError(ErrorCode.CONFLICT, f"namespace {name!r} is owned by {ns.owner!r}")
            return ns
        for other in self._namespaces:
            if is_prefix_of(other, name) or is_prefix_of(name, other):
                raise HubError(
                    ErrorCode.CONFLICT,
                    f"namespace {name!r} would nest with existing namespace {other!r}",
                )
        ns = self._namespaces[name] = Namespace(name, owner)
        return ns

    def namespace(self, name: str) -> Namespace | None:
        return self._namespaces.get(name)

    def namespaces(self) -> Iterable[Namespace]:
        return self._namespaces.values()

    def namespace_of(self, key: str) -> Namespace | None:
        """The namespace that ``key`` is at or below, if any."""
        get = self._namespaces.get
        i = key.find(".")
        while i >= 0:
            ns = get(key[:i])
            if ns is not None:
                return ns
            i = key.find(".", i + 1)
        return get(key)

    # --- reads ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        ns = self.namespace_of(key)
        return None if ns is None else ns.entries.get(key)

    def __len__(self) -> int:
        return sum(len(ns.entries) for ns in self._namespaces.values())

    def matching(self, patterns: Sequence[Pattern]) -> list[Entry]:
        """Every current entry matching any of ``patterns`` (in no particular order)."""
        out: list[Entry] = []
        rx: re.Pattern[str] | None = None
        for ns in self._namespaces.values():
            # (deduplicated: the same exact key named twice is one entry)
            relevant = list(dict.fromkeys(p for p in patterns if could_match_under(p, ns.name)))
            if not relevant or not ns.entries:
                continue
            if any(_covers(p, ns.name) for p in relevant):
                out.extend(ns.entries.values())
                continue
            if all(GLOBSTAR not in p and STAR not in p for p in relevant):
                for p in relevant:
                    e = ns.entries.get(".".join(p))
                    if e is not None:
                        out.append(e)
                continue
            rx = compile_patterns(relevant)
            fm = rx.fullmatch
            out.extend(e for k, e in ns.entries.items() if fm(k))
        return out

    # --- history --------------------------------------------------------------------

    @property
    def oldest_resumable(self) -> int:
        """The smallest ``since`` for which :meth:`changed_since` still knows every change
        (``welcome.limits.oldest_rev``). After a crash the revisions lost in it are the
        one exception above it: resuming from inside them gives a full snapshot."""
        return max(self._hist_base - 1, self._resume_floor)

    def changed_since(self, since: int) -> Iterator[str] | None:
        """Keys changed after revision ``since`` (with repeats), or None if out of window."""
        if since < self._hist_base - 1 or since > self.rev:
            return None
        lo, hi = self._unknown
        if lo < since < hi:
            return None  # the client saw revisions that were lost in a crash
        if since < self._resume_floor:
            return None  # stale flips at start-up have no revisions
        start = since + 1 - self._hist_base
        return (k for k in self._hist[start:] if k)

    def last_changes_since(self, since: int) -> dict[str, int] | None:
        """Each key changed after revision ``since``, with the revision of its last
        change (in order of those revisions), or None if out of window."""
        if self.changed_since(since) is None:
            return None
        start = since + 1 - self._hist_base
        base = self._hist_base + start
        last: dict[str, int] = {}
        for i, k in enumerate(self._hist[start:]):
            if k:
                last[k] = base + i
        return last

    def deleted_version(self, key: str) -> int:
        """The version a deleted key was deleted at (0 if unknown or not deleted)."""
        ns = self.namespace_of(key)
        return 0 if ns is None else ns.tombstones.get(key, 0)

    # --- the commit path ------------------------------------------------------------

    def _commit(
        self, ns: Namespace, key: str, entry: Entry | None, version: int, actor: str
    ) -> int:
        self.rev = rev = self.rev + 1
        if entry is None:
            ns.entries.pop(key, None)
            ns.tombstones[key] = version
        else:
            ns.entries[key] = entry
        hist = self._hist
        hist.append(key)
        if len(hist) > self._history_limit + (self._history_limit >> 2):
            drop = len(hist) - self._history_limit
            del hist[:drop]
            self._hist_base += drop
        change = Change(key, rev, version, entry, actor, ns.name)
        for listener in self._listeners:
            listener(change)
        return rev

    def _owned_ns(self, key: str, owned: Container[str]) -> Namespace:
        ns = self.namespace_of(key)
        if ns is None or ns.name not in owned:
            where = "no namespace" if ns is None else f"namespace {ns.name!r}"
            raise HubError(
                ErrorCode.NOT_OWNER, f"key {key!r} is under {where}, which you do not own"
            )
        return ns

    @staticmethod
    def _check_expect(key: str, current: Entry | None, expect: int | None) -> None:
        if expect is None:
            return
        have = 0 if current is None else current.version
        if have != expect:
            raise HubError(
                ErrorCode.CONFLICT,
                f"{key!r} is at version {have}, not {expect}",
                {"key": key, "version": have},
            )

    def _is_equal(self, current: Entry, raw: bytes, value: Any) -> bool:
        if current.raw == raw:
            return True
        return json_equal(self._decode(current.raw), value)

    # The methods below are the Writer's: they trust that the key is valid and the
    # value encoded within the limit, and check ownership and expect_version.

    def _set(
        self,
        w: Writer,
        key: str,
        raw: bytes,
        value: Any,
        expect_version: int | None,
        epoch: int,
    ) -> WriteResult:
        ns = self._owned_ns(key, w.owned)
        current = ns.entries.get(key)
        self._check_expect(key, current, expect_version)
        return self._apply_set(ns, key, raw, value, current, epoch, w.actor)

    def _apply_set(
        self,
        ns: Namespace,
        key: str,
        raw: bytes,
        value: Any,
        current: Entry | None,
        epoch: int,
        actor: str,
    ) -> WriteResult:
        if current is not None and self._is_equal(current, raw, value):
            if not current.stale:
                current.wepoch = epoch  # an equal write counts as written for sync
                return WriteResult(key, current.version, current.rev, False)
            # an equal write clears the stale flag: new rev, same version and ts
            entry = Entry(key, current.raw, current.version, 0, ns.name, False, current.ts, epoch)
        else:
            if current is not None:
                version = current.version + 1
            else:
                tomb = ns.tombstones.pop(key, 0)
                version = (tomb if tomb > self.version_floor else self.version_floor) + 1
            entry = Entry(key, _exact(raw), version, 0, ns.name, False, self._now(), epoch)
        entry.rev = self.rev + 1
        rev = self._commit(ns, key, entry, entry.version, actor)
        return WriteResult(key, entry.version, rev, True)

    def _set_many(self, w: Writer, ops: Sequence[SetOp], epoch: int) -> list[WriteResult]:
        """Atomic batch: every entry is applied with consecutive revisions, or none."""
        checked: list[tuple[Namespace, SetOp]] = []
        seen: set[str] = set()
        for i, op in enumerate(ops):
            try:
                if op.key in seen:
                    raise HubError(ErrorCode.BAD_REQUEST, f"key {op.key!r} appears twice")
                seen.add(op.key)
                ns = self._owned_ns(op.key, w.owned)
                self._check_expect(op.key, ns.entries.get(op.key), op.expect_version)
            except HubError as e:
                details = dict(e.details or {})
                details["index"] = i
                details.setdefault("key", op.key)
                raise HubError(e.code, f"entry {i}: {e.message}", details) from None
            checked.append((ns, op))
        actor = w.actor
        return [
            self._apply_set(ns, op.key, op.raw, op.value, ns.entries.get(op.key), epoch, actor)
            for ns, op in checked
        ]

    def _delete(self, w: Writer, key: str, expect_version: int | None) -> WriteResult:
        ns = self._owned_ns(key, w.owned)
        current = ns.entries.get(key)
        self._check_expect(key, current, expect_version)
        if current is None:
            raise HubError(ErrorCode.NOT_FOUND, f"key {key!r} does not exist", {"key": key})
        return self._apply_delete(ns, current, w.actor)

    def _apply_delete(self, ns: Namespace, current: Entry, actor: str) -> WriteResult:
        version = current.version + 1
        rev = self._commit(ns, current.key, None, version, actor)
        return WriteResult(current.key, version, rev, True)

    def _touch(self, w: Writer, key: str, epoch: int) -> None:
        ns = self._owned_ns(key, w.owned)
        current = ns.entries.get(key)
        if current is not None:
            current.wepoch = epoch

    def _sync(self, w: Writer, ns_name: str, epoch: int, prefix: str | None) -> list[WriteResult]:
        ns = self._namespaces.get(ns_name)
        if ns is None or ns_name not in w.owned:
            return []
        doomed = [
            e
            for e in ns.entries.values()
            if e.wepoch != epoch and (prefix is None or is_prefix_of(prefix, e.key))
        ]
        return [self._apply_delete(ns, e, w.actor) for e in doomed]

    # --- the hub's own judgement ----------------------------------------------------------

    def mark_stale(
        self, ns_name: str, *, actor: str, stale: bool = True, prefix: str | None = None
    ) -> int:
        """Flip every key of a namespace (or only those at or below ``prefix``) to
        ``stale``; returns the number flipped.

        Not owner-scoped: staleness is the hub's statement that an owner (or the
        upstream it mirrors) is gone, made when a client disconnects or by an adapter
        for its own namespace through :meth:`Writer.mark_stale`. Fresh-again happens
        per key, when the owner writes it. Each flip is a change with a new revision;
        at most one per key per disconnect, so the hub's flips are bounded by the
        number of keys.
        """
        ns = self._namespaces.get(ns_name)
        if ns is None:
            return 0
        flips = [
            e
            for e in ns.entries.values()
            if e.stale is not stale and (prefix is None or is_prefix_of(prefix, e.key))
        ]
        since = self._now() if stale else 0
        for e in flips:
            entry = Entry(
                e.key, e.raw, e.version, self.rev + 1, ns.name, stale, e.ts, e.wepoch, since
            )
            self._commit(ns, e.key, entry, e.version, actor)
        return len(flips)


def _covers(pattern: Pattern, ns_name: str) -> bool:
    """Does ``pattern`` match every key at or below namespace ``ns_name``?"""
    if not pattern or pattern[-1] != GLOBSTAR:
        return False
    head = pattern[:-1]
    segs = ns_name.split(".")
    if len(head) > len(segs):
        return False
    return all(p == STAR or p == s for p, s in zip(head, segs, strict=False))
