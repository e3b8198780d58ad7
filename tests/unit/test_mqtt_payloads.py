"""What the MQTT bridge puts in messages and reads out of them (pure)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion_hub.adapters.mqtt.payloads import (
    command_params,
    error_payload,
    imported_value,
    plain_payload,
    result_payload,
    state_payload,
)
from companion_hub.core.commands import Outcome
from companion_hub.core.errors import ErrorCode, HubError
from companion_hub.core.store import Entry


def entry(value: Any, *, stale: bool = False, stale_since: int = 0, **kw: Any) -> Entry:
    fields: dict[str, Any] = {
        "key": "app.tally.cam1",
        "version": 3,
        "rev": 42,
        "owner": "app.tally",
        "ts": 1_700_000_000_123,
    }
    fields.update(kw)
    return Entry(raw=msgspec.json.encode(value), stale=stale, stale_since=stale_since, **fields)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# --- state -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(value=json_values, stale=st.booleans())
def test_state_payload_is_the_entry(value: Any, stale: bool) -> None:
    e = entry(value, stale=stale, stale_since=1_700_000_000_999 if stale else 0)
    doc = json.loads(state_payload(e))
    expected = {"value", "version", "rev", "stale", "ts", "owner"}
    if stale:
        expected.add("stale_since")
    assert set(doc) == expected
    assert doc["value"] == msgspec.json.decode(e.raw)
    assert doc["version"] == e.version
    assert doc["rev"] == e.rev
    assert doc["stale"] is stale
    assert doc["ts"] == e.ts
    assert doc["owner"] == e.owner
    if stale:
        assert doc["stale_since"] == e.stale_since


def test_state_payload_fresh_example() -> None:
    doc = json.loads(state_payload(entry({"on": True}, version=7, rev=99, ts=5, owner="app.x")))
    assert doc == {
        "value": {"on": True},
        "version": 7,
        "rev": 99,
        "stale": False,
        "ts": 5,
        "owner": "app.x",
    }


def test_state_payload_stale_example() -> None:
    doc = json.loads(state_payload(entry(1, stale=True, stale_since=123)))
    assert doc["stale"] is True and doc["stale_since"] == 123


# --- plain ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "payload"),
    [
        ("hello", b"hello"),
        ("", b""),
        ("h\u00e9llo \u2713 \U0001f600", "h\u00e9llo \u2713 \U0001f600".encode()),
        ('a"b\n', b'a"b\n'),
        ("back\\slash\ttab", b"back\\slash\ttab"),
        ("\u0000", b"\x00"),
        (42, b"42"),
        (-1.5, b"-1.5"),
        (True, b"true"),
        (False, b"false"),
        (None, b"null"),
        ({"a": 1}, b'{"a":1}'),
        ([1, "x"], b'[1,"x"]'),
    ],
)
def test_plain_payload(value: Any, payload: bytes) -> None:
    assert plain_payload(entry(value)) == payload


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_plain_payload_string_is_its_text(text: str) -> None:
    assert plain_payload(entry(text)) == text.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(value=json_values.filter(lambda v: not isinstance(v, str)))
def test_plain_payload_non_string_is_json(value: Any) -> None:
    assert json.loads(plain_payload(entry(value))) == value


# --- results ----------------------------------------------------------------------------------


def test_result_payload_ok() -> None:
    doc = json.loads(result_payload(Outcome(True, {"pressed": 1}), "companion", "press"))
    assert doc == {"ok": True, "target": "companion", "name": "press", "result": {"pressed": 1}}
    assert "id" not in doc


def test_result_payload_ok_with_id_and_null_result() -> None:
    doc = json.loads(result_payload(Outcome(True, None), "app.tally", "set", "r-1"))
    assert doc == {"ok": True, "target": "app.tally", "name": "set", "id": "r-1", "result": None}


def test_result_payload_failure() -> None:
    err = HubError(ErrorCode.NOT_FOUND, "no such command", {"name": "x"})
    doc = json.loads(result_payload(Outcome(False, None, err), "app.x", "go", "7"))
    assert doc == {
        "ok": False,
        "target": "app.x",
        "name": "go",
        "id": "7",
        "error": {"code": "NOT_FOUND", "message": "no such command", "details": {"name": "x"}},
    }
    assert "result" not in doc


def test_result_payload_failure_without_error_is_internal() -> None:
    doc = json.loads(result_payload(Outcome(False), "t", "n"))
    assert doc["ok"] is False and doc["error"]["code"] == "INTERNAL"


def test_error_payload() -> None:
    doc = json.loads(error_payload(HubError(ErrorCode.TIMEOUT, "too slow"), "companion", "press"))
    assert doc == {
        "ok": False,
        "target": "companion",
        "name": "press",
        "error": {"code": "TIMEOUT", "message": "too slow"},
    }
    doc = json.loads(error_payload(HubError(ErrorCode.FORBIDDEN, "no"), "a.b", "c", "id9"))
    assert doc["id"] == "id9" and doc["error"] == {"code": "FORBIDDEN", "message": "no"}


# --- command params ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b" ", b"\n\t \r\n"])
def test_command_params_empty(payload: bytes) -> None:
    assert command_params(payload, 1000) == {}


def test_command_params_object() -> None:
    assert command_params(b'{"location":"1/0/2","n":[1,2]}', 1000) == {
        "location": "1/0/2",
        "n": [1, 2],
    }
    assert command_params(b'  {"a": null}  ', 1000) == {"a": None}


def _code(payload: bytes, max_bytes: int = 1000) -> ErrorCode:
    with pytest.raises(HubError) as info:
        command_params(payload, max_bytes)
    return info.value.code


@pytest.mark.parametrize("payload", [b"[1]", b"3", b'"x"', b"null", b"true", b"[]"])
def test_command_params_non_object(payload: bytes) -> None:
    assert _code(payload) == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "payload", [b"{", b"ON", b"{'a':1}", b'{"a":1}x', b"\xff\xfe", b'{"a":"\xff"}']
)
def test_command_params_invalid_json(payload: bytes) -> None:
    assert _code(payload) == ErrorCode.BAD_REQUEST


def test_command_params_too_large() -> None:
    payload = b'{"a":"' + b"x" * 100 + b'"}'
    assert _code(payload, max_bytes=len(payload) - 1) == ErrorCode.TOO_LARGE
    assert command_params(payload, max_bytes=len(payload)) == {"a": "x" * 100}


def test_command_params_nesting() -> None:
    ok = b'{"a":' + b"[" * 63 + b"]" * 63 + b"}"  # 64 levels, the object included
    params = command_params(ok, 10_000)
    depth, v = 1, params["a"]
    while v:
        depth, v = depth + 1, v[0]
    assert depth + 1 == 64
    too_deep = b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"
    assert _code(too_deep, 10_000) == ErrorCode.BAD_REQUEST
    very_deep = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert _code(very_deep, 100_000) == ErrorCode.BAD_REQUEST


# --- imported values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b'{"POWER":"ON"}', {"POWER": "ON"}),
        (b"42", 42),
        (b"-1.25", -1.25),
        (b"true", True),
        (b"null", None),
        (b'"quoted"', "quoted"),
        (b"[1,2]", [1, 2]),
        (b"ON", "ON"),  # not JSON: its text
        (b"hello world", "hello world"),
        (b"{broken", "{broken"),
        ("caf\u00e9".encode(), "caf\u00e9"),
    ],
)
def test_imported_value_json(payload: bytes, value: Any) -> None:
    assert imported_value(payload, "json") == value


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b'{"POWER":"ON"}', '{"POWER":"ON"}'),
        (b"42", "42"),
        (b"true", "true"),
        (b"ON", "ON"),
        (b'"q"', '"q"'),
    ],
)
def test_imported_value_text(payload: bytes, value: str) -> None:
    assert imported_value(payload, "text") == value


def test_imported_value_too_deep_json_is_text() -> None:
    payload = b"[" * 100 + b"]" * 100
    assert imported_value(payload, "json") == payload.decode()


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("payload", [b"\xff", b"\xc3\x28", b"ok\x80", b'"\xff"'])
def test_imported_value_invalid_utf8(payload: bytes, fmt: str) -> None:
    with pytest.raises(HubError) as info:
        imported_value(payload, fmt)
    assert info.value.code == ErrorCode.BAD_REQUEST


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_imported_value_json_round_trips(value: Any) -> None:
    assert imported_value(msgspec.json.encode(value), "json") == value
