"""Frames that used to end a session with a traceback, the inclusive frame limit, and
binary frames: answered as the protocol says, the connection kept where it should be."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from .rawsocket import RawClient


async def hello(raw: RawClient, client: str = "t") -> None:
    raw.send({"op": "hello", "id": "h", "client": client})
    assert (await raw.recv())[0]["op"] == "welcome"


async def still_alive(raw: RawClient) -> None:
    raw.send({"op": "get", "id": "alive", "patterns": ["hub.info"]})
    for _ in range(10):
        for m in await raw.recv():
            if m.get("id") == "alive":
                assert m["ok"]
                return
    raise AssertionError("no answer")


async def first_answer(raw: RawClient) -> tuple[str, Any]:
    """('error', message) or ('close', code)."""
    while True:
        op, payload = await raw.recv_frame(timeout=10)
        if op == 8:
            return "close", int.from_bytes(payload[:2], "big")
        if op == 1:
            return "error", payload


@pytest.mark.parametrize(
    "frame",
    [
        b'{"op":"get","id":"x","patterns":["\xff\xfe"]}',  # invalid UTF-8
        b"\xed\xa0\x80",  # an encoded surrogate
        b"[" * 100_000 + b"]" * 100_000,  # nested far too deep
        b'{"op":"set","id":"x","key":"app.t.k","value":' + b"[" * 1000 + b"]" * 1000 + b"}",
    ],
    ids=["bad-utf8", "surrogate", "deep-array", "deep-value"],
)
async def test_hostile_frames_get_bad_request_and_no_traceback(
    hub: Any, frame: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawClient.connect("127.0.0.1", hub.port)
    await hello(raw)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        raw.send_frame(frame)
    kind, answer = await first_answer(raw)
    if kind == "close":
        assert answer == 1007  # allowed for invalid UTF-8 only
        assert b"[" not in frame[:1]
    else:
        assert b"BAD_REQUEST" in answer
        await still_alive(raw)
    raw.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    warnings = [r for r in caplog.records if "unusable frame" in r.getMessage()]
    assert len(warnings) <= 1  # once per connection


async def test_a_frame_of_exactly_the_limit_is_accepted(hub: Any) -> None:
    limit = hub.hub.limits.frame_bytes
    raw = await RawClient.connect("127.0.0.1", hub.port)
    await hello(raw)
    head = b'{"op":"publish","id":"big","key":"app.t.e","data":"'
    frame = head + b"x" * (limit - len(head) - 2) + b'"}'
    assert len(frame) == limit
    raw.send_frame(frame)
    kind, answer = await first_answer(raw)
    assert kind == "error" and b'"big"' in answer  # an answer (TOO_LARGE data), not 1009
    await still_alive(raw)
    raw.send_frame(frame + b" ")  # one byte more: closed with 1009
    assert await first_answer(raw) == ("close", 1009)
    raw.close()


async def test_a_binary_hello_is_refused(hub: Any) -> None:
    raw = await RawClient.connect("127.0.0.1", hub.port)
    raw.send_frame(b'{"op":"hello","id":"h","client":"bin"}', opcode=2)
    kind, answer = await first_answer(raw)
    assert kind == "error" and b"BAD_REQUEST" in answer and b"binary" in answer
    assert await first_answer(raw) == ("close", 1008)
    raw.close()
