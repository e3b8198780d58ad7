"""``companion-hub log ...``: audit and debugging tools over the event log.

::

    companion-hub log query 'app.tally.**' --since 2024-11-27T09:00Z --type command
    companion-hub log state --at 1250 'companion.**'
    companion-hub log replay --from 1200 --to 1300 --speed 10 --url ws://127.0.0.1:8421/ws \\
        --client replayer
    companion-hub log export --type event --output events.jsonl
    companion-hub log stats

Every command reads the database read-only (``--db FILE``, or ``--data-dir DIR`` whose
``hub.sqlite3`` is used; default: the hub's default data directory), so it can run
while the hub is writing.

Exit codes: 0 success; 1 an error (no log, a hub error during replay); 2 bad
arguments; 3 retention removed the history needed (``state``).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from ..core.errors import CompanionHubError
from ..core.keys import is_prefix_of, is_valid_client_name, is_valid_key
from . import query as q
from .store import default_data_dir

__all__ = ["ReplayError", "ReplayResult", "add_log_command", "main", "replay"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GAP = 3

_enc = msgspec.json.Encoder()


class _Usage(Exception):
    pass


# --- the parser -----------------------------------------------------------------------


def add_log_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``log`` (with ``query``, ``state``, ``replay``, ``export``, ``stats``).

    Each sets ``func=<callable(args) -> int>`` (the exit code) via ``set_defaults``.
    """
    db = argparse.ArgumentParser(add_help=False)
    g = db.add_argument_group("database")
    src = g.add_mutually_exclusive_group()
    src.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"the hub's data directory (default: {default_data_dir()})",
    )
    src.add_argument("--db", metavar="FILE", help="the database file itself")

    filt = argparse.ArgumentParser(add_help=False)
    f = filt.add_argument_group("filters")
    f.add_argument(
        "patterns",
        nargs="*",
        metavar="PATTERN",
        help="key patterns ('*' one segment, trailing '**' any); records without a key "
        "(sessions) never match a pattern",
    )
    f.add_argument("--from-rev", type=int, metavar="REV", help="from this revision on")
    f.add_argument("--to-rev", type=int, metavar="REV", help="up to this revision")
    f.add_argument("--since", metavar="TIME", help="ISO 8601 (UTC if no offset) or epoch ms")
    f.add_argument("--until", metavar="TIME", help="ISO 8601 (UTC if no offset) or epoch ms")
    f.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="made by this client (changes: the actor); repeatable",
    )
    f.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="TYPE",
        help="change, event, command or session; repeatable",
    )

    log = subparsers.add_parser(
        "log",
        help="audit and debug with the event log (query, state, replay, export, stats)",
        description="Read the hub's event log (read-only; safe while the hub runs).",
    )
    sub = log.add_subparsers(dest="log_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("query", parents=[db, filt], help="changes and records, filtered")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument(
        "--limit", type=int, default=1000, help="at most this many (default 1000; 0: no limit)"
    )
    p.add_argument("--wide", action="store_true", help="do not shorten long values")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("state", parents=[db], help="the state as it was at a revision or time")
    p.add_argument(
        "--at",
        required=True,
        metavar="REV|TIME",
        help="a revision, or a time (ISO 8601, or @<epoch ms>)",
    )
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="only keys matching these")
    p.add_argument("--json", action="store_true", help='{"rev", "entries"} as JSON')
    p.add_argument("--wide", action="store_true", help="do not shorten long values")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser(
        "replay",
        parents=[db],
        help="re-emit recorded changes into a hub, with their timing",
        description="Send the recorded changes as set/delete messages to a hub. A client "
        "may only write under namespaces it owns, so keys are rewritten to "
        "app.<client>.replay.<original key> unless --keep-keys.",
    )
    p.add_argument("--from", dest="start", metavar="REV|TIME", help="default: the oldest")
    p.add_argument("--to", dest="end", metavar="REV|TIME", help="default: the newest")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="only keys matching these")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="time scale (2: twice as fast; 0: as fast as possible; default 1)",
    )
    p.add_argument(
        "--url", required=True, help="the target hub's WebSocket URL (ws://…/ws or wss://…/ws)"
    )
    p.add_argument("--client", required=True, metavar="NAME", help="client name to connect as")
    p.add_argument("--token", help="auth token for the target hub")
    p.add_argument(
        "--ca-file",
        metavar="PEM",
        help="for a wss:// URL: trust the CA certificates in this PEM file (the hub's "
        "self-signed certificate, or its CA) instead of the system's trust store",
    )
    p.add_argument(
        "--keep-keys",
        action="store_true",
        help="write the original keys (the target hub must grant their namespaces to --client)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "export", parents=[db, filt], help="JSON lines, changes and records in log order"
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", parents=[db], help="counts, bounds and size on disk")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m companion_hub.eventlog.tools ...`` (the same as ``companion-hub log``)."""
    parser = argparse.ArgumentParser(prog="companion-hub")
    add_log_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


# --- helpers --------------------------------------------------------------------------


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _Usage as exc:
            print(f"companion-hub log: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except q.RetentionGap as exc:
            print(f"companion-hub log: {exc}", file=sys.stderr)
            return EXIT_GAP
        except q.LogUnavailable as exc:
            print(f"companion-hub log: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except q.LogError as exc:
            print(f"companion-hub log: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ReplayError as exc:
            print(f"companion-hub log replay: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except sqlite3.Error as exc:
            print(f"companion-hub log: database error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except BrokenPipeError:  # `... | head`
            return EXIT_OK

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _open(args: argparse.Namespace) -> tuple[sqlite3.Connection, str]:
    path = q.resolve_db_path(args.data_dir, args.db)
    return q.open_readonly(path), str(path)


def _filter(args: argparse.Namespace) -> q.LogFilter:
    return q.make_filter(
        patterns=args.patterns,
        from_rev=args.from_rev,
        to_rev=args.to_rev,
        since=args.since,
        until=args.until,
        clients=args.client,
        types=args.type,
    )


def _json_text(raw: bytes | None) -> str:
    return "null" if raw is None else raw.decode()


def _short(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: width - 1] + "…"


def detail(item: q.LogItem, width: int | None = 80) -> str:
    """The DETAIL column of ``log query``: what happened, in one line."""
    if isinstance(item, q.ChangeItem):
        if item.deleted:
            text = f"v{item.version} deleted"
        else:
            text = f"v{item.version} = {_short(_json_text(item.raw), width)}"
        return text + (" (stale)" if item.stale else "")
    data = item.data()
    if not isinstance(data, dict):
        return _short(_json_text(item.raw), width)
    if item.type == "event":
        return _short(_enc.encode(data.get("data")).decode(), width)
    if item.type == "command":
        params = _short(_enc.encode(data.get("params")).decode(), width)
        text = f"{data.get('name')} {params} -> "
        if data.get("ok"):
            text += f"ok {_short(_enc.encode(data.get('result')).decode(), width)}"
        else:
            err = data.get("error")
            if isinstance(err, dict):
                text += f"error {err.get('code')}: {err.get('message', '')}".rstrip(": ")
            else:
                text += f"error {err}"
        if data.get("duration_ms") is not None:
            text += f" ({data['duration_ms']} ms)"
        return text
    if item.type == "session":
        parts = [str(data.get("event", "?"))]
        for k in ("address", "session", "reason"):
            if data.get(k) not in (None, ""):
                parts.append(f"{k}={data[k]}")
        return " ".join(parts)
    return _short(_json_text(item.raw), width)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces (the last one not padded)."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    out = []
    for r in [list(headers), *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r[:-1])] + [r[-1]]
        out.append("  ".join(cells).rstrip())
    return out


def _print_lines(lines: Iterable[str], out: IO[str]) -> None:
    for line in lines:
        out.write(line + "\n")


def _jsonl(items: Iterable[q.LogItem], out: IO[str]) -> int:
    n = 0
    for item in items:
        out.write(_enc.encode(item.to_wire()).decode() + "\n")
        n += 1
    return n


# --- query / export / state / stats ---------------------------------------------------


@_guard
def cmd_query(args: argparse.Namespace) -> int:
    conn, _ = _open(args)
    f = _filter(args)
    if args.limit < 0:
        raise _Usage("--limit must be 0 (no limit) or more")
    items: Iterator[q.LogItem] = q.iter_log(conn, f)
    limit = args.limit or None
    chosen: list[q.LogItem] = []
    following: q.LogItem | None = None
    for item in items:
        if limit is not None and len(chosen) == limit:
            following = item
            break
        chosen.append(item)
    out = sys.stdout
    if args.json:
        _jsonl(chosen, out)
    elif chosen:
        width = None if args.wide else 80
        _print_lines(
            table(
                ["REV", "TIME", "TYPE", "CLIENT", "KEY", "DETAIL"],
                (
                    [
                        str(i.rev),
                        q.format_ts(i.ts),
                        i.type,
                        i.client or "-",
                        i.key or "-",
                        detail(i, width),
                    ]
                    for i in chosen
                ),
            ),
            out,
        )
    else:
        print("(nothing matches)", file=sys.stderr)
    if following is not None:
        print(
            f"(stopped at --limit {limit}; the next one is at rev {following.rev})",
            file=sys.stderr,
        )
    return EXIT_OK


@_guard
def cmd_export(args: argparse.Namespace) -> int:
    conn, _ = _open(args)
    f = _filter(args)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            n = _jsonl(q.iter_log(conn, f), out)
        print(f"exported {n} records to {args.output}", file=sys.stderr)
    else:
        _jsonl(q.iter_log(conn, f), sys.stdout)
    return EXIT_OK


@_guard
def cmd_state(args: argparse.Namespace) -> int:
    conn, _ = _open(args)
    point = q.parse_point(args.at)
    st = q.state_at(conn, point, args.patterns)
    if args.json:
        body = {"rev": st.rev, "entries": [e.to_wire() for e in st.entries]}
        sys.stdout.write(_enc.encode(body).decode() + "\n")
    else:
        width = None if args.wide else 80
        if st.entries:
            _print_lines(
                table(
                    ["KEY", "VERSION", "REV", "TIME", "STALE", "VALUE"],
                    (
                        [
                            e.key,
                            str(e.version),
                            str(e.rev),
                            q.format_ts(e.ts),
                            "?" if e.stale is None else ("yes" if e.stale else "no"),
                            _short(e.raw.decode(), width),
                        ]
                        for e in st.entries
                    ),
                ),
                sys.stdout,
            )
        print(f"state at rev {st.rev}: {len(st.entries)} keys ({st.how})", file=sys.stderr)
    return EXIT_OK


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n} B ({size:.1f} {unit})"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@_guard
def cmd_stats(args: argparse.Namespace) -> int:
    conn, path = _open(args)
    s = q.summary(conn, path)
    if args.json:
        sys.stdout.write(_enc.encode(s.to_wire()).decode() + "\n")
        return EXIT_OK
    counts = s.counts
    others = [t for t in counts if t not in q.RECORD_TYPES]
    rows = [
        ("database", s.path),
        ("hub id", s.hub_id or "-"),
        ("changes", f"{counts['change']} ({s.deletes} deletes)"),
        *((f"{t}s", str(counts[t])) for t in ("event", "command", "session")),
        *((t, str(counts[t])) for t in others),
        (
            "snapshots",
            f"{s.snapshots} (latest at rev {s.latest_snapshot_rev})" if s.snapshots else "0",
        ),
        ("first rev", "-" if s.first_rev is None else str(s.first_rev)),
        ("last rev", "-" if s.last_rev is None else str(s.last_rev)),
        ("first time", q.format_ts(s.first_ts)),
        ("last time", q.format_ts(s.last_ts)),
        ("oldest resumable rev", str(s.oldest_resumable_rev)),
        ("size on disk", f"{_human_bytes(s.size_bytes)}, WAL included ({s.wal_bytes} B)"),
        ("bytes per change", "-" if s.bytes_per_change is None else f"{s.bytes_per_change}"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k + ':':<{w + 1}}  {v}")
    return EXIT_OK


# --- replay ---------------------------------------------------------------------------


class ReplayError(CompanionHubError):
    """The target hub refused the connection, or it ended."""


@dataclass
class ReplayResult:
    sent: int = 0
    sets: int = 0
    deletes: int = 0
    first_rev: int | None = None
    last_rev: int | None = None
    skipped_flips: int = 0  # stale flips: nothing to write
    skipped_not_owned: int = 0  # --keep-keys and the target does not grant the namespace
    skipped_invalid: int = 0  # the rewritten key is too long
    not_found: int = 0  # deletes of keys the target hub does not have
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # key, code, message
    seconds: float = 0.0

    def describe(self) -> str:
        text = (
            f"replayed {self.sent} changes ({self.sets} sets, {self.deletes} deletes)"
            f" from rev {self.first_rev} to rev {self.last_rev} in {self.seconds:.2f} s"
            if self.sent
            else "nothing to replay"
        )
        skipped = [
            (self.skipped_flips, "stale flips"),
            (self.skipped_not_owned, "not owned by the client on the target"),
            (self.skipped_invalid, "rewritten key invalid or too long"),
            (self.not_found, "deletes of keys the target does not have"),
        ]
        notes = [f"{n} {what}" for n, what in skipped if n]
        if notes:
            text += "; skipped: " + ", ".join(notes)
        if self.errors:
            text += f"; {len(self.errors)} errors"
        return text


def replay_key(key: str, client: str, keep_keys: bool) -> str:
    """Where ``key`` is written on the target hub."""
    return key if keep_keys else f"app.{client}.replay.{key}"


async def replay(
    changes: Iterable[q.ChangeItem],
    *,
    url: str,
    client: str,
    token: str | None = None,
    speed: float = 1.0,
    keep_keys: bool = False,
    max_in_flight: int = 1000,
    timeout: float = 30.0,
    ca_file: str | None = None,
) -> ReplayResult:
    """Send ``changes`` (in revision order) to the hub at ``url`` as ``set``/``delete``
    messages, spaced like their timestamps divided by ``speed`` (0: no waiting).

    Stale flips are skipped (a client cannot write the flag; the value did not
    change). Keys go to ``app.<client>.replay.<key>`` unless ``keep_keys``. A ``wss://``
    hub's certificate is verified against the system's trust store, or against the CA
    certificates in the PEM file ``ca_file``.

    It speaks through the SDK's :class:`~companion_hub.client.RawConnection`, at the
    message level: up to ``max_in_flight`` writes are pipelined, up to 200 in a frame,
    and a reader task matches the results to them by id.
    """
    import aiohttp

    from ..client import ConnectionClosed, RawConnection, connect_raw
    from ..client.protocol import hello_message
    from ..client.tls import describe_tls_error
    from ..client.wire import decode_frame

    if speed < 0:
        raise ValueError("speed must be 0 or more")
    res = ReplayResult()
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending: dict[str, tuple[str, str]] = {}  # id -> (target key, op)
    progress = asyncio.Event()
    done = asyncio.Event()
    versions: dict[str, int] = {}

    try:
        # the hello is sent below, not by connect_raw: a refusal is reported as it came
        conn: RawConnection = await connect_raw(url, None, ca_file=ca_file)
    except aiohttp.ClientSSLError as exc:
        raise ReplayError(describe_tls_error(url, exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ReplayError(f"cannot connect to {url}: {exc}") from exc
    try:
        await conn.send(hello_message(client, token=token or None))
        try:
            welcome = await conn.receive(timeout=timeout)
        except ConnectionClosed as exc:
            raise ReplayError(f"the hub closed the connection ({exc.close_code})") from None
        if welcome.get("op") != "welcome":
            err = welcome.get("error") or welcome
            raise ReplayError(f"the hub refused the session: {err}")
        owned = [str(n) for n in welcome.get("namespaces", [])]

        def on_message(msg: dict[str, Any]) -> None:
            if msg.get("op") == "result" and msg.get("id") in pending:
                key, op = pending.pop(msg["id"])
                if not msg.get("ok"):
                    err = msg.get("error") or {}
                    code = str(err.get("code", "?"))
                    if op == "delete" and code == "NOT_FOUND":
                        res.not_found += 1
                    else:
                        res.errors.append((key, code, str(err.get("message", ""))))
                progress.set()
                if not pending:
                    done.set()

        async def reader() -> None:
            try:
                while conn.inbox:
                    on_message(conn.inbox.popleft())
                while True:
                    for msg in decode_frame(await conn.receive_frame(timeout=None)):
                        on_message(msg)
            except ConnectionClosed:
                pass
            finally:
                progress.set()
                done.set()

        read_task = asyncio.create_task(reader())
        batch: list[dict[str, Any]] = []

        async def flush() -> None:
            if batch:
                frame = batch[0] if len(batch) == 1 else list(batch)
                batch.clear()
                await conn.send(frame)

        try:
            t0: float | None = None
            ts0 = 0
            n = 0
            for c in changes:
                if not c.deleted and versions.get(c.key) == c.version:
                    res.skipped_flips += 1
                    continue
                versions[c.key] = c.version
                target = replay_key(c.key, client, keep_keys)
                if not is_valid_key(target):
                    res.skipped_invalid += 1
                    continue
                if not any(is_prefix_of(ns, target) for ns in owned):
                    res.skipped_not_owned += 1
                    continue
                if t0 is None:
                    t0, ts0 = loop.time(), c.ts
                elif speed > 0:
                    delay = t0 + (c.ts - ts0) / 1000 / speed - loop.time()
                    if delay > 0.001:
                        await flush()
                        await asyncio.sleep(delay)
                while len(pending) >= max_in_flight and not read_task.done():
                    await flush()
                    progress.clear()
                    await progress.wait()
                if read_task.done():
                    raise ReplayError("the hub closed the connection")
                n += 1
                rid = str(n)
                msg: dict[str, Any]
                if c.deleted:
                    msg = {"op": "delete", "id": rid, "key": target}
                    res.deletes += 1
                    pending[rid] = (target, "delete")
                else:
                    msg = {
                        "op": "set",
                        "id": rid,
                        "key": target,
                        "value": msgspec.Raw(c.raw or b"null"),
                    }
                    res.sets += 1
                    pending[rid] = (target, "set")
                done.clear()
                batch.append(msg)
                if len(batch) >= 200:
                    await flush()
                res.sent += 1
                res.first_rev = c.rev if res.first_rev is None else res.first_rev
                res.last_rev = c.rev
            await flush()
            if pending:
                try:
                    await asyncio.wait_for(done.wait(), timeout)
                except TimeoutError:
                    raise ReplayError(
                        f"no answer from the hub for {len(pending)} writes after {timeout} s"
                    ) from None
            if pending:
                raise ReplayError(f"the hub closed the connection ({len(pending)} unanswered)")
        finally:
            res.seconds = loop.time() - started
            read_task.cancel()
            await asyncio.gather(read_task, return_exceptions=True)
    finally:
        await conn.close()
    return res


@_guard
def cmd_replay(args: argparse.Namespace) -> int:
    if not is_valid_client_name(args.client):
        raise _Usage(f"invalid client name {args.client!r}")
    if args.speed < 0:
        raise _Usage("--speed must be 0 or more")
    from ..client import BadRequest
    from ..client.tls import client_ssl

    try:
        client_ssl(args.url, ca_file=args.ca_file)  # a CA file that cannot work, at once
    except BadRequest as exc:
        raise _Usage(f"--{exc.message.replace('_', '-', 1)}") from None
    conn, _ = _open(args)
    bounds = q.log_bounds(conn)
    lo = q.resolve_point(conn, q.parse_point(args.start), start=True) if args.start else None
    hi = q.resolve_point(conn, q.parse_point(args.end)) if args.end else None
    if lo is not None and lo <= bounds.oldest and bounds.oldest > 0:
        print(
            f"note: the log keeps changes from rev {bounds.oldest + 1} on; "
            "earlier ones were removed by retention",
            file=sys.stderr,
        )
    f = q.make_filter(patterns=args.patterns, from_rev=lo, to_rev=hi)
    changes = q.iter_changes(conn, f)
    res = asyncio.run(
        replay(
            changes,
            url=args.url,
            client=args.client,
            token=args.token,
            speed=args.speed,
            keep_keys=args.keep_keys,
            ca_file=args.ca_file,
        )
    )
    print(res.describe(), file=sys.stderr)
    for key, code, message in res.errors[:20]:
        print(f"  {key}: {code} {message}", file=sys.stderr)
    if res.skipped_not_owned and args.keep_keys:
        print(
            f"note: the hub grants {args.client!r} only some of these namespaces; "
            "grant them in its configuration or replay without --keep-keys",
            file=sys.stderr,
        )
    return EXIT_ERROR if res.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
