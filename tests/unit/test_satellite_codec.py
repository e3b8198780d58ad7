"""The Satellite line format, from the reference's examples, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.codec import (
    Base64Error,
    LineBuffer,
    LineTooLong,
    b64_decode_json,
    b64_decode_text,
    b64_json,
    b64_text,
    format_line,
    is_falsey,
    is_truthy,
    parse_line,
)


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        ('DEVICEID="dev 1" KEY=5 PRESSED', {"DEVICEID": "dev 1", "KEY": "5", "PRESSED": True}),
        ('A=\\"q\\" C=a\\ b', {"A": '"q"', "C": "a b"}),
        ('V="abc==" W=a=b=c', {"V": "abc==", "W": "a=b=c"}),
        ("  X=1   Y=  ", {"X": "1", "Y": ""}),
        ('A="x"y', {"A": "xy"}),
        ('A="unterminated rest', {"A": "unterminated rest"}),
        ("=dropped K=1 K=2", {"K": "2"}),
        ("__proto__=1 ok=2", {"ok": "2"}),
        ("trailing\\", {"trailing": True}),
    ],
)
def test_parse_examples(body: str, parsed: dict) -> None:
    assert parse_line("CMD " + body) == ("CMD", parsed)


def test_command_word_is_upper_cased_and_first_cr_dropped() -> None:
    assert parse_line("ping 12\r") == ("PING", {"12": True})
    assert parse_line("key-press OK DEVICEID=x") == ("KEY-PRESS", {"OK": True, "DEVICEID": "x"})


def test_format_like_companion() -> None:
    assert (
        format_line(
            "KEY-STATE",
            device_id="hub-1",
            args=[
                ("KEY", 5),
                ("LOCATION", "1/0/5"),
                ("PRESSED", False),
                ("TYPE", "BUTTON"),
                ("TEXT", "UkVD"),
                ("FONT_SIZE", 14.0),
                ("X", 1.5),
            ],
        )
        == 'KEY-STATE DEVICEID="hub-1" KEY=5 LOCATION="1/0/5" PRESSED=0 TYPE="BUTTON" TEXT="UkVD" FONT_SIZE=14 X=1.5 \n'
    )
    assert format_line("ADD-DEVICE", "OK", "hub-1") == 'ADD-DEVICE OK DEVICEID="hub-1" \n'
    assert format_line("BEGIN", args=[("CompanionVersion", "5.0.3"), ("ApiVersion", "1.14.0")]) == (
        'BEGIN CompanionVersion="5.0.3" ApiVersion="1.14.0" \n'
    )


@pytest.mark.parametrize(
    ("value", "truthy", "falsey"),
    [
        ("0", False, True),
        ("false", False, True),
        ("FALSE", False, True),
        ("", False, True),
        (None, False, True),
        ("1", True, False),
        ("2", True, False),
        ("true", True, False),
        ("YES", True, False),
        (True, True, False),
        ("no", False, False),
        ("on", False, False),
        ("0.5", False, False),
        ("-1", False, False),
        ("00", False, False),
    ],
)
def test_truthiness_table(value: str | bool | None, truthy: bool, falsey: bool) -> None:
    assert is_truthy(value) is truthy
    assert is_falsey(value) is falsey


def test_base64_fields() -> None:
    assert b64_decode_text("UkVD") == "REC"
    assert b64_decode_text("UkVDMQ") == "REC1"  # unpadded, as older Companions send
    assert b64_decode_text(b64_text("Kamera 1 – Bühne")) == "Kamera 1 – Bühne"
    assert b64_decode_json(b64_json([{"id": "x"}])) == [{"id": "x"}]
    for bad in ("not base64!", "////", True):
        with pytest.raises(Base64Error):
            b64_decode_text(bad)


def test_line_buffer_splits_joins_and_bounds() -> None:
    buf = LineBuffer(max_chars=16)
    assert buf.feed(b"PING 1\nPO") == ["PING 1"]
    assert buf.feed(b"NG 2\n") == ["PONG 2"]
    euro = "€".encode()
    assert buf.feed(euro[:1]) == [] and buf.feed(euro[1:] + b"\n") == ["€"]
    assert buf.feed(b"done\n" + b"x" * 20) == ["done"]  # complete lines still count
    with pytest.raises(LineTooLong):
        buf.check()
    buf.check()  # reported once
    assert buf.pending == 0
    assert buf.feed(b"ok\n") == ["ok"]


values = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.text(
        alphabet=st.characters(blacklist_characters='"\\\r\n', blacklist_categories=("Cs",)),
        max_size=20,
    ),
)
keys = st.from_regex(r"[A-Z][A-Z_]{0,10}", fullmatch=True).filter(
    lambda k: k not in ("OK", "ERROR")
)


@given(st.dictionaries(keys, values, max_size=6), st.sampled_from([None, "OK", "ERROR"]))
def test_format_parse_round_trip(args: dict, status: str | None) -> None:
    cmd, parsed = parse_line(format_line("SOME-CMD", status, "dev-1", args.items()).rstrip("\n"))
    assert cmd == "SOME-CMD"
    if status:
        assert parsed.pop(status) is True
    assert parsed.pop("DEVICEID") == "dev-1"
    expected = {k: ("1" if v else "0") if isinstance(v, bool) else str(v) for k, v in args.items()}
    # an empty string value survives as "" (quoted), never as a flag
    assert parsed == expected


@given(st.text(max_size=200))
def test_base64_text_round_trip(text: str) -> None:
    assert b64_decode_text(b64_text(text)) == text


def test_an_over_long_line_counts_however_the_reads_split_it() -> None:
    """Its newline arriving in the same read as its tail (a PONG right after it, say)
    used to make it a complete line, and no reset: a flaky race."""
    for chunks in (
        [b"x" * 100, b"x" * 5 + b"\nPONG\n"],  # terminated in the same read
        [b"x" * 100, b"x" * 5, b"\nPONG\n"],  # unterminated first
    ):
        buf = LineBuffer(max_chars=100)
        lines = [line for c in chunks for line in buf.feed(c)]
        with pytest.raises(LineTooLong):
            buf.check()
        assert "PONG" in lines and all(len(line) <= 100 for line in lines)
