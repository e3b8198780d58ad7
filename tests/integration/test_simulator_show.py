"""The demo scenario as a small show, in a running simulator: camera buttons set
``preview``/``program`` and their colours follow (feedback), CUT swaps, the stage timer
counts down, MSG shows a custom variable a hub client can set."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from companion_hub.adapters.companion.codec import parse_line
from companion_hub.simulator import CompanionSimulator, demo_scenario

RED, GREEN, GREY = 0xCC0000, 0x00AA00, 0x333333
DEADLINE = 15.0  # generous: a loaded machine


@pytest.fixture
async def sim() -> AsyncIterator[CompanionSimulator]:
    s = CompanionSimulator(demo_scenario(), clock=True, connection_status_changes=False)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http(sim: CompanionSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.http_port}") as session:
        yield session


async def press(http: aiohttp.ClientSession, location: str) -> None:
    async with http.post(f"/api/location/{location}/press") as resp:
        assert resp.status == 200, location


async def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def bg(sim: CompanionSimulator, page: int, row: int, col: int) -> int | None:
    btn = sim.button(page, row, col)
    assert btn is not None
    return btn.look().bgcolor


def camera_colours(sim: CompanionSimulator, row: int) -> list[int | None]:
    return [bg(sim, 1, row, col) for col in range(4)]


class Satellite:
    """A bare Satellite TCP client: subscriptions and their SUB-STATE lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, text: str) -> None:
        self.writer.write(text.encode())
        await self.writer.drain()

    async def until(self, check: Callable[[str, dict[str, Any]], bool]) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            while True:
                line = (await self.reader.readline()).decode()
                if not line:
                    raise EOFError
                cmd, params = parse_line(line.rstrip("\n").rstrip(" "))
                if check(cmd, params):
                    return params

        return await asyncio.wait_for(read(), DEADLINE)


async def test_preview_program_and_cut_with_tally_feedback(
    sim: CompanionSimulator, http: aiohttp.ClientSession
) -> None:
    # the start: CAM 1 on program, CAM 2 on preview, on both rows
    assert (sim.custom_variables["program"], sim.custom_variables["preview"]) == ("CAM 1", "CAM 2")
    for row in (0, 1):
        assert camera_colours(sim, row) == [RED, GREEN, GREY, GREY]
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.satellite_port)
    sat = Satellite(reader, writer)
    try:
        await sat.send("ADD-SUB SUBID=pvw3 LOCATION=1/1/2 COLORS=1 TEXT=1\n")
        first = await sat.until(lambda c, p: c == "SUB-STATE" and p.get("SUBID") == "pvw3")
        assert first["COLOR"] == "#333333"
        assert base64.b64decode(first["TEXT"]).decode() == "CAM 3"

        # a preview-row press: preview is CAM 3, its buttons turn green, CAM 2 goes grey
        await press(http, "1/1/2")
        await wait_for(lambda: sim.custom_variables["preview"] == "CAM 3", "preview = CAM 3")
        await wait_for(lambda: bg(sim, 1, 1, 2) == GREEN, "PVW CAM 3 green")
        assert camera_colours(sim, 1) == [RED, GREY, GREEN, GREY]
        assert camera_colours(sim, 0) == [RED, GREY, GREEN, GREY]  # tally: both rows
        green = await sat.until(lambda c, p: c == "SUB-STATE" and p.get("COLOR") == "#00aa00")
        assert green["SUBID"] == "pvw3"  # a Satellite subscriber sees the colour change

        # CUT swaps them: CAM 3 on program (red), CAM 1 on preview (green)
        await press(http, "1/1/5")
        await wait_for(lambda: sim.custom_variables["program"] == "CAM 3", "program = CAM 3")
        assert sim.custom_variables["preview"] == "CAM 1"
        await wait_for(lambda: bg(sim, 1, 0, 2) == RED, "CAM 3 red")
        assert camera_colours(sim, 0) == [GREEN, GREY, RED, GREY]
        await sat.until(lambda c, p: c == "SUB-STATE" and p.get("COLOR") == "#cc0000")
        pgm = sim.button(1, 0, 4)
        assert pgm is not None and pgm.rendered_text == "PGM\nCAM 3"

        # a program-row press cuts straight to program: CAM 4 red, CAM 3 grey again
        await press(http, "1/0/3")
        await wait_for(lambda: sim.custom_variables["program"] == "CAM 4", "program = CAM 4")
        await wait_for(lambda: bg(sim, 1, 0, 3) == RED, "CAM 4 red")
        assert camera_colours(sim, 0) == [GREEN, GREY, GREY, RED]
        await sat.until(lambda c, p: c == "SUB-STATE" and p.get("COLOR") == "#333333")
    finally:
        writer.close()


async def test_stage_timer_counts_down_stops_and_resets(
    sim: CompanionSimulator, http: aiohttp.ClientSession
) -> None:
    def timer() -> str:
        return str(sim.custom_variables["timer"])

    def shown() -> str:
        btn = sim.button(1, 2, 0)
        assert btn is not None
        return btn.rendered_text

    assert timer() == "05:00" and shown() == "TIMER\n05:00"
    await press(http, "1/2/1")  # START
    await wait_for(lambda: timer() < "05:00", "the timer to count down")
    assert timer().startswith("04:")
    await wait_for(lambda: shown() == f"TIMER\n{timer()}", "the button to show it")

    await press(http, "1/2/2")  # STOP: it holds its value over the next ticks
    await wait_for(lambda: "timer" not in sim.timers, "the timer to stop")
    held = timer()
    await asyncio.sleep(2.5)
    assert timer() == held

    await press(http, "1/2/3")  # RESET
    await wait_for(lambda: timer() == "05:00", "the reset")

    # a value set from outside is counted down from; at 00:00 it stops and turns red
    sim.set_custom_variable("timer", "00:02")
    await press(http, "1/2/1")
    await wait_for(lambda: timer() == "00:00", "the timer to run out")
    await wait_for(lambda: "timer" not in sim.timers, "the timer to stop at 00:00")
    assert bg(sim, 1, 2, 0) == RED


async def test_msg_shows_a_custom_variable_set_over_http(
    sim: CompanionSimulator, http: aiohttp.ClientSession
) -> None:
    """What `companion-hub call companion set_variable name=hub_message value=hello` does."""
    msg = sim.button(1, 2, 4)
    assert msg is not None and msg.rendered_text == "MSG\n"
    async with http.post("/api/custom-variable/hub_message/value?value=hello") as resp:
        assert resp.status == 200
    await wait_for(lambda: msg.rendered_text == "MSG\nhello", "MSG to show the message")
