"""The asyncio driver around :class:`SatelliteProtocol`: socket, time, keep-alive,
reply timeouts and reconnection with exponential back-off and jitter.

Every connection gets a fresh protocol object (Companion forgets a connection's
devices and subscriptions when it closes), so a reconnect re-registers and
re-subscribes from scratch. Requests (presses, input values) are never re-sent after a
reconnect: a request in flight when the link drops fails with :class:`LinkDown`,
saying it may have been executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from ...core.errors import CompanionHubError
from ...supervisor import cancel_and_wait
from .events import Event, ProtocolError, Reply, Synced
from .satellite import ProtocolState, SatelliteOptions, SatelliteProtocol
from .status import LinkState

log = logging.getLogger("companion_hub.adapters.companion")


class LinkDown(CompanionHubError):
    """The Satellite link is not connected (or dropped while a request was in flight)."""


class ReplyTimeout(CompanionHubError):
    """Companion did not answer a request in time."""


@dataclass
class LinkTiming:
    ping_interval: float = 1.0  # Companion drops a TCP link after 5 s of silence
    dead_after: float = 3.5  # no byte received for this long: the link is dead
    begin_timeout: float = 5.0  # connected but no BEGIN (and CAPS) by then: reset
    reply_timeout: float = 3.0  # a request without a reply by then fails
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    connect_timeout: float = 5.0
    # the back-off starts over only once a link has stayed synchronised this long
    # (a Companion that answers BEGIN and then drops us must not be hammered)
    stable_after: float = 10.0
    # Companion's API is unusable (too old): retry this rarely, as Companion's own
    # Satellite client does
    incompatible_retry: float = 30.0


class _Transport(Protocol):
    async def send(self, text: str) -> None: ...
    async def receive(self) -> bytes | str | None: ...
    async def close(self) -> None: ...


class _TcpTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))
        await self.writer.drain()

    async def receive(self) -> bytes | None:
        data = await self.reader.read(65536)
        return data or None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class _WsTransport:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    async def send(self, text: str) -> None:
        # one frame per line, as Companion's own client does
        for line in text.splitlines(keepends=True):
            await self.ws.send_str(line)

    async def receive(self) -> bytes | str | None:
        msg = await self.ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            data: bytes | str = msg.data
            return data
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 1.0)
        await self.http.close()


class SatelliteLink:
    """Keeps one Satellite connection to Companion alive and mirrors it as events."""

    def __init__(
        self,
        options: SatelliteOptions,
        host: str,
        port: int,
        *,
        transport: str = "tcp",
        on_event: Callable[[Event], None],
        on_state: Callable[[LinkState, str, float | None], None],
        timing: LinkTiming | None = None,
        hold: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.options = options
        self.host = host
        self.port = port
        self.transport_kind = transport
        self.on_event = on_event
        self.on_state = on_state
        self.timing = timing or LinkTiming()
        # awaited before each chunk of input is handled: the hub holds the link here
        # while its event log is behind (Companion's writes then wait in TCP buffers)
        self.hold = hold
        self._holding = False
        self.proto: SatelliteProtocol | None = None
        self.inputs: dict[str, str] = {}
        self.synced = False
        self._transport: _Transport | None = None
        self._pending: dict[str, deque[tuple[asyncio.Future[Reply], str | None]]] = {}
        self._ping_seq = itertools.count(1)
        self._last_rx = 0.0
        self._reset = asyncio.Event()
        self._reset_reason = "reset"
        self._attempt = 0
        self._synced_at: float | None = None
        self._fatal_kind = ""
        self.connects = 0

    # --- requests -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.proto is not None and self.proto.state in (
            ProtocolState.REGISTERING,
            ProtocolState.SYNCED,
        )

    async def request(
        self, command: str, key: str | None, build: Callable[[SatelliteProtocol], None]
    ) -> Reply:
        """Send one request (``build`` queues it on the protocol) and wait for its reply.

        ``key`` is the SUBID or VARIABLE that an OK reply echoes. Never retried.
        """
        proto = self.proto
        if proto is None or not self.connected or self._transport is None:
            raise LinkDown("the Satellite link to Companion is down")
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        queue = self._pending.setdefault(command, deque())
        entry = (fut, key)
        queue.append(entry)
        build(proto)
        await self._flush()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timing.reply_timeout)
        except TimeoutError:
            raise ReplyTimeout(
                f"Companion did not answer {command} within {self.timing.reply_timeout:g} s; "
                "it may have been executed"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                queue.remove(entry)

    def _resolve(self, reply: Reply) -> None:
        queue = self._pending.get(reply.command)
        if not queue:
            log.info("unexpected reply ignored", extra={"command": reply.command})
            return
        echoed = reply.params.get("SUBID") or reply.params.get("VARIABLE")
        for entry in queue:
            fut, key = entry
            if echoed is None or key is None or key == echoed:
                queue.remove(entry)
                if not fut.done():
                    fut.set_result(reply)
                return

    def _fail_pending(self, message: str) -> None:
        for queue in self._pending.values():
            while queue:
                fut, _ = queue.popleft()
                if not fut.done():
                    fut.set_exception(LinkDown(message))

    # --- the connection loop -------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with back-off; until cancelled.

        The back-off grows with every connection that ends (exponential, capped, with
        jitter) and starts over only after a connection stayed synchronised for
        ``stable_after`` seconds: a BEGIN alone proves nothing. An incompatible
        Companion is retried every ``incompatible_retry`` seconds at most.
        """
        try:
            while True:
                self._fatal_kind = ""
                self._synced_at = None
                reason = await self._one_connection()
                self.synced = False
                t = self.timing
                if (
                    self._synced_at is not None
                    and time.monotonic() - self._synced_at >= t.stable_after
                ):
                    self._attempt = 0
                self._attempt += 1
                delay = min(t.backoff_max, t.backoff_base * 2 ** min(self._attempt - 1, 10))
                delay = random.uniform(delay / 2, delay)  # jitter
                if self._fatal_kind == "incompatible":
                    delay = max(delay, t.incompatible_retry)
                self.on_state(LinkState.DISCONNECTED, reason, time.time() + delay)
                await asyncio.sleep(delay)
        finally:
            self.synced = False

    async def _open(self) -> _Transport:
        t = self.timing
        if self.transport_kind == "ws":
            http = aiohttp.ClientSession()
            try:
                ws = await http.ws_connect(
                    f"ws://{self.host}:{self.port}",
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                    autoping=True,
                    max_msg_size=4 * 1024 * 1024,
                )
            except BaseException:
                await http.close()
                raise
            return _WsTransport(http, ws)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), t.connect_timeout
        )
        return _TcpTransport(reader, writer)

    async def _one_connection(self) -> str:
        self.on_state(
            LinkState.CONNECTING, f"{self.transport_kind}://{self.host}:{self.port}", None
        )
        try:
            transport = await asyncio.wait_for(self._open(), self.timing.connect_timeout)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            return f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}"
        self.connects += 1
        self._transport = transport
        self.proto = SatelliteProtocol(self.options, self.inputs)
        self._last_rx = time.monotonic()
        self._reset.clear()
        keepalive = asyncio.create_task(self._keepalive(), name="satellite-keepalive")
        keepalive.add_done_callback(self._keepalive_done)
        reason = "connection closed by Companion"
        try:
            reason = await self._read_loop(transport)
        finally:
            await cancel_and_wait(keepalive)
            self._transport = None
            self.proto = None
            self._fail_pending("the Satellite link dropped; the command may have been executed")
            await transport.close()
        return reason

    async def _read_loop(self, transport: _Transport) -> str:
        receive: asyncio.Task[bytes | str | None] | None = None
        reset = asyncio.create_task(self._reset.wait())
        try:
            while True:
                receive = asyncio.create_task(transport.receive())
                done, _ = await asyncio.wait({receive, reset}, return_when=asyncio.FIRST_COMPLETED)
                if reset in done:
                    return self._reset_reason
                try:
                    data = receive.result()
                except (OSError, aiohttp.ClientError) as exc:
                    return f"read failed: {exc}"
                if data is None:
                    return "connection closed by Companion"
                self._last_rx = time.monotonic()
                if self.hold is not None:
                    self._holding = True
                    try:
                        await self.hold()
                    finally:
                        self._holding = False
                        self._last_rx = time.monotonic()
                proto = self.proto
                assert proto is not None
                proto.receive_data(data)
                for ev in proto.events():
                    fatal = self._dispatch(ev)
                    if fatal:
                        return fatal
                await self._flush()
        finally:
            # not `suppress(CancelledError): await t`: that would swallow the link's
            # own cancellation (a stopping adapter) and reconnect forever
            await cancel_and_wait(receive, reset)

    def _keepalive_done(self, task: asyncio.Task[None]) -> None:
        """The keep-alive ended: fine when cancelled or when it reset the link itself;
        an unexpected exception is logged and drops the connection (which the run
        loop re-opens), so a link is never left without its dead-link detection."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "Satellite keep-alive failed; dropping the connection",
                exc_info=exc,
                extra={"error": repr(exc)},
            )
            self.reset(f"keep-alive failed: {exc!r}")

    def _dispatch(self, ev: Event) -> str | None:
        if isinstance(ev, Reply):
            self._resolve(ev)
            return None
        if isinstance(ev, ProtocolError):
            log.warning(
                "satellite protocol problem",
                extra={"problem": ev.message, "kind": ev.kind, "fatal": ev.fatal},
            )
            if ev.fatal:
                self._fatal_kind = ev.kind
                return ev.message
        if isinstance(ev, Synced):
            self.synced = True
            self._synced_at = time.monotonic()
        self.on_event(ev)
        return None

    def reset(self, reason: str) -> None:
        """Drop the current connection (the run loop reconnects)."""
        self._reset_reason = reason
        self._reset.set()

    async def _flush(self) -> None:
        proto, transport = self.proto, self._transport
        if proto is None or transport is None:
            return
        out = proto.data_to_send()
        if out:
            try:
                await transport.send(out)
            except (OSError, aiohttp.ClientError, RuntimeError) as exc:
                self.reset(f"write failed: {exc}")

    async def _keepalive(self) -> None:
        t = self.timing
        started = time.monotonic()
        device_asked = started
        device_wait = t.reply_timeout
        while True:
            await asyncio.sleep(t.ping_interval)
            proto = self.proto
            if proto is None:
                return
            now = time.monotonic()
            if self._holding:
                self._last_rx = now  # data is waiting for us: the link is alive
            if now - self._last_rx > t.dead_after:
                self.reset(f"no data from Companion for {t.dead_after:g} s (dead link)")
                return
            if proto.state.handshaking and now - started > t.begin_timeout:
                self.reset(f"Companion did not complete the handshake within {t.begin_timeout:g} s")
                return
            if proto.awaiting_device:
                if now - device_asked > device_wait:
                    log.info("ADD-DEVICE unanswered; asking again", extra={"wait_s": device_wait})
                    proto.retry_add_device()
                    device_asked = now
                    device_wait = min(device_wait * 2, t.backoff_max)
            else:
                device_asked = now
            proto.ping(str(next(self._ping_seq)))
            await self._flush()

    async def set_input(self, variable: str, value: str) -> Reply:
        """Set a transferable input. Remembered (and so sent again after a reconnect,
        as Companion resets inputs on registration) only once Companion said OK."""
        reply = await self.request(
            "SET-VARIABLE-VALUE", variable, lambda p: p.set_input(variable, value)
        )
        if reply.ok:
            self.inputs[variable] = value
        return reply
