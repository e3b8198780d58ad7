"""The event log on SQLite: schema, the off-loop batched writer, and recovery reads.

Layout (one SQLite database in WAL mode, ``<data dir>/hub.sqlite3``):

- ``meta(k, v)``: ``hub_id``, ``schema``.
- ``changes(rev PRIMARY KEY, key, version, deleted, value, owner, stale, ts, actor)``:
  every committed change of the store, in revision order (value is the JSON bytes;
  ``stale`` is 0 for a fresh entry, else the time it went stale in epoch ms, or 1 in
  rows written before that time was kept).
- ``key_revs(key, rev)`` (the primary key is both): which revisions changed a key, for
  the audit queries by key pattern. Filled by the writer thread in large batches sorted
  by key (meta ``indexed_rev``: every change up to it is in), not row by row: an index
  on ``changes (key, rev)`` kept per transaction dirtied one page per distinct key in
  each batch (~5.9 KB of WAL per change with keys written in rotation, ~75% of the
  writer thread's time). Changes after ``indexed_rev`` (the tail, at most about
  ``index_batch`` rows) are found by scanning them by revision.
- ``records(id, rev, ts, type, client, key, data)``: events, commands with their
  outcome, session events; ``rev`` is the hub's revision when it happened.
- ``snapshots(rev PRIMARY KEY, ts, data)`` and ``snapshot_parts(rev, seq, data)``:
  compact images of the whole state, so that start-up replays only the changes after
  the last one. ``data`` is the image's head (its revision, the tombstone versions and
  how many parts follow); the entries are in ``snapshot_parts``, 5,000 to a row, each
  encoded, written and dropped in turn, so that writing a snapshot of a million keys
  never holds its whole JSON (~110 MB) in memory (schema 2 kept the entries inline in
  ``data``: still read).
- ``namespaces(name PRIMARY KEY, owner)``.

The event loop only appends tuples to a thread-safe deque. A writer thread takes them
in batches (one transaction each, at most every ``flush_interval``) and then publishes
``durable_rev``: every change with a revision up to it is committed to the database.
With ``synchronous=NORMAL`` in WAL mode a committed transaction survives a crash of
the process (``kill -9``); after a power loss the last transactions before it may be
missing, but the database opens cleanly.

When a transaction fails (a full disk, an I/O error) its rows stay with the writer
thread, still counted as pending, and it is retried in order with a capped back-off,
in smaller pieces, on a fresh connection now and then; ``EventLog.error`` holds the
reason until the next commit succeeds. A snapshot that cannot be written is skipped.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..core.store import Change

log = logging.getLogger("companion_hub.eventlog")

# 2: key_revs filled in batches replaces the per-row index changes_key
# 3: snapshot entries in snapshot_parts rather than in one blob
SCHEMA = 3
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
DROP INDEX IF EXISTS changes_key;
CREATE TABLE IF NOT EXISTS key_revs (
    key TEXT NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (key, rev)
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS snapshot_parts (
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (rev, seq)
);
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
    stale: bool = False  # absent in snapshots written before it was added
    stale_since: int = 0  # likewise


class SnapshotImage(msgspec.Struct, omit_defaults=True):
    """A snapshot's head (the ``data`` of its ``snapshots`` row). ``parts``: how many
    rows of entries follow in ``snapshot_parts``; a schema 2 snapshot has its
    ``entries`` here instead. Read the entries with :func:`snapshot_entries`."""

    rev: int
    tombstones: dict[str, int]
    parts: int = 0
    entries: list[SnapshotEntry] = msgspec.field(default_factory=list)


_snap_enc = msgspec.json.Encoder()
_snap_dec = msgspec.json.Decoder(SnapshotImage)
_part_dec = msgspec.json.Decoder(list[SnapshotEntry])
SNAPSHOT_PART = 5_000  # entries per snapshot_parts row


class SnapshotError(Exception):
    """A snapshot's parts are not all there (the database was damaged)."""


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
    index_batch: int = 50_000  # changes indexed by key together (see key_revs)
    index_idle: float = 2.0  # seconds without new rows before a smaller tail is indexed
    snapshot_part: int = SNAPSHOT_PART  # snapshot entries per snapshot_parts row
    snapshot_step: int = 1  # parts per transaction (between batches of changes)


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
    indexed_rev: int = 0
    index_seconds: float = 0.0
    snapshots: int = 0
    snapshot_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


_MAX_BATCH = 50_000  # rows in one transaction at most
_RETRY_FIRST = 0.05  # seconds before the first retry of a failed write; doubled up to
_RETRY_MAX = 1.0  # this
_LOG_EVERY = 5.0  # seconds: one log line per distinct write error at most this often
_REOPEN_EVERY = 5  # consecutive failures between fresh connections
_INDEX_RETRY = 5.0  # seconds before indexing is tried again after it failed


def describe_error(exc: BaseException) -> str:
    """A write error for humans: ``database or disk is full (SQLITE_FULL)``."""
    name = getattr(exc, "sqlite_errorname", None)
    text = str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


class EventLog:
    """The append-only log. ``append_*`` are called on the event loop and never block.

    Rows go through two stages before they are durable: the queue (appended on the
    loop) and the writer thread's current batch (taken from the queue, not committed
    yet: *in flight*). :attr:`pending` counts both, so back-pressure keeps the writers
    held for as long as the disk refuses a batch. A failed transaction is retried, in
    order, with a capped back-off and in smaller pieces (a smaller transaction may fit
    where the whole batch does not); :attr:`error` says why while it fails.
    """

    def __init__(self, settings: LogSettings) -> None:
        self.settings = settings
        self.db = connect(settings.path)
        # (kind, row) tuples, or a Change (append_committed)
        self._queue: collections.deque[tuple[str, Any] | Change] = collections.deque()
        # the writer thread's batch: taken from the queue, not committed yet; only the
        # writer thread touches it, the loop reads ``_in_flight`` (its length)
        self._batch: list[tuple[str, Any] | Change] = []
        self._in_flight = 0
        self._chunk = _MAX_BATCH  # rows per transaction now (smaller after a failure)
        self._wake = threading.Event()
        self._interrupt = threading.Event()  # cuts a retry's back-off short (close)
        self._stop = False
        self._give_up_at: float | None = None  # monotonic: close() stops retrying then
        self._thread: threading.Thread | None = None
        self.stats = LogStats()
        self.durable_rev = self._max_rev()
        self.stats.durable_rev = self.durable_rev
        self.oldest = self.oldest_rev()  # kept current by the writer (read on the loop)
        self.flushed = threading.Event()  # set after every batch (tests, shutdown)
        # called from the writer thread after durable_rev moved, while durable_wanted
        # (the hub then answers its durable writes on the loop)
        self.on_durable: Callable[[], None] | None = None
        self.durable_wanted = False
        self.write_delay = 0.0  # test hook: simulate a slow disk (seconds per batch)
        # why the log cannot write right now (None: the last write succeeded)
        self.error: str | None = None
        self.error_since: float | None = None  # wall-clock time of the first failure
        self._failures = 0  # consecutive failed attempts
        self._logged: dict[str, float] = {}  # error -> when it was last logged
        self.stats.indexed_rev = self.indexed_rev = int(self.meta("indexed_rev") or 0)
        self._index_after = 0.0  # monotonic: no indexing before (after a failure)
        self._snap: SnapshotWriter | None = None  # a snapshot being written (writer thread)

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
        """Rows not committed yet: queued, plus in flight in the writer thread."""
        # the queue first: the writer counts a batch in flight before it takes it, so
        # this sum can read high for a moment, never low
        return len(self._queue) + self._in_flight

    @property
    def over_limit(self) -> bool:
        return len(self._queue) + self._in_flight >= self.settings.max_pending

    def append_change(self, row: ChangeRow) -> None:
        self._queue.append(("c", row))
        self.stats.appended += 1
        if not self._wake.is_set():
            self._wake.set()

    def append_committed(self, change: Change) -> None:
        """Queue a committed change that left an entry (not a delete): the queue keeps
        the Change itself, and the writer thread makes the row from its immutable
        entry. A row built here would cost the loop two tuples per change, and the
        queue ~100 more bytes per waiting change (it can hold 100,000 during a bulk
        load, and the memory it took stays with the process)."""
        self._queue.append(change)
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
        """Write what is queued, stop the thread, close the database. While the disk
        refuses, keep retrying for ``timeout`` seconds, then give up on the rest (the log
        is then not marked clean: the next start treats it as a crash)."""
        self._give_up_at = time.monotonic() + timeout
        self._stop = True
        self._wake.set()
        self._interrupt.set()  # retry now rather than after the back-off
        stuck = False
        if self._thread is not None:
            # a single attempt can outlast the deadline (a busy database): wait for it
            self._thread.join(timeout + 30.0)
            stuck = self._thread.is_alive()
            self._thread = None
        else:
            self._drain()
            self.index_tail(0)
        clean = not stuck and not self._queue and not self._batch
        if clean:
            # everything acknowledged is on disk: the next start needs no safety gap
            try:
                self.set_meta("clean_rev", str(self._max_rev()))
            except sqlite3.Error as exc:
                log.error(
                    "event log: cannot mark the log closed cleanly",
                    extra={"error": describe_error(exc)},
                )
        else:
            log.error(
                "event log closed with rows it could not write",
                extra={"rows": self.pending, "error": self.error},
            )
        if not stuck:  # a thread still inside SQLite keeps its connection
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
        seen, quiet_since = -1, time.monotonic()
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            if not self._drain():
                return  # close() gave up
            if self._stop and not self._queue:
                self.index_tail(0)
                return
            now = time.monotonic()
            if self.stats.appended != seen:
                seen, quiet_since = self.stats.appended, now
            if now - quiet_since >= self.settings.index_idle:
                self.index_tail(1)  # a quiet moment: index what is left
            else:
                self.index_tail(self.settings.index_batch)
            if not self._stop:
                time.sleep(interval / 2)  # let a batch build up

    def _drain(self) -> bool:
        """Commit everything queued, in order, retrying failed transactions until they
        succeed; False when close() gave up first."""
        queue = self._queue
        batch = self._batch
        while True:
            if not batch:
                if not queue:
                    if self._snap is None:
                        return True
                    self._snapshot_step()  # nothing else to write: the next step
                    continue
                n = min(len(queue), _MAX_BATCH)
                self._in_flight = n  # before taking them: `pending` never reads low
                popleft = queue.popleft
                batch.extend([popleft() for _ in range(n)])
                self.stats.max_pending_seen = max(self.stats.max_pending_seen, n + len(queue))
            first = batch[0]
            if type(first) is tuple and first[0] == "s":
                while self._snap is not None:  # one at a time (two only at a close)
                    self._snapshot_step()
                rev, entries, tombstones = first[1]
                self._snap = SnapshotWriter(rev, entries, tombstones, self.settings.snapshot_part)
                del batch[0]
                self._in_flight -= 1
                continue
            try:
                n, last_rev = self._commit(batch, self._chunk)
            except Exception as exc:  # a full disk, a read-only file: retry in a while
                if not self._failed(exc):
                    return False
                continue
            del batch[:n]
            if last_rev > self.durable_rev:
                self.durable_rev = last_rev
                self.stats.durable_rev = last_rev
                if self.durable_wanted and self.on_durable is not None:
                    self.on_durable()
            self._in_flight -= n  # after durable_rev: the two never disagree for long
            self._succeeded()
            self.flushed.set()
            if self._snap is not None:
                # a snapshot is written in steps between batches of changes, so that
                # the queue (and the memory it holds) does not grow behind it
                self._snapshot_step()

    def _commit(self, batch: list[tuple[str, Any] | Change], limit: int) -> tuple[int, int]:
        """One transaction: the rows at the front of ``batch``, at most ``limit`` and up
        to the first snapshot. Returns (rows committed, the last change's rev or 0)."""
        changes: list[ChangeRow] = []
        records: list[RecordRow] = []
        namespaces: list[tuple[str, str]] = []
        n = 0
        for item in batch:
            if n == limit:
                break
            if not isinstance(item, Change):
                kind, row = item
                if kind == "s":
                    break
                if kind == "c":
                    changes.append(row)
                elif kind == "r":
                    records.append(row)
                else:
                    namespaces.append(row)
            else:  # a Change with an entry (append_committed)
                e = item.entry
                assert e is not None
                # the stale column holds when it went stale (0: fresh)
                stale = (e.stale_since or 1) if e.stale else 0
                changes.append(
                    (e.rev, e.key, e.version, 0, e.raw, e.owner, stale, e.ts, item.actor)
                )
            n += 1
        t0 = time.perf_counter()
        if self.write_delay:
            time.sleep(self.write_delay)
        db = self.db
        db.execute("BEGIN")
        if changes:
            db.executemany(
                "INSERT OR REPLACE INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", changes
            )
        if records:
            db.executemany(
                "INSERT INTO records (rev, ts, type, client, key, data) VALUES (?, ?, ?, ?, ?, ?)",
                records,
            )
        if namespaces:
            db.executemany("INSERT OR REPLACE INTO namespaces VALUES (?, ?)", namespaces)
        db.execute("COMMIT")
        self.stats.write_seconds += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.written += len(changes) + len(records)
        return n, changes[-1][0] if changes else 0

    def index_tail(self, least: int) -> None:
        """Writer thread: add the committed changes after ``indexed_rev`` to ``key_revs``
        in one transaction, sorted by key (each index page is written about once per
        batch), when at least ``least`` of them wait. A failure is logged and left for
        later: the queries scan the tail meanwhile, and writers are never held for it."""
        tail = self.durable_rev - self.indexed_rev
        if tail <= 0 or tail < least or time.monotonic() < self._index_after:
            return
        lo = self.indexed_rev
        # one batch at most per transaction: a step takes ~20-100 ms (longer with many
        # keys in turn and a large index), and commits of new rows wait behind it
        hi = min(self.durable_rev, lo + max(1, self.settings.index_batch))
        t0 = time.perf_counter()
        db = self.db
        try:
            db.execute("BEGIN")
            db.execute(
                "INSERT OR IGNORE INTO key_revs (key, rev) "
                "SELECT key, rev FROM changes WHERE rev > ? AND rev <= ? ORDER BY key, rev",
                (lo, hi),
            )
            self.set_meta("indexed_rev", str(hi))
            db.execute("COMMIT")
        except Exception as exc:
            self._note_error(exc, "event log: indexing by key failed; it runs again later")
            self._rollback()
            self._index_after = time.monotonic() + _INDEX_RETRY
            return
        self.indexed_rev = self.stats.indexed_rev = hi
        self.stats.index_seconds += time.perf_counter() - t0

    def _snapshot_step(self) -> None:
        """Write the next step of the snapshot in progress (its own transaction); on the
        last step its head, then compaction. A snapshot that cannot be written is
        skipped (it only shortens the next start and allows compaction; the history
        must not wait for the largest write there is): the parts it left go at the next
        compaction, the next snapshot comes ``snapshot_every`` changes on."""
        job = self._snap
        assert job is not None
        db = self.db
        t0 = time.perf_counter()
        try:
            db.execute("BEGIN")
            done = job.step(db, self.settings.snapshot_step)
            db.execute("COMMIT")
        except Exception as exc:
            self._snap = None
            self._note_error(exc, "event log: snapshot skipped, it could not be written", job.rev)
            self._rollback()
            return
        finally:
            self.stats.snapshot_seconds += time.perf_counter() - t0
        if not done:
            return
        self._snap = None
        self.stats.snapshots += 1
        try:
            self._compact()
        except Exception as exc:
            self._note_error(exc, "event log: compaction failed; it runs again later", job.rev)
            self._rollback()

    def _note_error(self, exc: BaseException, what: str, rev: int | None = None) -> str:
        """Count an error and log it, once per distinct error every few seconds."""
        msg = describe_error(exc)
        self.stats.errors += 1
        self.stats.last_error = msg
        if self._may_log(msg):
            extra: dict[str, Any] = {
                "error": msg,
                "pending": self.pending,
                "durable_rev": self.durable_rev,
                "failures": self._failures,
            }
            if rev is not None:
                extra["snapshot_rev"] = rev
            log.error(what, extra=extra)
        return msg

    def _may_log(self, what: str) -> bool:
        """Rate limit: True at most once every ``_LOG_EVERY`` seconds per ``what``."""
        now = time.monotonic()
        if now - self._logged.get(what, -_LOG_EVERY) < _LOG_EVERY:
            return False
        if len(self._logged) > 100:  # a bounded memory of distinct errors
            self._logged.clear()
        self._logged[what] = now
        return True

    def _failed(self, exc: BaseException) -> bool:
        """A transaction failed: make the connection usable, record the error, wait.
        False when close() gave up."""
        self._rollback()
        self._failures += 1
        if self.error is None:
            self.error_since = time.time()
        self.error = self._note_error(exc, "event log write failed; writers are held")
        self._chunk = max(1, min(self._chunk, len(self._batch)) // 4)
        if self._failures % _REOPEN_EVERY == 0:
            self._reopen()
        return self._pause(min(_RETRY_MAX, _RETRY_FIRST * 2 ** min(self._failures - 1, 16)))

    def _succeeded(self) -> None:
        if self.error is not None:
            down = time.time() - (self.error_since or time.time())
            # a long outage always says it is over; a flapping one at most every few seconds
            if down >= _LOG_EVERY or self._may_log("resumed"):
                log.warning(
                    "event log writes resumed",
                    extra={
                        "failures": self._failures,
                        "seconds": round(down, 3),
                        "pending": self.pending,
                        "durable_rev": self.durable_rev,
                    },
                )
            self.error = None
            self.error_since = None
        self._failures = 0
        if self._chunk < _MAX_BATCH:
            self._chunk = min(_MAX_BATCH, self._chunk * 2)

    def _rollback(self) -> None:
        """End a transaction a failure left open (SQLite may have rolled it back); a
        connection that cannot leave it is replaced."""
        db = self.db
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        if db.in_transaction:
            self._reopen()

    def _reopen(self) -> None:
        """A fresh connection: no state left over from the failures (a stuck transaction,
        a page cache that saw errors). Kept as it is when the database cannot be opened."""
        if self.settings.path == ":memory:":
            return  # a new connection would be a new, empty database
        try:
            db = connect(self.settings.path)
        except sqlite3.Error as exc:
            self._note_error(exc, "event log: cannot reopen the database")
            return
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self.db = db

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` before a retry (cut short by close()); False once close() has
        stopped waiting for the disk."""
        give_up = self._give_up_at
        if give_up is not None:
            left = give_up - time.monotonic()
            if left <= 0:
                return False
            delay = min(delay, left)
        self._interrupt.wait(delay)
        self._interrupt.clear()
        return self._give_up_at is None or time.monotonic() < self._give_up_at

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
        # 100,000 keys), whether or not retention cuts any history now; so do the parts
        # of a snapshot whose head was never written
        db.execute("BEGIN")
        db.execute("DELETE FROM snapshots WHERE rev < ?", (snap_rev,))
        db.execute("DELETE FROM snapshot_parts WHERE rev != ?", (snap_rev,))
        db.execute("COMMIT")
        max_rev = self._max_rev()
        cut = max_rev - s.retention_changes
        age_cut_ts = int((time.time() - s.retention_days * 86400) * 1000)
        row = db.execute("SELECT MAX(rev) FROM changes WHERE ts < ?", (age_cut_ts,)).fetchone()
        cut = max(cut, int(row[0] or 0))
        cut = min(cut, snap_rev)
        if cut <= 0:
            return
        db.execute("BEGIN")
        # the index rows of exactly the changes that go (each found by its primary key)
        db.execute(
            "DELETE FROM key_revs WHERE (key, rev) IN "
            "(SELECT key, rev FROM changes WHERE rev <= ?)",
            (cut,),
        )
        db.execute("DELETE FROM changes WHERE rev <= ?", (cut,))
        db.execute("DELETE FROM records WHERE rev <= ?", (cut,))
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
        """The latest snapshot's head (its entries: :func:`snapshot_entries`)."""
        return read_snapshot(self.db)

    def changes_after(self, rev: int, batch: int = 50_000) -> Iterator[ChangeRow]:
        cur = self.db.execute(
            "SELECT rev, key, version, deleted, value, owner, stale, ts, actor "
            "FROM changes WHERE rev > ? ORDER BY rev",
            (rev,),
        )
        while rows := cur.fetchmany(batch):
            yield from rows

    def contiguous_keys_before(self, after: int, upto: int) -> list[str]:
        """The keys changed at the longest run of consecutive revisions that ends at
        ``upto`` and starts after ``after``, in order ([] if ``upto`` itself is not
        logged). A crash leaves a gap of revisions that were never logged; the history
        after the latest gap is still good for incremental resume."""
        rows = self.db.execute(
            "SELECT rev, key FROM changes WHERE rev > ? AND rev <= ? ORDER BY rev DESC",
            (after, upto),
        )
        keys: list[str] = []
        expect = upto
        for rev, key in rows:
            if rev != expect:
                break
            keys.append(str(key))
            expect -= 1
        keys.reverse()
        return keys

    def namespaces(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self.db.execute("SELECT name, owner FROM namespaces")]


def _encode_part(entries: list[Any]) -> bytes:
    """Store entries as the JSON array of a snapshot part."""
    return _snap_enc.encode(
        [
            SnapshotEntry(
                e.key,
                msgspec.Raw(e.raw),
                e.version,
                e.rev,
                e.owner,
                e.ts,
                e.stale,
                e.stale_since,
            )
            for e in entries
        ]
    )


class SnapshotWriter:
    """One snapshot of ``entries`` (immutable store entries) at ``rev``, written in
    steps inside the caller's transactions: each step encodes, inserts and drops up to
    ``parts`` parts of ``part`` entries (memory: one part, ~0.5 MB at 5,000 entries);
    the last one writes the head, which makes the snapshot visible. Parts of a snapshot
    that never got its head are removed by the next compaction."""

    def __init__(
        self, rev: int, entries: list[Any], tombstones: dict[str, int], part: int = SNAPSHOT_PART
    ) -> None:
        self.rev = rev
        self.ts = int(time.time() * 1000)
        self.entries = entries
        self.tombstones = tombstones
        self.part = max(1, part)
        self.pos = 0  # entries written
        self.parts = 0  # parts written

    def step(self, db: sqlite3.Connection, parts: int) -> bool:
        """Write up to ``parts`` more parts; True when the head is written (done)."""
        if self.parts == 0:
            db.execute("DELETE FROM snapshot_parts WHERE rev = ?", (self.rev,))
        entries, part = self.entries, self.part
        for _ in range(max(1, parts)):
            if self.pos >= len(entries):
                break
            data = _encode_part(entries[self.pos : self.pos + part])
            db.execute("INSERT INTO snapshot_parts VALUES (?, ?, ?)", (self.rev, self.parts, data))
            del data
            self.pos += part
            self.parts += 1
            time.sleep(0)  # let the event loop run
        if self.pos < len(entries):
            return False
        head = _snap_enc.encode(SnapshotImage(self.rev, self.tombstones, self.parts))
        db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (self.rev, self.ts, head))
        self.entries = []  # the references go with the step that wrote the last part
        return True


def write_snapshot(
    db: sqlite3.Connection,
    rev: int,
    entries: list[Any],
    tombstones: dict[str, int],
    part: int = SNAPSHOT_PART,
) -> None:
    """Write a whole snapshot inside the caller's transaction (tools and tests)."""
    SnapshotWriter(rev, entries, tombstones, part).step(db, len(entries) // max(1, part) + 1)


def read_snapshot(db: sqlite3.Connection, rev: int | None = None) -> SnapshotImage | None:
    """The head of the snapshot at ``rev`` (the latest one when None), or None."""
    if rev is None:
        row = db.execute("SELECT data FROM snapshots ORDER BY rev DESC LIMIT 1").fetchone()
    else:
        row = db.execute("SELECT data FROM snapshots WHERE rev = ?", (rev,)).fetchone()
    return None if row is None else _snap_dec.decode(bytes(row[0]))


def snapshot_entries(db: sqlite3.Connection, image: SnapshotImage) -> Iterator[SnapshotEntry]:
    """A snapshot's entries, one part decoded at a time (consume them inside the read
    transaction that found the head). :class:`SnapshotError` if parts are missing."""
    yield from image.entries
    if not image.parts:
        return
    seen = 0
    cur = db.execute(
        "SELECT seq, data FROM snapshot_parts WHERE rev = ? ORDER BY seq", (image.rev,)
    )
    for seq, data in cur:
        if seq != seen:
            break
        seen += 1
        yield from _part_dec.decode(bytes(data))
    if seen != image.parts:
        raise SnapshotError(
            f"snapshot at rev {image.rev}: {seen} of its {image.parts} parts are readable"
        )


def encode_snapshot(
    rev: int, entries: list[Any], tombstones: dict[str, int], chunk: int = 5_000
) -> bytes:
    """A snapshot in one blob, as schema 2 wrote them into ``snapshots.data`` (still
    read; the hub writes :func:`write_snapshot`'s parts). For tools and tests."""
    parts: list[bytes] = []
    for i in range(0, len(entries), chunk):
        part = _encode_part(entries[i : i + chunk])
        parts.append(part[1:-1])
    return b'{"rev":%d,"entries":[%b],"tombstones":%b}' % (
        rev,
        b",".join(p for p in parts if p),
        _snap_enc.encode(tombstones),
    )
