"""A token bucket, for per-connection request rate limits (``RATE_LIMITED``)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``. Time is passed in (seconds)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are enough; False (and nothing taken) otherwise."""
        tokens = self._tokens + (now - self._last) * self.rate
        self._last = now
        tokens = min(tokens, self.burst)
        if tokens < n:
            self._tokens = tokens
            return False
        self._tokens = tokens - n
        return True
