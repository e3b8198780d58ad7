"""``GET /api/stream`` over real sockets: snapshot, deltas, resume by Last-Event-ID,
heartbeats, read filtering, coalescing for a reader that does not read, and cleanup
on disconnect and shutdown."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from companion_hub.core.limits import Limits
from companion_hub.server.app import HubServer
from companion_hub.server.sse import STREAMS

ME = {"X-Companion-Client": "tally"}


async def read_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next event (or comment) as {"id", "event", "data", "comment"}."""
    ev: dict[str, Any] = {}
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if line == "":
            if ev:
                return ev
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "":
            return {"comment": value}
        if field == "data":
            ev["data"] = json.loads(value)
        else:
            ev[field] = value


async def next_data(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    while True:
        ev = await read_event(resp)
        if "data" in ev:
            return ev


async def test_snapshot_deltas_and_resume(hub: HubServer) -> None:
    url = f"http://127.0.0.1:{hub.port}"
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/api/state/app.tally.a", json=1, headers=ME) as r:
            assert r.status == 200
        async with http.get(f"{url}/api/stream?pattern=app.tally.**") as s:
            assert s.status == 200 and s.headers["Content-Type"].startswith("text/event-stream")
            first = await read_event(s)
            assert first == {"retry": "2000"}
            snap = await next_data(s)
            assert snap["event"] == "snapshot" and snap["data"]["mode"] == "full"
            assert [e["key"] for e in snap["data"]["entries"]] == ["app.tally.a"]
            assert int(snap["id"]) == snap["data"]["rev"] == hub.hub.store.rev
            async with http.put(f"{url}/api/state/app.tally.b", json={"x": 1}, headers=ME) as r:
                rev_b = (await r.json())["rev"]
            async with http.delete(f"{url}/api/state/app.tally.a", headers=ME) as r:
                rev_del = (await r.json())["rev"]
            other = {"X-Companion-Client": "other"}
            async with http.put(f"{url}/api/state/app.other.x", json=1, headers=other) as r:
                assert r.status == 200  # not in the stream's patterns
            d1 = await next_data(s)
            assert d1["event"] == "delta" and int(d1["id"]) == rev_b
            assert d1["data"]["key"] == "app.tally.b" and d1["data"]["owner"] == "app.tally"
            d2 = await next_data(s)
            assert d2["data"]["deleted"] is True and int(d2["id"]) == rev_del
            last_id = snap["id"]
        # resume after the snapshot: an incremental snapshot with the change and removal
        async with http.get(
            f"{url}/api/stream?pattern=app.tally.**", headers={"Last-Event-ID": last_id}
        ) as s:
            snap = await next_data(s)
            assert snap["data"]["mode"] == "incremental"
            assert [e["key"] for e in snap["data"]["entries"]] == ["app.tally.b"]
            assert [r["key"] for r in snap["data"]["removed"]] == ["app.tally.a"]
        async with http.get(f"{url}/api/stream?since={rev_del}&pattern=app.tally.**") as s:
            snap = await next_data(s)
            assert snap["data"]["mode"] == "incremental" and snap["data"]["entries"] == []
        # from the future, or out of the window: a full snapshot
        async with http.get(f"{url}/api/stream?last_event_id=999999") as s:
            snap = await next_data(s)
            assert snap["data"]["mode"] == "full"
        for q in ("since=x", "since=-1", "pattern=a..b"):
            async with http.get(f"{url}/api/stream?{q}") as s:
                assert s.status == 400
                assert (await s.json())["error"]["code"] == "BAD_REQUEST"
    for _ in range(100):  # a closed stream is noticed within half a second
        if not hub.app[STREAMS]:
            break
        await asyncio.sleep(0.02)
    assert not hub.app[STREAMS]


async def test_heartbeat_and_cleanup_on_disconnect(hub_factory: Any) -> None:
    srv = await hub_factory(heartbeat_ms=200)
    url = f"http://127.0.0.1:{srv.port}"
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/stream") as s:
        await next_data(s)
        ev = await read_event(s)
        assert ev == {"comment": "ping"}
        assert len(srv.app[STREAMS]) == 1
    for _ in range(100):
        if not srv.app[STREAMS] and not srv.hub.index.match("app.x.y"):
            break
        await asyncio.sleep(0.02)
    assert not srv.app[STREAMS]
    assert not srv.hub.index.match("app.x.y")


async def test_shutdown_ends_streams(hub_factory: Any) -> None:
    srv = await hub_factory()
    url = f"http://127.0.0.1:{srv.port}"
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/stream") as s:
        await next_data(s)
        t0 = asyncio.get_running_loop().time()
        await srv.stop()
        assert asyncio.get_running_loop().time() - t0 < 1.5
        rest = await asyncio.wait_for(s.content.read(), 2)
        assert b"event: delta" not in rest
    assert not srv.app[STREAMS]


async def test_a_reader_that_does_not_read_costs_one_delta_per_key(hub_factory: Any) -> None:
    srv = await hub_factory(limits=Limits(value_bytes=64 * 1024))
    _reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(
        b"GET /api/stream?pattern=app.tally.** HTTP/1.1\r\nHost: x\r\n\r\n"
    )  # and never read: the socket's buffers fill up
    await writer.drain()
    for _ in range(100):
        if srv.app[STREAMS]:
            break
        await asyncio.sleep(0.01)
    (queue,) = srv.app[STREAMS]
    big = "x" * 60_000
    async with aiohttp.ClientSession() as http:
        for i in range(300):
            async with http.put(
                f"http://127.0.0.1:{srv.port}/api/state/app.tally.k{i % 5}",
                json=[i, big],
                headers=ME,
            ) as r:
                assert r.status == 200
    await asyncio.sleep(0.1)
    # 300 changes of ~60 kB (18 MB) to 5 keys: at most one pending per key
    assert len(queue) <= 5 + 1
    writer.close()
    for _ in range(300):
        if not srv.app[STREAMS]:
            break
        await asyncio.sleep(0.02)
    assert not srv.app[STREAMS]


async def test_reads_outside_the_role_are_filtered(tmp_path: Any) -> None:
    from companion_hub.auth.tokens import TokenStore
    from companion_hub.core.acl import Role
    from companion_hub.hub import HubConfig

    path = tmp_path / "tokens.json"
    store = TokenStore.load(str(path))
    stage, show = store.add("stage", "stage"), store.add("show", "app")
    role = Role("stage", read=("app.show.public.**",), own=(), publish=False)
    srv = HubServer(HubConfig(port=0, tokens_file=str(path), roles={"stage": role}))
    await srv.start()
    try:
        url = f"http://127.0.0.1:{srv.port}"
        w = {"Authorization": f"Bearer {show}"}
        async with aiohttp.ClientSession() as http:
            await (await http.put(f"{url}/api/state/app.show.secret", json=1, headers=w)).read()
            await (await http.put(f"{url}/api/state/app.show.public.a", json=1, headers=w)).read()
            async with http.get(
                f"{url}/api/stream", headers={"Authorization": f"Bearer {stage}"}
            ) as s:
                snap = await next_data(s)
                assert [e["key"] for e in snap["data"]["entries"]] == ["app.show.public.a"]
                await (await http.put(f"{url}/api/state/app.show.secret", json=2, headers=w)).read()
                await (
                    await http.put(f"{url}/api/state/app.show.public.a", json=2, headers=w)
                ).read()
                d = await next_data(s)
                assert d["data"]["key"] == "app.show.public.a"
    finally:
        await srv.stop()
