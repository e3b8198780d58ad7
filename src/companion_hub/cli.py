"""The ``companion-hub`` command line. Thin: it parses, configures and wires."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, Settings, load_settings
from .logs import setup_logging

log = logging.getLogger("companion_hub")


def _serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for WebSocket and HTTP (default 8420)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text"])


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
            "log_format": args.log_format,
        },
    )


async def _run_hub(settings: Settings) -> None:
    from .server.app import HubServer

    server = HubServer(settings.hub_config())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    _run(_run_hub(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.log_format is None:
        settings.log_format = "text"
    setup_logging(settings.log_level, settings.log_format)
    log.warning(
        "demo: the Companion adapter and simulator are not built yet; "
        "this runs the hub alone (no Companion)"
    )
    log.info(
        "try: companion-hub watch '**'   and   companion-hub set app.cli.hello '\"world\"' "
        "--client cli",
    )
    _run(_run_hub(settings))
    return 0


def _run(coro: object) -> None:
    try:
        import uvloop  # optional: faster event loop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="companion-hub",
        description="A state-first hub between Bitfocus Companion and everything around it.",
    )
    parser.add_argument("--version", action="version", version=f"companion-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the hub")
    _serve_parser(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("demo", help="run the hub for a demo (text logs)")
    _serve_parser(p)
    p.set_defaults(func=cmd_demo)
    try:
        from .cli_client import add_client_commands
    except ImportError:  # pragma: no cover - SDK not installed
        pass
    else:
        add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"companion-hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
