"""The requests :class:`~companion_hub.client.HubClient` sends (spec sections 4-8): their
messages, and what their results mean. Pure functions, no I/O; the request ``id`` is
added by :meth:`~companion_hub.client.protocol.ClientProtocol.send_request`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.limits import COMMAND_TIMEOUT_DEFAULT_MS, COMMAND_TIMEOUT_MAX_MS
from .messages import WriteResult, write_result_from_wire

__all__ = [
    "COMMAND_GRACE_S",
    "DEFAULT_COMMAND_TIMEOUT_MS",
    "MAX_COMMAND_TIMEOUT_MS",
    "command_message",
    "command_wait_s",
    "count_from_result",
    "delete_message",
    "get_message",
    "set_many_message",
    "set_message",
    "write_results_from_wire",
]

# the hub's own (protocol section 8): one definition for both sides
DEFAULT_COMMAND_TIMEOUT_MS = COMMAND_TIMEOUT_DEFAULT_MS
MAX_COMMAND_TIMEOUT_MS = COMMAND_TIMEOUT_MAX_MS
COMMAND_GRACE_S = 5.0
"""How much longer than the command's ``timeout_ms`` the SDK waits for its result."""


def get_message(patterns: Sequence[str]) -> dict[str, Any]:
    return {"op": "get", "patterns": list(patterns)}


def _with_options(msg: dict[str, Any], expect_version: int | None, durable: bool) -> dict[str, Any]:
    if expect_version is not None:
        msg["expect_version"] = expect_version
    if durable:
        msg["durable"] = True  # sent only when asked for (protocol revision 2)
    return msg


def set_message(
    key: str, value: Any, expect_version: int | None = None, durable: bool = False
) -> dict[str, Any]:
    return _with_options({"op": "set", "key": key, "value": value}, expect_version, durable)


def set_many_message(
    values: Mapping[str, Any],
    expect_versions: Mapping[str, int] | None = None,
    durable: bool = False,
) -> dict[str, Any]:
    """An atomic batch ``set``; ``expect_versions`` holds the keys to compare-and-set."""
    versions = expect_versions or {}
    entries = [
        _with_options({"key": k, "value": v}, versions.get(k), False) for k, v in values.items()
    ]
    return _with_options({"op": "set", "entries": entries}, None, durable)


def delete_message(
    key: str, expect_version: int | None = None, durable: bool = False
) -> dict[str, Any]:
    return _with_options({"op": "delete", "key": key}, expect_version, durable)


def write_results_from_wire(result: Any) -> list[WriteResult]:
    """The ``results`` of a batch ``set``: one per entry, in order."""
    return [write_result_from_wire(r["key"], r) for r in result["results"]]


def count_from_result(result: Any, name: str) -> int:
    """A count in a result (``deleted`` of ``sync``, ``delivered`` of ``publish``)."""
    return int(result.get(name, 0)) if isinstance(result, dict) else 0


def command_message(
    target: str,
    name: str,
    params: Mapping[str, Any] | None,
    timeout_ms: int | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "op": "command",
        "target": target,
        "name": name,
        "params": dict(params or {}),
    }
    if timeout_ms is not None:
        msg["timeout_ms"] = timeout_ms
    if idempotency_key is not None:
        msg["idempotency_key"] = idempotency_key
    return msg


def command_wait_s(timeout_ms: int | None) -> float:
    """How long to wait for a command's result: the hub answers ``TIMEOUT`` after
    ``timeout_ms`` (default 5 000, clamped to 60 000); a little grace beyond that."""
    hub_timeout_ms = timeout_ms if timeout_ms is not None else DEFAULT_COMMAND_TIMEOUT_MS
    return min(max(hub_timeout_ms, 1), MAX_COMMAND_TIMEOUT_MS) / 1000 + COMMAND_GRACE_S
