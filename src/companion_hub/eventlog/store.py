"""The event log on SQLite: schema, the off-loop batched writer, and recovery reads.

Layout (one SQLite database in WAL mode, ``<data dir>/hub.sqlite3``):

- ``meta(k, v)``: ``hub_id``, ``schema``.
- ``changes(rev PRIMARY KEY, key, version, deleted, value, owner, stale, ts, actor)``:
  every committed change of the store, in revision order (value is the JSON bytes).
- ``records(id, rev, ts, type, client, key, data)``: events, commands with their
  outcome, session events; ``rev`` is the hub's revision when it happened.
- ``snapshots(rev PRIMARY KEY, ts, data)``: compact images of the whole state (entries
  and tombstone versions) so that start-up replays only the changes after the last one.
- ``namespaces(name PRIMARY KEY, owner)``.

The event loop only appends tuples to a thread-safe deque. A writer thread takes them
in batches (one transaction each, at most every ``flush_interval``) and then publishes
``durable_rev``: every change with a revision up to it is committed to the database.
With ``synchronous=NORMAL`` in WAL mode a committed transaction survives a crash of
the process (``kill -9``); after a power loss the last transactions before it may be
missing, but the database opens cleanly.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("companion_hub.eventlog")

SCHEMA = 1
_DDL = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB,
    owner TEXT NOT NULL,
    stale INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS changes_key ON changes (key, rev);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rev INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    client TEXT,
    key TEXT,
    data BLOB
);
CREATE INDEX IF NOT EXISTS records_rev ON records (rev);
CREATE TABLE IF NOT EXISTS snapshots (rev INTEGER PRIMARY KEY, ts INTEGER NOT NULL, data BLOB);
CREATE TABLE IF NOT EXISTS namespaces (name TEXT PRIMARY KEY, owner TEXT NOT NULL);
"""

# (rev, key, version, deleted, value, owner, stale, ts, actor)
ChangeRow = tuple[int, str, int, int, bytes | None, str, int, int, str | None]
# (rev, ts, type, client, key, data)
RecordRow = tuple[int, int, str, str | None, str | None, bytes | None]


class SnapshotEntry(msgspec.Struct, array_like=True):
    key: str
    value: msgspec.Raw
    version: int
    rev: int
    owner: str
    ts: int


class SnapshotImage(msgspec.Struct):
    rev: int
    entries: list[SnapshotEntry]
    tombstones: dict[str, int]


_snap_enc = msgspec.json.Encoder()
_snap_dec = msgspec.json.Decoder(SnapshotImage)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "companion-hub"


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_DDL)
    return db


@dataclass
class LogSettings:
    path: str  # a file, or ":memory:"
    flush_interval: float = 0.02  # seconds between batches at most
    max_pending: int = 200_000  # records waiting for the disk before writers are held
    snapshot_every: int = 200_000  # changes between compact snapshots
    retention_changes: int = 5_000_000  # keep at most this many changes
    retention_days: float = 30.0  # and nothing older than this (snapshots keep the state)


@dataclass
class LogStats:
    appended: int = 0
    written: int = 0
    batches: int = 0
    durable_rev: int = 0
    write_seconds: float = 0.0
    max_pending_seen: int = 0
    errors: int = 0
    last_error: str = ""
    compactions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class EventLog:
    """The append-only log. ``append_*`` are called on the event loop and never block."""

    def __init__(self, settings: LogSettings) -> None:
        self.settings = settings
        self.db = connect(settings.path)
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.stats = LogStats()
        self.durable_rev = self._max_rev()
        self.stats.durable_rev = self.durable_rev
        self.oldest = self.oldest_rev()  # kept current by the writer (read on the loop)
        self.flushed = threading.Event()  # set after every batch (tests, shutdown)
        self.write_delay = 0.0  # test hook: simulate a slow disk (seconds per batch)

    # --- meta ---------------------------------------------------------------------------

    def _max_rev(self) -> int:
        row = self.db.execute("SELECT MAX(rev) FROM changes").fetchone()
        return int(row[0] or 0)

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (key, value))

    # --- appending (event loop) ----------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def over_limit(self) -> bool:
        return len(self._queue) >= self.settings.max_pending

    def append_change(self, row: ChangeRow) -> None:
        self._queue.append(("c", row))
        self.stats.appended += 1
        if not self._wake.is_set():
            self._wake.set()

    def append_record(self, row: RecordRow) -> None:
        self._queue.append(("r", row))
        self.stats.appended += 1
        if not self._wake.is_set():
            self._wake.set()

    def append_namespace(self, name: str, owner: str) -> None:
        self._queue.append(("n", (name, owner)))
        self._wake.set()

    def append_snapshot(self, rev: int, entries: list[Any], tombstones: dict[str, int]) -> None:
        """Queue a compact snapshot; ``entries`` are immutable store entries (encoded in
        the writer thread, so the loop only pays for building the list)."""
        self._queue.append(("s", (rev, entries, tombstones)))
        self._wake.set()

    # --- the writer thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="eventlog-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the thread, close the database."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            clean = not self._thread.is_alive() and not self._queue
            self._thread = None
        else:
            self._drain()
            clean = True
        if clean:
            # everything acknowledged is on disk: the next start needs no safety gap
            self.set_meta("clean_rev", str(self._max_rev()))
        self.db.close()

    def take_clean_marker(self) -> bool:
        """Did the previous run close the log cleanly? (Clears the marker: a crash of
        this run must be seen as one.)"""
        marker = self.meta("clean_rev")
        self.db.execute("DELETE FROM meta WHERE k = 'clean_rev'")
        if self._max_rev() == 0:
            return True
        return marker == str(self._max_rev())

    def _run(self) -> None:
        interval = self.settings.flush_interval
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception as exc:  # a full disk, a read-only file: keep trying
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.error("event log write failed; retrying", extra={"error": str(exc)})
                time.sleep(0.5)
                continue
            if self._stop and not self._queue:
                return
            if not self._stop:
                time.sleep(interval / 2)  # let a batch build up

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            changes: list[ChangeRow] = []
            records: list[RecordRow] = []
            namespaces: list[tuple[str, str]] = []
            snapshots: list[tuple[int, list[Any], dict[str, int]]] = []
            n = 0
            while queue and n < 50_000:
                kind, row = queue[0]
                if kind == "c":
                    changes.append(row)
                elif kind == "r":
                    records.append(row)
                elif kind == "n":
                    namespaces.append(row)
                else:
                    snapshots.append(row)
                queue.popleft()
                n += 1
            self.stats.max_pending_seen = max(self.stats.max_pending_seen, n + len(queue))
            t0 = time.perf_counter()
            if self.write_delay:
                time.sleep(self.write_delay)
            db = self.db
            db.execute("BEGIN")
            try:
                if changes:
                    db.executemany(
                        "INSERT OR REPLACE INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", changes
                    )
                if records:
                    db.executemany(
                        "INSERT INTO records (rev, ts, type, client, key, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        records,
                    )
                if namespaces:
                    db.executemany("INSERT OR REPLACE INTO namespaces VALUES (?, ?)", namespaces)
                for rev, entries, tombstones in snapshots:
                    db.execute(
                        "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
                        (rev, int(time.time() * 1000), encode_snapshot(rev, entries, tombstones)),
                    )
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back
                    db.execute("ROLLBACK")
                # put the batch back in front, in order, and let the caller retry
                for item in reversed(
                    [("c", r) for r in changes]
                    + [("r", r) for r in records]
                    + [("n", r) for r in namespaces]
                    + [("s", r) for r in snapshots]
                ):
                    queue.appendleft(item)
                raise
            self.stats.write_seconds += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.written += len(changes) + len(records)
            if changes:
                self.durable_rev = max(self.durable_rev, changes[-1][0])
                self.stats.durable_rev = self.durable_rev
            if snapshots:
                self._compact()
            self.flushed.set()

    def _compact(self) -> None:
        """Retention: drop changes and records older than the limits, but only below
        the latest snapshot (the state stays recoverable)."""
        s = self.settings
        db = self.db
        row = db.execute("SELECT MAX(rev) FROM snapshots").fetchone()
        snap_rev = int(row[0] or 0)
        if not snap_rev:
            return
        # only the latest snapshot is ever read: older ones go at once (12 MB each at
        # 100,000 keys), whether or not retention cuts any history now
        db.execute("DELETE FROM snapshots WHERE rev < ?", (snap_rev,))
        max_rev = self._max_rev()
        cut = max_rev - s.retention_changes
        age_cut_ts = int((time.time() - s.retention_days * 86400) * 1000)
        row = db.execute("SELECT MAX(rev) FROM changes WHERE ts < ?", (age_cut_ts,)).fetchone()
        cut = max(cut, int(row[0] or 0))
        cut = min(cut, snap_rev)
        if cut <= 0:
            return
        db.execute("BEGIN")
        db.execute("DELETE FROM changes WHERE rev <= ?", (cut,))
        db.execute("DELETE FROM records WHERE rev <= ?", (cut,))
        db.execute("DELETE FROM snapshots WHERE rev < ?", (snap_rev,))
        db.execute("COMMIT")
        self.stats.compactions += 1
        self.oldest = self.oldest_rev()

    # --- reads (start-up, tools) ------------------------------------------------------------

    def oldest_rev(self) -> int:
        """The oldest revision the log can replay from (``since`` >= this is resumable)."""
        row = self.db.execute("SELECT MIN(rev) FROM changes").fetchone()
        if row[0] is None:
            return self._max_rev()
        return int(row[0]) - 1

    def latest_snapshot(self) -> SnapshotImage | None:
        row = self.db.execute("SELECT data FROM snapshots ORDER BY rev DESC LIMIT 1").fetchone()
        return None if row is None else _snap_dec.decode(row[0])

    def changes_after(self, rev: int, batch: int = 50_000) -> Iterator[ChangeRow]:
        cur = self.db.execute(
            "SELECT rev, key, version, deleted, value, owner, stale, ts, actor "
            "FROM changes WHERE rev > ? ORDER BY rev",
            (rev,),
        )
        while rows := cur.fetchmany(batch):
            yield from rows

    def keys_between(self, after: int, upto: int) -> list[str]:
        """The keys changed at revisions ``after+1 .. upto``, in order."""
        return [
            str(r[0])
            for r in self.db.execute(
                "SELECT key FROM changes WHERE rev > ? AND rev <= ? ORDER BY rev", (after, upto)
            )
        ]

    def namespaces(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self.db.execute("SELECT name, owner FROM namespaces")]


def encode_snapshot(
    rev: int, entries: list[Any], tombstones: dict[str, int], chunk: int = 5_000
) -> bytes:
    """The snapshot's JSON, encoded in slices so that the writer thread gives the GIL
    back to the event loop between them (a million entries in one call would hold it
    for a good part of a second)."""
    parts: list[bytes] = []
    for i in range(0, len(entries), chunk):
        part = _snap_enc.encode(
            [
                SnapshotEntry(e.key, msgspec.Raw(e.raw), e.version, e.rev, e.owner, e.ts)
                for e in entries[i : i + chunk]
            ]
        )
        parts.append(part[1:-1])
        time.sleep(0)  # let the loop run
    return b'{"rev":%d,"entries":[%b],"tombstones":%b}' % (
        rev,
        b",".join(p for p in parts if p),
        _snap_enc.encode(tombstones),
    )
