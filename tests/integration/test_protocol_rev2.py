"""Protocol revision 2 over real sockets: deltas carry ``owner``; stale entries and
deltas carry ``stale_since`` (also after a restart); ``durable: true`` writes are
answered only once the change is on disk; ``/api/log`` pages by an opaque cursor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from companion_hub.client import connect_raw
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer


async def start(data_dir: Path | str | None = None, **cfg: Any) -> HubServer:
    srv = HubServer(HubConfig(port=0, data_dir=None if data_dir is None else str(data_dir), **cfg))
    await srv.start()
    srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
    return srv


def is_delta(key: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (
        m.get("op") == "delta" and m["key"] == key and all(m.get(k) == v for k, v in fields.items())
    )


async def test_deltas_carry_owner_and_stale_since(hub_factory: Callable[..., Any]) -> None:
    hub = await hub_factory()
    w = await connect_raw(hub.url, "w")
    r = await connect_raw(hub.url, "r")
    await r.subscribe("app.w.**")
    await w.result({"op": "set", "key": "app.w.a", "value": 1})
    d = await r.receive(is_delta("app.w.a"))
    assert (d["owner"], d["stale"], d["version"]) == ("app.w", False, 1)
    assert "stale_since" not in d
    value_ts = d["ts"]
    await w.result({"op": "set", "key": "app.w.b", "value": 2})
    await w.result({"op": "delete", "key": "app.w.b"})
    gone = await r.receive(is_delta("app.w.b", deleted=True))
    assert gone["owner"] == "app.w" and gone["version"] == 2

    before = int(time.time() * 1000)
    await w.close()  # the owner leaves: its key goes stale, with the time it did
    d = await r.receive(is_delta("app.w.a", stale=True))
    after = int(time.time() * 1000)
    assert d["owner"] == "app.w" and d["version"] == 1
    assert before - 1000 <= d["stale_since"] <= after + 1000
    assert d["ts"] == value_ts  # ts stays the time of the last value change

    # a snapshot, a get and the HTTP API say the same
    _, entries = await r.subscribe("app.w.a", sub="again")
    assert entries[0]["stale"] is True and entries[0]["stale_since"] == d["stale_since"]
    got = await r.result({"op": "get", "patterns": ["app.w.a"]})
    assert got["entries"][0]["stale_since"] == d["stale_since"]
    url = f"http://127.0.0.1:{hub.port}/api/state/app.w.a"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert (await resp.json())["stale_since"] == d["stale_since"]

    # the owner writes it again (an equal value): fresh, and stale_since is gone
    w2 = await connect_raw(hub.url, "w")
    await w2.result({"op": "set", "key": "app.w.a", "value": 1})
    d = await r.receive(is_delta("app.w.a", stale=False))
    assert "stale_since" not in d and d["version"] == 1
    await w2.close()
    await r.close()


async def test_stale_since_survives_a_restart(tmp_path: Path) -> None:
    a = await start(tmp_path)
    w = await connect_raw(a.url, "w")
    await w.result({"op": "set", "key": "app.w.a", "value": 1})
    await w.close()
    deadline = time.monotonic() + 30
    while not (e := a.hub.store.get("app.w.a")) or not e.stale:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    since = e.stale_since
    assert since > 0
    await a.stop()
    await asyncio.sleep(0.05)  # the restart is later than the flip: tell them apart

    b = await start(tmp_path)
    try:
        r = await connect_raw(b.url, "r")
        _, entries = await r.subscribe("app.w.a")
        assert entries[0]["stale"] is True and entries[0]["stale_since"] == since
        await r.close()
    finally:
        await b.stop()


async def test_durable_write_is_answered_once_on_disk(tmp_path: Path) -> None:
    srv = await start(tmp_path)
    try:
        log = srv.hub.event_log
        assert log is not None
        w = await connect_raw(srv.url, "w")
        log.write_delay = 0.3  # a slow disk: every batch takes 0.3 s
        for op in (
            {"op": "set", "key": "app.w.a", "value": 1, "durable": True},
            {"op": "set", "entries": [{"key": "app.w.b", "value": 2}], "durable": True},
            {"op": "delete", "key": "app.w.a", "durable": True},
        ):
            reply = await w.request(op, timeout=30)
            assert reply["ok"], reply
            res = reply["result"]
            rev = res["rev"] if "rev" in res else res["results"][-1]["rev"]
            # by the time the reply is read, the change was committed to the log
            assert log.durable_rev >= rev, (log.durable_rev, rev)
        log.write_delay = 0.0

        # without durable, the reply does not wait for the disk
        log.write_delay = 1.0
        res = await w.result({"op": "set", "key": "app.w.c", "value": 3})
        assert log.durable_rev < res["rev"]
        log.write_delay = 0.0
        # an equal write with durable waits for the value's own revision
        res2 = await w.result(
            {"op": "set", "key": "app.w.c", "value": 3, "durable": True}, timeout=30
        )
        assert res2 == res and log.durable_rev >= res["rev"]
        await w.close()
    finally:
        await srv.stop()


async def test_durable_without_a_disk_log_is_answered_at_once(
    hub_factory: Callable[..., Any],
) -> None:
    for hub in (await hub_factory(), await hub_factory(data_dir=":memory:")):
        w = await connect_raw(hub.url, "w")
        res = await w.result({"op": "set", "key": "app.w.a", "value": 1, "durable": True})
        assert res["version"] == 1
        res = await w.result({"op": "delete", "key": "app.w.a", "durable": True})
        assert res["version"] == 2
        await w.close()


async def test_log_pages_by_an_opaque_cursor_and_tails(tmp_path: Path) -> None:
    srv = await start(tmp_path)
    try:
        log = srv.hub.event_log
        assert log is not None
        w = await connect_raw(srv.url, "w")
        for i in range(5):
            await w.result({"op": "set", "key": f"app.w.k{i}", "value": i})
            for j in range(3):  # events do not move the revision
                await w.result({"op": "publish", "key": "app.w.ev", "data": {"i": i, "j": j}})

        async def flushed(n: int) -> None:
            # every row appended so far committed (the session records count in
            # `written` too: a count alone can be reached before our last rows are in)
            deadline = time.monotonic() + 30
            while log.stats.written < n or log.pending:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

        url = f"http://127.0.0.1:{srv.port}/api/log"
        base = {"pattern": "app.w.**", "type": "change,event", "limit": "4"}
        await flushed(20)  # (and the session records)
        async with aiohttp.ClientSession() as http:
            seen: list[tuple[int, str, int]] = []
            params = dict(base)
            while True:
                async with http.get(url, params=params) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                seen += [(r["rev"], r["type"], r.get("id", 0)) for r in body["records"]]
                assert body["next"] is not None
                params = {**base, "after": body["next"]}
                if not body["more"]:
                    break
            assert len(seen) == 20 and len(set(seen)) == 20  # every record once
            assert seen == sorted(seen, key=lambda t: (t[0], t[1] != "change", t[2]))

            # the last cursor tails: nothing new yet, the same cursor comes back
            async with http.get(url, params=params) as resp:
                body = await resp.json()
            assert body["records"] == [] and body["next"] == params["after"]
            await w.result({"op": "publish", "key": "app.w.ev", "data": {"late": True}})
            deadline = time.monotonic() + 30
            while True:  # until the writer thread has it on disk
                async with http.get(url, params=params) as resp:
                    body = await resp.json()
                if body["records"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            assert [r["data"]["data"] for r in body["records"]] == [{"late": True}]

            for bad in ("nope", "YzEuMS4x" + "x" * 100, "YzIuMS4x"):  # not ours / too long
                async with http.get(url, params={"after": bad}) as resp:
                    assert resp.status == 400
                    assert "after" in (await resp.json())["error"]["message"]
            async with http.get(url, params={"after": body["next"], "from_rev": "1"}) as resp:
                assert resp.status == 400
        await w.close()
    finally:
        await srv.stop()
