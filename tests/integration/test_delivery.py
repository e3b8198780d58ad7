"""Delivery guarantees over real sockets (protocol section 4).

- snapshot/delta handoff under concurrent writers: no gap, no duplicate;
- a client that stops reading: bounded hub memory, others unaffected, converges;
- resume after a dropped connection equals a fresh snapshot (property-based);
- an idle subscriber's resume point keeps up through `progress`.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion_hub.client import RawConnection, connect_raw
from companion_hub.core.limits import Limits
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer

from .rawsocket import RawClient

View = dict[str, tuple[Any, int, bool]]


class Mirror:
    """What a client holds: applies snapshots and deltas, checks the delta stream."""

    def __init__(self) -> None:
        self.view: View = {}
        self.versions: dict[str, int] = {}
        self.rev = 0
        self.snapshot_rev = 0
        self.deltas: list[dict[str, Any]] = []

    def apply_snapshot(self, rev: int, mode: str, entries: list[dict], removed: list[dict]) -> None:
        if mode == "full":
            self.view.clear()
        for e in entries:
            assert e["version"] >= self.versions.get(e["key"], 0), "version went back"
            assert e["rev"] <= rev and (e["stale"] == ("stale_since" in e)), e
            self.view[e["key"]] = (e["value"], e["version"], e["stale"])
            self.versions[e["key"]] = e["version"]
        for r in removed:  # revision 2: {"key", "version", "rev"} of the delete
            assert self.snapshot_rev < r["rev"] <= rev, (r, self.snapshot_rev, rev)
            assert r["version"] > self.versions.get(r["key"], 0), "a delete's version went back"
            self.view.pop(r["key"], None)
            self.versions[r["key"]] = r["version"]
        self.rev = self.snapshot_rev = rev

    def apply(self, m: dict[str, Any]) -> None:
        op = m["op"]
        if op == "progress":
            assert m["rev"] >= self.rev
            self.rev = m["rev"]
            return
        assert op == "delta", m
        assert m["rev"] > self.rev, f"delta rev {m['rev']} not above {self.rev}: gap/dup"
        assert m["version"] >= self.versions.get(m["key"], 0), "version went back"
        self.rev = m["rev"]
        self.versions[m["key"]] = m["version"]
        self.deltas.append(m)
        if m.get("deleted"):
            self.view.pop(m["key"], None)
        else:
            self.view[m["key"]] = (m["value"], m["version"], m["stale"])


def hub_view(srv: HubServer, prefix: str = "app.") -> View:
    return {
        e.key: (msgspec.json.decode(e.raw), e.version, e.stale)
        for ns in srv.hub.store.namespaces()
        for e in ns.entries.values()
        if e.key.startswith(prefix)
    }


async def read_until(c: RawConnection, mirror: Mirror, done: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            m = await c.receive(lambda m: m["op"] in ("delta", "progress"))
            mirror.apply(m)


# --- handoff ---------------------------------------------------------------------


async def _writer(url: str, name: str, keys: int, stop: asyncio.Event, log: list) -> None:
    c = await connect_raw(url, name)
    counter = itertools.count()
    while not stop.is_set():
        batch = []
        for _ in range(20):
            n = next(counter)
            batch.append(
                {"op": "set", "id": f"{name}-{n}", "key": f"app.{name}.k{n % keys}", "value": n}
            )
        await c.send(batch)
        for msg in batch:
            r = await c.receive(lambda m, i=msg["id"]: m.get("id") == i)
            assert r["ok"], r
            log.append((msg["key"], r["result"]["version"], r["result"]["rev"]))
    await c.close()


async def test_handoff_under_concurrent_writers(hub: HubServer) -> None:
    stop = asyncio.Event()
    log: list[tuple[str, int, int]] = []
    writers = [asyncio.create_task(_writer(hub.url, f"w{i}", 15, stop, log)) for i in range(3)]
    subscribers: list[tuple[RawConnection, Mirror]] = []
    for _ in range(4):  # subscribe at different moments while the writers are busy
        await asyncio.sleep(0.15)
        c = await connect_raw(hub.url, f"sub{len(subscribers)}")
        m = Mirror()
        rev, entries = await c.subscribe("app.**")
        m.apply_snapshot(rev, "full", entries, [])
        subscribers.append((c, m))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*writers)
    assert len(log) > 300
    final = hub_view(hub)
    by_key: dict[str, list[tuple[int, int]]] = {}
    for key, version, rev in log:
        by_key.setdefault(key, []).append((rev, version))
    written = {(k, v, r) for k, v, r in log}
    for c, m in subscribers:
        # the snapshot is exactly the state at its rev
        snap_rev = m.snapshot_rev
        await read_until(c, m, lambda m=m: m.view == final)
        for key, hist in by_key.items():
            before = [v for r, v in hist if r <= snap_rev]
            after = [v for r, v in hist if r > snap_rev]
            if after:
                # the last change after the snapshot was delivered as a delta
                assert any(d["key"] == key and d["version"] == after[-1] for d in m.deltas)
            if before and not after:
                assert m.view[key][1] == before[-1]
        revs = [d["rev"] for d in m.deltas]
        assert revs == sorted(set(revs)) and (not revs or revs[0] > snap_rev)
        # every delta is a real change (no phantom, no duplicate); the writers' own
        # disconnects at the end flip their keys stale (same version, new rev)
        for d in m.deltas:
            if d["stale"]:
                assert d["version"] == by_key[d["key"]][-1][1]
            else:
                assert (d["key"], d["version"], d["rev"]) in written
        keyrevs = [(d["key"], d["rev"]) for d in m.deltas]
        assert len(keyrevs) == len(set(keyrevs))
        await c.close()


# --- a client that stops reading -------------------------------------------------


async def test_paused_reader_is_bounded_and_does_not_slow_others(hub_factory) -> None:  # type: ignore[no-untyped-def]
    srv = await hub_factory(heartbeat_ms=5_000)
    keys = 200
    slow = await RawClient.connect("127.0.0.1", srv.port, limit=2**14)
    slow.send({"op": "hello", "id": "1", "client": "slow"})
    slow.send({"op": "subscribe", "id": "2", "sub": "s", "patterns": ["app.**"]})
    got: list[dict] = []
    while not any(m.get("op") == "snapshot" for m in got):
        got.extend(await slow.recv())
    fast = await connect_raw(srv.url, "fast")
    fm = Mirror()
    rev, entries = await fast.subscribe("app.**")
    fm.apply_snapshot(rev, "full", entries, [])
    session = srv.hub.sessions["slow"]
    config: HubConfig = srv.config
    writer = await connect_raw(srv.url, "w")
    stop = asyncio.Event()
    n_written = 0
    max_queue = 0
    max_inflight = 0

    async def write() -> None:
        nonlocal n_written
        n = 0
        while not stop.is_set():
            batch = [
                {"op": "set", "id": str(n + i), "key": f"app.w.k{(n + i) % keys}", "value": n + i}
                for i in range(100)
            ]
            n += 100
            await writer.send(batch)
            last = batch[-1]["id"]
            await writer.receive(lambda m, last=last: m.get("id") == last)  # as fast as accepted
            writer.inbox.clear()
        n_written = n

    async def fast_reader() -> None:
        while True:
            m = await fast.receive(lambda m: m["op"] == "delta")
            fm.apply(m)

    wt = asyncio.create_task(write())
    rt = asyncio.create_task(fast_reader())
    loop = asyncio.get_running_loop()
    t_end = loop.time() + 2.0  # the slow client reads nothing for 2 s
    while loop.time() < t_end:
        await asyncio.sleep(0.05)
        max_queue = max(max_queue, len(session.queue))
        max_inflight = max(max_inflight, session.window.unconfirmed)
    stop.set()
    await wt
    # drain the writer's results so its socket stays healthy
    final = hub_view(srv, "app.w.")
    assert n_written > 5_000
    # the fast client converges while the slow one is still paused
    async with asyncio.timeout(10):  # generous: the slow client stays paused meanwhile
        while {k: v for k, v in fm.view.items() if k.startswith("app.w.")} != final:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    rt.cancel()
    # the hub's memory for the paused client stayed within the coalescing bound:
    # at most one pending delta per key, and at most one window (+1 frame) in flight
    assert max_queue <= keys + 5, max_queue
    assert max_inflight <= config.delivery_window_bytes + config.frame_target_bytes + 4096
    transport = session.connection.ws._req.transport  # type: ignore[attr-defined]
    assert (
        transport.get_write_buffer_size()
        <= config.delivery_window_bytes + config.frame_target_bytes
    )
    # now it reads again and converges to the same state
    view: View = {
        e["key"]: (e["value"], e["version"], e["stale"])
        for m in got
        if m.get("op") == "snapshot"
        for e in m["entries"]
    }
    async with asyncio.timeout(10):
        while {k: v for k, v in view.items() if k.startswith("app.w.")} != final:
            for m in await slow.recv():
                if m.get("op") == "delta":
                    view[m["key"]] = (m["value"], m["version"], m["stale"])
    slow.close()
    await fast.close()
    await writer.close()


# --- resume == fresh snapshot (property-based, random drop points) -------------------

OPS = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["set", "set", "delete"]), st.integers(0, 3)),
    min_size=1,
    max_size=25,
)


async def _apply_ops(c: RawConnection, ops: list[tuple[int, str, int]]) -> None:
    for k, action, v in ops:
        msg: dict[str, Any] = {"op": action, "key": f"app.w.k{k}"}
        if action == "set":
            msg["value"] = {"v": v}
        r = await c.request(msg)
        assert r["ok"] or r["error"]["code"] == "NOT_FOUND", r


async def _resume_scenario(before: list, during: list, drop_after: int, history: int) -> None:
    srv = HubServer(HubConfig(port=0, limits=Limits(history_changes=history)))
    await srv.start()
    url = f"ws://127.0.0.1:{srv.port}/ws"
    try:
        writer = await connect_raw(url, "w")
        await _apply_ops(writer, before)
        reader = await connect_raw(url, "r")
        m = Mirror()
        rev, entries = await reader.subscribe("app.**")
        m.apply_snapshot(rev, "full", entries, [])
        await _apply_ops(writer, during[: len(during) // 2])
        await asyncio.sleep(0.02)
        # process only the first `drop_after` messages, then the connection drops
        processed = 0
        while processed < drop_after:
            try:
                msg = await reader.receive(lambda x: x["op"] in ("delta", "progress"), timeout=0.1)
            except TimeoutError:
                break
            m.apply(msg)
            processed += 1
        reader.ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await reader.close()  # nothing left to close on the wire: it just frees the session
        await _apply_ops(writer, during[len(during) // 2 :])
        again = await connect_raw(url, "r", resume={"hub": reader.welcome["hub"], "rev": m.rev})
        rid = again.new_id()
        await again.send(
            {"op": "subscribe", "id": rid, "sub": "s", "patterns": ["app.**"], "since": m.rev}
        )
        entries, removed = [], []
        while True:
            snap = await again.receive(lambda x: x.get("id") == rid)
            entries += snap["entries"]
            removed += snap["removed"]
            if snap["done"]:
                break
        if m.rev >= srv.hub.store.oldest_resumable:
            assert snap["mode"] == "incremental"
        m.apply_snapshot(snap["rev"], snap["mode"], entries, removed)
        target = hub_view(srv)
        await read_until(again, m, lambda: m.view == target, timeout=5)
        fresh = await again.result({"op": "get", "patterns": ["app.**"]})
        assert m.view == {
            e["key"]: (e["value"], e["version"], e["stale"]) for e in fresh["entries"]
        }
        await again.close()
        await writer.close()
    finally:
        await srv.stop()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=OPS, during=OPS, drop_after=st.integers(0, 15), history=st.sampled_from([5, 1000]))
def test_resume_equals_fresh_snapshot(
    before: list, during: list, drop_after: int, history: int
) -> None:
    asyncio.run(_resume_scenario(before, during, drop_after, history))


# --- progress ----------------------------------------------------------------------


async def test_idle_subscriber_gets_progress(hub_factory) -> None:  # type: ignore[no-untyped-def]
    srv = await hub_factory(heartbeat_ms=150)
    idle = await connect_raw(srv.url, "idle")
    rev0, _ = await idle.subscribe("app.quiet.**")
    writer = await connect_raw(srv.url, "w")
    for i in range(5):
        await writer.result({"op": "set", "key": "app.w.x", "value": i})
    hub_rev = srv.hub.store.rev
    p = await idle.receive(lambda m: m["op"] == "progress", timeout=2)
    assert p["rev"] >= hub_rev > rev0
    assert not [m for m in idle.inbox if m["op"] == "delta"]
    # resuming from the progress rev is incremental and empty
    again = await connect_raw(srv.url, "idle2", resume={"hub": srv.hub.hub_id, "rev": p["rev"]})
    rid = again.new_id()
    await again.send(
        {"op": "subscribe", "id": rid, "sub": "s", "patterns": ["app.quiet.**"], "since": p["rev"]}
    )
    snap = await again.receive(lambda m: m.get("id") == rid)
    assert snap["mode"] == "incremental" and snap["entries"] == [] and snap["removed"] == []
    # no second progress while nothing moves
    with __import__("pytest").raises(TimeoutError):
        await idle.receive(lambda m: m["op"] == "progress" and m["rev"] == p["rev"], timeout=0.5)
    for c in (idle, writer, again):
        await c.close()
