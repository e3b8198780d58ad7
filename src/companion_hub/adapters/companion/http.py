"""Companion's HTTP remote-control API (reference section 2): polling and commands."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("companion_hub.adapters.companion")


class HttpError(Exception):
    """Companion answered with an error status (or not at all)."""

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


@dataclass
class PollResult:
    values: dict[VariableRef, str | None] = field(default_factory=dict)  # None: 404
    connections: list[dict[str, Any]] = field(default_factory=list)
    uptime: float | None = None
    failed: dict[VariableRef, str] = field(default_factory=dict)  # this poll could not read


class CompanionHttp:
    """A small client of Companion's ``/api`` routes."""

    def __init__(self, host: str, port: int, timeout: float = 3.0) -> None:
        self.base = f"http://{host}:{port}"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
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
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, str]:
        kwargs: dict[str, Any] = {"params": params}
        if json_body is not None:
            kwargs["data"] = _json(json_body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        try:
            async with self._http().request(method, self.base + path, **kwargs) as r:
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise HttpError(
                None, f"Companion's HTTP API is unreachable: {exc or type(exc).__name__}"
            ) from None

    # --- reads --------------------------------------------------------------------------

    async def get_value(self, ref: VariableRef) -> str | None:
        status, text = await self._request("GET", ref.path)
        if status == 200:
            return text
        if status == 404:
            return None
        raise HttpError(status, text or f"GET {ref.path} failed")

    async def connections(self) -> list[dict[str, Any]]:
        status, text = await self._request("GET", "/api/connections")
        if status != 200:
            raise HttpError(status, text or "GET /api/connections failed")
        data = json.loads(text)
        return data if isinstance(data, list) else []

    async def poll(
        self,
        refs: list[VariableRef],
        on_values: Callable[[dict[VariableRef, str | None]], None] | None = None,
        with_connections: bool = True,
        concurrency: int = 16,
    ) -> PollResult:
        """One poll: uptime (which also tells whether the API is reachable at all),
        every variable (``concurrency`` requests at a time, each batch handed to
        ``on_values`` as soon as it is in), then the connections.

        Raises :class:`HttpError` only when the API as a whole fails (uptime or the
        connections list); a single variable that cannot be read is reported in
        ``failed`` and left as it was.
        """
        result = PollResult()
        uptime = await self.get_value(VariableRef("internal", "uptime"))
        if uptime is not None:
            try:
                result.uptime = float(uptime)
            except ValueError:
                result.uptime = None
        for i in range(0, len(refs), concurrency):
            chunk = refs[i : i + concurrency]
            got = await asyncio.gather(*(self.get_value(r) for r in chunk), return_exceptions=True)
            batch: dict[VariableRef, str | None] = {}
            for ref, value in zip(chunk, got, strict=True):
                if isinstance(value, HttpError):
                    result.failed[ref] = value.text
                elif isinstance(value, BaseException):
                    raise value
                else:
                    batch[ref] = value
            result.values.update(batch)
            if on_values is not None and batch:
                on_values(batch)
        if with_connections:
            result.connections = await self.connections()
        return result

    # --- commands -------------------------------------------------------------------------

    async def location(
        self, location: str, action: str, params: dict[str, str] | None = None
    ) -> None:
        path = f"/api/location/{location}/{action}"
        status, text = await self._request("POST", path, params=params)
        if status == 204:
            raise HttpError(204, f"no button at location {location}")
        if not 200 <= status < 300:
            raise HttpError(status, text or f"POST {path} failed")

    async def set_custom_variable(self, name: str, value: Any) -> None:
        path = f"/api/custom-variable/{name}/value"
        status, text = await self._request("POST", path, json_body=value)
        if status == 404:
            raise HttpError(
                404,
                f"custom variable {name!r} does not exist in Companion; create it there "
                "(Variables > Custom variables): Companion cannot create one over HTTP",
            )
        if not 200 <= status < 300:
            raise HttpError(status, text or f"POST {path} failed")


def _json(value: Any) -> str:
    return json.dumps(value)
