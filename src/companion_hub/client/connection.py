"""The asyncio driver of :class:`~companion_hub.client.protocol.ClientProtocol`.

It only moves bytes and time: it opens WebSockets (aiohttp), writes what the protocol
queues, hands every received frame to the protocol, answers pings and pings a quiet
hub, declares a hub dead after 2 x ``heartbeat_ms`` without a frame, reconnects with
exponential back-off and full jitter, and turns request ids into futures. What the
protocol reports, and the driver's own :class:`Connected` / :class:`Disconnected`,
go to one ``on_event`` callback (the :class:`~companion_hub.client.HubClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from .errors import BadRequest, HubError, Timeout, Unavailable
from .events import HelloRefused, ProtocolEvent, RequestDone, RequestFailed, Welcomed
from .messages import Welcome
from .protocol import ClientProtocol, RequestKind
from .tls import describe_tls_error, is_tls_url

__all__ = ["CLOSE_REPLACED", "ClientState", "Connected", "Disconnected", "Driver"]

log = logging.getLogger("companion_hub.client")

CLOSE_REPLACED = 4000
"""The close code of a connection taken over by another with the same client name."""

SEND_ERRORS = (ConnectionError, RuntimeError, aiohttp.ClientError)


class ClientState(StrEnum):
    """The state of a client, as shown by ``repr(hub)`` and ``hub.state``."""

    IDLE = "idle"
    """Not started: :meth:`HubClient.connect` was not called."""
    CONNECTING = "connecting"
    """Connecting, or reconnecting after a lost connection."""
    CONNECTED = "connected"
    REPLACED = "replaced"
    """Another connection with the same client name took over; it does not reconnect."""
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection was welcomed (its re-subscriptions go out before any new request)."""

    welcome: Welcome
    resumed: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A welcomed connection was lost; ``replaced`` after a takeover (close code 4000)."""

    reason: str
    close_code: int | None
    replaced: bool


DriverEvent = ProtocolEvent | Connected | Disconnected


class _Link:
    """One live WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, heartbeat_ms: int, now: float):
        self.ws = ws
        self.heartbeat_s = heartbeat_ms / 1000
        self.last_rx = now
        self.open = True
        self.reason = "connection closed"
        self.close_code: int | None = None

    async def send(self, frames: list[bytes]) -> None:
        for frame in frames:
            if not self.open or self.ws.closed:
                raise ConnectionError("the connection is closed")
            await self.ws.send_frame(frame, WSMsgType.TEXT)


class Driver:
    """Runs a :class:`ClientProtocol` over aiohttp, reconnecting until closed."""

    def __init__(
        self,
        protocol: ClientProtocol,
        url: str,
        on_event: Callable[[DriverEvent], None],
        *,
        backoff_base: float,
        backoff_max: float,
        connect_timeout: float,
        request_timeout: float,
        max_msg_size: int,
        ssl: _ssl.SSLContext | bool = True,
    ) -> None:
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise BadRequest("need 0 < backoff_base <= backoff_max")
        self.protocol = protocol
        self.url = url
        self.on_event = on_event
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_msg_size = max_msg_size
        self.ssl = ssl
        """aiohttp's ``ssl=``: True verifies against the system's trust store."""
        self.name = protocol.client
        self.welcomes = 0
        self.last_error: str | None = None
        self.replaced = False
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self._link: _Link | None = None
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._connected: asyncio.Event | None = None
        self._first: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def state(self) -> ClientState:
        if self.closed:
            return ClientState.CLOSED
        if self.replaced:
            return ClientState.REPLACED
        if self._link is not None and self._link.open:
            return ClientState.CONNECTED
        return ClientState.IDLE if self._runner is None else ClientState.CONNECTING

    # --- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting; returns after the first ``welcome`` (see HubClient.connect)."""
        if self.closed:
            raise Unavailable("the client is closed")
        if self._runner is not None:
            await self.ready(self.connect_timeout)
            return
        self._connected = asyncio.Event()
        self._first = first = asyncio.get_running_loop().create_future()
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout
            )
        )
        self._runner = asyncio.create_task(self._run(), name=f"hub-client-{self.name}")
        try:
            await asyncio.wait_for(first, self.connect_timeout)
        except TimeoutError:
            await self.close()
            raise Unavailable(
                f"could not connect to {self.url} within {self.connect_timeout:g} s"
                + (f": {self.last_error}" if self.last_error else "")
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection, cancel every task and fail waiting requests."""
        if self.closed and self._runner is None:
            return
        self.closed = True
        link = self._link
        if link is not None and link.open:
            # a clean closing handshake; the reader sees it and the runner stops
            with contextlib.suppress(Exception):
                await link.ws.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            # not suppress(CancelledError): a cancellation of close() itself must not
            # be swallowed
            await asyncio.gather(runner, return_exceptions=True)
        if link is not None:
            self._lost(link, "the client was closed")
        while self.tasks:
            tasks = list(self.tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.tasks.difference_update(tasks)
        if self._first is not None and not self._first.done():
            self._first.cancel()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run ``coro`` as a task that :meth:`close` cancels."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- requests ---------------------------------------------------------------------

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until connected (:class:`Unavailable` after ``timeout``, by default
        ``request_timeout``, or when the client is closed or was taken over)."""
        if timeout is None:
            timeout = self.request_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.replaced:
                raise Unavailable(
                    "this connection was taken over by another one with the same client name"
                )
            if self.closed or self._connected is None:
                raise Unavailable("the client is not running (use connect() or async with)")
            if self._link is not None and self._link.open:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(
                    f"not connected to the hub (waited {timeout:g} s)"
                    + (f": {self.last_error}" if self.last_error else "")
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), remaining)

    async def flush(self) -> None:
        """Write what the protocol queued, on the current connection."""
        frames = self.protocol.data_to_send()
        if not frames:
            return
        link = self._link
        if link is None:
            raise ConnectionError("the connection is closed")
        await link.send(frames)

    async def flush_quietly(self) -> None:
        """:meth:`flush`, ignoring a connection that is gone (its loss is handled by the
        read loop)."""
        with contextlib.suppress(*SEND_ERRORS):
            await self.flush()

    async def wait(
        self, request_id: str, kind: RequestKind, op: str, timeout: float | None = None
    ) -> Any:
        """Send the request ``request_id`` the protocol just queued, and wait for its
        outcome (``timeout``: :class:`Timeout` after that many seconds)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = fut
        try:
            try:
                await self.flush()
            except SEND_ERRORS as exc:
                may = {
                    RequestKind.WRITE: "; the write may have been applied",
                    RequestKind.COMMAND: "; the command may have been executed",
                }.get(kind, "")
                raise Unavailable(f"could not send {op!r}: {exc}{may}") from None
            if timeout is None:
                return await fut
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise Timeout(
                    f"no result from the hub within {timeout:g} s; "
                    "the command may have been executed"
                ) from None
        finally:
            self._waiters.pop(request_id, None)
            self.protocol.forget_request(request_id)

    async def request(
        self, message: Mapping[str, Any], kind: RequestKind, *, timeout: float | None = None
    ) -> Any:
        """Send a request once connected; returns its ``result`` or raises its error."""
        await self.ready()
        request_id = self.protocol.send_request(message, kind)
        return await self.wait(request_id, kind, str(message.get("op")), timeout)

    def _resolve(self, event: ProtocolEvent) -> None:
        """Settle the future of a finished request; other events go to ``on_event``."""
        if isinstance(event, RequestDone | RequestFailed):
            fut = self._waiters.pop(event.request_id, None)
            if fut is not None and not fut.done():
                if isinstance(event, RequestDone):
                    fut.set_result(event.result)
                else:
                    fut.set_exception(event.error)
        else:
            self.on_event(event)

    # --- the connection loop ----------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self.closed:
            try:
                link, welcomed, rest = await self._open()
            except asyncio.CancelledError:
                raise
            except aiohttp.ClientSSLError as exc:
                # an untrusted certificate, or no TLS on that port: retrying will not
                # fix it, so the first connect() fails at once; later attempts go on
                # (the hub may get its certificate fixed) and say why
                self.last_error = describe_tls_error(self.url, exc)
                log.warning("TLS failed", extra={"client": self.name, "error": self.last_error})
                if self.welcomes == 0:
                    if self._first is not None and not self._first.done():
                        err = Unavailable(self.last_error)
                        err.__cause__ = exc
                        self._first.set_exception(err)
                    return
            except HubError as exc:  # the hub refused the hello
                self.last_error = str(exc)
                log.warning("hub refused hello", extra={"client": self.name, "error": str(exc)})
                if self.welcomes == 0:
                    if self._first is not None and not self._first.done():
                        self._first.set_exception(exc)
                    return
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
                if isinstance(exc, aiohttp.ServerDisconnectedError) and not is_tls_url(self.url):
                    self.last_error += " (if the hub serves TLS on that port, use wss://)"
                log.debug("connect failed", extra={"client": self.name, "error": self.last_error})
            else:
                attempt = 0
                try:
                    await self._serve(link, welcomed, rest)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not end the reconnect loop
                    log.exception("connection failed", extra={"client": self.name})
                self.on_event(Disconnected(link.reason, link.close_code, self.replaced))
                if self.replaced:
                    log.warning(
                        "connection replaced by another one with the same client name; "
                        "not reconnecting",
                        extra={"client": self.name},
                    )
                    return
            bound = min(self.backoff_max, self.backoff_base * (2**attempt))
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(random.uniform(0, bound))

    async def _open(self) -> tuple[_Link, Welcomed, list[ProtocolEvent]]:
        """Connect, say hello, wait for the welcome; returns the events that came after
        it in the same frame. A refused hello raises the hub's error."""
        assert self._http is not None
        ws = await self._http.ws_connect(
            self.url,
            autoping=False,  # we see (and answer) pings ourselves: every frame counts
            autoclose=True,
            max_msg_size=self.max_msg_size,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
            ssl=self.ssl,
        )
        protocol = self.protocol
        try:
            protocol.connect()
            for frame in protocol.data_to_send():
                await ws.send_frame(frame, WSMsgType.TEXT)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.connect_timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError("no welcome from the hub")
                msg = await ws.receive(timeout=remaining)
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type is WSMsgType.PONG:
                    continue
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    raise ConnectionError(
                        f"connection closed during the handshake (code {ws.close_code})"
                    )
                events = protocol.receive_frame(msg.data)
                for i, event in enumerate(events):
                    if isinstance(event, HelloRefused):
                        raise event.error
                    if isinstance(event, Welcomed):
                        link = _Link(ws, event.welcome.heartbeat_ms, loop.time())
                        return link, event, events[i + 1 :]
        except BaseException:
            protocol.connection_lost("the handshake failed")
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    async def _serve(self, link: _Link, welcomed: Welcomed, rest: list[ProtocolEvent]) -> None:
        self.welcomes += 1
        self._link = link  # connected from here on (the client is told in the same step)
        log.info(
            "connected",
            extra={
                "client": self.name,
                "hub": welcomed.welcome.hub,
                "resumed": welcomed.resumed,
                "subs": len(self.protocol.subscriptions),
            },
        )
        pinger = asyncio.create_task(self._pinger(link), name=f"hub-client-ping-{self.name}")
        try:
            self.on_event(Connected(welcomed.welcome, welcomed.resumed))
            await self.flush()  # the re-subscriptions, before any new request
            for event in rest:
                self._resolve(event)
            assert self._connected is not None
            self._connected.set()
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            await self._read_loop(link)
        except SEND_ERRORS as exc:
            link.reason = f"send failed: {exc!r}"
        finally:
            # lost first, in the same step that saw the close: nothing may observe the
            # connection as open (or `replaced` without `connected` being False) while
            # the pinger winds down
            self._lost(link, link.reason)
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
            if not link.ws.closed:
                # do not wait for a closing handshake with a hub that may be dead
                self.spawn(link.ws.close(), "hub-client-close")
        log.info(
            "disconnected",
            extra={"client": self.name, "reason": link.reason, "code": link.close_code},
        )

    async def _read_loop(self, link: _Link) -> None:
        ws = link.ws
        loop = asyncio.get_running_loop()
        while True:
            # a dead hub: no frame at all (not even a ping) for 2 x heartbeat_ms
            timeout = 2 * link.heartbeat_s
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                link.reason = f"no frame from the hub for {timeout:g} s"
                return
            link.last_rx = loop.time()
            t = msg.type
            if t is WSMsgType.TEXT or t is WSMsgType.BINARY:
                for event in self.protocol.receive_frame(msg.data):
                    self._resolve(event)
                await self.flush()
            elif t is WSMsgType.PING:
                await ws.pong(msg.data)
            elif t is WSMsgType.PONG:
                pass
            else:
                if t is WSMsgType.CLOSE:
                    link.close_code = msg.data
                    link.reason = f"closed by the hub ({msg.data} {msg.extra or ''})".strip()
                elif t is WSMsgType.ERROR:
                    link.reason = f"connection error: {msg.data!r}"
                else:
                    link.close_code = ws.close_code
                    link.reason = f"connection closed ({ws.close_code})"
                if link.close_code == CLOSE_REPLACED:
                    self.replaced = True
                return

    async def _pinger(self, link: _Link) -> None:
        """Ping a quiet hub so that a live one always answers within 2 x heartbeat_ms."""
        interval = link.heartbeat_s / 2
        loop = asyncio.get_running_loop()
        while link.open:
            await asyncio.sleep(interval)
            if loop.time() - link.last_rx >= interval and not link.ws.closed:
                try:
                    await link.ws.ping()
                except SEND_ERRORS:
                    return

    def _lost(self, link: _Link, reason: str) -> None:
        """The connection is gone: fail what waits on it (with the right message)."""
        if not link.open:
            return
        link.open = False
        if self._link is link:
            self._link = None
            if self._connected is not None:
                self._connected.clear()
        for event in self.protocol.connection_lost(reason):
            self._resolve(event)
