"""Writing what Companion sends into the store, under the hub's write rules.

A value the rules refuse (larger than ``value_bytes``, a key that breaks the grammar)
is not an error of the adapter: it is logged (rate-limited), counted for the status,
and the key keeps its last good value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ...core.errors import HubError
from ...core.writer import Writer
from ...logs import Throttle

log = logging.getLogger("companion_hub.adapters.companion")
_throttled = Throttle(log, interval=5.0)


class UpstreamWrites:
    """Writes upstream values; :attr:`refused` counts the ones the write rules refused.

    ``on_refused`` is called (at most once a second) after refusals, so that the
    adapter's status can say so.
    """

    def __init__(self, adapter_name: str, on_refused: Callable[[], None]) -> None:
        self.adapter_name = adapter_name
        self.on_refused = on_refused
        self.refused = 0
        self.last_refused = ""  # "<key>: <reason>" of the latest refusal
        self._report: asyncio.TimerHandle | None = None

    def write(self, key: str | None, value: Any, writer: Writer) -> None:
        """Write ``value`` (nothing for a key of None: a name that cannot be a key)."""
        if key is None:
            return
        try:
            writer.set(key, value)
        except HubError as exc:
            self.refuse(key, exc)
            with contextlib.suppress(HubError):
                writer.touch(key)  # keep the last good value: sync must not delete it

    def delete(self, key: str, writer: Writer) -> None:
        try:
            writer.discard(key)
        except HubError as exc:
            self.refuse(key, exc)

    def refuse(self, key: str, exc: HubError) -> None:
        """Count and log a refused value."""
        self.refused += 1
        self.last_refused = f"{key[:120]}: {exc.message}"[:300]
        _throttled.warning(
            f"refused:{exc.code}",
            "a value from Companion was refused; the key keeps its last good value",
            adapter=self.adapter_name,
            key=key[:120],
            code=str(exc.code),
            reason=exc.message,
            refused_total=self.refused,
        )
        if self._report is None:  # the status says so, at most once a second
            self._report = asyncio.get_running_loop().call_later(1.0, self._reported)

    def _reported(self) -> None:
        self._report = None
        self.on_refused()

    def close(self) -> None:
        """Cancel a pending report (the adapter is stopping)."""
        if self._report is not None:
            self._report.cancel()
            self._report = None
