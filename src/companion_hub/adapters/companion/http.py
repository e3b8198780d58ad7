"""Companion's HTTP remote-control API (the ``/api`` routes): polling and commands.

Every response body is treated as hostile: bodies are read with a byte cap (never
whole), and the parsers (:func:`parse_value`, :func:`parse_connections`,
:func:`parse_uptime`) are pure functions that return a documented result or raise
:class:`HttpError`, whatever the bytes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from ...core.errors import CompanionHubError

DEFAULT_MAX_VALUE_BYTES = 256 * 1024
# the connections list is one body for every connection (each a few hundred bytes)
MAX_CONNECTIONS_BYTES = 4 * 1024 * 1024
# error answers and command replies are only quoted in messages
MAX_REPLY_BYTES = 64 * 1024
_QUOTE_CHARS = 300
_UPTIME_CHARS = 64
_POLL_CONCURRENCY = 16  # variable requests in flight at a time


class HttpError(CompanionHubError):
    """Companion answered with an error status (or not at all), or with a body the hub
    cannot use (too large, or not the documented shape)."""

    def __init__(self, status: int | None, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}" if status else text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class VariableRef:
    """``custom:name``, ``internal:name`` or ``<connection label>:<name>``."""

    connection: str
    name: str

    @classmethod
    def parse(cls, spec: str) -> VariableRef:
        conn, sep, name = spec.partition(":")
        if not sep or not conn or not name:
            raise ValueError(f"variable {spec!r}: expected 'connection:name' (e.g. 'custom:cue')")
        return cls(conn, name)

    @property
    def path(self) -> str:
        if self.connection == "custom":
            return f"/api/custom-variable/{self.name}/value"
        return f"/api/variable/{self.connection}/{self.name}/value"

    def __str__(self) -> str:
        return f"{self.connection}:{self.name}"


class BodyTooLarge(HttpError):
    """The body is larger than the cap for it (only its first bytes were read)."""


class ConnectionStatus(msgspec.Struct, frozen=True):
    """A connection's status as Companion reports it (``InstanceStatus``)."""

    category: str | None = None
    level: str | None = None
    message: str | None = None


class Connection(msgspec.Struct, frozen=True):
    """One item of ``GET /api/connections``; a field of the wrong type is None."""

    label: str
    id: str | None = None
    module_id: str | None = None
    enabled: bool | None = None
    status: ConnectionStatus | None = None

    def as_state(self) -> dict[str, Any]:
        """The value the adapter stores under ``<ns>.connections.<label>``."""
        return {
            "id": self.id,
            "module": self.module_id,
            "enabled": self.enabled,
            "status": None if self.status is None else msgspec.structs.asdict(self.status),
        }


class _ConnectionItem(msgspec.Struct, rename={"module_id": "moduleId"}):
    """The shape of an item: an object with a string ``label``. The other fields are
    kept raw so that one of the wrong type drops only that field, not the item."""

    label: str
    id: msgspec.Raw = msgspec.Raw(b"null")
    module_id: msgspec.Raw = msgspec.Raw(b"null")
    enabled: msgspec.Raw = msgspec.Raw(b"null")
    status: msgspec.Raw = msgspec.Raw(b"null")


_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_item_decoder = msgspec.json.Decoder(_ConnectionItem)


def _field(raw: msgspec.Raw, typ: Any) -> Any:
    try:
        return msgspec.json.decode(raw, type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None


def parse_connections(body: bytes) -> tuple[list[Connection], int]:
    """Decode a ``GET /api/connections`` body: (connections, number of items skipped).

    The body must be a JSON list, else :class:`HttpError`. An item that is not an
    object, or whose ``label`` is not a string, is skipped and counted; in a kept
    item a field of the wrong type (``id``/``moduleId`` not a string, ``enabled`` not
    a boolean, ``status`` not an object of strings or nulls) becomes None.
    """
    try:
        items = _items_decoder.decode(body)
    except msgspec.ValidationError:
        raise HttpError(None, "GET /api/connections: the body is not a JSON list") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HttpError(None, f"GET /api/connections: the body is not JSON ({exc})") from None
    connections: list[Connection] = []
    skipped = 0
    for raw in items:
        try:
            item = _item_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            skipped += 1
            continue
        connections.append(
            Connection(
                label=item.label,
                id=_field(item.id, str),
                module_id=_field(item.module_id, str),
                enabled=_field(item.enabled, bool),
                status=_field(item.status, ConnectionStatus),
            )
        )
    return connections, skipped


def parse_uptime(text: str) -> float | None:
    """``internal:uptime`` in seconds, or None unless it is a finite number >= 0."""
    if len(text) > _UPTIME_CHARS:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_value(status: int, body: bytes, limit: int) -> str | None:
    """A variable's answer: its text (200), None (404: no such variable), else HttpError.

    ``body`` is what was read (at most ``limit + 1`` bytes); more than ``limit`` bytes
    raises :class:`BodyTooLarge`. Invalid UTF-8 does not fail: it is decoded with
    replacement characters (Companion writes UTF-8, so this only changes what was
    already broken).
    """
    if status == 200:
        if len(body) > limit:
            raise BodyTooLarge(None, f"value larger than {limit} bytes")
        return body.decode("utf-8", errors="replace")
    if status == 404:
        return None
    raise HttpError(status, _quote(body) or "GET failed")


def _quote(body: bytes) -> str:
    """The start of an error body, for a message."""
    text = body[: _QUOTE_CHARS * 4].decode("utf-8", errors="replace")
    return text[:_QUOTE_CHARS] + ("..." if len(text) > _QUOTE_CHARS else "")


async def _read_capped(content: aiohttp.StreamReader, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of a body: enough to tell that it is too large
    without ever holding more of it."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await content.read(cap + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


@dataclass
class PollResult:
    values: dict[VariableRef, str | None] = field(default_factory=dict)  # None: 404
    connections: list[Connection] = field(default_factory=list)
    skipped_connections: int = 0  # items of the connections list that were unusable
    uptime: float | None = None
    failed: dict[VariableRef, str] = field(default_factory=dict)  # this poll could not read
    too_large: set[VariableRef] = field(default_factory=set)  # of failed: over max_value_bytes


class CompanionHttp:
    """A small client of Companion's ``/api`` routes.

    A variable's body is read up to ``max_value_bytes`` (a larger one is reported as
    failed and never read whole), the connections list up to
    :data:`MAX_CONNECTIONS_BYTES`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 3.0,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self.base = f"http://{host}:{port}"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_value_bytes = max_value_bytes
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        cap: int = MAX_REPLY_BYTES,
        json_body: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, at most ``cap + 1`` bytes of the body).

        A body that was not read to its end closes the connection (aiohttp does not
        reuse a connection with unread data), so nothing more of it is received.
        """
        kwargs: dict[str, Any] = {"params": params}
        if json_body is not None:
            kwargs["data"] = _json(json_body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        try:
            async with self._http().request(method, self.base + path, **kwargs) as r:
                body = await _read_capped(r.content, cap)
                if len(body) > cap:
                    r.close()  # drop the connection and the rest of the body with it
                return r.status, body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise HttpError(
                None, f"Companion's HTTP API is unreachable: {exc or type(exc).__name__}"
            ) from None

    # --- reads --------------------------------------------------------------------------

    async def get_value(self, ref: VariableRef) -> str | None:
        """The variable's text, None if it does not exist (see :func:`parse_value`)."""
        status, body = await self._request("GET", ref.path, cap=self.max_value_bytes)
        return parse_value(status, body, self.max_value_bytes)

    async def connections(self) -> tuple[list[Connection], int]:
        """The connections and the number of unusable items (see
        :func:`parse_connections`); HttpError if the list cannot be read."""
        status, body = await self._request("GET", "/api/connections", cap=MAX_CONNECTIONS_BYTES)
        if status != 200:
            raise HttpError(status, _quote(body) or "GET /api/connections failed")
        if len(body) > MAX_CONNECTIONS_BYTES:
            raise BodyTooLarge(
                None, f"GET /api/connections: the body is larger than {MAX_CONNECTIONS_BYTES} bytes"
            )
        return parse_connections(body)

    async def poll(
        self,
        refs: list[VariableRef],
        on_values: Callable[[dict[VariableRef, str | None]], None] | None = None,
    ) -> PollResult:
        """One poll: uptime (which also tells whether the API is reachable at all),
        every variable (16 requests at a time, each batch handed to ``on_values`` as
        soon as it is in), then the connections.

        Raises :class:`HttpError` only when the API as a whole fails (uptime or the
        connections list); a single variable that cannot be read is reported in
        ``failed`` and left as it was (one over ``max_value_bytes`` also in
        ``too_large``). An uptime that is not a finite number >= 0 is None.
        """
        result = PollResult()
        path = VariableRef("internal", "uptime").path
        status, body = await self._request("GET", path, cap=_UPTIME_CHARS)
        try:
            uptime = parse_value(status, body, _UPTIME_CHARS)
        except BodyTooLarge:
            uptime = None  # the API answered: it is reachable, the uptime is unusable
        if uptime is not None:
            result.uptime = parse_uptime(uptime)
        for i in range(0, len(refs), _POLL_CONCURRENCY):
            chunk = refs[i : i + _POLL_CONCURRENCY]
            got = await asyncio.gather(*(self.get_value(r) for r in chunk), return_exceptions=True)
            batch: dict[VariableRef, str | None] = {}
            for ref, value in zip(chunk, got, strict=True):
                if isinstance(value, HttpError):
                    result.failed[ref] = value.text
                    if isinstance(value, BodyTooLarge):
                        result.too_large.add(ref)
                elif isinstance(value, BaseException):
                    raise value
                else:
                    batch[ref] = value
            result.values.update(batch)
            if on_values is not None and batch:
                on_values(batch)
        result.connections, result.skipped_connections = await self.connections()
        return result

    # --- commands -------------------------------------------------------------------------

    async def location(
        self, location: str, action: str, params: dict[str, str] | None = None
    ) -> None:
        path = f"/api/location/{location}/{action}"
        status, body = await self._request("POST", path, params=params)
        if status == 204:
            raise HttpError(204, f"no button at location {location}")
        if not 200 <= status < 300:
            raise HttpError(status, _quote(body) or f"POST {path} failed")

    async def set_custom_variable(self, name: str, value: Any) -> None:
        path = f"/api/custom-variable/{name}/value"
        status, body = await self._request("POST", path, json_body=value)
        if status == 404:
            raise HttpError(
                404,
                f"custom variable {name!r} does not exist in Companion; create it there "
                "(Variables > Custom variables): Companion cannot create one over HTTP",
            )
        if not 200 <= status < 300:
            raise HttpError(status, _quote(body) or f"POST {path} failed")


def _json(value: Any) -> str:
    return json.dumps(value)
