"""The aiohttp application: ``/ws`` (protocol v1), the HTTP API and health checks."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from ..adapters.companion.adapter import CompanionAdapter, CompanionConfig
from ..adapters.mqtt.bridge import MqttBridge
from ..adapters.mqtt.config import MqttConfig
from ..core.errors import CompanionHubError, ErrorCode, HubError, PortInUse
from ..core.keys import is_valid_key, parse_pattern
from ..eventlog.http_api import add_log_routes
from ..hub import Hub, HubConfig
from ..metrics import add_metrics_route
from ..protocol import encode as wire
from ..web.routes import add_web_routes
from .api import add_api_routes
from .base import (
    HTTP_STATUS,
    HUB_KEY,
    IDENTITY,
    STOPPING,
    address,
    bearer,
    error_response,
    identity,
    json_response,
)
from .listener import (
    FD_RESERVE,
    ConnectionGuard,
    GuardedSite,
    raise_fd_limit,
    throttle_accept_errors,
)
from .openapi import openapi_routes
from .session import serve_connection
from .sse import STREAMS, add_stream_routes
from .tls import server_context

log = logging.getLogger("companion_hub.server")

# (re-exported: HUB_KEY, IDENTITY and the status table live in .base)
__all__ = ["HTTP_STATUS", "HUB_KEY", "IDENTITY", "HubServer", "UnsafeListen", "make_app"]

# the routes anyone may read, also with tokens
PUBLIC = frozenset({"/api/openapi.json"})


def is_loopback(host: str) -> bool:
    """Only this machine can connect (127.0.0.0/8, ::1, localhost)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name or "" (every address): not loopback


class UnsafeListen(CompanionHubError):
    """Listening beyond loopback without tokens, and allow_anonymous not set."""


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With tokens, every /api route needs ``Authorization: Bearer TOKEN`` and acts
    with that token's role; /api/log also needs the role's log permission."""
    hub = request.app[HUB_KEY]
    if hub.auth_required and request.path.startswith("/api/") and request.path not in PUBLIC:
        try:
            ident = await hub.access.http_identity(bearer(request), address(request))
        except HubError as err:
            resp = error_response(err)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="companion-hub"'
            return resp
        if request.path.startswith("/api/log") and not ident.may_read_log:
            return error_response(
                HubError(ErrorCode.FORBIDDEN, "your role may not read the event log")
            )
        request[IDENTITY] = ident
    return await handler(request)


def check_listen_safety(cfg: HubConfig) -> None:
    """Safe by default: beyond loopback, tokens or an explicit allow_anonymous."""
    if cfg.tokens_file is None and not is_loopback(cfg.host) and not cfg.allow_anonymous:
        raise UnsafeListen(
            f"refusing to listen on {cfg.host} without tokens: anyone who can reach the "
            "port could read, write and press buttons. Create tokens "
            "(companion-hub token add NAME --role ROLE), or set allow_anonymous = true "
            "(--allow-anonymous) to accept anyone"
        )


def _origin_allowed(request: web.Request, allowed: Sequence[str]) -> bool:
    """A browser's handshake: its Origin must be the hub's own or a configured one
    (requests without an Origin are not from a browser page)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    own = f"{request.scheme}://{request.host}"
    return origin.lower() in {own.lower(), *(o.lower().rstrip("/") for o in allowed)}


async def ws_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    if not _origin_allowed(request, hub.config.allowed_origins):
        log.warning(
            "cross-origin WebSocket refused",
            extra={"origin": request.headers.get("Origin", "")[:200], "address": address(request)},
        )
        return error_response(
            HubError(ErrorCode.FORBIDDEN, "this Origin may not connect (see allowed_origins)")
        )
    lim = hub.limits
    ws = web.WebSocketResponse(
        timeout=2.0,  # how long close() waits for the client's closing handshake
        heartbeat=hub.config.heartbeat_ms / 1000,
        # aiohttp refuses a message of max_msg_size bytes or more; the protocol's
        # limit is inclusive (a message of exactly frame_bytes is accepted)
        max_msg_size=lim.frame_bytes + 1,
        compress=False,
        decode_text=False,
        autoping=False,  # the session answers pings and uses pongs as delivery acks
    )
    await ws.prepare(request)
    await serve_connection(hub, ws, address(request))
    return ws


async def health_live(request: web.Request) -> web.Response:
    return json_response(b'{"status":"ok"}')


async def health_ready(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    event_log = hub.event_log
    error = None if event_log is None else event_log.error
    doc: dict[str, Any] = {"status": "ok" if error is None else "error"}
    if hub.auth_required:  # the details only for a valid token
        try:
            await hub.access.http_identity(bearer(request), address(request))
        except HubError:
            return json_response(wire.encode(doc), 200 if error is None else 503)
    if error is not None:
        # the log cannot write (a full disk): writers are held until it can again
        doc["error"] = error
    doc["hub"] = hub.hub_id
    doc["rev"] = hub.store.rev
    if event_log is not None:
        # every change up to durable_rev is committed to the log on disk
        doc["durable_rev"] = event_log.durable_rev
        doc["log_pending"] = event_log.pending
    return json_response(wire.encode(doc), 200 if error is None else 503)


async def get_state(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    texts = request.query.getall("pattern", ["**"])
    try:
        patterns = [parse_pattern(t, hub.limits.key_bytes) for t in texts]
    except HubError as err:
        return error_response(err)
    entries = hub.store.matching(patterns)
    ident = identity(request)
    if not ident.reads_everything:  # outside the role: as if they did not exist
        entries = [e for e in entries if ident.may_read(e.key)]
    entries.sort(key=lambda e: e.key)
    return json_response(b'{"rev":%d,"entries":%b}' % (hub.store.rev, wire.entries_array(entries)))


async def get_key(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    key = request.match_info["key"]
    if not is_valid_key(key, hub.limits.key_bytes):
        return error_response(HubError(ErrorCode.BAD_REQUEST, f"invalid key {key!r}"))
    e = hub.store.get(key)
    if e is None or not identity(request).may_read(key):
        return error_response(HubError(ErrorCode.NOT_FOUND, f"no key {key!r}"))
    return json_response(wire.entry(e))


def make_app(hub: Hub) -> web.Application:
    # a body of exactly frame_bytes is accepted (aiohttp refuses client_max_size)
    app = web.Application(client_max_size=hub.limits.frame_bytes + 1, middlewares=[auth_middleware])
    app[HUB_KEY] = hub
    app[STOPPING] = asyncio.Event()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health/ready", health_ready)
    app.router.add_get("/api/state", get_state)
    app.router.add_get("/api/state/{key}", get_key)
    add_log_routes(app, lambda: hub.event_log.settings.path if hub.event_log else None)
    add_api_routes(app)
    add_stream_routes(app)
    add_metrics_route(app, hub)  # /metrics (Prometheus): open, like /health/*
    add_web_routes(app)  # /client.js, /client.d.ts: the JavaScript SDK
    openapi_routes(app)  # last: it describes the routes above
    app.on_shutdown.append(_stop_streams)
    return app


async def _stop_streams(app: web.Application) -> None:
    """The server stops: open event streams and waiting requests end."""
    app[STOPPING].set()
    for queue in app[STREAMS].copy():
        queue.notify()


class HubServer:
    """A hub listening on a host and port, with its adapters; ``async with`` runs it."""

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        hub: Hub | None = None,
        companions: Sequence[CompanionConfig] = (),
        mqtt: Sequence[MqttConfig] = (),
    ) -> None:
        check_listen_safety(hub.config if hub is not None else config or HubConfig())
        self.hub = hub or Hub(config)
        self.config = self.hub.config
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.port = self.config.port
        self.companion_configs = list(companions)
        self.mqtt_configs = list(mqtt)
        self.adapters: list[CompanionAdapter | MqttBridge] = []
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        cfg = self.config
        self.app = make_app(self.hub)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            # aiohttp closes a connection that has not sent a whole request (headers
            # included) within its keep-alive timeout: our header timeout
            keepalive_timeout=cfg.request_header_timeout,
        )
        await self._runner.setup()
        fd_limit = raise_fd_limit()
        self.guard = ConnectionGuard(
            max_total=min(cfg.max_connections, max(16, fd_limit - FD_RESERVE)),
            max_per_address=cfg.max_connections_per_address,
        )
        throttle_accept_errors(asyncio.get_running_loop())
        tls = server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        site = GuardedSite(
            self._runner, cfg.host, cfg.port, guard=self.guard, backlog=1024, ssl_context=tls
        )
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(cfg.host, cfg.port, "port") from None
            raise
        self.port = site.port
        self.hub.start_background()
        for cc in self.companion_configs:
            adapter = CompanionAdapter(self.hub, cc)
            await adapter.start()
            self.adapters.append(adapter)
            log.info(
                "companion adapter started",
                extra={
                    "adapter": cc.name,
                    "namespace": cc.namespace,
                    "satellite": f"{cc.transport}://{cc.host}:{cc.port}",
                    "http": f"http://{cc.host}:{cc.http_port}" if cc.http else None,
                    "ember": f"tcp://{cc.host}:{cc.ember_port}" if cc.ember else None,
                    "polled_variables": len(cc.variables),
                    "device_id": adapter.device_id,
                },
            )
        for mc in self.mqtt_configs:
            bridge = MqttBridge(self.hub, mc)
            await bridge.start()
            self.adapters.append(bridge)
            log.info(
                "MQTT bridge started",
                extra={
                    "bridge": mc.name,
                    "broker": mc.url,
                    "prefix": mc.prefix,
                    "version": mc.version,
                    "imports": len(mc.imports),
                    "discovery": mc.discovery,
                },
            )
        log.info(
            "hub listening",
            extra={
                "url": f"{'wss' if tls else 'ws'}://{self.config.host}:{self.port}/ws",
                "hub": self.hub.hub_id,
            },
        )
        if self.hub.auth_required:
            log.info(
                "tokens required",
                extra={"tokens_file": cfg.tokens_file, "roles": sorted(self.hub.access.roles)},
            )
        elif is_loopback(cfg.host):
            log.warning("no tokens configured: development mode, any client name is accepted")
        else:
            log.warning(
                "no tokens configured and allow_anonymous is set: anyone who can reach "
                "the port is accepted under any client name",
                extra={"host": cfg.host},
            )

    async def stop(self) -> None:
        """Stop the adapters, then the hub (which closes the event log cleanly), then
        the listener. A failure in one step is logged and never skips the next: the
        log must be closed on every shutdown."""
        for adapter in self.adapters:
            try:
                await adapter.stop()
            except Exception:
                log.exception("an adapter failed to stop", extra={"adapter": adapter.config.name})
        self.adapters.clear()
        try:
            await self.hub.shutdown()
        finally:
            if self._runner is not None:
                runner, self._runner = self._runner, None
                await runner.cleanup()

    async def __aenter__(self) -> HubServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
