"""Protocol v1 sessions over real sockets: hello, writes, reads, hub keys, HTTP."""

from __future__ import annotations

import aiohttp
import pytest

from companion_hub.client import connect_raw
from companion_hub.server.app import HubServer


async def test_hello_welcome(hub: HubServer) -> None:
    c = await connect_raw(hub.url, "tally", resume={"hub": "other", "rev": 3})
    w = c.welcome
    assert w["hub"] == hub.hub.hub_id and w["namespaces"] == ["app.tally"]
    assert w["heartbeat_ms"] == 10_000 and w["limits"]["frame_bytes"] == 1 << 20
    assert w["rev"] == hub.hub.store.rev and w["server"].startswith("companion-hub ")
    await c.close()


@pytest.mark.parametrize(
    "first",
    [
        {"op": "get", "id": "7", "patterns": ["**"]},
        {"op": "hello", "id": "7", "client": "Bad Name"},
        {"op": "hello", "id": "7", "client": "ok", "protocol": 2},
    ],
)
async def test_bad_first_message_closes_1008(hub: HubServer, first: dict) -> None:
    c = await connect_raw(hub.url, None)
    await c.send(first)
    err = await c.receive()
    assert err["op"] == "error" and err["code"] == "BAD_REQUEST" and err["id"] == "7"
    assert await c.wait_closed() == 1008
    await c.close()


async def test_write_read_cycle(hub: HubServer) -> None:
    c = await connect_raw(hub.url, "tally")
    r1 = await c.result({"op": "set", "key": "app.tally.status", "value": "live"})
    assert r1["version"] == 1
    same = await c.result({"op": "set", "key": "app.tally.status", "value": "live"})
    assert same == r1  # equal value: no new version or rev
    r2 = await c.result(
        {"op": "set", "key": "app.tally.status", "value": "off", "expect_version": 1}
    )
    assert r2["version"] == 2 and r2["rev"] > r1["rev"]
    conflict = await c.request(
        {"op": "set", "key": "app.tally.status", "value": "x", "expect_version": 1}
    )
    assert conflict["error"]["code"] == "CONFLICT"
    assert conflict["error"]["details"]["version"] == 2
    batch = await c.result(
        {
            "op": "set",
            "entries": [{"key": "app.tally.a", "value": 1}, {"key": "app.tally.b", "value": 2}],
        }
    )
    revs = [r["rev"] for r in batch["results"]]
    assert revs[1] == revs[0] + 1
    got = await c.result({"op": "get", "patterns": ["app.tally.*"]})
    assert [e["key"] for e in got["entries"]] == ["app.tally.a", "app.tally.b", "app.tally.status"]
    assert got["entries"][2]["owner"] == "app.tally" and got["entries"][2]["value"] == "off"
    d = await c.result({"op": "delete", "key": "app.tally.a"})
    assert d["version"] == 2
    missing = await c.request({"op": "delete", "key": "app.tally.a"})
    assert missing["error"]["code"] == "NOT_FOUND"
    recreated = await c.result({"op": "set", "key": "app.tally.a", "value": 1})
    assert recreated["version"] == 3  # versions are never reused
    await c.close()


async def test_batch_is_atomic_over_the_wire(hub: HubServer) -> None:
    c = await connect_raw(hub.url, "tally")
    rev = hub.hub.store.rev
    r = await c.request(
        {
            "op": "set",
            "entries": [{"key": "app.tally.a", "value": 1}, {"key": "app.other.b", "value": 2}],
        }
    )
    assert r["error"]["code"] == "NOT_OWNER" and r["error"]["details"]["index"] == 1
    assert hub.hub.store.rev == rev and hub.hub.store.get("app.tally.a") is None
    await c.close()


async def test_hub_keys(hub: HubServer) -> None:
    c = await connect_raw(hub.url, "tally")
    got = await c.result({"op": "get", "patterns": ["hub.**"]})
    by_key = {e["key"]: e for e in got["entries"]}
    assert by_key["hub.info"]["value"]["hub"] == hub.hub.hub_id
    client = by_key["hub.clients.tally"]["value"]
    assert client["connected"] is True and client["session"] == c.welcome["session"]
    assert client["address"].startswith("127.0.0.1:")
    watcher = await connect_raw(hub.url, "watcher")
    await watcher.subscribe("hub.clients.*")
    await c.close()
    d = await watcher.receive(lambda m: m.get("key") == "hub.clients.tally")
    assert d["value"]["connected"] is False and d["stale"] is False
    await watcher.close()


async def test_takeover(hub: HubServer) -> None:
    old = await connect_raw(hub.url, "tally")
    await old.result({"op": "set", "key": "app.tally.x", "value": 1})
    watcher = await connect_raw(hub.url, "watcher")
    await watcher.subscribe("app.**")
    new = await connect_raw(hub.url, "tally")
    assert await old.wait_closed() == 4000
    assert old.close_code == 4000
    await new.result({"op": "set", "key": "app.tally.x", "value": 2})
    d = await watcher.receive(lambda m: m.get("op") == "delta")
    assert d["value"] == 2 and d["stale"] is False  # no stale flip on takeover
    assert hub.hub.sessions["tally"].session_id == new.welcome["session"]
    await new.close()
    await old.close()
    await watcher.close()


async def test_events(hub: HubServer) -> None:
    pub = await connect_raw(hub.url, "panel")
    sub = await connect_raw(hub.url, "listener")
    await sub.subscribe("app.panel.**", events=True)
    plain = await connect_raw(hub.url, "plain")
    await plain.subscribe("app.panel.**")  # events: false
    r = await pub.result({"op": "publish", "key": "app.panel.button", "data": {"n": 3}})
    assert r["delivered"] == 1
    ev = await sub.receive(lambda m: m["op"] == "event")
    assert ev["key"] == "app.panel.button" and ev["data"] == {"n": 3} and ev["source"] == "panel"
    assert hub.hub.store.get("app.panel.button") is None  # never stored as state
    bad = await pub.request({"op": "publish", "key": "app.listener.x", "data": 1})
    assert bad["error"]["code"] == "NOT_OWNER"
    with pytest.raises(TimeoutError):
        await plain.receive(lambda m: m["op"] == "event", timeout=0.3)
    for c in (pub, sub, plain):
        await c.close()


async def test_event_queue_drops_oldest(hub_factory) -> None:  # type: ignore[no-untyped-def]
    from companion_hub.core.limits import Limits

    srv = await hub_factory(limits=Limits(event_queue=5))
    sub = await connect_raw(srv.url, "listener")
    await sub.subscribe("app.panel.**", events=True)
    pub = await connect_raw(srv.url, "panel")
    # publish a burst inside one frame: the hub enqueues all before the writer runs
    await pub.send([{"op": "publish", "key": "app.panel.e", "data": i} for i in range(20)])
    got = []
    while len(got) < 6:
        m = await sub.receive(lambda m: m["op"] in ("event", "dropped"))
        got.append(m)
        if m["op"] == "event" and m["data"] == 19:
            break
    kinds = [m["op"] for m in got]
    assert "dropped" in kinds
    dropped = next(m for m in got if m["op"] == "dropped")
    events = [m["data"] for m in got if m["op"] == "event"]
    assert events[-1] == 19 and dropped["events"] + len(events) >= 20 - 1
    await sub.close()
    await pub.close()


async def test_http_api(hub: HubServer) -> None:
    c = await connect_raw(hub.url, "tally")
    await c.result({"op": "set", "key": "app.tally.x", "value": {"a": 1}})
    base = f"http://127.0.0.1:{hub.port}"
    async with aiohttp.ClientSession() as http:
        for path in ("/health/live", "/health/ready"):
            async with http.get(base + path) as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(base + "/api/state", params={"pattern": "app.**"}) as r:
            body = await r.json()
            assert [e["key"] for e in body["entries"]] == ["app.tally.x"]
            assert body["rev"] == hub.hub.store.rev
        async with http.get(base + "/api/state/app.tally.x") as r:
            e = await r.json()
            assert e["value"] == {"a": 1} and e["version"] == 1 and e["owner"] == "app.tally"
        async with http.get(base + "/api/state/app.tally.nope") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "NOT_FOUND"
        async with http.get(base + "/api/state", params={"pattern": "a.**.b"}) as r:
            assert r.status == 400
    await c.close()


async def test_subscription_lifecycle(hub_factory) -> None:  # type: ignore[no-untyped-def]
    from companion_hub.core.limits import Limits

    srv = await hub_factory(limits=Limits(subscriptions=3))
    srv.hub.config.snapshot_chunk_bytes = 1024
    w = await connect_raw(srv.url, "w")
    await w.result(
        {
            "op": "set",
            "entries": [
                {"key": f"app.w.k{i:03d}", "value": {"n": i, "pad": "x" * 40}} for i in range(100)
            ],
        }
    )
    c = await connect_raw(srv.url, "c")
    # chunked snapshot: several messages, the same rev, done only on the last
    rid = c.new_id()
    await c.send({"op": "subscribe", "id": rid, "sub": "a", "patterns": ["app.w.*"]})
    chunks = []
    while not chunks or not chunks[-1]["done"]:
        chunks.append(await c.receive(lambda m: m.get("id") == rid))
    assert len(chunks) > 3 and len({m["rev"] for m in chunks}) == 1
    assert all(m["mode"] == "full" for m in chunks)
    assert sorted(e["key"] for m in chunks for e in m["entries"]) == [
        f"app.w.k{i:03d}" for i in range(100)
    ]
    # snapshot: false -> one result with the rev; then deltas above it
    r = await c.request(
        {"op": "subscribe", "sub": "b", "patterns": ["app.x.**"], "snapshot": False}
    )
    assert r["ok"] and r["result"]["rev"] == srv.hub.store.rev
    dup = await c.request({"op": "subscribe", "sub": "b", "patterns": ["app.**"]})
    assert dup["error"]["code"] == "BAD_REQUEST"
    await c.request({"op": "subscribe", "sub": "c", "patterns": ["app.y"], "snapshot": False})
    over = await c.request({"op": "subscribe", "sub": "d", "patterns": ["app.z"]})
    assert over["error"]["code"] == "LIMIT_EXCEEDED"
    # unsubscribe: no more deltas for it
    assert await c.result({"op": "unsubscribe", "sub": "a"}) == {}
    await w.result({"op": "set", "key": "app.w.k000", "value": 1})
    await w.result({"op": "set", "key": "app.w.zz", "value": 1})  # not matched by a
    with pytest.raises(TimeoutError):
        await c.receive(lambda m: m["op"] == "delta", timeout=0.3)
    missing = await c.request({"op": "unsubscribe", "sub": "a"})
    assert missing["error"]["code"] == "NOT_FOUND"
    await w.close()
    await c.close()


async def test_incremental_snapshot_has_changes_and_removals(hub: HubServer) -> None:
    w = await connect_raw(hub.url, "w")
    for k in ("a", "b", "c"):
        await w.result({"op": "set", "key": f"app.w.{k}", "value": k})
    since = hub.hub.store.rev
    await w.result({"op": "set", "key": "app.w.a", "value": "A"})
    await w.result({"op": "delete", "key": "app.w.b"})
    await w.result({"op": "set", "key": "app.w.d", "value": "d"})
    c = await connect_raw(hub.url, "c", resume={"hub": hub.hub.hub_id, "rev": since})
    r = await c.request({"op": "subscribe", "sub": "s", "patterns": ["app.w.*"], "since": since})
    assert r["mode"] == "incremental"
    assert sorted((e["key"], e["value"]) for e in r["entries"]) == [
        ("app.w.a", "A"),
        ("app.w.d", "d"),
    ]
    # revision 2: the delete's own version and revision
    assert r["removed"] == [{"key": "app.w.b", "version": 2, "rev": since + 2}]
    # without resume.hub (or with another hub id) the snapshot is full
    other = await connect_raw(hub.url, "o", resume={"hub": "not-this-hub", "rev": since})
    r = await other.request(
        {"op": "subscribe", "sub": "s", "patterns": ["app.w.*"], "since": since}
    )
    assert r["mode"] == "full" and len(r["entries"]) == 3
    # a since ahead of the hub: full
    r = await c.request(
        {"op": "subscribe", "sub": "t", "patterns": ["app.w.*"], "since": since + 10_000}
    )
    assert r["mode"] == "full"
    for x in (w, c, other):
        await x.close()


async def test_a_one_off_client_is_forgotten_but_an_owner_is_not(hub_factory) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    srv = await hub_factory(client_record_ttl=0.2)
    once = await connect_raw(srv.url, "cli-abc123")
    owner = await connect_raw(srv.url, "tally")
    await owner.result({"op": "set", "key": "app.tally.x", "value": 1})
    await once.close()
    await owner.close()
    for _ in range(200):
        if srv.hub.store.get("hub.clients.cli-abc123") is None:
            break
        await asyncio.sleep(0.02)
    assert srv.hub.store.get("hub.clients.cli-abc123") is None
    rec = srv.hub.store.get("hub.clients.tally")
    assert rec is not None  # it owns a key: its record stays
    again = await connect_raw(srv.url, "cli-abc123")  # and comes back as usual
    assert srv.hub.store.get("hub.clients.cli-abc123") is not None
    await again.close()
