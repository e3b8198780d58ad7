"""The crash promise, tested with repeated random ``kill -9`` under load.

A hub process is killed at a random moment while a client writes (updating keys,
deleting them, and creating keys the log has never seen) and another client
subscribes. It is restarted on the same data directory, the clients come back
(the writer re-creates the keys whose creation may not have reached the disk, as
an application retrying would), and the hub is killed again: five kill points.

Checked across every run, from everything any client was told (acknowledgements,
snapshot entries, deltas):

- no revision ever names two different changes, and no (key, version) ever names
  two different values (a version or revision handed out before a crash is never
  handed out again, also for keys created in the lost window);
- nothing durable is lost: every acknowledged change at or below a ``durable_rev``
  that ``/health/ready`` reported is in the log, exactly as acknowledged;
- ``PRAGMA integrity_check`` is ok after every kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from companion_hub.client import ConnectionClosed, connect_raw

from .test_eventlog import free_port, spawn, wait_ready

KILLS = 5
DELETED = object()


class Observed:
    """Everything the clients were told, checked for contradictions as it arrives."""

    def __init__(self) -> None:
        self.by_rev: dict[int, tuple[str, int, Any]] = {}
        self.by_version: dict[tuple[str, int], Any] = {}
        self.acked: list[tuple[int, str, int, Any]] = []  # (rev, key, version, value)

    def see(self, rev: int, key: str, version: int, value: Any, *, change: bool) -> None:
        """``change`` is False for a snapshot entry (its rev is that of the entry's last
        change, which a stale flip at start-up keeps) and for stale flips, which repeat
        the (key, version, value) of the change before them."""
        seen = self.by_version.setdefault((key, version), value)
        assert seen == value, f"{key} v{version} was {seen!r} and is now {value!r}"
        if change:
            got = self.by_rev.setdefault(rev, (key, version, value))
            assert got == (key, version, value), f"rev {rev} was {got} and is now {key} v{version}"


async def _subscriber(url: str, hub: dict[str, Any], obs: Observed, since: list[int]) -> None:
    resume = {"hub": hub["id"], "rev": since[0]} if hub.get("id") and since[0] else None
    async with await connect_raw(url, "reader", resume=resume) as conn:
        assert conn.welcome is not None
        hub["id"] = conn.welcome["hub"]
        sub: dict[str, Any] = {"op": "subscribe", "id": "s", "sub": "s", "patterns": ["app.w.**"]}
        if since[0]:
            sub["since"] = since[0]
        await conn.send(sub)
        while True:
            try:
                m = await conn.receive(timeout=None)
            except ConnectionClosed:
                return
            op = m.get("op")
            if op == "snapshot":
                for e in m["entries"]:
                    obs.see(e["rev"], e["key"], e["version"], e["value"], change=False)
                since[0] = max(since[0], m["rev"])
            elif op == "delta":
                value = DELETED if m.get("deleted") else m["value"]
                obs.see(m["rev"], m["key"], m["version"], value, change=not m.get("stale"))
                since[0] = max(since[0], m["rev"])
            elif op == "progress":
                since[0] = max(since[0], m["rev"])


async def _writer(url: str, run: int, fresh_from: int, obs: Observed) -> None:
    """Updates a pool of keys, deletes and re-creates them, and creates fresh keys
    (``app.w.f<m>``) from ``fresh_from`` on; every value is unique."""
    n = 0
    m = fresh_from
    async with await connect_raw(url, "w") as conn:
        pending: dict[str, tuple[str, Any]] = {}
        while True:
            batch = []
            for _ in range(40):
                n += 1
                rid = f"{run}-{n}"
                if n % 4 == 0:
                    key, value = f"app.w.f{m}", f"fresh {run}:{n}"
                    m += 1
                    batch.append({"op": "set", "id": rid, "key": key, "value": value})
                else:
                    key = f"app.w.k{n % 300}"
                    if (n // 300) % 3 == 2:
                        value = DELETED
                        batch.append({"op": "delete", "id": rid, "key": key})
                    else:
                        value = f"{run}:{n}"
                        batch.append({"op": "set", "id": rid, "key": key, "value": value})
                pending[rid] = (key, value)
            await conn.send(batch)
            while pending:
                try:
                    r = await conn.receive(timeout=None)
                except ConnectionClosed:
                    return
                if r.get("op") != "result" or r.get("id") not in pending:
                    continue
                key, value = pending.pop(r["id"])
                if r["ok"] and "version" in r["result"]:
                    res = r["result"]
                    obs.see(res["rev"], key, res["version"], value, change=True)
                    obs.acked.append((res["rev"], key, res["version"], value))


async def _durable(port: int, seen: list[int]) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                async with http.get(f"http://127.0.0.1:{port}/health/ready") as r:
                    doc = await r.json()
                    seen[0] = max(seen[0], int(doc.get("durable_rev", 0)))
            await asyncio.sleep(0.03)


def _logged_fresh_max(db: sqlite3.Connection) -> int:
    best = -1
    for (key,) in db.execute("SELECT DISTINCT key FROM changes WHERE key LIKE 'app.w.f%'"):
        best = max(best, int(key.rsplit(".f", 1)[1]))
    return best


async def test_repeated_kill_9_under_load_never_reuses_and_never_loses(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    data = tmp_path / "data"
    obs = Observed()
    hub: dict[str, Any] = {}
    since = [0]
    fresh_from = 0
    for run in range(KILLS + 1):
        port = free_port()
        proc = spawn(data, port)
        durable = [0]
        tasks: list[asyncio.Task[None]] = []
        try:
            await wait_ready(port, proc)
            url = f"ws://127.0.0.1:{port}/ws"
            tasks = [
                asyncio.create_task(_subscriber(url, hub, obs, since)),
                asyncio.create_task(_writer(url, run, fresh_from, obs)),
                asyncio.create_task(_durable(port, durable)),
            ]
            await asyncio.sleep(rng.uniform(0.4, 1.5))
            for t in tasks:  # a client that died is a test failure, not a kill point
                if t.done():
                    t.result()
            if run == KILLS:
                proc.send_signal(signal.SIGTERM)  # the last run ends cleanly
            else:
                proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 20)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert durable[0] > 0, f"seed {seed}: nothing became durable in run {run}"
        db = sqlite3.connect(data / "hub.sqlite3")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            # nothing durable lost: each acknowledged change at or below a reported
            # durable_rev is in the log exactly as acknowledged
            for rev, key, version, value in obs.acked:
                if rev > durable[0] or not rev:
                    continue
                row = db.execute(
                    "SELECT key, version, deleted, value FROM changes WHERE rev = ?", (rev,)
                ).fetchone()
                assert row is not None, f"seed {seed}: durable rev {rev} is not in the log"
                logged = DELETED if row[2] else msgspec.json.decode(row[3] or b"null")
                assert (row[0], row[1], logged) == (key, version, value), (
                    f"seed {seed}: durable rev {rev} lost or changed"
                )
            fresh_from = _logged_fresh_max(db) + 1  # re-create what may have been lost
        finally:
            db.close()
        obs.acked = []  # the next run's durable_rev says nothing about this run's acks
    assert len(obs.by_rev) > 1000, f"seed {seed}: too little load to mean anything"
