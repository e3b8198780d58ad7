"""The client side of the ``companion-hub`` command line: ``watch``, ``get``, ``set``, ``call``.

Each command connects with the SDK (:class:`companion_hub.client.HubClient`), does
one thing and exits::

    companion-hub watch 'companion.buttons.**'
    companion-hub get 'hub.clients.*'            # a table; --json for JSON
    companion-hub set --client tally app.tally.status '"live"'
    companion-hub call companion press location='"1/0/2"' --timeout-ms 2000

Common options: ``--url`` (default ``$COMPANION_HUB_URL``, else
``ws://127.0.0.1:8420/ws``; ``wss://`` for a hub serving TLS), ``--client`` (default
``cli-<random>``), ``--token`` (default ``$COMPANION_HUB_TOKEN``), ``--ca-file PEM``
(default ``$COMPANION_HUB_CA_FILE``: the CA certificates that a ``wss://`` hub's
certificate is verified against, instead of the system's trust store). A client can
write only under the namespaces it owns, by default ``app.<client>``: ``set`` needs
``--client NAME`` to write ``app.NAME.*``. Keys written by the CLI turn stale when it
disconnects, like any owner's keys (spec section 6).

Exit codes: 0 success; 1 the hub answered with an error (its code is printed on
stderr) or could not be reached; 2 bad arguments; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from .client import Change, Entry, HubClient, HubError, NotOwner
from .client.tls import client_ssl, is_tls_url

__all__ = ["DEFAULT_URL", "add_client_commands", "main"]

DEFAULT_URL = "ws://127.0.0.1:8420/ws"
ENV_URL = "COMPANION_HUB_URL"
ENV_TOKEN = "COMPANION_HUB_TOKEN"
ENV_CA_FILE = "COMPANION_HUB_CA_FILE"

EXIT_OK = 0
EXIT_HUB_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    pass


def add_client_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``watch``, ``get``, ``set`` and ``call`` on ``subparsers``.

    Each sets ``func=<callable(args) -> int>`` (the exit code) via ``set_defaults``.
    """
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument(
        "--url",
        default=None,
        help=f"hub WebSocket URL (default: ${ENV_URL}, else {DEFAULT_URL})",
    )
    g.add_argument(
        "--client",
        default=None,
        help="client name (default: cli-<random>); it owns app.<client>, the only "
        "namespace it may write",
    )
    g.add_argument(
        "--replace",
        action="store_true",
        help="with --client NAME: take over NAME's connection even if it is connected",
    )
    g.add_argument("--token", default=None, help=f"auth token (default: ${ENV_TOKEN})")
    g.add_argument(
        "--ca-file",
        default=None,
        metavar="PEM",
        help="for a wss:// URL: trust the CA certificates in this PEM file (the hub's "
        "self-signed certificate, or its CA) instead of the system's trust store "
        f"(default: ${ENV_CA_FILE})",
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="give up when the hub cannot be reached (default: 5)",
    )

    p = subparsers.add_parser(
        "watch",
        parents=[common],
        help="print the entries matching patterns, then every change, live",
        description="Print the current entries matching PATTERN..., then every change as "
        "it happens: time (of the value), key, value as compact JSON, version; STALE "
        "marks a value whose source is disconnected, DELETED a deleted key. Ctrl-C stops.",
    )
    p.add_argument("patterns", nargs="+", metavar="PATTERN", help="e.g. 'companion.buttons.**'")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, default=None, help="exit after N lines")
    p.add_argument(
        "--seconds", type=float, default=None, help="exit after SECONDS (default: never)"
    )
    p.set_defaults(func=cmd_watch)

    p = subparsers.add_parser(
        "get",
        parents=[common],
        help="print the entries matching patterns",
        description="Print the entries matching PATTERN... as a table (or JSON). Exits 1 "
        "when nothing matches.",
    )
    p.add_argument("patterns", nargs="+", metavar="PATTERN", help="a key or a pattern")
    p.add_argument("--json", action="store_true", help="print a JSON array of entries")
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser(
        "set",
        parents=[common],
        help="write a key (under app.<client>)",
        description="Write KEY = VALUE (JSON: quote strings, e.g. '\"live\"'). A client "
        "may write only under app.<client>, so pass --client NAME to write app.NAME.*. "
        "The key turns stale when this command disconnects.",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="JSON")
    p.add_argument(
        "--expect-version", type=int, default=None, help="compare-and-set (0: must not exist)"
    )
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    p.set_defaults(func=cmd_set)

    p = subparsers.add_parser(
        "call",
        parents=[common],
        help="send a command and print its result",
        description="Send command NAME to the owner of namespace TARGET with params "
        "key=value (values parsed as JSON when they parse, else taken as strings) and "
        "print the result as JSON. On failure prints the error code and exits 1.",
    )
    p.add_argument("target", metavar="TARGET", help="a namespace, e.g. companion or app.mixer")
    p.add_argument("cmd_name", metavar="NAME", help="the command's name")
    p.add_argument("params", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--timeout-ms", type=int, default=None, help="default: the hub's (5000)")
    p.add_argument("--idempotency-key", default=None)
    p.set_defaults(func=cmd_call)


# --- plumbing -----------------------------------------------------------------------


def check_url(url: str) -> str:
    """A hub URL is ``ws://HOST:PORT/ws`` (or ``wss://``): say so at once, rather than
    retrying a connection that cannot work."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.path != "/ws":
        raise _UsageError(
            f"--url {url!r}: expected the hub's WebSocket URL, ws://HOST:PORT/ws, or "
            f"wss://HOST:PORT/ws for a hub serving TLS (e.g. {DEFAULT_URL})"
        )
    return url


def ca_file_for(url: str, ca_file: str | None) -> str | None:
    """The CA file to verify ``url``'s certificate with: ``--ca-file``, else
    ``$COMPANION_HUB_CA_FILE``. An explicit ``--ca-file`` with a ``ws://`` URL is a
    mistake (it would protect nothing); the variable is then simply not used."""
    if ca_file is not None:
        if not is_tls_url(url):
            raise _UsageError(f"--ca-file is for a wss:// URL; {url!r} does not use TLS")
        return ca_file
    env = os.environ.get(ENV_CA_FILE) or None
    return env if env is not None and is_tls_url(url) else None


def _client(args: argparse.Namespace) -> HubClient:
    url = check_url(args.url or os.environ.get(ENV_URL) or DEFAULT_URL)
    token = args.token if args.token is not None else os.environ.get(ENV_TOKEN) or None
    name = args.client or f"cli-{secrets.token_hex(3)}"
    try:
        return HubClient(
            url,
            name,
            token=token,
            connect_timeout=args.connect_timeout,
            request_timeout=args.connect_timeout,
            ca_file=ca_file_for(url, args.ca_file),
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


async def _open(args: argparse.Namespace) -> HubClient:
    """The client for this call. With an explicit ``--client NAME`` it first asks the
    hub (over HTTP, without connecting as anyone) whether NAME is connected: a CLI call
    must not take over a running application's connection by accident."""
    hub = _client(args)
    if args.client and not args.replace:
        ca_file = ca_file_for(hub.url, args.ca_file)
        record = await _client_record(hub.url, args.client, args.connect_timeout, ca_file)
        if record is not None and record.get("connected") is True:
            raise _UsageError(
                f"client {args.client!r} is connected (session {record.get('session')}, from "
                f"{record.get('address')}); a call as {args.client!r} would take over its "
                "connection. Pass --replace to do that on purpose"
            )
    return hub


async def _client_record(
    url: str, name: str, timeout: float, ca_file: str | None = None
) -> dict[str, Any] | None:
    """``hub.clients.<name>`` from the hub's HTTP API (same port, https for a wss://
    URL, with the certificate verified like the WebSocket's), or None."""
    parts = urllib.parse.urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    http_url = f"{scheme}://{parts.netloc}/api/state/hub.clients.{name}"
    tls = client_ssl(url, ca_file=ca_file)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(http_url, ssl=tls) as r,
        ):
            if r.status != 200:
                return None
            doc = await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None  # the connection attempt itself will say what is wrong
    value = doc.get("value") if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else None


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(main())
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HubError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        if exc.details:
            print(f"details: {_compact(exc.details)}", file=sys.stderr)
        return EXIT_HUB_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _clock(ts_ms: int | None) -> str:
    t = ts_ms / 1000 if ts_ms is not None else time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def format_change(ch: Change) -> str:
    """One human-readable line for a change (used by ``watch``)."""
    if ch.deleted:
        return f"{_clock(None)}  {ch.key}  DELETED  v{ch.version}"
    line = f"{_clock(ch.ts)}  {ch.key}  {_compact(ch.value)}  v{ch.version}"
    return line + "  STALE" if ch.stale else line


def _change_json(ch: Change) -> dict[str, Any]:
    d: dict[str, Any] = {"key": ch.key, "version": ch.version, "rev": ch.rev}
    if ch.deleted:
        d["deleted"] = True
    else:
        d.update(value=ch.value, stale=ch.stale, ts=ch.ts)
    return d


def _entry_json(e: Entry) -> dict[str, Any]:
    return {
        "key": e.key,
        "value": e.value,
        "version": e.version,
        "rev": e.rev,
        "owner": e.owner,
        "stale": e.stale,
        "ts": e.ts,
    }


def _table(entries: Sequence[Entry]) -> str:
    rows = [("KEY", "VERSION", "REV", "STALE", "VALUE")]
    rows += [
        (e.key, str(e.version), str(e.rev), "STALE" if e.stale else "", _compact(e.value))
        for e in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise _UsageError(f"parameter {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


# --- commands -----------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with await _open(args) as hub:
            printed = 0
            loop = asyncio.get_running_loop()
            deadline = None if args.seconds is None else loop.time() + args.seconds
            if args.count is not None and args.count <= 0:
                return EXIT_OK
            async with hub.watch(*args.patterns) as changes:
                while True:
                    timeout = None if deadline is None else deadline - loop.time()
                    if timeout is not None and timeout <= 0:
                        return EXIT_OK
                    try:
                        ch = await asyncio.wait_for(anext(changes), timeout)
                    except TimeoutError:
                        return EXIT_OK
                    except StopAsyncIteration:
                        return EXIT_OK
                    line = _compact(_change_json(ch)) if args.json else format_change(ch)
                    print(line, flush=True)
                    printed += 1
                    if args.count is not None and printed >= args.count:
                        return EXIT_OK

    return _run(main)


def cmd_get(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with await _open(args) as hub:
            entries = list((await hub.get_many(*args.patterns)).values())
        if args.json:
            print(_compact([_entry_json(e) for e in entries]))
        elif entries:
            print(_table(entries))
        if not entries:
            if not args.json:
                print("no entries match", file=sys.stderr)
                exact = [p for p in args.patterns if "*" not in p]
                if exact:
                    print(
                        "a pattern without '*' names one key exactly; for everything "
                        f"below it: {' '.join(repr(p + '.**') for p in exact)}",
                        file=sys.stderr,
                    )
            return EXIT_HUB_ERROR
        return EXIT_OK

    return _run(main)


def _json_hint(text: str, exc: json.JSONDecodeError) -> str:
    """Why ``text`` is not JSON, and the fix that fits: a bare word wants quotes; a
    value that starts like JSON has a mistake at a position."""
    stripped = text.strip()
    if stripped and (stripped[0] in '{["-' or stripped[0].isdigit() or stripped in ("tru", "nul")):
        return (
            f"{text!r} is not valid JSON: {exc.msg} at character {exc.pos + 1}"
            f" (line {exc.lineno}, column {exc.colno})"
        )
    return f"{text!r} is not JSON; a string needs quotes, e.g. '\"{text}\"'"


def cmd_set(args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError as exc:
        print(f"error: {_json_hint(args.value, exc)}", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> int:
        async with await _open(args) as hub:
            try:
                r = await hub.set(args.key, value, expect_version=args.expect_version)
            except NotOwner as exc:
                raise NotOwner(
                    f"{exc.message}. Client {hub.client!r} may write only under "
                    f"{', '.join(hub.namespaces) or 'its namespaces'}; "
                    "pass --client NAME to write app.NAME.*",
                    exc.details,
                ) from None
        if args.json:
            print(_compact({"key": r.key, "version": r.version, "rev": r.rev}))
        else:
            print(f"{r.key}  version={r.version}  rev={r.rev}")
        return EXIT_OK

    return _run(main)


def cmd_call(args: argparse.Namespace) -> int:
    try:
        params = dict(_parse_param(p) for p in args.params)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> int:
        async with await _open(args) as hub:
            result = await hub.call(
                args.target,
                args.cmd_name,
                params,
                timeout_ms=args.timeout_ms,
                idempotency_key=args.idempotency_key,
            )
        if sys.stdout.isatty():
            print(json.dumps(result, indent=2, ensure_ascii=False))
        else:
            print(_compact(result))
        return EXIT_OK

    return _run(main)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m companion_hub.cli_client watch ...`` (the same commands, standalone)."""
    parser = argparse.ArgumentParser(prog="companion-hub-client")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_client_commands(sub)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
