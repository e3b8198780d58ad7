"""The flush delay: a connection's writer woken from idle by changes waits
``flush_delay_ms`` so that changes arriving together leave in one frame; replies are
never held."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from companion_hub.client import connect_raw


def _messages(frame: bytes) -> list[dict[str, Any]]:
    doc = msgspec.json.decode(frame)
    return doc if isinstance(doc, list) else [doc]


async def test_changes_within_the_delay_leave_in_one_frame_and_replies_are_not_held(
    hub_factory: Callable[..., Any],
) -> None:
    srv = await hub_factory(flush_delay_ms=1000.0)
    watcher = await connect_raw(srv.url, "watcher")
    await watcher.subscribe("app.w.*")
    writer = await connect_raw(srv.url, "w")
    started = time.monotonic()
    for i in range(3):  # three requests one after another: each reply comes at once
        await writer.result({"op": "set", "key": f"app.w.k{i}", "value": i})
    # (held replies would take 3 x 1 s; generous for a loaded machine)
    assert time.monotonic() - started < 2.5
    frame = await watcher.receive_frame(timeout=10)
    deltas = [m for m in _messages(frame) if m.get("op") == "delta"]
    assert [d["key"] for d in deltas] == ["app.w.k0", "app.w.k1", "app.w.k2"]  # one frame
    await watcher.close()
    await writer.close()


async def test_no_delay_sends_each_change_as_it_comes(hub_factory: Callable[..., Any]) -> None:
    srv = await hub_factory(flush_delay_ms=0.0)
    watcher = await connect_raw(srv.url, "watcher")
    await watcher.subscribe("app.w.*")
    writer = await connect_raw(srv.url, "w")
    await writer.result({"op": "set", "key": "app.w.a", "value": 1})
    frame = await watcher.receive_frame(timeout=10)
    assert [m["key"] for m in _messages(frame) if m.get("op") == "delta"] == ["app.w.a"]
    await watcher.close()
    await writer.close()
