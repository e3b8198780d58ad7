"""stdlib json vs orjson vs msgspec for companion-hub's per-message JSON work.

Run:  python bench/choices/json_libs.py          (about 30 s)

Decode: one inbound `set` message (bytes, as received from the socket) ->
        validated message. msgspec uses a Decoder over a tagged union of ~10
        Structs (tag_field="op"); json/orjson parse to dict then run a minimal
        hand validation (op known, id str, key str where required, value present).
Encode: one outbound delta {"op":"delta","key","value","version","rev","stale","ts"}
        -> bytes, including building the dict/Struct. Also the alternatives of
        splicing the value's cached pre-encoded bytes: bytes %-format template,
        orjson.Fragment, msgspec.Raw.

Timing: timeit with statement strings (no extra Python call layer), each case
measured once per round, rounds interleaved; ratio = case / stdlib-json reference
from the same round; tables report medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from typing import Any

import msgspec
import orjson

# --------------------------------------------------------------------------- inbound schema


class Set(msgspec.Struct, tag_field="op", tag="set"):
    id: str
    key: str
    value: Any


class Patch(msgspec.Struct, tag_field="op", tag="patch"):
    id: str
    key: str
    value: dict[str, Any]


class Get(msgspec.Struct, tag_field="op", tag="get"):
    id: str
    key: str


class Delete(msgspec.Struct, tag_field="op", tag="delete"):
    id: str
    key: str


class Subscribe(msgspec.Struct, tag_field="op", tag="subscribe"):
    id: str
    patterns: list[str]


class Unsubscribe(msgspec.Struct, tag_field="op", tag="unsubscribe"):
    id: str
    patterns: list[str]


class Snapshot(msgspec.Struct, tag_field="op", tag="snapshot"):
    id: str
    prefix: str = ""


class Hello(msgspec.Struct, tag_field="op", tag="hello"):
    id: str
    client: str
    protocol: int


class Ping(msgspec.Struct, tag_field="op", tag="ping"):
    id: str


class Claim(msgspec.Struct, tag_field="op", tag="claim"):
    id: str
    key: str
    ttl: float | None = None


Inbound = Set | Patch | Get | Delete | Subscribe | Unsubscribe | Snapshot | Hello | Ping | Claim
DECODER = msgspec.json.Decoder(Inbound)


class SetRaw(msgspec.Struct, tag_field="op", tag="set"):
    """Variant: keep the value as its raw JSON bytes (for caching / splicing later).
    Caveat: msgspec checks the Raw span is well-formed JSON, but keeps the client's
    whitespace verbatim and (observed with 0.22.0) does not reject invalid UTF-8
    inside strings, so it is not a drop-in source of canonical pre-encoded bytes."""

    id: str
    key: str
    value: msgspec.Raw


DECODER_RAW = msgspec.json.Decoder(
    SetRaw | Patch | Get | Delete | Subscribe | Unsubscribe | Snapshot | Hello | Ping | Claim
)

OPS = frozenset(
    {
        "set",
        "patch",
        "get",
        "delete",
        "subscribe",
        "unsubscribe",
        "snapshot",
        "hello",
        "ping",
        "claim",
    }
)
KEYED = frozenset({"set", "patch", "get", "delete", "claim"})
VALUED = frozenset({"set", "patch"})


class BadMessage(ValueError):
    pass


def hand_validate(d: Any) -> dict:
    """Minimal checks a dict-based handler would need before touching the store."""
    if type(d) is not dict:
        raise BadMessage("not an object")
    op = d.get("op")
    if op not in OPS:
        raise BadMessage("bad op")
    if type(d.get("id")) is not str:
        raise BadMessage("bad id")
    if op in KEYED and type(d.get("key")) is not str:
        raise BadMessage("bad key")
    if op in VALUED and "value" not in d:
        raise BadMessage("missing value")
    return d


# --------------------------------------------------------------------------- outbound


class Delta(msgspec.Struct, tag_field="op", tag="delta"):
    key: str
    value: Any
    version: int
    rev: int
    stale: bool
    ts: int


MSG = (
    b'{"op":"set","id":"5","key":"app.tally.status","value":{"text":"CAM 1","bg":"#ff0000","n":12}}'
)
KEY = "app.tally.status"
VALUE = {"text": "CAM 1", "bg": "#ff0000", "n": 12}
VALUE_BYTES = orjson.dumps(VALUE)  # what the store would cache next to the value
VERSION, REV, STALE, TS = 8, 1251, False, 1732700000500
# keys are [A-Za-z0-9_.-] only, so they can be spliced without escaping
TEMPLATE = b'{"op":"delta","key":"%b","value":%b,"version":%d,"rev":%d,"stale":%b,"ts":%d}'

ENC = msgspec.json.Encoder()
COMPACT = (",", ":")
# json.dumps() only uses its cached encoder for default arguments; with separators=
# it builds a JSONEncoder per call. Reusing one is the fair stdlib baseline.
STD_ENC = json.JSONEncoder(separators=COMPACT, ensure_ascii=False).encode

# A larger value (~1 KiB) to show how the splice/re-encode gap scales with value size.
LARGE_VALUE = {
    "rows": [
        {
            "cam": i,
            "label": f"CAM {i}",
            "tally": "pgm" if i == 1 else "off",
            "bg": "#ff0000",
            "fg": "#ffffff",
            "n": i * 7,
        }
        for i in range(1, 11)
    ]
}

G = dict(
    json=json,
    orjson=orjson,
    msgspec=msgspec,
    DECODER=DECODER,
    hand_validate=hand_validate,
    DECODER_RAW=DECODER_RAW,
    MSG=MSG,
    KEY=KEY,
    VALUE=VALUE,
    VALUE_BYTES=VALUE_BYTES,
    VERSION=VERSION,
    REV=REV,
    STALE=STALE,
    TS=TS,
    TEMPLATE=TEMPLATE,
    ENC=ENC,
    Delta=Delta,
    COMPACT=COMPACT,
    STD_ENC=STD_ENC,
    Fragment=orjson.Fragment,
    Raw=msgspec.Raw,
)

DECODE_CASES = [
    ("json.loads + hand validation", "hand_validate(json.loads(MSG))"),
    ("orjson.loads + hand validation", "hand_validate(orjson.loads(MSG))"),
    ("msgspec.json.decode (untyped) + hand validation", "hand_validate(msgspec.json.decode(MSG))"),
    ("msgspec Decoder(tagged union of 10 Structs)", "DECODER.decode(MSG)"),
    ("msgspec Decoder(same union, Set.value: msgspec.Raw)", "DECODER_RAW.decode(MSG)"),
]

_DICT = (
    '{"op": "delta", "key": KEY, "value": VALUE, "version": VERSION, "rev": REV, '
    '"stale": STALE, "ts": TS}'
)
_DICT_FRAG = _DICT.replace('"value": VALUE', '"value": Fragment(VALUE_BYTES)')
_DICT_RAW = _DICT.replace('"value": VALUE', '"value": Raw(VALUE_BYTES)')
ENCODE_CASES = [
    ("json: reused JSONEncoder(compact).encode(dict).encode()", f"STD_ENC({_DICT}).encode()"),
    (
        "json.dumps(dict, separators=compact).encode()",
        f"json.dumps({_DICT}, separators=COMPACT).encode()",
    ),
    ("json.dumps(dict).encode() (default separators)", f"json.dumps({_DICT}).encode()"),
    ("orjson.dumps(dict)", f"orjson.dumps({_DICT})"),
    ("msgspec Encoder.encode(dict)", f"ENC.encode({_DICT})"),
    (
        "msgspec Encoder.encode(Delta Struct)",
        "ENC.encode(Delta(KEY, VALUE, VERSION, REV, STALE, TS))",
    ),
    ("orjson.dumps(dict with orjson.Fragment(cached value bytes))", f"orjson.dumps({_DICT_FRAG})"),
    (
        "msgspec Encoder.encode(dict with msgspec.Raw(cached value bytes))",
        f"ENC.encode({_DICT_RAW})",
    ),
    (
        "bytes %-template with cached value bytes",
        'TEMPLATE % (KEY.encode(), VALUE_BYTES, VERSION, REV, b"true" if STALE else b"false", TS)',
    ),
]


def check() -> None:
    """All cases must agree before anything is timed."""
    expected_in = json.loads(MSG)
    for name, stmt in DECODE_CASES:
        out = eval(stmt, G)
        if isinstance(out, msgspec.Struct):
            got = {"op": type(out).__struct_config__.tag}
            for f in out.__struct_fields__:
                v = getattr(out, f)
                got[f] = json.loads(bytes(v)) if isinstance(v, msgspec.Raw) else v
        else:
            got = out
        assert got == expected_in, (name, got)
    ref = orjson.dumps(eval(_DICT, G))
    for name, stmt in ENCODE_CASES:
        out = eval(stmt, G)
        assert isinstance(out, bytes), name
        assert json.loads(out) == json.loads(ref), (name, out)
        if "default separators" not in name:
            assert out == ref, (name, out, ref)  # byte-identical, same key order
    # the decoder must actually reject bad input
    for bad in (
        b'{"op":"set","id":5,"key":"k","value":1}',
        b'{"op":"nope","id":"1"}',
        b'{"op":"get","id":"1"}',
    ):
        try:
            DECODER.decode(bad)
        except msgspec.ValidationError:
            pass
        else:
            raise AssertionError(bad)
        try:
            hand_validate(json.loads(bad))
        except BadMessage:
            pass
        else:
            raise AssertionError(bad)


def calibrate(stmt: str, target: float) -> int:
    t = timeit.Timer(stmt, globals=G)
    n = 1000
    while True:
        dt = t.timeit(n)
        if dt > target / 4:
            return max(1000, int(n * target / dt))
        n *= 4


def bench(
    cases: list[tuple[str, str]], rounds: int, target: float
) -> list[tuple[str, list[float], list[float]]]:
    timers = [
        (name, timeit.Timer(stmt, globals=G), calibrate(stmt, target)) for name, stmt in cases
    ]
    per_case: dict[str, list[float]] = {name: [] for name, _, _ in timers}
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in timers}
    for r in range(rounds):
        k = r % len(timers)
        order = timers[k:] + timers[:k]
        this_round = {}
        for name, t, n in order:
            this_round[name] = t.timeit(n) / n * 1e9
            per_case[name].append(this_round[name])
        ref = this_round[timers[0][0]]
        for name, ns in this_round.items():
            ratios[name].append(ns / ref)
    return [(name, per_case[name], ratios[name]) for name, _, _ in timers]


def table(title: str, rows, ref_name: str) -> None:
    print(f"\n### {title}\n")
    print(f"| case | ns/op (median) | min..max over rounds | vs {ref_name} |")
    print("|---|---:|---:|---:|")
    for name, xs, rs in rows:
        print(
            f"| {name} | {statistics.median(xs):,.0f} | {min(xs):,.0f}..{max(xs):,.0f} "
            f"| {statistics.median(rs):.2f}x |"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--target", type=float, default=0.25, help="seconds per measurement")
    args = p.parse_args()
    check()
    print(
        f"python {sys.version.split()[0]}, orjson {orjson.__version__}, msgspec "
        f"{msgspec.__version__}; {args.rounds} interleaved rounds, ~{args.target}s each",
        file=sys.stderr,
    )
    dec = bench(DECODE_CASES, args.rounds, args.target)
    enc = bench(ENCODE_CASES, args.rounds, args.target)
    loop_ns = statistics.median(timeit.Timer("pass").repeat(5, 10**6)) / 10**6 * 1e9
    table(f"Decode + validate one inbound `set` message ({len(MSG)} B)", dec, "json")
    table(
        f"Encode one outbound delta (value {len(VALUE_BYTES)} B, message "
        f"{len(eval(ENCODE_CASES[-1][1], G))} B)",
        enc,
        "json",
    )
    G["VALUE"], G["VALUE_BYTES"] = LARGE_VALUE, orjson.dumps(LARGE_VALUE)
    check()
    enc_l = bench(ENCODE_CASES, args.rounds, args.target)
    table(
        f"Encode one outbound delta, larger value (value {len(G['VALUE_BYTES'])} B)", enc_l, "json"
    )
    print(f"\n(empty timeit loop overhead: {loop_ns:.1f} ns/op, included in every row)")


if __name__ == "__main__":
    main()
