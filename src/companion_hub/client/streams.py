"""What a program holds on to while it reads from the hub: :class:`Subscription`,
:class:`Watch` (async iterator of changes) and :class:`EventStream` (async iterator of
events), and the :class:`Streams` that feeds every open watch and event stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from ..core.keys import Pattern
from .errors import BadRequest, HubError
from .messages import Change, Entry, Event
from .mirror import Mirror, matches_any
from .protocol import SubscriptionSpec

__all__ = ["EventStream", "Streams", "Subscription", "Watch"]


class Subscription:
    """A live subscription; its entries are in the client's mirror.

    Re-established automatically after a reconnection. ``await sub.unsubscribe()``
    ends it. ``client`` is the :class:`HubClient` it belongs to.
    """

    def __init__(
        self,
        spec: SubscriptionSpec,
        mirror: Mirror,
        unsubscribe: Callable[[str], Awaitable[None]],
        client: Any = None,
    ) -> None:
        self.client = client
        self.id = spec.id
        self.patterns = spec.patterns
        self.events = spec.events
        self._parsed = spec.parsed
        self._mirror = mirror
        self._unsubscribe = unsubscribe

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {list(self.patterns)}>"

    def entries(self) -> dict[str, Entry]:
        """The mirror's entries matching this subscription, by key."""
        return self._mirror.matching(self._parsed)

    async def unsubscribe(self) -> None:
        await self._unsubscribe(self.id)


class Watch:
    """Async iterator of :class:`Change` for some patterns: the current entries first
    (from the subscription's snapshot), then every change, stale flips and deletes
    included.

    Changes waiting to be consumed are coalesced per key, like the hub does: a slow
    consumer skips intermediate versions but never sees an older value after a newer
    one. Iteration ends when the client is closed; leaving an ``async with`` block or
    calling :meth:`aclose` unsubscribes.

    ::

        async with hub.watch("companion.buttons.**") as changes:
            async for ch in changes:
                ...
    """

    def __init__(
        self,
        subscribe: Callable[..., Awaitable[Subscription]],
        mirror: Mirror,
        streams: Streams,
        patterns: tuple[str, ...],
        parsed: tuple[Pattern, ...],
    ) -> None:
        if not patterns:
            raise BadRequest("watch() needs at least one pattern")
        self.patterns = patterns
        self._parsed = parsed
        self._subscribe = subscribe
        self._mirror = mirror
        self._streams = streams
        self._queue: OrderedDict[str, Change] = OrderedDict()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Subscribe and take the initial entries (done by the first ``__anext__``)."""
        if self._started:
            return
        self._started = True
        try:
            self._sub = await self._subscribe(*self.patterns)
        except BaseException:
            self._started = False  # a later __anext__ tries again
            raise
        # no await between reading the mirror and registering: nothing is missed
        for entry in self._mirror.matching(self._parsed).values():
            self._queue[entry.key] = Change.of(entry)
        self._streams.watches.add(self)
        self._wake.set()

    def push(self, change: Change) -> None:
        """Queue ``change`` if it concerns this watch (replacing a queued one of its key)."""
        if self._closed or not matches_any(self._parsed, change.key):
            return
        self._queue.pop(change.key, None)
        self._queue[change.key] = change
        self._wake.set()

    def end(self) -> None:
        """No more changes will come: the iteration ends once the queue is drained."""
        self._closed = True
        self._wake.set()

    def pending(self) -> int:
        """Changes waiting to be consumed."""
        return len(self._queue)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Change:
        if not self._started:
            await self.start()
        while True:
            if self._queue:
                return self._queue.popitem(last=False)[1]
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        """Stop watching and unsubscribe."""
        self.end()
        self._streams.watches.discard(self)
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(HubError):
                await sub.unsubscribe()

    async def __aenter__(self) -> Watch:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventStream:
    """Async iterator of :class:`Event` received by subscriptions with ``events=True``.

    Holds at most ``maxlen`` events; on overflow the oldest are dropped and counted
    in :attr:`dropped` (as is the hub's own ``dropped`` notice).
    """

    def __init__(self, streams: Streams, maxlen: int = 1000) -> None:
        self._streams = streams
        self._queue: deque[Event] = deque()
        self._maxlen = max(1, maxlen)
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def push(self, event: Event) -> None:
        if len(self._queue) >= self._maxlen:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._wake.set()

    def end(self) -> None:
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        self.end()
        self._streams.event_streams.discard(self)


class Streams:
    """The open watches and event streams of one client, fed by it."""

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        self.event_streams: set[EventStream] = set()
        self.ended = False

    def change(self, change: Change) -> None:
        for w in list(self.watches):
            w.push(change)

    def event(self, event: Event) -> None:
        for s in list(self.event_streams):
            s.push(event)

    def dropped(self, count: int) -> None:
        for s in list(self.event_streams):
            s.dropped += count

    def open_event_stream(self, maxlen: int) -> EventStream:
        stream = EventStream(self, maxlen)
        if self.ended:
            stream.end()
        else:
            self.event_streams.add(stream)
        return stream

    def end_all(self) -> None:
        """The client stopped (closed, or taken over): every iteration ends."""
        self.ended = True
        for w in list(self.watches):
            w.end()
        self.watches.clear()
        for s in list(self.event_streams):
            s.end()
        self.event_streams.clear()
