"""The event log's read-only queries (``companion_hub.eventlog.query``) on a recorded
scenario written with the schema of ``eventlog.store``."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion_hub.core.store import Entry
from companion_hub.eventlog import query as q
from companion_hub.eventlog.store import connect, encode_snapshot

T0 = 1_732_700_000_000  # 2024-11-27T09:33:20.000Z
enc = msgspec.json.encode

# (rev, key, version, deleted, value, owner, stale, ts, actor)
CHANGES: list[tuple[Any, ...]] = [
    (1, "app.tally.status", 1, 0, "live", "app.tally", 0, T0, "tally"),
    (2, "app.tally.count", 1, 0, 1, "app.tally", 0, T0 + 1000, "tally"),
    (3, "companion.buttons.1.0.0", 1, 0, {"text": "CAM 1"}, "companion", 0, T0 + 2000,
     "adapter:companion"),
    (4, "app.tally.status", 2, 0, "off", "app.tally", 0, T0 + 3000, "tally"),
    (5, "app.tally.count", 2, 1, None, "app.tally", 0, T0 + 4000, "tally"),
    # the owner disconnects: a stale flip keeps the value's ts
    (6, "app.tally.status", 2, 0, "off", "app.tally", 1, T0 + 3000, "hub"),
    (7, "companion.buttons.1.0.0", 2, 0, {"text": "CAM 2"}, "companion", 0, T0 + 6000,
     "adapter:companion"),
    (8, "app.tally.count", 3, 0, 5, "app.tally", 0, T0 + 7000, "tally"),
]  # fmt: skip

# (rev, ts, type, client, key, data)
RECORDS: list[tuple[Any, ...]] = [
    (0, T0 - 500, "session", "tally", None,
     {"event": "connect", "address": "127.0.0.1:50000", "session": "s1", "reason": ""}),
    (3, T0 + 2500, "event", "tally", "app.tally.pressed", {"data": {"button": 1}}),
    (5, T0 + 4500, "command", "tally", "companion",
     {"name": "press", "params": {"location": "1/0/0"}, "target": "companion", "ok": True,
      "duration_ms": 12.5, "result": {"pressed": True}}),
    (6, T0 + 5000, "session", "tally", None,
     {"event": "disconnect", "address": "127.0.0.1:50000", "session": "s1", "reason": "closed"}),
    (8, T0 + 7500, "command", "tally", "companion",
     {"name": "press", "params": {}, "target": "companion", "ok": False, "duration_ms": 3,
      "error": {"code": "NOT_FOUND", "message": "no button"}}),
]  # fmt: skip

SNAPSHOT_REV = 5
SNAPSHOT_TS = T0 + 4600


def write_scenario(db: sqlite3.Connection) -> None:
    """The recorded scenario: changes, a delete, a stale flip, a re-create, events,
    commands, sessions, and a snapshot at rev 5."""
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("hub_id", "8f2c00aa11bb22cc"), ("schema", "1")]
    )
    db.executemany(
        "INSERT INTO namespaces VALUES (?, ?)",
        [("app.tally", "tally"), ("companion", "adapter:companion")],
    )
    db.executemany(
        "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*c[:4], None if c[3] else enc(c[4]), *c[5:]) for c in CHANGES],
    )
    db.executemany(
        "INSERT INTO records (rev, ts, type, client, key, data) VALUES (?, ?, ?, ?, ?, ?)",
        [(*r[:5], enc(r[5])) for r in RECORDS],
    )
    entries = [
        Entry("app.tally.status", b'"off"', 2, 4, "app.tally", False, T0 + 3000),
        Entry("companion.buttons.1.0.0", b'{"text":"CAM 1"}', 1, 3, "companion", False, T0 + 2000),
    ]
    db.execute(
        "INSERT INTO snapshots VALUES (?, ?, ?)",
        (
            SNAPSHOT_REV,
            SNAPSHOT_TS,
            encode_snapshot(SNAPSHOT_REV, entries, {"app.tally.count": 2}),
        ),
    )
    db.execute("COMMIT")


def build_scenario(path: Path) -> Path:
    db = connect(str(path))
    write_scenario(db)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


def apply_retention(path: Path, cut: int) -> None:
    """What ``EventLog._compact`` does with ``cut``: drop changes and records up to it."""
    db = connect(str(path))
    db.execute("DELETE FROM changes WHERE rev <= ?", (cut,))
    db.execute("DELETE FROM records WHERE rev <= ?", (cut,))
    db.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return build_scenario(tmp_path / "hub.sqlite3")


@pytest.fixture
def conn(log_path: Path) -> sqlite3.Connection:
    c = q.open_readonly(log_path)
    yield c  # type: ignore[misc]
    c.close()


@pytest.fixture
def trimmed(tmp_path: Path, log_path: Path) -> sqlite3.Connection:
    """The scenario after retention removed revisions up to 3 (the snapshot at 5 stays)."""
    p = tmp_path / "trimmed.sqlite3"
    shutil.copy(log_path, p)
    apply_retention(p, 3)
    c = q.open_readonly(p)
    yield c  # type: ignore[misc]
    c.close()


def kinds(items: list[q.LogItem]) -> list[tuple[int, str]]:
    return [(i.rev, i.type) for i in items]


def entries(st_: q.StateAt) -> list[tuple[Any, ...]]:
    return [(e.key, e.value(), e.version, e.rev, e.stale, e.ts) for e in st_.entries]


# --- opening, times ---------------------------------------------------------------------


def test_open_missing_and_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(q.LogUnavailable, match="no event log"):
        q.open_readonly(tmp_path / "nope.sqlite3")
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(q.LogUnavailable, match="cannot read"):
        q.open_readonly(other)


def test_open_is_read_only(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM changes")


def test_resolve_db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert q.resolve_db_path(tmp_path) == tmp_path / "hub.sqlite3"
    assert q.resolve_db_path(tmp_path, "x.db") == Path("x.db")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert q.resolve_db_path() == tmp_path / "companion-hub" / "hub.sqlite3"


def test_times_and_points() -> None:
    assert q.parse_time("2024-11-27T09:33:20Z") == T0
    assert q.parse_time("2024-11-27T10:33:20+01:00") == T0
    assert q.parse_time("2024-11-27T09:33:20.123") == T0 + 123  # no offset: UTC
    assert q.parse_time("2024-11-27 09:33:20.999999") == T0 + 999
    assert q.parse_time(str(T0)) == T0
    assert q.format_ts(T0 + 7) == "2024-11-27T09:33:20.007Z"
    assert q.format_ts(None) == "-"
    with pytest.raises(q.LogError, match="invalid time"):
        q.parse_time("yesterday")
    assert q.parse_point("12") == q.Point("rev", 12)
    assert q.parse_point(f"@{T0}") == q.Point("time", T0)
    assert q.parse_point("2024-11-27T09:33:21Z") == q.Point("time", T0 + 1000)
    assert str(q.Point("time", T0)) == "2024-11-27T09:33:20.000Z"


# --- query ------------------------------------------------------------------------------

ALL = [
    (0, "session"), (1, "change"), (2, "change"), (3, "change"), (3, "event"), (4, "change"),
    (5, "change"), (5, "command"), (6, "change"), (6, "session"), (7, "change"),
    (8, "change"), (8, "command"),
]  # fmt: skip


def test_everything_in_log_order(conn: sqlite3.Connection) -> None:
    items = list(q.iter_log(conn, q.make_filter()))
    assert kinds(items) == ALL
    assert q.count_log(conn, q.make_filter()) == 13


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (
            {"patterns": ["app.tally.*"]},
            [(1, "change"), (2, "change"), (3, "event"), (4, "change"), (5, "change"),
             (6, "change"), (8, "change")],
        ),
        ({"patterns": ["app.tally.status"]}, [(1, "change"), (4, "change"), (6, "change")]),
        ({"patterns": ["*.tally.status"]}, [(1, "change"), (4, "change"), (6, "change")]),
        ({"patterns": ["companion"]}, [(5, "command"), (8, "command")]),
        (
            {"patterns": ["companion.**"]},
            [(3, "change"), (5, "command"), (7, "change"), (8, "command")],
        ),
        ({"patterns": ["companion.*"]}, []),
        (
            {"patterns": ["app.tally.count", "companion.buttons.**"]},
            [(2, "change"), (3, "change"), (5, "change"), (7, "change"), (8, "change")],
        ),
        (
            {"from_rev": 4, "to_rev": 6},
            [(4, "change"), (5, "change"), (5, "command"), (6, "change"), (6, "session")],
        ),
        (
            {"since": T0 + 2500, "until": "2024-11-27T09:33:24.500Z"},
            [(3, "event"), (4, "change"), (5, "change"), (5, "command"), (6, "change")],
        ),
        ({"clients": ["adapter:companion"]}, [(3, "change"), (7, "change")]),
        ({"clients": ["hub", "nobody"]}, [(6, "change")]),
        (
            {"types": ["command", "session"]},
            [(0, "session"), (5, "command"), (6, "session"), (8, "command")],
        ),
        ({"types": ["event,change"], "from_rev": 3, "to_rev": 3}, [(3, "change"), (3, "event")]),
        ({"types": ["change"], "clients": ["tally"], "to_rev": 2}, [(1, "change"), (2, "change")]),
        ({"from_rev": 5, "after_id": 0}, [(5, "command"), *ALL[8:]]),
        ({"from_rev": 8, "after_id": 99}, []),
    ],
)  # fmt: skip
def test_filters(conn: sqlite3.Connection, kw: dict[str, Any], expected: list[Any]) -> None:
    assert kinds(list(q.iter_log(conn, q.make_filter(**kw)))) == expected


def test_bad_filters() -> None:
    with pytest.raises(q.LogError, match="only as the last segment"):
        q.make_filter(patterns=["a.**.b"])
    with pytest.raises(q.LogError, match="unknown type 'bogus'"):
        q.make_filter(types=["change,bogus"])
    with pytest.raises(q.LogError, match="invalid time"):
        q.make_filter(since="soon")
    with pytest.raises(q.LogError, match="negative"):
        q.make_filter(from_rev=-1)


def test_items_json(conn: sqlite3.Connection) -> None:
    items = list(q.iter_log(conn, q.make_filter(from_rev=5, to_rev=6)))
    wire = [msgspec.json.decode(msgspec.json.encode(i.to_wire())) for i in items]
    assert wire == [
        {"rev": 5, "ts": T0 + 4000, "type": "change", "client": "tally",
         "key": "app.tally.count", "version": 2, "deleted": True, "stale": False,
         "owner": "app.tally"},
        {"rev": 5, "ts": T0 + 4500, "type": "command", "client": "tally", "key": "companion",
         "id": 3, "data": RECORDS[2][5]},
        {"rev": 6, "ts": T0 + 3000, "type": "change", "client": "hub",
         "key": "app.tally.status", "version": 2, "deleted": False, "stale": True,
         "owner": "app.tally", "value": "off"},
        {"rev": 6, "ts": T0 + 5000, "type": "session", "client": "tally", "key": None,
         "id": 4, "data": RECORDS[3][5]},
    ]  # fmt: skip
    change = items[2]
    assert isinstance(change, q.ChangeItem)
    assert change.value() == "off" and change.client == "hub"
    record = items[1]
    assert isinstance(record, q.RecordItem)
    assert record.data()["result"] == {"pressed": True}


# --- pages ------------------------------------------------------------------------------


def test_pages_end_at_revision_boundaries(conn: sqlite3.Connection) -> None:
    pages = []
    f = q.make_filter()
    while True:
        pg = q.page(conn, f, 3)
        pages.append((kinds(pg.items), pg.next_from_rev, pg.next_after_id))
        if pg.next_from_rev is None:
            break
        f = q.make_filter(from_rev=pg.next_from_rev, after_id=pg.next_after_id)
    assert pages == [
        ([(0, "session"), (1, "change"), (2, "change")], 3, None),
        ([(3, "change"), (3, "event"), (4, "change")], 5, None),
        ([(5, "change"), (5, "command")], 6, None),  # rev 6 does not fit: next page
        ([(6, "change"), (6, "session"), (7, "change")], 8, None),
        ([(8, "change"), (8, "command")], None, None),
    ]


def test_page_cut_inside_a_revision(conn: sqlite3.Connection) -> None:
    pg = q.page(conn, q.make_filter(from_rev=5), 1)
    assert (kinds(pg.items), pg.next_from_rev, pg.next_after_id) == ([(5, "change")], 5, 0)
    pg = q.page(conn, q.make_filter(from_rev=5, after_id=0), 1)
    assert (kinds(pg.items), pg.next_from_rev, pg.next_after_id) == ([(5, "command")], 6, None)
    pg = q.page(conn, q.make_filter(from_rev=6, types=["session"], patterns=[]), 5)
    assert (kinds(pg.items), pg.next_from_rev) == ([(6, "session")], None)
    with pytest.raises(q.LogError):
        q.page(conn, q.make_filter(), 0)


def test_page_cut_inside_a_revision_of_many_events(tmp_path: Path) -> None:
    """Events do not move the revision: 5 events at rev 8 paged 2 at a time."""
    p = build_scenario(tmp_path / "many.sqlite3")
    db = connect(str(p))
    db.executemany(
        "INSERT INTO records (rev, ts, type, client, key, data) VALUES (8, ?, 'event', 'x', "
        "'app.x.e', '{}')",
        [(T0 + 8000 + i,) for i in range(5)],
    )
    db.close()
    c = q.open_readonly(p)
    f = q.make_filter(from_rev=8, types=["event"])
    ids = []
    while True:
        pg = q.page(c, f, 2)
        ids.append([i.id for i in pg.items])
        if pg.next_from_rev is None:
            break
        f = q.make_filter(from_rev=pg.next_from_rev, after_id=pg.next_after_id, types=["event"])
    assert ids == [[6, 7], [8, 9], [10]]


# --- bounds and times -> revisions -------------------------------------------------------


def test_bounds_and_rev_at_time(conn: sqlite3.Connection, trimmed: sqlite3.Connection) -> None:
    assert q.log_bounds(conn) == q.Bounds(8, 0, 1)
    assert q.log_bounds(trimmed) == q.Bounds(8, 3, 4)
    assert q.rev_at_time(conn, T0 - 1) == 0
    assert q.rev_at_time(conn, T0) == 1
    assert q.rev_at_time(conn, T0 + 2999) == 3
    assert q.rev_at_time(conn, T0 + 4500) == 6  # the flip at rev 6 carries the value's ts
    assert q.rev_at_time(conn, T0 + 99_999) == 8
    assert q.resolve_point(conn, q.Point("time", T0 + 1000), start=True) == 2
    assert q.resolve_point(conn, q.Point("time", T0 + 1001), start=True) == 3
    assert q.resolve_point(conn, q.Point("time", T0 + 1000)) == 2
    assert q.resolve_point(conn, q.Point("rev", 4), start=True) == 4


# --- state at a point ---------------------------------------------------------------------

STATUS_LIVE = ("app.tally.status", "live", 1, 1, False, T0)
STATUS_OFF = ("app.tally.status", "off", 2, 4, False, T0 + 3000)
STATUS_OFF_STALE = ("app.tally.status", "off", 2, 6, True, T0 + 3000)
COUNT_1 = ("app.tally.count", 1, 1, 2, False, T0 + 1000)
COUNT_5 = ("app.tally.count", 5, 3, 8, False, T0 + 7000)
CAM1 = ("companion.buttons.1.0.0", {"text": "CAM 1"}, 1, 3, False, T0 + 2000)
CAM2 = ("companion.buttons.1.0.0", {"text": "CAM 2"}, 2, 7, False, T0 + 6000)


@pytest.mark.parametrize(
    ("at", "patterns", "expected", "snapshot"),
    [
        (0, [], [], None),
        (2, [], [COUNT_1, STATUS_LIVE], None),
        (q.Point("time", T0 + 2500), [], [COUNT_1, STATUS_LIVE, CAM1], None),
        (4, [], [COUNT_1, STATUS_OFF, CAM1], None),
        (5, [], [STATUS_OFF, CAM1], 5),  # after the delete; from the snapshot
        (6, [], [STATUS_OFF_STALE, CAM1], 5),  # the stale flip, across the snapshot
        (8, [], [COUNT_5, STATUS_OFF_STALE, CAM2], 5),  # re-created at version 3
        (q.Point("time", T0 + 99_999), ["app.tally.*"], [COUNT_5, STATUS_OFF_STALE], 5),
        (7, ["companion.**"], [CAM2], 5),
        (q.Point("time", T0 - 1), [], [], None),
    ],
)
def test_state_at(
    conn: sqlite3.Connection, at: Any, patterns: list[str], expected: list[Any], snapshot: Any
) -> None:
    st_ = q.state_at(conn, at, patterns)
    assert entries(st_) == expected
    assert st_.snapshot_rev == snapshot


def test_state_entry_json(conn: sqlite3.Connection) -> None:
    st_ = q.state_at(conn, 7, ["companion.**"])
    assert msgspec.json.decode(msgspec.json.encode(st_.entries[0].to_wire())) == {
        "key": "companion.buttons.1.0.0",
        "value": {"text": "CAM 2"},
        "version": 2,
        "rev": 7,
        "owner": "companion",
        "stale": False,
        "ts": T0 + 6000,
    }


def test_state_ahead_of_the_log(conn: sqlite3.Connection) -> None:
    with pytest.raises(q.LogError, match="ahead of the log"):
        q.state_at(conn, 9)
    with pytest.raises(q.LogError, match="only as the last segment"):
        q.state_at(conn, 1, ["**.x"])


def test_state_after_retention(trimmed: sqlite3.Connection) -> None:
    # forward from the snapshot: exact, except the stale flag of an entry whose last
    # change was removed (the snapshot does not keep it)
    cam1_unknown = (*CAM1[:4], None, CAM1[5])
    assert entries(q.state_at(trimmed, 5)) == [STATUS_OFF, cam1_unknown]
    assert entries(q.state_at(trimmed, 8)) == [COUNT_5, STATUS_OFF_STALE, CAM2]
    # backwards from the snapshot: rev 4 lies between the cut (3) and the snapshot (5)
    st_ = q.state_at(trimmed, 4, ["companion.**", "app.tally.status"])
    assert entries(st_) == [STATUS_OFF, cam1_unknown]
    assert st_.snapshot_rev == 5
    # ...but app.tally.count was deleted at 5 and its value at 4 was removed
    with pytest.raises(q.RetentionGap, match=r"app\.tally\.count") as info:
        q.state_at(trimmed, 4)
    assert info.value.missing == ["app.tally.count"]
    assert info.value.oldest == 3
    with pytest.raises(q.RetentionGap, match="retention removed the changes up to rev 3"):
        q.state_at(trimmed, 2)
    with pytest.raises(q.RetentionGap, match="before the oldest history"):
        q.state_at(trimmed, q.Point("time", T0 + 500))


# --- a model check of state_at, with retention and snapshots -------------------------------

KEYS = ["a.x", "a.y", "b.z"]
op_st = st.tuples(st.sampled_from(KEYS), st.sampled_from(["set", "set", "delete", "flip"]))


def _history(
    ops: list[tuple[str, str]],
) -> tuple[list[tuple[Any, ...]], list[dict[str, tuple[Any, ...]]]]:
    """Change rows for ``ops`` (invalid ones dropped) and the model state after each rev."""
    state: dict[str, tuple[Any, ...]] = {}  # key -> (value, version, rev, stale, ts)
    versions: dict[str, int] = {}
    rows: list[tuple[Any, ...]] = []
    states: list[dict[str, tuple[Any, ...]]] = [{}]
    for key, op in ops:
        rev = len(rows) + 1
        ts = 1000 * rev
        if op == "set":
            v = versions.get(key, 0) + 1
            state[key] = (rev * 10, v, rev, False, ts)
            rows.append((rev, key, v, 0, enc(rev * 10), key[0], 0, ts, "c"))
        elif key not in state:
            continue
        elif op == "delete":
            v = versions.get(key, 0) + 1
            del state[key]
            rows.append((rev, key, v, 1, None, key[0], 0, ts, "c"))
        else:
            value, v, _, stale, vts = state[key]
            state[key] = (value, v, rev, not stale, vts)
            rows.append((rev, key, v, 0, enc(value), key[0], int(not stale), vts, "hub"))
        versions[key] = v
        states.append(dict(state))
    return rows, states


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, min_size=1, max_size=25), data=st.data())
def test_state_at_matches_a_model(ops: list[tuple[str, str]], data: st.DataObject) -> None:
    rows, states = _history(ops)
    last = len(rows)
    snap = data.draw(st.integers(0, last), label="snapshot rev")
    cut = data.draw(st.integers(0, snap), label="retention cut") if snap else 0
    db = connect(":memory:")
    db.executemany("INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    if snap:
        image = [Entry(k, enc(v[0]), v[1], v[2], k[0], v[3], v[4]) for k, v in states[snap].items()]
        db.execute(
            "INSERT INTO snapshots VALUES (?, 0, ?)", (snap, encode_snapshot(snap, image, {}))
        )
    db.execute("DELETE FROM changes WHERE rev <= ?", (cut,))
    for rev in range(last + 1):
        expected = sorted((k, *v[:3]) for k, v in states[rev].items())
        try:
            got = q.state_at(db, rev)
        except q.RetentionGap:
            # only when retention removed what comes before the point
            assert cut > 0 and rev < snap
            continue
        assert sorted((e.key, e.value(), e.version, e.rev) for e in got.entries) == expected
        for e in got.entries:  # the stale flag, when known, is the right one
            assert e.stale in (None, states[rev][e.key][3])
        if cut == 0:  # nothing removed: nothing unknown
            assert all(e.stale is not None for e in got.entries)
    db.close()


# --- stats --------------------------------------------------------------------------------


def test_summary(conn: sqlite3.Connection, log_path: Path) -> None:
    s = q.summary(conn, log_path)
    size = os.path.getsize(log_path) + (
        os.path.getsize(str(log_path) + "-wal") if os.path.exists(str(log_path) + "-wal") else 0
    )
    assert s.to_wire() == {
        "path": str(log_path),
        "hub_id": "8f2c00aa11bb22cc",
        "schema": "1",
        "counts": {"change": 8, "event": 1, "command": 2, "session": 2},
        "deletes": 1,
        "snapshots": 1,
        "latest_snapshot_rev": 5,
        "namespaces": 2,
        "first_rev": 1,
        "last_rev": 8,
        "first_ts": T0 - 500,
        "last_ts": T0 + 7500,
        "oldest_resumable_rev": 0,
        "db_bytes": os.path.getsize(log_path),
        "wal_bytes": size - os.path.getsize(log_path),
        "size_bytes": size,
        "bytes_per_change": round(size / 8, 1),
    }


def test_summary_after_retention(trimmed: sqlite3.Connection, tmp_path: Path) -> None:
    s = q.summary(trimmed, tmp_path / "trimmed.sqlite3")
    assert s.counts == {"change": 5, "event": 0, "command": 2, "session": 1}
    assert (s.first_rev, s.last_rev, s.oldest_resumable_rev) == (4, 8, 3)


def test_summary_of_an_empty_log(tmp_path: Path) -> None:
    p = tmp_path / "empty.sqlite3"
    connect(str(p)).close()
    s = q.summary(q.open_readonly(p), p)
    assert s.counts == {"change": 0, "event": 0, "command": 0, "session": 0}
    assert (s.first_rev, s.last_rev, s.first_ts, s.bytes_per_change) == (None, None, None, None)
    assert s.oldest_resumable_rev == 0
