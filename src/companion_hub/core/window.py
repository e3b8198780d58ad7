"""The delivery window (ADR 4) as a sans-I/O state machine.

A connection's writer keeps at most ``window_bytes`` sent to the client and not yet
confirmed. Confirmations are WebSocket pongs: the writer pings with the stream offset
as payload (``d<offset>``), and the client's WebSocket layer can only answer after
reading everything sent before that ping, so a pong echoing the payload confirms the
offset and everything before it.

RFC 6455 (section 5.5.3) lets a peer answer only the most recent of several pings it
has read, and send pongs nobody asked for. So a pong that is not one of ours (empty:
the answer to aiohttp's heartbeat ping; or anything unsolicited) may be the only
answer our older pings will ever get: it shows the peer read everything before
*some* ping, but not which. The window then sends a fresh probe ping carrying the
current offset, whose answer confirms everything sent so far. Without it, a client that stopped
reading long enough for a heartbeat ping to come after the window's last ping could
answer only the heartbeat and stall for good: the window stays full, so no data goes
out, so no new window ping goes out.

A pong carrying one of our payloads that is no longer listed is a repeat (ignored) or
a late answer to a ping dropped from the bounded list, which still confirms its
offset. (Such payloads are not authenticated: a client forging one only makes its
own connection skip the window, which the socket's back-pressure then bounds.)

A peer that answers every ping with a wrong payload must not turn this into a
ping-pong loop, so probes are paid for with credit: each window ping and each
heartbeat tick earns one (up to ``MAX_PROBE_CREDIT``), each probe an unmatched pong
triggers spends one. A legitimate peer's unmatched pongs answer heartbeat pings (one
per interval, as are the ticks) or pings dropped from the list, so the credit is
there when they need it; a non-compliant peer gets at most one probe per window ping
or tick, never a loop. The heartbeat tick also probes by itself while the window is
full, the last resort whatever was lost.

Nothing here does I/O or keeps time: the writer reports what it sent and received and
sends the pings it is handed, and a timer calls :meth:`DeliveryWindow.on_heartbeat`
once per heartbeat interval.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

# RFC 6455 section 5.5: a control frame's payload is at most 125 bytes. Ours are
# b"d" and a decimal offset, far below it.
MAX_PING_PAYLOAD = 125
# Pings awaiting their pong, oldest dropped first (a late answer to a dropped ping
# still confirms its offset). With pings a quarter window apart, about 5 are pending.
MAX_OUTSTANDING_PINGS = 64
# Probes that unmatched pongs may trigger before more window pings or ticks earn
# more: one per heartbeat pong needs one, the rest is a margin for unsolicited pongs.
MAX_PROBE_CREDIT = 4


class PongOutcome(NamedTuple):
    """What a pong changed: unpack it, ``opened, ping = window.on_pong(payload)``."""

    opened: bool
    """The confirmed offset moved: the writer may have room to send again."""
    ping: bytes | None
    """A probe to send now, or None."""


class DeliveryWindow:
    """Sent and confirmed byte counts of one connection, and the pings that confirm.

    ``ping_every`` spaces the window pings (ADR 4: a quarter of the window); a ping also
    goes out with the frame that fills the window, so that its answer reopens all of
    it. Frames sent while the window is full (replies, which are exempt) count as sent
    and are pinged only every ``ping_every`` bytes.
    """

    def __init__(
        self,
        window_bytes: int,
        ping_every: int,
        *,
        max_pings: int = MAX_OUTSTANDING_PINGS,
    ) -> None:
        if window_bytes < 1 or not 1 <= ping_every <= window_bytes or max_pings < 1:
            raise ValueError("need window_bytes >= ping_every >= 1 and max_pings >= 1")
        self.window_bytes = window_bytes
        self.ping_every = ping_every
        self._sent = 0
        self._acked = 0
        self._pinged = 0  # the offset of the newest ping
        self._pings: deque[tuple[bytes, int]] = deque(maxlen=max_pings)
        self._credit = 0  # probes that unmatched pongs may still trigger
        self._dropped = 0  # the offset of the newest ping dropped from the list

    # --- read-only state -----------------------------------------------------------

    @property
    def sent(self) -> int:
        """Bytes sent on this connection so far (the stream offset)."""
        return self._sent

    @property
    def acked(self) -> int:
        """The offset up to which the client has confirmed reading."""
        return self._acked

    @property
    def unconfirmed(self) -> int:
        """Bytes sent and not yet confirmed."""
        return self._sent - self._acked

    @property
    def outstanding_pings(self) -> int:
        """Pings recorded and not yet answered (nor superseded, nor dropped)."""
        return len(self._pings)

    def can_send(self) -> bool:
        """Whether the writer may send another frame of deltas (replies are exempt)."""
        return self._sent - self._acked < self.window_bytes

    # --- events --------------------------------------------------------------------

    def on_sent(self, nbytes: int) -> bytes | None:
        """A frame of ``nbytes`` went out; returns a ping payload to send now, or None."""
        if nbytes <= 0:
            return None
        was_open = self.can_send()
        self._sent += nbytes
        if self._sent - self._pinged >= self.ping_every or (was_open and not self.can_send()):
            self._credit = min(self._credit + 1, MAX_PROBE_CREDIT)
            return self._ping()
        return None

    def on_pong(self, payload: bytes) -> PongOutcome:
        """A pong arrived (any pong: ours, the heartbeat's, a duplicate, unsolicited).

        A payload recorded here confirms that ping's offset and retires it and every
        older ping (the peer has read past them); so does one of a ping dropped from
        the list. Any other pong but a repeat asks for a probe (see the module
        docstring), if bytes are unconfirmed and credit is left.
        """
        pings = self._pings
        for i, (data, offset) in enumerate(pings):
            if data == payload:
                for _ in range(i + 1):
                    pings.popleft()
                self._acked = offset  # recorded offsets only grow, all above acked
                return PongOutcome(True, None)
        ours = _offset_of(payload)
        if ours is not None and ours <= max(self._dropped, self._acked):
            # one of ours, no longer listed: a late answer to a ping dropped from the
            # list (which confirms its offset, below every listed one), or a repeat
            if ours <= self._acked:
                return PongOutcome(False, None)
            self._acked = ours
            return PongOutcome(True, None)
        if self._credit and self._sent > self._acked:
            self._credit -= 1
            return PongOutcome(False, self._ping())
        return PongOutcome(False, None)

    def on_heartbeat(self) -> bytes | None:
        """Called once per heartbeat interval (not more often: each call earns a probe
        credit): while the window is full, returns a fresh probe to send, since the
        pings before it may all have been passed over."""
        self._credit = min(self._credit + 1, MAX_PROBE_CREDIT)
        if self.can_send():
            return None
        return self._ping()

    # --- internals -----------------------------------------------------------------

    def _ping(self) -> bytes:
        """A ping for the current offset, recorded (once per offset) for its pong."""
        payload = b"d%d" % self._sent
        pings = self._pings
        if not pings or pings[-1][1] != self._sent:
            if len(pings) == pings.maxlen:
                self._dropped = pings[0][1]  # the deque drops it on append
            pings.append((payload, self._sent))
        self._pinged = self._sent
        return payload


def _offset_of(payload: bytes) -> int | None:
    """The offset in a payload of ours (``d`` and a canonical decimal), else None."""
    digits = payload[1:]
    if payload[:1] != b"d" or not digits.isdigit() or (digits[:1] == b"0" and digits != b"0"):
        return None
    return int(digits)
