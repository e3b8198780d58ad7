"""Commands between two clients (section 8), over real sockets."""

from __future__ import annotations

import asyncio

from companion_hub.client import connect_raw
from companion_hub.server.app import HubServer


async def test_command_round_trip(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    caller = await connect_raw(hub.url, "tally")
    await caller.send(
        {"op": "command", "id": "c1", "target": "app.panel", "name": "reset", "params": {"n": 2}}
    )
    cmd = await owner.receive(lambda m: m["op"] == "command")
    assert cmd["source"] == "tally" and cmd["name"] == "reset" and cmd["params"] == {"n": 2}
    assert cmd["deadline"] > 0 and cmd["id"] != "c1"
    await owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": {"done": True}})
    res = await caller.receive(lambda m: m.get("id") == "c1")
    assert res == {"op": "result", "id": "c1", "ok": True, "result": {"done": True}}
    # an owner's failure comes back as its code
    await caller.send({"op": "command", "id": "c2", "target": "app.panel", "name": "explode"})
    cmd = await owner.receive(lambda m: m["op"] == "command")
    await owner.send(
        {
            "op": "reply",
            "id": cmd["id"],
            "ok": False,
            "error": {"code": "NOT_FOUND", "message": "no such command"},
        }
    )
    res = await caller.receive(lambda m: m.get("id") == "c2")
    assert res["error"] == {"code": "NOT_FOUND", "message": "no such command"}
    # a second reply to a finished command is refused, and nothing reaches the caller
    await owner.send({"op": "reply", "id": cmd["id"], "ok": True})
    err = await owner.receive(lambda m: m["op"] == "error")
    assert err["code"] == "NOT_FOUND"
    await owner.close()
    await caller.close()


async def test_owner_offline_is_unavailable_at_once(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    await owner.close()
    caller = await connect_raw(hub.url, "tally")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res = await caller.request(
        {"op": "command", "target": "app.panel", "name": "reset", "timeout_ms": 5000}
    )
    assert res["error"]["code"] == "UNAVAILABLE"
    assert loop.time() - t0 < 4.0  # at once, not after the 5 s timeout
    res = await caller.request({"op": "command", "target": "nothing.here", "name": "x"})
    assert res["error"]["code"] == "UNAVAILABLE"
    await caller.close()


async def test_silent_owner_times_out(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    caller = await connect_raw(hub.url, "tally")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res = await caller.request(
        {"op": "command", "target": "app.panel", "name": "reset", "timeout_ms": 300}, timeout=3
    )
    elapsed = loop.time() - t0
    assert res["error"]["code"] == "TIMEOUT" and 0.25 <= elapsed < 5
    # a late reply does not produce a second result
    cmd = await owner.receive(lambda m: m["op"] == "command")
    await owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": 1})
    await owner.receive(lambda m: m["op"] == "error")
    assert not [m for m in caller.inbox if m.get("op") == "result"]
    await owner.close()
    await caller.close()


async def test_owner_disconnect_in_flight_is_unavailable(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    caller = await connect_raw(hub.url, "tally")
    await caller.send({"op": "command", "id": "c", "target": "app.panel", "name": "slow"})
    await owner.receive(lambda m: m["op"] == "command")
    await owner.close()
    res = await caller.receive(lambda m: m.get("id") == "c")
    assert res["error"]["code"] == "UNAVAILABLE"
    assert "may have been executed" in res["error"]["message"]
    await caller.close()


async def test_idempotency_key_executes_once(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    caller = await connect_raw(hub.url, "tally")
    msg = {"op": "command", "target": "app.panel", "name": "press", "idempotency_key": "k-77"}
    await caller.send({**msg, "id": "1"})
    await caller.send({**msg, "id": "2"})  # retry while the first is in flight
    cmd = await owner.receive(lambda m: m["op"] == "command")
    await owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": {"pressed": 1}})
    r1 = await caller.receive(lambda m: m.get("id") == "1")
    r2 = await caller.receive(lambda m: m.get("id") == "2")
    assert r1["result"] == r2["result"] == {"pressed": 1}
    # a retry after a reconnect of the caller: still the first result, not executed again
    await caller.close()
    caller = await connect_raw(hub.url, "tally")
    r3 = await caller.request({**msg, "id": "3"})
    assert r3["result"] == {"pressed": 1}
    await asyncio.sleep(0.1)
    assert not [m for m in owner.inbox if m["op"] == "command"]
    # a different key executes
    await caller.send({**msg, "id": "4", "idempotency_key": "k-78"})
    await owner.receive(lambda m: m["op"] == "command")
    await owner.close()
    await caller.close()


async def test_in_flight_limit(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    caller = await connect_raw(hub.url, "tally")
    await caller.send(
        [{"op": "command", "id": f"c{i}", "target": "app.panel", "name": "x"} for i in range(65)]
    )
    res = await caller.receive(lambda m: m.get("id") == "c64")
    assert res["error"]["code"] == "LIMIT_EXCEEDED"
    await owner.close()
    for i in range(64):  # every other command ends exactly once, with UNAVAILABLE
        r = await caller.receive(lambda m, i=i: m.get("id") == f"c{i}")
        assert r["error"]["code"] == "UNAVAILABLE"
    await caller.close()
