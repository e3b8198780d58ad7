"""The bridge's incoming side: a queue that coalesces state and bounds commands.

The MQTT client reads the socket on its own and puts every message here; the bridge
takes them out, and may pause while the event log is behind. Meanwhile:

- a message on an imported topic replaces the earlier one of the same topic that is
  still waiting (the newest state wins: memory is bounded by the number of topics);
- command requests keep their order, up to ``max_commands`` waiting; the next ones
  are refused (the bridge answers them with ``LIMIT_EXCEEDED``, so their callers still get
  exactly one result).

It plugs into the client library as an :class:`asyncio.Queue` subclass (the way
``PriorityQueue`` does), so only ``_init``, ``_put``, ``_get`` and ``qsize`` change.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any


class _Store:
    __slots__ = ("commands", "refused", "state")

    def __init__(self) -> None:
        # OrderedDict: popping from the front of a plain dict is quadratic (see outbox)
        self.state: OrderedDict[str, Any] = OrderedDict()
        self.commands: deque[Any] = deque()
        self.refused: deque[Any] = deque()

    def __len__(self) -> int:
        return len(self.state) + len(self.commands) + len(self.refused)


def inbox_type(is_command: Callable[[str], bool], max_commands: int) -> type[Inbox]:
    """An :class:`Inbox` class for one bridge (the client library makes the instance)."""
    return type(
        "BridgeInbox",
        (Inbox,),
        {"is_command": staticmethod(is_command), "max_commands": max_commands},
    )


class Inbox(asyncio.Queue[Any]):
    """Items are messages with a ``topic``; ``is_command(topic)`` tells commands apart.

    Command requests that find ``max_commands`` waiting come out of :meth:`get`
    wrapped in :class:`Refused` (at most ``max_commands`` of those are kept; past that
    they are only counted in :attr:`dropped`). ``latest`` is the newest instance of
    the class, for the bridge's counters."""

    max_commands = 1000
    latest: Inbox | None = None

    @staticmethod
    def is_command(topic: str) -> bool:
        return False

    def _init(self, maxsize: int) -> None:
        self._queue = _Store()
        self.coalesced = 0
        self.dropped = 0
        type(self).latest = self

    def _put(self, item: Any) -> None:
        q: _Store = self._queue
        topic = str(item.topic)
        if self.is_command(topic):
            if len(q.commands) < self.max_commands:
                q.commands.append(item)
            elif len(q.refused) < self.max_commands:
                q.refused.append(item)
            else:
                self.dropped += 1
            return
        if topic in q.state:
            self.coalesced += 1
            q.state[topic] = item
            q.state.move_to_end(topic)  # the newest goes to the back: order of last arrival
        else:
            q.state[topic] = item

    def _get(self) -> Any:
        q: _Store = self._queue
        if q.refused:
            return Refused(q.refused.popleft())
        if q.commands:
            return q.commands.popleft()
        return q.state.popitem(last=False)[1]

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not len(self._queue)


class Refused:
    """A command request that found the queue full."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message

    @property
    def topic(self) -> Any:
        return self.message.topic
