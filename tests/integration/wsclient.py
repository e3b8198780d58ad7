"""Small protocol-level test clients (no SDK): one on aiohttp, one on raw sockets.

The raw client exists for what a well-behaved library will not do: stop reading
(so the hub sees TCP back-pressure), ignore pings, send oversize frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

Msg = dict[str, Any]


def flatten(data: bytes | str) -> list[Msg]:
    obj = msgspec.json.decode(data)
    return obj if isinstance(obj, list) else [obj]


class Client:
    """A protocol v1 client on aiohttp that keeps unclaimed messages in an inbox."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.inbox: deque[Msg] = deque()
        self.welcome: Msg = {}
        self._ids = 0

    @classmethod
    async def connect(cls, url: str, client: str | None = "tester", **hello: Any) -> Client:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
        c = cls(http, ws)
        if client is not None:
            c.welcome = await c.request({"op": "hello", "client": client, **hello})
            assert c.welcome["op"] == "welcome", c.welcome
        return c

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    async def send(self, msg: Msg | list[Msg] | bytes | str) -> None:
        if isinstance(msg, bytes):
            await self.ws.send_bytes(msg)
        elif isinstance(msg, str):
            await self.ws.send_str(msg)
        else:
            await self.ws.send_str(msgspec.json.encode(msg).decode())

    async def _pull(self, timeout: float) -> None:
        # not receive(timeout=...): aiohttp restarts that timeout after every ping
        async with asyncio.timeout(timeout):
            m = await self.ws.receive()
        if m.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            self.inbox.extend(flatten(m.data))
        else:
            raise ConnectionError(f"connection ended: {m.type} {self.ws.close_code}")

    async def next(self, pred: Callable[[Msg], bool] = lambda m: True, timeout: float = 5) -> Msg:
        """The first message (inbox first) satisfying ``pred``; others stay queued."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        scanned = 0
        while True:
            for i in range(scanned, len(self.inbox)):
                if pred(self.inbox[i]):
                    m = self.inbox[i]
                    del self.inbox[i]
                    return m
            scanned = len(self.inbox)
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no matching message; inbox: {list(self.inbox)[:5]}")
            await self._pull(left)

    def new_id(self) -> str:
        self._ids += 1
        return f"r{self._ids}"

    async def request(self, msg: Msg, timeout: float = 5) -> Msg:
        rid = msg.setdefault("id", self.new_id())
        await self.send(msg)
        return await self.next(lambda m: m.get("id") == rid and m["op"] != "command", timeout)

    async def ok(self, msg: Msg, timeout: float = 5) -> Any:
        r = await self.request(msg, timeout)
        assert r["op"] == "result" and r["ok"], r
        return r["result"]

    async def subscribe(
        self, *patterns: str, sub: str = "s", **extra: Any
    ) -> tuple[int, list[Msg]]:
        """Subscribe and collect the whole snapshot: (rev, entries)."""
        rid = self.new_id()
        await self.send(
            {"op": "subscribe", "id": rid, "sub": sub, "patterns": list(patterns), **extra}
        )
        entries: list[Msg] = []
        while True:
            m = await self.next(lambda m: m.get("id") == rid)
            assert m["op"] == "snapshot", m
            entries.extend(m["entries"])
            if m["done"]:
                return m["rev"], entries

    async def closed_code(self, timeout: float = 5) -> int | None:
        """Wait for the hub to close the connection; return the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with asyncio.timeout(max(0.01, deadline - loop.time())):
                m = await self.ws.receive()
            if m.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                return self.ws.close_code
            if m.type in (aiohttp.WSMsgType.TEXT,):
                self.inbox.extend(flatten(m.data))


class RawClient:
    """A bare RFC 6455 client over asyncio streams that does only what it is told."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer_pings: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.answer_pings = answer_pings

    @classmethod
    async def connect(
        cls, host: str, port: int, limit: int = 2**16, *, answer_pings: bool = True
    ) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in status.split(b"\r\n")[0], status
        return cls(reader, writer, answer_pings)

    def send_frame(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = (
            bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if n < 4096
            else _mask(payload, mask)
        )
        self.writer.write(head + mask + masked)

    def send(self, msg: Any) -> None:
        self.send_frame(msgspec.json.encode(msg))

    async def recv_frame(self, timeout: float = 5) -> tuple[int, bytes]:
        """The next frame as (opcode, payload); pings are answered if ``answer_pings``."""
        async with asyncio.timeout(timeout):
            b1, b2 = await self.reader.readexactly(2)
            n = b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b1 & 0x0F, await self.reader.readexactly(n)

    async def recv(self, timeout: float = 5) -> list[Msg]:
        """Messages of the next text frame (control frames are skipped)."""
        while True:
            op, payload = await self.recv_frame(timeout)
            if op == 1:
                return flatten(payload)
            if op == 8:
                raise ConnectionError(f"closed: {payload[:2].hex()}")
            if op == 9 and self.answer_pings:
                self.send_frame(payload, opcode=10)

    def close(self) -> None:
        self.writer.close()


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
