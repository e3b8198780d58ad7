"""A bare RFC 6455 client over asyncio streams, for what a WebSocket library will not do.

The protocol client of the tests is the SDK's :func:`companion_hub.client.connect_raw`
(:class:`~companion_hub.client.RawConnection`): it sends and receives any protocol
message, malformed ones included. Under it, though, aiohttp reads the socket on its
own (into its buffer) and handles the control frames itself. The tests of the hub's
defences need a client that misbehaves at the socket level, so :class:`RawClient`
writes and reads frames itself:

- it stops reading, so the hub sees TCP back-pressure (a paused or slow subscriber,
  with a small ``limit`` for its buffer);
- it leaves pings unanswered (``answer_pings=False``), or answers only the ones the
  test chooses (RFC 6455 lets a peer answer only the latest);
- it sends any frame it is given: oversize ones, pings and pongs of its own.

It is a socket tool, not a protocol client: it knows nothing of ``hello``, requests or
replies.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import msgspec

Msg = dict[str, Any]


def flatten(data: bytes | str) -> list[Msg]:
    """The messages of one text frame (a batch is several)."""
    obj = msgspec.json.decode(data)
    return obj if isinstance(obj, list) else [obj]


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
