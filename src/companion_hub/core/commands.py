"""Command routing (protocol section 8) as a pure state machine.

The router knows which owner is online for each namespace, which commands are in
flight, and which idempotency keys each client has used. It does not send anything
and does not keep time itself: the server passes ``now_ms`` in, schedules the
timeout of each in-flight command and calls :meth:`CommandRouter.expire`, and
supplies the callbacks that deliver a command to its owner and a result to its
caller. Exactly one final outcome reaches every caller.

Results are bounded: an owner's reply larger than ``max_result_bytes`` (encoded) ends
the command with ``TOO_LARGE`` for the caller, and :meth:`CommandRouter.reply` says so,
for the owner to be told. The idempotency cache is bounded too, in records per client
and in bytes across all clients: it keeps each finished outcome *encoded* (so that its
charge, the encoded size plus :data:`RECORD_BYTES`, is what it really holds), decodes
it again for a retry, and forgets the oldest finished records first, never one still
in flight. Encoding and decoding are injected (the server passes the wire codec).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import msgspec

from .errors import ErrorCode, HubError
from .limits import (
    COMMAND_TIMEOUT_DEFAULT_MS,
    COMMAND_TIMEOUT_MAX_MS,
    IDEMPOTENCY_WINDOW_MS,
    Limits,
)

_DEFAULTS = Limits()
# Bytes charged to each idempotency record besides its encoded outcome: the record,
# its key and the two dictionaries' slots. It bounds the count for tiny results too.
RECORD_BYTES = 256


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final result of a command: ``result`` when ok, else ``error``."""

    ok: bool
    result: Any = None
    error: HubError | None = None

    @staticmethod
    def failure(code: ErrorCode, message: str) -> Outcome:
        return Outcome(False, None, HubError(code, message))


ResultCallback = Callable[[Outcome], None]


class ReplyStatus(Enum):
    """What became of an owner's reply. Truthy only when accepted, as the boolean it
    replaces was: ``if not router.reply(...)`` still means "tell the owner"."""

    ACCEPTED = "accepted"
    """The outcome reached the caller (and the idempotency cache)."""
    UNKNOWN = "unknown"
    """No such command in flight to this owner (finished, timed out, not its own)."""
    TOO_LARGE = "too_large"
    """The result (or error) was over ``max_result_bytes``: the caller got TOO_LARGE."""
    NOT_JSON = "not_json"
    """The result could not be encoded (an in-process owner's bug): the caller got
    FAILED. A WebSocket owner's result was decoded from JSON, so never this."""

    def __bool__(self) -> bool:
        return self is ReplyStatus.ACCEPTED


class CommandOwner(Protocol):
    """Who executes commands for a namespace: a client connection or an adapter."""

    def deliver_command(self, cmd: InFlight) -> None:
        """Hand ``cmd`` to the owner. Must not block; the outcome comes via ``reply``."""


@dataclass(eq=False, slots=True)
class InFlight:
    hid: str  # the hub's id for this command, used in the owner's `command`/`reply`
    source: str  # calling client name
    target: str
    name: str
    params: dict[str, Any]
    deadline_ms: int
    owner: CommandOwner
    caller: object  # the calling connection (anything hashable)
    # (caller connection, callback): the original caller and idempotent retries
    callbacks: list[tuple[object, ResultCallback]] = field(default_factory=list)
    started_ms: int = 0
    idem: tuple[str, str] | None = None
    timer: Any = None  # the server's timeout handle, cancelled on completion


@dataclass(eq=False, slots=True)
class _IdemRecord:
    """A command seen with an idempotency key: in flight (``inflight``), or finished
    with its outcome kept encoded (``ok`` and ``encoded``: the result, or the error's
    wire form), charged ``size`` bytes."""

    client: str
    key: str
    expires_ms: int
    inflight: InFlight | None = None
    ok: bool = False
    encoded: bytes = b""
    size: int = RECORD_BYTES


def clamp_timeout(timeout_ms: int | None) -> int:
    if timeout_ms is None:
        return COMMAND_TIMEOUT_DEFAULT_MS
    return max(1, min(int(timeout_ms), COMMAND_TIMEOUT_MAX_MS))


class CommandRouter:
    def __init__(
        self,
        *,
        max_in_flight_per_caller: int = _DEFAULTS.commands_in_flight,
        idempotency_window_ms: int = IDEMPOTENCY_WINDOW_MS,
        idempotency_keys_per_client: int = _DEFAULTS.idempotency_keys_per_client,
        idempotency_bytes: int = _DEFAULTS.idempotency_bytes,
        max_result_bytes: int = _DEFAULTS.value_bytes,
        encode: Callable[[Any], bytes] = msgspec.json.encode,
        decode: Callable[[bytes], Any] = msgspec.json.decode,
    ) -> None:
        self._owners: dict[str, CommandOwner] = {}
        self._inflight: dict[str, InFlight] = {}
        self._by_caller: dict[object, set[str]] = {}
        self._max_in_flight = max_in_flight_per_caller
        self.max_result_bytes = max_result_bytes
        self._encode = encode
        self._decode = decode
        # idempotency records: by client and key (per-client order), and all of them
        # in insertion order, which is also expiry order (one window for all)
        self._idem: dict[str, OrderedDict[str, _IdemRecord]] = {}
        self._idem_all: OrderedDict[tuple[str, str], _IdemRecord] = OrderedDict()
        self._idem_bytes = 0
        self._idem_window = idempotency_window_ms
        self._idem_limit = idempotency_keys_per_client
        self._idem_budget = idempotency_bytes
        self._ids = itertools.count(1)
        # called once when an executed command ends (the hub records it in the log)
        self.on_finish: Callable[[InFlight, Outcome], None] | None = None

    # --- owners ---------------------------------------------------------------------

    def set_owner(self, namespace: str, owner: CommandOwner) -> None:
        self._owners[namespace] = owner

    def owner_of(self, namespace: str) -> CommandOwner | None:
        return self._owners.get(namespace)

    def owner_gone(self, owner: CommandOwner, message: str) -> list[InFlight]:
        """The owner disconnected (or was replaced): its namespaces go offline and its
        in-flight commands end with UNAVAILABLE."""
        for ns in [ns for ns, o in self._owners.items() if o is owner]:
            del self._owners[ns]
        ended = [c for c in self._inflight.values() if c.owner is owner]
        for cmd in ended:
            self._finish(
                cmd,
                Outcome.failure(
                    ErrorCode.UNAVAILABLE,
                    f"{message}; the command may have been executed",
                ),
            )
        return ended

    # --- callers --------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self._inflight)

    def caller_gone(self, caller: object) -> None:
        """A caller disconnected: its commands run on, but nobody waits for them."""
        for hid in self._by_caller.pop(caller, set()):
            cmd = self._inflight.get(hid)
            if cmd is not None:
                cmd.callbacks = [(c, cb) for c, cb in cmd.callbacks if c is not caller]
                cmd.caller = None
        # retries that joined another connection's command
        for cmd in self._inflight.values():
            if any(c is caller for c, _ in cmd.callbacks):
                cmd.callbacks = [(c, cb) for c, cb in cmd.callbacks if c is not caller]

    def submit(
        self,
        *,
        caller: object,
        source: str,
        target: str,
        name: str,
        params: dict[str, Any],
        timeout_ms: int | None,
        idempotency_key: str | None,
        now_ms: int,
        on_result: ResultCallback,
    ) -> InFlight | None:
        """Route a command. Returns the new in-flight command (the server must then
        schedule :meth:`expire` at its deadline), or None when it was answered from
        the idempotency cache or joined an identical in-flight execution.

        Raises :class:`HubError` when the command is refused before delivery.
        """
        if idempotency_key is not None:
            rec = self._idem_lookup(source, idempotency_key, now_ms)
            if rec is not None:
                if rec.inflight is not None:
                    rec.inflight.callbacks.append((caller, on_result))
                else:
                    on_result(self._cached(rec))
                return None
        owner = self._owners.get(target)
        if owner is None:
            raise HubError(
                ErrorCode.UNAVAILABLE,
                f"no owner of namespace {target!r} is connected",
                {"target": target},
            )
        mine = self._by_caller.setdefault(caller, set())
        if len(mine) >= self._max_in_flight:
            raise HubError(
                ErrorCode.LIMIT_EXCEEDED,
                f"more than {self._max_in_flight} commands in flight on this connection",
            )
        hid = f"h-{next(self._ids)}"
        cmd = InFlight(
            hid=hid,
            source=source,
            target=target,
            name=name,
            params=params,
            deadline_ms=now_ms + clamp_timeout(timeout_ms),
            owner=owner,
            caller=caller,
            callbacks=[(caller, on_result)],
            started_ms=now_ms,
        )
        self._inflight[hid] = cmd
        mine.add(hid)
        if idempotency_key is not None:
            cmd.idem = (source, idempotency_key)
            self._idem_store(
                _IdemRecord(source, idempotency_key, now_ms + self._idem_window, inflight=cmd)
            )
        owner.deliver_command(cmd)
        return cmd

    # --- outcomes -------------------------------------------------------------------

    def reply(self, owner: CommandOwner, hid: str, outcome: Outcome) -> ReplyStatus:
        """The owner answered: the command ends with ``outcome``, unless it is over
        ``max_result_bytes`` encoded (then with TOO_LARGE) or cannot be encoded (then
        with FAILED). Returns what happened, for the owner to be told unless ACCEPTED;
        UNKNOWN (and nothing changes) if ``hid`` is unknown, finished or not its."""
        cmd = self._inflight.get(hid)
        if cmd is None or cmd.owner is not owner:
            return ReplyStatus.UNKNOWN
        what = "result" if outcome.ok else "error"
        try:
            encoded = self._encode_outcome(outcome)
        except (HubError, TypeError, ValueError, OverflowError) as exc:
            message = exc.message if isinstance(exc, HubError) else str(exc)
            failure = f"the owner's {what} cannot be encoded as JSON: {message}"
            self._finish(cmd, Outcome.failure(ErrorCode.FAILED, failure))
            return ReplyStatus.NOT_JSON
        if len(encoded) > self.max_result_bytes:
            limit = self.max_result_bytes
            failure = f"the {what} is {len(encoded)} bytes; the limit is {limit}"
            self._finish(cmd, Outcome.failure(ErrorCode.TOO_LARGE, failure))
            return ReplyStatus.TOO_LARGE
        self._finish(cmd, outcome, encoded)
        return ReplyStatus.ACCEPTED

    def expire(self, hid: str) -> None:
        cmd = self._inflight.get(hid)
        if cmd is not None:
            self._finish(
                cmd,
                Outcome.failure(
                    ErrorCode.TIMEOUT,
                    f"no answer from {cmd.target!r} within the timeout; "
                    "the command may have been executed",
                ),
            )

    def get(self, hid: str) -> InFlight | None:
        return self._inflight.get(hid)

    def _finish(self, cmd: InFlight, outcome: Outcome, encoded: bytes | None = None) -> None:
        del self._inflight[cmd.hid]
        if cmd.timer is not None:
            cmd.timer.cancel()
            cmd.timer = None
        mine = self._by_caller.get(cmd.caller)
        if mine is not None:
            mine.discard(cmd.hid)
            if not mine:
                del self._by_caller[cmd.caller]
        if cmd.idem is not None:
            rec = self._idem_all.get(cmd.idem)
            if rec is not None and rec.inflight is cmd:
                self._idem_settle(rec, outcome, encoded)
        if self.on_finish is not None:
            self.on_finish(cmd, outcome)  # once per execution, whoever still waits
        callbacks, cmd.callbacks = cmd.callbacks, []
        for _, cb in callbacks:
            cb(outcome)

    # --- idempotency cache ----------------------------------------------------------

    @property
    def cached_bytes(self) -> int:
        """Bytes the idempotency cache is charged for now: at most its budget, unless
        records still in flight alone exceed it (those are never forgotten)."""
        return self._idem_bytes

    @property
    def cached_records(self) -> int:
        """Idempotency records held, in flight or finished, across all clients."""
        return len(self._idem_all)

    def _encode_outcome(self, outcome: Outcome) -> bytes:
        """The result, or the error's wire form (its message, code and details)."""
        if outcome.ok:
            return self._encode(outcome.result)
        return self._encode(None if outcome.error is None else outcome.error.to_wire())

    def _cached(self, rec: _IdemRecord) -> Outcome:
        """A finished record's outcome, decoded again for a retry."""
        value = self._decode(rec.encoded)
        if rec.ok:
            return Outcome(True, value)
        if not isinstance(value, dict):  # a failure without an error (None)
            return Outcome(False)
        error = HubError(ErrorCode(value["code"]), value["message"], value.get("details"))
        return Outcome(False, None, error)

    def _idem_lookup(self, client: str, key: str, now_ms: int) -> _IdemRecord | None:
        # all records share one window: the expired ones are a prefix of the order
        # (in flight ones cannot be expired: commands time out long before)
        while self._idem_all:
            first = next(iter(self._idem_all.values()))
            if first.expires_ms > now_ms or first.inflight is not None:
                break
            self._idem_remove(first)
        recs = self._idem.get(client)
        rec = recs.get(key) if recs is not None else None
        if rec is not None and rec.expires_ms <= now_ms and rec.inflight is None:
            self._idem_remove(rec)
            return None
        return rec

    def _idem_store(self, rec: _IdemRecord) -> None:
        old = self._idem_all.get((rec.client, rec.key))
        if old is not None:  # pragma: no cover - lookup removed it, or returned it
            self._idem_remove(old)
        recs = self._idem.setdefault(rec.client, OrderedDict())
        recs[rec.key] = rec
        self._idem_all[(rec.client, rec.key)] = rec
        self._idem_bytes += rec.size
        if len(recs) > self._idem_limit:
            self._idem_evict(recs.values(), len(recs) - self._idem_limit, count=True)
        self._idem_evict_bytes()

    def _idem_settle(self, rec: _IdemRecord, outcome: Outcome, encoded: bytes | None) -> None:
        """The record's command finished: keep its outcome, encoded, and charge it."""
        if encoded is None:
            encoded = self._encode_outcome(outcome)
        rec.inflight = None
        rec.ok = outcome.ok
        rec.encoded = encoded
        self._idem_bytes += len(encoded)
        rec.size += len(encoded)
        self._idem_evict_bytes()

    def _idem_evict_bytes(self) -> None:
        excess = self._idem_bytes - self._idem_budget
        if excess > 0:
            self._idem_evict(self._idem_all.values(), excess, count=False)

    def _idem_evict(self, records: Iterable[_IdemRecord], excess: int, *, count: bool) -> None:
        """Forget the oldest finished ``records`` until ``excess`` records (``count``)
        or bytes are gone; one still in flight is never forgotten."""
        victims: list[_IdemRecord] = []
        for rec in records:
            if excess <= 0:
                break
            if rec.inflight is None:
                victims.append(rec)
                excess -= 1 if count else rec.size
        for rec in victims:
            self._idem_remove(rec)

    def _idem_remove(self, rec: _IdemRecord) -> None:
        del self._idem_all[(rec.client, rec.key)]
        recs = self._idem[rec.client]
        del recs[rec.key]
        if not recs:
            del self._idem[rec.client]
        self._idem_bytes -= rec.size
