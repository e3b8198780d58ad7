"""The adapter's commands (target = its namespace): names and parameter checks.

Pure functions: each checks one command's parameters and returns them ready to use,
or raises a ``BAD_REQUEST`` :class:`~companion_hub.core.errors.HubError` saying what
is wrong. Running a command is the adapter's part.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from ...core.errors import ErrorCode, HubError
from ...protocol import encode as wire

COMMANDS = ("press", "down", "up", "rotate", "set_variable", "set_style", "set_input", "refresh")
STYLE_FIELDS = ("text", "bgcolor", "color", "size")

_LOCATION = re.compile(r"^(\d+)/(-?\d+)/(-?\d+)$")


def location_param(params: dict[str, Any]) -> str:
    """``params.location``: ``"page/row/column"``, as Companion's HTTP routes take it."""
    value = params.get("location")
    if not isinstance(value, str) or not _LOCATION.match(value):
        raise HubError(
            ErrorCode.BAD_REQUEST, "params.location must be 'page/row/column', e.g. '1/0/2'"
        )
    return value


def amount_param(params: dict[str, Any]) -> int:
    """``params.amount`` (or ``steps``, default 1): signed steps of a rotation."""
    amount = params.get("amount", params.get("steps", 1))
    if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
        raise HubError(ErrorCode.BAD_REQUEST, "params.amount must be a non-zero integer")
    return amount


def custom_variable_params(params: dict[str, Any]) -> tuple[str, Any]:
    """``params.name`` and ``params.value`` of ``set_variable``."""
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise HubError(ErrorCode.BAD_REQUEST, "params.name must be a custom variable name")
    if "value" not in params:
        raise HubError(ErrorCode.BAD_REQUEST, "params.value is required")
    return name, params["value"]


def style_params(params: dict[str, Any]) -> dict[str, str]:
    """The style fields of ``set_style`` given in ``params``, as text (at least one)."""
    style = {k: str(params[k]) for k in STYLE_FIELDS if k in params}
    if not style:
        raise HubError(ErrorCode.BAD_REQUEST, "give at least one of text, bgcolor, color, size")
    return style


def input_params(params: dict[str, Any], declared: Collection[str]) -> tuple[str, str]:
    """``params.name`` (one of the ``declared`` inputs) and ``params.value`` as text:
    a string as it is, anything else as JSON."""
    name = params.get("name")
    if not isinstance(name, str) or name not in declared:
        raise HubError(
            ErrorCode.BAD_REQUEST,
            f"params.name must be a declared transferable input: {sorted(declared)}",
        )
    value = params.get("value")
    return name, value if isinstance(value, str) else wire.encode_value(value).decode()


def unknown_command(name: str) -> HubError:
    return HubError(ErrorCode.NOT_FOUND, f"unknown command {name!r}; one of: {', '.join(COMMANDS)}")
