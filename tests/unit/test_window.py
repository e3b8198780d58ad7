"""The delivery window: confirms only what the client read, and never stalls.

The property test runs a sender with a backlog against a simulated RFC 6455 peer
that reads with arbitrary pauses and answers pings in any legal pattern (each one;
only the latest of several; late; twice; unsolicited; not at all for a while), with
aiohttp's empty heartbeat pings interleaved and window pings dropped from a short
list. Whatever happened, once the peer reads steadily it receives the whole backlog,
the window never confirms bytes the peer has not read, and never has more than the
window plus one frame unconfirmed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.core.window import (
    MAX_PING_PAYLOAD,
    MAX_PROBE_CREDIT,
    DeliveryWindow,
    PongOutcome,
)
from tests.fuzzing import fuzz_settings

HEARTBEAT = b""  # aiohttp's heartbeat ping carries no payload


@dataclass
class Peer:
    """A client's WebSocket layer: reads frames in order, answers the pings it read."""

    inbox: deque[tuple[str, int | bytes]] = field(default_factory=deque)
    received: int = 0
    unanswered: list[bytes] = field(default_factory=list)  # read, not yet answered
    answered: list[bytes] = field(default_factory=list)

    def read(self, items: int) -> None:
        for _ in range(min(items, len(self.inbox))):
            kind, item = self.inbox.popleft()
            if kind == "data":
                assert isinstance(item, int)
                self.received += item
            else:
                assert isinstance(item, bytes)
                self.unanswered.append(item)

    def answer(self, skip: int) -> list[bytes]:
        """Pongs for the pings read so far, skipping up to ``skip`` of the oldest (RFC
        6455 5.5.3: a peer may answer only the most recent ping it processed)."""
        pongs = self.unanswered[min(skip, max(len(self.unanswered) - 1, 0)) :]
        self.unanswered = []
        self.answered += pongs
        return pongs


@dataclass
class Link:
    """The hub's writer, its window and the two directions of one connection."""

    window: DeliveryWindow
    peer: Peer
    backlog: int
    frame: int
    pongs: deque[bytes] = field(default_factory=deque)  # peer -> hub, in order
    sent_pings: list[bytes] = field(default_factory=list)

    def ping(self, payload: bytes | None) -> None:
        if payload is not None:
            assert 0 < len(payload) <= MAX_PING_PAYLOAD
            self.sent_pings.append(payload)
            self.peer.inbox.append(("ping", payload))

    def pump(self) -> None:
        """The writer sends frames while the window lets it."""
        while self.backlog and self.window.can_send():
            n = min(self.frame, self.backlog)
            self.backlog -= n
            self.peer.inbox.append(("data", n))
            self.ping(self.window.on_sent(n))
            self.check()

    def deliver(self, pongs: int) -> bool:
        opened = False
        for _ in range(min(pongs, len(self.pongs))):
            outcome = self.window.on_pong(self.pongs.popleft())
            opened |= outcome.opened
            self.ping(outcome.ping)
            self.check()
        return opened

    def heartbeat(self) -> None:
        self.ping(self.window.on_heartbeat())

    def check(self) -> None:
        w = self.window
        assert w.acked <= self.peer.received, "confirmed bytes the peer has not read"
        assert w.unconfirmed <= w.window_bytes + self.frame - 1
        assert w.outstanding_pings <= 64


ACTIONS = st.sampled_from(
    ["pump", "read", "answer", "deliver", "tick", "heartbeat-ping", "duplicate", "unsolicited"]
)


@pytest.mark.fuzz
@fuzz_settings
@given(
    st.integers(1, 4000),
    st.data(),
)
def test_a_legal_peer_always_gets_the_whole_backlog(window_bytes: int, data: st.DataObject) -> None:
    ping_every = data.draw(st.integers(1, window_bytes), label="ping_every")
    frame = data.draw(st.integers(1, 3000), label="frame")
    backlog = data.draw(st.integers(0, 40_000), label="backlog")
    max_pings = data.draw(st.sampled_from([1, 2, 3, 64]), label="max_pings")
    link = Link(
        DeliveryWindow(window_bytes, ping_every, max_pings=max_pings), Peer(), backlog, frame
    )
    peer = link.peer

    # a hostile but legal phase: anything, in any order
    for action in data.draw(st.lists(ACTIONS, max_size=120), label="actions"):
        if action == "pump":
            link.pump()
        elif action == "read":
            peer.read(data.draw(st.integers(0, 8)))
        elif action == "answer":
            link.pongs.extend(peer.answer(data.draw(st.integers(0, 5))))
        elif action == "deliver":
            link.deliver(data.draw(st.integers(0, 5)))
        elif action == "tick":
            link.heartbeat()
        elif action == "heartbeat-ping":
            peer.inbox.append(("ping", HEARTBEAT))
        elif action == "duplicate" and peer.answered:
            link.pongs.append(data.draw(st.sampled_from(peer.answered)))
        elif action == "unsolicited":
            link.pongs.append(data.draw(st.sampled_from([b"", b"x", b"d", b"keepalive"])))
        link.check()

    # then the peer reads steadily, still answering only the latest ping each time;
    # aiohttp pings only while the peer is silent, so a few heartbeat pings at most
    stray_heartbeats = data.draw(st.integers(0, 3), label="stray heartbeats")
    for round_ in range(4 * (backlog // frame + 1) + 20):
        link.pump()
        if round_ < stray_heartbeats:
            peer.inbox.append(("ping", HEARTBEAT))
        peer.read(len(peer.inbox))
        link.pongs.extend(peer.answer(skip=len(peer.unanswered)))
        progressed = link.deliver(len(link.pongs))
        if link.backlog == 0 and not peer.inbox:
            break
        if not progressed and not link.pongs and not peer.inbox:
            link.heartbeat()  # the session's heartbeat tick: nothing moved for a while
    assert peer.received == backlog
    assert link.window.sent == backlog


@pytest.mark.fuzz
@fuzz_settings
@given(st.integers(1, 4000), st.data())
def test_answering_only_a_heartbeat_after_a_pause_needs_no_tick(
    window_bytes: int, data: st.DataObject
) -> None:
    """The reproduction, generalised: the client pauses (reading some of what was sent
    first), heartbeat pings land among the window pings, and after the pause it
    answers only the most recent ping, a heartbeat's. From there it reads and answers
    steadily, and the backlog must arrive without waiting for a heartbeat tick."""
    ping_every = data.draw(st.integers(1, window_bytes), label="ping_every")
    frame = data.draw(st.integers(1, 3000), label="frame")
    backlog = data.draw(st.integers(1, 40_000), label="backlog")
    link = Link(DeliveryWindow(window_bytes, ping_every), Peer(), backlog, frame)
    peer = link.peer
    link.pump()  # until the window is full (or the backlog sent)
    peer.read(data.draw(st.integers(0, len(peer.inbox)), label="read before the pause"))
    link.pongs.extend(peer.answer(skip=data.draw(st.integers(0, 3))))
    link.deliver(len(link.pongs))
    link.pump()
    for _ in range(data.draw(st.integers(1, 3), label="heartbeat pings")):
        at = data.draw(st.integers(0, len(peer.inbox)))
        peer.inbox.insert(at, ("ping", HEARTBEAT))
    peer.inbox.append(("ping", HEARTBEAT))  # the most recent ping is a heartbeat's
    peer.read(len(peer.inbox))
    link.pongs.extend(peer.answer(skip=len(peer.unanswered)))  # only the latest: b""
    for _ in range(4 * (backlog // frame + 1) + 10):  # steady, and no tick at all
        link.deliver(len(link.pongs))
        link.pump()
        peer.read(len(peer.inbox))
        link.pongs.extend(peer.answer(skip=len(peer.unanswered)))
    assert peer.received == backlog


def test_only_the_heartbeat_answered_after_a_pause_does_not_stall() -> None:
    """The reproduction: window pings d54158 and d108240 go out, the window is full,
    aiohttp's heartbeat ping follows, and the paused client, once it reads again,
    answers only the most recent ping (the heartbeat's, empty). It then reads and
    answers every ping from there on; it must get the rest."""
    w = DeliveryWindow(100_000, 25_000)
    assert w.on_sent(54_158) == b"d54158"
    assert w.on_sent(54_082) == b"d108240"
    assert not w.can_send() and w.outstanding_pings == 2
    # the client answers only the heartbeat ping, which came after both
    opened, probe = w.on_pong(HEARTBEAT)
    assert not opened and probe == b"d108240"  # a fresh ping: its answer confirms it all
    assert w.on_pong(b"d108240") == PongOutcome(True, None)
    assert w.can_send() and w.acked == 108_240 and w.unconfirmed == 0
    # the two passed-over pings are forgotten: late answers change nothing
    assert w.outstanding_pings == 0
    assert w.on_pong(b"d54158") == PongOutcome(False, None)


def test_each_ping_confirms_its_offset_and_everything_before() -> None:
    w = DeliveryWindow(1000, 250)
    assert w.on_sent(100) is None
    assert w.on_sent(200) == b"d300"
    assert w.on_sent(300) == b"d600"
    assert w.on_sent(500) == b"d1100"  # fills the window
    assert not w.can_send() and w.outstanding_pings == 3
    assert w.on_pong(b"d600") == PongOutcome(True, None)  # d300 skipped: fine
    assert (w.acked, w.outstanding_pings, w.can_send()) == (600, 1, True)
    assert w.on_pong(b"d1100").opened and w.unconfirmed == 0


def test_a_ping_goes_out_with_the_frame_that_fills_the_window_only() -> None:
    w = DeliveryWindow(1000, 600)
    assert w.on_sent(700) == b"d700"
    assert w.on_sent(350) == b"d1050"  # fills the window: its pong reopens all of it
    assert w.on_sent(10) is None  # a reply while full: no ping per frame
    assert w.on_sent(590) == b"d1650"  # but every ping_every bytes still


def test_unmatched_pongs_cannot_start_a_ping_pong_loop() -> None:
    """A client that answers every ping with an empty pong (not RFC 6455) must not get
    the hub into a ping-pong loop: one probe per window ping or heartbeat tick."""
    w = DeliveryWindow(100, 100)
    assert w.on_pong(b"") == PongOutcome(False, None)  # nothing unconfirmed: nothing to do
    assert w.on_sent(100) == b"d100"  # a window ping: one credit
    assert w.on_pong(b"").ping == b"d100"
    for _ in range(10):
        assert w.on_pong(b"") == PongOutcome(False, None)
    assert w.on_heartbeat() == b"d100"  # full: the tick probes, and earns a credit
    assert w.on_pong(b"").ping == b"d100"
    assert w.on_pong(b"").ping is None
    assert w.outstanding_pings == 1  # the same offset is recorded once
    assert w.on_pong(b"d100").opened
    assert w.on_heartbeat() is None  # not full: nothing is waiting for a pong
    assert w.on_sent(50) is None
    assert w.on_pong(b"x").ping == b"d150"  # the tick's credit
    assert w.on_pong(b"x").ping is None
    for _ in range(10):  # credit is capped
        w.on_heartbeat()
    probes = [w.on_pong(b"") for _ in range(10)]
    assert sum(p.ping is not None for p in probes) == MAX_PROBE_CREDIT


def test_a_late_pong_for_a_dropped_ping_still_confirms() -> None:
    w = DeliveryWindow(10, 1, max_pings=2)
    for _ in range(3):
        assert w.on_sent(3) is not None  # d3, d6, d9: d3 is dropped from the list
    assert w.outstanding_pings == 2
    assert w.on_pong(b"d3") == PongOutcome(True, None)
    assert w.acked == 3 and w.outstanding_pings == 2
    assert w.on_pong(b"d3") == PongOutcome(False, None)  # a repeat: no probe either
    assert w.on_pong(b"d9").opened and w.acked == 9 and w.outstanding_pings == 0
    assert w.on_pong(b"d6") == PongOutcome(False, None)  # passed over, then late
    # not our payloads, so unmatched (a probe each while credit lasts)
    w.on_sent(5)
    for foreign in (b"d014", b"d-1", b"d1x", b"d", b"D14", b"d99999"):
        assert not w.on_pong(foreign).opened, foreign


def test_arguments_are_checked() -> None:
    for args in ((0, 1), (10, 0), (10, 11)):
        with pytest.raises(ValueError):
            DeliveryWindow(*args)
    with pytest.raises(ValueError):
        DeliveryWindow(10, 5, max_pings=0)
    assert DeliveryWindow(10, 5).on_sent(0) is None
