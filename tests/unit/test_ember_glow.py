"""Glow: tag numbers, the elements Companion uses, requests, round trips, garbage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.ember import ber, glow
from companion_hub.adapters.companion.ember.glow import (
    Command,
    Node,
    NodeContents,
    Parameter,
    ParameterContents,
)
from tests.fuzzing import fuzz_settings


def test_get_directory_on_root_bytes() -> None:
    # Root[A0] { RootElementCollection[A11] { [0] Command[A2] { [0] INTEGER 32 } } }
    assert glow.get_directory(()).hex() == "600b6b09a0076205a003020120"


def test_get_directory_on_path_bytes() -> None:
    data = glow.get_directory((0, 3, 2))
    # Root { RootElementCollection { [0] QualifiedNode[A10] { [0] RELATIVE-OID 0.3.2,
    #   [2] ElementCollection[A4] { [0] Command { [0] 32 } } } } }
    assert data.hex() == "601a6b18a0166a14a0050d03000302a20b6409a0076205a003020120"
    root = glow.decode_root(data)
    assert root.elements == [Node((0, 3, 2), None, [Command(32)], qualified=True)]


def test_set_value_is_a_qualified_parameter() -> None:
    data = glow.set_value((0, 3, 2, 0, 1), "hello")
    assert data[6] == 0x69  # [APPLICATION 9]
    (p,) = glow.decode_root(data).elements
    assert isinstance(p, Parameter) and p.qualified and p.path == (0, 3, 2, 0, 1)
    assert p.contents is not None and p.contents.value == "hello" and p.contents.has_value


def test_indefinite_length_message_decodes() -> None:
    # every constructed length indefinite (as libember-based providers write)
    def indefinite(t: ber.Tlv) -> bytes:
        if not t.tag.constructed:
            return ber.encode(t)
        inner = b"".join(indefinite(c) for c in t.children)
        return ber.encode_tag(t.tag) + b"\x80" + inner + b"\x00\x00"

    el = Node((0, 3), NodeContents("variables"), [Node((0, 3, 1), NodeContents("internal"))], True)
    data = indefinite(ber.decode(glow.encode_root([el])))
    assert data.count(b"\x80\x00") == 0 or data[1] == 0x80
    assert glow.decode_root(data).elements == [el]
    assert glow.decode_root(indefinite(ber.decode(glow.get_directory()))).elements == [Command(32)]


def test_numbered_children_get_full_paths() -> None:
    tree = Node(
        (0, 3, 1),
        NodeContents("internal", "Companion internal variables"),
        [
            Node((0, 3, 1, 0), NodeContents("uptime", "Uptime")),
            Parameter((0, 3, 1, 1), ParameterContents(identifier="x", value=5, has_value=True)),
        ],
        qualified=True,
    )
    root = glow.decode_root(glow.encode_root([tree]))
    assert root.elements == [tree]
    assert [e.path for e in glow.walk(root.elements)] == [(0, 3, 1), (0, 3, 1, 0), (0, 3, 1, 1)]


def test_node_contents_is_a_universal_set() -> None:
    data = glow.encode_root([Node((0,), NodeContents("Companion Tree"))])
    assert bytes.fromhex("a1") in data and bytes.fromhex("31") in data
    tlv = ber.decode(data)
    node = tlv.children[0].children[0].children[0]
    assert node.tag == glow.NODE
    assert node.children[1].children[0].tag == ber.SET


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=10),
)
params = st.builds(
    ParameterContents,
    identifier=st.one_of(st.none(), st.text(max_size=10)),
    description=st.one_of(st.none(), st.text(max_size=10)),
    value=values,
    has_value=st.just(True),
    access=st.one_of(st.none(), st.integers(0, 3)),
    type=st.one_of(st.none(), st.integers(0, 7)),
)


@given(st.lists(st.tuples(st.integers(0, 1000), params), max_size=6), st.text(max_size=10))
def test_round_trip(children: list[tuple[int, ParameterContents]], ident: str) -> None:
    kids: list[glow.Element] = [Parameter((0, 5, n), c) for n, c in children]
    el = Node((0, 5), NodeContents(ident, None, True), kids, qualified=True)
    assert glow.decode_root(glow.encode_root([el])).elements == [el]


def test_other_root_kinds_and_elements_are_skipped() -> None:
    # StreamCollection [A6]
    assert glow.decode_root(bytes.fromhex("60026600")).elements == []
    # a Matrix [A13] in the root collection
    c = ber.constructed
    matrix = c(ber.application(13), [c(ber.context(0), [ber.integer(1)])])
    msg = c(glow.ROOT, [c(glow.ROOT_ELEMENT_COLLECTION, [c(ber.context(0), [matrix])])])
    root = glow.decode_root(ber.encode(msg))
    assert root.elements == [] and root.skipped == 1


@fuzz_settings
@given(st.binary(max_size=300))
def test_garbage_raises_only_ber_error(data: bytes) -> None:
    try:
        glow.decode_root(data)
    except ber.BerError:
        pass


@fuzz_settings
@given(st.binary(min_size=1, max_size=40), st.integers(0, 200))
def test_mutated_messages_raise_only_ber_error(noise: bytes, at: int) -> None:
    contents = ParameterContents("s", value="v", has_value=True)
    base = bytearray(glow.encode_root([Parameter((0, 3, 2, 0, 1), contents, qualified=True)]))
    at %= len(base)
    base[at : at + len(noise)] = noise
    try:
        glow.decode_root(bytes(base))
    except ber.BerError:
        pass
