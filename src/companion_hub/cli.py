"""The ``companion-hub`` command line. Thin: it parses, configures and wires."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Settings, demo_data_dir, load_settings
from .core.errors import CompanionHubError, PortInUse
from .logs import setup_logging

if TYPE_CHECKING:
    from .adapters.companion.adapter import CompanionConfig

log = logging.getLogger("companion_hub")


def _serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for WebSocket and HTTP (default 8420)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text"])
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the event log lives (default: the user's data directory; "
        "'memory' keeps it in memory only)",
    )
    p.add_argument(
        "--companion",
        metavar="HOST",
        help="mirror the Companion at HOST (Satellite on 16622, HTTP on 8000 unless set)",
    )
    p.add_argument("--companion-satellite-port", type=int, metavar="PORT")
    p.add_argument("--companion-http-port", type=int, metavar="PORT")
    p.add_argument("--companion-transport", choices=["tcp", "ws"])
    p.add_argument(
        "--companion-variable",
        action="append",
        metavar="NAME",
        help="poll this Companion variable over HTTP, e.g. custom:cue or obs:scene "
        "(repeatable; internal and custom ones come by Ember+ when it is enabled)",
    )
    p.add_argument(
        "--companion-ember-port", type=int, metavar="PORT", help="Companion's Ember+ port (9092)"
    )
    p.add_argument(
        "--no-companion-ember",
        dest="companion_ember",
        action="store_const",
        const=False,
        default=None,
        help="do not use Companion's Ember+ provider (variables by HTTP polling only)",
    )
    p.add_argument(
        "--tokens", metavar="FILE", help="the token file (default: <data dir>/tokens.json)"
    )
    p.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="accept clients without tokens on a non-loopback address (not recommended)",
    )
    p.add_argument(
        "--mqtt",
        metavar="HOST[:PORT]",
        help="bridge the hub to the MQTT broker at HOST (port 1883 unless given)",
    )
    p.add_argument("--mqtt-prefix", metavar="PREFIX", help="topic prefix (default companion-hub)")
    p.add_argument("--mqtt-username", metavar="USER")
    p.add_argument(
        "--mqtt-password-file",
        metavar="FILE",
        help="file holding the broker password (or set COMPANION_HUB_MQTT_PASSWORD)",
    )
    p.add_argument("--mqtt-version", choices=["5", "3.1.1"])
    p.add_argument(
        "--mqtt-discovery",
        action="store_const",
        const=True,
        default=None,
        help="announce Companion's buttons and variables to Home Assistant",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve wss:// and https:// with this cert")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "data_dir": args.data_dir,
            "companion_host": args.companion,
            "companion_satellite_port": args.companion_satellite_port,
            "companion_http_port": args.companion_http_port,
            "companion_transport": args.companion_transport,
            "companion_variables": args.companion_variable,
            "companion_ember_port": args.companion_ember_port,
            "companion_ember": args.companion_ember,
            "tokens_file": args.tokens,
            "allow_anonymous": args.allow_anonymous,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "mqtt_broker": args.mqtt,
            "mqtt_prefix": args.mqtt_prefix,
            "mqtt_username": args.mqtt_username,
            "mqtt_password_file": args.mqtt_password_file,
            "mqtt_version": args.mqtt_version,
            "mqtt_discovery": args.mqtt_discovery,
        },
    )


def _check_port(host: str, port: int) -> None:
    """Refuse early, before the data directory is opened or anything is logged, when
    another process listens on the hub's port (binding would fail the same way later,
    after the event log was opened; that failure is a PortInUse too)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return  # the real bind reports it
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(host, port, "port") from None


async def _run_hub(settings: Settings, *, simulate: bool = False) -> None:
    from .server.app import HubServer

    hub_config = settings.hub_config()
    _check_port(hub_config.host, hub_config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server_box: list[Any] = []

    def reload_tokens() -> None:  # SIGHUP: re-read the token file, close revoked ones
        for server in server_box:
            try:
                server.hub.reload_tokens()
            except Exception:
                log.exception("the token file could not be reloaded; the old tokens stay")

    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, reload_tokens)
    async with contextlib.AsyncExitStack() as stack:
        companions = [c.adapter_config() for c in settings.companion]
        bridges = [m.bridge_config() for m in settings.mqtt]
        # this opens the data directory (DataDirInUse) before the simulator starts, so a
        # refusal is the only thing printed
        server = HubServer(hub_config, companions=companions, mqtt=bridges)
        try:
            if simulate:
                simulated = await stack.enter_async_context(_demo_simulator())
                server.companion_configs[:] = [simulated]
            await server.start()
        except BaseException:
            await server.stop()  # closes the event log and frees the data directory
            raise
        server_box.append(server)
        stack.push_async_callback(server.stop)
        if simulate:
            _print_demo_help(server.port, server.companion_configs[0], hub_config.data_dir)
        await stop.wait()
        log.info("shutting down")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    _run(_run_hub(settings))
    return 0


def demo_settings(args: argparse.Namespace) -> Settings:
    """The settings of ``companion-hub demo``: ``serve``'s, with text logs and the demo's
    own data directory unless --data-dir, the config file or the environment names one."""
    settings = _settings(args)
    if args.log_format is None:
        settings.log_format = "text"
    if not settings.data_dir:
        settings.data_dir = str(demo_data_dir())
    return settings


def cmd_demo(args: argparse.Namespace) -> int:
    settings = demo_settings(args)
    setup_logging(settings.log_level, settings.log_format)
    simulate = not settings.companion
    if not simulate:
        log.info("demo: mirroring the configured Companion (no simulator)")
    _run(_run_hub(settings, simulate=simulate))
    return 0


@contextlib.asynccontextmanager
async def _demo_simulator() -> AsyncIterator[CompanionConfig]:
    """Start the simulator on Companion's usual ports (or free ones if those are taken)."""
    from .adapters.companion.adapter import CompanionConfig
    from .adapters.companion.export import ExportRule
    from .simulator import CompanionSimulator, demo_scenario

    scenario = demo_scenario()
    sim_log = logging.getLogger("companion_hub.simulator")
    if sim_log.getEffectiveLevel() > logging.DEBUG:
        sim_log.setLevel(logging.WARNING)  # the demo is about the hub; keep the simulator quiet
    try:
        sim = CompanionSimulator(
            scenario,
            satellite_port=16622,
            ws_port=16623,
            http_port=8000,
            ember_port=9092,
            clock=True,
            connection_status_changes=True,
        )
        await sim.start()
    except OSError:
        log.info("Companion's usual ports are taken; the simulator uses free ports")
        sim = CompanionSimulator(scenario, ember_port=0, clock=True, connection_status_changes=True)
        await sim.start()
    try:
        yield CompanionConfig(
            host="127.0.0.1",
            satellite_port=sim.satellite_port,
            http_port=sim.http_port,
            ember_port=sim.ember_port or 9092,
            pages=[1, 2, 3],
            variables=_demo_variables(scenario),
            # a hub client's key on a Companion button: app.demo.message -> MSG 1/2/4
            exports=[ExportRule("app.demo.message", "hub_message", stale_text="(stale)")],
        )
    finally:
        await sim.stop()


def _demo_variables(scenario: object) -> list[str]:
    """The module variables to poll: Ember+ lists the internal and custom ones."""
    names: list[str] = []
    module = getattr(scenario, "module_variables", {}) or {}
    for label, variables in module.items():
        names += [f"{label}:{n}" for n in variables]
    return names


def _print_demo_help(port: int, companion: CompanionConfig, data_dir: str | None) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    extra = "" if port == 8420 else f" --url {url}"
    if data_dir in (None, ":memory:"):
        history = "Event log: in memory only (--data-dir memory), gone at exit."
    else:
        history = (
            f"Event log: {data_dir}\n"
            "  the demo's own directory, not the production hub's: a demo's history never\n"
            "  mixes with a show's, and it survives a restart (.venv/bin/companion-hub log\n"
            f"  query --data-dir {data_dir}). Another one: --data-dir DIR, or\n"
            "  --data-dir memory (gone at exit)."
        )
    print(
        f"""
companion-hub demo: the hub on {url}, mirroring a simulated Companion
(Satellite on 127.0.0.1:{companion.port}, HTTP on 127.0.0.1:{companion.http_port}).

Dashboard (state, Companion buttons, clients, event log, commands) in a browser:

  http://127.0.0.1:{port}/

Page 1 is a small show (locations are page/row/column): the program row 1/0/0-3
cuts CAM 1-4 to program (red), the preview row 1/1/0-3 picks preview (green),
CUT 1/1/5 swaps them; a stage timer 1/2/0 (START 1/2/1, STOP 1/2/2, RESET 1/2/3)
and MSG 1/2/4, which shows the custom variable hub_message: the hub exports the key
app.demo.message into it ([[companion.export]]). Companion's variables come by
Ember+ (simulated on 9092). In another terminal:

  .venv/bin/companion-hub watch 'companion.**'{extra}
  .venv/bin/companion-hub call companion press location=1/1/2{extra}
  .venv/bin/companion-hub call companion press location=1/1/5{extra}
  .venv/bin/companion-hub call companion press location=1/2/1{extra}
  curl -X PUT -H 'X-Companion-Client: demo' -d '"hello"' http://127.0.0.1:{port}/api/state/app.demo.message
  .venv/bin/companion-hub get 'hub.adapters.*'{extra}

(CAM 3 to preview, CUT: CAM 3 on program, START the timer, "hello" on MSG: a hub
client's key, through Companion's custom variable, onto a Companion button.)

{history}

Ctrl-C stops the demo. To mirror a real Companion instead: make demo ARGS='--companion HOST'
""",
        flush=True,
    )


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
    from .auth.cli import add_token_command
    from .cli_client import add_client_commands
    from .eventlog.tools import add_log_command

    add_client_commands(sub)
    add_log_command(sub)
    add_token_command(sub)
    try:
        from .simulator.cli import add_simulate_command
    except ImportError:  # the simulator is being built
        pass
    else:
        add_simulate_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's usage, not the top-level one
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = subparsers.choices.get(getattr(args, "command", "") or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except CompanionHubError as exc:  # a configuration, a data dir, a token file, TLS
        print(f"companion-hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
