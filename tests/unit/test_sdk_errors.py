"""The SDK's exception tree: one base, one constructor convention (the hub's own)."""

from __future__ import annotations

import inspect

import pytest

import companion_hub.client as sdk
from companion_hub.client import errors
from companion_hub.core.errors import HubError as CoreHubError


def test_every_sdk_exception_is_a_hub_error() -> None:
    classes = [
        obj
        for name in sdk.__all__
        if inspect.isclass(obj := getattr(sdk, name)) and issubclass(obj, BaseException)
    ]
    assert len(classes) >= 15
    assert all(issubclass(c, errors.HubError) for c in classes)


def test_constructors_follow_the_hubs_convention() -> None:
    core = CoreHubError(errors.ErrorCode.CONFLICT, "busy", {"version": 3})
    base = errors.HubError(errors.ErrorCode.CONFLICT, "busy", {"version": 3})
    fixed = errors.Conflict("busy", {"version": 3})  # the class fixes the code
    for exc in (core, base, fixed):
        assert (exc.code, exc.message, exc.details) == ("CONFLICT", "busy", {"version": 3})
        assert str(exc) == "CONFLICT: busy"
        assert exc.to_wire() == {"code": "CONFLICT", "message": "busy", "details": {"version": 3}}
    assert errors.HubError("NOT_FOUND", "x").code is errors.ErrorCode.NOT_FOUND  # a str code
    assert errors.HubError("WHAT", "x").code is errors.ErrorCode.FAILED  # unknown: FAILED
    assert errors.Unavailable().message == "UNAVAILABLE"  # no message: the code


def test_error_from_wire_builds_the_right_class() -> None:
    exc = errors.error_from_wire({"code": "CONFLICT", "message": "m", "details": {"version": 2}})
    assert type(exc) is errors.Conflict and exc.details == {"version": 2}
    assert type(errors.error_from_wire({"code": "WHAT", "message": "m"})) is errors.HubError
    assert type(errors.error_from_wire("nonsense")) is errors.Internal
    assert type(errors.error_from_wire({"message": "no code"})) is errors.Internal


def test_the_two_that_are_also_builtin_exceptions() -> None:
    with pytest.raises(ValueError, match="invalid client name"):
        sdk.HubClient("ws://127.0.0.1:1/ws", "Bad Name")
    closed = errors.ConnectionClosed("the connection closed (1008)", {"close_code": 1008})
    assert isinstance(closed, errors.Unavailable) and closed.close_code == 1008
    assert errors.ConnectionClosed("gone").close_code is None
