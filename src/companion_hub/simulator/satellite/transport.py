"""The asyncio drivers of Satellite connections: TCP (port 16622) and WebSocket (16623).

Thin: a driver owns its socket, splits what it reads into lines for its
:class:`~.session.SatelliteSession`, writes what the session queues, runs the
session's timers and closes the connection after the transport's idle timeout:

- TCP: after ``idle_timeout`` seconds without traffic in either direction;
- WebSocket: when no client frame came for ``idle_timeout`` seconds, checked every
  ``ws_idle_check_interval`` seconds. One message per text frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from companion_hub.adapters.companion.codec import LineBuffer

from .outbox import Close
from .session import SatelliteSession, SessionState

if TYPE_CHECKING:
    from ..core import CompanionSimulator

log = logging.getLogger("companion_hub.simulator")

READ_CHUNK = 65536


class SatelliteConnection:
    """What both drivers share; the simulator holds one per live connection."""

    kind = "?"

    def __init__(self, sim: CompanionSimulator, conn_id: str) -> None:
        self.sim = sim
        self.id = conn_id
        self.session = SatelliteSession(sim, conn_id, self.kind, self)
        # Companion handles a complete line of any length: the cap is checked per chunk
        self._lines = LineBuffer(max_chars=sys.maxsize)
        self._output = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.Handle] = set()
        self.closed = asyncio.Event()
        self.last_activity = asyncio.get_running_loop().time()

    # --- for the session ----------------------------------------------------------

    def output_ready(self) -> None:
        self._output.set()

    def abort(self) -> None:
        """Close the socket at once (pending output is lost)."""
        raise NotImplementedError

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        timer: asyncio.Handle

        def run() -> None:
            self._timers.discard(timer)
            if not self.session.closing:
                callback()

        timer = loop.call_later(delay, run) if delay > 0 else loop.call_soon(run)
        self._timers.add(timer)

    # --- for the simulator --------------------------------------------------------

    def close(self, *, flush: bool) -> None:
        """Close the connection; with ``flush`` after the queued messages are written."""
        self.session.close(flush=flush)

    def send_raw(self, data: bytes) -> None:
        """Queue raw bytes (fault injection), in order with the messages."""
        self.session.send(data)

    def restart_idle_timer(self) -> None:
        """Count now as activity (the end of a stall: idle time starts over)."""
        self.last_activity = asyncio.get_running_loop().time()

    async def serve(self, silent: bool) -> None:
        """Run the connection until it closes; then flush (if asked) and clean up.

        ``silent``: no ``BEGIN``, no idle timeout, and what is received is ignored.
        """
        writer = self._spawn(self._write_loop())
        if not silent:
            self.session.hello()
            self._spawn(self._idle_watchdog())
        try:
            await self._read_loop(silent)
        finally:
            if self.session.state is SessionState.DRAINING and not writer.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(writer), 2.0)
            self._cancel_all()
            self.session.connection_lost()
            self.abort()
            self.closed.set()

    # --- shared machinery ---------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        outbox = self.session.outbox
        while True:
            while not outbox:
                self._output.clear()
                await self._output.wait()
            await self.sim._wait_unstalled()
            message = outbox.take()
            if message is None:
                continue
            if isinstance(message, Close):
                self.abort()
                return
            try:
                if isinstance(message, bytes):
                    await self._write_raw(message)
                else:
                    await self._write(message)
            except (ConnectionError, OSError, RuntimeError) as exc:
                log.debug(
                    "satellite write failed",
                    extra={"conn": self.id, "transport": self.kind, "error": str(exc)},
                )
                self.abort()
                return
            self.last_activity = loop.time()

    async def _feed(self, data: bytes | str) -> None:
        """Handle a received chunk: every complete line, then the line cap."""
        session = self.session
        for line in self._lines.feed(data):
            if session.closing:
                return
            if self.sim.reply_delay > 0:
                await asyncio.sleep(self.sim.reply_delay)
                if session.closing:
                    return
            session.receive_line(line)
        if self._lines.pending > self.sim.max_line_chars:
            chars = self._lines.pending
            self._lines = LineBuffer(max_chars=sys.maxsize)
            session.line_too_long(chars)

    # --- per transport ------------------------------------------------------------

    async def _write(self, line: str) -> None:
        raise NotImplementedError

    async def _write_raw(self, data: bytes) -> None:
        raise NotImplementedError

    async def _read_loop(self, silent: bool) -> None:
        raise NotImplementedError

    async def _idle_watchdog(self) -> None:
        raise NotImplementedError

    def _idle_timeout(self) -> None:
        log.info(
            "satellite idle timeout",
            extra={"conn": self.id, "transport": self.kind, "timeout": self.sim.idle_timeout},
        )
        self.close(flush=False)


class TcpSatelliteConnection(SatelliteConnection):
    """TCP: idle after ``idle_timeout`` s without traffic in either direction."""

    kind = "tcp"

    def __init__(
        self,
        sim: CompanionSimulator,
        conn_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__(sim, conn_id)
        self.reader = reader
        self.writer = writer

    async def _write(self, line: str) -> None:
        await self._write_raw(line.encode("utf-8"))

    async def _write_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def _read_loop(self, silent: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.session.closing:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                if silent:
                    continue
                await self.sim._wait_unstalled()
                self.last_activity = loop.time()
                await self._feed(data)
        except (ConnectionError, OSError):
            pass

    async def _idle_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = self.last_activity + self.sim.idle_timeout - loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if self.sim.stalled:
                self.last_activity = loop.time()
                continue
            self._idle_timeout()
            return


class WsSatelliteConnection(SatelliteConnection):
    """WebSocket: idle when no client frame came for ``idle_timeout`` s, checked every
    ``ws_idle_check_interval`` s (frames sent do not count)."""

    kind = "ws"

    def __init__(
        self, sim: CompanionSimulator, conn_id: str, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        super().__init__(sim, conn_id)
        self.ws = ws
        self.request = request
        self.last_frame = self.last_activity  # the last frame received

    def restart_idle_timer(self) -> None:
        super().restart_idle_timer()
        self.last_frame = self.last_activity

    async def _write(self, line: str) -> None:
        await self.ws.send_str(line)

    async def _write_raw(self, data: bytes) -> None:
        try:
            await self.ws.send_str(data.decode("utf-8"))
        except UnicodeDecodeError:
            await self.ws.send_bytes(data)

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    async def _read_loop(self, silent: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.session.closing:
                msg = await self.ws.receive()
                if msg.type == WSMsgType.TEXT:
                    data: bytes | str = msg.data
                elif msg.type == WSMsgType.BINARY:
                    data = msg.data
                else:
                    break
                if silent:
                    continue
                await self.sim._wait_unstalled()
                self.last_frame = self.last_activity = loop.time()
                await self._feed(data)
        except (ConnectionError, OSError, RuntimeError):
            pass

    async def _idle_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sim.ws_idle_check_interval)
            if self.sim.stalled:
                self.last_frame = loop.time()
                continue
            if loop.time() - self.last_frame > self.sim.idle_timeout:
                self._idle_timeout()
                return
