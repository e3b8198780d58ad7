"""S101 framing: escaping, CRC, keep-alives, multi-packet messages, garbage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.ember import s101
from tests.fuzzing import fuzz_settings


def test_keepalive_frames_are_the_well_known_bytes() -> None:
    assert s101.keepalive_request() == bytes.fromhex("fe000e010194e4ff")
    dec = s101.S101Decoder()
    assert dec.feed(s101.keepalive_request() + s101.keepalive_response()) == [
        s101.KeepAliveRequest(),
        s101.KeepAliveResponse(),
    ]


def test_crc_check_value() -> None:
    body = bytes([0, 0x0E, 1, 1])
    crc = ~s101.crc16(body) & 0xFFFF
    assert s101.crc16(body + bytes([crc & 0xFF, crc >> 8])) == s101.CRC_GOOD


def test_header_and_escaping() -> None:
    frame = s101.encode_ember(b"\xf8\xfd\xfe\xff\x01")
    assert frame[0] == s101.BOF and frame[-1] == s101.EOF
    inner = frame[1:-1]
    assert s101.BOF not in inner and s101.EOF not in inner
    assert inner.startswith(bytes([0, 0x0E, 0, 1, 0xC0, 1, 2, 0x1F, 2]))
    assert bytes([0xFD, 0xD8, 0xFD, 0xDD, 0xFD, 0xDE, 0xFD, 0xDF, 0x01]) in inner
    assert s101.S101Decoder().feed(frame) == [s101.EmberMessage(b"\xf8\xfd\xfe\xff\x01")]


@given(st.binary(max_size=5000), st.integers(1, 64))
def test_round_trip_any_chunking(payload: bytes, chunk: int) -> None:
    data = s101.encode_ember(payload, packet_size=700)
    dec = s101.S101Decoder()
    out = []
    for i in range(0, len(data), chunk):
        out.extend(dec.feed(data[i : i + chunk]))
    assert out == [s101.EmberMessage(payload)]


def test_multi_packet_flags() -> None:
    data = s101.encode_ember(b"a" * 2500, packet_size=1000)
    frames = [f for f in data.split(bytes([s101.EOF])) if f]
    flags = [s101.parse_frame(f[1:]).flags for f in frames]  # type: ignore[union-attr]
    assert flags == [0x80, 0x00, 0x40]


def test_bad_crc_dropped_and_counted() -> None:
    frame = bytearray(s101.encode_ember(b"\x01\x02"))
    frame[-2] ^= 0x01
    dec = s101.S101Decoder()
    assert dec.feed(bytes(frame) + s101.keepalive_request()) == [s101.KeepAliveRequest()]
    assert dec.dropped == {"bad-frame": 1}


def test_orphan_and_empty_packets() -> None:
    dec = s101.S101Decoder()
    middle = s101._packet(s101.FLAG_LAST, b"x")
    empty = s101._packet(s101.FLAG_SINGLE | s101.FLAG_EMPTY, b"")
    assert dec.feed(middle + empty) == []
    assert dec.dropped == {"orphan-packet": 1}


def test_garbage_does_not_grow_memory() -> None:
    dec = s101.S101Decoder(max_frame=1000, max_message=5000)
    dec.feed(b"\xfe" + b"\x01" * 100_000)  # a frame that never ends
    assert dec.buffered <= 1000
    first = s101._packet(s101.FLAG_FIRST, b"x" * 900)
    middle = s101._packet(s101.FLAG_MIDDLE, b"x" * 900)
    dec.feed(first + middle * 20)
    assert dec.buffered <= 5000
    assert dec.dropped["too-long"] == 1 and dec.dropped["message-too-long"] >= 1
    assert dec.feed(s101.keepalive_request()) == [s101.KeepAliveRequest()]


@fuzz_settings
@given(st.binary(max_size=2000))
def test_garbage_never_raises(data: bytes) -> None:
    dec = s101.S101Decoder(max_frame=500, max_message=2000)
    dec.feed(data)
    assert dec.buffered <= 2500
