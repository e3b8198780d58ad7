"""``companion-hub token ...``: manage the token file.

::

    companion-hub token add tally --role app --client 'tally-*'   # prints the token once
    companion-hub token list [--json]
    companion-hub token revoke tally

The file: ``--tokens FILE``, else the configuration's ``tokens_file`` (``--config``,
``$COMPANION_HUB_CONFIG``, ``$COMPANION_HUB_TOKENS_FILE``), else
``<data dir>/tokens.json`` (``--data-dir``, the configuration, ``$COMPANION_HUB_DATA_DIR``,
the default data directory) - the same resolution as ``companion-hub serve``.

``add`` writes only the token to stdout (``TOKEN=$(companion-hub token add ...)``);
everything else goes to stderr. A running hub picks changes up on SIGHUP.

Exit codes: 0 success; 1 ``revoke`` of a token that does not exist; 2 bad arguments,
an unknown role, a bad configuration or token file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError, Settings, load_settings
from ..core.acl import BUILTIN_ROLES
from .tokens import TokenError, TokenStore

__all__ = ["add_token_command", "resolve_tokens_file"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

SIGHUP_NOTE = "A running hub picks the change up on SIGHUP: kill -HUP <pid>"


def add_token_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``token`` (with ``add``, ``list``, ``revoke``).

    Each sets ``func=<callable(args) -> int>`` (the exit code) via ``set_defaults``.
    """
    where = argparse.ArgumentParser(add_help=False)
    g = where.add_argument_group("token file")
    g.add_argument(
        "--tokens", metavar="FILE", help="the token file (default: <data dir>/tokens.json)"
    )
    g.add_argument("--data-dir", metavar="DIR", help="the hub's data directory")
    g.add_argument("--config", metavar="FILE", help="the hub's TOML configuration file")

    p = subparsers.add_parser(
        "token",
        help="manage the token file (add, list, revoke)",
        description="Manage the hub's token file. A running hub picks changes up on SIGHUP.",
    )
    sub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    a = sub.add_parser(
        "add",
        parents=[where],
        help="create a token and print it (once)",
        description="Create a token; print it on stdout (only there, and only now).",
    )
    a.add_argument("name", metavar="NAME", help="the token's name ([a-z0-9][a-z0-9_-]*)")
    a.add_argument(
        "--role",
        required=True,
        help=f"a built-in role ({', '.join(BUILTIN_ROLES)}) or one of the config's [roles]",
    )
    a.add_argument(
        "--client",
        metavar="CLIENT",
        help="the client name it may connect as, or a pattern ('tally-*'; '*' any run "
        "of name characters); default: NAME",
    )
    a.set_defaults(func=cmd_add)

    ls = sub.add_parser(
        "list",
        parents=[where],
        help="list the tokens (never their secrets)",
        description="List the tokens: name, client, role, created, id.",
    )
    ls.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    ls.set_defaults(func=cmd_list)

    r = sub.add_parser(
        "revoke",
        parents=[where],
        help="remove a token",
        description="Remove a token from the file (exit 1 if there is none).",
    )
    r.add_argument("name", metavar="NAME")
    r.set_defaults(func=cmd_revoke)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config, overrides={"data_dir": args.data_dir, "tokens_file": args.tokens}
    )


def resolve_tokens_file(settings: Settings) -> Path:
    """``tokens_file`` if set, else ``<data dir>/tokens.json`` (whether or not it
    exists). ConfigError if the data directory is ``memory`` and no file is set."""
    if settings.tokens_file:
        return Path(settings.tokens_file)
    data_dir = settings.resolved_data_dir()
    if data_dir == ":memory:":
        raise ConfigError(
            "the data directory is 'memory' (no files): give --tokens FILE "
            "or tokens_file in the configuration"
        )
    return Path(data_dir) / "tokens.json"


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = resolve_tokens_file(settings)
    known = sorted(set(BUILTIN_ROLES) | set(settings.roles))
    if args.role not in known:
        hint = "" if settings.roles else " (custom roles: give the --config with [roles])"
        _err(f"companion-hub: unknown role {args.role!r}; known roles: {', '.join(known)}{hint}")
        return EXIT_USAGE
    existed = path.exists()
    store = TokenStore(path)
    try:
        token = store.add(args.name, args.role, args.client)
    except TokenError as exc:
        _err(f"companion-hub: {exc}")
        return EXIT_USAGE
    entry = store.get(args.name)
    client = entry.client if entry is not None else args.name
    print(token, flush=True)
    _err(
        f"Token {args.name!r} (client {client}, role {args.role}) added to {path}.\n"
        "It is shown only this once: store it now (a lost token is revoked and added "
        "again).\n" + SIGHUP_NOTE
    )
    if not existed:
        _err(f"{path} is new: a hub started without a token file may need a restart.")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    path = resolve_tokens_file(_settings(args))
    try:
        entries = TokenStore.load(path).entries()
    except TokenError as exc:
        _err(f"companion-hub: {exc}")
        return EXIT_USAGE
    if args.json:
        rows = [
            {"name": e.name, "client": e.client, "role": e.role, "created": e.created, "id": e.id}
            for e in entries
        ]
        print(json.dumps(rows, indent=2), flush=True)
        return EXIT_OK
    if not entries:
        what = "is empty" if path.exists() else "does not exist"
        _err(f"No tokens: {path} {what}.")
        return EXIT_OK
    table = [("NAME", "CLIENT", "ROLE", "CREATED", "ID")]
    table += [(e.name, e.client, e.role, e.created, e.id) for e in entries]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]), flush=True)
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    path = resolve_tokens_file(_settings(args))
    try:
        removed = TokenStore(path).revoke(args.name)
    except TokenError as exc:
        _err(f"companion-hub: {exc}")
        return EXIT_USAGE
    if not removed:
        _err(f"companion-hub: no token named {args.name!r} in {path}")
        return EXIT_NOT_FOUND
    _err(
        f"Token {args.name!r} revoked from {path}.\n"
        f"{SIGHUP_NOTE} (it then closes the connections that used the token)"
    )
    return EXIT_OK
