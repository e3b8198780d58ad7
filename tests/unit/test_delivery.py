"""The per-connection coalescing delivery queue."""

from __future__ import annotations

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from companion_hub.core.delivery import DeliveryQueue, Delta


def dropped(n: int) -> bytes:
    return b"dropped:%d" % n


def drain(q: DeliveryQueue, max_bytes: int = 1 << 30) -> list[bytes]:
    out: list[bytes] = []
    while batch := q.take(max_bytes, dropped):
        out.extend(batch)
    return out


def d(rev: int, key: str) -> Delta:
    return Delta(rev, msgspec.json.encode({"key": key, "rev": rev}))


def test_coalesces_and_moves_to_newest_place() -> None:
    q = DeliveryQueue()
    q.push_delta("a", d(1, "a"))
    q.push_delta("b", d(2, "b"))
    q.push_delta("a", d(3, "a"))
    assert len(q) == 2
    got = [msgspec.json.decode(m) for m in drain(q)]
    assert got == [{"key": "b", "rev": 2}, {"key": "a", "rev": 3}]
    assert q.last_rev == 3


def test_deltas_notify_only_when_the_queue_becomes_non_empty() -> None:
    calls = []
    q = DeliveryQueue(notify=lambda: calls.append(1))
    q.push_delta("a", d(1, "a"))
    q.push_delta("b", d(2, "b"))
    assert calls == [1]
    q.push_control(b"r")  # a reply always wakes the writer (the window may be closed)
    assert calls == [1, 1]
    drain(q)
    q.push_delta("c", d(3, "c"))
    assert calls == [1, 1, 1]


def test_replies_first_and_alone_when_the_window_is_closed() -> None:
    q = DeliveryQueue()
    q.push_delta("a", d(1, "a"))
    q.push_control(b"SNAP", barrier_rev=1)
    q.push_event(b"ev")
    q.push_control(b"result")
    assert q.take(1 << 20, dropped, stream=False) == [b"result"]
    assert q.control_bytes == 0
    assert q.take(1 << 20, dropped, stream=False) == []
    rest = drain(q)
    assert rest[1:] == [b"SNAP", b"ev"] and msgspec.json.decode(rest[0])["rev"] == 1


def test_barrier_seals_pending_deltas_before_it() -> None:
    q = DeliveryQueue()
    q.push_delta("a", d(1, "a"))
    q.push_control(b"SNAP", barrier_rev=5)
    q.push_delta("a", d(6, "a"))  # newer change after the barrier does not jump ahead
    out = drain(q)
    assert out[1] == b"SNAP"
    assert msgspec.json.decode(out[0])["rev"] == 1
    assert msgspec.json.decode(out[2])["rev"] == 6
    assert q.last_rev == 6


def test_lazy_chunks_are_pulled_on_demand() -> None:
    pulled = []

    def chunks():
        for i in range(3):
            pulled.append(i)
            yield b"c%d" % i

    q = DeliveryQueue()
    q.push_lazy(chunks(), rev=9)
    assert pulled == []
    first = q.take(1, dropped)
    assert first == [b"c0"] and pulled == [0]
    assert drain(q) == [b"c1", b"c2"]
    assert q.last_rev == 9


def test_events_drop_oldest_and_report() -> None:
    q = DeliveryQueue(event_limit=3)
    for i in range(10):
        q.push_event(b"e%d" % i)
    assert drain(q) == [b"dropped:7", b"e7", b"e8", b"e9"]
    q.push_event(b"e10")
    assert drain(q) == [b"e10"]


def test_take_respects_byte_budget() -> None:
    q = DeliveryQueue()
    for i in range(100):
        q.push_delta(f"k{i}", Delta(i + 1, b"x" * 100))
    first = q.take(1000, dropped)
    assert 10 <= len(first) <= 11
    assert len(drain(q)) == 100 - len(first)


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3)), max_size=200))
def test_bounded_by_keys_and_increasing(ops: list[tuple[int, int]]) -> None:
    """Any interleaving of pushes and partial takes: at most one pending delta per key,
    revisions strictly increasing on the wire, and the last value of each key wins."""
    q = DeliveryQueue()
    rev = 0
    seen: list[tuple[str, int]] = []
    latest: dict[str, int] = {}
    for key_n, action in ops:
        if action == 0:
            for m in q.take(60, dropped):
                obj = msgspec.json.decode(m)
                seen.append((obj["key"], obj["rev"]))
        else:
            rev += 1
            key = f"k{key_n}"
            q.push_delta(key, d(rev, key))
            latest[key] = rev
        assert len(q.pending) <= 21
    for m in drain(q):
        obj = msgspec.json.decode(m)
        seen.append((obj["key"], obj["rev"]))
    revs = [r for _, r in seen]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    final: dict[str, int] = {}
    for k, r in seen:
        final[k] = r
    assert final == latest


@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 4), st.integers(0, 600)), max_size=150))
def test_push_to_many_is_push_to_each(ops: list[tuple[int, int, int]]) -> None:
    """The fan-out's ``push_delta_to`` (one call for every subscriber) leaves each queue,
    its notifications and its counters exactly as ``push_delta`` on each would, and
    skips the queues whose reader refuses the key; takes of any size in between."""
    no_b = lambda key: not key.startswith("b")  # noqa: E731 - a role's read check
    readers = [None, None, no_b, no_b, None]
    calls_a: list[int] = []
    calls_b: list[int] = []
    a = [DeliveryQueue(notify=lambda i=i: calls_a.append(i)) for i in range(5)]
    b = [DeliveryQueue(notify=lambda i=i: calls_b.append(i)) for i in range(5)]
    for q, r in zip(a + b, readers + readers, strict=True):
        q.may_read = r
    out_a: list[list[bytes]] = [[] for _ in a]
    out_b: list[list[bytes]] = [[] for _ in b]
    rev = 0
    for key_n, action, budget in ops:
        if action == 0:  # one queue takes a frame
            i = key_n % 5
            out_a[i] += a[i].take(budget, dropped)
            out_b[i] += b[i].take(budget, dropped)
            continue
        rev += 1
        key = ("a", "b")[action % 2] + str(key_n)
        delta = d(rev, key)
        n = DeliveryQueue.push_delta_to(a, key, delta)
        expected = 0
        for q in b:
            if q.may_read is None or q.may_read(key):
                q.push_delta(key, delta)
                expected += 1
        assert n == expected
    for i in range(5):
        out_a[i] += drain(a[i])
        out_b[i] += drain(b[i])
    assert out_a == out_b
    assert calls_a == calls_b
    assert [q.coalesced for q in a] == [q.coalesced for q in b]
    assert [q.deltas_sent for q in a] == [q.deltas_sent for q in b]


@example([100] * 20, [1850])  # the whole run would about fit, but does not
@example([100] * 20, [2000])  # exactly the budget
@example([50] * 17 + [2000], [1000, 3000])  # a large one at the end
@given(
    st.lists(st.integers(1, 400), min_size=1, max_size=300),
    st.lists(st.integers(1, 20_000), min_size=1, max_size=40),
)
def test_take_cuts_runs_as_one_by_one(sizes: list[int], budgets: list[int]) -> None:
    """Runs of any length and sizes, taken with any budgets (the whole-run shortcut
    and the one-by-one path alike): each take is the longest prefix whose size before
    its last message is under the budget, i.e. up to and including the message that
    reaches it; nothing lost, nothing repeated, in order."""
    q = DeliveryQueue()
    msgs = [b"x" * s for s in sizes]
    for i, m in enumerate(msgs):
        q.push_delta(f"k{i}", Delta(i + 1, m))
    got: list[bytes] = []
    rest = list(msgs)
    i = 0
    while rest:
        budget = budgets[i % len(budgets)]
        i += 1
        taken = q.take(budget, dropped)
        expect, size = [], 0
        for m in rest:
            if size >= budget:
                break
            expect.append(m)
            size += len(m)
        assert taken == expect
        got += taken
        rest = rest[len(taken) :]
    assert got == msgs and q.take(1 << 20, dropped) == []
    assert q.last_rev == len(msgs)
