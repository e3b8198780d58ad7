"""The supervisor: failed tasks are logged once with a traceback, reported, restarted
with a growing back-off that starts over only after a stable run; stop never raises."""

from __future__ import annotations

import asyncio
import logging

import pytest

from companion_hub.supervisor import Backoff, Supervisor


def test_backoff_grows_caps_jitters_and_resets() -> None:
    b = Backoff(base=0.5, cap=4.0, rng=lambda lo, hi: hi)  # no jitter: the upper bound
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    j = Backoff(base=1.0, cap=8.0)
    for _ in range(50):
        d = j.next_delay()
        assert 0 < d <= 8.0
    assert j.next_delay() >= 4.0  # jitter stays in the upper half of the capped delay


async def test_a_failing_task_is_logged_once_reported_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    crashes: list[BaseException] = []
    done = asyncio.Event()

    async def task() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError("the same bug")
        done.set()
        await asyncio.sleep(3600)

    sup = Supervisor("t")
    caplog.set_level(logging.ERROR, logger="companion_hub.supervisor")
    item = sup.spawn(
        "worker", task, on_crash=crashes.append, backoff=Backoff(0.01, 0.05), stable_after=60
    )
    await asyncio.wait_for(done.wait(), 10)
    assert runs == 4 and len(crashes) == 3 and item.crashes == 3
    assert item.last_error == "ValueError: the same bug" and item.running
    records = [r for r in caplog.records if r.name == "companion_hub.supervisor"]
    assert len(records) == 3
    assert records[0].exc_info is not None  # the traceback, once
    assert all(r.exc_info is None for r in records[1:])  # then one line per restart
    assert item.backoff.attempt == 3  # never reset: no run was stable
    await sup.stop()
    assert not item.running


async def test_a_stable_run_starts_the_backoff_over() -> None:
    runs = 0

    async def task() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            await asyncio.sleep(0.2)  # stayed up longer than stable_after
        if runs <= 3:
            raise RuntimeError(f"run {runs}")
        await asyncio.sleep(3600)

    sup = Supervisor("t")
    item = sup.spawn("worker", task, backoff=Backoff(0.01, 0.05), stable_after=0.1)
    for _ in range(200):
        if runs >= 4:
            break
        await asyncio.sleep(0.02)
    assert runs >= 4
    assert item.backoff.attempt == 1  # reset after run 3, then one more delay
    await sup.stop()


async def test_stop_never_reraises_and_a_finished_task_is_not_restarted() -> None:
    async def fails_in_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise OSError("cleanup failed")

    async def finishes() -> None:
        return None

    sup = Supervisor("t")
    a = sup.spawn("a", fails_in_cleanup)
    b = sup.spawn("b", finishes)
    await asyncio.sleep(0.05)
    assert not b.running and b.crashes == 0
    await sup.stop()  # must not raise
    assert a.task is not None and a.task.done()


async def test_a_broken_crash_hook_does_not_stop_the_restarts() -> None:
    runs = 0

    async def task() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise KeyError("x")
        await asyncio.sleep(3600)

    def hook(exc: BaseException) -> None:
        raise RuntimeError("hook bug")

    sup = Supervisor("t")
    sup.spawn("w", task, on_crash=hook, backoff=Backoff(0.01, 0.02))
    for _ in range(200):
        if runs >= 2:
            break
        await asyncio.sleep(0.02)
    assert runs == 2
    await sup.stop()


async def test_cancel_and_wait_never_swallows_the_callers_cancellation() -> None:
    from companion_hub.supervisor import cancel_and_wait

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)  # takes a while to wind down

    async def stopper(child: asyncio.Task[None]) -> str:
        await cancel_and_wait(child)
        return "went on"  # must not happen when the stopper itself is cancelled

    child = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stopper(child))
    await asyncio.sleep(0.05)  # the stopper waits for the child now
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.gather(child, return_exceptions=True)


async def test_stop_gives_up_on_a_task_that_swallows_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # a bug: cancellation swallowed

    sup = Supervisor("t")
    sup.spawn("stubborn", stubborn)
    await asyncio.sleep(0.01)
    caplog.set_level(logging.ERROR, logger="companion_hub.supervisor")
    sup.stop_timeout = 0.05
    try:
        await asyncio.wait_for(sup.stop(), 10)  # returns: a shutdown never hangs
    finally:
        release.set()
    assert any("did not stop" in r.getMessage() for r in caplog.records)
