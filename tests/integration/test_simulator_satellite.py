"""Conformance of the Companion simulator's Satellite side (reference section 5, items 1-25).

A raw client (asyncio streams / aiohttp WebSocket) talks to a real listening
simulator on 127.0.0.1; nothing of the adapter is used.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from companion_hub.simulator import CompanionSimulator
from companion_hub.simulator.scenario import scenario_from_dict

SCENARIO: dict[str, Any] = {
    "device_page": 1,
    "custom_variables": {"cue": 0, "name": "hello", "fader": ""},
    "module_variables": {"mod:val": "m1"},
    "connections": [{"id": "c1", "label": "mod", "moduleId": "generic"}],
    "pages": [
        {
            "number": 1,
            "buttons": [
                {"row": 0, "column": 0, "text": "A", "bgcolor": "#ff0000", "color": "#ffffff"},
                {"row": 0, "column": 1, "text": "L", "behaviour": "latch"},
                {"row": 0, "column": 2, "text": "CUE $(custom:cue)", "behaviour": "counter:cue"},
                {"row": 0, "column": 3, "type": "PAGEUP"},
                {"row": 1, "column": 0, "text": "$(custom:name)", "font_size": 18},
                {"row": 1, "column": 1, "text": "$(mod:val)"},
                {"row": 1, "column": 2, "text": "S", "behaviour": "set:name=pressed"},
            ],
        },
        {"number": 2, "buttons": [{"row": 0, "column": 0, "text": "P2"}]},
    ],
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def b64j(obj: Any) -> str:
    return b64(json.dumps(obj))


def parse(line: str) -> tuple[str, dict[str, Any]]:
    from companion_hub.adapters.companion.codec import parse_line

    assert line.endswith(" \n"), repr(line)
    return parse_line(line[:-1])


class TcpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> TcpClient:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=8 * 1024 * 1024)
        return cls(r, w)

    async def send(self, text: str) -> None:
        self.writer.write(text.encode())
        await self.writer.drain()

    async def line(self, timeout: float = 2.0) -> str:
        data = await asyncio.wait_for(self.reader.readline(), timeout)
        if not data:
            raise EOFError
        return data.decode()

    async def closed(self, timeout: float = 2.0) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()


class WsClient:
    """Companion's Satellite protocol over WebSocket, to the simulator: not the hub's
    protocol, so not the SDK's business."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws
        self.frames: list[str] = []

    @classmethod
    async def connect(cls, port: int, path: str = "/") -> WsClient:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}{path}", autoping=False)
        return cls(session, ws)

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def line(self, timeout: float = 2.0) -> str:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise EOFError(msg.type)
        # one message per text frame, each a full line
        assert msg.data.endswith("\n") and msg.data.count("\n") == 1, repr(msg.data)
        self.frames.append(msg.data)
        return str(msg.data)

    async def closed(self, timeout: float = 2.0) -> bool:
        try:
            while True:
                msg = await asyncio.wait_for(self.ws.receive(), timeout)
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


Client = TcpClient | WsClient


async def handshake(c: Client) -> tuple[str, str]:
    return await c.line(), await c.line()


async def until(c: Client, prefix: str, timeout: float = 2.0) -> str:
    """The next line starting with ``prefix`` (others are skipped)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        line = await c.line(max(0.01, end - loop.time()))
        if line.startswith(prefix):
            return line


async def sync(c: Client, token: str = "sync") -> list[str]:
    """Everything received until the PONG for a PING sent now (a barrier).

    The short sleep lets the simulator finish "next turn" work (BRIGHTNESS and the
    page after ADD-DEVICE, the initial SUB-STATE) before the PING is read.
    """
    await asyncio.sleep(0.03)
    await c.send(f"PING {token}\n")
    seen: list[str] = []
    while True:
        line = await c.line()
        if line == f"PONG {token} \n":
            return seen
        seen.append(line)


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Any]]:
    sims: list[CompanionSimulator] = []

    async def start(**kw: Any) -> CompanionSimulator:
        kw.setdefault("scenario", scenario_from_dict(json.loads(json.dumps(SCENARIO))))
        kw.setdefault("clock", False)
        sim = CompanionSimulator(**kw)
        await sim.start()
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def sim(make_sim: Callable[..., Any]) -> CompanionSimulator:
    s: CompanionSimulator = await make_sim()
    return s


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for c in opened:
        try:
            await c.close()
        except Exception:
            pass


@pytest.fixture
def connect(sim: CompanionSimulator, clients: list[Client]) -> Callable[..., Any]:
    async def open_(transport: str = "tcp", hello: bool = True) -> Client:
        c: Client
        if transport == "tcp":
            c = await TcpClient.connect(sim.satellite_port)
        else:
            c = await WsClient.connect(sim.ws_port, "/any/path")
        clients.append(c)
        if hello:
            await handshake(c)
        return c

    return open_


# --- 1-3: handshake and formatting --------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_handshake_begin_then_caps(transport: str, connect: Callable[..., Any]) -> None:
    c = await connect(transport, hello=False)
    assert (
        await c.line()
        == 'BEGIN CompanionVersion="5.1.0+9100-main-3d76cba000" ApiVersion="1.14.0" \n'
    )
    assert (
        await c.line()
        == 'CAPS SUBSCRIPTIONS=1 NONSQUARE=1 BITMAP_FORMATS="rgb,png,webp" ROTARY_AMOUNT=1 \n'
    )


async def test_caps_follow_version_and_setting(make_sim: Callable[..., Any]) -> None:
    sim = await make_sim(subscriptions=False, api_version="1.12.0", companion_version="5.0.3+1-x-y")
    c = await TcpClient.connect(sim.satellite_port)
    assert await c.line() == 'BEGIN CompanionVersion="5.0.3+1-x-y" ApiVersion="1.12.0" \n'
    assert await c.line() == 'CAPS SUBSCRIPTIONS=0 NONSQUARE=1 BITMAP_FORMATS="rgb,png,webp" \n'
    await c.close()
    old = await make_sim(api_version="1.9.0")
    c = await TcpClient.connect(old.satellite_port)
    assert (await c.line()).startswith("BEGIN ")
    assert await sync(c) == []  # no CAPS before 1.10.0
    await c.send("ADD-SUB SUBID=s LOCATION=1/0/0\n")
    assert await c.line() == 'ERROR MESSAGE="Unknown command: ADD-SUB" \n'
    await c.close()


# --- 4-7: framing, unknown commands, ping, quit, line cap ---------------------------


async def test_framing_chunks_split_lines_crlf(connect: Callable[..., Any]) -> None:
    c = await connect()
    await c.send("PING a\nping b\r\nPI")
    assert await c.line() == "PONG a \n"
    assert await c.line() == "PONG b \n"  # lower-case command, \r dropped
    await c.send("NG c")
    await asyncio.sleep(0.05)
    await c.send("\n")
    assert await c.line() == "PONG c \n"


async def test_unknown_and_blank_commands(connect: Callable[..., Any]) -> None:
    c = await connect()
    await c.send("bogus X=1\n\n leading\nPONG 5\n")
    assert await c.line() == 'ERROR MESSAGE="Unknown command: BOGUS" \n'
    assert await c.line() == 'ERROR MESSAGE="Unknown command: " \n'
    assert await c.line() == 'ERROR MESSAGE="Unknown command: " \n'
    assert await sync(c) == []  # PONG from the client gets no reply


async def test_ping_echo_verbatim(connect: Callable[..., Any]) -> None:
    c = await connect()
    await c.send('PING\nPING  two  spaces "q" \\x\n')
    assert await c.line() == "PONG  \n"
    assert await c.line() == 'PONG  two  spaces "q" \\x \n'


async def test_quit_closes_without_reply(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    await c.send('ADD-DEVICE DEVICEID="q1" PRODUCT_NAME="p"\nQUIT\n')
    assert await c.line() == 'ADD-DEVICE OK DEVICEID="q1" \n'
    assert await c.closed()
    await asyncio.sleep(0.05)
    assert sim.satellite_clients == 0
    assert sim.devices() == []  # devices go with the connection


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_line_cap(
    transport: str, connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect(transport)
    # exactly the cap is still fine: the line is processed once it is complete
    await c.send("PING ok\n" + "x" * sim.max_line_chars)
    assert await c.line() == "PONG ok \n"
    await c.send("\n")
    assert (await c.line(5)).startswith('ERROR MESSAGE="Unknown command: XXXX')
    assert await sync(c) == []
    c2 = await connect(transport)
    await c2.send("y" * (sim.max_line_chars + 1))
    assert await c2.line(5) == 'ERROR ERROR MESSAGE="Line too long" \n'
    assert await c2.closed()


# --- 8: idle timeouts ---------------------------------------------------------------


async def test_tcp_idle_timeout_counts_both_directions(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    sim.idle_timeout = 0.4
    c = await connect()
    for _ in range(8):  # client traffic keeps it open for > 2 x timeout
        await c.send("PING k\n")
        assert await c.line() == "PONG k \n"
        await asyncio.sleep(0.1)
    t0 = asyncio.get_running_loop().time()
    assert await c.closed(10.0)
    # not before the idle timeout (less the last PONG's 0.1 s), and within a generous
    # deadline: a loaded machine may be slow, never early
    assert asyncio.get_running_loop().time() - t0 >= 0.25
    # server traffic alone also keeps a TCP connection alive
    c2 = await connect()
    await c2.send('ADD-DEVICE DEVICEID="busy" PRODUCT_NAME="p" KEYS_TOTAL=1 KEYS_PER_ROW=1\n')
    await until(c2, "KEY-STATE")
    for i in range(8):
        sim.set_button(1, 0, 0, text=f"n{i}")
        assert (await until(c2, "KEY-STATE")).startswith('KEY-STATE DEVICEID="busy" KEY=0')
        await asyncio.sleep(0.1)


async def test_ws_idle_timeout_ignores_server_frames(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    sim.idle_timeout = 0.4
    sim.ws_idle_check_interval = 0.1
    c = await connect("ws")
    await c.send('ADD-DEVICE DEVICEID="w" PRODUCT_NAME="p" KEYS_TOTAL=1 KEYS_PER_ROW=1\n')
    await until(c, "KEY-STATE")
    closed = False
    for i in range(20):
        sim.set_button(1, 0, 0, text=f"n{i}")  # server frames do not count
        try:
            await until(c, "KEY-STATE", 0.1)
        except (EOFError, TimeoutError):
            closed = True
            break
        await asyncio.sleep(0.05)
    assert closed or await c.closed(10.0)


# --- 9: fault injection --------------------------------------------------------------


async def test_drop_replies_reply_delay_and_send_raw(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    sim.drop_replies("ping", 1)
    await c.send("PING lost\nPING seen\n")
    assert await c.line() == "PONG seen \n"
    sim.reply_delay = 0.2
    t0 = asyncio.get_running_loop().time()
    await c.send("PING slow\n")
    assert await c.line() == "PONG slow \n"
    assert asyncio.get_running_loop().time() - t0 >= 0.18
    sim.reply_delay = 0.0
    await sim.send_raw(b"GARBAGE \xff\n")
    assert (await c.reader.readline()) == b"GARBAGE \xff\n"  # type: ignore[union-attr]


async def test_stall_keeps_socket_open_without_answers(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    sim.idle_timeout = 0.3
    c = await connect()
    sim.stall(True)
    await c.send("PING dead\n")
    with pytest.raises(TimeoutError):
        await c.line(0.6)  # no PONG, and no idle close either
    assert sim.satellite_clients == 1
    sim.stall(False)
    assert await c.line() == "PONG dead \n"


async def test_silent_accept_never_sends_begin(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    sim.silent_accept(True)
    c = await connect(hello=False)
    await c.send("PING x\n")
    with pytest.raises(TimeoutError):
        await c.line(0.3)
    sim.silent_accept(False)
    c2 = await connect(hello=False)
    assert (await c2.line()).startswith("BEGIN ")


async def test_drop_connections(connect: Callable[..., Any], sim: CompanionSimulator) -> None:
    a = await connect()
    b = await connect("ws")
    assert sim.satellite_clients == 2
    await sim.drop_connections()
    assert await a.closed() and await b.closed()
    assert sim.satellite_clients == 0


# --- 10-12: devices ----------------------------------------------------------------

ADD_DEVICE_CASES = [
    ("ADD-DEVICE PRODUCT_NAME=x", 'ADD-DEVICE ERROR MESSAGE="Missing DEVICEID" \n'),
    ("ADD-DEVICE DEVICEID PRODUCT_NAME=x", 'ADD-DEVICE ERROR MESSAGE="Missing DEVICEID" \n'),
    (
        "ADD-DEVICE DEVICEID=d KEYS_TOTAL=0",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Missing PRODUCT_NAME" \n',
    ),
    (
        "ADD-DEVICE DEVICEID=emulator:x PRODUCT_NAME=p",
        'ADD-DEVICE ERROR DEVICEID="emulator:x" MESSAGE="Reserved DEVICEID" \n',
    ),
    (
        "ADD-DEVICE DEVICEID=d PRODUCT_NAME=p SERIAL=group:1 KEYS_TOTAL=0",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Reserved SERIAL" \n',
    ),
    (
        "ADD-DEVICE DEVICEID=d PRODUCT_NAME=p LAYOUT_MANIFEST=bad KEYS_TOTAL=0",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid LAYOUT_MANIFEST" \n',
    ),
    (
        f"ADD-DEVICE DEVICEID=d PRODUCT_NAME=p LAYOUT_MANIFEST={b64j({'stylePresets': {}, 'controls': {}})}",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid LAYOUT_MANIFEST" \n',
    ),
    (
        "ADD-DEVICE DEVICEID=d PRODUCT_NAME=p KEYS_TOTAL=0 KEYS_PER_ROW=0",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid KEYS_TOTAL" \n',
    ),
    (
        "ADD-DEVICE DEVICEID=d PRODUCT_NAME=p KEYS_TOTAL=2001",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid KEYS_TOTAL" \n',
    ),
    (
        "ADD-DEVICE DEVICEID=d PRODUCT_NAME=p KEYS_PER_ROW=1001 VARIABLES=x",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid KEYS_PER_ROW" \n',
    ),
    (
        f"ADD-DEVICE DEVICEID=d PRODUCT_NAME=p VARIABLES={b64j([{'id': 'a', 'type': 'both', 'name': 'n'}])}",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid VARIABLES" \n',
    ),
    (
        f"ADD-DEVICE DEVICEID=d PRODUCT_NAME=p CONFIG_FIELDS={b64j([{'id': 'a', 'type': 'number', 'label': 'l'}])}",
        'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Invalid CONFIG_FIELDS" \n',
    ),
]


async def test_add_device_validation_order(connect: Callable[..., Any]) -> None:
    c = await connect()
    for line, expected in ADD_DEVICE_CASES:
        await c.send(line + "\n")
        assert await c.line() == expected, line
    await c.send("ADD-DEVICE DEVICEID=d PRODUCT_NAME=p\n")
    assert await c.line() == 'ADD-DEVICE OK DEVICEID="d" \n'
    await c.send("ADD-DEVICE DEVICEID=d PRODUCT_NAME=p KEYS_TOTAL=0\n")
    assert (
        await until(c, "ADD-DEVICE")
        == 'ADD-DEVICE ERROR DEVICEID="d" MESSAGE="Device already added" \n'
    )


async def test_device_exists_elsewhere(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    a = await connect()
    await a.send("ADD-DEVICE DEVICEID=dup PRODUCT_NAME=p KEYS_TOTAL=1 KEYS_PER_ROW=1\n")
    assert await a.line() == 'ADD-DEVICE OK DEVICEID="dup" \n'
    await sync(a)
    b = await connect("ws")
    await b.send("ADD-DEVICE DEVICEID=dup PRODUCT_NAME=p\n")
    assert await sync(b) == []  # silence to the requester
    assert (
        await until(a, "ADD-DEVICE")
        == 'ADD-DEVICE ERROR DEVICEID="dup" MESSAGE="Device exists elsewhere" \n'
    )
    await a.close()
    await asyncio.sleep(0.1)  # the id is freed when the old connection closes
    await b.send("ADD-DEVICE DEVICEID=dup PRODUCT_NAME=p\n")
    assert await b.line() == 'ADD-DEVICE OK DEVICEID="dup" \n'
    assert sim.devices()[0].session.kind == "ws"


async def test_after_add_device_brightness_then_full_page(connect: Callable[..., Any]) -> None:
    c = await connect()
    await c.send("ADD-DEVICE DEVICEID=g PRODUCT_NAME=p KEYS_TOTAL=6 KEYS_PER_ROW=4 BRIGHTNESS=0\n")
    assert await c.line() == 'ADD-DEVICE OK DEVICEID="g" \n'
    assert await c.line() == 'BRIGHTNESS DEVICEID="g" VALUE=100 \n'  # sent even with BRIGHTNESS=0
    states = [parse(await c.line()) for _ in range(6)]
    assert [s[0] for s in states] == ["KEY-STATE"] * 6
    assert sorted(int(s[1]["KEY"]) for s in states) == list(range(6))
    by_key = {s[1]["KEY"]: s[1] for s in states}
    assert by_key["5"]["LOCATION"] == "1/1/1"
    # no style requested: only KEY, LOCATION, PRESSED, TYPE
    assert set(by_key["0"]) == {"DEVICEID", "KEY", "LOCATION", "PRESSED", "TYPE"}
    assert by_key["3"]["TYPE"] == "PAGEUP"


async def test_key_state_content_per_style(connect: Callable[..., Any]) -> None:
    c = await connect()
    await c.send(
        "ADD-DEVICE DEVICEID=s PRODUCT_NAME=p KEYS_TOTAL=1 KEYS_PER_ROW=1 BITMAPS=8 COLORS=1 TEXT=1 TEXT_STYLE=yes\n"
    )
    line = await until(c, "KEY-STATE")
    assert line == (
        'KEY-STATE DEVICEID="s" KEY=0 LOCATION="1/0/0" PRESSED=0 TYPE="BUTTON" '
        f'BITMAP="{base64.b64encode(bytes([255, 0, 0]) * 64).decode()}" COLOR="#ff0000" '
        f'TEXTCOLOR="#ffffff" TEXT="{b64("A")}" FONT_SIZE="auto" \n'
    )
    await c.send(
        "ADD-DEVICE DEVICEID=r PRODUCT_NAME=p KEYS_TOTAL=5 KEYS_PER_ROW=4 COLORS=rgb BITMAPS=1 BITMAP_FORMAT=png TEXT_STYLE=1\n"
    )
    seen = {}
    while len(seen) < 5:
        _cmd, p = parse(await until(c, 'KEY-STATE DEVICEID="r"'))
        seen[p["KEY"]] = p
    assert (
        seen["0"]["COLOR"] == "rgba(255,0,0,1)" and seen["0"]["TEXTCOLOR"] == "rgba(255,255,255,1)"
    )
    assert seen["0"]["BITMAP"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert "TEXT" not in seen["0"]
    assert seen["4"]["FONT_SIZE"] == "18"  # bare number
    assert "FONT_SIZE=18 " in (await _resend_key(c, "r", 4))


async def _resend_key(c: Client, dev: str, key: int) -> str:
    await c.send(f"KEY-PRESS DEVICEID={dev} KEY={key} PRESSED=1\n")
    return await until(c, f'KEY-STATE DEVICEID="{dev}" KEY={key} ')


async def test_manifest_mode_and_key_press_validation(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    manifest = {
        "stylePresets": {
            "default": {"colors": "hex", "text": True, "junk": 1},
            "big": {"bitmap": {"w": 4, "h": 2}},
        },
        "controls": {
            "0/0": {"row": 0, "column": 0},
            "knob": {"row": 0, "column": 1, "stylePreset": "big"},
        },
    }
    await c.send(
        f"ADD-DEVICE DEVICEID=m PRODUCT_NAME=p LAYOUT_MANIFEST={b64j(manifest)} KEYS_TOTAL=0\n"
    )
    assert await c.line() == 'ADD-DEVICE OK DEVICEID="m" \n'
    got = {}
    while len(got) < 2:
        _, p = parse(await until(c, "KEY-STATE"))
        got[p["CONTROLID"]] = p
    assert got["0/0"]["TEXT"] == b64("A") and got["0/0"]["COLOR"] == "#ff0000"
    assert base64.b64decode(got["knob"]["BITMAP"]) == b"\0\0\0" * 8  # latch button "L" is black
    cases = [
        ("KEY-PRESS PRESSED=1", 'KEY-PRESS ERROR MESSAGE="Missing DEVICEID" \n'),
        (
            "KEY-PRESS DEVICEID=zz PRESSED=1",
            'KEY-PRESS ERROR DEVICEID="zz" MESSAGE="Device not found" \n',
        ),
        (
            "KEY-PRESS DEVICEID=m KEY=0 PRESSED=1",
            'KEY-PRESS ERROR DEVICEID="m" MESSAGE="Missing CONTROLID" \n',
        ),
        (
            "KEY-PRESS DEVICEID=m CONTROLID=nope",
            'KEY-PRESS ERROR DEVICEID="m" MESSAGE="Missing PRESSED" \n',
        ),
        (
            "KEY-PRESS DEVICEID=m CONTROLID=nope PRESSED=1",
            'KEY-PRESS ERROR DEVICEID="m" MESSAGE="Unknown CONTROLID" \n',
        ),
        (
            "KEY-ROTATE DEVICEID=m CONTROLID=knob",
            'KEY-ROTATE ERROR DEVICEID="m" MESSAGE="Missing DIRECTION" \n',
        ),
        ("KEY-ROTATE DEVICEID=m CONTROLID=knob DIRECTION=-3", 'KEY-ROTATE OK DEVICEID="m" \n'),
    ]
    for line, expected in cases:
        await c.send(line + "\n")
        assert await until(c, line.split()[0]) == expected, line
    assert sim.presses[-1].action == "rotate" and sim.presses[-1].amount == -3
    assert sim.presses[-1].source == "satellite-device:m" and sim.presses[-1].location == "1/0/1"


async def test_grid_key_validation_and_press_mapping(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    await c.send("ADD-DEVICE DEVICEID=k PRODUCT_NAME=p KEYS_TOTAL=7 KEYS_PER_ROW=4 TEXT=1\n")
    await sync(c)
    cases = [
        ("KEY-PRESS DEVICEID=k PRESSED=1", "Missing KEY"),
        ("KEY-PRESS DEVICEID=k KEY=8 PRESSED=1", "Invalid KEY"),  # 2 rows x 4 columns
        ("KEY-PRESS DEVICEID=k KEY=2/0 PRESSED=1", "Invalid KEY"),
        ("KEY-PRESS DEVICEID=k KEY=abc", "Invalid KEY"),
        ("KEY-PRESS DEVICEID=k KEY=1", "Missing PRESSED"),
        ("KEY-PRESS DEVICEID=k KEY=1 PRESSED=", "Missing PRESSED"),
    ]
    for line, message in cases:
        await c.send(line + "\n")
        assert await c.line() == f'KEY-PRESS ERROR DEVICEID="k" MESSAGE="{message}" \n', line
    await c.send(
        "KEY-PRESS DEVICEID=k KEY=+1/+1 PRESSED=1\nKEY-PRESS DEVICEID=k KEY=7 PRESSED=no\n"
    )
    assert await c.line() == 'KEY-PRESS OK DEVICEID="k" \n'
    assert await until(c, "KEY-PRESS") == 'KEY-PRESS OK DEVICEID="k" \n'  # 7 is in the 2x4 grid
    await sync(c)
    assert [(p.location, p.action) for p in sim.presses[-2:]] == [
        ("1/1/1", "down"),
        ("1/1/3", "down"),
    ]


async def test_latch_counter_set_and_page_buttons(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    await c.send("ADD-DEVICE DEVICEID=k PRODUCT_NAME=p KEYS_TOTAL=8 KEYS_PER_ROW=4 TEXT=1\n")
    await sync(c)
    # latch: PRESSED stays 1 after release, toggles on the next press
    await c.send("KEY-PRESS DEVICEID=k KEY=1 PRESSED=1\n")
    assert "PRESSED=1" in await until(c, 'KEY-STATE DEVICEID="k" KEY=1 ')
    await c.send("KEY-PRESS DEVICEID=k KEY=1 PRESSED=0\n")
    assert await sync(c) == ['KEY-PRESS OK DEVICEID="k" \n']  # no visible change
    assert sim.button(1, 0, 1).pressed  # type: ignore[union-attr]
    # plain button: PRESSED=1 while held
    await c.send("KEY-PRESS DEVICEID=k KEY=0 PRESSED=1\n")
    assert "PRESSED=1" in await until(c, 'KEY-STATE DEVICEID="k" KEY=0 ')
    await c.send("KEY-PRESS DEVICEID=k KEY=0 PRESSED=0\n")
    assert "PRESSED=0" in await until(c, 'KEY-STATE DEVICEID="k" KEY=0 ')
    # counter: increments custom:cue, the button shows it
    await c.send("KEY-PRESS DEVICEID=k KEY=2 PRESSED=1\nKEY-PRESS DEVICEID=k KEY=2 PRESSED=0\n")
    await sync(c)
    await c.send("KEY-PRESS DEVICEID=k KEY=2 PRESSED=1\n")
    line = await until(c, 'KEY-STATE DEVICEID="k" KEY=2 ')
    assert f'TEXT="{b64("CUE 2")}"' in line and sim.custom_variables["cue"] == 2
    # set: writes a custom variable, which re-renders $(custom:name) at 1/1/0
    await c.send("KEY-PRESS DEVICEID=k KEY=6 PRESSED=1\n")
    assert f'TEXT="{b64("pressed")}"' in await until(c, 'KEY-STATE DEVICEID="k" KEY=4 ')
    # PAGEUP: the device shows page 2 (full redraw), a release goes to the pressed location
    await c.send("KEY-PRESS DEVICEID=k KEY=0 PRESSED=1\nKEY-PRESS DEVICEID=k KEY=3 PRESSED=1\n")
    redraw = await sync(c)
    assert sum('LOCATION="2/' in line for line in redraw) == 8
    await c.send("KEY-PRESS DEVICEID=k KEY=0 PRESSED=0\n")
    await sync(c)
    assert sim.presses[-1].location == "1/0/0" and sim.presses[-1].action == "up"
    assert not sim.button(1, 0, 0).pressed  # type: ignore[union-attr]


async def test_button_changes_reach_only_viewers(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    await c.send(
        "ADD-DEVICE DEVICEID=v PRODUCT_NAME=p KEYS_TOTAL=2 KEYS_PER_ROW=2 TEXT=1 COLORS=hex\n"
    )
    await sync(c)
    sim.set_button(2, 0, 0, text="other page")
    sim.set_button(1, 0, 0, text="new", bgcolor="#00ff00")
    sim.set_button(1, 0, 0, text="newer")  # coalesced with the previous render
    seen = await sync(c)
    assert seen == [
        f'KEY-STATE DEVICEID="v" KEY=0 LOCATION="1/0/0" PRESSED=0 TYPE="BUTTON" COLOR="#00ff00" TEXTCOLOR="#ffffff" TEXT="{b64("newer")}" \n'
    ]
    sim.remove_button(1, 0, 0)
    assert await sync(c) == [
        'KEY-STATE DEVICEID="v" KEY=0 LOCATION="1/0/0" PRESSED=0 TYPE="BUTTON" COLOR="#000000" TEXTCOLOR="#000000" TEXT="" \n'
    ]
    sim.set_module_variable("mod", "val", "m2")  # $(mod:val) is at 1/1/1: not on this 1x2 device
    assert await sync(c) == []
    sim.set_custom_variable("name", "live")  # not visible either
    assert await sync(c) == []


async def test_device_commands_validation(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    variables = [
        {"id": "in1", "type": "input", "name": "In"},
        {"id": "out1", "type": "output", "name": "Out"},
    ]
    sim.bind_input("dv", "in1", "fader")
    sim.bind_output("dv", "out1", "$(custom:cue)")
    await c.send(
        f"ADD-DEVICE DEVICEID=dv PRODUCT_NAME=p KEYS_TOTAL=1 KEYS_PER_ROW=1 VARIABLES={b64j(variables)}\n"
    )
    assert await c.line() == 'ADD-DEVICE OK DEVICEID="dv" \n'
    assert (
        await until(c, "VARIABLE-VALUE")
        == f'VARIABLE-VALUE DEVICEID="dv" VARIABLE="out1" VALUE="{b64("0")}" \n'
    )
    cases = [
        (
            "SET-VARIABLE-VALUE DEVICEID=dv VALUE=",
            'SET-VARIABLE-VALUE ERROR DEVICEID="dv" MESSAGE="Missing VARIABLE" \n',
        ),
        (
            "SET-VARIABLE-VALUE DEVICEID=dv VARIABLE=in1 VALUE",
            'SET-VARIABLE-VALUE ERROR DEVICEID="dv" MESSAGE="Missing VALUE" \n',
        ),
        (
            f"SET-VARIABLE-VALUE DEVICEID=dv VARIABLE=in1 VALUE={b64('0.5')}",
            'SET-VARIABLE-VALUE OK DEVICEID="dv" VARIABLE="in1" \n',
        ),
        (
            f"SET-VARIABLE-VALUE DEVICEID=dv VARIABLE=unbound VALUE={b64('x')}",
            'SET-VARIABLE-VALUE OK DEVICEID="dv" VARIABLE="unbound" \n',
        ),
        (
            "PINCODE-KEY DEVICEID=dv KEY=10",
            'PINCODE-KEY ERROR DEVICEID="dv" MESSAGE="Invalid KEY" \n',
        ),
        ("PINCODE-KEY DEVICEID=dv", 'PINCODE-KEY ERROR DEVICEID="dv" MESSAGE="Missing KEY" \n'),
        (
            "FIRMWARE-UPDATE-INFO DEVICEID=dv UPDATE_URL",
            'FIRMWARE-UPDATE-INFO ERROR DEVICEID="dv" MESSAGE="Missing UPDATE_URL" \n',
        ),
        (
            'FIRMWARE-UPDATE-INFO DEVICEID=dv UPDATE_URL=""',
            'FIRMWARE-UPDATE-INFO OK DEVICEID="dv" \n',
        ),
        (
            "CHANGE-PAGE DEVICEID=dv",
            'CHANGE-PAGE ERROR DEVICEID="dv" MESSAGE="Missing DIRECTION" \n',
        ),
        ("CHANGE-PAGE DEVICEID=dv DIRECTION=1", 'CHANGE-PAGE OK DEVICEID="dv" \n'),
        ("REMOVE-DEVICE", 'REMOVE-DEVICE ERROR MESSAGE="Missing DEVICEID" \n'),
    ]
    for line, expected in cases:
        await c.send(line + "\n")
        assert await c.line() == expected, line
    assert sim.custom_variables["fader"] == "0.5"
    assert sim.devices()[0].page == 1  # CHANGE-PAGE without the checkbox is a no-op
    sim.set_custom_variable("cue", 7)
    assert await c.line() == f'VARIABLE-VALUE DEVICEID="dv" VARIABLE="out1" VALUE="{b64("7")}" \n'
    sim.set_custom_variable("cue", 7)  # unchanged value: nothing
    await c.send("REMOVE-DEVICE DEVICEID=dv\nKEY-PRESS DEVICEID=dv KEY=0 PRESSED=1\n")
    assert await c.line() == 'REMOVE-DEVICE OK DEVICEID="dv" \n'
    assert await c.line() == 'KEY-PRESS ERROR DEVICEID="dv" MESSAGE="Device not found" \n'


# --- 20-24: subscriptions ------------------------------------------------------------


async def test_add_sub_validation_and_initial_state(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    cases = [
        ("ADD-SUB LOCATION=1/0/0", "Missing SUBID"),
        ("ADD-SUB SUBID=a_b LOCATION=1/0/0", "Invalid SUBID"),
        ("ADD-SUB SUBID=s1", "Missing LOCATION"),
        ("ADD-SUB SUBID=s1 LOCATION=1/-1/0", "Invalid LOCATION"),
        ("ADD-SUB SUBID=s1 LOCATION=1/0/0 STYLE=%%%", "Invalid STYLE"),
    ]
    for line, message in cases:
        await c.send(line + "\n")
        assert await c.line() == f'ADD-SUB ERROR MESSAGE="{message}" \n', line
    await c.send("ADD-SUB SUBID=s1 LOCATION=1/0/0\n")
    assert await c.line() == 'ADD-SUB OK SUBID="s1" \n'
    assert await c.line() == 'SUB-STATE SUBID="s1" PRESSED=0 TYPE="BUTTON" \n'
    await c.send("ADD-SUB SUBID=s1 LOCATION=1/0/1\n")
    assert await c.line() == 'ADD-SUB ERROR MESSAGE="SUBID already in use" \n'
    style = b64j({"colors": "rgb", "text": True, "textStyle": True, "bitmap": {"w": 2, "h": 1}})
    await c.send(f"ADD-SUB SUBID=s2 LOCATION=1/1/0 STYLE={style} BITMAP_FORMAT=png\n")
    assert await c.line() == 'ADD-SUB OK SUBID="s2" \n'
    cmd, p = parse(await c.line())
    assert cmd == "SUB-STATE" and "LOCATION" not in p and "DEVICEID" not in p
    assert p["COLOR"] == "rgba(0,0,0,1)" and p["TEXT"] == b64("hello") and p["FONT_SIZE"] == "18"
    assert p["BITMAP"].startswith("data:image/png;base64,")
    await c.send("ADD-SUB SUBID=empty LOCATION=9/9/9 TEXT=1 COLORS=1\n")
    assert await c.line() == 'ADD-SUB OK SUBID="empty" \n'  # page existence is not checked
    assert (
        await c.line()
        == 'SUB-STATE SUBID="empty" PRESSED=0 TYPE="BUTTON" COLOR="#000000" TEXTCOLOR="#000000" TEXT="" \n'
    )


async def test_sub_press_rotate_remove_and_live_updates(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    await c.send("ADD-SUB SUBID=cnt LOCATION=1/0/2 TEXT=1\nADD-SUB SUBID=cnt2 LOCATION=1/0/2\n")
    await sync(c)
    await c.send("SUB-PRESS SUBID=cnt\nSUB-PRESS SUBID=nope PRESSED=1\nSUB-ROTATE SUBID=cnt\n")
    assert await c.line() == 'SUB-PRESS ERROR MESSAGE="Missing PRESSED" \n'
    assert await c.line() == 'SUB-PRESS ERROR MESSAGE="Unknown SUBID" \n'
    assert await c.line() == 'SUB-ROTATE ERROR MESSAGE="Missing DIRECTION" \n'
    await c.send("SUB-PRESS SUBID=cnt PRESSED=1\n")
    assert await c.line() == 'SUB-PRESS OK SUBID="cnt" \n'
    after = await sync(c)
    # each subscription to the location gets its own message
    assert f'SUB-STATE SUBID="cnt" PRESSED=1 TYPE="BUTTON" TEXT="{b64("CUE 1")}" \n' in after
    assert 'SUB-STATE SUBID="cnt2" PRESSED=1 TYPE="BUTTON" \n' in after
    await c.send("SUB-ROTATE SUBID=cnt DIRECTION=5\n")
    assert await c.line() == 'SUB-ROTATE OK SUBID="cnt" \n'
    assert f'TEXT="{b64("CUE 6")}"' in await until(c, 'SUB-STATE SUBID="cnt"')
    assert sim.presses[-1].source.startswith("satellite-sub:tcp-") and sim.presses[
        -1
    ].source.endswith(":cnt")
    await c.send("REMOVE-SUB SUBID=cnt2\nREMOVE-SUB SUBID=cnt2\nREMOVE-SUB\n")
    assert await until(c, "REMOVE-SUB") == 'REMOVE-SUB OK SUBID="cnt2" \n'
    assert await c.line() == 'REMOVE-SUB ERROR MESSAGE="Unknown SUBID" \n'
    assert await c.line() == 'REMOVE-SUB ERROR MESSAGE="Missing SUBID" \n'
    # an empty location still answers OK
    await c.send("ADD-SUB SUBID=e LOCATION=5/5/5\n")
    await sync(c)
    await c.send("SUB-PRESS SUBID=e PRESSED=1\n")
    assert await c.line() == 'SUB-PRESS OK SUBID="e" \n'


async def test_subscriptions_off_and_toggle_closes_everything(make_sim: Callable[..., Any]) -> None:
    sim = await make_sim(subscriptions=False)
    c = await TcpClient.connect(sim.satellite_port)
    await handshake(c)
    for cmd in ("ADD-SUB SUBID=x LOCATION=bad", "REMOVE-SUB", "SUB-PRESS", "SUB-ROTATE"):
        await c.send(cmd + "\n")
        assert await c.line() == f'{cmd.split()[0]} ERROR MESSAGE="Subscriptions not enabled" \n'
    w = await WsClient.connect(sim.ws_port)
    await handshake(w)
    await sim.set_subscriptions(True)
    assert await c.closed() and await w.closed()
    c2 = await TcpClient.connect(sim.satellite_port)
    _begin, caps = await handshake(c2)
    assert "SUBSCRIPTIONS=1" in caps
    await c2.close()
    await w.close()


# --- WebSocket transport ------------------------------------------------------------


async def test_websocket_frames(connect: Callable[..., Any]) -> None:
    c = await connect("ws")
    await c.send("PING one\nPING two\nPI")  # several lines in one frame, a split line
    await c.send("NG three")
    await c.send("\n")
    assert [await c.line() for _ in range(3)] == ["PONG one \n", "PONG two \n", "PONG three \n"]
    await c.ws.send_bytes(b"PING bin\n")  # type: ignore[union-attr]
    assert await c.line() == "PONG bin \n"
    await c.send("ADD-DEVICE DEVICEID=wsd PRODUCT_NAME=p KEYS_TOTAL=3 KEYS_PER_ROW=3\n")
    lines = await sync(c)
    assert len(lines) == 1 + 1 + 3  # OK, BRIGHTNESS, 3 KEY-STATE: one frame each


# --- 25: restart --------------------------------------------------------------------


async def test_restart_resets_uptime_and_sends_fresh_begin(
    connect: Callable[..., Any], sim: CompanionSimulator
) -> None:
    c = await connect()
    await c.send("ADD-DEVICE DEVICEID=r PRODUCT_NAME=p\n")
    await sync(c)
    sim._started_at -= 100  # pretend it has been up for a while
    assert sim.variable_value("internal", "uptime") >= 100
    await sim.restart(companion_version="5.1.1+1-main-abc")
    assert await c.closed()
    assert sim.variable_value("internal", "uptime") < 5
    assert sim.devices() == []
    c2 = await connect(hello=False)
    assert await c2.line() == 'BEGIN CompanionVersion="5.1.1+1-main-abc" ApiVersion="1.14.0" \n'
    await c2.line()
    await c2.send("ADD-DEVICE DEVICEID=r PRODUCT_NAME=p\n")  # the id is free again
    assert await c2.line() == 'ADD-DEVICE OK DEVICEID="r" \n'


async def test_clock_ticks_and_rerenders(make_sim: Callable[..., Any]) -> None:
    sim = await make_sim(clock=True)
    sim.set_button(3, 0, 0, text="$(internal:time_hms)")
    c = await TcpClient.connect(sim.satellite_port)
    await handshake(c)
    await c.send("ADD-SUB SUBID=clk LOCATION=3/0/0 TEXT=1\n")
    await until(c, "SUB-STATE")
    line = await until(c, "SUB-STATE", 2.5)  # the next second re-renders it
    text = base64.b64decode(parse(line)[1]["TEXT"]).decode()
    assert len(text) == 8 and text[2] == ":" and text[5] == ":"
    await c.close()
