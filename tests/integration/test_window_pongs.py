"""The delivery window never stalls a live client, whatever RFC-legal pongs it sends.

RFC 6455 (5.5.3) lets a peer that received several pings answer only the most
recent one. The reproduction: a subscriber stops reading while another client
writes; the hub sends window pings, then a heartbeat ping (empty payload); the
subscriber answers only the empty one and from then on reads and answers every
ping. It must still converge.
"""

from __future__ import annotations

import asyncio
from typing import Any

from companion_hub.client import connect_raw

from .rawsocket import RawClient, flatten

KEYS = 200
WRITES = 20_000


async def test_answering_only_the_latest_ping_still_converges(hub_factory: Any) -> None:
    srv = await hub_factory(heartbeat_ms=1000)
    raw = await RawClient.connect("127.0.0.1", srv.port, answer_pings=False)
    raw.send({"op": "hello", "id": "h", "client": "sub"})
    assert (await raw.recv())[0]["op"] == "welcome"
    raw.send({"op": "subscribe", "id": "s", "sub": "s", "patterns": ["app.writer2.**"]})
    while not any(m.get("done") for m in await raw.recv()):
        pass

    writer = await connect_raw(srv.url, "writer2")
    final: dict[str, Any] = {}
    stalled_until = asyncio.get_running_loop().time() + 1.25
    for start in range(0, WRITES, 500):  # the subscriber reads nothing meanwhile
        batch = []
        for i in range(start, start + 500):
            key = f"app.writer2.k{i % KEYS}"
            final[key] = i
            batch.append({"op": "set", "key": key, "value": i})
        await writer.send(batch)
    await writer.result({"op": "get", "patterns": ["app.writer2.k0"]})  # all applied
    await asyncio.sleep(0.3)  # the hub has filled the window by now
    last = [
        {"op": "set", "key": f"app.writer2.k{i}", "value": WRITES + i} for i in range(KEYS)
    ]  # these wait behind the full window
    final.update({m["key"]: m["value"] for m in last})
    await writer.send(last)
    await writer.result({"op": "get", "patterns": ["app.writer2.k0"]})
    await asyncio.sleep(max(0.0, stalled_until - asyncio.get_running_loop().time()))

    view: dict[str, Any] = {}

    def take(payload: bytes) -> None:
        for m in flatten(payload):
            if m.get("op") == "delta":
                view[m["key"]] = m["value"]

    # read what is there, answering no ping, until the heartbeat's (empty) ping comes
    pings: list[bytes] = []
    while b"" not in pings:
        op, payload = await raw.recv_frame(timeout=10)
        if op == 1:
            take(payload)
        elif op == 9:
            pings.append(payload)
        elif op == 8:
            raise AssertionError(f"closed: {payload!r}")
    assert any(p.startswith(b"d") for p in pings), pings  # window pings were skipped
    raw.send_frame(b"", opcode=10)  # answer only the latest ping

    # from now on read and answer every ping, as a good client does
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while view != final and loop.time() < deadline:
        try:
            op, payload = await raw.recv_frame(timeout=max(0.1, deadline - loop.time()))
        except TimeoutError:
            break
        if op == 1:
            take(payload)
        elif op == 9:
            raw.send_frame(payload, opcode=10)
        elif op == 8:
            raise AssertionError(f"closed: {payload!r}")
    current = sum(view.get(k) == v for k, v in final.items())
    assert current == KEYS, f"{current} of {KEYS} keys current"
    raw.close()
    await writer.close()
