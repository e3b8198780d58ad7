from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.core.jsonvalue import json_equal


def test_json_equality_rules() -> None:
    assert json_equal(1, 1.0)
    assert json_equal({"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1})
    assert not json_equal(True, 1)
    assert not json_equal(1, True)
    assert not json_equal(False, 0)
    assert not json_equal(None, False)
    assert not json_equal("1", 1)
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal({"a": 1}, {"a": 1, "b": None})
    assert json_equal(None, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(json_values)
def test_roundtrip_is_equal(v: Any) -> None:
    assert json_equal(v, msgspec.json.decode(msgspec.json.encode(v)))


@given(json_values, json_values)
def test_equal_iff_canonical_forms_equal(a: Any, b: Any) -> None:
    # integers only here, so canonical sorted encoding decides equality
    def canon(x: Any) -> bytes:
        return msgspec.json.encode(x, order="sorted")

    assert json_equal(a, b) == (canon(a) == canon(b))
