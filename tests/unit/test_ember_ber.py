"""BER codec: tags, lengths (definite and indefinite), universal values, bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.ember import ber
from companion_hub.adapters.companion.ember.ber import BerError, Tag, TagClass, Tlv
from tests.fuzzing import fuzz_settings


def test_real_matches_the_reference_vector() -> None:
    # the reference library's own test: 8.32 -> 09 09 80 03 04 28 f5 c2 8f 5c 29
    assert ber.encode(ber.real(8.32)).hex() == "090980030428f5c28f5c29"
    assert ber.decode_real(bytes.fromhex("80030428f5c28f5c29")) == 8.32


@pytest.mark.parametrize(
    ("value", "content"),
    [(0.0, b""), (math.inf, b"\x40"), (-math.inf, b"\x41")],
)
def test_real_special_values(value: float, content: bytes) -> None:
    assert ber.encode_real(value) == content
    assert ber.decode_real(content) == value


def test_real_nan_and_decimal() -> None:
    assert math.isnan(ber.decode_real(ber.encode_real(math.nan)))
    assert ber.decode_real(b"\x03-1.5E1") == -15.0
    assert ber.decode_real(b"\x43") == 0.0 and math.copysign(1, ber.decode_real(b"\x43")) < 0


@given(st.floats(allow_nan=False))
def test_real_round_trip(x: float) -> None:
    assert ber.decode_real(ber.encode_real(x)) == x


@given(st.integers(min_value=-(2**100), max_value=2**100))
def test_integer_round_trip(n: int) -> None:
    content = ber.encode_integer(n)
    assert ber.decode_integer(content) == n
    assert content == n.to_bytes(len(content), "big", signed=True)
    if len(content) > 1:  # minimal
        assert not (content[0] == 0 and content[1] < 0x80)
        assert not (content[0] == 0xFF and content[1] >= 0x80)


def test_integer_examples() -> None:
    assert ber.encode_integer(0) == b"\x00"
    assert ber.encode_integer(127) == b"\x7f"
    assert ber.encode_integer(128) == b"\x00\x80"
    assert ber.encode_integer(-128) == b"\x80"
    assert ber.encode_integer(-129) == b"\xff\x7f"
    with pytest.raises(BerError):
        ber.decode_integer(b"")


def test_relative_oid() -> None:
    assert ber.encode_relative_oid((0, 3, 2, 0, 1)) == b"\x00\x03\x02\x00\x01"
    assert ber.encode_relative_oid((200,)) == b"\x81\x48"
    assert ber.decode_relative_oid(b"\x00\x03\x81\x48") == (0, 3, 200)
    for bad in (b"\x81", b"\x80\x01", b"\x90\x80\x80\x80\x80\x00"):
        with pytest.raises(BerError):
            ber.decode_relative_oid(bad)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=20))
def test_relative_oid_round_trip(path: list[int]) -> None:
    assert ber.decode_relative_oid(ber.encode_relative_oid(path)) == tuple(path)


def test_strings_and_booleans() -> None:
    assert ber.encode(ber.utf8("é")) == b"\x0c\x02\xc3\xa9"
    assert ber.encode(ber.boolean(True)) == b"\x01\x01\xff"
    assert ber.decode_boolean(b"\x01") is True
    with pytest.raises(BerError):
        ber.decode_utf8(b"\xff")
    with pytest.raises(BerError):
        ber.decode_boolean(b"")


def test_multi_byte_tags_and_long_lengths() -> None:
    tag = Tag(TagClass.CONTEXT, 200, False)
    data = ber.encode(Tlv(tag, b"x" * 300))
    assert data[:3] == b"\x9f\x81\x48" and data[3:6] == b"\x82\x01\x2c"
    assert ber.decode(data) == Tlv(tag, b"x" * 300)


def test_indefinite_lengths_decode() -> None:
    # [APPLICATION 0] { [0] { INTEGER 5 } } with indefinite lengths, as libember writes
    data = bytes.fromhex("6080a08002010500000000")
    el = ber.decode(data)
    assert el.tag == ber.application(0)
    assert ber.decode_integer(el.children[0].children[0].content) == 5
    # primitive with indefinite length, missing end-of-contents
    for bad in ("0280", "6080a0800201050000", "6080"):
        with pytest.raises(BerError):
            ber.decode(bytes.fromhex(bad))


def test_bounds() -> None:
    nested = ber.integer(1)
    for _ in range(100):
        nested = ber.constructed(ber.SEQUENCE, [nested])
    with pytest.raises(BerError, match="deep"):
        ber.decode(ber.encode(nested))
    many = ber.encode(ber.constructed(ber.SEQUENCE, [ber.null()] * 1000))
    with pytest.raises(BerError, match="many"):
        ber.decode(many, ber.Limits(max_elements=100))
    with pytest.raises(BerError):
        ber.decode(b"\x04\x84\x7f\xff\xff\xff")  # length beyond the limit
    with pytest.raises(BerError):
        ber.decode(b"\x04\x85\x00\x00\x00\x00\x01")


tlvs = st.recursive(
    st.builds(
        Tlv,
        st.builds(Tag, st.sampled_from(list(TagClass)), st.integers(0, 5000), st.just(False)),
        st.binary(max_size=40),
    ),
    lambda inner: st.builds(
        lambda cls, n, kids: ber.constructed(Tag(cls, n, True), kids),
        st.sampled_from(list(TagClass)),
        st.integers(0, 5000),
        st.lists(inner, max_size=5),
    ),
    max_leaves=30,
)


@given(tlvs)
def test_tlv_round_trip(tlv: Tlv) -> None:
    if tlv.tag == Tag(TagClass.UNIVERSAL, 0, False):
        return  # the end-of-contents tag is not an element
    try:
        assert ber.decode(ber.encode(tlv)) == tlv
    except BerError as exc:
        assert "end-of-contents" in str(exc)


@pytest.mark.fuzz
@fuzz_settings
@given(st.binary(max_size=300))
def test_garbage_raises_only_ber_error(data: bytes) -> None:
    try:
        ber.decode_all(data)
    except BerError:
        pass


@pytest.mark.fuzz
@fuzz_settings
@given(st.binary(max_size=40))
def test_value_decoders_raise_only_ber_error(data: bytes) -> None:
    for fn in (ber.decode_real, ber.decode_integer, ber.decode_utf8, ber.decode_relative_oid):
        try:
            fn(data)
        except BerError:
            pass
