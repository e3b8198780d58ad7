"""A Satellite connection's outgoing messages, waiting to be written (no I/O).

Messages go out in the order they were queued. A *state* message (the look of one key
or subscription) has a key, and queuing one whose key is still waiting replaces the
waiting text in place (newest wins, position kept): a client that reads slowly gets
the latest look of each key, not every look in between, as with Companion.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass


class Close:
    """The marker queued by a close after the queued messages (QUIT, line too long)."""


CLOSE = Close()


@dataclass(frozen=True)
class _StateSlot:
    key: Hashable


class Outbox:
    """The queue. Unbounded: its owner checks ``len()`` against its limit."""

    def __init__(self) -> None:
        self._queue: deque[str | bytes | _StateSlot | Close] = deque()
        self._states: dict[Hashable, str] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: str | bytes) -> None:
        """Queue a line (text) or raw bytes."""
        self._queue.append(message)

    def replace_state(self, key: Hashable, line: str) -> bool:
        """Replace the waiting state message ``key``; False if none is waiting."""
        if key not in self._states:
            return False
        self._states[key] = line
        return True

    def put_state(self, key: Hashable, line: str) -> None:
        """Queue a state message whose ``key`` is not waiting yet."""
        self._states[key] = line
        self._queue.append(_StateSlot(key))

    def put_close(self) -> None:
        self._queue.append(CLOSE)

    def take(self) -> str | bytes | Close | None:
        """The next message to write (None when the queue is empty)."""
        if not self._queue:
            return None
        item = self._queue.popleft()
        if isinstance(item, _StateSlot):
            return self._states.pop(item.key)
        return item
