"""EmberLink: the asyncio driver of :class:`~.ember.consumer.EmberConsumer`.

It only moves bytes and time: it connects to Companion's Ember+ provider (TCP 9092),
feeds what it reads to the consumer, calls its ``tick`` every 100 ms, writes what the
consumer wants sent, and hands the consumer's events to the adapter. When the
connection ends, or the consumer reports :class:`~.ember.consumer.Stalled` (Companion
rebuilt its tree and silently abandoned this connection), it closes the socket and
starts over with a new consumer at once (a rebuild is normal operation), with a
back-off only when connecting fails.

Link states go to ``on_state``: ``connecting``, ``connected`` (both variable lists
received), ``disconnected`` (with the reason and the next retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ...supervisor import Backoff
from ..linkstate import LinkState
from .ember.consumer import (
    ConsumerOptions,
    EmberConsumer,
    EmberProblem,
    Event,
    Stalled,
    VariablesListed,
)

log = logging.getLogger("companion_hub.adapters.companion")

StateCallback = Callable[[LinkState, str, float | None], None]
EventCallback = Callable[[Event], None]

EMBER_PORT = 9092


@dataclass
class EmberTiming:
    """Timing of the Ember+ link (seconds)."""

    connect_timeout: float = 3.0
    # a GetDirectory on the root: is the provider still answering? After a rebuild it is
    # not: a new connection within probe_interval + request_timeout sees the new tree
    probe_interval: float = 0.8
    request_timeout: float = 0.7
    list_timeout: float = 10.0  # connected, but the variable lists not complete by then
    backoff_base: float = 0.5
    backoff_max: float = 10.0


class EmberUnreachable(Exception):
    """No Ember+ provider answered (refused, timed out, or never listed)."""


class EmberLink:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_event: EventCallback,
        on_state: StateCallback,
        timing: EmberTiming | None = None,
        hold: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.on_event = on_event
        self.on_state = on_state
        self.timing = timing or EmberTiming()
        self.hold = hold  # back-pressure: awaited before reading more (the log is behind)
        self.consumer: EmberConsumer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connections = 0  # sessions that listed the variables
        self.stalls = 0  # abandoned by the provider (a rebuild), reconnected
        self.listed = False

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def write(self, data: bytes) -> None:
        """Send a frame the consumer made (a variable write); dropped when not connected."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def run(self) -> None:
        """Connect, serve, reconnect: forever (cancel to stop)."""
        t = self.timing
        backoff = Backoff(t.backoff_base, t.backoff_max)
        while True:
            self.on_state(LinkState.CONNECTING, f"connecting to Ember+ at {self.url}", None)
            try:
                stalled = await self._session()
            except (OSError, EmberUnreachable, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                delay = backoff.next_delay()
                self.on_state(LinkState.DISCONNECTED, reason[:300], time.time() + delay)
                await asyncio.sleep(delay)
                continue
            if stalled:  # the provider rebuilt its tree: a new connection sees it
                self.stalls += 1
                backoff.reset()
                continue
            if self.listed:  # a good session ended (Companion restarting): start over
                backoff.reset()
            delay = backoff.next_delay()
            self.on_state(
                LinkState.DISCONNECTED,
                "Companion closed the Ember+ connection",
                time.time() + delay,
            )
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One connection; True when it ended because the provider stalled."""
        t = self.timing
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), t.connect_timeout
            )
        except ConnectionRefusedError:
            raise EmberUnreachable(
                f"nothing listens on {self.url} (enable Ember+ in Companion: "
                "Settings > Protocols > Ember+)"
            ) from None
        except TimeoutError:
            raise EmberUnreachable(f"{self.url} did not accept a connection in time") from None
        loop = asyncio.get_running_loop()
        consumer = EmberConsumer(ConsumerOptions(t.probe_interval, t.request_timeout))
        self.consumer = consumer
        self._writer = writer
        self.listed = False
        started = loop.time()
        outcome: list[bool] = []

        def handle(events: list[Event]) -> None:
            out = consumer.data_to_send()
            if out and not writer.is_closing():
                writer.write(out)
            for ev in events:
                if isinstance(ev, Stalled):
                    log.info(
                        "Ember+ provider stopped answering (Companion rebuilt its tree): "
                        "reconnecting",
                        extra={"reason": ev.reason},
                    )
                    outcome.append(True)
                    continue
                if isinstance(ev, EmberProblem):
                    log.warning(
                        "Ember+: unusable data from Companion",
                        extra={"kind": ev.kind, "detail": ev.detail[:200]},
                    )
                if isinstance(ev, VariablesListed) and ev.kind == "custom" and not self.listed:
                    self.listed = True
                    self.connections += 1
                self.on_event(ev)
                if isinstance(ev, VariablesListed) and ev.kind == "custom":
                    self.on_state(LinkState.CONNECTED, f"Ember+ at {self.url}", None)

        async def read() -> None:
            while data := await reader.read(65536):
                if self.hold is not None:
                    await self.hold()
                handle(consumer.feed(data, loop.time()))
                if outcome:
                    return
            outcome.append(False)

        async def tick() -> None:
            while not outcome:
                await asyncio.sleep(0.1)
                now = loop.time()
                handle(consumer.tick(now))
                if not self.listed and now - started > t.list_timeout:
                    raise EmberUnreachable(
                        f"{self.url} accepted a connection but listed no variables in "
                        f"{t.list_timeout:g} s (is it Companion's Ember+ provider?)"
                    )

        writer.write(consumer.start(loop.time()))
        tasks = [loop.create_task(read()), loop.create_task(tick())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._writer = None
            self.consumer = None
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        return bool(outcome and outcome[0])
