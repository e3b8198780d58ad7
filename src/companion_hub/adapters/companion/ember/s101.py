"""S101: how Ember+ frames its messages on a TCP stream.

A frame starts with BOF (``0xFE``) and ends with EOF (``0xFF``). Between them, every
byte >= ``0xF8`` is escaped as CE (``0xFD``) followed by the byte XOR ``0x20``, so BOF
and EOF never occur inside. The unescaped frame is a header, a payload and a 16-bit
CRC: CRC-CCITT (reflected polynomial ``0x8408``, initial ``0xFFFF``) over header and
payload, inverted and appended little-endian; checking the CRC over the whole frame,
CRC included, gives ``0xF0B8``.

The header: slot ``0x00``, message type ``0x0E`` (EmBER), command (``0x00`` an EmBER
packet, ``0x01`` keep-alive request, ``0x02`` keep-alive response), version ``0x01``.
An EmBER packet continues with flags (``0xC0`` a whole message in one packet;
``0x80`` first, ``0x00`` middle and ``0x40`` last packet of a longer one; ``0x20`` an
empty packet), the DTD (``0x01``: Glow), the number of application bytes and those
bytes (2: the Glow DTD version, minor then major, e.g. ``0x1F 0x02``), then the BER
payload. Keep-alive frames end after the version byte.

:class:`S101Decoder` takes the stream in any chunking and returns whole messages;
what it buffers is bounded (a frame, a multi-packet message), so a stream of garbage
cannot grow memory; bad frames are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

BOF = 0xFE
EOF = 0xFF
CE = 0xFD
XOR = 0x20
INVALID = 0xF8  # bytes from here on are escaped

SLOT = 0x00
MSG_EMBER = 0x0E
CMD_EMBER = 0x00
CMD_KEEPALIVE_REQUEST = 0x01
CMD_KEEPALIVE_RESPONSE = 0x02
VERSION = 0x01

FLAG_SINGLE = 0xC0
FLAG_FIRST = 0x80
FLAG_LAST = 0x40
FLAG_EMPTY = 0x20
FLAG_MIDDLE = 0x00

DTD_GLOW = 0x01
GLOW_VERSION = (0x1F, 0x02)  # minor, major: Glow 2.31

MAX_FRAME = 128 * 1024  # unescaped bytes of one frame
MAX_MESSAGE = 4 * 1024 * 1024  # a message reassembled from packets
PACKET_PAYLOAD = 1024  # payload bytes per packet when encoding a long message
CRC_GOOD = 0xF0B8


class S101Error(ValueError):
    """A malformed frame (only :func:`parse_frame` raises it)."""


def _make_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-CCITT as S101 computes it (not inverted)."""
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b >= INVALID:
            out.append(CE)
            out.append(b ^ XOR)
        else:
            out.append(b)
    return bytes(out)


def frame(body: bytes) -> bytes:
    """BOF, the escaped body and its CRC, EOF."""
    crc = ~crc16(body) & 0xFFFF
    return bytes([BOF]) + escape(body + bytes([crc & 0xFF, crc >> 8])) + bytes([EOF])


def keepalive_request() -> bytes:
    return frame(bytes([SLOT, MSG_EMBER, CMD_KEEPALIVE_REQUEST, VERSION]))


def keepalive_response() -> bytes:
    return frame(bytes([SLOT, MSG_EMBER, CMD_KEEPALIVE_RESPONSE, VERSION]))


def _packet(flags: int, payload: bytes) -> bytes:
    header = bytes([SLOT, MSG_EMBER, CMD_EMBER, VERSION, flags, DTD_GLOW, 2, *GLOW_VERSION])
    return frame(header + payload)


def encode_ember(payload: bytes, packet_size: int = PACKET_PAYLOAD) -> bytes:
    """A Glow payload as one frame, or as first/middle/last packets when longer."""
    if len(payload) <= packet_size:
        return _packet(FLAG_SINGLE, payload)
    chunks = [payload[i : i + packet_size] for i in range(0, len(payload), packet_size)]
    out = [_packet(FLAG_FIRST, chunks[0])]
    out.extend(_packet(FLAG_MIDDLE, c) for c in chunks[1:-1])
    out.append(_packet(FLAG_LAST, chunks[-1]))
    return b"".join(out)


# --- decoding ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAliveRequest:
    pass


@dataclass(frozen=True, slots=True)
class KeepAliveResponse:
    pass


@dataclass(frozen=True, slots=True)
class EmberPacket:
    """One packet: ``flags`` tell where it belongs in a message."""

    flags: int
    dtd: int
    app_bytes: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class EmberMessage:
    """A whole Glow payload (a single packet, or the packets of a message joined)."""

    payload: bytes


Frame = KeepAliveRequest | KeepAliveResponse | EmberPacket
Message = KeepAliveRequest | KeepAliveResponse | EmberMessage


def parse_frame(body: bytes) -> Frame:
    """An unescaped frame body (between BOF and EOF, CRC included)."""
    if len(body) < 6:
        raise S101Error("frame too short")
    if crc16(body) != CRC_GOOD:
        raise S101Error("bad CRC")
    body = body[:-2]
    slot, msg, cmd, version = body[0], body[1], body[2], body[3]
    if slot != SLOT or msg != MSG_EMBER:
        raise S101Error(f"not an EmBER frame (slot {slot}, message {msg})")
    if version != VERSION:
        raise S101Error(f"unknown version {version}")
    if cmd == CMD_KEEPALIVE_REQUEST:
        return KeepAliveRequest()
    if cmd == CMD_KEEPALIVE_RESPONSE:
        return KeepAliveResponse()
    if cmd != CMD_EMBER:
        raise S101Error(f"unknown command {cmd}")
    if len(body) < 7:
        raise S101Error("EmBER header too short")
    flags, dtd, n_app = body[4], body[5], body[6]
    if len(body) < 7 + n_app:
        raise S101Error("application bytes truncated")
    return EmberPacket(flags, dtd, bytes(body[7 : 7 + n_app]), bytes(body[7 + n_app :]))


class S101Decoder:
    """Bytes in any chunking -> whole messages. Bad frames are dropped and counted."""

    def __init__(self, max_frame: int = MAX_FRAME, max_message: int = MAX_MESSAGE) -> None:
        self.max_frame = max_frame
        self.max_message = max_message
        self._frame = bytearray()
        self._in_frame = False
        self._escaped = False
        self._parts: list[bytes] | None = None  # a multi-packet message being joined
        self._parts_size = 0
        self.dropped: dict[str, int] = {}

    def _drop(self, kind: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1

    @property
    def buffered(self) -> int:
        """Bytes held: the current frame and the packets of an unfinished message."""
        return len(self._frame) + self._parts_size

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        pos, end = 0, len(data)
        while pos < end:
            if not self._in_frame:
                start = data.find(BOF, pos)
                if start < 0:
                    break  # garbage between frames is skipped
                self._in_frame = True
                self._escaped = False
                self._frame.clear()
                pos = start + 1
                continue
            b = data[pos]
            pos += 1
            if b == BOF:  # a new frame before this one ended: drop the truncated one
                self._drop("truncated")
                self._frame.clear()
                self._escaped = False
            elif b == EOF:
                self._in_frame = False
                if self._escaped:
                    self._drop("bad-escape")
                else:
                    self._complete(bytes(self._frame), out)
                self._frame.clear()
            elif b == CE:
                if self._escaped:
                    self._drop("bad-escape")
                    self._in_frame = False
                    self._frame.clear()
                else:
                    self._escaped = True
            else:
                if self._escaped:
                    b ^= XOR
                    self._escaped = False
                if len(self._frame) >= self.max_frame:
                    self._drop("too-long")
                    self._in_frame = False  # skip to the next BOF
                    self._frame.clear()
                else:
                    self._frame.append(b)
        return out

    def _complete(self, body: bytes, out: list[Message]) -> None:
        try:
            fr = parse_frame(body)
        except S101Error:
            self._drop("bad-frame")
            return
        if not isinstance(fr, EmberPacket):
            out.append(fr)
            return
        if fr.dtd != DTD_GLOW:
            self._drop("not-glow")
            return
        flags = fr.flags
        if flags & FLAG_EMPTY:
            return
        if flags & FLAG_SINGLE == FLAG_SINGLE:
            if self._parts is not None:
                self._drop("interrupted")
                self._reset_parts()
            out.append(EmberMessage(fr.payload))
            return
        if flags & FLAG_FIRST:
            if self._parts is not None:
                self._drop("interrupted")
            self._parts = []
            self._parts_size = 0
        elif self._parts is None:
            self._drop("orphan-packet")
            return
        if self._parts_size + len(fr.payload) > self.max_message:
            self._drop("message-too-long")
            self._reset_parts()
            return
        self._parts.append(fr.payload)
        self._parts_size += len(fr.payload)
        if flags & FLAG_LAST:
            out.append(EmberMessage(b"".join(self._parts)))
            self._reset_parts()

    def _reset_parts(self) -> None:
        self._parts = None
        self._parts_size = 0
