"""The bridge's outgoing side: which keys must be (re)published. Pure.

Not a queue of messages: a set of *dirty keys*, in the order they first became dirty.
A change to a key that is already dirty costs nothing more (it is counted as
coalesced), and what is published is the key's state *when it is sent*, read from the
store. So the bridge's memory is bounded by the number of keys it exports, never by
the update rate, and a slow broker only means that intermediate values are skipped:
the last value always goes out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class Outbox:
    __slots__ = ("_dirty", "coalesced", "marked")

    def __init__(self) -> None:
        # an OrderedDict, not a dict: taking from the front of a plain dict skips every
        # slot deleted before (until it is resized), which makes draining it quadratic
        self._dirty: OrderedDict[str, None] = OrderedDict()
        self.marked = 0  # changes seen
        self.coalesced = 0  # changes that found their key already dirty

    def mark(self, key: str) -> None:
        self.marked += 1
        if key in self._dirty:
            self.coalesced += 1
        else:
            self._dirty[key] = None

    def mark_all(self, keys: Iterable[str]) -> None:
        """Dirty every key of ``keys`` (after a reconnect: republish them); not counted."""
        dirty = self._dirty
        for k in keys:
            dirty[k] = None

    def take(self, n: int) -> list[str]:
        """Up to ``n`` dirty keys, oldest first; they are clean afterwards."""
        dirty = self._dirty
        if len(dirty) <= n:
            keys = list(dirty)
            dirty.clear()
            return keys
        pop = dirty.popitem
        return [pop(last=False)[0] for _ in range(n)]

    def __len__(self) -> int:
        return len(self._dirty)

    def __contains__(self, key: str) -> bool:
        return key in self._dirty
