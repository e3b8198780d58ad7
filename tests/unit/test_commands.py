"""The command router: routing, limits, timeouts, idempotency, exactly one outcome."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.core.commands import (
    RECORD_BYTES,
    CommandRouter,
    InFlight,
    Outcome,
    ReplyStatus,
    clamp_timeout,
)
from companion_hub.core.errors import ErrorCode, HubError
from companion_hub.protocol.encode import encode_value
from tests.fuzzing import fuzz_settings


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


# --- bounded results and a bounded idempotency cache --------------------------------


def test_reply_status_is_truthy_only_when_accepted() -> None:
    router, owner, results = CommandRouter(), Owner(), []
    router.set_owner("app.owner", owner)
    cmd = submit(router, results)
    assert cmd is not None
    assert router.reply(Owner(), cmd.hid, Outcome(True)) is ReplyStatus.UNKNOWN
    assert router.reply(owner, "h-999", Outcome(True)) is ReplyStatus.UNKNOWN
    assert router.reply(owner, cmd.hid, Outcome(True, 1)) is ReplyStatus.ACCEPTED
    assert router.reply(owner, cmd.hid, Outcome(True, 2)) is ReplyStatus.UNKNOWN
    assert bool(ReplyStatus.ACCEPTED)
    assert not any(map(bool, (ReplyStatus.UNKNOWN, ReplyStatus.TOO_LARGE, ReplyStatus.NOT_JSON)))


def test_a_result_over_the_limit_ends_the_command_with_too_large() -> None:
    router, owner = CommandRouter(max_result_bytes=100), Owner()
    router.set_owner("app.owner", owner)
    finished: list[Outcome] = []
    router.on_finish = lambda cmd, outcome: finished.append(outcome)
    at_limit: list[Outcome] = []
    cmd = submit(router, at_limit)
    assert cmd is not None
    assert router.reply(owner, cmd.hid, Outcome(True, "x" * 98)) is ReplyStatus.ACCEPTED
    assert at_limit == [Outcome(True, "x" * 98)]  # 100 bytes encoded: allowed
    over: list[Outcome] = []
    cmd = submit(router, over, key="k")
    assert cmd is not None
    assert router.reply(owner, cmd.hid, Outcome(True, "x" * 99)) is ReplyStatus.TOO_LARGE
    [outcome] = over
    assert outcome.error is not None and outcome.error.code is ErrorCode.TOO_LARGE
    assert outcome.error.message == "the result is 101 bytes; the limit is 100"
    assert finished[-1] == outcome  # recorded as such, once
    assert router.reply(owner, cmd.hid, Outcome(True, 1)) is ReplyStatus.UNKNOWN  # finished
    retry: list[Outcome] = []
    assert submit(router, retry, key="k") is None  # the retry gets the same TOO_LARGE
    assert wire(retry) == wire(over)
    # an error reply is bounded alike (its message and details)
    errors: list[Outcome] = []
    cmd = submit(router, errors)
    assert cmd is not None
    big = Outcome(False, None, HubError(ErrorCode.FAILED, "no", {"why": "y" * 200}))
    assert router.reply(owner, cmd.hid, big) is ReplyStatus.TOO_LARGE
    assert errors[0].error is not None and errors[0].error.code is ErrorCode.TOO_LARGE
    assert errors[0].error.message.startswith("the error is ")


def test_a_result_that_cannot_be_encoded_fails_the_command() -> None:
    def encode(value: object) -> bytes:
        return encode_value(value)  # the server's: raises BAD_REQUEST for non-JSON

    router, owner, results = CommandRouter(encode=encode), Owner(), []
    router.set_owner("app.owner", owner)
    cmd = submit(router, results)
    assert cmd is not None
    assert router.reply(owner, cmd.hid, Outcome(True, object())) is ReplyStatus.NOT_JSON
    assert results[0].error is not None and results[0].error.code is ErrorCode.FAILED
    assert router.in_flight() == 0


def wire(outcomes: list[Outcome]) -> list[tuple[bool, object, object]]:
    """Outcomes as the caller sees them (a cached error is a new, equal HubError)."""
    return [(o.ok, o.result, None if o.error is None else o.error.to_wire()) for o in outcomes]


def finish_idempotent(
    router: CommandRouter, owner: Owner, key: str, result: object, now: int = 0
) -> list[Outcome]:
    results: list[Outcome] = []
    cmd = submit(router, results, key=key, now=now)
    assert cmd is not None, key
    assert router.reply(owner, cmd.hid, Outcome(True, result)) is ReplyStatus.ACCEPTED
    return results


def test_the_idempotency_cache_is_bounded_in_bytes_across_clients() -> None:
    """The reproduction, scaled down: many commands with large results, kept for
    retries. Memory stays within the budget, the newest are still answered from the
    cache, the oldest are forgotten (a retry of one executes again)."""
    budget = 2 * 1024 * 1024
    router, owner = CommandRouter(idempotency_bytes=budget), Owner()
    router.set_owner("app.owner", owner)
    result = "r" * 100_000  # 100,002 bytes encoded
    for i in range(300):
        finish_idempotent(router, owner, f"k{i}", result)
        assert router.cached_bytes <= budget
    kept = budget // (100_002 + RECORD_BYTES)
    assert router.cached_records == kept
    assert router.cached_bytes == kept * (100_002 + RECORD_BYTES)
    executed = len(owner.got)
    newest: list[Outcome] = []
    assert submit(router, newest, key="k299") is None  # from the cache
    assert newest == [Outcome(True, result)] and len(owner.got) == executed
    assert submit(router, [], key="k0") is not None  # forgotten: executes again


def test_the_bytes_budget_never_forgets_a_command_in_flight() -> None:
    router, owner = CommandRouter(idempotency_bytes=4 * (RECORD_BYTES + 1_002)), Owner()
    router.set_owner("app.owner", owner)
    slow: list[Outcome] = []
    slow_cmd = submit(router, slow, key="slow")
    assert slow_cmd is not None
    for i in range(20):
        finish_idempotent(router, owner, f"k{i}", "x" * 1_000)
    assert router.cached_bytes <= 4 * (RECORD_BYTES + 1_002)
    joined: list[Outcome] = []
    assert submit(router, joined, key="slow", caller="c2") is None  # joins, not re-executed
    router.reply(owner, slow_cmd.hid, Outcome(True, "done"))
    assert slow == joined == [Outcome(True, "done")]
    # in flight records alone may exceed a tiny budget: they stay, and are charged
    tiny = CommandRouter(idempotency_bytes=1)
    tiny.set_owner("app.owner", owner)
    cmds = [submit(tiny, [], key=f"t{i}") for i in range(3)]
    assert tiny.cached_records == 3 and tiny.cached_bytes == 3 * RECORD_BYTES
    for cmd in cmds:
        assert cmd is not None
        tiny.reply(owner, cmd.hid, Outcome(True, 1))
    assert tiny.cached_records == 0 and tiny.cached_bytes == 0  # finished: over budget


def test_cached_failures_are_replayed_and_records_expire() -> None:
    router, owner = CommandRouter(), Owner()
    router.set_owner("app.owner", owner)
    timed_out: list[Outcome] = []
    cmd = submit(router, timed_out, key="t")
    assert cmd is not None
    router.expire(cmd.hid)
    failed: list[Outcome] = []
    cmd = submit(router, failed, key="f")
    assert cmd is not None
    error = HubError(ErrorCode.NOT_FOUND, "no such thing", {"name": "do"})
    router.reply(owner, cmd.hid, Outcome(False, None, error))
    for key, first in (("t", timed_out), ("f", failed)):
        again: list[Outcome] = []
        assert submit(router, again, key=key, now=1_000) is None
        assert wire(again) == wire(first) and not again[0].ok
    assert router.cached_records == 2 and router.cached_bytes > 2 * RECORD_BYTES
    # after the window everything is dropped, and the accounting returns to zero
    assert submit(router, [], key="new", now=10 * 60_000 + 1) is not None
    assert router.cached_records == 1 and router.cached_bytes == RECORD_BYTES


def test_the_per_client_record_limit_still_holds_with_the_bytes_budget() -> None:
    router, owner = CommandRouter(idempotency_keys_per_client=3), Owner()
    router.set_owner("app.owner", owner)
    for i in range(5):
        finish_idempotent(router, owner, f"k{i}", i)
    assert router.cached_records == 3
    assert submit(router, [], key="k4") is None and submit(router, [], key="k0") is not None


@pytest.mark.fuzz
@fuzz_settings
@given(
    st.integers(RECORD_BYTES, 20_000),
    st.lists(
        st.tuples(st.sampled_from(["submit", "reply", "expire", "retry"]), st.integers(0, 9)),
        max_size=80,
    ),
)
def test_cache_accounting_matches_its_records(budget: int, ops: list[tuple[str, int]]) -> None:
    """Random submits, replies (results of random sizes), timeouts and retries: the
    charge is always the sum of the records' sizes, within the budget once the
    records in flight are counted out, and a retry is answered exactly as the first
    caller was (never executed twice while its record is kept)."""
    router, owner = CommandRouter(idempotency_bytes=budget), Owner()
    router.set_owner("app.owner", owner)
    outcomes: dict[str, list[Outcome]] = {}
    running: dict[str, InFlight] = {}
    for op, n in ops:
        key = f"k{n}"
        if op == "submit" or op == "retry":
            results: list[Outcome] = []
            cmd = submit(router, results, key=key)
            if cmd is not None:
                running[key] = cmd
                outcomes[key] = results
            elif key in outcomes and outcomes[key] and results:
                assert wire(results) == wire(outcomes[key][:1])
        elif op == "reply" and key in running:
            router.reply(owner, running.pop(key).hid, Outcome(True, "v" * (n * 700)))
        elif op == "expire" and key in running:
            router.expire(running.pop(key).hid)
        records = list(router._idem_all.values())
        assert router.cached_bytes == sum(r.size for r in records)
        in_flight = sum(r.size for r in records if r.inflight is not None)
        assert router.cached_bytes <= max(budget, in_flight)
        for k, cmd in running.items():  # a record in flight is never forgotten
            assert router._idem_all[("caller", k)].inflight is cmd
