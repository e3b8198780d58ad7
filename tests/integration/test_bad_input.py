"""Bad input: each gets the spec's error, the connection stays open, no state changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from companion_hub.client import connect_raw
from companion_hub.core.limits import Limits
from companion_hub.server.app import HubServer

from .rawsocket import RawClient

CASES: list[tuple[str, Any, str, bool]] = [
    # (name, what to send, expected code, reply carries the id)
    ("not json", "{nope", "BAD_REQUEST", False),
    ("not an object", "[1, 2]", "BAD_REQUEST", False),
    ("a bare string", '"set"', "BAD_REQUEST", False),
    ("no op", {"id": "x1", "key": "app.t.k"}, "BAD_REQUEST", True),
    ("unknown op", {"op": "frobnicate", "id": "x1"}, "BAD_REQUEST", True),
    ("missing key", {"op": "set", "id": "x1", "value": 1}, "BAD_REQUEST", True),
    ("missing value", {"op": "set", "id": "x1", "key": "app.t.k"}, "BAD_REQUEST", True),
    ("wrong type", {"op": "set", "id": "x1", "key": 5, "value": 1}, "BAD_REQUEST", True),
    ("invalid key", {"op": "set", "id": "x1", "key": "app.t..k", "value": 1}, "BAD_REQUEST", True),
    (
        "key too long",
        {"op": "set", "id": "x1", "key": "app.t." + "k." * 200 + "k", "value": 1},
        "BAD_REQUEST",
        True,
    ),
    (
        "invalid pattern",
        {"op": "subscribe", "id": "x1", "sub": "s", "patterns": ["a.**.b"]},
        "BAD_REQUEST",
        True,
    ),
    ("star inside segment", {"op": "get", "id": "x1", "patterns": ["app.t*"]}, "BAD_REQUEST", True),
    (
        "value too large",
        {"op": "set", "id": "x1", "key": "app.t.k", "value": "x" * 300_000},
        "TOO_LARGE",
        True,
    ),
    ("not owner", {"op": "set", "id": "x1", "key": "app.other.k", "value": 1}, "NOT_OWNER", True),
    ("not owner (hub)", {"op": "delete", "id": "x1", "key": "hub.info"}, "NOT_OWNER", True),
    ("second hello", {"op": "hello", "id": "x1", "client": "t"}, "BAD_REQUEST", True),
    (
        "too many patterns",
        {"op": "get", "id": "x1", "patterns": ["a"] * 65},
        "LIMIT_EXCEEDED",
        True,
    ),
    ("empty batch", {"op": "set", "id": "x1", "entries": []}, "BAD_REQUEST", True),
    (
        "negative expect_version",
        {"op": "set", "id": "x1", "key": "app.t.k", "value": 1, "expect_version": -1},
        "BAD_REQUEST",
        True,
    ),
    ("binary frame", b'{"op":"sync","id":"x1"}', "BAD_REQUEST", False),
]


@pytest.mark.parametrize(("name", "payload", "code", "with_id"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input(hub: HubServer, name: str, payload: Any, code: str, with_id: bool) -> None:
    c = await connect_raw(hub.url, "t")
    await c.result({"op": "set", "key": "app.t.k", "value": "before"})
    rev = hub.hub.store.rev
    await c.send(payload)
    m = await c.receive()
    if with_id:
        assert m["op"] == "result" and m["ok"] is False and m["id"] == "x1", m
        err = m["error"]
    else:
        assert m["op"] == "error", m
        err = m
    assert err["code"] == code, m
    assert isinstance(err["message"], str) and err["message"]
    # no state changed, and the connection still works
    assert hub.hub.store.rev == rev
    got = await c.result({"op": "get", "patterns": ["app.t.k"]})
    assert got["entries"][0]["value"] == "before"
    await c.close()


async def test_bad_message_inside_a_batch_does_not_stop_the_rest(hub: HubServer) -> None:
    c = await connect_raw(hub.url, "t")
    await c.send(
        [
            {"op": "set", "id": "a", "key": "app.t.x", "value": 1},
            {"op": "nope", "id": "b"},
            7,
            {"op": "set", "id": "c", "key": "app.t.y", "value": 2},
        ]
    )
    a = await c.receive(lambda m: m.get("id") == "a")
    b = await c.receive(lambda m: m.get("id") == "b")
    bare = await c.receive(lambda m: m["op"] == "error")
    cc = await c.receive(lambda m: m.get("id") == "c")
    assert a["ok"] and cc["ok"] and b["error"]["code"] == "BAD_REQUEST"
    assert bare["code"] == "BAD_REQUEST"
    await c.close()


async def test_oversize_frame_closes_1009(hub_factory) -> None:  # type: ignore[no-untyped-def]
    srv = await hub_factory(limits=Limits(frame_bytes=64 * 1024))
    raw = await RawClient.connect("127.0.0.1", srv.port)
    raw.send({"op": "hello", "id": "1", "client": "big"})
    (welcome,) = await raw.recv()
    assert welcome["op"] == "welcome"
    rev = srv.hub.store.rev
    raw.send({"op": "set", "id": "2", "key": "app.big.k", "value": "x" * 70_000})
    code = None
    while code is None:
        op, payload = await raw.recv_frame()
        if op == 8:
            code = int.from_bytes(payload[:2], "big")
    assert code == 1009
    assert srv.hub.store.get("app.big.k") is None
    await asyncio.sleep(0.05)
    assert srv.hub.store.rev >= rev  # only the hub's own hub.clients.big flip
    raw.close()


async def test_no_hello_within_timeout(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from companion_hub.server import session

    monkeypatch.setattr(session, "HELLO_TIMEOUT_S", 0.2)
    c = await connect_raw(hub.url, None)
    err = await c.receive(timeout=2)
    assert err["op"] == "error" and err["code"] == "BAD_REQUEST"
    assert await c.wait_closed() == 1008
    await c.close()


async def test_client_that_does_not_read_its_replies_is_paused(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from companion_hub.protocol import session as session_mod

    monkeypatch.setattr(session_mod, "CONTROL_BACKLOG_BYTES", 32 * 1024)
    raw = await RawClient.connect("127.0.0.1", hub.port, limit=2**12)
    raw.send({"op": "hello", "id": "1", "client": "greedy"})
    await raw.recv()
    session = hub.hub.sessions["greedy"]
    peak = 0
    for i in range(200):  # 20,000 requests whose replies are never read
        raw.send([{"op": "get", "id": f"{i}-{j}", "patterns": ["hub.**"]} for j in range(100)])
        if i % 20 == 0:
            await asyncio.sleep(0.01)
            peak = max(peak, session.queue.control_bytes)
    await asyncio.sleep(0.3)
    peak = max(peak, session.queue.control_bytes)
    one_reply = 2048
    assert peak <= 32 * 1024 + one_reply, peak
    assert "greedy" in hub.hub.sessions  # still connected, just paused
    # once it reads, every request is answered in order
    seen = 0
    async with asyncio.timeout(20):
        while seen < 20_000:
            for m in await raw.recv():
                if m.get("op") == "result":
                    assert m["id"] == f"{seen // 100}-{seen % 100}"
                    seen += 1
    raw.close()


async def test_rate_limited(hub_factory) -> None:  # type: ignore[no-untyped-def]
    srv = await hub_factory(limits=Limits(requests_per_second=50))
    c = await connect_raw(srv.url, "flood")
    await c.send([{"op": "set", "id": str(i), "key": "app.flood.k", "value": i} for i in range(80)])
    replies = [await c.receive(lambda m, i=i: m.get("id") == str(i)) for i in range(80)]
    ok = [r for r in replies if r["ok"]]
    limited = [r for r in replies if not r["ok"]]
    assert 45 <= len(ok) <= 55 and limited
    assert all(r["error"]["code"] == "RATE_LIMITED" for r in limited)
    # rejected writes changed nothing: the value is that of the last accepted one
    last_ok = max(int(r["id"]) for r in ok)
    assert srv.hub.store.get("app.flood.k").raw == str(last_ok).encode()  # type: ignore[union-attr]
    await asyncio.sleep(0.2)  # tokens come back
    assert (await c.request({"op": "get", "patterns": ["app.flood.k"]}))["ok"]
    await c.close()


async def test_pings_before_hello_are_answered_not_fatal(hub: HubServer) -> None:
    raw = await RawClient.connect("127.0.0.1", hub.port)
    raw.send_frame(b"are you there", opcode=9)  # a ping before hello
    op, payload = await raw.recv_frame()
    assert (op, payload) == (10, b"are you there")
    raw.send_frame(b"", opcode=10)  # an unsolicited pong is fine too
    raw.send({"op": "hello", "id": "1", "client": "early"})
    (welcome,) = await raw.recv()
    assert welcome["op"] == "welcome"
    raw.close()


async def test_subscribe_churn_from_a_client_that_does_not_read_is_bounded(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from companion_hub.protocol import session as session_mod

    monkeypatch.setattr(session_mod, "BARRIER_BACKLOG", 16)
    w = await connect_raw(hub.url, "w")
    await w.result(
        {"op": "set", "entries": [{"key": f"app.w.k{i}", "value": "x" * 100} for i in range(500)]}
    )
    raw = await RawClient.connect("127.0.0.1", hub.port, limit=2**12)
    raw.send({"op": "hello", "id": "1", "client": "churn"})
    await raw.recv()
    session = hub.hub.sessions["churn"]
    peak = 0
    for i in range(300):  # subscribe/unsubscribe pairs, never reading the snapshots
        raw.send(
            [
                {"op": "subscribe", "id": f"s{i}", "sub": "s", "patterns": ["app.**"]},
                {"op": "unsubscribe", "id": f"u{i}", "sub": "s"},
            ]
        )
        if i % 10 == 0:
            await asyncio.sleep(0.01)
            peak = max(peak, session.queue.ordered_backlog)
    await asyncio.sleep(0.2)
    peak = max(peak, session.queue.ordered_backlog)
    assert peak <= 16 + 2, peak  # the reader was paused: snapshots do not pile up
    raw.close()
    await w.close()
