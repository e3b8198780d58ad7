"""``GET /api/log``: the event log over HTTP, a page at a time.

Query parameters (all optional): ``pattern`` (repeatable), ``from_rev``, ``to_rev``,
``since``, ``until`` (ISO 8601 or epoch ms), ``client`` (repeatable), ``type``
(repeatable or comma-separated: change, event, command, session), ``limit``
(default 100, at most 1000) and ``after_id`` (the cursor handed out with a page).

Reply: ``{"records": [...], "next_from_rev": N|null, "next_after_id": M|null}``.
Records are in log order (see :mod:`.query`). To go on, ask again with
``from_rev=next_from_rev`` (and ``after_id=next_after_id`` when that is not null: it
happens only when a single revision holds more records than ``limit``); null means
there is nothing more for now.

The query runs in a worker thread on its own read-only connection, so the event
loop never waits for the disk. Errors: 400 for bad parameters, 404 when the hub has
no event log, 503 when the database cannot be read.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from ..core.errors import ErrorCode, HubError
from . import query as q

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "add_log_routes"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_STATUS = {ErrorCode.BAD_REQUEST: 400, ErrorCode.NOT_FOUND: 404, ErrorCode.UNAVAILABLE: 503}
_enc = msgspec.json.Encoder()


def _error(code: ErrorCode, message: str) -> web.Response:
    body = _enc.encode({"error": HubError(code, message).to_wire()})
    return web.Response(body=body, status=_STATUS[code], content_type="application/json")


def _int(query: Any, name: str) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise q.LogError(f"{name} must be an integer, not {text!r}") from None


def _parse(query: Any) -> tuple[q.LogFilter, int]:
    limit = _int(query, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    if limit < 1:
        raise q.LogError("limit must be at least 1")
    f = q.make_filter(
        patterns=[p for p in query.getall("pattern", []) if p],
        from_rev=_int(query, "from_rev"),
        to_rev=_int(query, "to_rev"),
        since=query.get("since") or None,
        until=query.get("until") or None,
        clients=[c for c in query.getall("client", []) if c],
        types=query.getall("type", []),
        after_id=_int(query, "after_id"),
    )
    if f.after_id is not None and f.from_rev is None:
        raise q.LogError("after_id needs from_rev")
    return f, min(limit, MAX_LIMIT)


def _run_query(path: str, f: q.LogFilter, limit: int) -> bytes:
    """In a worker thread: open, read one page, encode, close."""
    conn = q.open_readonly(path)
    try:
        pg = q.page(conn, f, limit)
    finally:
        conn.close()
    return _enc.encode(
        {
            "records": [item.to_wire() for item in pg.items],
            "next_from_rev": pg.next_from_rev,
            "next_after_id": pg.next_after_id,
        }
    )


def add_log_routes(app: web.Application, path_getter: Callable[[], str | None]) -> None:
    """Add ``GET /api/log``; ``path_getter()`` is the log's database file, or None when
    the hub runs without one (then the endpoint answers 404)."""

    async def get_log(request: web.Request) -> web.Response:
        path = path_getter()
        if path is None or path == ":memory:":
            return _error(ErrorCode.NOT_FOUND, "this hub keeps no event log on disk")
        try:
            f, limit = _parse(request.query)
        except q.LogError as exc:
            return _error(ErrorCode.BAD_REQUEST, str(exc))
        try:
            body = await asyncio.to_thread(_run_query, path, f, limit)
        except q.LogUnavailable as exc:
            return _error(ErrorCode.UNAVAILABLE, str(exc))
        except sqlite3.Error as exc:  # locked, damaged
            return _error(ErrorCode.UNAVAILABLE, f"the event log cannot be read: {exc}")
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/api/log", get_log)
