"""The event log's store without a hub: snapshot encoding, batching, recovery."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from companion_hub.core.store import Entry, Store
from companion_hub.eventlog.recorder import recover
from companion_hub.eventlog.store import (
    EventLog,
    LogSettings,
    SnapshotError,
    SnapshotWriter,
    _snap_dec,
    connect,
    encode_snapshot,
    read_snapshot,
    snapshot_entries,
    write_snapshot,
)


def entry(i: int) -> Entry:
    return Entry(f"app.a.k{i}", msgspec.json.encode({"n": i}), i + 1, 100 + i, "app.a", False, 5)


def test_snapshot_encoding_in_slices_round_trips() -> None:
    entries = [entry(i) for i in range(12)]
    img = _snap_dec.decode(encode_snapshot(111, entries, {"app.a.gone": 4}, chunk=5))
    assert img.rev == 111 and img.tombstones == {"app.a.gone": 4}
    assert [(e.key, bytes(e.value), e.version) for e in img.entries] == [
        (e.key, e.raw, e.version) for e in entries
    ]
    empty = _snap_dec.decode(encode_snapshot(1, [], {}))
    assert empty.entries == [] and empty.tombstones == {}


def test_recover_snapshot_plus_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path))
    log.append_namespace("app.a", "a")
    now = int(time.time() * 1000)  # recent: nothing is old enough for retention
    rows = [
        (1, "app.a.x", 1, 0, b"1", "app.a", 0, now, "a"),
        (2, "app.a.y", 1, 0, b"2", "app.a", 0, now, "a"),
        (3, "hub.info", 1, 0, b"{}", "hub", 0, now, "hub"),
    ]
    for r in rows:
        log.append_change(r)
    log.append_snapshot(
        3,
        [
            Entry("app.a.x", b"1", 1, 1, "app.a", False, 10),
            Entry("app.a.y", b"2", 1, 2, "app.a", False, 11),
        ],
        {"hub.info": 1},
    )
    log.append_change((4, "app.a.x", 2, 0, b"5", "app.a", 0, now, "a"))
    log.append_change((5, "app.a.y", 2, 1, None, "app.a", 0, now, "a"))
    log.close()

    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
    rec = recover(log, store, history_limit=100)
    assert (rec.rev, rec.keys, rec.snapshot_rev, rec.changes_replayed) == (5, 1, 3, 2)
    x = store.get("app.a.x")
    assert x is not None and (x.raw, x.version) == (b"5", 2)
    assert store.get("app.a.y") is None
    assert store.namespace("app.a").tombstones == {"app.a.y": 2}  # type: ignore[union-attr]
    assert store.namespace("hub").tombstones == {"hub.info": 1}  # type: ignore[union-attr]
    assert store.rev == 5
    # restored keys come back stale, without a revision: resuming from before the
    # restart is a full snapshot (which carries them), from now on incremental
    assert x.stale and rec.flipped == 1
    assert store.changed_since(0) is None and store.changed_since(4) is None
    assert list(store.changed_since(5) or ["x"]) == []
    log.close()


def test_recover_keeps_history_when_nothing_needs_flipping(tmp_path: Path) -> None:
    """A clean stop leaves every owner's keys stale in the log (and in the final
    snapshot): the next start flips nothing and incremental resume spans the restart."""
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path))
    log.append_namespace("app.a", "a")
    now = int(time.time() * 1000)
    log.append_change((1, "app.a.x", 1, 0, b"1", "app.a", 0, now, "a"))
    log.append_change((2, "app.a.y", 1, 0, b"2", "app.a", 0, now, "a"))
    log.append_change((3, "app.a.x", 1, 0, b"1", "app.a", 1, now, "hub"))
    log.append_change((4, "app.a.y", 1, 0, b"2", "app.a", 1, now, "hub"))
    log.append_snapshot(
        4,
        [
            Entry("app.a.x", b"1", 1, 3, "app.a", True, now),
            Entry("app.a.y", b"2", 1, 4, "app.a", True, now),
        ],
        {},
    )
    log.close()
    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
    rec = recover(log, store, history_limit=100)
    assert rec.flipped == 0 and rec.clean
    x = store.get("app.a.x")
    assert x is not None and x.stale and x.rev == 3
    assert list(store.changed_since(1) or []) == ["app.a.y", "app.a.x", "app.a.y"]
    log.close()


def test_unclean_start_raises_the_version_floor_and_persists_it(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path))
    log.append_namespace("app.a", "a")
    now = int(time.time() * 1000)
    log.append_change((1, "app.a.x", 1, 0, b"1", "app.a", 0, now, "a"))
    log.start()
    log.flushed.wait(5)
    log._stop = True  # a crash: the writer stops, no clean marker is written
    log._wake.set()
    assert log._thread is not None
    log._thread.join(5)
    log.db.close()
    floor = 0
    for run in (1, 2):
        log = EventLog(LogSettings(path=path))
        store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
        rec = recover(log, store, history_limit=100, crash_gap=100)
        gap = rec.rev - rec.logged_rev
        assert gap == 100 + 1  # the gap, plus one possible stale flip per restored key
        floor += gap
        assert not rec.clean and rec.version_floor == floor, run
        w = store.writer("a", {"app.a"})
        # a key the log never saw may have been created in the lost window
        assert w.set(f"app.a.new{run}", 1).version == floor + 1
        assert w.set("app.a.x", 2).version == 1 + gap + 1  # logged version + gap
        log.db.close()  # crash again: no clean marker
    log = EventLog(LogSettings(path=path))
    log.close()  # a clean open and close keeps the floor as it is
    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
    rec = recover(log, store, history_limit=100, crash_gap=100)
    assert rec.version_floor == floor
    log.close()


def test_only_the_latest_snapshot_is_kept(tmp_path: Path) -> None:
    log = EventLog(LogSettings(path=str(tmp_path / "hub.sqlite3")))
    now = int(time.time() * 1000)
    for rev in range(1, 4):
        log.append_change((rev, "app.a.x", rev, 0, b"1", "app.a", 0, now, "a"))
        log.append_snapshot(rev, [Entry("app.a.x", b"1", rev, rev, "app.a", False, now)], {})
    log.close()
    log = EventLog(LogSettings(path=str(tmp_path / "hub.sqlite3")))
    assert [r[0] for r in log.db.execute("SELECT rev FROM snapshots")] == [3]
    # and only its parts
    assert {r[0] for r in log.db.execute("SELECT rev FROM snapshot_parts")} == {3}
    assert log.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 3  # history kept
    log.close()


def test_snapshot_is_written_in_parts_and_read_back_in_order(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "hub.sqlite3"))
    entries = [entry(i) for i in range(12)]
    db.execute("BEGIN")
    write_snapshot(db, 111, entries, {"app.a.gone": 4}, part=5)
    db.execute("COMMIT")
    # the head holds no entries; they are in 3 rows of at most 5
    sizes = [
        len(msgspec.json.decode(d))
        for (d,) in db.execute("SELECT data FROM snapshot_parts WHERE rev = 111 ORDER BY seq")
    ]
    assert sizes == [5, 5, 2]
    head = read_snapshot(db)
    assert head is not None and (head.rev, head.parts, head.entries) == (111, 3, [])
    assert head.tombstones == {"app.a.gone": 4}
    got = [(e.key, bytes(e.value), e.version, e.rev) for e in snapshot_entries(db, head)]
    assert got == [(e.key, e.raw, e.version, e.rev) for e in entries]
    # a part gone missing is an error, not a smaller state
    db.execute("DELETE FROM snapshot_parts WHERE rev = 111 AND seq = 1")
    try:
        list(snapshot_entries(db, head))
    except SnapshotError as exc:
        assert "1 of its 3 parts" in str(exc)
    else:
        raise AssertionError("a missing part went unnoticed")


def test_recover_from_a_snapshot_in_parts(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path, snapshot_part=4))
    now = int(time.time() * 1000)
    entries = [entry(i) for i in range(10)]
    for e in entries:
        log.append_change((e.rev, e.key, e.version, 0, e.raw, e.owner, 0, now, "a"))
    log.append_snapshot(109, entries, {"app.a.gone": 3})
    log.close()
    log = EventLog(LogSettings(path=path))
    assert log.db.execute("SELECT COUNT(*) FROM snapshot_parts").fetchone()[0] == 3
    store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
    rec = recover(log, store, history_limit=100)
    assert (rec.keys, rec.snapshot_rev, rec.changes_replayed) == (10, 109, 0)
    assert [store.get(e.key).raw for e in entries] == [e.raw for e in entries]  # type: ignore[union-attr]
    log.close()


def test_recover_reads_a_snapshot_written_in_one_blob(tmp_path: Path) -> None:
    """Logs written before the parts (schema 2) keep the entries in the head."""
    path = str(tmp_path / "hub.sqlite3")
    db = connect(path)
    entries = [entry(i) for i in range(7)]
    db.execute("INSERT INTO snapshots VALUES (?, 0, ?)", (106, encode_snapshot(106, entries, {})))
    db.close()
    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
    rec = recover(log, store, history_limit=100)
    assert (rec.rev, rec.keys, rec.snapshot_rev) == (106, 7, 106)
    got = store.get("app.a.k3")
    assert got is not None and (got.raw, got.version) == (b'{"n":3}', 4)
    log.close()


def test_resume_history_survives_an_older_crash_gap(tmp_path: Path) -> None:
    """A crash leaves a gap of never-logged revisions in the history. Later clean starts
    used to drop the whole resume history because of it; the run after the gap is kept."""
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path))
    log.append_namespace("app.a", "a")
    now = int(time.time() * 1000)
    for rev in (1, 2, 3, 104, 105, 106):  # 4..103: the crash gap
        log.append_change((rev, f"app.a.k{rev}", 1, 0, b"1", "app.a", 1, now, "a"))
    entries = [
        Entry(f"app.a.k{rev}", b"1", 1, rev, "app.a", True, now) for rev in (1, 2, 3, 104, 105, 106)
    ]
    log.append_snapshot(106, entries, {})
    log.close()
    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: 0, decode=msgspec.json.decode)
    rec = recover(log, store, history_limit=1000)
    assert rec.clean and rec.flipped == 0
    assert store.oldest_resumable == 103
    assert list(store.changed_since(103) or []) == ["app.a.k104", "app.a.k105", "app.a.k106"]
    assert store.changed_since(50) is None  # inside the gap: a full snapshot
    log.close()


def test_stale_since_is_kept_in_the_log_and_snapshots(tmp_path: Path) -> None:
    """Revision 2: the ``stale`` column holds when a key went stale (1 in rows from
    before that was kept: such a key comes back stale "since the restart")."""
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path))
    log.append_namespace("app.a", "a")
    now = int(time.time() * 1000)
    log.append_change((1, "app.a.x", 1, 0, b"1", "app.a", now - 5000, now - 9000, "hub"))
    log.append_change((2, "app.a.old", 1, 0, b"2", "app.a", 1, now - 9000, "hub"))
    log.append_snapshot(
        2,
        [Entry("app.a.s", b"3", 1, 1, "app.a", True, now - 9000, 0, now - 7000)],
        {},
    )
    log.append_change((3, "app.a.f", 1, 0, b"4", "app.a", 0, now, "a"))
    log.close()

    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: now, decode=msgspec.json.decode)
    recover(log, store, history_limit=100)
    s = store.get("app.a.s")
    assert s is not None and s.stale and s.stale_since == now - 7000  # from the snapshot
    f = store.get("app.a.f")  # fresh in the log; its owner is gone: stale since now
    assert f is not None and f.stale and f.stale_since == now and f.ts == now
    log.close()

    log = EventLog(LogSettings(path=path))
    store = Store(clock_ms=lambda: now, decode=msgspec.json.decode)
    log.db.execute("DELETE FROM snapshots")  # replay the rows themselves
    recover(log, store, history_limit=100)
    x, old = store.get("app.a.x"), store.get("app.a.old")
    assert x is not None and x.stale_since == now - 5000 and x.ts == now - 9000
    assert old is not None and old.stale and old.stale_since == now
    log.close()


def test_changes_behind_a_snapshot_are_written_between_its_steps(tmp_path: Path) -> None:
    """A big snapshot does not hold the changes queued after it: they are committed
    between its steps, so the queue (and its memory) does not grow meanwhile."""
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path, snapshot_part=2, snapshot_step=1))
    now = int(time.time() * 1000)
    entries = [entry(i) for i in range(10)]  # 5 parts, one per step
    log.append_snapshot(109, entries, {})
    for rev in range(110, 113):
        log.append_change((rev, "app.a.k0", rev, 0, b"1", "app.a", 0, now, "a"))
    seen: list[tuple[int, int]] = []  # (durable_rev, parts written) at each step
    real_step = SnapshotWriter.step

    def step(self: SnapshotWriter, db: object, parts: int) -> bool:
        seen.append((log.durable_rev, self.parts))
        return real_step(self, db, parts)  # type: ignore[arg-type]

    SnapshotWriter.step = step  # type: ignore[method-assign]
    try:
        log.close()  # drains in this thread
    finally:
        SnapshotWriter.step = real_step  # type: ignore[method-assign]
    assert seen[0] == (112, 0)  # the changes behind it went first
    assert [p for _, p in seen] == [0, 1, 2, 3, 4]
    log = EventLog(LogSettings(path=path))
    head = read_snapshot(log.db)
    assert head is not None and (head.rev, head.parts) == (109, 5)
    assert len(list(snapshot_entries(log.db, head))) == 10
    log.close()


def test_parts_of_a_snapshot_without_its_head_go_at_the_next_compaction(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    db = connect(path)
    # a crash in the middle of writing a snapshot at rev 50 left two parts
    db.executemany("INSERT INTO snapshot_parts VALUES (50, ?, x'5b5d')", [(0,), (1,)])
    db.close()
    log = EventLog(LogSettings(path=path))
    assert read_snapshot(log.db) is None  # no head: not a snapshot
    now = int(time.time() * 1000)
    log.append_change((1, "app.a.k1", 1, 0, b"1", "app.a", 0, now, "a"))
    log.append_snapshot(1, [Entry("app.a.k1", b"1", 1, 1, "app.a", False, now)], {})
    log.close()
    log = EventLog(LogSettings(path=path))
    assert [r for r in log.db.execute("SELECT rev, seq FROM snapshot_parts")] == [(1, 0)]
    log.close()


def test_an_in_memory_log_is_bounded_by_retention() -> None:
    """``--data-dir memory``: the database lives in RAM, and retention keeps it from
    growing with the history (freed pages are reused)."""
    log = EventLog(LogSettings(path=":memory:", retention_changes=1_000))
    now = int(time.time() * 1000)
    value = b'{"text":"CAM 1","bg":"#ff0000","n":123456}'
    pages = []
    rev = 0
    for _round in range(12):
        for _ in range(5):
            for i in range(1_000):
                rev += 1
                log.append_change((rev, f"app.a.k{i}", rev, 0, value, "app.a", 0, now, "a"))
            log.append_snapshot(
                rev,
                [Entry(f"app.a.k{i}", value, rev, rev, "app.a", False, now) for i in range(1_000)],
                {},
            )
        log._drain()
        log.index_tail(0)
        pages.append(log.db.execute("PRAGMA page_count").fetchone()[0])
    assert log.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] <= 1_000
    assert log.oldest == rev - 1_000
    # 60,000 changes written; the database stopped growing after the first rounds
    # (a few pages of slack: b-tree pages split differently from round to round)
    assert pages[-1] <= pages[1] * 1.1, pages
    assert pages[-1] < 300, pages  # unbounded: ~60 pages more per round
    log.close()
