"""The one write path: an owner's handle on the store.

Every writer of state — a client's session, an adapter, the hub itself, a future
bridge — writes through a :class:`Writer` that it gets from
:meth:`~companion_hub.core.store.Store.writer`. The writer carries who is writing
(the *actor*, recorded with every change in the event log), the namespaces it owns,
its write *epoch* (for ``sync``) and the limits, and it enforces the same rules for
everyone:

- keys follow the key grammar and the key length limit (``BAD_REQUEST``);
- values are JSON and at most ``value_bytes`` once encoded (``TOO_LARGE``);
- a key may only be written under a namespace the writer owns (``NOT_OWNER``);
- ``expect_version`` is compare-and-set (``CONFLICT``).

A refused write changes nothing: the key keeps its last good value.

What the writer does not do is wait: holding a writer while the event log's disk is
behind is the driver's job, because only the driver can stop reading from its
source (see ``Hub.wait_log_room``). The rule is that every driver awaits it before
it takes more input; the hub's own writes are exempt and bounded (see
docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, HubError
from .keys import check_key
from .limits import Limits

if TYPE_CHECKING:
    from .store import Store

Encoder = Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class WriteResult:
    key: str
    version: int
    rev: int
    changed: bool


@dataclass(frozen=True, slots=True)
class SetOp:
    """One checked entry of a write: ``raw`` is the canonical encoding of ``value``."""

    key: str
    raw: bytes
    value: Any  # the decoded value, for the equality rule
    expect_version: int | None = None


class Writer:
    """Owner-scoped writes to a :class:`Store`, with every rule of protocol section 5.

    ``epoch`` is public and may be changed: an adapter starts a new epoch for each
    upstream session, so that :meth:`sync` deletes what that session did not write.
    """

    __slots__ = ("_encode", "_limits", "_store", "actor", "epoch", "owned")

    def __init__(
        self,
        store: Store,
        *,
        actor: str,
        owned: frozenset[str],
        limits: Limits,
        encode: Encoder,
        epoch: int = 0,
    ) -> None:
        self._store = store
        self._limits = limits
        self._encode = encode
        self.actor = actor
        self.owned = owned
        self.epoch = epoch

    def __repr__(self) -> str:
        return f"<Writer {self.actor} owns {sorted(self.owned)} epoch {self.epoch}>"

    def with_epoch(self, epoch: int) -> Writer:
        """The same writer, for a different write epoch."""
        return Writer(
            self._store,
            actor=self.actor,
            owned=self.owned,
            limits=self._limits,
            encode=self._encode,
            epoch=epoch,
        )

    # --- checks -----------------------------------------------------------------------

    def check_key(self, key: object) -> str:
        return check_key(key, self._limits.key_bytes)

    def encode(self, value: Any) -> bytes:
        """The canonical encoding of ``value``, within ``value_bytes``."""
        raw = self._encode(value)
        limit = self._limits.value_bytes
        if len(raw) > limit:
            raise HubError(
                ErrorCode.TOO_LARGE,
                f"value is {len(raw)} bytes; the limit is {limit}",
                {"bytes": len(raw), "limit": limit},
            )
        return raw

    @staticmethod
    def _expect(v: int | None) -> int | None:
        if v is not None and v < 0:
            raise HubError(ErrorCode.BAD_REQUEST, "'expect_version' must be >= 0")
        return v

    # --- writes -----------------------------------------------------------------------

    def set(self, key: str, value: Any, expect_version: int | None = None) -> WriteResult:
        """Write ``key`` (an equal value changes nothing, but clears a stale flag)."""
        key = self.check_key(key)
        raw = self.encode(value)
        return self._store._set(self, key, raw, value, self._expect(expect_version), self.epoch)

    def set_many(self, entries: Sequence[tuple[str, Any, int | None]]) -> list[WriteResult]:
        """An atomic batch of ``(key, value, expect_version)``: all applied with
        consecutive revisions, or none (the error names the bad entry's index)."""
        if not entries:
            raise HubError(ErrorCode.BAD_REQUEST, "'entries' must not be empty")
        ops: list[SetOp] = []
        for i, (key, value, expect) in enumerate(entries):
            try:
                ops.append(
                    SetOp(self.check_key(key), self.encode(value), value, self._expect(expect))
                )
            except HubError as e:
                details = dict(e.details or {})
                details.update(index=i, key=key)
                raise HubError(e.code, f"entry {i}: {e.message}", details) from None
        return self._store._set_many(self, ops, self.epoch)

    def delete(self, key: str, expect_version: int | None = None) -> WriteResult:
        """Delete ``key``; ``NOT_FOUND`` if it does not exist."""
        key = self.check_key(key)
        return self._store._delete(self, key, self._expect(expect_version))

    def discard(self, key: str) -> WriteResult | None:
        """Delete ``key`` if it exists (an upstream says the thing is gone)."""
        key = self.check_key(key)
        if self._store.get(key) is None:
            return None
        return self._store._delete(self, key, None)

    def touch(self, key: str) -> None:
        """Count ``key`` as written in this epoch without changing it (a value that
        could not be re-read this time, or was refused, keeps its last good value)."""
        self._store._touch(self, key, self.epoch)

    def sync(self, prefix: str | None = None) -> list[WriteResult]:
        """Delete every key of the owned namespaces (or only those at or below
        ``prefix``) that this epoch did not write."""
        out: list[WriteResult] = []
        for ns in sorted(self.owned):
            if prefix is None or prefix == ns or prefix.startswith(ns + "."):
                out.extend(self._store._sync(self, ns, self.epoch, prefix))
        return out

    def mark_stale(self, prefix: str | None = None, stale: bool = True) -> int:
        """Flip the owned keys (or those at or below ``prefix``) to ``stale``: the
        upstream they mirror went away. Returns how many flipped."""
        n = 0
        for ns in sorted(self.owned):
            if prefix is None or prefix == ns or prefix.startswith(ns + "."):
                n += self._store.mark_stale(ns, actor=self.actor, stale=stale, prefix=prefix)
        return n
