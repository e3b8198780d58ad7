"""Commands sent to this client's namespaces (spec section 8): the handlers registered
for them, running one, and answering the hub with its ``reply``."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ErrorCode, HubError, NotFound
from .events import CommandReceived
from .protocol import ClientProtocol

__all__ = ["CommandHandler", "CommandHandlers"]

log = logging.getLogger("companion_hub.client")

CommandHandler = Callable[[dict[str, Any], str], Any]
"""``fn(params, source) -> result``; may be a coroutine function."""


class CommandHandlers:
    """The command handlers of one client, by command name."""

    def __init__(self, client: str) -> None:
        self.client = client
        self._by_name: dict[str, tuple[CommandHandler, bool]] = {}

    def register(self, name: str, fn: CommandHandler, *, in_thread: bool = False) -> None:
        self._by_name[name] = (fn, in_thread)

    async def run(self, name: str, params: dict[str, Any], source: str) -> dict[str, Any]:
        """Run the handler of ``name``; returns the reply's outcome: ``{"ok": True,
        "result": ...}`` or ``{"ok": False, "error": {...}}``.

        No handler: ``NOT_FOUND``. A :class:`HubError` raised by the handler answers with
        its code, message and details; any other exception answers ``FAILED``.
        """
        registered = self._by_name.get(name)
        if registered is None:
            error = NotFound(f"{self.client} has no command {name!r}")
            return {"ok": False, "error": error.to_wire()}
        fn, in_thread = registered
        try:
            if in_thread:
                result = await asyncio.to_thread(fn, params, source)
            else:
                result = fn(params, source)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            raise
        except HubError as exc:
            return {"ok": False, "error": exc.to_wire()}
        except Exception as exc:
            log.info(
                "command handler failed",
                extra={"client": self.client, "command": name, "error": repr(exc)},
            )
            message = str(exc) or type(exc).__name__
            return {"ok": False, "error": {"code": str(ErrorCode.FAILED), "message": message}}
        return {"ok": True, "result": result}

    async def answer(
        self,
        command: CommandReceived,
        protocol: ClientProtocol,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        """Run the command's handler and send the ``reply`` (``flush`` writes it, and
        does not raise: a reply lost with its connection was answered by the hub)."""
        outcome = await self.run(command.name, command.params, command.source)
        if not protocol.send_reply(command, outcome):
            # the connection it came on is gone: the hub already answered UNAVAILABLE
            log.info("reply dropped: connection gone", extra={"command": command.name})
            return
        await flush()
