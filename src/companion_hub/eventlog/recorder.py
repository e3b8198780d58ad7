"""The hub's side of the event log: recovery at start, recording while running.

Recovery (:func:`recover`) loads the latest compact snapshot and replays the changes
after it into the store. Every restored key comes back stale (its owner has not
confirmed it yet); that flip costs no revision and no log row, so that nothing
stands between a restarted hub and its clients' first durable writes (a client
resuming from before the restart then gets a full snapshot). The caller deletes the
hub's own keys, which are rebuilt rather than restored, through the normal commit
path. After a crash, revisions and versions skip a safety gap: writes acknowledged
before the crash may not have reached the log, and their numbers must never be
handed out again, not even for a key the log has never heard of (the version
floor).

The :class:`Recorder` turns every committed change, event, command outcome and
session event into a row for the log's writer thread. Nothing here touches the disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from ..core.store import Change, Entry, Store
from .store import EventLog, snapshot_entries

log = logging.getLogger("companion_hub.eventlog")

HUB_NAMESPACE = "hub"
_enc = msgspec.json.Encoder()


@dataclass
class Recovered:
    rev: int  # the revision the hub continues from
    logged_rev: int  # the last revision in the log
    clean: bool  # the previous run closed the log cleanly
    keys: int
    changes_replayed: int
    snapshot_rev: int
    seconds: float
    namespaces: list[str]
    version_floor: int = 0  # a key with no history starts above this version
    flipped: int = 0  # restored entries that came back stale without a logged flip


def recover(event_log: EventLog, store: Store, history_limit: int, crash_gap: int = 0) -> Recovered:
    """Load the logged state into an empty store (blocking: start-up only).

    After an unclean stop, ``crash_gap`` is added to the revision, to every restored
    version, and to the persisted version floor, which is written back before the
    hub serves anyone (each unclean start raises it again, so the floor covers the
    lost windows of every earlier run)."""
    t0 = time.perf_counter()
    image = event_log.latest_snapshot()
    state: dict[str, Entry] = {}
    tombstones: dict[str, int] = {}
    base = 0
    if image is not None:
        base = image.rev
        tombstones.update(image.tombstones)
        for se in snapshot_entries(event_log.db, image):
            state[se.key] = Entry(
                se.key,
                bytes(se.value),
                se.version,
                se.rev,
                se.owner,
                se.stale,
                se.ts,
                0,
                se.stale_since if se.stale else 0,
            )
    # keys changed before the snapshot that the log still has: the resume window
    start = max(event_log.oldest_rev(), base - history_limit)
    # (only the run after the latest crash gap: resume cannot span revisions never logged)
    history = event_log.contiguous_keys_before(start, base) if start < base else []
    rev = base
    replayed = 0
    for row in event_log.changes_after(base):
        r, key, version, deleted, value, owner, stale, ts, _actor = row
        if r != rev + 1:
            log.warning("gap in the logged revisions", extra={"after": rev, "next": r})
            history.clear()  # incremental resume cannot span a gap
        rev = r
        replayed += 1
        history.append(key)
        if deleted:
            state.pop(key, None)
            tombstones[key] = version
        else:
            # stale: 0 fresh, else when it went stale (1: a log from before that was kept)
            since = stale if stale > 1 else 0
            state[key] = Entry(key, value or b"null", version, r, owner, bool(stale), ts, 0, since)
            tombstones.pop(key, None)
    clean = event_log.take_clean_marker()
    # the hub's exempt stale flips: at most one per restored key
    gap = 0 if clean else crash_gap + len(state)
    floor = _int(event_log.meta("version_floor")) + gap
    if gap:
        event_log.set_meta("version_floor", str(floor))
    namespaces = [(n, o) for n, o in event_log.namespaces() if n != HUB_NAMESPACE]
    restored = {n for n, _ in namespaces}
    flipped = store.restore(
        rev=rev,
        namespaces=[(HUB_NAMESPACE, HUB_NAMESPACE), *namespaces],
        entries=state.values(),
        tombstones=tombstones,
        history=history,
        gap=gap,
        version_floor=floor,
        stale_namespaces=restored,
    )
    return Recovered(
        rev=rev + gap,
        logged_rev=rev,
        clean=clean,
        keys=len(state),
        changes_replayed=replayed,
        snapshot_rev=base,
        seconds=time.perf_counter() - t0,
        namespaces=sorted(restored),
        version_floor=floor,
        flipped=flipped,
    )


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


class Recorder:
    """Feeds the log from the running hub (event loop side; never blocks)."""

    def __init__(self, event_log: EventLog, store: Store, snapshot_every: int) -> None:
        self.log = event_log
        self.store = store
        self.snapshot_every = max(1, snapshot_every)
        self._since_snapshot = 0
        self._snapshot_scheduled = False
        store.add_listener(self.on_change)

    # --- changes ------------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        if change.entry is None:
            self.log.append_change(
                (
                    change.rev,
                    change.key,
                    change.version,
                    1,
                    None,
                    change.owner,
                    0,
                    int(time.time() * 1000),
                    change.actor,
                )
            )
        else:  # the writer thread makes the row from the (immutable) entry
            self.log.append_committed(change)
        self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every and not self._snapshot_scheduled:
            self._snapshot_scheduled = True
            asyncio.get_running_loop().call_soon(self.snapshot)

    def snapshot(self) -> None:
        """Queue a compact image of the current state (after the changes before it)."""
        self._snapshot_scheduled = False
        self._since_snapshot = 0
        store = self.store
        entries: list[Entry] = []
        tombstones: dict[str, int] = {}
        for ns in store.namespaces():
            tombstones.update(ns.tombstones)
            entries.extend(ns.entries.values())
        self.log.append_snapshot(store.rev, entries, tombstones)

    def namespace(self, name: str, owner: str) -> None:
        self.log.append_namespace(name, owner)

    # --- records ---------------------------------------------------------------------

    def _record(self, kind: str, client: str | None, key: str | None, data: Any) -> None:
        self.log.append_record(
            (self.store.rev, int(time.time() * 1000), kind, client, key, _enc.encode(data))
        )

    def event(self, key: str, data: Any, source: str) -> None:
        self._record("event", source, key, {"data": data})

    def command(
        self,
        *,
        caller: str,
        target: str,
        name: str,
        params: dict[str, Any],
        ok: bool,
        result: Any,
        error: dict[str, Any] | None,
        duration_ms: float,
    ) -> None:
        data: dict[str, Any] = {
            "name": name,
            "params": params,
            "target": target,
            "ok": ok,
            "duration_ms": round(duration_ms, 3),
        }
        if ok:
            data["result"] = result
        else:
            data["error"] = error
        self._record("command", caller, target, data)

    def session(
        self,
        event: str,
        client: str,
        *,
        address: str = "",
        session: str = "",
        reason: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        data = {"event": event, "address": address, "session": session, "reason": reason}
        if extra:
            data.update(extra)
        self._record("session", client, None, data)
