"""The Ember+ consumer over real TCP against CompanionSimulator(ember_port=0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from companion_hub.adapters.companion.ember.consumer import (
    ConsumerOptions,
    EmberConsumer,
    Event,
    Stalled,
    VariableChanged,
    VariablesListed,
)
from companion_hub.simulator import CompanionSimulator
from companion_hub.simulator.scenario import scenario_from_dict


class Client:
    """A minimal asyncio driver for EmberConsumer (the adapter will have its own)."""

    def __init__(self, port: int, options: ConsumerOptions | None = None) -> None:
        self.port = port
        self.consumer = EmberConsumer(options or ConsumerOptions(0.3, 0.8))
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        loop = asyncio.get_running_loop()
        self.writer.write(self.consumer.start(loop.time()))

        async def read() -> None:
            while data := await reader.read(65536):
                self._emit(self.consumer.feed(data, loop.time()))

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.05)
                self._emit(self.consumer.tick(loop.time()))

        self._tasks = [loop.create_task(read()), loop.create_task(tick())]

    def _emit(self, events: list[Event]) -> None:
        assert self.writer is not None
        out = self.consumer.data_to_send()
        if out:
            self.writer.write(out)
        for e in events:
            self.events.put_nowait(e)

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def wait_for(self, pred: type | object, timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            e = await asyncio.wait_for(self.events.get(), deadline - time.monotonic())
            if (isinstance(pred, type) and isinstance(e, pred)) or e == pred:
                return e

    async def listed(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        while len(out) < 2:
            e = await self.wait_for(VariablesListed)
            assert isinstance(e, VariablesListed)
            out[e.kind] = e.values
        return out

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.writer is not None:
            self.writer.close()


@pytest.fixture
async def sim() -> AsyncIterator[CompanionSimulator]:
    s = CompanionSimulator(
        scenario_from_dict({"custom_variables": {"cue": 0, "name": "hello"}}),
        ember_port=0,
    )
    s.ember_rebuild_delay = 0.3
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        await c.close()


async def connect(sim: CompanionSimulator, clients: list[Client]) -> Client:
    assert sim.ember_port
    c = Client(sim.ember_port)
    clients.append(c)
    await c.start()
    return c


async def test_list_and_push_after_http_post(
    sim: CompanionSimulator, clients: list[Client]
) -> None:
    c = await connect(sim, clients)
    lists = await c.listed()
    assert lists["custom"] == {"cue": "0", "name": "hello"}
    assert "time_hms" in lists["internal"]
    url = f"http://127.0.0.1:{sim.http_port}/api/custom-variable/cue/value?value=42"
    async with aiohttp.ClientSession() as http, http.post(url) as r:
        assert r.status == 200
    await c.wait_for(VariableChanged("custom", "cue", "42"), timeout=2.0)


async def test_new_variable_rebuild_abandons_old_connection(
    sim: CompanionSimulator, clients: list[Client]
) -> None:
    old = await connect(sim, clients)
    await old.listed()
    sim.create_custom_variable("fresh", "new")
    stalled = await old.wait_for(Stalled, timeout=5.0)
    assert isinstance(stalled, Stalled)
    assert sim.ember is not None and sim.ember.rebuilds == 1
    assert old.writer is not None and not old.writer.is_closing()  # still open
    new = await connect(sim, clients)
    lists = await new.listed()
    assert lists["custom"]["fresh"] == "new"
    assert isinstance(lists["internal"]["uptime"], int)  # typed after a rebuild


async def test_writes(sim: CompanionSimulator, clients: list[Client]) -> None:
    c = await connect(sim, clients)
    lists = await c.listed()
    c.send(c.consumer.write("internal", "instance_oks", "99"))
    c.send(c.consumer.write_custom("name", "over ember"))
    await c.wait_for(VariableChanged("custom", "name", "over ember"))
    url = f"http://127.0.0.1:{sim.http_port}/api/custom-variable/name/value"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert await r.text() == "over ember"
    assert c.consumer.values("internal")["instance_oks"] == lists["internal"]["instance_oks"]
    assert str(sim.variable_value("internal", "instance_oks")) != "99"
