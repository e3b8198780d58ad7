"""The blocking wrapper, used from a plain thread against a real hub."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from companion_hub.client import Failed, NotOwner, SyncHubClient, Unavailable
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer


@pytest.fixture
async def srv() -> AsyncIterator[HubServer]:
    async with HubServer(HubConfig(port=0, heartbeat_ms=500)) as s:
        yield s


async def test_sync_client(srv: HubServer) -> None:
    url = f"ws://127.0.0.1:{srv.port}/ws"
    handler_threads: list[str] = []

    def double(params: dict[str, Any], source: str) -> Any:
        handler_threads.append(threading.current_thread().name)
        if params.get("n") is None:
            raise ValueError("n is required")
        return {"n": params["n"] * 2, "from": source}

    def script() -> None:
        with SyncHubClient(url, "script") as hub, SyncHubClient(url, "other") as other:
            assert hub.connected and hub.namespaces == ["app.script"]
            r = hub.set("app.script.x", {"a": 1})
            assert r.version == 1
            e = other.get("app.script.x")
            assert e is not None and e.value == {"a": 1}
            assert [w.version for w in hub.set_many({"app.script.y": 1, "app.script.z": 2})] == [
                1,
                1,
            ]
            assert hub.delete("app.script.z").version == 2
            with pytest.raises(NotOwner):
                other.set("app.script.x", 1)

            hub.handle("double", double)
            assert other.command("app.script", "double", n=21) == {"n": 42, "from": "other"}
            with pytest.raises(Failed, match="n is required"):
                other.call("app.script", "double", {})

            changes = other.watch("app.script.**", timeout=3)
            first = {next(changes).key for _ in range(2)}
            assert first == {"app.script.x", "app.script.y"}
            hub.set("app.script.x", 2)
            ch = next(changes)
            assert (ch.key, ch.value, ch.version) == ("app.script.x", 2, 2)
            changes.close()  # unsubscribes

            sub = other.subscribe("app.script.*")
            assert set(sub.entries()) == {"app.script.x", "app.script.y"}
            sub.unsubscribe()

            quiet = other.watch("app.none.*", timeout=0.2)
            with pytest.raises(TimeoutError):
                next(quiet)
            quiet.close()
        with pytest.raises(Unavailable):
            hub.get("app.script.x")

    await asyncio.to_thread(script)
    # sync handlers ran off the loop thread, and every loop thread is gone
    assert handler_threads and all(not n.startswith("hub-client") for n in handler_threads)
    assert not [t for t in threading.enumerate() if t.name.startswith("hub-client")]


async def test_sync_connect_failure_leaves_no_thread() -> None:
    def script() -> None:
        c = SyncHubClient("ws://127.0.0.1:9/ws", "nobody", connect_timeout=0.3)
        with pytest.raises(Unavailable):
            c.connect()

    await asyncio.to_thread(script)
    assert not [t for t in threading.enumerate() if t.name.startswith("hub-client")]
