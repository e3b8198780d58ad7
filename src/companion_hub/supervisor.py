"""Supervised background tasks: none dies silently.

Every long-running task of the hub (an adapter's links and poll loops, the hub's
progress timer) runs under a :class:`Supervisor`. When a task raises an exception
it did not expect, the supervisor

1. logs it with its traceback, once per distinct failure (a task that keeps failing
   the same way logs one line per restart after the first, not a traceback each
   time),
2. calls the task's ``on_crash`` hook, which sets the affected status to ``error``
   with the message and marks stale what the task mirrors,
3. restarts it after a back-off (exponential, capped, with jitter) that is reset
   only once a run has stayed up for ``stable_after`` seconds.

A task that returns normally is finished and not restarted. :meth:`Supervisor.stop`
cancels every task and waits for them; it never re-raises an old exception, so a
shutdown always completes (and the event log is closed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("companion_hub.supervisor")

CrashHook = Callable[[BaseException], None]


@dataclass
class Backoff:
    """Exponential back-off with full jitter in the upper half: ``base * 2**n``,
    capped at ``cap``, each delay drawn from ``[d/2, d]``."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def next_delay(self) -> float:
        d = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self.rng(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(eq=False)
class Supervised:
    """One supervised task and what is known about its health."""

    name: str
    factory: Callable[[], Awaitable[None]]
    on_crash: CrashHook | None
    backoff: Backoff
    stable_after: float
    task: asyncio.Task[None] | None = None
    crashes: int = 0
    last_error: str = ""
    restarting_at: float | None = None  # wall time of the next restart while waiting
    _seen: set[str] = field(default_factory=set)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class Supervisor:
    """Owns a set of supervised tasks; ``stop()`` cancels them all."""

    stop_timeout = 5.0  # seconds stop() waits for cancelled tasks, per attempt

    def __init__(self, name: str = "hub") -> None:
        self.name = name
        self._items: list[Supervised] = []
        self._stopping = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        on_crash: CrashHook | None = None,
        backoff: Backoff | None = None,
        stable_after: float = 30.0,
    ) -> Supervised:
        """Start ``factory()`` as a supervised task named ``name``."""
        item = Supervised(name, factory, on_crash, backoff or Backoff(), stable_after)
        item.task = asyncio.get_running_loop().create_task(self._run(item), name=name)
        self._items.append(item)
        return item

    @property
    def items(self) -> list[Supervised]:
        return list(self._items)

    async def _run(self, item: Supervised) -> None:
        while True:
            started = time.monotonic()
            try:
                await item.factory()
                return  # finished on its own: nothing to restart
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                current = asyncio.current_task()
                if self._stopping or (current is not None and current.cancelling()):
                    # stopping: a task that turned its cancellation into another error
                    # (a failing cleanup) is not restarted; say what happened, once
                    log.warning(
                        "task failed while stopping",
                        extra={"task": item.name, "error": f"{type(exc).__name__}: {exc}"},
                    )
                    return
                if time.monotonic() - started >= item.stable_after:
                    item.backoff.reset()  # it had been healthy: start the back-off over
                delay = item.backoff.next_delay()
                self._report(item, exc, delay)
            item.restarting_at = time.time() + delay
            try:
                await asyncio.sleep(delay)
            finally:
                item.restarting_at = None

    def _report(self, item: Supervised, exc: Exception, delay: float) -> None:
        item.crashes += 1
        item.last_error = f"{type(exc).__name__}: {exc}"
        signature = _signature(exc)
        extra = {
            "task": item.name,
            "error": item.last_error[:500],
            "crashes": item.crashes,
            "restart_in_s": round(delay, 2),
        }
        if signature not in item._seen:
            if len(item._seen) < 32:
                item._seen.add(signature)
            log.error("task failed; restarting it", exc_info=exc, extra=extra)
        else:
            log.error("task failed again the same way; restarting it", extra=extra)
        if item.on_crash is not None:
            try:
                item.on_crash(exc)
            except Exception:
                log.exception("the crash handler of a task failed", extra={"task": item.name})

    async def stop(self) -> None:
        """Cancel every task and wait for it; old exceptions are never re-raised."""
        self._stopping = True
        tasks = [i.task for i in self._items if i.task is not None and not i.task.done()]
        for attempt in range(3):
            for t in tasks:
                t.cancel()
            if not tasks:
                break
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            tasks = list(pending)
            if tasks:  # one swallowed its cancellation: ask again, then give up
                log.error(
                    "a task did not stop when cancelled",
                    extra={"tasks": [t.get_name() for t in tasks], "attempt": attempt + 1},
                )
        self._items.clear()


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` and wait until they have ended.

    Unlike ``task.cancel(); with suppress(CancelledError): await task``, this never
    swallows a cancellation of the *caller* that arrives while it waits: a task that
    swallowed its own cancellation would run on (a link reconnecting forever) and hang
    the shutdown that cancelled it.
    """
    live = [t for t in tasks if t is not None and not t.done()]
    for t in live:
        t.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)


def _signature(exc: BaseException) -> str:
    """Where and how a task failed: the exception type and the innermost frame."""
    tb = exc.__traceback__
    where = ""
    while tb is not None:
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"{type(exc).__name__}@{where}"
