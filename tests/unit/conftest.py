from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest

from companion_hub.core.store import Change, Store, Writer


class StoreHarness:
    """A store with a fake clock, recording every committed change."""

    def __init__(self, history_limit: int = 1_000_000) -> None:
        self._ticks = itertools.count(1_000)
        self.store = Store(
            clock_ms=lambda: next(self._ticks),
            decode=msgspec.json.decode,
            encode=msgspec.json.encode,
            history_limit=history_limit,
        )
        self.changes: list[Change] = []
        self.store.add_listener(self.changes.append)

    def w(self, owned: set[str], epoch: int = 0, actor: str = "t") -> Writer:
        """A writer owning ``owned`` (the one write path)."""
        return self.store.writer(actor, owned, epoch)

    def set(self, owned: set[str], key: str, value: Any, expect: int | None = None):
        return self.w(owned).set(key, value, expect)


@pytest.fixture
def harness() -> StoreHarness:
    return StoreHarness()
