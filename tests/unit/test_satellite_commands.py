"""The Companion adapter's command parameters: checked before anything is sent."""

from __future__ import annotations

import pytest

from companion_hub.adapters.companion.commands import (
    amount_param,
    custom_variable_params,
    input_params,
    location_param,
    style_params,
    unknown_command,
)
from companion_hub.core.errors import ErrorCode, HubError


def test_good_parameters() -> None:
    assert location_param({"location": "1/0/-2"}) == "1/0/-2"
    assert amount_param({}) == 1 and amount_param({"steps": -3}) == -3
    assert amount_param({"amount": 2, "steps": 5}) == 2
    assert custom_variable_params({"name": "cue", "value": None}) == ("cue", None)
    assert style_params({"text": "GO", "size": 14, "other": 1}) == {"text": "GO", "size": "14"}
    assert input_params({"name": "fader", "value": "0.5"}, {"fader"}) == ("fader", "0.5")
    assert input_params({"name": "fader", "value": {"a": 1}}, {"fader"})[1] == '{"a":1}'


@pytest.mark.parametrize(
    "check",
    [
        lambda: location_param({"location": "1/0"}),
        lambda: location_param({"location": 5}),
        lambda: amount_param({"amount": 0}),
        lambda: amount_param({"amount": True}),
        lambda: amount_param({"amount": 1.5}),
        lambda: custom_variable_params({"name": ""}),
        lambda: custom_variable_params({"name": "cue"}),
        lambda: style_params({"location": "1/0/0"}),
        lambda: input_params({"name": "other", "value": 1}, {"fader"}),
        lambda: input_params({"name": ["fader"], "value": 1}, {"fader"}),  # not hashable
    ],
)
def test_bad_parameters_are_bad_requests(check: object) -> None:
    with pytest.raises(HubError) as err:
        check()  # type: ignore[operator]
    assert err.value.code is ErrorCode.BAD_REQUEST


def test_unknown_command_lists_the_commands() -> None:
    err = unknown_command("fly")
    assert err.code is ErrorCode.NOT_FOUND and "press" in err.message
