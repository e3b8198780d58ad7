"""``GET /api/log``: the event log over HTTP, a page at a time.

Query parameters (all optional): ``pattern`` (repeatable), ``from_rev``, ``to_rev``,
``since``, ``until`` (ISO 8601 or epoch ms), ``client`` (repeatable), ``type``
(repeatable or comma-separated: change, event, command, session), ``limit``
(default 100, at most 1000), and ``after``: the opaque cursor a page hands out as
``next`` (instead of ``from_rev``). Integers are signed 64-bit (SQLite's range):
revisions and ids from 0, ``limit`` from 1 (larger values than 1000 give 1000); times
lie in the years 1 to 9999. A parameter that is not repeatable may be given once; a
repeatable one at most 100 times.

Reply: ``{"records": [...], "next": CURSOR|null, "more": BOOL, "next_from_rev": N|null,
"next_after_id": M|null}``. Records are in log order (see :mod:`.query`). ``next``
points just after the last record of the page (events and commands do not move the
revision, so a revision alone cannot say where a page ended); ask again with
``after=next`` and the same filters to go on, now or later (for a tail). It is null
only when the page is empty and no cursor was given. ``more`` says whether more
records matched already (the page was cut by ``limit``). ``next_from_rev`` and
``next_after_id`` are the older form of the same position (``from_rev`` and
``after_id``), kept for existing callers; ``next_from_rev`` is null when nothing more
matched.

The query runs in a worker thread on its own read-only connection, so the event
loop never waits for the disk. Errors: 400 for bad parameters, 404 when the hub has
no event log, 503 when the database cannot be read. A 400's message names the
parameter at fault.
"""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from ..core.errors import ErrorCode, HubError
from . import query as q

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_VALUES", "PARAMS", "add_log_routes"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_VALUES = 100  # a repeatable parameter (pattern, client, type) at most this many times
# every parameter GET /api/log knows (others are ignored)
PARAMS = (
    "pattern",
    "from_rev",
    "to_rev",
    "since",
    "until",
    "client",
    "type",
    "limit",
    "after",
    "after_id",
)
_INT_RE = re.compile(r"[+-]?[0-9]+")

_STATUS = {ErrorCode.BAD_REQUEST: 400, ErrorCode.NOT_FOUND: 404, ErrorCode.UNAVAILABLE: 503}
_enc = msgspec.json.Encoder()


def _error(code: ErrorCode, message: str) -> web.Response:
    body = _enc.encode({"error": HubError(code, message).to_wire()})
    return web.Response(body=body, status=_STATUS[code], content_type="application/json")


def _one(query: Any, name: str) -> str | None:
    """A parameter that may be given once; None when absent or empty."""
    values = query.getall(name, [])
    if len(values) > 1:
        raise q.LogError(f"{name} is given {len(values)} times: give it at most once")
    return values[0] if values and values[0] != "" else None


def _many(query: Any, name: str) -> list[str]:
    """A repeatable parameter (empty values are ignored)."""
    values = [v for v in query.getall(name, []) if v]
    if len(values) > MAX_VALUES:
        raise q.LogError(f"{name} is given {len(values)} times: at most {MAX_VALUES}")
    return values


def _int(query: Any, name: str, lo: int = 0) -> int | None:
    """An integer parameter: ASCII digits, within ``lo`` .. 2**63-1 (SQLite's range)."""
    text = _one(query, name)
    if text is None:
        return None
    t = text.strip()
    if not _INT_RE.fullmatch(t):
        raise q.LogError(f"{name} must be an integer, not {_show(text)}")
    if len(t.lstrip("+-").lstrip("0")) > 19:  # far out of range (and slow to convert)
        return q.check_int(name, -1 if t[0] == "-" else q.MAX_INT + 1, lo)
    return q.check_int(name, int(t), lo)


_CURSOR_RE = re.compile(r"c1\.([0-9]{1,19})\.([0-9]{1,19})")


def encode_cursor(rev: int, record_id: int) -> str:
    """The position just after the item at (``rev``, ``record_id``) (0 for a change),
    as an opaque text: the form may change, callers only hand it back."""
    raw = f"c1.{rev}.{record_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int]:
    """(rev, record_id) of a cursor from :func:`encode_cursor`; LogError otherwise."""
    bad = q.LogError(f"after must be a cursor handed out as 'next', not {_show(text)}")
    if len(text) > 80:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    m = _CURSOR_RE.fullmatch(raw)
    if m is None:
        raise bad
    rev, rid = int(m.group(1)), int(m.group(2))
    if rev > q.MAX_INT or rid > q.MAX_INT:
        raise bad
    return rev, rid


def _show(text: str, most: int = 40) -> str:
    return repr(text) if len(text) <= most else repr(text[:most]) + "..."


def _parse(query: Any) -> tuple[q.LogFilter, int]:
    """The filter and page size; :class:`LogError` with a message that starts with the
    offending parameter's name (or names it: "invalid pattern", "unknown type")."""
    limit = _int(query, "limit", lo=1)
    if limit is None:
        limit = DEFAULT_LIMIT
    from_rev, after_id = _int(query, "from_rev"), _int(query, "after_id")
    after = _one(query, "after")
    if after is not None:
        if from_rev is not None or after_id is not None:
            raise q.LogError("after is a position of its own: give it without from_rev/after_id")
        from_rev, after_id = decode_cursor(after)
    f = q.make_filter(
        patterns=_many(query, "pattern"),
        from_rev=from_rev,
        to_rev=_int(query, "to_rev"),
        since=_one(query, "since"),
        until=_one(query, "until"),
        clients=_many(query, "client"),
        types=_many(query, "type"),
        after_id=after_id,
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
    if pg.items:
        last = pg.items[-1]
        nxt: str | None = encode_cursor(last.rev, last.id)
    elif f.after_id is not None and f.from_rev is not None:
        nxt = encode_cursor(f.from_rev, f.after_id)  # nothing new yet: the same position
    else:
        nxt = None
    return _enc.encode(
        {
            "records": [item.to_wire() for item in pg.items],
            "next": nxt,
            "more": pg.next_from_rev is not None,
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
