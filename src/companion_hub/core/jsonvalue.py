"""JSON value equality as the protocol defines it (section 3).

Two values are equal when they are equal *as JSON*: object member order does not
matter and ``1`` equals ``1.0``, but ``true`` is not ``1`` (Python's ``==`` would
say it is) and ``1`` is not ``"1"``.
"""

from __future__ import annotations

from typing import Any

JSON = Any
"""A decoded JSON value: None, bool, int, float, str, list or dict with str keys."""


def json_equal(a: JSON, b: JSON) -> bool:
    ta = type(a)
    tb = type(b)
    if ta is bool or tb is bool:
        return ta is tb and a is b
    if ta is dict:
        if tb is not dict or len(a) != len(b):
            return False
        for k, v in a.items():
            if k not in b or not json_equal(v, b[k]):
                return False
        return True
    if ta is list:
        if tb is not list or len(a) != len(b):
            return False
        return all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta is str or tb is str or a is None or b is None:
        return ta is tb and a == b
    # numbers: int and float compare by value (1 == 1.0)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return bool(a == b)
    return False
