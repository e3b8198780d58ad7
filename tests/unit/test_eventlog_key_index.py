"""The event log's key index (``key_revs``, filled by the writer thread in batches) and
the SQL translation of key patterns: whatever part of the history is indexed, the
changes a query selects by pattern are exactly those the grammar's reference matcher
(``core.keys.match``) selects."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion_hub.core.keys import match, parse_pattern
from companion_hub.eventlog import query as q
from companion_hub.eventlog.store import EventLog, LogSettings, connect

# segments chosen around "." in byte order ("-" < "." < "/" < "0"), so that a prefix
# translated to a key range would catch the wrong keys if the range were off by one
SEGMENTS = st.sampled_from(["a", "b", "b-c", "b0", "bc", "_", "A", "x1"])


@st.composite
def keys(draw: st.DrawFn) -> str:
    ns = draw(st.sampled_from(["app.a", "app.b", "app.b-c", "companion", "hub"]))
    return ".".join([ns, *draw(st.lists(SEGMENTS, max_size=3))])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    base = draw(keys()).split(".")
    segs = [draw(st.sampled_from([s, s, "*", "b"])) for s in base]
    cut = draw(st.integers(0, len(segs)))
    if draw(st.booleans()):
        return ".".join([*segs[:cut], "**"])
    return ".".join(segs) or "**"


def fill(log: EventLog, ks: list[str], indexed_upto: int) -> None:
    """Write one change per key in ``ks`` (rev i+1), indexing the first
    ``indexed_upto`` of them as the writer thread does, leaving the rest as the tail."""
    now = int(time.time() * 1000)
    for i, k in enumerate(ks, start=1):
        log.append_change((i, k, i, 0, b"1", k.split(".")[0], 0, now, "w"))
        if i == indexed_upto:
            log._drain()
            log.index_tail(0)
    log._drain()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(keys(), min_size=1, max_size=40),
    st.lists(patterns(), min_size=1, max_size=3),
    st.data(),
)
def test_pattern_queries_agree_with_the_grammar(
    ks: list[str], texts: list[str], data: st.DataObject
) -> None:
    n = len(ks)
    indexed = data.draw(st.integers(0, n), label="indexed_upto")
    lo = data.draw(st.one_of(st.none(), st.integers(0, n + 1)), label="from_rev")
    hi = data.draw(st.one_of(st.none(), st.integers(0, n + 1)), label="to_rev")
    log = EventLog(LogSettings(path=":memory:"))
    fill(log, ks, indexed)
    assert log.indexed_rev == indexed
    pats = [parse_pattern(t) for t in texts]

    f = q.make_filter(patterns=texts, from_rev=lo, to_rev=hi, types=["change"])
    got = [(c.rev, c.key) for c in q.iter_changes(log.db, f)]
    want = [
        (rev, k)
        for rev, k in enumerate(ks, start=1)
        if (lo is None or rev >= lo)
        and (hi is None or rev <= hi)
        and any(match(p, k) for p in pats)
    ]
    assert got == want

    # the SQL alone (before the exact match in Python) never drops a matching change
    where, params = q._changes_by_key(log.db, pats, [], [])
    if where:
        pre = {int(r) for (r,) in log.db.execute(f"SELECT rev FROM changes WHERE {where}", params)}
        assert {rev for rev, _ in want if lo is None and hi is None} <= pre

    # each key's last change in a revision range, as state_at asks for it
    a = data.draw(st.integers(0, n), label="per_key_lo")
    b = data.draw(st.integers(a, n), label="per_key_hi")
    last = {k: rev for rev, k in enumerate(ks, start=1) if a < rev <= b}
    got_last = {k: c.rev for k, c in q._per_key(log.db, a, b, pats, "MAX").items()}
    assert got_last == {k: r for k, r in last.items() if any(match(p, k) for p in pats)}
    log.db.close()


def test_the_writer_indexes_in_batches_when_quiet_and_on_close(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    log = EventLog(LogSettings(path=path, index_batch=100, index_idle=0.2, flush_interval=0.01))
    log.start()
    now = int(time.time() * 1000)

    def write(first: int, count: int) -> None:
        for rev in range(first, first + count):
            log.append_change((rev, f"app.a.k{rev % 7}", rev, 0, b"1", "app.a", 0, now, "a"))

    def indexed() -> int:
        return int(log.db.execute("SELECT COUNT(*) FROM key_revs").fetchone()[0])

    write(1, 50)  # under a batch: indexed only once the log has been quiet a while
    deadline = time.monotonic() + 30
    while log.indexed_rev < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.indexed_rev == 50 and indexed() == 50
    assert log.meta("indexed_rev") == "50"

    write(51, 250)  # a batch's worth: indexed without waiting for quiet
    deadline = time.monotonic() + 30
    while log.indexed_rev < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.indexed_rev == 300

    log.settings.index_idle = 3600.0  # never quiet again: only close() indexes now
    log.settings.index_batch = 10**9
    write(301, 20)
    log.close()
    db = connect(path)
    assert db.execute("SELECT v FROM meta WHERE k = 'indexed_rev'").fetchone() == ("320",)
    assert db.execute("SELECT COUNT(*) FROM key_revs").fetchone() == (320,)
    # the index holds exactly (key, rev) of every change
    assert set(db.execute("SELECT key, rev FROM key_revs")) == set(
        db.execute("SELECT key, rev FROM changes")
    )
    db.close()


def test_retention_removes_the_index_rows_of_the_changes_it_cuts(tmp_path: Path) -> None:
    log = EventLog(LogSettings(path=str(tmp_path / "hub.sqlite3"), retention_changes=10))
    now = int(time.time() * 1000)
    for rev in range(1, 31):
        log.append_change((rev, f"app.a.k{rev % 3}", rev, 0, b"1", "app.a", 0, now, "a"))
    log._drain()
    log.index_tail(0)
    log.append_snapshot(30, [], {})
    log._drain()
    revs = [r for (r,) in log.db.execute("SELECT rev FROM key_revs ORDER BY rev")]
    assert revs == list(range(21, 31))
    assert log.db.execute("SELECT MIN(rev) FROM changes").fetchone() == (21,)
    log.close()


def test_a_log_from_schema_1_is_upgraded_and_indexed(tmp_path: Path) -> None:
    """A log written before key_revs (a per-row index on changes): opening it drops the
    old index; the writer indexes the existing history (in one step here)."""
    path = str(tmp_path / "hub.sqlite3")
    db = connect(path)
    db.execute("DROP TABLE key_revs")
    db.execute("CREATE INDEX changes_key ON changes (key, rev)")
    now = int(time.time() * 1000)
    db.executemany(
        "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r, f"app.a.k{r % 4}", r, 0, b"1", "app.a", 0, now, "a") for r in range(1, 101)],
    )
    db.close()

    # read-only tools on the old file still answer by pattern, without key_revs
    ro = q.open_readonly(path)
    f = q.make_filter(patterns=["app.a.k1"], types=["change"])
    assert [c.rev for c in q.iter_changes(ro, f)] == list(range(1, 101, 4))
    ro.close()

    log = EventLog(LogSettings(path=path))
    names = {n for (n,) in log.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "changes_key" not in names
    assert log.indexed_rev == 0
    log.index_tail(0)
    assert log.indexed_rev == 100
    assert [c.rev for c in q.iter_changes(log.db, f)] == list(range(1, 101, 4))
    log.close()


@pytest.mark.parametrize("least", [1, 0])
def test_indexing_failure_is_left_for_later(tmp_path: Path, least: int) -> None:
    """A failed indexing transaction holds nothing: the changes stay, the queries scan
    the tail, and it is tried again later."""
    log = EventLog(LogSettings(path=str(tmp_path / "hub.sqlite3")))
    now = int(time.time() * 1000)
    for rev in range(1, 11):
        log.append_change((rev, "app.a.k", rev, 0, b"1", "app.a", 0, now, "a"))
    log._drain()
    log.db.execute("DROP TABLE key_revs")  # the next indexing step fails
    log.index_tail(least)
    assert log.indexed_rev == 0 and log.stats.errors == 1 and not log.db.in_transaction
    log.index_tail(least)  # within the retry delay: not tried again
    assert log.stats.errors == 1
    log.db.close()
