"""The SDK against a scripted fake hub (real sockets): failures a real hub rarely shows
on demand — a dead hub, a connection lost with a request in flight, a refused hello."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from companion_hub.client import HubClient, Unauthorized, Unavailable

Script = Callable[[web.WebSocketResponse, dict[str, Any], "FakeHub"], Awaitable[None]]


class FakeHub:
    """A WebSocket server that runs ``script`` for each connection after reading hello.

    It never answers pings by itself (autoping off, and the script decides when to
    read), so a script that stops talking looks exactly like a dead hub.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.hellos: list[dict[str, Any]] = []
        self.hello_times: list[float] = []
        self.received: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        msg = await ws.receive()
        hello = json.loads(msg.data)
        self.hellos.append(hello)
        self.hello_times.append(asyncio.get_running_loop().time())
        try:
            await self.script(ws, hello, self)
        finally:
            if not ws.closed:
                await ws.close()
        return ws

    async def read(self, ws: web.WebSocketResponse) -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            if msg.type.name == "TEXT":
                obj = json.loads(msg.data)
                for item in obj if isinstance(obj, list) else [obj]:
                    self.received.append(item)
                return obj[-1] if isinstance(obj, list) else obj
            if msg.type.name == "PING":
                await ws.pong(msg.data)
                continue
            raise ConnectionError("closed")

    async def __aenter__(self) -> FakeHub:
        app = web.Application()
        app.router.add_get("/ws", self._handler)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.stop.set()
        assert self._runner is not None
        await self._runner.cleanup()


def welcome(hello: dict[str, Any], hub: str = "fake-hub", hb: int = 10_000) -> str:
    return json.dumps(
        {
            "op": "welcome",
            "id": hello.get("id"),
            "session": "s",
            "hub": hub,
            "rev": 0,
            "namespaces": [f"app.{hello['client']}"],
            "heartbeat_ms": hb,
            "server": "fake",
            "limits": {},
        }
    )


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Script], FakeHub]]:
    hubs: list[FakeHub] = []

    def make(script: Script) -> FakeHub:
        h = FakeHub(script)
        hubs.append(h)
        return h

    yield make
    for h in hubs:
        h.stop.set()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_dead_hub_is_detected_within_two_heartbeats(
    fake: Callable[[Script], FakeHub],
) -> None:
    async def silent(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        await ws.send_str(welcome(hello, hb=200))
        await hub.stop.wait()  # never reads: pings go unanswered, nothing is sent

    async with fake(silent) as hub:
        c = HubClient(hub.url, "tally", backoff_base=0.01, backoff_max=0.02)
        await c.connect()
        await until(lambda: len(hub.hellos) >= 2, timeout=2)  # it gave up and reconnected
        elapsed = hub.hello_times[1] - hub.hello_times[0]
        assert 0.35 <= elapsed < 5, elapsed  # 2 x 200 ms after welcome, not earlier
        assert c.reconnects >= 1 or not c.connected
        await c.close()


async def test_live_hub_with_short_heartbeat_stays_connected(
    fake: Callable[[Script], FakeHub],
) -> None:
    async def answers_pings(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        await ws.send_str(welcome(hello, hb=200))
        with pytest.raises(ConnectionError):
            while True:
                await hub.read(ws)  # answers the client's pings; sends nothing else

    async with fake(answers_pings) as hub, HubClient(hub.url, "tally") as c:
        await asyncio.sleep(1.0)  # 5 heartbeats without a single message
        assert c.connected and c.reconnects == 0 and len(hub.hellos) == 1


async def test_write_in_flight_when_the_connection_drops(
    fake: Callable[[Script], FakeHub],
) -> None:
    async def drop_on_request(
        ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub
    ) -> None:
        await ws.send_str(welcome(hello))
        await hub.read(ws)  # a request: close without answering it
        await ws.close()

    async with fake(drop_on_request) as hub:
        async with HubClient(hub.url, "tally", backoff_base=0.05) as c:
            with pytest.raises(Unavailable, match="write may have been applied"):
                await c.set("app.tally.x", 1)
            await c.wait_connected(3)
            with pytest.raises(Unavailable, match="command may have been executed"):
                await c.command("app.mixer", "cut")
            await c.wait_connected(3)
            with pytest.raises(Unavailable, match="connection lost"):
                await c.get("app.x.y")
            await c.wait_connected(3)
            with pytest.raises(Unavailable):
                await c.subscribe("app.**")
            assert c.subscriptions == []  # not re-subscribed later
        ops = [m["op"] for m in hub.received]
        assert ops == ["set", "command", "get", "subscribe"]


async def test_refused_hello_raises_the_typed_error(
    fake: Callable[[Script], FakeHub],
) -> None:
    async def refuse(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        await ws.send_str(
            json.dumps(
                {"op": "error", "id": hello["id"], "code": "UNAUTHORIZED", "message": "bad token"}
            )
        )
        await ws.close(code=1008, message=b"bad token")

    async with fake(refuse) as hub:
        c = HubClient(hub.url, "tally", token="nope")
        with pytest.raises(Unauthorized, match="bad token"):
            await c.connect()
        assert hub.hellos[0]["token"] == "nope" and hub.hellos[0]["protocol"] == 1
        assert len(hub.hellos) == 1  # no retry loop on a refused first hello


async def test_batches_and_resume_in_hello(fake: Callable[[Script], FakeHub]) -> None:
    """Array frames are processed in order; after a drop the hello carries resume with
    the highest rev of any delta/snapshot/progress, and the subscribe carries since."""

    async def script(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        await ws.send_str(welcome(hello))
        sub = await hub.read(ws)
        if len(hub.hellos) == 1:
            snapshot = {
                "op": "snapshot",
                "id": sub["id"],
                "sub": sub["sub"],
                "rev": 5,
                "mode": "full",
                "entries": [
                    {"key": "app.x.a", "value": 1, "version": 1, "rev": 5, "owner": "app.x"}
                ],
                "removed": [],
                "done": True,
            }
            deltas = [
                {"op": "delta", "key": "app.x.a", "value": 2, "version": 2, "rev": 6},
                {"op": "delta", "key": "app.x.a", "value": 3, "version": 3, "rev": 7},
                {"op": "progress", "rev": 9},
            ]
            await ws.send_str(json.dumps([snapshot, *deltas]))
            await hub.read(ws)  # the client's next request: drop
        else:
            await ws.send_str(
                json.dumps(
                    {
                        "op": "snapshot",
                        "id": sub["id"],
                        "sub": sub["sub"],
                        "rev": 12,
                        "mode": "incremental",
                        "entries": [],
                        "removed": ["app.x.a"],
                        "done": True,
                    }
                )
            )
            await hub.stop.wait()

    async with fake(script) as hub:
        async with HubClient(hub.url, "tally", backoff_base=0.01) as c:
            await c.subscribe("app.x.**")
            await until(lambda: c.rev == 9)
            e = c.mirror.get("app.x.a")
            assert e is not None and e.value == 3 and e.owner == "app.x"
            with pytest.raises(Unavailable):
                await c.get("hub.info")
            await until(lambda: c.rev == 12)
            assert c.mirror.get("app.x.a") is None
        assert "resume" not in hub.hellos[0]
        assert hub.hellos[1]["resume"] == {"hub": "fake-hub", "rev": 9}
        subs = [m for m in hub.received if m["op"] == "subscribe"]
        assert "since" not in subs[0] and subs[1]["since"] == 9
        assert subs[0]["sub"] == subs[1]["sub"] and subs[1]["patterns"] == ["app.x.**"]


# --- protocol revision 2 ----------------------------------------------------------------


async def answer_the_rest(ws: web.WebSocketResponse, hub: FakeHub) -> None:
    """Answer every further request with an empty ``ok`` result, until the client leaves."""
    with contextlib.suppress(ConnectionError):
        while True:
            req = await hub.read(ws)
            await ws.send_str(
                json.dumps({"op": "result", "id": req["id"], "ok": True, "result": {}})
            )


async def test_durable_writes_on_the_wire(fake: Callable[[Script], FakeHub]) -> None:
    """``durable=True`` sends ``"durable": true``; without it nothing is added."""

    async def answer(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        await ws.send_str(welcome(hello))
        while True:
            req = await hub.read(ws)
            if req["op"] == "set" and "entries" in req:
                results = [{"key": e["key"], "version": 1, "rev": 5} for e in req["entries"]]
                result: dict[str, Any] = {"results": results}
            else:
                result = {"version": 1, "rev": 5}
            await ws.send_str(
                json.dumps({"op": "result", "id": req["id"], "ok": True, "result": result})
            )

    async with fake(answer) as hub, HubClient(hub.url, "tally") as c:
        await c.set("app.tally.x", 1, durable=True)
        await c.set("app.tally.x", 2)
        await c.delete("app.tally.x", durable=True)
        await c.set_many({"app.tally.a": 1}, durable=True)
        await c.delete("app.tally.a")
    assert [m.get("durable") for m in hub.received] == [True, None, True, True, None]
    assert hub.received[3]["entries"] == [{"key": "app.tally.a", "value": 1}]


async def test_limits_and_revision_2_fields_of_entries(fake: Callable[[Script], FakeHub]) -> None:
    async def script(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        w = json.loads(welcome(hello))
        w["limits"] = {"frame_bytes": 1048576, "oldest_rev": 40}
        await ws.send_str(json.dumps(w))
        sub = await hub.read(ws)
        entry = {"key": "app.x.a", "value": 1, "version": 1, "rev": 50, "owner": "app.x"}
        snapshot = {"op": "snapshot", "id": sub["id"], "sub": sub["sub"], "rev": 50}
        await ws.send_str(
            json.dumps({**snapshot, "mode": "full", "entries": [entry], "removed": []})
        )
        sync = await hub.read(ws)  # then the changes, and the reply to the client's sync
        gone = {"op": "delta", "key": "app.y.b", "deleted": True, "version": 2, "rev": 53}
        await ws.send_str(
            json.dumps(
                [
                    {"op": "delta", **entry, "rev": 51, "stale": True, "stale_since": 1234},
                    {"op": "delta", **entry, "key": "app.y.b", "rev": 52, "owner": "app.y"},
                    {**gone, "owner": "app.y"},
                    {"op": "result", "id": sync["id"], "ok": True, "result": {"deleted": 0}},
                ]
            )
        )
        await answer_the_rest(ws, hub)

    async with fake(script) as hub, HubClient(hub.url, "tally") as c:
        assert c.limits.oldest_rev == 40 and c.limits.frame_bytes == 1048576
        assert c.welcome is not None and c.welcome.hub == "fake-hub"
        async with c.watch("app.**") as w:
            first = await asyncio.wait_for(anext(w), 3)
            assert first.owner == "app.x" and not first.stale and first.stale_since is None
            await c.sync()
            changes = {ch.key: ch for ch in [await asyncio.wait_for(anext(w), 3) for _ in range(2)]}
    stale = changes["app.x.a"]
    assert stale.stale and stale.stale_since == 1234 and stale.owner == "app.x"
    gone = changes["app.y.b"]  # coalesced: created then deleted, the deletion is what counts
    assert gone.deleted and gone.owner == "app.y" and gone.version == 2


async def test_a_hub_without_revision_2_fields(fake: Callable[[Script], FakeHub]) -> None:
    async def script(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        w = json.loads(welcome(hello))
        del w["limits"]
        await ws.send_str(json.dumps(w))
        await hub.stop.wait()

    async with fake(script) as hub, HubClient(hub.url, "tally") as c:
        assert c.limits.oldest_rev is None and c.limits.raw == {}


async def test_resume_with_versioned_removals(fake: Callable[[Script], FakeHub]) -> None:
    """The incremental snapshot's ``removed`` as ``[{"key", "version", "rev"}]``: the
    removed key leaves the mirror; the watch sees the deletion's own version and rev."""

    async def script(ws: web.WebSocketResponse, hello: dict[str, Any], hub: FakeHub) -> None:
        await ws.send_str(welcome(hello))
        sub = await hub.read(ws)
        head = {"op": "snapshot", "id": sub["id"], "sub": sub["sub"], "done": True}
        if len(hub.hellos) == 1:
            e = {"key": "app.x.a", "value": 1, "version": 1, "rev": 5, "owner": "app.x"}
            await ws.send_str(
                json.dumps({**head, "rev": 5, "mode": "full", "entries": [e], "removed": []})
            )
            await hub.read(ws)  # the client's next request: drop
        else:
            removed = [{"key": "app.x.a", "version": 2, "rev": 7}]
            await ws.send_str(
                json.dumps(
                    {**head, "rev": 9, "mode": "incremental", "entries": [], "removed": removed}
                )
            )
            await answer_the_rest(ws, hub)

    async with fake(script) as hub, HubClient(hub.url, "tally", backoff_base=0.01) as c:
        async with c.watch("app.x.**") as w:
            assert (await asyncio.wait_for(anext(w), 3)).version == 1
            with pytest.raises(Unavailable):
                await c.get("hub.info")
            ch = await asyncio.wait_for(anext(w), 3)
        assert (ch.key, ch.deleted, ch.version, ch.rev, ch.owner) == (
            "app.x.a",
            True,
            2,
            7,
            "app.x",
        )
        assert c.mirror.get("app.x.a") is None and c.rev == 9
        subs = [m for m in hub.received if m["op"] == "subscribe"]
        assert subs[1]["since"] == 5
