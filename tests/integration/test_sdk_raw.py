"""The SDK's low-level API (``connect_raw`` / ``RawConnection``) against a real hub:
raw protocol messages in and out, malformed input included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from companion_hub.client import (
    BadRequest,
    ConnectionClosed,
    HubClient,
    NotOwner,
    RawConnection,
    connect_raw,
)
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer


@pytest.fixture
async def srv() -> AsyncIterator[HubServer]:
    async with HubServer(HubConfig(port=0, heartbeat_ms=500)) as s:
        yield s


def url_of(srv: HubServer) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


async def test_hello_requests_and_results(srv: HubServer) -> None:
    async with await connect_raw(url_of(srv), "probe") as c:
        assert isinstance(c, RawConnection)
        assert c.welcome is not None and c.welcome["op"] == "welcome"
        assert c.welcome["hub"] == srv.hub.hub_id and c.welcome["namespaces"] == ["app.probe"]
        r = await c.request({"op": "set", "key": "app.probe.x", "value": 1})
        assert r["op"] == "result" and r["ok"] and r["id"] == "r1"
        assert (await c.result({"op": "set", "key": "app.probe.x", "value": 2}))["version"] == 2
        with pytest.raises(NotOwner):
            await c.result({"op": "set", "key": "app.other.x", "value": 1})
        rev, entries = await c.subscribe("app.probe.**", sub="main")
        assert rev >= 2 and [e["key"] for e in entries] == ["app.probe.x"]
        # a batch: both requests answered, in order; receive() takes what matches
        await c.send(
            [
                {"op": "set", "id": "a", "key": "app.probe.y", "value": 1},
                {"op": "get", "id": "b", "patterns": ["app.probe.y"]},
            ]
        )
        got = await c.receive(lambda m: m.get("id") == "b")
        assert got["result"]["entries"][0]["value"] == 1
        # what it skipped stays queued, in order
        first = await c.receive()
        assert first["id"] == "a" or first["op"] == "delta"
        delta = await c.receive(lambda m: m["op"] == "delta" and m["key"] == "app.probe.y")
        assert delta["value"] == 1


async def test_malformed_input_can_be_sent(srv: HubServer) -> None:
    async with await connect_raw(url_of(srv), "probe") as c:
        await c.send('{"op": "set", "id": "x"')  # truncated JSON, as a text frame
        err = await c.receive(lambda m: m["op"] == "error")
        assert err["code"] == "BAD_REQUEST"
        await c.send_frame(b"\xff\xfe")  # invalid UTF-8 in a text frame
        err = await c.receive(lambda m: m["op"] == "error")
        assert err["code"] == "BAD_REQUEST" and "UTF-8" in err["message"]
        await c.send(b'{"op":"get","id":"bin","patterns":["hub.info"]}')  # a binary frame
        await c.receive(lambda m: m["op"] == "error" or m.get("id") == "bin")
        # the connection is still usable (a malformed message never closes it)
        assert (await c.result({"op": "get", "patterns": ["hub.info"]}))["entries"]


async def test_no_hello_and_the_close_code(srv: HubServer) -> None:
    async with await connect_raw(url_of(srv), None) as c:
        assert c.welcome is None
        await c.send({"op": "get", "id": "1", "patterns": ["x"]})
        err = await c.receive()
        assert (err["op"], err["code"], err["id"]) == ("error", "BAD_REQUEST", "1")
        assert await c.wait_closed() == 1008 and c.closed and c.close_code == 1008
        with pytest.raises(ConnectionClosed) as ci:
            await c.receive(timeout=1)
        assert ci.value.close_code == 1008


async def test_a_refused_hello_raises_the_typed_error(srv: HubServer) -> None:
    with pytest.raises(BadRequest, match="protocol"):
        await connect_raw(url_of(srv), "probe", protocol=99)


async def test_nothing_arrives_raises_timeout_error(srv: HubServer) -> None:
    async with await connect_raw(url_of(srv), "probe") as c:
        with pytest.raises(TimeoutError):
            await c.receive(lambda m: m["op"] == "delta", timeout=0.3)


async def test_a_shared_session_and_a_resume(srv: HubServer) -> None:
    async with HubClient(url_of(srv), "writer") as w:
        await w.set("app.writer.a", 1)
        async with aiohttp.ClientSession() as session:
            c = await connect_raw(url_of(srv), "probe", session=session)
            rev, _ = await c.subscribe("app.writer.**")
            await c.close()
            assert not session.closed  # not the connection's to close
            await w.set("app.writer.a", 2)
            resume = {"hub": srv.hub.hub_id, "rev": rev}
            async with await connect_raw(
                url_of(srv), "probe", session=session, resume=resume
            ) as c2:
                snap = await c2.request(
                    {"op": "subscribe", "sub": "s", "patterns": ["app.writer.**"], "since": rev}
                )
                assert snap["op"] == "snapshot" and snap["mode"] == "incremental"
                assert [e["value"] for e in snap["entries"]] == [2]


async def test_frames_as_bytes_for_benchmarks(srv: HubServer) -> None:
    async with await connect_raw(url_of(srv), "probe") as c:
        await c.send({"op": "get", "id": "g", "patterns": ["hub.info"]})
        data = await c.receive_frame()
        assert isinstance(data, bytes) and b'"id":"g"' in data
