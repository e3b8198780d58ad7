"""The event log on a full disk: writers are held, the hub says why, and it recovers.

The data directory is a small tmpfs (2 MB), mounted for the test and grown with
``mount -o remount,size=...`` when the test frees space. Mounting needs root: without
it the tests are skipped, except under CI (``CI`` set), where they must run.

No timing upper bounds: every wait polls with a generous deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from companion_hub.client import connect_raw
from companion_hub.core.store import Entry
from companion_hub.eventlog.store import EventLog, LogSettings
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer

MAX_PENDING = 2_000
# What may be acknowledged beyond durable_rev on top of max_pending while the writers
# are held: each held connection finishes the message it is handling (one per writer),
# and the hub adds rows of its own (session records, hub.* keys). 100 is plenty.
SLACK = 100
WRITERS = 4
PER_WRITER = 4_000  # 16,000 values of ~330 bytes: several times the 2 MB, far below 64 MB
FRAME = 50  # messages per frame


@dataclass
class SmallFs:
    path: Path

    def resize(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.path)],
            check=True,
            capture_output=True,
            timeout=30,
        )


def _mount(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; why not, or None when it is mounted."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("mount") is None:
        return "no mount command"
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"mount failed: {exc}"
    if r.returncode != 0:
        return f"mount failed: {r.stderr.strip() or r.returncode}"
    return None


def _unmount(path: Path) -> None:
    for _ in range(50):
        r = subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30)
        if r.returncode == 0:
            return
        time.sleep(0.1)  # a file still open: the hub's threads are ending
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    why = _mount(mnt, "2m")
    if why is not None:
        if "CI" in os.environ:
            pytest.fail(f"CI runs as root and must be able to mount a 2 MB tmpfs: {why}")
        pytest.skip(f"needs a small tmpfs for the data directory (root and mount): {why}")
    try:
        yield SmallFs(mnt)
    finally:
        _unmount(mnt)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    timeout: float = 30.0,
    every: float = 0.05,
) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = check()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(every)


def value_of(writer: int, i: int) -> str:
    # ~330 bytes that differ per write (so every acknowledged write can be found again)
    seed = f"{writer}:{i}:"
    return seed + (seed.encode().hex() * 40)[:320]


def key_of(writer: int, i: int) -> str:
    return f"app.w{writer}.k{i % 25}"


@dataclass
class Acks:
    revs: list[int] = field(default_factory=list)
    writes: dict[int, tuple[str, str]] = field(default_factory=dict)  # rev -> key, value
    done: int = 0

    def beyond(self, durable_rev: int) -> int:
        return sum(1 for r in self.revs if r > durable_rev)


async def write_all(url: str, writer: int, acks: Acks) -> None:
    """Set PER_WRITER values as fast as the hub takes them, FRAME messages a frame."""
    c = await connect_raw(url, f"w{writer}")
    try:
        for start in range(0, PER_WRITER, FRAME):
            msgs = [
                {
                    "op": "set",
                    "id": f"{writer}-{i}",
                    "key": key_of(writer, i),
                    "value": value_of(writer, i),
                }
                for i in range(start, start + FRAME)
            ]
            await c.send(msgs)
            for m in msgs:
                r = await c.receive(lambda x, rid=m["id"]: x.get("id") == rid, timeout=300)
                assert r["op"] == "result" and r["ok"], r
                rev = r["result"]["rev"]
                acks.revs.append(rev)
                acks.writes[rev] = (m["key"], m["value"])
        acks.done += 1
    finally:
        await c.close()


async def ready(http: aiohttp.ClientSession, port: int) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{port}/health/ready") as r:
        return r.status, await r.json()


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """The blocking ``eventually`` (for the tests without an event loop)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def stable_for(get: Callable[[], Any], seconds: float, what: str, timeout: float = 30.0) -> Any:
    """Wait until ``get()`` keeps the same value for ``seconds``; return it."""
    deadline = time.monotonic() + timeout
    last, since = get(), time.monotonic()
    while time.monotonic() - since < seconds:
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not settle within {timeout} s")
        time.sleep(0.02)
        now = get()
        if now != last:
            last, since = now, time.monotonic()
    return last


@pytest.mark.timeout(600)
async def test_a_full_disk_holds_the_writers_and_the_log_recovers_by_itself(
    small_fs: SmallFs,
) -> None:
    srv = HubServer(
        HubConfig(
            port=0, data_dir=str(small_fs.path), log_max_pending=MAX_PENDING, heartbeat_ms=10_000
        )
    )
    await srv.start()
    stopped = False
    http = aiohttp.ClientSession()
    writers: list[asyncio.Task[None]] = []
    try:
        hub = srv.hub
        event_log = hub.event_log
        assert event_log is not None
        status, doc = await ready(http, srv.port)
        assert status == 200 and doc["status"] == "ok" and "error" not in doc

        url = f"ws://127.0.0.1:{srv.port}/ws"
        acks = Acks()
        writers = [asyncio.create_task(write_all(url, n, acks)) for n in range(WRITERS)]
        worst = 0

        def bounded() -> bool:
            """The invariant while the disk refuses: at most max_pending (+ slack)
            acknowledged writes, and revisions, are beyond durable_rev."""
            nonlocal worst
            durable = event_log.durable_rev
            beyond = max(acks.beyond(durable), hub.store.rev - durable)
            worst = max(worst, beyond)
            assert beyond <= MAX_PENDING + SLACK, (beyond, event_log.pending)
            return True

        # 1. the disk fills up: the log says so
        def failing() -> bool:
            bounded()
            assert not any(w.done() for w in writers), [w for w in writers if w.done()]
            return event_log.stats.errors > 0

        await eventually(failing, "a write fails", timeout=120)

        # 2. the writers are held: acknowledgements stop at the bound, and stay there
        loop = asyncio.get_running_loop()
        count, since = len(acks.revs), loop.time()

        def settled() -> bool:
            nonlocal count, since
            bounded()
            if len(acks.revs) != count:
                count, since = len(acks.revs), loop.time()
            return loop.time() - since >= 1.0

        await eventually(settled, "acknowledgements stop", timeout=120, every=0.1)
        held = len(acks.revs)
        end = loop.time() + 3.0
        while loop.time() < end:  # a few more seconds: nothing more gets acknowledged
            bounded()
            assert len(acks.revs) == held
            await asyncio.sleep(0.1)
        assert held < WRITERS * PER_WRITER and acks.done == 0
        answers: list[tuple[int, dict[str, Any]]] = []

        async def unready() -> bool:
            answers.append(await ready(http, srv.port))
            return answers[-1][0] == 503

        await eventually(unready, "/health/ready says 503")
        status, doc = answers[-1]
        assert doc["status"] == "error" and "full" in doc["error"], doc
        assert "SQLITE_FULL" in doc["error"], doc
        assert doc["hub"] == hub.hub_id and doc["rev"] <= hub.store.rev
        assert doc["durable_rev"] <= event_log.durable_rev < max(acks.revs)
        assert doc["log_pending"] >= MAX_PENDING // 2  # still held (released below half)

        # 3. space comes back: the log catches up and the writers finish on their own
        await asyncio.to_thread(small_fs.resize, "64m")

        async def healthy() -> bool:
            status, doc = await ready(http, srv.port)
            return status == 200 and doc["status"] == "ok" and "error" not in doc

        await eventually(
            lambda: event_log.durable_rev >= max(acks.revs),
            "durable_rev catches up with the acknowledged writes",
        )
        await eventually(healthy, "/health/ready is 200 again")
        assert event_log.error is None
        await asyncio.wait_for(asyncio.gather(*writers), timeout=300)
        assert acks.done == WRITERS and len(acks.revs) == WRITERS * PER_WRITER
        assert len(set(acks.revs)) == len(acks.revs)
        await eventually(
            lambda: event_log.durable_rev >= max(acks.revs), "durable_rev covers every write"
        )
        assert worst <= MAX_PENDING + SLACK

        # 4. a clean stop and a restart: every acknowledged write is in the log
        await srv.stop()
        stopped = True
    finally:
        for w in writers:
            w.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        await http.close()
        if not stopped:
            await asyncio.to_thread(small_fs.resize, "64m")  # let it close cleanly
            await srv.stop()

    again = HubServer(HubConfig(port=0, data_dir=str(small_fs.path), heartbeat_ms=10_000))
    await again.start()
    try:
        assert again.hub.recovered is not None and again.hub.recovered.clean
        last: dict[str, tuple[int, str]] = {}
        for rev, (key, value) in acks.writes.items():
            if rev > last.get(key, (0, ""))[0]:
                last[key] = (rev, value)
        for key, (_, value) in last.items():
            e = again.hub.store.get(key)
            assert e is not None and msgspec.json.decode(e.raw) == value, key
    finally:
        await again.stop()

    db = sqlite3.connect(small_fs.path / "hub.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        logged = {
            int(rev): (str(key), msgspec.json.decode(raw))
            for rev, key, raw in db.execute(
                "SELECT rev, key, value FROM changes WHERE key LIKE 'app.w%'"
            )
        }
    finally:
        db.close()
    missing = [rev for rev, kv in acks.writes.items() if logged.get(rev) != kv]
    assert not missing, f"{len(missing)} acknowledged writes are not in the log: {missing[:5]}"


def change(rev: int, size: int = 300) -> tuple[Any, ...]:
    raw = msgspec.json.encode(f"{rev}:" + "v" * size)
    return (rev, f"app.a.k{rev % 50}", rev, 0, raw, "app.a", 0, int(time.time() * 1000), "a")


def test_rows_in_flight_stay_pending_until_committed_and_writing_resumes(
    small_fs: SmallFs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="companion_hub.eventlog")
    n = 12_000  # about 4 MB of rows on a 2 MB file system
    el = EventLog(LogSettings(path=str(small_fs.path / "hub.sqlite3"), max_pending=1_000))
    el.start()
    t0 = time.monotonic()
    try:
        for rev in range(1, n + 1):
            el.append_change(change(rev))  # type: ignore[arg-type]
        wait_for(lambda: el.error is not None, "a write error")
        stuck = stable_for(lambda: el.durable_rev, 1.0, "durable_rev")
        assert stuck < n
        # every row not committed is pending, whether queued or taken by the writer (read
        # in this order, pending may run ahead of durable_rev for a moment, never behind)
        for _ in range(50):
            assert n - stuck >= el.pending >= n - el.durable_rev
            assert el.over_limit  # the hub would hold its writers
            time.sleep(0.02)
        assert el.error is not None and "SQLITE_FULL" in el.error
        assert el.error_since is not None
        errors = el.stats.errors
        wait_for(lambda: el.stats.errors > errors, "the writer keeps retrying")

        # a little space: smaller transactions fit, the log moves on
        small_fs.resize("3m")
        wait_for(lambda: el.durable_rev > stuck, "progress after a little space came back")
        # plenty of space: everything is written, in order
        small_fs.resize("64m")
        wait_for(lambda: el.durable_rev == n and el.pending == 0, "the log catches up")
        wait_for(lambda: el.error is None, "the error clears")
        assert el.error_since is None
    finally:
        small_fs.resize("64m")
        el.close()
    elapsed = time.monotonic() - t0

    db = sqlite3.connect(small_fs.path / "hub.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT rev, key, value FROM changes ORDER BY rev").fetchall()
    finally:
        db.close()
    assert [(r, k, bytes(v)) for r, k, v in rows] == [
        (c[0], c[1], c[4]) for c in (change(rev) for rev in range(1, n + 1))
    ]

    # one line per distinct error every few seconds at most, and no tracebacks
    failed = [r for r in caplog.records if r.getMessage().startswith("event log write failed")]
    assert failed and all(r.exc_info is None for r in caplog.records)
    per_error: dict[str, int] = {}
    for r in failed:
        per_error[r.__dict__["error"]] = per_error.get(r.__dict__["error"], 0) + 1
    assert all(k <= 2 + elapsed / 5.0 for k in per_error.values()), (per_error, elapsed)
    assert any(r.getMessage() == "event log writes resumed" for r in caplog.records)


def test_a_snapshot_too_large_for_the_disk_does_not_block_the_history(
    small_fs: SmallFs,
) -> None:
    el = EventLog(LogSettings(path=str(small_fs.path / "hub.sqlite3")))
    el.start()
    try:
        for rev in range(1, 101):
            el.append_change(change(rev, 50))  # type: ignore[arg-type]
        # a 3 MB image can never fit on a 2 MB file system
        big = [
            Entry(f"app.a.k{i}", b'"' + b"s" * 1000 + b'"', 1, i, "app.a", False, 1)
            for i in range(3000)
        ]
        el.append_snapshot(100, big, {})
        for rev in range(101, 201):
            el.append_change(change(rev, 50))  # type: ignore[arg-type]
        wait_for(lambda: el.durable_rev == 200 and el.pending == 0, "the rows behind it")
        assert el.error is None
        assert el.stats.errors >= 1 and "full" in el.stats.last_error
    finally:
        el.close()
    db = sqlite3.connect(small_fs.path / "hub.sqlite3")
    try:
        assert db.execute("SELECT COUNT(*), MAX(rev) FROM changes").fetchone() == (200, 200)
        assert db.execute("SELECT COUNT(*) FROM snapshots").fetchone() == (0,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
