"""Command results are bounded: by value_bytes per result, and the idempotency cache by
bytes overall (the reproduction: 300 commands to itself with 1 MB results used to
take the hub from 44 to 364 MiB, kept after the client left)."""

from __future__ import annotations

import asyncio
from typing import Any

from companion_hub.client import RawConnection, connect_raw
from companion_hub.core.limits import Limits


async def answer(owner: RawConnection, result: Any, n: int = 1) -> None:
    """Answer the next ``n`` commands addressed to ``owner`` with ``result``."""
    for _ in range(n):
        cmd = await owner.receive(lambda m: m.get("op") == "command", timeout=10)
        await owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": result})


async def test_a_result_over_value_bytes_is_refused_for_both_sides(hub_factory: Any) -> None:
    srv = await hub_factory(limits=Limits(value_bytes=64 * 1024))
    owner = await connect_raw(srv.url, "big")
    caller = await connect_raw(srv.url, "caller")
    task = asyncio.create_task(answer(owner, "x" * (512 * 1024)))  # over the limit
    r = await caller.request(
        {"op": "command", "target": "app.big", "name": "dump", "idempotency_key": "k1"},
        timeout=10,
    )
    await task
    assert r["ok"] is False and r["error"]["code"] == "TOO_LARGE"
    err = await owner.receive(lambda m: m.get("op") == "error", timeout=10)
    assert err["code"] == "TOO_LARGE" and "larger than 65536" in err["message"]
    # the refusal is what is remembered, not the megabyte
    assert srv.hub.router.cached_bytes < 4096
    again = await caller.request(
        {"op": "command", "target": "app.big", "name": "dump", "idempotency_key": "k1"},
        timeout=10,
    )
    assert again["error"]["code"] == "TOO_LARGE"  # answered from the cache, not re-run
    await owner.close()
    await caller.close()


async def test_the_idempotency_cache_is_bounded_in_bytes(hub_factory: Any) -> None:
    budget = 2 * 1024 * 1024
    srv = await hub_factory(limits=Limits(idempotency_bytes=budget))
    me = await connect_raw(srv.url, "self")
    result = "y" * (200 * 1024)  # under value_bytes: accepted, and cached
    for i in range(30):  # 6 MB of results in all
        rid = f"c{i}"
        await me.send(
            {"op": "command", "id": rid, "target": "app.self", "name": "n",
             "idempotency_key": f"k{i}"}
        )  # fmt: skip
        await answer(me, result)
        r = await me.receive(lambda m, rid=rid: m.get("id") == rid and m["op"] == "result")
        assert r["ok"] and len(r["result"]) == len(result)
        assert srv.hub.router.cached_bytes <= budget
    assert srv.hub.router.cached_bytes > budget // 2  # it does cache, within the budget
    newest = await me.request(
        {"op": "command", "target": "app.self", "name": "n", "idempotency_key": "k29"}
    )
    assert newest["ok"] and newest["result"] == result  # the newest is still remembered
    await me.close()
