"""``companion-hub simulate``: run the fake Companion until interrupted.

The main CLI calls :func:`add_simulate_command` with its sub-parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

log = logging.getLogger("companion_hub.simulator")


def add_simulate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``simulate`` sub-command on an ``argparse`` sub-parsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run a fake Bitfocus Companion (Satellite TCP/WebSocket + HTTP API)",
        description="Run a fake Bitfocus Companion for development and tests.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--satellite-port", type=int, default=16622, help="Satellite TCP port")
    p.add_argument("--ws-port", type=int, default=16623, help="Satellite WebSocket port")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP remote-control port")
    p.add_argument(
        "--ember-port",
        type=int,
        default=9092,
        help="Ember+ provider port (default 9092, as Companion; 0: a free port)",
    )
    p.add_argument(
        "--no-ember",
        dest="ember",
        action="store_false",
        help="no Ember+ provider (as a Companion with Ember+ disabled, its default)",
    )
    p.add_argument(
        "--subscriptions",
        choices=["on", "off"],
        default="on",
        help="the 'Enable Button Subscriptions API' setting (default on)",
    )
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: built-in demo)")
    p.add_argument("--api-version", default="1.14.0", help="Satellite API version to emulate")
    p.add_argument(
        "--companion-version",
        default=None,
        help="CompanionVersion sent in BEGIN (default 5.1.0+9100-main-3d76cba000)",
    )
    p.add_argument(
        "--status-changes",
        choices=["on", "off"],
        default="on",
        help="let connection statuses change now and then (default on)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--log-format", choices=["json", "text"], default="text")
    p.set_defaults(func=cmd_simulate)
    return p


def cmd_simulate(args: argparse.Namespace) -> int:
    from companion_hub.core.errors import PortInUse
    from companion_hub.logs import setup_logging

    from .scenario import ScenarioError, load_scenario

    setup_logging(args.log_level, args.log_format)
    scenario = None
    if args.scenario:
        try:
            scenario = load_scenario(args.scenario)
        except (ScenarioError, OSError) as exc:
            print(f"companion-hub simulate: {exc}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_run(args, scenario))
    except KeyboardInterrupt:
        return 130
    except PortInUse as exc:  # one line naming the flag (--satellite-port, ...)
        print(f"companion-hub simulate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"companion-hub simulate: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(args: argparse.Namespace, scenario: Any) -> None:
    from .core import DEFAULT_COMPANION_VERSION, CompanionSimulator

    sim = CompanionSimulator(
        scenario=scenario,
        host=args.host,
        satellite_port=args.satellite_port,
        ws_port=args.ws_port,
        http_port=args.http_port,
        ember_port=args.ember_port if args.ember else None,
        subscriptions=args.subscriptions == "on",
        api_version=args.api_version,
        companion_version=args.companion_version or DEFAULT_COMPANION_VERSION,
        connection_status_changes=args.status_changes == "on",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    log.info(
        "simulate: Companion simulator ready",
        extra={
            "satellite_tcp": f"{args.host}:{sim.satellite_port}",
            "satellite_ws": f"ws://{args.host}:{sim.ws_port}",
            "http": f"http://{args.host}:{sim.http_port}/api",
            "ember": f"tcp://{args.host}:{sim.ember_port}" if args.ember else None,
        },
    )
    try:
        await stop.wait()
    finally:
        await sim.stop()
