"""The asyncio driver of one client connection: moves a WebSocket's frames and time
to and from a sans-I/O :class:`~companion_hub.protocol.session.HubSession`, which
holds every protocol rule.

Two tasks per connection. The *reader* (the aiohttp handler itself) feeds frames to
the session and runs :meth:`HubSession.process`, waiting where the session says to
hold the client (the event log is behind, or its replies pile up unread). The
*writer* sends the session's frames and window pings whenever the socket takes
more, and carries out a close the session decided. A client that stops reading
therefore only lets its own queue coalesce; it never slows the hub or other
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from ..core.errors import HubError
from ..core.limits import HELLO_TIMEOUT_S
from ..hub import Hub, now_ms
from ..protocol.session import Hold, HubSession, SessionSettings, SessionState
from ..supervisor import cancel_and_wait

log = logging.getLogger("companion_hub.session")


def session_settings(hub: Hub) -> SessionSettings:
    c = hub.config
    return SessionSettings(
        heartbeat_ms=c.heartbeat_ms,
        window_bytes=c.delivery_window_bytes,
        frame_target_bytes=c.frame_target_bytes,
        snapshot_chunk_bytes=c.snapshot_chunk_bytes,
    )


class Connection:
    """One WebSocket carrying one :class:`HubSession`."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, address: str) -> None:
        self.hub = hub
        self.ws = ws
        self._wake = asyncio.Event()  # the session has something to send (or to close)
        self._room = asyncio.Event()  # a held reader may go on
        self._room.set()
        self.session = HubSession(
            hub,
            session_settings(hub),
            address,
            now=time.monotonic(),
            now_ms=now_ms(),
            on_output=self._wake.set,
            on_delta=functools.partial(hub.wake_at_flush_tick, self._wake),
        )
        self.session.connection = self
        self._writer_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        s = self.session
        self._writer_task = asyncio.create_task(self._writer(), name=f"writer-{s.session_id}")
        try:
            if await self._await_hello():
                await self._process()
                await self._read_loop()
        finally:
            s.connection_lost(self.ws.close_code)
            await self._drain_close()
            await cancel_and_wait(self._writer_task)
            if not self.ws.closed:
                await self.ws.close()

    async def _await_hello(self) -> bool:
        """Feed the first data frame (answering pings meanwhile); False when the
        session was refused or the connection ended first."""
        s = self.session
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                while True:
                    msg = await self.ws.receive()
                    if msg.type is WSMsgType.TEXT:
                        s.receive_text(msg.data)
                        break
                    if msg.type is WSMsgType.BINARY:
                        s.receive_binary()
                        break
                    if msg.type is WSMsgType.PING:
                        with contextlib.suppress(ConnectionError):
                            await self.ws.pong(msg.data)
                    elif msg.type is not WSMsgType.PONG:
                        return False
        except TimeoutError:
            s.hello_timed_out()
        return s.state in (SessionState.OPEN, SessionState.AUTHENTICATING)

    async def _read_loop(self) -> None:
        ws = self.ws
        s = self.session
        while s.open:
            msg = await ws.receive()
            t = msg.type
            if t is WSMsgType.TEXT:
                s.receive_text(msg.data)
                await self._process()
            elif t is WSMsgType.PONG:
                s.receive_pong(msg.data)
            elif t is WSMsgType.PING:
                with contextlib.suppress(ConnectionError):
                    await ws.pong(msg.data)
            elif t is WSMsgType.BINARY:
                s.receive_binary()
            elif t is WSMsgType.ERROR:
                log.info("connection error", extra={"client": s.client, "error": str(msg.data)})
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    async def _process(self) -> None:
        """Handle what the session has taken in, waiting wherever it holds."""
        s = self.session
        while (hold := s.process(time.monotonic())) is not None:
            if hold is Hold.AUTHENTICATING:
                await self._authenticate()
            elif hold is Hold.LOG_BEHIND:
                await self.hub.wait_log_room()
            else:
                self._room.clear()
                if s.has_room():
                    self._room.set()
                await self._room.wait()

    async def _authenticate(self) -> None:
        """Check the hello's token off the session (a slow KDF runs in a thread)."""
        s = self.session
        assert s.auth_request is not None
        client, token = s.auth_request
        try:
            identity = await self.hub.access.authenticate(client, token, s.address)
        except HubError as err:
            s.auth_failed(err)
        else:
            s.authenticated(identity)

    async def _writer(self) -> None:
        s = self.session
        ws = self.ws
        wake = self._wake
        try:
            while True:
                for ping in s.pings():
                    await ws.ping(ping)
                if s.close_request is not None:
                    await self._drain_close()
                    return
                frame = s.next_frame()
                if not self._room.is_set() and s.has_room():
                    self._room.set()  # the reader may take requests again
                if frame is None:
                    wake.clear()
                    if s.close_request is None:
                        # deltas that find the queue empty wake this at the hub's next
                        # flush tick (Hub.wake_at_flush_tick); replies at once
                        await wake.wait()
                    continue
                await ws.send_frame(frame, WSMsgType.TEXT)
                window_ping = s.frame_sent(len(frame), now_ms())
                if window_ping is not None:
                    await ws.ping(window_ping)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, RuntimeError) as exc:
            log.info("write failed", extra={"client": s.client, "error": repr(exc)})
            self._room.set()
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY)
        except Exception as exc:
            # a bug, not the network: say so once with the traceback, end this session
            # (the client reconnects and resumes) rather than leave it without a writer
            log.error(
                "connection writer failed; closing the connection",
                exc_info=exc,
                extra={"client": s.client, "session": s.session_id},
            )
            self._room.set()
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")

    async def _drain_close(self) -> None:
        """Carry out a close the session decided: its final frames, then the close."""
        s = self.session
        req = s.close_request
        if req is None or self.ws.closed:
            return
        frames, s.final_frames = s.final_frames, []
        with contextlib.suppress(Exception):
            for frame in frames:
                await self.ws.send_frame(frame, WSMsgType.TEXT)
            await self.ws.close(code=req.code, message=req.reason.encode()[:123])
        self._room.set()


async def serve_connection(hub: Hub, ws: web.WebSocketResponse, address: str) -> None:
    await Connection(hub, ws, address).run()
