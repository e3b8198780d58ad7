"""Read-only queries over the event log: the audit and debugging tools' engine.

Everything here is synchronous and opens the database read-only (WAL: a reader
never blocks the hub's writer). The CLI (``tools``) and ``GET /api/log``
(``http_api``, in a worker thread) are thin layers over these functions.

Items come in **log order**: by revision; at one revision the change first
(the change *is* that revision), then the records made while the hub was at
that revision, in the order they were written.

Times are milliseconds since the Unix epoch. A change's time is the ``ts`` the
log stores for it: when the value last changed (a stale flip keeps the value's
``ts``, protocol section 3).
"""

from __future__ import annotations

import heapq
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import msgspec

from ..core.errors import CompanionHubError, HubError
from ..core.keys import Pattern, literal_prefix, match, parse_pattern
from .store import (
    SnapshotError,
    SnapshotImage,
    default_data_dir,
    read_snapshot,
    snapshot_entries,
)

__all__ = [
    "DB_FILE",
    "MAX_INT",
    "MAX_TIME_MS",
    "MIN_TIME_MS",
    "RECORD_TYPES",
    "ChangeItem",
    "LogError",
    "LogFilter",
    "LogItem",
    "LogSummary",
    "Page",
    "Point",
    "RecordItem",
    "RetentionGap",
    "StateAt",
    "StateEntry",
    "check_int",
    "count_log",
    "format_ts",
    "iter_changes",
    "iter_log",
    "log_bounds",
    "make_filter",
    "open_readonly",
    "page",
    "parse_point",
    "parse_time",
    "resolve_db_path",
    "resolve_point",
    "rev_at_time",
    "state_at",
    "summary",
]

DB_FILE = "hub.sqlite3"
RECORD_TYPES = ("change", "event", "command", "session")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INT_RE = re.compile(r"[+-]?[0-9]+")
# SQLite's INTEGER is a signed 64-bit number: every revision, id and count fits
MAX_INT = 2**63 - 1
# the times a datetime can hold: 0001-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999
_CHANGE_COLS = "rev, key, version, deleted, value, owner, stale, ts, actor"


class LogError(CompanionHubError):
    """The log cannot answer: no database, not an event log, a bad argument."""


class LogUnavailable(LogError):
    """The database file is missing or cannot be opened."""


class RetentionGap(LogError):
    """Retention removed history that the answer needs."""

    def __init__(self, message: str, *, oldest: int, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.oldest = oldest
        self.missing = list(missing)


# --- opening ------------------------------------------------------------------------------


def resolve_db_path(data_dir: str | os.PathLike[str] | None = None, db: str | None = None) -> Path:
    """``db`` if given, else ``<data_dir>/hub.sqlite3`` (default: ``default_data_dir()``)."""
    if db:
        return Path(db)
    return Path(data_dir) / DB_FILE if data_dir else default_data_dir() / DB_FILE


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open the log read-only; :class:`LogUnavailable` if there is none at ``path``."""
    p = Path(path)
    if not p.is_file():
        raise LogUnavailable(f"no event log at {p}")
    uri = f"file:{quote(str(p.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
        conn.execute("SELECT 1 FROM changes LIMIT 1").fetchone()
        conn.execute("SELECT 1 FROM records LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise LogUnavailable(f"cannot read the event log at {p}: {exc}") from exc
    return conn


# --- times and points ---------------------------------------------------------------------


def _show(text: str, most: int = 40) -> str:
    """``repr`` of a user's text, cut short (error messages echo what was given)."""
    return repr(text) if len(text) <= most else repr(text[:most]) + "..."


def _time_range() -> str:
    return (
        "0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z "
        f"(epoch ms {MIN_TIME_MS} .. {MAX_TIME_MS})"
    )


def check_int(name: str, value: int, lo: int = 0, hi: int = MAX_INT) -> int:
    """``value`` if ``lo <= value <= hi``, else :class:`LogError` naming ``name``."""
    if value < lo:
        raise LogError(
            f"{name} must not be negative" if lo == 0 else f"{name} must be at least {lo}"
        )
    if value > hi:
        raise LogError(f"{name} must be at most {hi}")
    return value


def parse_time(text: str) -> int:
    """ISO 8601 (no offset = UTC) or an integer of epoch milliseconds -> epoch ms, within
    the years 1 to 9999 (:class:`LogError` otherwise)."""
    t = text.strip()
    out_of_range = LogError(f"time {_show(text)} is out of range: {_time_range()}")
    if _INT_RE.fullmatch(t):
        if len(t.lstrip("+-").lstrip("0")) > 19:  # far out (and int() of it is slow)
            raise out_of_range
        ms = int(t)
    else:
        try:
            dt = datetime.fromisoformat(t)
        except (ValueError, OverflowError):
            raise LogError(
                f"invalid time {_show(text)}: "
                "ISO 8601 (e.g. 2024-11-27T09:33:20Z) or epoch milliseconds"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = (dt - _EPOCH) // _MS
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise out_of_range
    return ms


def format_ts(ms: int | None) -> str:
    """Epoch ms -> ``2024-11-27T09:33:20.000Z`` (UTC)."""
    if ms is None:
        return "-"
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Point:
    """A point in the log's history: a revision, or a time (epoch ms)."""

    kind: Literal["rev", "time"]
    value: int

    def __str__(self) -> str:
        return f"rev {self.value}" if self.kind == "rev" else format_ts(self.value)


def parse_point(text: str) -> Point:
    """``REV|TIME``: an integer is a revision; ``@<epoch ms>`` or ISO 8601 is a time."""
    t = text.strip()
    if t.isascii() and t.isdigit():
        if len(t.lstrip("0")) > 19 or int(t) > MAX_INT:
            raise LogError(f"rev {_show(t)} is out of range: at most {MAX_INT}")
        return Point("rev", int(t))
    if t.startswith("@") and _INT_RE.fullmatch(t[1:]):
        return Point("time", parse_time(t[1:]))
    return Point("time", parse_time(t))


# --- items ----------------------------------------------------------------------------


def _blob(v: Any) -> bytes | None:
    """A JSON column as bytes (the writer stores bytes; tolerate text)."""
    if v is None:
        return None
    return v.encode() if isinstance(v, str) else bytes(v)


def _raw(b: bytes | None) -> msgspec.Raw | None:
    return None if b is None else msgspec.Raw(b)


@dataclass(frozen=True, slots=True)
class ChangeItem:
    """One committed change of the store (a row of ``changes``)."""

    rev: int
    key: str
    version: int
    deleted: bool
    raw: bytes | None  # the value's JSON, None when deleted
    owner: str
    stale: bool
    ts: int
    actor: str | None
    stale_since: int | None = None  # when it went stale (None: fresh, or not recorded)
    type: ClassVar[str] = "change"
    order: ClassVar[int] = 0

    @property
    def client(self) -> str | None:
        return self.actor

    @property
    def id(self) -> int:
        return 0

    def value(self) -> Any:
        return None if self.raw is None else msgspec.json.decode(self.raw)

    def to_wire(self) -> dict[str, Any]:
        """The JSON form (values spliced in as they were stored)."""
        d: dict[str, Any] = {
            "rev": self.rev,
            "ts": self.ts,
            "type": "change",
            "client": self.actor,
            "key": self.key,
            "version": self.version,
            "deleted": self.deleted,
            "stale": self.stale,
            "owner": self.owner,
        }
        if self.stale_since is not None:
            d["stale_since"] = self.stale_since
        if not self.deleted:
            d["value"] = _raw(self.raw) if self.raw is not None else None
        return d

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ChangeItem:
        rev, key, version, deleted, value, owner, stale, ts, actor = row
        return cls(
            int(rev),
            str(key),
            int(version),
            bool(deleted),
            _blob(value),
            str(owner),
            bool(stale),
            int(ts),
            None if actor is None else str(actor),
            int(stale) if stale and int(stale) > 1 else None,
        )


@dataclass(frozen=True, slots=True)
class RecordItem:
    """An event, a command with its outcome, or a session event (a row of ``records``)."""

    id: int
    rev: int
    ts: int
    type: str
    client: str | None
    key: str | None
    raw: bytes | None  # the JSON object described in ``store``
    order: ClassVar[int] = 1

    def data(self) -> Any:
        return None if self.raw is None else msgspec.json.decode(self.raw)

    def to_wire(self) -> dict[str, Any]:
        return {
            "rev": self.rev,
            "ts": self.ts,
            "type": self.type,
            "client": self.client,
            "key": self.key,
            "id": self.id,
            "data": _raw(self.raw),
        }


LogItem = ChangeItem | RecordItem


def _order(item: LogItem) -> tuple[int, int, int]:
    return (item.rev, item.order, item.id)


# --- filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    """What to select. Every bound is inclusive; empty tuples mean "any"."""

    patterns: tuple[Pattern, ...] = ()
    from_rev: int | None = None
    to_rev: int | None = None
    since: int | None = None  # epoch ms
    until: int | None = None  # epoch ms
    clients: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    # cursor inside the revision ``from_rev``: its change and the records with an id up
    # to this were already delivered (``page`` hands it out)
    after_id: int | None = None

    @property
    def wants_changes(self) -> bool:
        return not self.types or "change" in self.types

    @property
    def record_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.types if t != "change")

    @property
    def wants_records(self) -> bool:
        return not self.types or bool(self.record_types)

    def matches_key(self, key: str | None) -> bool:
        if not self.patterns:
            return True
        return key is not None and any(match(p, key) for p in self.patterns)


def make_filter(
    *,
    patterns: Iterable[str] = (),
    from_rev: int | None = None,
    to_rev: int | None = None,
    since: int | str | None = None,
    until: int | str | None = None,
    clients: Iterable[str] = (),
    types: Iterable[str] = (),
    after_id: int | None = None,
) -> LogFilter:
    """Build and validate a filter (times as epoch ms or text); :class:`LogError` if bad,
    with a message that names the argument."""
    try:
        parsed = tuple(parse_pattern(p) for p in patterns)
    except HubError as exc:
        raise LogError(exc.message) from None  # "invalid pattern ..."
    tys: list[str] = []
    for t in types:
        for piece in t.split(","):
            part = piece.strip()
            if not part:
                continue
            if part not in RECORD_TYPES:
                raise LogError(f"unknown type {_show(part)}: one of {', '.join(RECORD_TYPES)}")
            if part not in tys:
                tys.append(part)
    for name, v in (("from_rev", from_rev), ("to_rev", to_rev), ("after_id", after_id)):
        if v is not None:
            check_int(name, v)
    times: list[int | None] = []
    for name, given in (("since", since), ("until", until)):
        try:
            times.append(_time_arg(given))
        except LogError as exc:
            raise LogError(f"{name}: {exc}") from None
    return LogFilter(
        patterns=parsed,
        from_rev=from_rev,
        to_rev=to_rev,
        since=times[0],
        until=times[1],
        clients=tuple(clients),
        types=tuple(tys),
        after_id=after_id,
    )


def _time_arg(t: int | str | None) -> int | None:
    if isinstance(t, str):
        return parse_time(t)
    if t is not None and not MIN_TIME_MS <= t <= MAX_TIME_MS:
        raise LogError(f"time {t} is out of range: {_time_range()}")
    return t


def _pattern_sql(patterns: Sequence[Pattern]) -> tuple[str, list[Any]]:
    """A SQL pre-filter on ``key`` (exactness comes from :func:`match` afterwards): each
    pattern's literal prefix, as ranges an index on ``key`` can serve ("" when a pattern
    starts with a wildcard: then nothing narrows)."""
    conds: list[str] = []
    params: list[Any] = []
    for p in patterns:
        prefix, exact = literal_prefix(p)
        if not prefix:
            return "", []  # a leading wildcard: no pre-filter helps
        if exact:
            conds.append("key = ?")
            params.append(prefix)
        else:
            # the key itself or below it: "prefix." <= key < "prefix/" ("/" follows ".")
            conds.append("(key = ? OR (key >= ? AND key < ?))")
            params += [prefix, prefix + ".", prefix + "/"]
    return "(" + " OR ".join(conds) + ")", params


def _indexed_rev(conn: sqlite3.Connection) -> int | None:
    """Up to which revision ``key_revs`` holds every change (None: a log without it)."""
    try:
        row = conn.execute("SELECT v FROM meta WHERE k = 'indexed_rev'").fetchone()
        conn.execute("SELECT 1 FROM key_revs LIMIT 0").fetchall()
    except sqlite3.OperationalError:
        return None  # written before key_revs existed (schema 1)
    return int(row[0]) if row else 0


def _changes_by_key(
    conn: sqlite3.Connection,
    patterns: Sequence[Pattern],
    rev_conds: list[str],
    rev_params: list[Any],
) -> tuple[str, list[Any]]:
    """A condition selecting the changes whose key may match ``patterns`` by way of the
    ``key_revs`` index (and a scan by revision of the tail it does not cover yet); ""
    when nothing narrows. ``rev_conds`` bound both parts."""
    sql, params = _pattern_sql(patterns)
    if not sql:
        return "", []
    indexed = _indexed_rev(conn)
    if indexed is None:
        return sql, params
    bounds = "".join(f" AND {c}" for c in rev_conds)
    return (
        f"rev IN (SELECT rev FROM key_revs WHERE {sql}{bounds} "
        f"UNION ALL SELECT rev FROM changes WHERE rev > ? AND {sql}{bounds})",
        [*params, *rev_params, indexed, *params, *rev_params],
    )


def _where(
    f: LogFilter, *, records: bool, conn: sqlite3.Connection | None = None
) -> tuple[str, list[Any]]:
    """The WHERE clause for ``f``: for changes (``records=False``) give ``conn``, whose
    ``key_revs`` index then serves the key patterns."""
    conds: list[str] = []
    params: list[Any] = []
    rev_conds: list[str] = []  # bounds on rev alone (also valid inside key_revs)
    rev_params: list[Any] = []
    if f.from_rev is not None:
        if f.after_id is None:
            rev_conds.append("rev >= ?")
            rev_params.append(f.from_rev)
        elif records:
            conds.append("(rev > ? OR (rev = ? AND id > ?))")
            params += [f.from_rev, f.from_rev, f.after_id]
        else:
            rev_conds.append("rev > ?")
            rev_params.append(f.from_rev)
    if f.to_rev is not None:
        rev_conds.append("rev <= ?")
        rev_params.append(f.to_rev)
    conds += rev_conds
    params += rev_params
    if f.since is not None:
        conds.append("ts >= ?")
        params.append(f.since)
    if f.until is not None:
        conds.append("ts <= ?")
        params.append(f.until)
    if f.clients:
        col = "client" if records else "actor"
        conds.append(f"{col} IN ({', '.join('?' * len(f.clients))})")
        params += f.clients
    if records and f.record_types:
        conds.append(f"type IN ({', '.join('?' * len(f.record_types))})")
        params += f.record_types
    if f.patterns:
        if conn is not None and not records:
            sql, ps = _changes_by_key(conn, f.patterns, rev_conds, rev_params)
        else:
            sql, ps = _pattern_sql(f.patterns)
        if sql:
            conds.append(sql)
            params += ps
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def _fetch(cur: sqlite3.Cursor, batch: int = 2000) -> Iterator[tuple[Any, ...]]:
    while rows := cur.fetchmany(batch):
        yield from rows


def iter_changes(conn: sqlite3.Connection, f: LogFilter) -> Iterator[ChangeItem]:
    """The changes selected by ``f`` (types are ignored), in revision order."""
    where, params = _where(f, records=False, conn=conn)
    cur = conn.execute(f"SELECT {_CHANGE_COLS} FROM changes{where} ORDER BY rev", params)
    for row in _fetch(cur):
        item = ChangeItem.from_row(row)
        if f.matches_key(item.key):
            yield item


def _iter_records(conn: sqlite3.Connection, f: LogFilter) -> Iterator[RecordItem]:
    where, params = _where(f, records=True)
    cur = conn.execute(
        f"SELECT id, rev, ts, type, client, key, data FROM records{where} ORDER BY rev, id",
        params,
    )
    for rid, rev, ts, typ, client, key, data in _fetch(cur):
        if not f.matches_key(key):
            continue
        yield RecordItem(
            int(rid),
            int(rev),
            int(ts),
            str(typ),
            None if client is None else str(client),
            None if key is None else str(key),
            _blob(data),
        )


def iter_log(conn: sqlite3.Connection, f: LogFilter) -> Iterator[LogItem]:
    """Changes and records selected by ``f``, merged in log order (lazily)."""
    sources: list[Iterator[LogItem]] = []
    if f.wants_changes:
        sources.append(iter_changes(conn, f))
    if f.wants_records:
        sources.append(_iter_records(conn, f))
    if len(sources) == 1:
        return sources[0]
    return heapq.merge(*sources, key=_order)


def count_log(conn: sqlite3.Connection, f: LogFilter) -> int:
    return sum(1 for _ in iter_log(conn, f))


@dataclass
class Page:
    """One page of ``GET /api/log``; continue with ``from_rev=next_from_rev`` (and
    ``after_id=next_after_id`` when that is not None)."""

    items: list[LogItem]
    next_from_rev: int | None
    next_after_id: int | None = None


def page(conn: sqlite3.Connection, f: LogFilter, limit: int) -> Page:
    """At most ``limit`` items. A page ends at a revision boundary when it can; only when
    one revision alone holds more than ``limit`` items is it cut inside it (and
    ``next_after_id`` says where to go on)."""
    if limit < 1:
        raise LogError("limit must be at least 1")
    items = list(islice(iter_log(conn, f), limit + 1))
    if len(items) <= limit:
        return Page(items, None)
    nxt = items.pop()
    if items[0].rev != nxt.rev:
        while items[-1].rev == nxt.rev:
            items.pop()
        return Page(items, nxt.rev)
    last = items[-1]
    return Page(items, nxt.rev, last.id if isinstance(last, RecordItem) else 0)


# --- bounds, points -------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    last_rev: int  # the newest revision the log knows (changes or snapshots)
    oldest: int  # the oldest revision the log can replay from (as EventLog.oldest_rev)
    first_change: int | None


def log_bounds(conn: sqlite3.Connection) -> Bounds:
    lo, hi = conn.execute("SELECT MIN(rev), MAX(rev) FROM changes").fetchone()
    (snap,) = conn.execute("SELECT MAX(rev) FROM snapshots").fetchone()
    last = max(int(hi or 0), int(snap or 0))
    oldest = last if lo is None else int(lo) - 1
    return Bounds(last, oldest, None if lo is None else int(lo))


def rev_at_time(conn: sqlite3.Connection, ts: int) -> int:
    """The revision the hub was at, at time ``ts``: just before the first change
    stamped later (or the last revision)."""
    (nxt,) = conn.execute("SELECT MIN(rev) FROM changes WHERE ts > ?", (ts,)).fetchone()
    if nxt is None:
        return log_bounds(conn).last_rev
    return int(nxt) - 1


def resolve_point(conn: sqlite3.Connection, point: Point, *, start: bool = False) -> int:
    """A revision for ``point``. For a time, ``start=True`` gives the first revision
    *at or after* it, otherwise the last revision at or before it."""
    if point.kind == "rev":
        return point.value
    if start:
        return rev_at_time(conn, point.value - 1) + 1
    return rev_at_time(conn, point.value)


# --- state at a point -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateEntry:
    """An entry as protocol section 3 describes it; ``stale`` is None when unknown (the
    snapshot does not keep the flag and retention removed the change that set it)."""

    key: str
    raw: bytes
    version: int
    rev: int
    owner: str
    stale: bool | None
    ts: int

    def value(self) -> Any:
        return msgspec.json.decode(self.raw)

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": msgspec.Raw(self.raw),
            "version": self.version,
            "rev": self.rev,
            "owner": self.owner,
            "stale": self.stale,
            "ts": self.ts,
        }


@dataclass
class StateAt:
    rev: int
    entries: list[StateEntry]  # sorted by key
    how: str  # how it was rebuilt, for humans
    snapshot_rev: int | None = None


def _entry_of(c: ChangeItem) -> StateEntry:
    assert c.raw is not None
    return StateEntry(c.key, c.raw, c.version, c.rev, c.owner, c.stale, c.ts)


def _per_key(
    conn: sqlite3.Connection, lo: int, hi: int, patterns: Sequence[Pattern], agg: str
) -> dict[str, ChangeItem]:
    """For each key changed in ``(lo, hi]``, its last (``agg="MAX"``) or first change."""
    sql, params = (
        _changes_by_key(conn, patterns, ["rev > ?", "rev <= ?"], [lo, hi]) if patterns else ("", [])
    )
    extra = f" AND {sql}" if sql else ""
    cur = conn.execute(
        f"SELECT {_CHANGE_COLS} FROM changes WHERE rev IN "
        f"(SELECT {agg}(rev) FROM changes WHERE rev > ? AND rev <= ?{extra} GROUP BY key)",
        [lo, hi, *params],
    )
    out: dict[str, ChangeItem] = {}
    for row in _fetch(cur):
        c = ChangeItem.from_row(row)
        if not patterns or any(match(p, c.key) for p in patterns):
            out[c.key] = c
    return out


def _stale_flags(conn: sqlite3.Connection, revs: Sequence[int]) -> dict[int, bool]:
    flags: dict[int, bool] = {}
    for i in range(0, len(revs), 500):
        chunk = revs[i : i + 500]
        q = f"SELECT rev, stale FROM changes WHERE rev IN ({', '.join('?' * len(chunk))})"
        for rev, stale in conn.execute(q, chunk):
            flags[int(rev)] = bool(stale)
    return flags


def _snapshot(conn: sqlite3.Connection, rev: int) -> SnapshotImage:
    image = read_snapshot(conn, rev)
    if image is None:
        raise LogError(f"no snapshot at rev {rev}")
    return image


def _snapshot_entries(
    conn: sqlite3.Connection, image: SnapshotImage, patterns: Sequence[Pattern], oldest: int
) -> dict[str, StateEntry]:
    try:
        chosen = [
            e
            for e in snapshot_entries(conn, image)
            if not patterns or any(match(p, e.key) for p in patterns)
        ]
    except SnapshotError as exc:
        raise LogError(str(exc)) from None
    flags = _stale_flags(conn, [e.rev for e in chosen if e.rev > oldest])
    return {
        e.key: StateEntry(e.key, bytes(e.value), e.version, e.rev, e.owner, flags.get(e.rev), e.ts)
        for e in chosen
    }


def state_at(conn: sqlite3.Connection, point: Point | int, patterns: Iterable[str] = ()) -> StateAt:
    """The state (keys matching ``patterns``, all if none) as it was at ``point``.

    Rebuilt from the latest snapshot at or before it plus the changes up to it; or,
    when retention removed what lies before, backwards from a later snapshot (each
    key's last change up to the point, else the snapshot's entry if the key did not
    change in between). :class:`RetentionGap` if the log no longer knows enough.
    """
    try:
        pats = [parse_pattern(p) for p in patterns]
    except HubError as exc:
        raise LogError(exc.message) from None
    if isinstance(point, int):
        point = Point("rev", point)
    conn.execute("BEGIN")  # one consistent read, whatever the writer does meanwhile
    try:
        return _state_at(conn, point, pats)
    finally:
        conn.execute("COMMIT")


def _state_at(conn: sqlite3.Connection, point: Point, pats: list[Pattern]) -> StateAt:
    b = log_bounds(conn)
    snaps = [
        (int(r), int(t)) for r, t in conn.execute("SELECT rev, ts FROM snapshots ORDER BY rev")
    ]
    if point.kind == "time":
        rev = rev_at_time(conn, point.value)
        if (
            rev <= b.oldest
            and b.oldest > 0
            and not any(r == rev and t <= point.value for r, t in snaps)
        ):
            raise RetentionGap(
                f"{point} is before the oldest history the log keeps (rev {b.oldest + 1}); "
                "retention removed what came before",
                oldest=b.oldest,
            )
    else:
        rev = point.value
    if rev > b.last_rev:
        raise LogError(f"rev {rev} is ahead of the log (its last revision is {b.last_rev})")
    # forward from the latest usable snapshot at or before the point
    fwd = [r for r, _ in snaps if b.oldest <= r <= rev]
    if fwd or b.oldest == 0:
        base = fwd[-1] if fwd else 0
        entries: dict[str, StateEntry] = {}
        if base:
            entries = _snapshot_entries(conn, _snapshot(conn, base), pats, b.oldest)
        for key, c in _per_key(conn, base, rev, pats, "MAX").items():
            if c.deleted:
                entries.pop(key, None)
            else:
                entries[key] = _entry_of(c)
        how = f"snapshot at rev {base} + changes up to rev {rev}" if base else "all changes"
        return StateAt(rev, sorted(entries.values(), key=_by_key), how, base or None)
    back = [r for r, _ in snaps if r >= rev]
    if rev < b.oldest or not back:
        raise RetentionGap(
            f"the state at {point} cannot be rebuilt: retention removed the changes up to "
            f"rev {b.oldest} and no snapshot covers rev {rev}",
            oldest=b.oldest,
        )
    # backwards from the first snapshot at or after the point
    snap = back[0]
    known = _per_key(conn, b.oldest, rev, pats, "MAX")  # exact: each key's last change
    later = _per_key(conn, rev, snap, pats, "MIN")  # keys that changed after the point
    result = {k: _entry_of(c) for k, c in known.items() if not c.deleted}
    for key, e in _snapshot_entries(conn, _snapshot(conn, snap), pats, b.oldest).items():
        if key not in known and key not in later:
            result[key] = e
    # A key whose first change after the point is its creation (version 1, a new value)
    # did not exist at the point. A stale flip of a version-1 value looks the same except
    # for its ts, which is the value's (older) time: only a ts later than every retained
    # change up to the point proves a creation. Anything else is unknown.
    (upto_ts,) = conn.execute(
        "SELECT MAX(ts) FROM changes WHERE rev > ? AND rev <= ?", (b.oldest, rev)
    ).fetchone()
    missing = sorted(
        k
        for k, c in later.items()
        if k not in known
        and not (
            c.version == 1
            and not c.deleted
            and not c.stale
            and upto_ts is not None
            and c.ts > upto_ts
        )
    )
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise RetentionGap(
            f"the state at {point} is incomplete: retention removed the changes up to rev "
            f"{b.oldest}, and {len(missing)} key(s) changed between rev {rev} and the "
            f"snapshot at rev {snap}: {shown}",
            oldest=b.oldest,
            missing=missing,
        )
    how = f"snapshot at rev {snap} and the changes back to rev {rev}"
    return StateAt(rev, sorted(result.values(), key=_by_key), how, snap)


def _by_key(e: StateEntry) -> str:
    return e.key


# --- stats ----------------------------------------------------------------------------


@dataclass
class LogSummary:
    path: str
    hub_id: str | None
    schema: str | None
    counts: dict[str, int]  # per type: change, event, command, session (and any other)
    deletes: int
    snapshots: int
    latest_snapshot_rev: int | None
    namespaces: int
    first_rev: int | None
    last_rev: int | None
    first_ts: int | None
    last_ts: int | None
    oldest_resumable_rev: int
    db_bytes: int
    wal_bytes: int
    size_bytes: int
    bytes_per_change: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "hub_id": self.hub_id,
            "schema": self.schema,
            "counts": self.counts,
            "deletes": self.deletes,
            "snapshots": self.snapshots,
            "latest_snapshot_rev": self.latest_snapshot_rev,
            "namespaces": self.namespaces,
            "first_rev": self.first_rev,
            "last_rev": self.last_rev,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "oldest_resumable_rev": self.oldest_resumable_rev,
            "db_bytes": self.db_bytes,
            "wal_bytes": self.wal_bytes,
            "size_bytes": self.size_bytes,
            "bytes_per_change": self.bytes_per_change,
        }


def _meta(conn: sqlite3.Connection, k: str) -> str | None:
    row = conn.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
    return None if row is None else str(row[0])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def summary(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> LogSummary:
    """Counts, bounds and size on disk (the database file plus its WAL)."""
    p = Path(path)
    conn.execute("BEGIN")
    try:
        n_changes, deletes, lo, hi, ts_lo, ts_hi = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(deleted), 0), MIN(rev), MAX(rev), MIN(ts), MAX(ts) "
            "FROM changes"
        ).fetchone()
        counts = {t: 0 for t in RECORD_TYPES}
        counts["change"] = int(n_changes)
        for typ, n in conn.execute("SELECT type, COUNT(*) FROM records GROUP BY type"):
            counts[str(typ)] = int(n)
        r_lo, r_hi = conn.execute("SELECT MIN(ts), MAX(ts) FROM records").fetchone()
        n_snap, snap_hi = conn.execute("SELECT COUNT(*), MAX(rev) FROM snapshots").fetchone()
        (n_ns,) = conn.execute("SELECT COUNT(*) FROM namespaces").fetchone()
        b = log_bounds(conn)
        hub_id, schema = _meta(conn, "hub_id"), _meta(conn, "schema")
    finally:
        conn.execute("COMMIT")
    tss = [int(x) for x in (ts_lo, ts_hi, r_lo, r_hi) if x is not None]
    db_bytes = _size(p)
    wal_bytes = _size(p.with_name(p.name + "-wal"))
    size = db_bytes + wal_bytes
    return LogSummary(
        path=str(p),
        hub_id=hub_id,
        schema=schema,
        counts=counts,
        deletes=int(deletes),
        snapshots=int(n_snap),
        latest_snapshot_rev=None if snap_hi is None else int(snap_hi),
        namespaces=int(n_ns),
        first_rev=None if lo is None else int(lo),
        last_rev=b.last_rev if (hi is not None or snap_hi is not None) else None,
        first_ts=min(tss) if tss else None,
        last_ts=max(tss) if tss else None,
        oldest_resumable_rev=b.oldest,
        db_bytes=db_bytes,
        wal_bytes=wal_bytes,
        size_bytes=size,
        bytes_per_change=round(size / n_changes, 1) if n_changes else None,
    )
