"""Command routing (protocol section 8) as a pure state machine.

The router knows which owner is online for each namespace, which commands are in
flight, and which idempotency keys each client has used. It does not send anything
and does not keep time itself: the server passes ``now_ms`` in, schedules the
timeout of each in-flight command and calls :meth:`CommandRouter.expire`, and
supplies the callbacks that deliver a command to its owner and a result to its
caller. Exactly one final outcome reaches every caller.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ErrorCode, HubError
from .limits import COMMAND_TIMEOUT_DEFAULT_MS, COMMAND_TIMEOUT_MAX_MS, IDEMPOTENCY_WINDOW_MS


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
    expires_ms: int
    outcome: Outcome | None = None
    inflight: InFlight | None = None


def clamp_timeout(timeout_ms: int | None) -> int:
    if timeout_ms is None:
        return COMMAND_TIMEOUT_DEFAULT_MS
    return max(1, min(int(timeout_ms), COMMAND_TIMEOUT_MAX_MS))


class CommandRouter:
    def __init__(
        self,
        *,
        max_in_flight_per_caller: int = 64,
        idempotency_window_ms: int = IDEMPOTENCY_WINDOW_MS,
        idempotency_keys_per_client: int = 10_000,
    ) -> None:
        self._owners: dict[str, CommandOwner] = {}
        self._inflight: dict[str, InFlight] = {}
        self._by_caller: dict[object, set[str]] = {}
        self._idem: dict[str, OrderedDict[str, _IdemRecord]] = {}
        self._max_in_flight = max_in_flight_per_caller
        self._idem_window = idempotency_window_ms
        self._idem_limit = idempotency_keys_per_client
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
                if rec.outcome is not None:
                    on_result(rec.outcome)
                elif rec.inflight is not None:
                    rec.inflight.callbacks.append((caller, on_result))
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
            self._idem_store(source, idempotency_key, _IdemRecord(now_ms + self._idem_window))
            self._idem[source][idempotency_key].inflight = cmd
        owner.deliver_command(cmd)
        return cmd

    # --- outcomes -------------------------------------------------------------------

    def reply(self, owner: CommandOwner, hid: str, outcome: Outcome) -> bool:
        """The owner answered. Returns False if ``hid`` is unknown, finished or not its."""
        cmd = self._inflight.get(hid)
        if cmd is None or cmd.owner is not owner:
            return False
        self._finish(cmd, outcome)
        return True

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

    def _finish(self, cmd: InFlight, outcome: Outcome) -> None:
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
            recs = self._idem.get(cmd.idem[0])
            rec = recs.get(cmd.idem[1]) if recs is not None else None
            if rec is not None and rec.inflight is cmd:
                rec.outcome = outcome
                rec.inflight = None
        if self.on_finish is not None:
            self.on_finish(cmd, outcome)  # once per execution, whoever still waits
        callbacks, cmd.callbacks = cmd.callbacks, []
        for _, cb in callbacks:
            cb(outcome)

    # --- idempotency cache ----------------------------------------------------------

    def _idem_lookup(self, client: str, key: str, now_ms: int) -> _IdemRecord | None:
        recs = self._idem.get(client)
        if recs is None:
            return None
        # records are in insertion (= expiry) order: drop the expired ones first
        while recs:
            first = next(iter(recs.values()))
            if first.expires_ms > now_ms or first.inflight is not None:
                break
            recs.popitem(last=False)
        if not recs:
            del self._idem[client]
            return None
        rec = recs.get(key)
        if rec is not None and rec.expires_ms <= now_ms and rec.inflight is None:
            del recs[key]
            return None
        return rec

    def _idem_store(self, client: str, key: str, rec: _IdemRecord) -> None:
        recs = self._idem.setdefault(client, OrderedDict())
        recs[key] = rec
        recs.move_to_end(key)
        if len(recs) > self._idem_limit:
            # evict the oldest finished records; one still in flight is never forgotten
            for old in [k for k, r in recs.items() if r.inflight is None]:
                if len(recs) <= self._idem_limit:
                    break
                del recs[old]
