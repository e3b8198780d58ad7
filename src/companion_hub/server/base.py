"""What every HTTP handler shares: the app's keys, the request's identity, JSON and
error responses with the status of each error code (docs/protocol.md section 14.2)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..core.acl import Identity, development
from ..core.errors import ErrorCode, HubError
from ..hub import Hub
from ..protocol import encode as wire

HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)
# set when the server stops: open event streams end (see server/sse.py)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
# the request's Identity (see app.auth_middleware)
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)

HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_OWNER: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.FAILED: 502,
    ErrorCode.INTERNAL: 500,
}


def address(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def identity(request: web.Request) -> Identity:
    """The identity the auth middleware found (the development identity without tokens)."""
    return request.get(IDENTITY) or development("http")


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(err: HubError) -> web.Response:
    return json_response(wire.encode({"error": err.to_wire()}), HTTP_STATUS[err.code])
