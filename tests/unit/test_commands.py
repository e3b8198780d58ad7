"""The command router: routing, limits, timeouts, idempotency, exactly one outcome."""

from __future__ import annotations

import pytest

from companion_hub.core.commands import CommandRouter, InFlight, Outcome, clamp_timeout
from companion_hub.core.errors import ErrorCode, HubError


class Owner:
    def __init__(self) -> None:
        self.got: list[InFlight] = []

    def deliver_command(self, cmd: InFlight) -> None:
        self.got.append(cmd)


def submit(
    router: CommandRouter,
    results: list[Outcome],
    *,
    caller: object = "c1",
    target: str = "app.owner",
    key: str | None = None,
    now: int = 0,
) -> InFlight | None:
    return router.submit(
        caller=caller,
        source="caller",
        target=target,
        name="do",
        params={"x": 1},
        timeout_ms=None,
        idempotency_key=key,
        now_ms=now,
        on_result=results.append,
    )


def test_unavailable_when_no_owner() -> None:
    router = CommandRouter()
    with pytest.raises(HubError) as exc:
        submit(router, [])
    assert exc.value.code is ErrorCode.UNAVAILABLE


def test_routed_and_answered_once() -> None:
    router, owner, results = CommandRouter(), Owner(), []
    router.set_owner("app.owner", owner)
    cmd = submit(router, results)
    assert cmd is not None and owner.got == [cmd] and cmd.deadline_ms == 5000
    assert router.reply(owner, cmd.hid, Outcome(True, {"done": 1}))
    assert not router.reply(owner, cmd.hid, Outcome(True, {"done": 2}))
    router.expire(cmd.hid)
    assert results == [Outcome(True, {"done": 1})]


def test_reply_from_someone_else_is_refused() -> None:
    router, owner, results = CommandRouter(), Owner(), []
    router.set_owner("app.owner", owner)
    cmd = submit(router, results)
    assert cmd is not None
    assert not router.reply(Owner(), cmd.hid, Outcome(True))
    assert results == []


def test_timeout_then_late_reply_ignored() -> None:
    router, owner, results = CommandRouter(), Owner(), []
    router.set_owner("app.owner", owner)
    cmd = submit(router, results)
    assert cmd is not None
    router.expire(cmd.hid)
    assert not router.reply(owner, cmd.hid, Outcome(True))
    assert len(results) == 1 and results[0].error is not None
    assert results[0].error.code is ErrorCode.TIMEOUT


def test_owner_gone_ends_in_flight_with_unavailable() -> None:
    router, owner, results = CommandRouter(), Owner(), []
    router.set_owner("app.owner", owner)
    submit(router, results)
    router.owner_gone(owner, "owner disconnected")
    assert results[0].error is not None and results[0].error.code is ErrorCode.UNAVAILABLE
    assert "may have been executed" in results[0].error.message
    with pytest.raises(HubError):
        submit(router, results)


def test_in_flight_limit_per_caller() -> None:
    router, owner = CommandRouter(max_in_flight_per_caller=2), Owner()
    router.set_owner("app.owner", owner)
    submit(router, [])
    submit(router, [])
    with pytest.raises(HubError) as exc:
        submit(router, [])
    assert exc.value.code is ErrorCode.LIMIT_EXCEEDED
    submit(router, [], caller="c2")  # another connection is not limited by c1


def test_idempotency_executes_once() -> None:
    router, owner = CommandRouter(), Owner()
    router.set_owner("app.owner", owner)
    first: list[Outcome] = []
    second: list[Outcome] = []
    third: list[Outcome] = []
    cmd = submit(router, first, key="k")
    assert cmd is not None
    assert submit(router, second, key="k", caller="c2") is None  # joins while in flight
    router.reply(owner, cmd.hid, Outcome(True, 42))
    assert submit(router, third, key="k", now=60_000) is None  # answered from cache
    assert len(owner.got) == 1
    assert first == second == third == [Outcome(True, 42)]
    # after the 10-minute window it executes again
    assert submit(router, [], key="k", now=10 * 60_000 + 1) is not None
    assert len(owner.got) == 2


def test_refused_commands_are_not_remembered() -> None:
    router, owner = CommandRouter(), Owner()
    with pytest.raises(HubError):
        submit(router, [], key="k")
    router.set_owner("app.owner", owner)
    assert submit(router, [], key="k") is not None


def test_clamp_timeout() -> None:
    assert clamp_timeout(None) == 5000
    assert clamp_timeout(10**9) == 60_000
    assert clamp_timeout(5) == 5


def test_a_retry_survives_the_original_callers_departure() -> None:
    router, owner = CommandRouter(), Owner()
    router.set_owner("app.owner", owner)
    finished: list[tuple[str, Outcome]] = []
    router.on_finish = lambda cmd, outcome: finished.append((cmd.hid, outcome))
    first: list[Outcome] = []
    retry: list[Outcome] = []
    cmd = submit(router, first, caller="old", key="k")
    assert cmd is not None
    assert submit(router, retry, caller="new", key="k") is None  # joined
    router.caller_gone("old")  # the old connection is cleaned up after the retry joined
    router.reply(owner, cmd.hid, Outcome(True, 1))
    assert first == [] and retry == [Outcome(True, 1)]
    assert finished == [(cmd.hid, Outcome(True, 1))]  # recorded once, caller gone or not
    assert submit(router, [], caller="new", key="k") is None  # cached: not recorded again
    assert len(finished) == 1


def test_idempotency_eviction_never_forgets_a_command_in_flight() -> None:
    router, owner = CommandRouter(idempotency_keys_per_client=2), Owner()
    router.set_owner("app.owner", owner)
    slow = submit(router, [], key="slow")
    assert slow is not None
    for k in ("a", "b", "c"):
        cmd = submit(router, [], key=k)
        assert cmd is not None
        router.reply(owner, cmd.hid, Outcome(True, k))
    assert submit(router, [], key="slow") is None  # joined, not executed again
    assert len(owner.got) == 4
