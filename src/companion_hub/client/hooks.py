"""A client's life-cycle hooks: what runs after every connection, every lost
connection, and a takeover. Each hook is a function or a coroutine function; it runs
in its own task, and an exception in it is logged, never raised."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub_client import HubClient

__all__ = ["ConnectHook", "DisconnectHook", "Hooks"]

log = logging.getLogger("companion_hub.client")

ConnectHook = Callable[["HubClient"], Any]
"""``fn(client)`` run after every (re)connection; may be a coroutine function."""
DisconnectHook = Callable[["HubClient", str], Any]
"""``fn(client, reason)`` run after every lost connection; may be a coroutine function."""


class Hooks:
    """The hooks of one client; ``spawn(coro, name)`` runs one in a task."""

    def __init__(self, client: HubClient, spawn: Callable[[Awaitable[Any], str], None]) -> None:
        self.client = client
        self.spawn = spawn
        self.connected: list[ConnectHook] = []
        self.disconnected: list[DisconnectHook] = []
        self.replaced: list[ConnectHook] = []

    def run(self, hooks: list[Callable[..., Any]], kind: str, *args: Any) -> None:
        for hook in hooks:
            self.spawn(self._run(hook, *args), f"hub-client-{kind}-{self.client.client}")

    async def _run(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            result = hook(self.client, *args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "hook failed",
                extra={"client": self.client.client, "hook": getattr(hook, "__name__", "")},
            )
