"""``companion-hub log ...`` and ``GET /api/log`` on a recorded scenario, and replay
into a live hub."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from companion_hub.client import RawConnection, connect_raw
from companion_hub.eventlog import query as q
from companion_hub.eventlog import tools
from companion_hub.eventlog.http_api import add_log_routes
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from tests.unit.test_eventlog_query import RECORDS, T0, apply_retention, build_scenario


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    build_scenario(tmp_path / "hub.sqlite3")
    return tmp_path


@pytest.fixture
def db(data_dir: Path) -> str:
    return str(data_dir / "hub.sqlite3")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = tools.main(["log", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def jsonl(text: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in text.splitlines()]


# --- query ------------------------------------------------------------------------------

QUERY_TABLE = """\
REV  TIME                      TYPE     CLIENT             KEY                      DETAIL
0    2024-11-27T09:33:19.500Z  session  tally              -                        connect address=127.0.0.1:50000 session=s1
1    2024-11-27T09:33:20.000Z  change   tally              app.tally.status         v1 = "live"
2    2024-11-27T09:33:21.000Z  change   tally              app.tally.count          v1 = 1
3    2024-11-27T09:33:22.000Z  change   adapter:companion  companion.buttons.1.0.0  v1 = {"text":"CAM 1"}
3    2024-11-27T09:33:22.500Z  event    tally              app.tally.pressed        {"button":1}
4    2024-11-27T09:33:23.000Z  change   tally              app.tally.status         v2 = "off"
5    2024-11-27T09:33:24.000Z  change   tally              app.tally.count          v2 deleted
5    2024-11-27T09:33:24.500Z  command  tally              companion                press {"location":"1/0/0"} -> ok {"pressed":true} (12.5 ms)
6    2024-11-27T09:33:23.000Z  change   hub                app.tally.status         v2 = "off" (stale)
6    2024-11-27T09:33:25.000Z  session  tally              -                        disconnect address=127.0.0.1:50000 session=s1 reason=closed
7    2024-11-27T09:33:26.000Z  change   adapter:companion  companion.buttons.1.0.0  v2 = {"text":"CAM 2"}
8    2024-11-27T09:33:27.000Z  change   tally              app.tally.count          v3 = 5
8    2024-11-27T09:33:27.500Z  command  tally              companion                press {} -> error NOT_FOUND: no button (3 ms)
"""


def test_query_table(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert run(capsys, "query", "--data-dir", str(data_dir)) == (0, QUERY_TABLE, "")


def test_query_filters_table(capsys: pytest.CaptureFixture[str], db: str) -> None:
    rc, out, err = run(
        capsys,
        "query",
        "--db",
        db,
        "app.tally.*",
        "--since",
        "2024-11-27T09:33:22Z",
        "--until",
        str(T0 + 7000),
        "--client",
        "tally",
        "--type",
        "change",
        "--type",
        "event",
    )
    assert rc == 0 and err == ""
    assert out == (
        "REV  TIME                      TYPE    CLIENT  KEY                DETAIL\n"
        "3    2024-11-27T09:33:22.500Z  event   tally   app.tally.pressed  {\"button\":1}\n"
        "4    2024-11-27T09:33:23.000Z  change  tally   app.tally.status   v2 = \"off\"\n"
        "5    2024-11-27T09:33:24.000Z  change  tally   app.tally.count    v2 deleted\n"
        "8    2024-11-27T09:33:27.000Z  change  tally   app.tally.count    v3 = 5\n"
    )  # fmt: skip


def test_query_json_and_limit(capsys: pytest.CaptureFixture[str], db: str) -> None:
    rc, out, err = run(capsys, "query", "--db", db, "--json", "--from-rev", "5", "--limit", "3")
    assert rc == 0
    assert jsonl(out) == [
        {"rev": 5, "ts": T0 + 4000, "type": "change", "client": "tally",
         "key": "app.tally.count", "version": 2, "deleted": True, "stale": False,
         "owner": "app.tally"},
        {"rev": 5, "ts": T0 + 4500, "type": "command", "client": "tally", "key": "companion",
         "id": 3, "data": RECORDS[2][5]},
        {"rev": 6, "ts": T0 + 3000, "type": "change", "client": "hub",
         "key": "app.tally.status", "version": 2, "deleted": False, "stale": True,
         "owner": "app.tally", "value": "off"},
    ]  # fmt: skip
    assert err == "(stopped at --limit 3; the next one is at rev 6)\n"


def test_query_long_values_are_shortened(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from companion_hub.eventlog.store import connect

    p = tmp_path / "long.sqlite3"
    conn = connect(str(p))
    conn.execute(
        "INSERT INTO changes VALUES (1, 'app.x.big', 1, 0, ?, 'app.x', 0, ?, 'x')",
        (msgspec.json.encode("y" * 200), T0),
    )
    conn.close()
    _, out, _ = run(capsys, "query", "--db", str(p))
    detail = out.splitlines()[1].split("  ")[-1]
    assert detail == 'v1 = "' + "y" * 78 + "…"
    _, out, _ = run(capsys, "query", "--db", str(p), "--wide")
    assert out.splitlines()[1].endswith('v1 = "' + "y" * 200 + '"')


def test_query_errors(capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path) -> None:
    assert run(capsys, "query", "--db", db, "nope.*") == (0, "", "(nothing matches)\n")
    rc, out, err = run(capsys, "query", "--db", db, "a.**.b")
    assert (rc, out) == (2, "")
    assert "'**' is allowed only as the last segment" in err
    rc, _, err = run(capsys, "query", "--db", db, "--type", "changes")
    assert rc == 2 and "unknown type 'changes'" in err
    rc, _, err = run(capsys, "query", "--data-dir", str(tmp_path / "none"))
    assert (
        rc == 1 and err == f"companion-hub log: no event log at {tmp_path / 'none'}/hub.sqlite3\n"
    )


def test_default_data_dir(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = data_dir / "xdg" / "companion-hub"
    target.mkdir(parents=True)
    shutil.copy(data_dir / "hub.sqlite3", target / "hub.sqlite3")
    monkeypatch.setenv("XDG_DATA_HOME", str(data_dir / "xdg"))
    rc, out, _ = run(capsys, "query", "--json", "--type", "session")
    assert rc == 0 and [r["rev"] for r in jsonl(out)] == [0, 6]


# --- export -------------------------------------------------------------------------------


def test_export_merges_in_rev_order(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    out_file = tmp_path / "out.jsonl"
    rc, out, err = run(capsys, "export", "--db", db, "--output", str(out_file))
    assert (rc, out, err) == (0, "", f"exported 13 records to {out_file}\n")
    rows = jsonl(out_file.read_text())
    assert [(r["rev"], r["type"]) for r in rows] == [
        (0, "session"), (1, "change"), (2, "change"), (3, "change"), (3, "event"),
        (4, "change"), (5, "change"), (5, "command"), (6, "change"), (6, "session"),
        (7, "change"), (8, "change"), (8, "command"),
    ]  # fmt: skip
    assert rows[4] == {
        "rev": 3, "ts": T0 + 2500, "type": "event", "client": "tally",
        "key": "app.tally.pressed", "id": 2, "data": {"data": {"button": 1}},
    }  # fmt: skip
    # filters, to stdout
    rc, out, _ = run(capsys, "export", "--db", db, "--type", "command", "companion")
    assert [(r["rev"], r["data"]["ok"]) for r in jsonl(out)] == [(5, True), (8, False)]


# --- state ------------------------------------------------------------------------------


def test_state_table(capsys: pytest.CaptureFixture[str], db: str) -> None:
    rc, out, err = run(capsys, "state", "--db", db, "--at", "6")
    assert rc == 0
    assert out == (
        "KEY                      VERSION  REV  TIME                      STALE  VALUE\n"
        'app.tally.status         2        6    2024-11-27T09:33:23.000Z  yes    "off"\n'
        'companion.buttons.1.0.0  1        3    2024-11-27T09:33:22.000Z  no     {"text":"CAM 1"}\n'
    )
    assert err == "state at rev 6: 2 keys (snapshot at rev 5 + changes up to rev 6)\n"


def test_state_json_at_times(capsys: pytest.CaptureFixture[str], db: str) -> None:
    rc, out, _ = run(capsys, "state", "--db", db, "--at", "2024-11-27T09:33:21.5Z", "--json")
    assert rc == 0
    assert msgspec.json.decode(out) == {
        "rev": 2,
        "entries": [
            {"key": "app.tally.count", "value": 1, "version": 1, "rev": 2, "owner": "app.tally",
             "stale": False, "ts": T0 + 1000},
            {"key": "app.tally.status", "value": "live", "version": 1, "rev": 1,
             "owner": "app.tally", "stale": False, "ts": T0},
        ],
    }  # fmt: skip
    _, out, _ = run(capsys, "state", "--db", db, "--at", f"@{T0 + 7000}", "--json", "app.**")
    doc = msgspec.json.decode(out)
    assert doc["rev"] == 8
    assert [(e["key"], e["value"], e["version"]) for e in doc["entries"]] == [
        ("app.tally.count", 5, 3),
        ("app.tally.status", "off", 2),
    ]
    # after the delete, before the re-create
    _, out, _ = run(capsys, "state", "--db", db, "--at", "5", "--json", "app.tally.count")
    assert msgspec.json.decode(out) == {"rev": 5, "entries": []}


def test_state_retention_gap(capsys: pytest.CaptureFixture[str], db: str) -> None:
    apply_retention(Path(db), 3)
    rc, out, err = run(capsys, "state", "--db", db, "--at", "2")
    assert (rc, out) == (3, "")
    assert err == (
        "companion-hub log: the state at rev 2 cannot be rebuilt: retention removed the "
        "changes up to rev 3 and no snapshot covers rev 2\n"
    )
    rc, out, err = run(capsys, "state", "--db", db, "--at", "4")
    assert (rc, out) == (3, "")
    assert "1 key(s) changed between rev 4 and the snapshot at rev 5: app.tally.count" in err
    # what is still known can be asked for
    rc, out, _ = run(capsys, "state", "--db", db, "--at", "4", "companion.**")
    assert rc == 0
    assert out.splitlines()[1].split() == [
        "companion.buttons.1.0.0", "1", "3", "2024-11-27T09:33:22.000Z", "?", '{"text":"CAM', '1"}'
    ]  # fmt: skip
    rc, _, err = run(capsys, "state", "--db", db, "--at", "99")
    assert rc == 2 and "ahead of the log" in err


# --- stats ------------------------------------------------------------------------------


def test_stats(capsys: pytest.CaptureFixture[str], db: str) -> None:
    size = os.path.getsize(db)
    rc, out, _ = run(capsys, "stats", "--db", db)
    assert rc == 0
    assert out == (
        f"database:              {db}\n"
        "hub id:                8f2c00aa11bb22cc\n"
        "changes:               8 (1 deletes)\n"
        "events:                1\n"
        "commands:              2\n"
        "sessions:              2\n"
        "snapshots:             1 (latest at rev 5)\n"
        "first rev:             1\n"
        "last rev:              8\n"
        "first time:            2024-11-27T09:33:19.500Z\n"
        "last time:             2024-11-27T09:33:27.500Z\n"
        "oldest resumable rev:  0\n"
        f"size on disk:          {size} B ({size / 1024:.1f} KiB), WAL included (0 B)\n"
        f"bytes per change:      {round(size / 8, 1)}\n"
    )
    rc, out, _ = run(capsys, "stats", "--db", db, "--json")
    doc = msgspec.json.decode(out)
    assert doc["counts"] == {"change": 8, "event": 1, "command": 2, "session": 2}
    assert (doc["first_rev"], doc["last_rev"], doc["oldest_resumable_rev"]) == (1, 8, 0)
    assert (doc["size_bytes"], doc["bytes_per_change"]) == (size, round(size / 8, 1))
    apply_retention(Path(db), 3)
    _, out, _ = run(capsys, "stats", "--db", db, "--json")
    assert msgspec.json.decode(out)["oldest_resumable_rev"] == 3


def test_reads_while_the_writer_holds_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live EventLog (WAL, uncheckpointed) and a read-only reader at the same time."""
    from companion_hub.eventlog.store import EventLog, LogSettings

    p = tmp_path / "live.sqlite3"
    log = EventLog(LogSettings(path=str(p)))
    log.start()
    try:
        for rev in range(1, 51):
            log.append_change((rev, f"app.w.k{rev % 5}", rev, 0, b"1", "app.w", 0, T0 + rev, "w"))
        log.append_record((50, T0 + 60, "event", "w", "app.w.e", b'{"data":null}'))
        for _ in range(200):
            if log.durable_rev == 50 and not log.pending:
                break
            log.flushed.wait(0.05)
        rc, out, _ = run(capsys, "stats", "--db", str(p), "--json")
        doc = msgspec.json.decode(out)
        assert rc == 0
        assert doc["counts"]["change"] == 50 and doc["wal_bytes"] > 0
        _, out, _ = run(capsys, "state", "--db", str(p), "--at", "50", "--json")
        assert len(msgspec.json.decode(out)["entries"]) == 5
    finally:
        log.close()


# --- GET /api/log ---------------------------------------------------------------------


@pytest.fixture
async def api(db: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str, dict[str, Any]]]:
    holder: dict[str, Any] = {"path": db}
    app = web.Application()
    add_log_routes(app, lambda: holder["path"])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield http, f"http://127.0.0.1:{port}/api/log", holder
    await runner.cleanup()


async def test_api_pagination(api: tuple[aiohttp.ClientSession, str, dict[str, Any]]) -> None:
    http, url, _ = api
    pages = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        async with http.get(url, params=params) as r:
            assert r.status == 200 and r.content_type == "application/json"
            body = await r.json()
        pages.append([(x["rev"], x["type"]) for x in body["records"]])
        if body["next_from_rev"] is None:
            assert body["next_after_id"] is None
            break
        params = {"limit": 3, "from_rev": body["next_from_rev"]}
        if body["next_after_id"] is not None:
            params["after_id"] = body["next_after_id"]
    assert pages == [
        [(0, "session"), (1, "change"), (2, "change")],
        [(3, "change"), (3, "event"), (4, "change")],
        [(5, "change"), (5, "command")],
        [(6, "change"), (6, "session"), (7, "change")],
        [(8, "change"), (8, "command")],
    ]
    # default limit: everything here in one page, with the same JSON as the CLI
    async with http.get(url) as r:
        body = await r.json()
    assert len(body["records"]) == 13 and body["next_from_rev"] is None
    assert body["records"][4] == {
        "rev": 3, "ts": T0 + 2500, "type": "event", "client": "tally",
        "key": "app.tally.pressed", "id": 2, "data": {"data": {"button": 1}},
    }  # fmt: skip


async def test_api_filters_and_cursor(
    api: tuple[aiohttp.ClientSession, str, dict[str, Any]],
) -> None:
    http, url, _ = api
    q1 = [("pattern", "app.tally.count"), ("pattern", "companion"), ("type", "change,command"),
          ("since", "2024-11-27T09:33:24Z"), ("until", str(T0 + 7500)), ("client", "tally")]  # fmt: skip
    async with http.get(url, params=q1) as r:
        body = await r.json()
    assert [(x["rev"], x["type"]) for x in body["records"]] == [
        (5, "change"), (5, "command"), (8, "change"), (8, "command"),
    ]  # fmt: skip
    # one revision larger than the page: cut inside it, with a cursor
    async with http.get(url, params={"from_rev": 5, "to_rev": 5, "limit": 1}) as r:
        body = await r.json()
    assert [x["type"] for x in body["records"]] == ["change"]
    assert (body["next_from_rev"], body["next_after_id"]) == (5, 0)
    async with http.get(url, params={"from_rev": 5, "to_rev": 5, "limit": 1, "after_id": 0}) as r:
        body = await r.json()
    assert [x["type"] for x in body["records"]] == ["command"]
    assert body["next_from_rev"] is None
    # the limit is capped at 1000
    async with http.get(url, params={"limit": 5000}) as r:
        assert r.status == 200 and len((await r.json())["records"]) == 13


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pattern": "a.**.b"}, "'**' is allowed only as the last segment"),
        ({"from_rev": "x"}, "from_rev must be an integer"),
        ({"limit": "0"}, "limit must be at least 1"),
        ({"type": "nope"}, "unknown type 'nope'"),
        ({"since": "tomorrow"}, "invalid time"),
        ({"after_id": "3"}, "after_id needs from_rev"),
    ],
)
async def test_api_bad_requests(
    api: tuple[aiohttp.ClientSession, str, dict[str, Any]], params: dict[str, str], message: str
) -> None:
    http, url, _ = api
    async with http.get(url, params=params) as r:
        assert r.status == 400
        err = (await r.json())["error"]
    assert err["code"] == "BAD_REQUEST" and message in err["message"]


async def test_api_without_a_log(
    api: tuple[aiohttp.ClientSession, str, dict[str, Any]], tmp_path: Path
) -> None:
    http, url, holder = api
    holder["path"] = None
    async with http.get(url) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "NOT_FOUND"
    holder["path"] = str(tmp_path / "gone.sqlite3")
    async with http.get(url) as r:
        assert r.status == 503
        err = (await r.json())["error"]
    assert err["code"] == "UNAVAILABLE" and "no event log" in err["message"]


# --- replay into a live hub ---------------------------------------------------------------


async def _deltas(
    c: RawConnection, n: int, timeout: float = 10
) -> list[tuple[float, dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    got = []
    for _ in range(n):
        m = await c.receive(lambda m: m.get("op") == "delta", timeout=timeout)
        got.append((loop.time(), m))
    return got


async def test_replay_preserves_order_and_timing(db: str) -> None:
    # no flush delay: the replayer's last change and the stale flips of its leaving come
    # within a few ms, and would (rightly) coalesce into one delta per key for the watcher
    async with HubServer(HubConfig(port=0, flush_delay_ms=0)) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws"
        watcher = await connect_raw(url, "watcher")
        try:
            snap = await watcher.request(
                {"op": "subscribe", "sub": "s", "patterns": ["app.replayer.replay.**"]}
            )
            assert snap["op"] == "snapshot" and snap["entries"] == []
            conn = q.open_readonly(db)
            changes = list(q.iter_changes(conn, q.make_filter()))
            conn.close()
            loop = asyncio.get_running_loop()
            t_start = loop.time()
            task = asyncio.create_task(tools.replay(changes, url=url, client="replayer", speed=10))
            got = await _deltas(watcher, 7)
            res = await task
        finally:
            await watcher.close()
    base = "app.replayer.replay."
    seen = [
        (m["key"].removeprefix(base), m.get("value"), m["version"], bool(m.get("deleted")))
        for _, m in got
    ]
    assert seen == [
        ("app.tally.status", "live", 1, False),
        ("app.tally.count", 1, 1, False),
        ("companion.buttons.1.0.0", {"text": "CAM 1"}, 1, False),
        ("app.tally.status", "off", 2, False),
        ("app.tally.count", None, 2, True),
        ("companion.buttons.1.0.0", {"text": "CAM 2"}, 2, False),
        ("app.tally.count", 5, 3, False),
    ]
    revs = [m["rev"] for _, m in got]
    assert revs == sorted(revs)
    # recorded at 0, 1, 2, 3, 4, 6, 7 s: at speed 10 they arrive at about 0, 0.1, 0.2,
    # 0.3, 0.4, 0.6, 0.7 s (generous bounds: a loaded machine delays some deliveries)
    times = [t - got[0][0] for t, _ in got]
    assert 0.45 < times[-1] < 3.0, times
    assert times[2] > 0.1, times  # not all at once
    assert times[5] - times[4] > 0.08, times  # the 2 s gap stays visible
    assert got[0][0] - t_start < 1.0
    assert (res.sent, res.sets, res.deletes, res.skipped_flips) == (7, 6, 1, 1)
    assert (res.first_rev, res.last_rev, res.errors, res.not_found) == (1, 8, [], 0)


async def test_replay_cli_keep_keys_fast(db: str) -> None:
    """--keep-keys writes the original keys where the hub grants them; --speed 0."""
    cfg = HubConfig(port=0, grants={"replayer": ["app.tally"]})
    async with HubServer(cfg) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws"
        argv = ["log", "replay", "--db", db, "--from", "2", "--to", "2024-11-27T09:33:27Z",
                "--speed", "0", "--url", url, "--client", "replayer", "--keep-keys"]  # fmt: skip
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rc = await asyncio.to_thread(tools.main, argv)
        assert loop.time() - t0 < 4.5  # 5 s of history at speed 0: no waiting
        assert rc == 0
        count = srv.hub.store.get("app.tally.count")
        status = srv.hub.store.get("app.tally.status")
        assert count is not None and status is not None
        assert (count.raw, count.version) == (b"5", 3)  # set, delete, set: version 3
        assert (status.raw, status.version) == (b'"off"', 1)  # rev 4 only: from rev 2 on
        assert srv.hub.store.get("companion.buttons.1.0.0") is None  # not granted: skipped


async def test_replay_cli_reports(db: str, capfd: pytest.CaptureFixture[str]) -> None:
    async with HubServer(HubConfig(port=0)) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws"
        # from rev 5: the delete of a key the target never had
        argv = ["log", "replay", "--db", db, "--from", "5", "--to", "5", "--speed", "0",
                "--url", url, "--client", "replayer"]  # fmt: skip
        rc = await asyncio.to_thread(tools.main, argv)
        assert rc == 0
        err = capfd.readouterr().err
        assert "replayed 1 changes (0 sets, 1 deletes) from rev 5 to rev 5" in err
        assert "skipped: 1 deletes of keys the target does not have" in err
        rc = await asyncio.to_thread(
            tools.main, ["log", "replay", "--db", db, "--url", url, "--client", "Bad Name"]
        )
        assert rc == 2
    rc = await asyncio.to_thread(
        tools.main,
        ["log", "replay", "--db", db, "--url", "ws://127.0.0.1:9/ws", "--client", "r"],
    )
    assert rc == 1
    assert "cannot connect" in capfd.readouterr().err
