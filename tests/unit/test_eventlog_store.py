"""The event log's store without a hub: snapshot encoding, batching, recovery."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from companion_hub.core.store import Entry, Store
from companion_hub.eventlog.recorder import recover
from companion_hub.eventlog.store import EventLog, LogSettings, _snap_dec, encode_snapshot


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
    changed = store.changed_since(0)
    assert changed is not None and list(changed) == [
        "app.a.x",
        "app.a.y",
        "hub.info",
        "app.a.x",
        "app.a.y",
    ]
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
    assert log.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 3  # history kept
    log.close()
