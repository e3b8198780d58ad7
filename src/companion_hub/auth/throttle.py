"""The failed-login throttle: after ``max_failures`` failed authentications from one
address within ``window_s`` seconds, that address is locked out for ``lockout_s``
seconds (every attempt refused without checking the token).

Pure: the caller passes the time (``time.monotonic()``), so tests need no clock.
Bounded: at most ``max_addresses`` addresses are tracked (the least recently failed
one is forgotten first), each with at most ``max_failures`` timestamps.

Addresses are peer IPs without a port. IPv6 addresses count per network prefix
(``ipv6_prefix`` bits, default /64: one subscriber or host usually holds a whole /64,
so per-address counting could be dodged by changing addresses); an IPv4-mapped IPv6
address counts as its IPv4 address. A string that is not an IP address (a Unix
socket path, a test name) counts as itself.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["FailedLogins"]


@dataclass
class _Record:
    failures: deque[float]
    locked_until: float = field(default=float("-inf"))


class FailedLogins:
    """Counts failed logins per address and locks out an address that fails too often.

    ``allowed(address, now)`` before checking a token; then ``failed(address, now)``
    or ``succeeded(address)``. ``lockout_s = 0`` counts failures but never locks out.
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        lockout_s: float,
        *,
        max_addresses: int = 10_000,
        ipv6_prefix: int = 64,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or lockout_s < 0 or max_addresses < 1:
            raise ValueError("max_failures >= 1, window_s > 0, lockout_s >= 0, max_addresses >= 1")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix: 1-128")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_addresses = max_addresses
        self.ipv6_prefix = ipv6_prefix
        self._records: OrderedDict[str, _Record] = OrderedDict()  # least recent first

    def __len__(self) -> int:
        """The number of addresses (or IPv6 networks) tracked."""
        return len(self._records)

    def key(self, address: str) -> str:
        """What ``address`` is counted as: itself, its IPv4 address if IPv4-mapped, or
        its IPv6 network."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            if self.ipv6_prefix < 128:
                return str(ipaddress.IPv6Network((ip, self.ipv6_prefix), strict=False))
        return str(ip)

    def allowed(self, address: str, now: float) -> bool:
        """False while ``address`` is locked out."""
        return self.retry_after(address, now) == 0

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        rec = self._records.get(self.key(address))
        if rec is None or rec.locked_until <= now:
            return 0.0
        return rec.locked_until - now

    def failed(self, address: str, now: float) -> bool:
        """Count a failed login from ``address``. Returns True if this failure locked
        the address out (the caller may log it once)."""
        k = self.key(address)
        rec = self._records.get(k)
        if rec is None:
            rec = self._records[k] = _Record(deque(maxlen=self.max_failures))
            while len(self._records) > self.max_addresses:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(k)
        if rec.locked_until > now:  # an attempt that got through anyway: no extension
            return False
        failures = rec.failures
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        failures.append(now)
        if len(failures) >= self.max_failures and self.lockout_s > 0:
            rec.locked_until = now + self.lockout_s
            failures.clear()
            return True
        return False

    def succeeded(self, address: str) -> None:
        """Forget the failures (and any lockout) of ``address``: a successful login."""
        self._records.pop(self.key(address), None)

    def prune(self, now: float) -> int:
        """Forget addresses with no lockout and no failure within the window (optional
        housekeeping: memory is bounded anyway). Returns how many were forgotten."""
        stale = [
            k
            for k, r in self._records.items()
            if r.locked_until <= now and (not r.failures or r.failures[-1] <= now - self.window_s)
        ]
        for k in stale:
            del self._records[k]
        return len(stale)
