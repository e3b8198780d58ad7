"""Staleness (section 6): on close, on heartbeat death; fresh on re-write; sync."""

from __future__ import annotations

import asyncio

import pytest

from companion_hub.client import connect_raw
from companion_hub.server.app import HubServer

from .rawsocket import RawClient


async def test_stale_on_close_and_fresh_on_rewrite(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "tally")
    v = await owner.result({"op": "set", "key": "app.tally.x", "value": 1})
    await owner.result({"op": "set", "key": "app.tally.y", "value": 2})
    watcher = await connect_raw(hub.url, "watcher")
    rev, _ = await watcher.subscribe("app.tally.**")
    await owner.close()
    stale = [await watcher.receive(lambda m: m.get("op") == "delta") for _ in range(2)]
    assert {d["key"] for d in stale} == {"app.tally.x", "app.tally.y"}
    for d in stale:
        assert d["stale"] is True and d["rev"] > rev
    x = next(d for d in stale if d["key"] == "app.tally.x")
    assert x["version"] == v["version"] and x["value"] == 1
    # the owner returns: an equal write clears the flag, same version, new rev
    owner2 = await connect_raw(hub.url, "tally")
    r = await owner2.result({"op": "set", "key": "app.tally.x", "value": 1})
    assert r["version"] == v["version"] and r["rev"] > x["rev"]
    fresh = await watcher.receive(lambda m: m.get("op") == "delta")
    assert fresh["key"] == "app.tally.x" and fresh["stale"] is False
    y = hub.hub.store.get("app.tally.y")
    assert y is not None and y.stale  # not re-written: still stale
    await owner2.close()
    await watcher.close()


async def test_stale_on_heartbeat_death(hub_factory) -> None:  # type: ignore[no-untyped-def]
    srv = await hub_factory(heartbeat_ms=200)
    raw = await RawClient.connect("127.0.0.1", srv.port, answer_pings=False)
    raw.send({"op": "hello", "id": "1", "client": "mute"})
    raw.send({"op": "set", "id": "2", "key": "app.mute.k", "value": "on"})
    await raw.recv()
    watcher = await connect_raw(srv.url, "watcher")
    await watcher.subscribe("app.mute.**")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # the raw client never answers pings (and sends nothing): the hub must give up
    d = await watcher.receive(lambda m: m.get("op") == "delta", timeout=3)
    elapsed = loop.time() - t0
    assert d["key"] == "app.mute.k" and d["stale"] is True
    # 2 x heartbeat (0.4 s) after the last frame; a generous bound for a loaded machine
    assert 0.2 <= elapsed < 3.0, elapsed
    assert "mute" not in srv.hub.sessions
    raw.close()
    await watcher.close()


async def test_a_live_client_is_not_killed_by_heartbeat(hub_factory) -> None:  # type: ignore[no-untyped-def]
    srv = await hub_factory(heartbeat_ms=100)
    c = await connect_raw(srv.url, "alive")  # aiohttp answers pings
    await c.result({"op": "set", "key": "app.alive.k", "value": 1})
    with pytest.raises(TimeoutError):  # keep reading (aiohttp answers pings while reading)
        await c.receive(lambda m: False, timeout=0.6)
    assert await c.result({"op": "get", "patterns": ["app.alive.k"]})
    assert not srv.hub.store.get("app.alive.k").stale  # type: ignore[union-attr]
    await c.close()


async def test_sync_deletes_what_was_not_rewritten(hub: HubServer) -> None:
    first = await connect_raw(hub.url, "tally")
    for k in ("a", "b", "c"):
        await first.result({"op": "set", "key": f"app.tally.{k}", "value": k})
    await first.close()
    watcher = await connect_raw(hub.url, "watcher")
    await watcher.subscribe("app.tally.**")
    again = await connect_raw(hub.url, "tally")
    await again.result({"op": "set", "key": "app.tally.b", "value": "b"})  # equal value counts
    await again.result({"op": "set", "key": "app.tally.d", "value": "d"})
    r = await again.result({"op": "sync"})
    assert r["deleted"] == 2
    state = await again.result({"op": "get", "patterns": ["app.tally.*"]})
    assert {e["key"]: e["stale"] for e in state["entries"]} == {
        "app.tally.b": False,
        "app.tally.d": False,
    }
    deletes = set()
    while len(deletes) < 2:
        m = await watcher.receive(lambda m: m.get("op") == "delta" and m.get("deleted", False))
        deletes.add(m["key"])
    assert deletes == {"app.tally.a", "app.tally.c"}
    await again.close()
    await watcher.close()
