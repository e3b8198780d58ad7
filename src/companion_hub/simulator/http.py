"""Companion's HTTP remote-control API (the ``/api`` routes), as an aiohttp application.

Status codes, bodies and content types follow Companion's ``HttpApi.ts`` (Express):
text replies are ``text/html; charset=utf-8``, unknown ``/api`` routes are ``404``
with an empty body, a disabled API answers ``403`` with an empty body, and every
response carries ``X-App: Bitfocus Companion``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .model import UNDEFINED, js_number, js_number_text, parse_color, value_text

if TYPE_CHECKING:
    from .core import CompanionSimulator

log = logging.getLogger("companion_hub.simulator")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_LOCATION = re.compile(r"^/api/location/([^/]+)/([^/]+)/([^/]+)/([^/]+)$")
_CUSTOM = re.compile(r"^/api/custom-variable/([^/]+)/value$")
_VARIABLE = re.compile(r"^/api/variable/([^/]+)/([^/]+)/value$")
_CONN_STATUS = re.compile(r"^/api/connections/([^/]+)/status$")
_CONN_ACTION = re.compile(r"^/api/connections/([^/]+)/(restart|enable|disable)$")
_MAX_BODY = 1024 * 1024


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(doc, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


def _value_response(value: Any) -> web.Response:
    """Express ``res.send(value)``: strings/numbers as text/html, the rest as JSON."""
    if value is UNDEFINED:
        return _text("Not found", 404)
    if isinstance(value, bool | dict | list):
        return _json(value)
    if value is None:
        return _text("")
    return _text(value_text(value) or "")


def _location(match: re.Match[str]) -> tuple[int, int, int] | None:
    """The location of a ``/api/location/<p>/<r>/<c>/...`` route; None if a part is not
    an integer (Companion's ``Number()`` gives NaN, which finds no control)."""
    parts = []
    for raw in match.group(1, 2, 3):
        n = js_number(raw) if raw.strip() else None
        if n is None or not n.is_integer():
            return None
        parts.append(int(n))
    return parts[0], parts[1], parts[2]


def build_http_app(sim: CompanionSimulator) -> web.Application:
    """The admin-port web server: ``/api/...`` routes plus a tiny index page."""

    @web.middleware
    async def common(request: web.Request, handler: _Handler) -> web.StreamResponse:
        is_api = request.path == "/api" or request.path.startswith("/api/")
        if is_api and request.method == "OPTIONS":
            resp: web.StreamResponse = web.Response(status=204)
            resp.headers["Access-Control-Allow-Methods"] = "GET,HEAD,PUT,PATCH,POST,DELETE"
            wanted = request.headers.get("Access-Control-Request-Headers")
            if wanted:
                resp.headers["Access-Control-Allow-Headers"] = wanted
        elif is_api and not sim.http_enabled:
            resp = _empty(403)
        else:
            if sim.http_delay > 0:
                await asyncio.sleep(sim.http_delay)
            resp = await handler(request)
        resp.headers["X-App"] = "Bitfocus Companion"
        if is_api:
            resp.headers["Access-Control-Allow-Origin"] = "*"
            log.debug(
                "http request",
                extra={"method": request.method, "path": request.path, "status": resp.status},
            )
        return resp

    async def api(request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if method == "POST":
            m = _LOCATION.match(path)
            if m:
                return await location_action(request, m)
            m = _CUSTOM.match(path)
            if m:
                return await custom_set(request, m.group(1))
            m = _CONN_ACTION.match(path)
            if m:
                return connection_action(m.group(1), m.group(2))
            if path == "/api/surfaces/rescan":
                return _text("ok")
        elif method in ("GET", "HEAD"):
            m = _CUSTOM.match(path)
            if m:
                return _value_response(sim.custom_variables.get(m.group(1), UNDEFINED))
            m = _VARIABLE.match(path)
            if m:
                return _value_response(sim.variable_value(m.group(1), m.group(2)))
            if path == "/api/connections":
                return _json([c.as_list_item() for c in sim.connections.values()])
            m = _CONN_STATUS.match(path)
            if m:
                conn = sim.connections.get(m.group(1))
                if conn is None:
                    return _json({"status": 404, "message": "Connection not found"}, 404)
                return _json(conn.as_status())
        return _text("", 404)

    async def location_action(request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        action = m.group(4)
        if action not in ("press", "down", "up", "rotate-left", "rotate-right", "step", "style"):
            return _text("", 404)
        loc = _location(m)
        if loc is None or not sim.has_control(loc):
            return _empty(204)
        if action == "press":
            sim.press(loc, True, "http")

            async def release() -> None:
                await asyncio.sleep(sim.press_release_delay)
                sim.press(loc, False, "http")

            sim._spawn(release())
        elif action == "down":
            sim.press(loc, True, "http")
        elif action == "up":
            sim.press(loc, False, "http")
        elif action == "rotate-left":
            sim.rotate(loc, -1, "http")
        elif action == "rotate-right":
            sim.rotate(loc, 1, "http")
        elif action == "step":
            raw = request.query.get("step")
            step = js_number(raw) if raw is not None else None
            result = sim.set_step(loc, step if step is not None else float("nan"))
            if result is None:
                return _empty(204)
            if not result:
                return _text("Bad step", 400)
        else:
            btn = sim.button(*loc)
            if btn is None or btn.type != "BUTTON":
                return _empty(204)
            if sim.http_style_applies:
                apply_style(loc, request.query, await _form_or_json(request))
        return _text("ok")

    def apply_style(loc: tuple[int, int, int], query: Any, body: dict[str, Any]) -> None:
        def pick(key: str) -> Any:
            value = query.get(key)
            return value if value not in (None, "") else body.get(key)

        fields: dict[str, Any] = {}
        for key in ("bgcolor", "color"):
            color = parse_color(pick(key)) if pick(key) is not None else None
            if color is not None:
                fields[key] = color
        size = pick("size")
        if size == "auto":
            fields["font_size"] = "auto"
        elif size is not None:
            n = js_number(str(size))
            # Companion clamps nothing here; the simulator ignores what no button can show
            if n is not None and str(size).strip() and math.isfinite(n) and 1 <= n <= 1000:
                fields["font_size"] = int(n)
        text = query.get("text", body.get("text"))
        if isinstance(text, str):
            fields["text"] = text
        if fields:
            sim.set_button(*loc, **fields)

    async def _form_or_json(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            try:
                doc = json.loads(await request.read() or b"{}")
            except ValueError:
                return {}
            return doc if isinstance(doc, dict) else {}
        if request.content_type == "application/x-www-form-urlencoded":
            return dict(await request.post())
        return {}

    async def custom_set(request: web.Request, name: str) -> web.StreamResponse:
        sim.custom_variable_posts[name] = sim.custom_variable_posts.get(name, 0) + 1
        raw_type = request.headers.get("Content-Type")
        value: Any
        if "value" in request.query:
            values = request.query.getall("value")
            value = values[0] if len(values) == 1 else list(values)
        elif raw_type is not None and raw_type.lower() == "application/json":
            body = await request.read()
            if len(body) > _MAX_BODY:
                return _text("Payload Too Large", 413)
            try:
                doc = json.loads(body) if body.strip() else {}
            except ValueError:
                return _text("Bad Request", 400)
            if isinstance(doc, dict | list) and not doc:
                value = UNDEFINED
            else:
                value = doc  # str, number, bool, non-empty object/array, or None (null)
        else:
            body_value = await _plain_body(request)
            if body_value is None:
                return _text("No value", 400)
            value = body_value.strip()
        if name not in sim.custom_variables:
            return _text("Not found", 404)
        sim.set_custom_variable(name, value)
        return _text("ok")

    async def _plain_body(request: web.Request) -> str | None:
        """A non-object body as Express would see it (``req.body`` truthy and not an object)."""
        ctype = request.content_type
        body = await request.read()
        if len(body) > _MAX_BODY:
            return None
        if ctype == "text/plain":
            text = body.decode(request.charset or "utf-8", "replace")
            return text or None
        if ctype == "application/json":  # with parameters: parsed by express.json()
            try:
                doc = json.loads(body) if body.strip() else {}
            except ValueError:
                return None
            if isinstance(doc, dict | list) or doc is None or doc is False or doc == "":
                return None
            if isinstance(doc, bool):
                return "true"
            if isinstance(doc, int | float):
                return None if doc == 0 else js_number_text(doc)
            return str(doc)
        return None

    def connection_action(conn_id: str, action: str) -> web.StreamResponse:
        conn = sim.connections.get(conn_id)
        if conn is None:
            return _json({"status": 404, "message": "Connection not found"}, 404)
        if action == "restart":
            if not conn.enabled:
                return _json(
                    {"status": 409, "message": "Connection is inactive and cannot be restarted"},
                    409,
                )
            sim.restart_connection(conn_id)
            return _json({"id": conn_id, "message": "Restart triggered"})
        sim.set_connection_enabled(conn_id, action == "enable")
        return _json({"id": conn_id, "enabled": action == "enable"})

    async def index(request: web.Request) -> web.StreamResponse:
        if request.path != "/":
            return _text("Not Found", 404)
        return _text(
            "<!doctype html><title>Companion simulator</title>"
            "<p>companion-hub Companion simulator. HTTP API under /api.</p>"
        )

    app = web.Application(middlewares=[common], client_max_size=_MAX_BODY)
    app.router.add_route("*", "/api", api)
    app.router.add_route("*", "/api/{tail:.*}", api)
    app.router.add_route("*", "/{tail:.*}", index)
    return app
