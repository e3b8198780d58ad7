"""Keys, patterns and the pattern index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion_hub.core.errors import ErrorCode, HubError
from companion_hub.core.keys import (
    check_key,
    could_match_under,
    is_valid_client_name,
    is_valid_key,
    match,
    parse_pattern,
)
from companion_hub.core.patterns import PatternIndex


@pytest.mark.parametrize(
    "key", ["a", "companion.buttons.1.0.2", "app.tally.status", "A-b_c.9", "x" * 64]
)
def test_valid_keys(key: str) -> None:
    assert is_valid_key(key)
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", ".", "a.", ".a", "a..b", "a b", "a.*", "ü", "x" * 65, 5, None, "a/b", 'a"b']
)
def test_invalid_keys(key: object) -> None:
    assert not is_valid_key(key)
    with pytest.raises(HubError) as exc:
        check_key(key)
    assert exc.value.code is ErrorCode.BAD_REQUEST


def test_key_length_limit_in_bytes() -> None:
    long_key = ".".join(["abcdefgh"] * 40)  # 359 bytes
    assert not is_valid_key(long_key, 256)
    with pytest.raises(HubError, match="longer than 256"):
        check_key(long_key, 256)


def test_client_names() -> None:
    assert is_valid_client_name("tally")
    assert is_valid_client_name("a" + "b" * 62)
    assert not is_valid_client_name("a" + "b" * 63)
    assert not is_valid_client_name("Tally")
    assert not is_valid_client_name("-x")
    assert not is_valid_client_name("")


@pytest.mark.parametrize("bad", ["", "a.**.b", "a.b*", "**.a", "a..b", "a.*x", 3, "a.***"])
def test_invalid_patterns(bad: object) -> None:
    with pytest.raises(HubError) as exc:
        parse_pattern(bad)
    assert exc.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.**", "a", True),
        ("a.**", "a.b", True),
        ("a.**", "a.b.c", True),
        ("a.**", "ab", False),
        ("**", "anything.at.all", True),
        ("a.*", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("*.b", "x.b", True),
        ("a.*.c.**", "a.x.c", True),
        ("a.*.c.**", "a.x.d", False),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_match(pattern: str, key: str, expected: bool) -> None:
    p = parse_pattern(pattern)
    assert match(p, key) is expected
    index: PatternIndex[str] = PatternIndex()
    index.add(p, "s")
    assert (set(index.match(key)) == {"s"}) is expected


def test_could_match_under() -> None:
    assert could_match_under(parse_pattern("app.**"), "app.x")
    assert could_match_under(parse_pattern("**"), "companion")
    assert could_match_under(parse_pattern("app.*.k"), "app.x")
    assert not could_match_under(parse_pattern("app"), "app.x")
    assert not could_match_under(parse_pattern("companion.**"), "app.x")


segment = st.sampled_from(["a", "b", "c", "dd"])
pattern_seg = st.sampled_from(["a", "b", "c", "dd", "*"])
keys = st.lists(segment, min_size=1, max_size=4).map(".".join)
patterns = (
    st.tuples(st.lists(pattern_seg, min_size=0, max_size=4), st.booleans())
    .filter(lambda t: t[0] or t[1])
    .map(lambda t: tuple(t[0]) + (("**",) if t[1] else ()))
)


@settings(max_examples=300, deadline=None)
@given(
    subs=st.lists(st.tuples(patterns, st.integers(0, 5)), max_size=12),
    removals=st.lists(st.integers(0, 11), max_size=6),
    probe=st.lists(keys, min_size=1, max_size=10),
)
def test_index_equals_naive_matching(
    subs: list[tuple[tuple[str, ...], int]], removals: list[int], probe: list[str]
) -> None:
    index: PatternIndex[int] = PatternIndex()
    live: list[tuple[tuple[str, ...], int]] = []
    for p, s in subs:
        index.add(p, s)
        live.append((p, s))
    for r in removals:
        if r < len(live):
            p, s = live.pop(r)
            assert index.remove(p, s)
    assert len(index) == len(live)
    for key in probe:
        got = list(index.match(key))
        assert len(got) == len(set(got)), "a subscriber is returned once"
        assert set(got) == {s for p, s in live if match(p, key)}


def test_index_prunes_and_reports_missing() -> None:
    index: PatternIndex[str] = PatternIndex()
    p = parse_pattern("a.*.c")
    index.add(p, "x")
    index.add(p, "x")
    assert index.remove(p, "x")
    assert set(index.match("a.b.c")) == {"x"}
    assert index.remove(p, "x")
    assert not index.remove(p, "x")
    assert list(index.match("a.b.c")) == []
    assert index._root.is_empty()
