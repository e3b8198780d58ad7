"""The HTTP API's writes, commands and events over real sockets (docs/http.md): the
WebSocket's rules and errors, with and without tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from companion_hub.auth.tokens import TokenStore
from companion_hub.client import connect_raw
from companion_hub.core.limits import Limits
from companion_hub.hub import HubConfig
from companion_hub.protocol import http as h
from companion_hub.server.app import HubServer

ME = {"X-Companion-Client": "tally"}


def base(srv: HubServer) -> str:
    return f"http://127.0.0.1:{srv.port}"


async def test_put_and_delete_follow_the_store_rules(hub: HubServer) -> None:
    url = base(hub)
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/api/state/app.tally.on", json=True, headers=ME) as r:
            assert r.status == 200
            reply = msgspec.json.decode(await r.read(), type=h.WriteReply)
            assert reply.key == "app.tally.on" and reply.version == 1
        async with http.get(f"{url}/api/state/app.tally.on") as r:
            e = await r.json()
            assert e["value"] is True and e["owner"] == "app.tally" and e["stale"] is False
        # the client name as a query parameter; compare-and-set
        async with http.put(
            f"{url}/api/state/app.tally.on?client=tally&expect_version=1&durable=1", json=False
        ) as r:
            assert r.status == 200 and (await r.json())["version"] == 2
        async with http.put(
            f"{url}/api/state/app.tally.on?expect_version=1", json=1, headers=ME
        ) as r:
            assert r.status == 409
            err = (await r.json())["error"]
            assert err["code"] == "CONFLICT" and err["details"]["version"] == 2
        # outside the client's namespaces: NOT_OWNER (403), hub.* included
        for key in ("app.other.x", "hub.info", "loose"):
            async with http.put(f"{url}/api/state/{key}", json=1, headers=ME) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "NOT_OWNER"
        # no client name: 400 naming it
        async with http.put(f"{url}/api/state/app.tally.on", json=1) as r:
            assert r.status == 400
            assert "X-Companion-Client" in (await r.json())["error"]["message"]
        async with http.put(
            f"{url}/api/state/app.tally.on", json=1, headers={"X-Companion-Client": "Bad Name"}
        ) as r:
            assert r.status == 400
        # bad parameters and bodies
        for q in ("expect_version=-1", "expect_version=x", "durable=maybe"):
            async with http.put(f"{url}/api/state/app.tally.on?{q}", json=1, headers=ME) as r:
                assert r.status == 400
                assert q.split("=")[0] in (await r.json())["error"]["message"]
        async with http.put(f"{url}/api/state/app.tally.on", data=b"{nope", headers=ME) as r:
            assert r.status == 400 and "invalid JSON" in (await r.json())["error"]["message"]
        async with http.put(f"{url}/api/state/app.tally.on", data=b"", headers=ME) as r:
            assert r.status == 400
        async with http.put(
            f"{url}/api/state/app.tally.on", data=b"[" * 100 + b"]" * 100, headers=ME
        ) as r:
            assert r.status == 400
        async with http.put(f"{url}/api/state/app.tally..x", json=1, headers=ME) as r:
            assert r.status == 400
        async with http.delete(f"{url}/api/state/app.tally.on?expect_version=1", headers=ME) as r:
            assert r.status == 409
        async with http.delete(f"{url}/api/state/app.tally.on", headers=ME) as r:
            assert r.status == 200
            assert set(await r.json()) == {"key", "version", "rev"}
        async with http.delete(f"{url}/api/state/app.tally.on", headers=ME) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "NOT_FOUND"


async def test_http_and_websocket_of_one_client_share_its_namespace(hub: HubServer) -> None:
    ws = await connect_raw(hub.url, "tally")
    url = base(hub)
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{url}/api/state/app.tally.x", json=1, headers=ME) as r,
    ):
        assert r.status == 200
    res = await ws.request({"op": "set", "key": "app.tally.y", "value": 2})
    assert res["ok"] is True  # the connection still owns its namespace
    await ws.close()
    # the connection's keys turn stale when it leaves, and an HTTP write freshens one
    await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/state/app.tally.x") as r:
            assert (await r.json())["stale"] is True
        async with http.put(f"{url}/api/state/app.tally.x", json=5, headers=ME) as r:
            assert r.status == 200
        async with http.get(f"{url}/api/state/app.tally.x") as r:
            assert (await r.json())["stale"] is False


async def test_bodies_over_frame_bytes_are_too_large(hub_factory: Any) -> None:
    srv = await hub_factory(limits=Limits(frame_bytes=1000, value_bytes=500))
    url = base(srv)
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{url}/api/state/app.tally.x", json="x" * 2000, headers=ME) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "TOO_LARGE"
        async with http.put(f"{url}/api/state/app.tally.x", json="x" * 700, headers=ME) as r:
            assert r.status == 413 and (await r.json())["error"]["details"]["limit"] == 500

        async def chunks() -> Any:
            for _ in range(4):
                yield b"[" + b"1," * 200 + b"1]"

        async with http.post(f"{url}/api/events", data=chunks(), headers=ME) as r:
            assert r.status == 413


async def test_commands_over_http(hub: HubServer) -> None:
    owner = await connect_raw(hub.url, "panel")
    url = base(hub)

    async def answer() -> None:
        cmd = await owner.receive(lambda m: m["op"] == "command")
        assert cmd["source"] == "http" and cmd["params"] == {"n": 2}
        await owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": {"done": 1}})
        cmd = await owner.receive(lambda m: m["op"] == "command")
        assert cmd["source"] == "tally"
        await owner.send(
            {
                "op": "reply",
                "id": cmd["id"],
                "ok": False,
                "error": {"code": "NOT_FOUND", "message": "no"},
            }
        )

    task = asyncio.create_task(answer())
    async with aiohttp.ClientSession() as http:
        body = {"target": "app.panel", "name": "reset", "params": {"n": 2}}
        async with http.post(f"{url}/api/commands", json=body) as r:
            assert r.status == 200 and await r.json() == {"ok": True, "result": {"done": 1}}
        async with http.post(f"{url}/api/commands", json=body, headers=ME) as r:
            assert r.status == 404
            reply = await r.json()
            assert reply["ok"] is False and reply["error"]["code"] == "NOT_FOUND"
        await task
        async with http.post(
            f"{url}/api/commands", json={"target": "app.panel", "name": "slow", "timeout_ms": 100}
        ) as r:
            assert r.status == 504 and (await r.json())["error"]["code"] == "TIMEOUT"
        async with http.post(
            f"{url}/api/commands", json={"target": "app.nobody", "name": "x"}
        ) as r:
            assert r.status == 503 and (await r.json())["error"]["code"] == "UNAVAILABLE"
        for bad in (
            {"target": "", "name": "x"},
            {"name": "x"},
            {"target": "a", "name": "x", "timeout_ms": 0},
            [1],
        ):
            async with http.post(f"{url}/api/commands", json=bad) as r:
                assert r.status == 400, bad
                assert (await r.json())["error"]["code"] == "BAD_REQUEST"
    await owner.close()


async def test_events_over_http(hub: HubServer) -> None:
    sub = await connect_raw(hub.url, "viewer")
    await sub.request({"op": "subscribe", "sub": "s", "patterns": ["app.tally.**"], "events": True})
    url = base(hub)
    async with aiohttp.ClientSession() as http:
        ev = {"key": "app.tally.pressed", "data": {"n": 1}}
        async with http.post(f"{url}/api/events", json=ev, headers=ME) as r:
            assert r.status == 200 and await r.json() == {"delivered": 1}
        got = await sub.receive(lambda m: m["op"] == "event")
        assert got["key"] == "app.tally.pressed" and got["source"] == "tally"
        async with http.post(f"{url}/api/events", json={"key": "app.x.y"}, headers=ME) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "NOT_OWNER"
        async with http.post(f"{url}/api/events", json=ev) as r:
            assert r.status == 400
        async with http.post(f"{url}/api/events", json={"data": 1}, headers=ME) as r:
            assert r.status == 400 and "key" in (await r.json())["error"]["message"]
    await sub.close()


async def test_with_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore.load(str(path))
    t = {
        "show": store.add("show", "app"),
        "viewer": store.add("viewer", "viewer"),
        "fleet": store.add("tally-fleet", "app", client="tally-*"),
        "panel": store.add("panel", "operator"),
    }
    srv = HubServer(HubConfig(port=0, tokens_file=str(path)))
    await srv.start()
    try:
        url = base(srv)

        def auth(name: str, **extra: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {t[name]}", **extra}

        async with aiohttp.ClientSession() as http:
            async with http.put(f"{url}/api/state/app.show.x", json=1) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "UNAUTHORIZED"
            async with http.put(f"{url}/api/state/app.show.x", json=1, headers=auth("show")) as r:
                assert r.status == 200
            async with http.put(f"{url}/api/state/app.other.x", json=1, headers=auth("show")) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "FORBIDDEN"
            async with http.put(
                f"{url}/api/state/app.viewer.x", json=1, headers=auth("viewer")
            ) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "FORBIDDEN"
            # a client name the token allows, and one it does not
            h1 = auth("fleet", **{"X-Companion-Client": "tally-1"})
            async with http.put(f"{url}/api/state/app.tally-1.on", json=1, headers=h1) as r:
                assert r.status == 200
            h2 = auth("fleet", **{"X-Companion-Client": "show"})
            async with http.put(f"{url}/api/state/app.show.on", json=1, headers=h2) as r:
                assert r.status == 403
            cmd = {"target": "companion", "name": "press"}
            async with http.post(f"{url}/api/commands", json=cmd, headers=auth("show")) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "FORBIDDEN"
            async with http.post(f"{url}/api/commands", json=cmd, headers=auth("panel")) as r:
                assert r.status == 503  # allowed, but nobody owns companion here
            ev = {"key": "app.viewer.x", "data": 1}
            async with http.post(f"{url}/api/events", json=ev, headers=auth("viewer")) as r:
                assert r.status == 403
            async with http.get(f"{url}/api/openapi.json") as r:
                assert r.status == 200  # public
            async with http.get(f"{url}/api/stream") as r:
                assert r.status == 401
    finally:
        await srv.stop()
