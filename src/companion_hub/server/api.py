"""The HTTP API's writes, commands and events (docs/http.md): the WebSocket's rules
over plain requests.

- ``PUT /api/state/KEY`` (the body is the JSON value) and ``DELETE /api/state/KEY``,
  with ``expect_version`` and ``durable`` as query parameters, write through
  ``Hub.writer`` like a session does: the same key, value and ownership rules.
- ``POST /api/commands`` routes a command (``Hub.dispatch_command``) and answers with
  its outcome once it has one.
- ``POST /api/events`` publishes an event under a key the caller owns.

Who writes: with tokens, the request's identity (its bearer token; a client name in
``X-Companion-Client`` or ``?client=`` must be one the token allows); without tokens,
the client name from that header or parameter, required for writes and events. The
identity owns ``app.NAME`` and the configuration's grants for NAME, as a session of
NAME would (the namespace's owner is the client name, so an HTTP write as NAME and a
connection of NAME share it; a namespace owned by another client is not taken).
Keys written over HTTP are not marked stale later: no connection's loss stands for
their writer's.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ..core.acl import Identity, development
from ..core.commands import Outcome
from ..core.errors import ErrorCode, HubError
from ..core.keys import is_valid_client_name
from ..core.limits import MAX_DEPTH
from ..core.writer import Writer
from ..hub import Hub
from ..protocol import encode as wire
from ..protocol import http as h
from ..protocol.messages import _nests_within  # the WebSocket's nesting check
from .base import HTTP_STATUS, HUB_KEY, STOPPING, address, bearer, error_response, json_response
from .base import identity as request_identity

__all__ = ["CLIENT_HEADER", "add_api_routes"]

CLIENT_HEADER = "X-Companion-Client"
T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _HttpCaller:
    """The caller of one command sent over HTTP (the router's handle for it)."""

    __slots__ = ("client",)

    def __init__(self, client: str) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"<HTTP caller {self.client}>"


# --- request parsing -------------------------------------------------------------------


async def _body(request: web.Request, depth: int) -> bytes:
    """The request's body, within ``frame_bytes`` and nesting at most ``depth``."""
    hub = request.app[HUB_KEY]
    limit = hub.limits.frame_bytes
    if request.content_length is not None and request.content_length > limit:
        raise HubError(
            ErrorCode.TOO_LARGE,
            f"the body is {request.content_length} bytes; the limit is {limit}",
            {"bytes": request.content_length, "limit": limit},
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HubError(
            ErrorCode.TOO_LARGE, f"the body is over {limit} bytes", {"limit": limit}
        ) from None
    if not body.strip():
        raise HubError(ErrorCode.BAD_REQUEST, "the body is empty: send JSON")
    if not _nests_within(body, depth):
        raise HubError(
            ErrorCode.BAD_REQUEST, f"the body nests arrays and objects more than {depth} levels"
        )
    return body


def _decode(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise HubError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise HubError(ErrorCode.BAD_REQUEST, f"invalid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - the depth is checked first
        raise HubError(ErrorCode.BAD_REQUEST, "invalid JSON: nested too deep") from None


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise HubError(ErrorCode.BAD_REQUEST, f"{name} is given {len(values)} times: at most once")
    return values[0] if values else None


def _expect_version(request: web.Request) -> int | None:
    text = _one(request, "expect_version")
    if text is None or text == "":
        return None
    t = text.strip()
    if not t.isascii() or not t.isdigit() or len(t) > 18:
        raise HubError(
            ErrorCode.BAD_REQUEST,
            f"expect_version must be an integer >= 0, not {text[:40]!r}",
            {"parameter": "expect_version"},
        )
    return int(t)


def _durable(request: web.Request) -> bool:
    text = _one(request, "durable")
    if text is None:
        return False
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise HubError(
        ErrorCode.BAD_REQUEST,
        f"durable must be 1/true or 0/false, not {text[:40]!r}",
        {"parameter": "durable"},
    )


def _client_name(request: web.Request) -> str | None:
    header = request.headers.get(CLIENT_HEADER)
    name = header if header is not None else _one(request, "client")
    if name is None or name == "":
        return None
    if not is_valid_client_name(name):
        raise HubError(
            ErrorCode.BAD_REQUEST,
            f"invalid client name {name[:80]!r}: [a-z0-9][a-z0-9_-]{{0,62}}",
            {"parameter": "client"},
        )
    return name


async def _identity(request: web.Request, *, need_name: bool) -> Identity:
    """Who acts: the bearer token's identity (as the named client, if one is given
    and the token allows it); without tokens, the named client (``need_name``: a
    name is required)."""
    hub = request.app[HUB_KEY]
    name = _client_name(request)
    if hub.auth_required:
        ident = request_identity(request)
        if name is not None and name != ident.client:
            try:
                ident = await hub.access.authenticate(name, bearer(request), address(request))
            except HubError as err:
                raise HubError(
                    ErrorCode.FORBIDDEN, f"this token may not act as {name!r}: {err.message}"
                ) from None
        return ident
    if name is None:
        if need_name:
            raise HubError(
                ErrorCode.BAD_REQUEST,
                f"say who writes: a client name in the {CLIENT_HEADER} header or the "
                "client query parameter",
                {"parameter": "client"},
            )
        name = "http"
    return development(name)


def _writer(hub: Hub, ident: Identity) -> Writer:
    """The identity's write handle: the namespaces it may own and that no other
    client owns (registered for it as a session's hello would)."""
    owned = []
    for ns in ident.namespaces(hub.grants_for(ident.client)):
        try:
            hub.register_namespace(ns, ident.client)
        except HubError:
            continue  # owned by another client, or nesting with another namespace
        owned.append(ns)
    return hub.writer(ident.client, frozenset(owned))


def _forbidden(err: HubError, ident: Identity) -> HubError:
    """With tokens, what a role may write is its permission: FORBIDDEN (as on the
    WebSocket)."""
    if err.code is ErrorCode.NOT_OWNER and ident.enforced:
        return HubError(ErrorCode.FORBIDDEN, err.message, err.details)
    return err


async def _until_stopping(request: web.Request, fut: asyncio.Future[Any]) -> bool:
    """Wait for ``fut``; False when the server stopped first."""
    stopping = request.app[STOPPING]
    if stopping.is_set():
        return fut.done()
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({fut, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    return fut.done()


# --- handlers ----------------------------------------------------------------------------


async def _write(request: web.Request, delete: bool) -> web.Response:
    hub = request.app[HUB_KEY]
    key = request.match_info["key"]
    try:
        expect = _expect_version(request)
        durable = _durable(request)
        ident = await _identity(request, need_name=True)
        value = None if delete else _decode(await _body(request, MAX_DEPTH), object)
    except HubError as err:
        return error_response(err)
    await hub.wait_log_room()  # the event log is behind: hold this writer
    writer = _writer(hub, ident)
    try:
        r = writer.delete(key, expect) if delete else writer.set(key, value, expect)
    except HubError as err:
        return error_response(_forbidden(err, ident))
    if durable:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not fut.done():
                fut.set_result(None)

        hub.after_durable(r.rev, done)
        if not await _until_stopping(request, fut):
            return error_response(
                HubError(
                    ErrorCode.UNAVAILABLE,
                    "the hub is stopping: the write was applied but may not be on disk",
                    {"key": r.key, "version": r.version, "rev": r.rev},
                )
            )
    return json_response(wire.encode(h.WriteReply(r.key, r.version, r.rev)))


async def put_key(request: web.Request) -> web.Response:
    return await _write(request, delete=False)


async def delete_key(request: web.Request) -> web.Response:
    return await _write(request, delete=True)


async def post_command(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        ident = await _identity(request, need_name=False)
        body = _decode(await _body(request, MAX_DEPTH + 1), h.CommandRequest)
    except HubError as err:
        return error_response(err)
    if not ident.may_call(body.target, body.name):
        return error_response(
            HubError(
                ErrorCode.FORBIDDEN,
                f"your role may not call {body.name!r} on {body.target!r}",
                {"target": body.target, "name": body.name},
            )
        )
    fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def on_result(outcome: Outcome) -> None:
        if not fut.done():
            fut.set_result(outcome)

    caller = _HttpCaller(ident.client)
    try:
        hub.dispatch_command(
            caller=caller,
            source=ident.client,
            target=body.target,
            name=body.name,
            params=body.params,
            timeout_ms=body.timeout_ms,
            idempotency_key=body.idempotency_key,
            on_result=on_result,
        )
        if not await _until_stopping(request, fut):
            outcome = Outcome(False, None, HubError(ErrorCode.UNAVAILABLE, "the hub is stopping"))
        else:
            outcome = fut.result()
    except HubError as err:
        outcome = Outcome(False, None, err)
    finally:
        if not fut.done():
            hub.router.caller_gone(caller)
    if outcome.ok:
        return json_response(wire.encode({"ok": True, "result": outcome.result}))
    failure = outcome.error or HubError(ErrorCode.INTERNAL, "no outcome")
    return json_response(
        wire.encode({"ok": False, "error": failure.to_wire()}), HTTP_STATUS[failure.code]
    )


async def post_event(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        ident = await _identity(request, need_name=True)
        body = _decode(await _body(request, MAX_DEPTH + 1), h.EventRequest)
        if not ident.may_publish:
            raise HubError(ErrorCode.FORBIDDEN, "your role may not publish events")
    except HubError as err:
        return error_response(err)
    writer = _writer(hub, ident)
    try:
        key = writer.check_key(body.key)
        ns = hub.store.namespace_of(key)
        if ns is None or ns.name not in writer.owned:
            raise HubError(ErrorCode.NOT_OWNER, f"you do not own the namespace of {key!r}")
        writer.encode(body.data)  # within value_bytes
    except HubError as err:
        return error_response(_forbidden(err, ident))
    n = hub.publish_event(key, body.data, ident.client)
    return json_response(wire.encode(h.EventReply(n)))


def add_api_routes(app: web.Application) -> None:
    app.router.add_put("/api/state/{key}", put_key)
    app.router.add_delete("/api/state/{key}", delete_key)
    app.router.add_post("/api/commands", post_command)
    app.router.add_post("/api/events", post_event)
