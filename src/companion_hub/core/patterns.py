"""An index from subscription patterns to subscribers.

The index is a trie over pattern segments. Matching a key walks the key's segments
once and visits only trie nodes on a matching path, so the cost of a change grows
with the key's depth and with the subscriptions that match it, not with the number
of subscriptions. A subscriber added through several patterns that all match a key
is returned once.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

from .keys import GLOBSTAR, STAR, Pattern

T = TypeVar("T", bound=Hashable)


class _Node(Generic[T]):
    __slots__ = ("children", "exact", "globstar", "star")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.star: _Node[T] | None = None
        # subscriber -> number of patterns ending here (a subscriber may repeat a pattern)
        self.exact: dict[T, int] = {}
        self.globstar: dict[T, int] = {}

    def is_empty(self) -> bool:
        return not (self.children or self.star or self.exact or self.globstar)


_EMPTY: tuple[()] = ()


class PatternIndex(Generic[T]):
    """Maps patterns to subscribers; ``match(key)`` returns the distinct subscribers."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._size = 0

    def __len__(self) -> int:
        """Number of (pattern, subscriber) registrations."""
        return self._size

    def add(self, pattern: Pattern, subscriber: T) -> None:
        node = self._root
        last = len(pattern) - 1
        for i, seg in enumerate(pattern):
            if seg == GLOBSTAR and i == last:
                node.globstar[subscriber] = node.globstar.get(subscriber, 0) + 1
                self._size += 1
                return
            if seg == STAR:
                if node.star is None:
                    node.star = _Node()
                node = node.star
            else:
                child = node.children.get(seg)
                if child is None:
                    child = node.children[seg] = _Node()
                node = child
        node.exact[subscriber] = node.exact.get(subscriber, 0) + 1
        self._size += 1

    def remove(self, pattern: Pattern, subscriber: T) -> bool:
        """Remove one registration; returns False if it was not there."""
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        last = len(pattern) - 1
        target: dict[T, int] | None = None
        for i, seg in enumerate(pattern):
            if seg == GLOBSTAR and i == last:
                target = node.globstar
                break
            nxt = node.star if seg == STAR else node.children.get(seg)
            if nxt is None:
                return False
            path.append((node, seg))
            node = nxt
        if target is None:
            target = node.exact
        count = target.get(subscriber)
        if count is None:
            return False
        if count == 1:
            del target[subscriber]
        else:
            target[subscriber] = count - 1
        self._size -= 1
        # prune empty nodes bottom-up
        while path and node.is_empty():
            parent, seg = path.pop()
            if seg == STAR:
                parent.star = None
            else:
                del parent.children[seg]
            node = parent
        return True

    def match(self, key: str) -> Collection[T]:
        """The distinct subscribers with a pattern matching ``key``.

        The result may be an internal view: do not keep it across index changes.
        """
        found: list[dict[T, int]] = []
        nodes: list[_Node[T]] = [self._root]
        for seg in key.split("."):
            nxt: list[_Node[T]] = []
            for node in nodes:
                if node.globstar:
                    found.append(node.globstar)
                child = node.children.get(seg)
                if child is not None:
                    nxt.append(child)
                if node.star is not None:
                    nxt.append(node.star)
            if not nxt:
                break
            nodes = nxt
        else:
            for node in nodes:
                if node.exact:
                    found.append(node.exact)
                if node.globstar:  # '**' matches zero segments too
                    found.append(node.globstar)
        if not found:
            return _EMPTY
        if len(found) == 1:
            return found[0].keys()
        merged: dict[T, int] = {}
        for d in found:
            merged.update(d)
        return merged.keys()
