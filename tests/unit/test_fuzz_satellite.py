"""The Satellite client treats every byte from Companion as hostile.

Fuzzed: random lines, and real Companion lines (a corpus of what Companion 3.x-5.x
writes) with their values replaced by hostile ones, bytes inserted or deleted, and the
stream cut into chunks anywhere (also inside a UTF-8 character). The protocol is
first driven through a real handshake (button subscriptions or a device), so the fuzz
reaches the handlers that matter. Below the fuzz tests: the regressions it guards.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.codec import (
    FONT_SIZE_RANGE,
    Base64Error,
    b64_decode_text,
    b64_text,
    parse_decimal,
    parse_font_size,
    parse_int,
    parse_location,
)
from companion_hub.adapters.companion.events import (
    PROBLEM_KINDS,
    Began,
    Brightness,
    ButtonRendered,
    Capabilities,
    DevicePage,
    Event,
    OutputValue,
    Pong,
    ProtocolError,
    Registering,
    Reply,
    Synced,
)
from companion_hub.adapters.companion.satellite import (
    SatelliteOptions,
    SatelliteProtocol,
    Transferable,
)
from tests.fuzzing import fuzz_settings

DEVICE = "hub-x"
PAGES = [1, 3]
ROWS, COLUMNS = 2, 3
KNOWN_EVENTS = (
    Began,
    Capabilities,
    Registering,
    ButtonRendered,
    DevicePage,
    OutputValue,
    Brightness,
    Synced,
    Reply,
    Pong,
    ProtocolError,
)


def options() -> SatelliteOptions:
    return SatelliteOptions(
        DEVICE,
        pages=list(PAGES),
        rows=ROWS,
        columns=COLUMNS,
        variables=[
            Transferable("tally", "output", "Tally"),
            Transferable("fader", "input", "Fader"),
        ],
    )


def locations() -> list[str]:
    return [f"{p}/{r}/{c}" for p in PAGES for r in range(ROWS) for c in range(COLUMNS)]


def begin(api: str) -> str:
    return f'BEGIN CompanionVersion="5.1.0+9100-main-3d76cba000" ApiVersion="{api}" \n'


def sub_state(subid: str, text: str = "CAM 1") -> str:
    return (
        f'SUB-STATE SUBID="{subid}" PRESSED=0 TYPE="BUTTON" COLOR="#ff0000" '
        f'TEXTCOLOR="#ffffff" TEXT="{b64_text(text)}" FONT_SIZE="auto" \n'
    )


def key_state(key: int, location: str, text: str = "GO") -> str:
    return (
        f'KEY-STATE DEVICEID="{DEVICE}" KEY={key} LOCATION="{location}" PRESSED=0 '
        f'TYPE="BUTTON" COLOR="#00ff00" TEXTCOLOR="#000000" TEXT="{b64_text(text)}" '
        "FONT_SIZE=14 \n"
    )


def handshake(mode: str, api: str = "1.14.0") -> SatelliteProtocol:
    """A protocol driven through a real registration to Synced, events drained."""
    p = SatelliteProtocol(options(), inputs={"fader": "0.5"})
    p.receive_data(begin(api))
    if api != "1.7.0":
        p.receive_data(f"CAPS SUBSCRIPTIONS={1 if mode == 'subscriptions' else 0} \n")
    if mode == "subscriptions":
        p.receive_data("".join(f'ADD-SUB OK SUBID="{loc}" \n' for loc in locations()))
        p.receive_data("".join(sub_state(loc) for loc in locations()))
    p.receive_data(f'ADD-DEVICE OK DEVICEID="{DEVICE}" \n')
    if mode == "device":
        page = PAGES[0]
        cells = [(r, c) for r in range(ROWS) for c in range(COLUMNS)]
        p.receive_data("".join(key_state(r * COLUMNS + c, f"{page}/{r}/{c}") for r, c in cells))
    ev = p.events()
    assert Synced(mode) in ev, ev
    assert not [e for e in ev if isinstance(e, ProtocolError)], ev
    p.data_to_send()
    return p


SETUPS = [("subscriptions", "1.14.0"), ("subscriptions", "1.12.0"), ("device", "1.7.0")]
SETUPS += [("device", "1.12.0"), ("device", "1.14.0")]


@pytest.mark.parametrize(("mode", "api"), SETUPS)
def test_handshakes_reach_synced(mode: str, api: str) -> None:
    p = handshake(mode, api)
    assert p.state == "synced" and p.mode == mode and p.problems == {}


# --- the corpus of real lines --------------------------------------------------------------

PGM = b64_text("PGM\nCAM 2 ✓")
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
CORPUS = [
    begin("1.7.0"),
    begin("1.12.0"),
    begin("1.14.0"),
    'BEGIN CompanionVersion="3.2.0" ApiVersion="1.5.0" \n',
    "CAPS SUBSCRIPTIONS=1 NONSQUARE=1 \n",
    "CAPS SUBSCRIPTIONS=0 \n",
    'ADD-SUB OK SUBID="1/0/0" \n',
    'ADD-SUB ERROR MESSAGE="Invalid LOCATION" \n',
    'ADD-SUB ERROR MESSAGE="Subscriptions not enabled" \n',
    sub_state("1/0/1"),
    'SUB-STATE SUBID="3/1/2" PRESSED=1 TYPE="PAGEUP" COLOR="#000000" TEXTCOLOR="#ffffff" '
    f'TEXT="" FONT_SIZE=14 BITMAP="{PNG}" \n',
    'SUB-STATE SUBID="1/1/0" PRESSED=0 TYPE="BUTTON" COLOR="rgba(255,0,0,1)" '
    f'TEXTCOLOR="rgba(0,0,0,1)" TEXT="{PGM}" FONT_SIZE=18.5 \n',
    'SUB-STATE SUBID="1/0/2" PRESSED=0 TYPE="BUTTON" COLOR="#000000" TEXTCOLOR="#ffffff" '
    'TEXT="" FONT_SIZE="auto" \n',
    f'ADD-DEVICE OK DEVICEID="{DEVICE}" \n',
    f'ADD-DEVICE ERROR DEVICEID="{DEVICE}" MESSAGE="Device exists elsewhere" \n',
    f'ADD-DEVICE ERROR DEVICEID="{DEVICE}" MESSAGE="Invalid KEYS_TOTAL" \n',
    key_state(0, "1/0/0"),
    key_state(5, "3/1/2", "é ✓ 🎬"),
    f'KEY-STATE DEVICEID="{DEVICE}" KEY=1 LOCATION="1/0/1" PRESSED=1 TYPE="PAGENUM" '
    f'COLOR="#000000" TEXTCOLOR="#ffffff" TEXT="" FONT_SIZE="auto" BITMAP="{PNG}" \n',
    f'VARIABLE-VALUE DEVICEID="{DEVICE}" VARIABLE="tally" VALUE="{b64_text("PROGRAM")}" \n',
    f'BRIGHTNESS DEVICEID="{DEVICE}" VALUE=100 \n',
    f'BRIGHTNESS DEVICEID="{DEVICE}" VALUE=37 \n',
    "PING 1719312345 \n",
    "PONG 7 \n",
    'ERROR MESSAGE="Unknown command" \n',
    'ERROR ERROR MESSAGE="Line too long" \n',
    f'KEY-PRESS OK DEVICEID="{DEVICE}" \n',
    f'KEY-ROTATE ERROR DEVICEID="{DEVICE}" MESSAGE="Device not found" \n',
    'SUB-PRESS OK SUBID="1/0/0" \n',
    'SUB-PRESS ERROR MESSAGE="Unknown SUBID" \n',
    'SUB-ROTATE OK SUBID="3/0/0" \n',
    'REMOVE-SUB OK SUBID="1/0/0" \n',
    f'SET-VARIABLE-VALUE OK DEVICEID="{DEVICE}" \n',
    f'KEYS-CLEAR DEVICEID="{DEVICE}" \n',
    f'LOCKED-STATE DEVICEID="{DEVICE}" LOCKED=1 CHARACTER_COUNT=2 ROTATION=0 \n',
    f'DEVICE-CONFIG DEVICEID="{DEVICE}" CONFIG="e30=" \n',
    f'REMOVE-DEVICE OK DEVICEID="{DEVICE}" \n',
]

HOSTILE = [
    "inf",
    "-inf",
    "Infinity",
    "-Infinity",
    "nan",
    "NaN",
    "1e999",
    "-1e999",
    "1e+21",
    "-0",
    "-0.0",
    "9" * 300,
    "-" + "9" * 40,
    "0." + "0" * 300 + "1",
    "-1",
    "101",
    "14.0",
    " 14",
    "1_4",
    "0x10",
    "٣",
    "²",
    "",
    "é",
    "\x00",
    "\u2028",
    "=",
    '"',
    "\\",
    "!!!not-base64",
    "QQ",
    "/w==",  # base64 of an invalid UTF-8 byte
    "1/0/0/0",
    "1/0/" + "9" * 300,
    "0/0/0",
    "2/0/0",
    "99999/0/0",
    "1/-1/0",
    "1/0/3",
    "1/2/0",
    "//",
    "data:",
]

_ARG = re.compile(r'(\w+)=("[^"]*"|\S*)')


def mutate_value(line: str, index: int, value: str, quoted: bool) -> str:
    args = list(_ARG.finditer(line))
    if not args:
        return line
    m = args[index % len(args)]
    new = f'"{value}"' if quoted else value
    return line[: m.start(2)] + new + line[m.end(2) :]


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    line = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["value", "value", "insert", "delete", "unquote"]))
        if op == "value":
            value = draw(st.sampled_from(HOSTILE) | st.text(max_size=12))
            line = mutate_value(line, draw(st.integers(0, 20)), value, draw(st.booleans()))
        elif op == "unquote":
            line = line.replace('"', "", draw(st.integers(1, 4)))
        elif op == "delete" and line:
            i = draw(st.integers(0, len(line) - 1))
            line = line[:i] + line[i + draw(st.integers(1, 8)) :]
    data = line.encode("utf-8")
    if draw(st.booleans()):
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.binary(min_size=1, max_size=6)) + data[i:]
    return data


def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random byte offsets (so also inside UTF-8 characters)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- invariants -----------------------------------------------------------------------------


def numbers_in(value: Any) -> list[int | float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [n for f in dataclasses.fields(value) for n in numbers_in(getattr(value, f.name))]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in (*numbers_in(k), *numbers_in(v))]
    if isinstance(value, list | tuple):
        return [n for v in value for n in numbers_in(v)]
    return []


def check_events(p: SatelliteProtocol, events: list[Event], emitted: Counter[str]) -> None:
    for ev in events:
        assert isinstance(ev, KNOWN_EVENTS), ev
        for n in numbers_in(ev):
            assert math.isfinite(n), ev
        if isinstance(ev, ButtonRendered):
            assert ev.page in PAGES and 0 <= ev.row < ROWS and 0 <= ev.column < COLUMNS, ev
            if ev.state is not None:
                size = ev.state.get("font_size", "auto")
                if isinstance(size, int):
                    assert FONT_SIZE_RANGE[0] <= size <= FONT_SIZE_RANGE[1], ev
                else:
                    assert re.fullmatch(r"[a-z]{1,16}", size), ev
                    assert size not in ("inf", "infinity", "nan"), ev
        elif isinstance(ev, Brightness):
            assert isinstance(ev.value, int) and 0 <= ev.value <= 100, ev
        elif isinstance(ev, DevicePage):
            assert ev.page in PAGES, ev
        elif isinstance(ev, OutputValue):
            assert ev.variable == "tally", ev
        elif isinstance(ev, ProtocolError):
            assert ev.kind in PROBLEM_KINDS and ev.kind != "internal", ev
            if not ev.fatal:
                emitted[ev.kind] += 1
                assert emitted[ev.kind] == 1, f"{ev.kind} emitted twice"
    for kind, n in emitted.items():
        assert p.problems.get(kind, 0) >= n


def feed(p: SatelliteProtocol, chunks: list[bytes] | list[str]) -> None:
    emitted: Counter[str] = Counter()
    for chunk in chunks:
        p.receive_data(chunk)
        check_events(p, p.events(), emitted)
        assert isinstance(p.data_to_send(), str)
    assert set(p.problems) <= PROBLEM_KINDS


# --- fuzz -------------------------------------------------------------------------------------


@pytest.mark.fuzz
@fuzz_settings
@given(data=st.data(), setup=st.sampled_from(SETUPS))
def test_fuzz_mutated_real_lines(data: st.DataObject, setup: tuple[str, str]) -> None:
    p = handshake(*setup)
    lines = data.draw(st.lists(mutated_line(), min_size=1, max_size=12))
    feed(p, chunked(data.draw, b"".join(lines)))


@pytest.mark.fuzz
@fuzz_settings
@given(data=st.data(), setup=st.sampled_from(SETUPS))
def test_fuzz_random_lines(data: st.DataObject, setup: tuple[str, str]) -> None:
    p = handshake(*setup)
    words = st.sampled_from([c.split(" ", 1)[0] for c in CORPUS]) | st.text(max_size=10)
    line = st.tuples(words, st.text(max_size=60)).map(lambda t: f"{t[0]} {t[1]}")
    lines = data.draw(st.lists(line, max_size=10))
    if data.draw(st.booleans()):
        feed(p, [("\n".join(lines) + "\n")])
    else:
        raw = "\n".join(lines).encode("utf-8", errors="surrogatepass")
        feed(p, chunked(data.draw, raw + data.draw(st.binary(max_size=40))))


@pytest.mark.fuzz
@fuzz_settings
@given(chunks=st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_random_bytes_from_the_start(chunks: list[bytes]) -> None:
    p = SatelliteProtocol(options())
    feed(p, [begin("1.14.0").encode(), *chunks])


@pytest.mark.fuzz
@fuzz_settings
@given(
    text=st.text(max_size=30),
    lo=st.integers(-5, 5),
    span=st.integers(0, 200),
)
def test_fuzz_number_parsers(text: str, lo: int, span: int) -> None:
    hi = lo + span
    for parse in (parse_int, parse_decimal):
        n = parse(text, lo, hi)
        assert n is None or (isinstance(n, int) and lo <= n <= hi)
    size = parse_font_size(text)
    assert size is None or isinstance(size, int | str)
    loc = parse_location(text, PAGES, ROWS, COLUMNS)
    assert loc is None or (loc[0] in PAGES and 0 <= loc[1] < ROWS and 0 <= loc[2] < COLUMNS)


# --- regressions ---------------------------------------------------------------------------------


def device_synced() -> SatelliteProtocol:
    return handshake("device", "1.14.0")


def test_font_size_inf_does_not_raise_and_drops_the_field() -> None:
    p = device_synced()
    p.receive_data(
        f'KEY-STATE DEVICEID="{DEVICE}" KEY=0 LOCATION="1/0/0" PRESSED=0 TYPE="BUTTON" '
        'TEXT="QQ==" FONT_SIZE=inf \n'
    )
    ev = p.events()
    rendered = [e for e in ev if isinstance(e, ButtonRendered)]
    assert len(rendered) == 1 and rendered[0].state is not None
    assert rendered[0].state["text"] == "A" and "font_size" not in rendered[0].state
    assert p.problems == {"bad-number": 1}
    assert [e.kind for e in ev if isinstance(e, ProtocolError)] == ["bad-number"]


def test_brightness_1e999_is_ignored_and_counted() -> None:
    p = device_synced()
    p.receive_data(f'BRIGHTNESS DEVICEID="{DEVICE}" VALUE=1e999 \n')
    ev = p.events()
    assert not [e for e in ev if isinstance(e, Brightness)]
    assert p.problems == {"bad-number": 1}
    p.receive_data(f'BRIGHTNESS DEVICEID="{DEVICE}" VALUE=101 \nBRIGHTNESS VALUE=42 \n')
    assert p.events() == [Brightness(42)]  # the second bad one is only counted
    assert p.problems == {"bad-number": 2}


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("14", 14),
        ("14.0", 14),
        ("18.5", 18),
        ("auto", "auto"),
        ("inf", None),
        ("NaN", None),
        ("1e999", None),
        ("0", None),
        ("-0", None),
        ("Auto", None),
        ("9" * 300, None),
        ("x" * 17, None),
        (True, None),
        ("1001", None),
    ],
)
def test_font_size_values(text: str | bool, parsed: int | str | None) -> None:
    assert parse_font_size(text) == parsed


@pytest.mark.parametrize(
    ("text", "lo", "hi", "parsed"),
    [
        ("5", 0, 9, 5),
        ("-0", 0, 9, 0),
        ("+7", 0, 9, 7),
        ("10", 0, 9, None),
        ("-1", 0, 9, None),
        (" 5", 0, 9, None),
        ("5 ", 0, 9, None),
        ("5_0", 0, 99, None),
        ("٣", 0, 9, None),
        ("1e3", 0, 9999, None),
        ("inf", 0, 9, None),
        ("9" * 300, 0, 9, None),
        (True, 0, 9, None),
        (None, 0, 9, None),
        ("", 0, 9, None),
    ],
)
def test_parse_int(text: str | bool | None, lo: int, hi: int, parsed: int | None) -> None:
    assert parse_int(text, lo, hi) == parsed


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("50", 50),
        ("50.9", 50),
        ("-0.5", 0),
        ("100.0", 100),
        ("1e2", None),
        ("Infinity", None),
        ("100.1", 100),
        ("101", None),
        ("1.", 1),
        (".5", None),
    ],
)
def test_parse_decimal(text: str, parsed: int | None) -> None:
    assert parse_decimal(text, 0, 100) == parsed


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1/0/0", (1, 0, 0)),
        ("3/1/2", (3, 1, 2)),
        ("2/0/0", None),
        ("1/2/0", None),
        ("1/0/3", None),
        ("1/0/" + "9" * 300, None),
        ("1/0", None),
        ("1/0/0/0", None),
        ("1/-1/0", None),
        (" 1/0/0", None),
        ("1/0/0 ", None),
        (True, None),
        ("01/00/02", (1, 0, 2)),
    ],
)
def test_parse_location(text: str | bool, parsed: tuple[int, int, int] | None) -> None:
    assert parse_location(text, PAGES, ROWS, COLUMNS) == parsed


def test_a_huge_location_is_ignored_and_counted() -> None:
    p = device_synced()
    p.receive_data(key_state(0, "1/0/" + "9" * 300))
    ev = p.events()
    assert not [e for e in ev if isinstance(e, ButtonRendered | DevicePage)]
    assert p.problems == {"bad-location": 1}
    sub = handshake("subscriptions")
    sub.receive_data(sub_state("1/0/" + "9" * 300))
    assert [type(e) for e in sub.events()] == [ProtocolError]
    assert sub.problems == {"bad-location": 1}


def test_a_page_that_is_not_configured_is_ignored() -> None:
    p = handshake("subscriptions")
    p.receive_data(sub_state("2/0/0") + sub_state("1/0/0"))
    ev = p.events()
    assert [e for e in ev if isinstance(e, ButtonRendered)] == [
        ButtonRendered(
            1,
            0,
            0,
            {
                "text": "CAM 1",
                "bgcolor": "#ff0000",
                "color": "#ffffff",
                "pressed": False,
                "type": "BUTTON",
                "font_size": "auto",
            },
        )
    ]
    assert p.problems == {"bad-location": 1}


def test_thousands_of_bogus_pages_make_no_events_and_one_log_line() -> None:
    p = handshake("subscriptions")
    p.receive_data("".join(sub_state(f"{page}/0/0") for page in range(10, 5010)))
    ev = p.events()
    assert len(ev) == 1 and isinstance(ev[0], ProtocolError) and ev[0].kind == "bad-location"
    assert p.problems == {"bad-location": 5000}


def test_device_mode_on_an_unconfigured_page_still_synchronises() -> None:
    """The keys were drawn (they count for the sync), their locations are not mirrored."""
    p = SatelliteProtocol(options())
    p.receive_data(begin("1.14.0") + "CAPS SUBSCRIPTIONS=0 \n")
    p.receive_data(f'ADD-DEVICE OK DEVICEID="{DEVICE}" \n')
    cells = [(r, c) for r in range(ROWS) for c in range(COLUMNS)]
    p.receive_data("".join(key_state(r * COLUMNS + c, f"2/{r}/{c}") for r, c in cells))
    ev = p.events()
    assert Synced("device") in ev
    assert not [e for e in ev if isinstance(e, ButtonRendered | DevicePage)]
    assert p.problems == {"bad-location": ROWS * COLUMNS}


def test_bad_key_index_ignores_the_key_state() -> None:
    p = device_synced()
    for key in ("6", "-1", "1e3", "9" * 300):
        p.receive_data(key_state(0, "1/0/0").replace("KEY=0", f"KEY={key}"))
    ev = p.events()
    assert not [e for e in ev if isinstance(e, ButtonRendered)]
    assert p.problems == {"bad-number": 4}


def test_too_old_api_is_fatal_and_incompatible() -> None:
    p = SatelliteProtocol(options())
    p.receive_data('BEGIN CompanionVersion="3.2.0" ApiVersion="1.5.0" \n')
    ev = p.events()
    assert isinstance(ev[-1], ProtocolError) and ev[-1].fatal and ev[-1].kind == "incompatible"
    p = SatelliteProtocol(options())
    p.receive_data('BEGIN CompanionVersion="x" ApiVersion="1.' + "9" * 5000 + '" \n')
    assert isinstance(p.events()[-1], ProtocolError)  # not a version: too old, not a crash


def test_fatal_problems_are_always_emitted() -> None:
    p = device_synced()
    p.receive_data('ERROR MESSAGE="Unknown command" \n' * 3)
    assert len(p.events()) == 1
    p.receive_data('ERROR ERROR MESSAGE="Line too long" \n' * 2)
    ev = p.events()
    assert len(ev) == 2 and all(isinstance(e, ProtocolError) and e.fatal for e in ev)
    assert p.problems == {"companion-error": 5}


def test_unasked_subscription_replies_cannot_hold_up_the_sync() -> None:
    p = SatelliteProtocol(SatelliteOptions(DEVICE, pages=[1], rows=1, columns=1))
    p.receive_data(begin("1.14.0") + "CAPS SUBSCRIPTIONS=1 \n")
    p.receive_data('ADD-SUB OK SUBID="bogus" \nADD-SUB OK SUBID="1/0/0" \n' + sub_state("1/0/0"))
    ev = p.events()
    assert Synced("subscriptions") in ev and p.problems == {"unexpected": 1}


def test_a_second_begin_is_ignored() -> None:
    p = handshake("subscriptions")
    p.receive_data(begin("1.14.0") + "CAPS SUBSCRIPTIONS=1 \n")
    assert p.data_to_send() == ""  # no second registration
    assert p.problems == {"unexpected": 1} and p.state == "synced"


def test_values_of_undeclared_outputs_are_ignored() -> None:
    p = handshake("subscriptions")
    p.receive_data(
        f'VARIABLE-VALUE DEVICEID="{DEVICE}" VARIABLE="fader" VALUE="{b64_text("x")}" \n'
        f'VARIABLE-VALUE DEVICEID="{DEVICE}" VARIABLE="nope" VALUE="{b64_text("x")}" \n'
        f'VARIABLE-VALUE DEVICEID="{DEVICE}" VARIABLE="tally" VALUE="{b64_text("ok")}" \n'
    )
    ev = p.events()
    assert [e for e in ev if isinstance(e, OutputValue)] == [OutputValue("tally", "ok")]
    assert p.problems == {"unknown-variable": 2}


def test_non_ascii_base64_is_a_base64_error() -> None:
    with pytest.raises(Base64Error):
        b64_decode_text("é")
    p = device_synced()
    p.receive_data(key_state(0, "1/0/0").replace('TEXT="R08="', 'TEXT="é"'))
    assert p.problems == {"bad-base64": 1}


def test_garbage_and_unknown_commands_are_different_kinds() -> None:
    p = device_synced()
    p.receive_data(b"\x00\xff garbage \nWHATEVER A=1 \nOTHER \n")
    ev = p.events()
    assert [e.kind for e in ev if isinstance(e, ProtocolError)] == ["malformed", "unknown-message"]
    assert p.problems == {"malformed": 1, "unknown-message": 2}
