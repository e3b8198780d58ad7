"""Frame decoding never raises anything but FrameError, whatever the bytes.

Random bytes, random text (surrogates included), mutations of a corpus holding every
op, invalid UTF-8 spliced into valid frames and values nested around and far beyond
the limit: ``decode_frame`` either raises ``FrameError`` or returns messages and
``BadMessage``s, and every value it returns nests at most ``MAX_DEPTH`` levels and
re-encodes. Valid JSON is also checked against a plain reference scan: a message is
refused as too deep exactly when it nests deeper than the limit.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.core.errors import ErrorCode
from companion_hub.core.jsonvalue import json_equal
from companion_hub.core.limits import MAX_DEPTH
from companion_hub.protocol import messages as m
from companion_hub.protocol.encode import encode_value
from tests.fuzzing import fuzz_settings

# --- a corpus with every op --------------------------------------------------------

CORPUS: list[dict[str, Any]] = [
    {"op": "hello", "id": "1", "client": "tally", "protocol": 1, "resume": {"hub": "h", "rev": 3}},
    {"op": "subscribe", "id": 2, "sub": "main", "patterns": ["app.**"], "since": 4},
    {"op": "unsubscribe", "id": "3", "sub": "main"},
    {"op": "get", "id": "4", "patterns": ["hub.**", "app.*.x"]},
    {"op": "set", "id": "5", "key": "app.t.k", "value": {"a": [1, 2.5, None, True, "é"]}},
    {"op": "set", "id": "6", "entries": [{"key": "app.t.a", "value": 1, "expect_version": 0}]},
    {"op": "delete", "id": "7", "key": "app.t.k", "expect_version": 2},
    {"op": "sync", "id": "8"},
    {"op": "publish", "id": "9", "key": "app.t.e", "data": ["x", {"y": '\n"\\'}]},
    {
        "op": "command",
        "id": "10",
        "target": "app.panel",
        "name": "press",
        "params": {"location": "1/0/2", "opts": [[1], {"k": "[{"}]},
        "timeout_ms": 5000,
        "idempotency_key": "k-77",
    },
    {"op": "reply", "id": "h-1", "ok": True, "result": {"done": [1, {"n": None}]}},
    {
        "op": "reply",
        "id": "h-2",
        "ok": False,
        "error": {"code": "FAILED", "message": "no", "details": {"a": 1}},
    },
]


def frame_bytes(obj: Any, *, ascii_only: bool = False, indent: int | None = None) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only, indent=indent).encode()


CORPUS_FRAMES = [frame_bytes(msg) for msg in CORPUS] + [
    frame_bytes(CORPUS),
    frame_bytes(CORPUS[:3], ascii_only=True, indent=1),
]

# --- checking one decode -----------------------------------------------------------

ANY_FIELDS: dict[type, tuple[str, ...]] = {
    m.Set: ("value",),
    m.Publish: ("data",),
    m.Command: ("params",),
    m.Reply: ("result",),
}


def depth_of(value: Any) -> int:
    """Nesting of arrays and objects in a decoded value (0 for a scalar), iteratively."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def values_of(msg: m.Message) -> list[Any]:
    out = [getattr(msg, f) for f in ANY_FIELDS.get(type(msg), ())]
    if isinstance(msg, m.Set) and msg.entries:
        out += [e.value for e in msg.entries]
    if isinstance(msg, m.Reply) and msg.error is not None:
        out.append(msg.error.details)
    return [v for v in out if v is not msgspec.UNSET]


def check(data: bytes | str) -> list[m.Message | m.BadMessage] | None:
    """Decode; assert the outcome is one the session can handle. None for FrameError."""
    try:
        items = m.decode_frame(data)
    except m.FrameError as exc:
        assert isinstance(exc.kind, m.FrameErrorKind)
        assert str(exc)
        return None
    assert isinstance(items, list)
    for item in items:
        if isinstance(item, m.BadMessage):
            assert item.error.code is ErrorCode.BAD_REQUEST
            assert item.id is None or type(item.id) in (str, int)
            assert item.op is None or isinstance(item.op, str)
            continue
        assert isinstance(item, m.Message)
        for value in values_of(item):
            assert depth_of(value) <= MAX_DEPTH
            raw = encode_value(value)  # never raises for a decoded value
            assert json_equal(msgspec.json.decode(raw), value)
    return items


def reference_depth(data: bytes) -> int:
    """The deepest nesting of a JSON text, by a plain byte-by-byte scan."""
    depth = deepest = 0
    inside = escaped = False
    for b in data:
        if inside:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == 0x22:
                inside = False
        elif b == 0x22:
            inside = True
        elif b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif b in b"]}":
            depth -= 1
    return deepest


def nested(levels: int, inner: Any = 0, key: str = "a") -> Any:
    """``levels`` arrays or objects around ``inner``: ``nested(2) == [[0]]``."""
    value = inner
    for i in range(levels):
        value = [value] if i % 2 else {key: value}
    return value


def too_deep(item: m.Message | m.BadMessage) -> bool:
    return isinstance(item, m.BadMessage) and "levels deep" in item.error.message


# --- strategies -------------------------------------------------------------------

# bytes that matter to a JSON scanner, and invalid UTF-8 (lone continuation, overlong,
# encoded surrogate, beyond U+10FFFF, truncated sequences)
INVALID_UTF8 = [b"\xff", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
INTERESTING = [
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"\\",
    b'\\"',
    b"\\\\",
    b",",
    b":",
    b"\\u",
    b"\\ud800",
    b"null",
    b"9" * 30,
    b"1e400",
    b"\x00",
    b"\n",
    "é".encode(),
    b"[" * 100,
    b"]" * 100,
    b'{"a":' * 80,
    *INVALID_UTF8,
]

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
    | st.sampled_from(['"]}', "\\", "[{", "\\u00e9", 10**300, -(2**80)])
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS_FRAMES)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 4))
        if kind == 0:
            data[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif kind == 1 and data:
            data[pos : pos + draw(st.integers(1, 8))] = b""
        elif kind == 2 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == 3:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))] * draw(st.integers(1, 50))
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def deep_frames(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """Valid frames whose messages nest around the limit or far beyond it, in every
    place a value can sit, with strings full of brackets, quotes and escapes."""
    msgs: list[Any] = []
    for _ in range(draw(st.integers(1, 4))):
        levels = draw(st.integers(0, MAX_DEPTH + 3) | st.integers(0, 400))
        inner = draw(JSON)
        value = nested(levels, inner, key=draw(st.sampled_from(["a", '"]', "[{\\", "é"])))
        if draw(st.booleans()):  # siblings beside the chain
            value = [draw(JSON), value, draw(JSON)]
        where = draw(st.integers(0, 6))
        rid = draw(st.sampled_from(["x1", 7, None]))
        msg: Any
        if where == 0:
            msg = {"op": "set", "id": rid, "key": "app.t.k", "value": value}
        elif where == 1:
            msg = {"op": "set", "id": rid, "entries": [{"key": "app.t.k", "value": value}]}
        elif where == 2:
            msg = {
                "op": "command",
                "id": rid,
                "target": "app.p",
                "name": "x",
                "params": {"v": value},
            }
        elif where == 3:
            msg = {"op": "reply", "id": rid, "ok": False, "error": {"code": "X", "details": value}}
        elif where == 4:
            msg = {"op": "sync", "id": rid, "unknown": value}
        elif where == 5:
            msg = {"op": "publish", "id": value, "key": "app.t.e"}
        else:
            msg = value
        msgs.append(msg)
    single = len(msgs) == 1 and isinstance(msgs[0], dict) and draw(st.booleans())
    frame: Any = msgs[0] if single else msgs
    data = json.dumps(
        frame,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, None, 0, 2])),
    ).encode()
    return data, msgs


# --- fuzz tests -----------------------------------------------------------------------


@pytest.mark.fuzz
@fuzz_settings
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check(data)


@pytest.mark.fuzz
@fuzz_settings
@given(st.text(alphabet=st.characters(blacklist_categories=()), max_size=512))
def test_random_text_with_surrogates(text: str) -> None:
    check(text)


@pytest.mark.fuzz
@fuzz_settings
@given(st.lists(st.sampled_from(INTERESTING) | st.binary(max_size=4), max_size=300))
def test_random_json_tokens(parts: list[bytes]) -> None:
    check(b"".join(parts))


@pytest.mark.fuzz
@fuzz_settings
@given(mutated())
def test_mutated_corpus(data: bytes) -> None:
    check(data)
    check(data.decode("utf-8", "surrogateescape"))  # as text too (lone surrogates)


@pytest.mark.fuzz
@fuzz_settings
@given(st.sampled_from(CORPUS_FRAMES), st.sampled_from(INVALID_UTF8), st.data())
def test_invalid_utf8_anywhere_fails_the_frame(
    frame: bytes, bad: bytes, data: st.DataObject
) -> None:
    pos = data.draw(st.integers(0, len(frame)))
    with pytest.raises(m.FrameError) as exc:
        m.decode_frame(frame[:pos] + bad + frame[pos:])
    assert exc.value.kind is m.FrameErrorKind.INVALID_UTF8


@pytest.mark.fuzz
@fuzz_settings
@given(deep_frames())
def test_nesting_is_refused_exactly_beyond_the_limit(case: tuple[bytes, list[Any]]) -> None:
    data, msgs = case
    items = check(data)
    assert items is not None and len(items) == len(msgs)
    for item, msg in zip(items, msgs, strict=True):
        depth = reference_depth(json.dumps(msg).encode())
        assert too_deep(item) == (depth > MAX_DEPTH + 1), (depth, item)
        if too_deep(item) and isinstance(msg, dict) and msg.get("id") in ("x1", 7):
            assert isinstance(item, m.BadMessage) and item.id == msg["id"]
            assert item.op == msg["op"]


@pytest.mark.fuzz
@fuzz_settings
@given(st.lists(JSON, min_size=1, max_size=4), st.booleans())
def test_shallow_values_decode_as_before(values: list[Any], batch: bool) -> None:
    msgs = [{"op": "set", "id": i, "key": "app.t.k", "value": v} for i, v in enumerate(values)]
    items = check(frame_bytes(msgs if batch else msgs[0]))
    assert items is not None
    for item, msg in zip(items, msgs if batch else msgs[:1], strict=True):
        assert isinstance(item, m.Set) and json_equal(item.value, msg["value"])


# --- regressions: the three reproductions, and the edges around them ----------------


def test_invalid_utf8_is_a_frame_error_of_its_own_kind() -> None:
    cases: list[bytes | str] = [
        b'{"op":"get","id":"\xff","patterns":["a"]}',  # used to raise UnicodeDecodeError
        b'{"op":"sync","x":"\xff"}',  # in a field msgspec skips: used to pass unchecked
        b'[{"op":"sync"},{"op":"sy\xed\xa0\x80nc"}]',  # an encoded surrogate
        '{"op":"get","id":"\ud800"}',  # text with a lone surrogate: UnicodeEncodeError
    ]
    for data in cases:
        with pytest.raises(m.FrameError) as exc:
            m.decode_frame(data)
        assert exc.value.kind is m.FrameErrorKind.INVALID_UTF8, data


def test_other_frame_errors_have_their_kinds() -> None:
    for data, kind in [
        (b"{nope", m.FrameErrorKind.INVALID_JSON),
        (b"[" * 100_000, m.FrameErrorKind.INVALID_JSON),  # deep and never closed
        (b"]" * 10 + b"[" * 100_000, m.FrameErrorKind.INVALID_JSON),
        (b'"set"', m.FrameErrorKind.NOT_MESSAGES),
        (b'{"op":"set","id":"1","key":"a.b","value":"\\ud800"}', m.FrameErrorKind.INVALID_JSON),
    ]:
        with pytest.raises(m.FrameError) as exc:
            m.decode_frame(data)
        assert exc.value.kind is kind, data


def test_a_deep_array_frame_is_one_bad_message() -> None:
    data = "[" * 100_000 + "]" * 100_000  # used to raise RecursionError
    for frame in (data, data.encode()):
        [item] = m.decode_frame(frame)
        assert isinstance(item, m.BadMessage) and too_deep(item)
        assert item.id is None and item.op is None


def test_a_value_nested_1000_deep_is_refused_with_its_id() -> None:
    value = "[" * 1000 + "]" * 1000  # used to raise RecursionError
    [item] = m.decode_frame('{"op":"set","id":"r1","key":"app.t.k","value":' + value + "}")
    assert isinstance(item, m.BadMessage) and too_deep(item)
    assert (item.id, item.op) == ("r1", "set")
    chain = '{"a":' * 100_000 + "1" + "}" * 100_000
    [item] = m.decode_frame('{"op":"publish","id":3,"key":"app.t.e","data":' + chain + "}")
    assert isinstance(item, m.BadMessage) and (item.id, item.op) == (3, "publish")


def test_the_limit_is_exact_for_a_value_and_a_batch_entry() -> None:
    def set_value(levels: int) -> dict[str, Any]:
        return {"op": "set", "id": "s", "key": "app.t.k", "value": nested(levels)}

    def entry_value(levels: int) -> dict[str, Any]:
        return {"op": "set", "id": "e", "entries": [{"key": "app.t.k", "value": nested(levels)}]}

    for batch in (False, True):
        for make, allowed in ((set_value, MAX_DEPTH), (entry_value, MAX_DEPTH - 2)):
            ok, deep = make(allowed), make(allowed + 1)
            good = m.decode_frame(frame_bytes([ok] if batch else ok))
            assert isinstance(good[0], m.Set), (batch, make)
            [bad] = m.decode_frame(frame_bytes([deep] if batch else deep))
            assert too_deep(bad) and bad.id == deep["id"], (batch, make)


def test_a_deep_message_in_a_batch_leaves_the_others_alone() -> None:
    frame = frame_bytes(
        [
            {"op": "sync", "id": 1},
            {"op": "set", "id": "2", "key": "app.t.k", "value": nested(500, "]]}}")},
            7,
            {"op": "unknown-op", "id": "4", "x": nested(300)},
            {"op": "get", "id": "5", "patterns": ["app.**"]},
        ]
    )
    items = m.decode_frame(frame)
    assert [type(i).__name__ for i in items] == [
        "Sync",
        "BadMessage",
        "BadMessage",
        "BadMessage",
        "Get",
    ]
    assert too_deep(items[1]) and items[1].id == "2"
    assert not too_deep(items[2]) and items[2].id is None
    assert too_deep(items[3]) and (items[3].id, items[3].op) == ("4", "unknown-op")


def test_deep_unknown_fields_and_ids_are_refused_too() -> None:
    [item] = m.decode_frame(b'{"op":"sync","id":9,"junk":' + b"[" * 2000 + b"]" * 2000 + b"}")
    assert too_deep(item) and (item.id, item.op) == (9, "sync")
    [item] = m.decode_frame(frame_bytes({"op": "get", "id": nested(200)}))
    assert too_deep(item) and (item.id, item.op) == (None, "get")


def test_decoded_values_re_encode() -> None:
    # the deepest value allowed, a 4300-digit integer (msgspec's ceiling), escapes
    value = [nested(MAX_DEPTH - 1, int("9" * 4300)), "\x00\u2028\U0001f600", -0.0, 2**64]
    [item] = m.decode_frame(frame_bytes({"op": "set", "id": 1, "key": "app.t.k", "value": value}))
    assert isinstance(item, m.Set)
    assert json_equal(msgspec.json.decode(encode_value(item.value)), value)
    # numbers JSON has but Python floats and msgspec do not: refused, never raised
    for number in ("1e400", "9" * 5000):
        [bad] = m.decode_frame('{"op":"set","id":1,"key":"app.t.k","value":' + number + "}")
        assert isinstance(bad, m.BadMessage)
