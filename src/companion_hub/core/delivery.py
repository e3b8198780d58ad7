"""Per-connection delivery queue: coalescing deltas, ordered control messages, events.

The queue holds already-encoded messages (bytes); the server's writer task takes
batches from it whenever the socket can take more.

- **Deltas coalesce by key.** ``pending`` maps key -> the newest :class:`Delta`;
  a newer change to a key with a pending delta replaces it *and moves it to the
  end*, so the pending deltas stay in increasing revision order. Memory is
  bounded by the number of keys, whatever the update rate.
- **Replies** (results, errors, commands for an owner) go to a priority queue that
  is sent first and is never held back by the delivery window (see the server's
  writer), so a client that pipelines requests always gets its answers.
- **Barriers** (snapshots, progress, a subscribe's result) go to an ordered
  outbox. A barrier first seals the pending deltas into the outbox ahead of
  itself, so that no delta with a smaller revision can arrive after a message that
  tells the client "you have everything up to rev N".
- **Events** are not coalesced: a bounded queue that drops the oldest and reports
  how many were dropped before the next event that does get through.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator


class Delta:
    """One encoded change, shared by every connection that gets it."""

    __slots__ = ("data", "rev")

    def __init__(self, rev: int, data: bytes) -> None:
        self.rev = rev
        self.data = data


class _Run:
    """A sealed sequence of deltas, drained in order."""

    __slots__ = ("deltas", "pos")

    def __init__(self, deltas: list[Delta]) -> None:
        self.deltas = deltas
        self.pos = 0


class _Lazy:
    __slots__ = ("it", "rev")

    def __init__(self, it: Iterator[bytes], rev: int) -> None:
        self.it = it
        self.rev = rev


_Item = bytes | _Run | _Lazy


def _noop() -> None:
    return None


class DeliveryQueue:
    """What one connection still has to receive."""

    __slots__ = (
        "_event_limit",
        "_events",
        "_outbox",
        "_priority",
        "coalesced",
        "control_bytes",
        "deltas_sent",
        "dropped",
        "last_rev",
        "may_read",
        "notify",
        "notify_delta",
        "pending",
    )

    def __init__(
        self,
        event_limit: int = 1000,
        notify: Callable[[], None] = _noop,
        notify_delta: Callable[[], None] | None = None,
    ) -> None:
        self.pending: dict[str, Delta] = {}
        self._outbox: deque[_Item] = deque()
        self._priority: deque[bytes] = deque()
        self._events: deque[bytes] = deque()
        self._event_limit = max(1, event_limit)
        self.dropped = 0
        self.control_bytes = 0  # bytes of replies waiting (for back-pressure)
        self.last_rev = 0  # highest revision handed out by take() (deltas, barriers)
        # plain counters for the metrics (read at scrape time, never reset)
        self.coalesced = 0  # pending deltas replaced by a newer change to their key
        self.deltas_sent = 0  # deltas handed out by take()
        self.notify = notify
        # called instead of ``notify`` when a delta finds the queue empty: the driver
        # may wake its writer a little later, so that changes arriving together leave
        # in one frame (the flush delay; replies, events and snapshots use ``notify``)
        self.notify_delta = notify if notify_delta is None else notify_delta
        # the connection's read permission (a role with read patterns), None: reads all;
        # the hub asks it before pushing a delta or an event (core/acl.py)
        self.may_read: Callable[[str], bool] | None = None

    # --- producers ------------------------------------------------------------------

    def push_delta(self, key: str, delta: Delta) -> None:
        pending = self.pending
        if not pending and not self._outbox and not self._events:
            pending[key] = delta
            self.notify_delta()
            return
        if key in pending:
            del pending[key]  # re-insert at the end: keeps increasing-rev order
            self.coalesced += 1
        pending[key] = delta

    @staticmethod
    def push_delta_to(queues: Iterable[DeliveryQueue], key: str, delta: Delta) -> int:
        """:meth:`push_delta` to each of ``queues`` that may read ``key``; returns how
        many got it. The fan-out's hot loop (a change times its subscribers), written
        out once here rather than as one method call per queue (~15% of the hub's
        CPU under (b)). A role's read check is one object shared by its connections
        (core/acl.py): decided once per change for a run of them."""
        n = 0
        last_reader: object = None
        readable = True
        for q in queues:
            reader = q.may_read
            if reader is not None:
                if reader is not last_reader:
                    last_reader = reader
                    readable = reader(key)
                if not readable:
                    continue
            n += 1
            pending = q.pending
            if key in pending:
                del pending[key]  # re-insert at the end: keeps increasing-rev order
                q.coalesced += 1
                pending[key] = delta
            elif pending or q._outbox or q._events:
                pending[key] = delta
            else:
                pending[key] = delta
                q.notify_delta()
        return n

    def push_control(self, data: bytes, *, barrier_rev: int | None = None) -> None:
        """Queue a reply (sent first), or with ``barrier_rev`` a barrier message that
        comes after every delta queued so far and marks revision ``barrier_rev``."""
        if barrier_rev is None:
            self._priority.append(data)
            self.control_bytes += len(data)
        else:
            self._seal()
            self._outbox.append(data)
            self._outbox.append(_Lazy(iter(()), barrier_rev))
        self.notify()

    def push_lazy(self, chunks: Iterator[bytes], rev: int) -> None:
        """Queue messages produced on demand (a big snapshot) as a barrier at ``rev``."""
        was_empty = self.is_empty()
        self._seal()
        self._outbox.append(_Lazy(chunks, rev))
        if was_empty:
            self.notify()

    def push_event(self, data: bytes) -> None:
        was_empty = self.is_empty()
        events = self._events
        if len(events) >= self._event_limit:
            events.popleft()
            self.dropped += 1
        events.append(data)
        if was_empty:
            self.notify()

    def _seal(self) -> None:
        if self.pending:
            self._outbox.append(_Run(list(self.pending.values())))
            self.pending = {}

    # --- consumer -------------------------------------------------------------------

    @property
    def ordered_backlog(self) -> int:
        """Barrier items (snapshots, subscribe results, progress) and sealed runs waiting:
        each may hold a list of entries, so their number is bounded by the session."""
        return len(self._outbox)

    def is_empty(self) -> bool:
        return not (self.pending or self._outbox or self._events or self._priority)

    def __len__(self) -> int:
        """Approximate number of waiting messages (sealed runs count their remainder)."""
        n = len(self.pending) + len(self._events) + len(self._priority)
        for item in self._outbox:
            if isinstance(item, _Run):
                n += len(item.deltas) - item.pos
            else:
                n += 1
        return n

    def take(
        self, max_bytes: int, dropped_notice: Callable[[int], bytes], *, stream: bool = True
    ) -> list[bytes]:
        """Up to about ``max_bytes`` of messages, in delivery order ([] when empty).

        Replies come first. With ``stream=False`` (the connection's delivery window
        is full) only replies are taken. At least one message is returned when any
        may be taken, even if it alone is larger than ``max_bytes``.
        """
        out: list[bytes] = []
        size = 0
        priority = self._priority
        while priority and size < max_bytes:
            reply = priority.popleft()
            self.control_bytes -= len(reply)
            out.append(reply)
            size += len(reply)
        if not stream:
            return out
        outbox = self._outbox
        while size < max_bytes:
            if not outbox:
                if self.pending:
                    self._seal()
                    continue
                break
            item = outbox[0]
            if isinstance(item, bytes):
                outbox.popleft()
                out.append(item)
                size += len(item)
            elif isinstance(item, _Run):
                deltas = item.deltas
                pos = item.pos
                n = len(deltas)
                room = max_bytes - size
                # a long rest of the run at once when it fits (the usual case), by
                # C-level list operations (~2x faster per delta beyond ~16 deltas);
                # tried when the rest, at the first delta's size, would about fit;
                # else (or if it did not, or for a few) one by one
                rest = n - pos
                if rest > 16 and rest * len(deltas[pos].data) <= room + (room >> 2):
                    datas = [d.data for d in (deltas[pos:] if pos else deltas)]
                    total = sum(map(len, datas))
                    if total < room:
                        out += datas
                        size += total
                        pos = n
                while pos < n and size < max_bytes:
                    d = deltas[pos]
                    out.append(d.data)
                    size += len(d.data)
                    pos += 1
                if pos > item.pos:
                    self.deltas_sent += pos - item.pos
                    last = deltas[pos - 1].rev
                    self.last_rev = max(self.last_rev, last)
                item.pos = pos
                if pos >= n:
                    outbox.popleft()
            else:
                chunk = next(item.it, None)
                if chunk is None:
                    outbox.popleft()
                    self.last_rev = max(self.last_rev, item.rev)
                    continue
                out.append(chunk)
                size += len(chunk)
        events = self._events
        while events and size < max_bytes:
            if self.dropped:
                notice = dropped_notice(self.dropped)
                self.dropped = 0
                out.append(notice)
                size += len(notice)
            ev = events.popleft()
            out.append(ev)
            size += len(ev)
        return out
