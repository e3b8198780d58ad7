"""Who may connect, as whom, with which role (protocol section 9; docs/security.md).

:class:`AccessControl` turns a client name and a token (from ``hello``, or an HTTP
``Authorization: Bearer`` header) into an :class:`~companion_hub.core.acl.Identity`.
Without a token file the hub is in development mode: every client gets the
unrestricted development role and no token is asked for.

With tokens, a token is checked with a slow KDF (``auth.tokens``) in a worker thread,
so the event loop never waits for it; a token that verified is remembered (by a
SHA-256 of it, never the token) until the token file is reloaded, so that HTTP
clients polling with the same token do not pay the KDF every time. Failed attempts
are counted per source address (``auth.throttle``): after ``auth_failures`` within
``auth_failure_window`` seconds, that address is refused without checking for
``auth_lockout`` seconds. Failures are logged (client, address, reason; never the
token) and recorded in the event log as session records ``auth-failed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NoReturn

from .core.acl import BUILTIN_ROLES, Identity, Role, development
from .core.errors import ErrorCode, HubError

if TYPE_CHECKING:
    from .auth.throttle import FailedLogins
    from .auth.tokens import TokenEntry, TokenStore

log = logging.getLogger("companion_hub.access")

_CACHE_MAX = 10_000  # verified tokens remembered (by hash) at most


def _peer_ip(address: str) -> str:
    """``1.2.3.4:5678`` -> ``1.2.3.4``; ``[::1]:5678`` or ``::1:5678`` -> the IP part."""
    host, sep, _port = address.rpartition(":")
    return (host if sep else address).strip("[]")


class AccessControl:
    def __init__(
        self,
        *,
        tokens_file: str | None,
        roles: Mapping[str, Role],
        failures: int,
        window: float,
        lockout: float,
        record: Callable[[str, str, str, str], None] = lambda client, addr, ev, reason: None,
    ) -> None:
        self.roles: dict[str, Role] = {**BUILTIN_ROLES, **roles}
        self.tokens: TokenStore | None = None
        self._throttle: FailedLogins | None = None
        if tokens_file is not None:
            from .auth.throttle import FailedLogins
            from .auth.tokens import TokenStore

            self.tokens = TokenStore.load(tokens_file)
            self._throttle = FailedLogins(failures, window, lockout)
        self._verified: dict[str, TokenEntry] = {}  # sha256(token) -> entry
        self._record = record

    @property
    def enabled(self) -> bool:
        """Are tokens required? (False: the development mode.)"""
        return self.tokens is not None

    def reload(self) -> set[str]:
        """Re-read the token file (SIGHUP); returns the names of tokens that were
        revoked or changed: their connections must close."""
        if self.tokens is None:
            return set()
        changed = self.tokens.reload()
        self._verified.clear()
        log.info("token file reloaded", extra={"tokens": len(self.tokens.entries())})
        return set(changed)

    async def authenticate(self, client: str, token: str | None, address: str) -> Identity:
        """The identity of a connection saying ``hello`` as ``client`` with ``token``;
        HubError UNAUTHORIZED when the token is missing, wrong, or not for ``client``."""
        if self.tokens is None:
            return development(client)
        entry = await self._check(token, address, client)
        if not entry.allows_client(client):
            self._fail(address, client, "the token is not for this client name")
        return self._identity(entry, client, address)

    async def http_identity(self, token: str | None, address: str) -> Identity:
        """The identity of an HTTP request (``Authorization: Bearer``)."""
        if self.tokens is None:
            return development("http")
        entry = await self._check(token, address, "")
        return self._identity(entry, entry.name, address)

    def _identity(self, entry: TokenEntry, client: str, address: str) -> Identity:
        role = self.roles.get(entry.role)
        if role is None:
            self._fail(address, client, f"the token's role {entry.role!r} is not configured")
        return Identity(client, role, token=entry.name, enforced=True)

    async def _check(self, token: str | None, address: str, client: str) -> TokenEntry:
        ip = _peer_ip(address)
        now = time.monotonic()
        assert self.tokens is not None and self._throttle is not None
        if not self._throttle.allowed(ip, now):
            self._fail(
                address,
                client,
                "too many failed attempts from this address; try again later",
                count=False,
            )
        if not token:
            self._fail(address, client, "a token is required")
        digest = hashlib.sha256(token.encode()).hexdigest()
        entry = self._verified.get(digest)
        if entry is None:
            entry = await asyncio.to_thread(self.tokens.verify, token)
            if entry is not None and not self.tokens.is_current(entry):
                entry = None  # revoked by a reload while it was being checked
            if entry is None:
                self._fail(address, client, "the token is not valid")
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[digest] = entry
        self._throttle.succeeded(ip)
        return entry

    def _fail(self, address: str, client: str, reason: str, *, count: bool = True) -> NoReturn:
        if count and self._throttle is not None:
            self._throttle.failed(_peer_ip(address), time.monotonic())
        log.warning(
            "authentication failed", extra={"client": client, "address": address, "reason": reason}
        )
        self._record(client, address, "auth-failed", reason)
        raise HubError(ErrorCode.UNAUTHORIZED, reason)
