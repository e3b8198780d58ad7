from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from companion_hub.core.limits import Limits
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer


@pytest.fixture
async def hub_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[HubServer] = []

    async def start(limits: Limits | None = None, **cfg: Any) -> HubServer:
        cfg.setdefault("heartbeat_ms", 10_000)
        srv = HubServer(HubConfig(port=0, limits=limits or Limits(), **cfg))
        await srv.start()
        srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        await s.stop()


@pytest.fixture
async def hub(hub_factory: Callable[..., Any]) -> HubServer:
    return await hub_factory()
