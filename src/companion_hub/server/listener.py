"""The listening socket: caps on connections, and a hub that survives running out of
file descriptors.

Every TCP connection to the hub (HTTP, WebSocket, half-open garbage) costs a file
descriptor. Without limits, a few thousand idle connections from one machine stop
the hub from accepting anyone, and the accept errors flood the log. So:

- **Caps.** At most ``max_connections`` connections overall and
  ``max_connections_per_address`` from one IP address. A connection over a cap is
  answered at once with ``503 Service Unavailable`` and a JSON error body that says
  which limit it hit (a WebSocket client sees it as its handshake's answer), then
  closed. The overall cap is kept below the process's file descriptor limit.
- **Header timeout.** aiohttp closes a connection that has not completed a
  request's headers within its keep-alive timeout; the hub sets it to
  ``request_header_timeout`` (see :class:`~companion_hub.server.app.HubServer`).
- **Out of descriptors anyway** (the limit is shared with the event log, adapters
  and threads): the event loop's accept errors are logged at most once a second.

The guard is a thin protocol wrapper around aiohttp's own request handler, so
nothing else about serving changes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("companion_hub.server")

# descriptors kept free for everything that is not a client connection
FD_RESERVE = 128


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class ConnectionGuard:
    """Counts live connections overall and per address; decides admission."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self.by_address: dict[str, int] = {}
        self.refused = 0
        self._last_log = 0.0

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or the reason it is refused."""
        if self.total >= self.max_total:
            return f"the hub has reached its limit of {self.max_total} connections"
        n = self.by_address.get(address, 0)
        if n >= self.max_per_address:
            return (
                f"too many connections from {address}: the limit is "
                f"{self.max_per_address} per address"
            )
        self.total += 1
        self.by_address[address] = n + 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        n = self.by_address.get(address, 0) - 1
        if n <= 0:
            self.by_address.pop(address, None)
        else:
            self.by_address[address] = n

    def refuse(self, address: str, reason: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_log >= 1.0:  # at most one line a second, however many
            self._last_log = now
            log.warning(
                "connection refused",
                extra={"address": address, "reason": reason, "refused_total": self.refused},
            )


def _refusal(reason: str) -> bytes:
    body = b'{"error":{"code":"LIMIT_EXCEEDED","message":"%s"}}' % reason.replace('"', "'").encode(
        "utf-8", "replace"
    )
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nRetry-After: 5\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    )


class _Guarded(asyncio.Protocol):
    """aiohttp's request handler behind the connection caps."""

    __slots__ = ("_address", "_guard", "_inner")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner: asyncio.Protocol | None = inner
        self._guard = guard
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        reason = self._guard.admit(address)
        if reason is not None:
            self._inner = None
            self._guard.refuse(address, reason)
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_refusal(reason))
            transport.close()
            return
        self._address = address
        assert self._inner is not None
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass through a :class:`ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        backlog: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self.guard

        def factory() -> asyncio.Protocol:
            return _Guarded(server(), guard)

        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, ssl=self._ssl_context
        )
        sockets = getattr(self._server, "sockets", None)
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def throttle_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the event loop's accept errors (out of file descriptors) at most once a
    second; everything else goes to the previous handler as before."""
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = (
        loop.get_exception_handler()
    )
    state = {"last": 0.0, "suppressed": 0}

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            now = time.monotonic()
            if now - state["last"] < 1.0:
                state["suppressed"] += 1
                return
            state["last"] = now
            log.error(
                "cannot accept connections: out of file descriptors; pausing",
                extra={"error": str(exc), "suppressed": state["suppressed"]},
            )
            state["suppressed"] = 0
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
