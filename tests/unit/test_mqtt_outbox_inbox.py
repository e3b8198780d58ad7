"""The bridge's coalescing outbox (dirty keys) and inbox (an asyncio.Queue subclass)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from companion_hub.adapters.mqtt.inbox import Inbox, Refused, inbox_type
from companion_hub.adapters.mqtt.outbox import Outbox

# --- outbox ----------------------------------------------------------------------------------


def test_outbox_coalesces_one_key() -> None:
    box = Outbox()
    for _ in range(100):
        box.mark("a.b")
    assert len(box) == 1
    assert "a.b" in box
    assert box.marked == 100
    assert box.coalesced == 99
    assert box.take(10) == ["a.b"]
    assert len(box) == 0 and "a.b" not in box


def test_outbox_keeps_order_of_first_mark() -> None:
    box = Outbox()
    for k in ["x", "y", "x", "z", "y", "x"]:
        box.mark(k)
    assert box.coalesced == 3
    assert box.take(100) == ["x", "y", "z"]


def test_outbox_take_partial_then_rest() -> None:
    box = Outbox()
    for k in ["k1", "k2", "k3", "k4", "k5"]:
        box.mark(k)
    assert box.take(2) == ["k1", "k2"]
    assert len(box) == 3 and "k1" not in box and "k3" in box
    box.mark("k1")  # clean again: dirty anew, at the back, not coalesced
    assert box.coalesced == 0
    assert box.take(3) == ["k3", "k4", "k5"]
    assert box.take(3) == ["k1"]
    assert box.take(3) == []


def test_outbox_take_zero_and_exact() -> None:
    box = Outbox()
    box.mark("a")
    box.mark("b")
    assert box.take(0) == []
    assert len(box) == 2
    assert box.take(2) == ["a", "b"]
    assert len(box) == 0


def test_outbox_mark_all_not_counted() -> None:
    box = Outbox()
    box.mark("b")
    box.mark_all(["a", "b", "c"])
    assert box.marked == 1
    assert box.coalesced == 0
    assert box.take(10) == ["b", "a", "c"]
    box.mark_all(k for k in ["p", "q"])  # any iterable
    assert box.take(10) == ["p", "q"]


# --- inbox ----------------------------------------------------------------------------------


@dataclass
class Msg:
    topic: str
    payload: bytes = b""


def is_command(topic: str) -> bool:
    return topic.startswith("ch/command/")


def cmd(n: int) -> Msg:
    return Msg(f"ch/command/app.x/go/{n}", str(n).encode())


def make(max_commands: int = 3) -> Inbox:
    cls = inbox_type(is_command, max_commands)
    q = cls()
    assert isinstance(q, asyncio.Queue) and isinstance(q, Inbox)
    return q


def drain(q: Inbox) -> list[object]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_inbox_type_is_configured_subclass() -> None:
    cls = inbox_type(is_command, 7)
    assert issubclass(cls, Inbox) and issubclass(cls, asyncio.Queue)
    assert cls.max_commands == 7
    assert cls.is_command("ch/command/a/b") and not cls.is_command("dev/x")
    q = cls()
    assert cls.latest is q
    other = inbox_type(is_command, 1)
    assert other.max_commands == 1 and cls.max_commands == 7


def test_inbox_state_coalesces_newest_wins() -> None:
    q = make()
    first = Msg("dev/a", b"1")
    q.put_nowait(first)
    q.put_nowait(Msg("dev/b", b"x"))
    newest = Msg("dev/a", b"3")
    q.put_nowait(Msg("dev/a", b"2"))
    q.put_nowait(newest)
    assert q.coalesced == 2
    assert q.qsize() == 2
    out = drain(q)
    assert [m.topic for m in out] == ["dev/b", "dev/a"]  # order of last arrival
    assert out[1] is newest
    assert q.qsize() == 0 and q.empty()


def test_inbox_commands_fifo_and_before_state() -> None:
    q = make(max_commands=10)
    q.put_nowait(Msg("dev/a"))
    c = [cmd(i) for i in range(5)]
    for m in c:
        q.put_nowait(m)
    q.put_nowait(Msg("dev/b"))
    assert q.coalesced == 0 and q.dropped == 0
    assert q.qsize() == 7
    out = drain(q)
    assert out[:5] == c
    assert [m.topic for m in out[5:]] == ["dev/a", "dev/b"]


def test_inbox_commands_never_coalesce() -> None:
    q = make(max_commands=10)
    same = [Msg("ch/command/app.x/go"), Msg("ch/command/app.x/go")]
    for m in same:
        q.put_nowait(m)
    assert q.qsize() == 2 and q.coalesced == 0
    out = drain(q)
    assert out[0] is same[0] and out[1] is same[1]


def test_inbox_refuses_beyond_max_commands_and_drops_beyond_twice() -> None:
    q = make(max_commands=2)
    q.put_nowait(Msg("dev/a"))
    c = [cmd(i) for i in range(7)]
    for m in c:
        q.put_nowait(m)
    assert q.dropped == 3  # c[4:]: beyond 2 waiting and 2 refused
    assert q.qsize() == 5  # 2 commands, 2 refused, 1 state
    out = drain(q)
    assert len(out) == 5
    assert isinstance(out[0], Refused) and out[0].message is c[2]
    assert isinstance(out[1], Refused) and out[1].message is c[3]
    assert out[0].topic == c[2].topic
    assert out[2] is c[0] and out[3] is c[1]
    assert not isinstance(out[4], Refused) and out[4].topic == "dev/a"


def test_inbox_refused_come_first_even_after_commands() -> None:
    q = make(max_commands=1)
    a, b = cmd(1), cmd(2)
    q.put_nowait(a)
    q.put_nowait(b)
    first = q.get_nowait()
    assert isinstance(first, Refused) and first.message is b
    assert q.get_nowait() is a
    # room again: the next command is accepted
    c = cmd(3)
    q.put_nowait(c)
    assert q.get_nowait() is c
    assert q.dropped == 0


def test_inbox_get_nowait_empty_raises() -> None:
    q = make()
    assert q.empty() and q.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


async def test_inbox_get_wakes_on_put() -> None:
    q = make()
    task = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done()
    m = Msg("dev/a", b"1")
    await q.put(m)
    assert await asyncio.wait_for(task, 1) is m
    assert q.empty()


async def test_inbox_get_wakes_on_command_put() -> None:
    q = make(max_commands=1)
    task = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    c = cmd(1)
    q.put_nowait(c)
    assert await asyncio.wait_for(task, 1) is c
