"""``GET /api/openapi.json``: an OpenAPI 3.1 document of the HTTP API, generated from
the msgspec Structs the handlers validate with (``protocol.http``), so that it cannot
drift from them. The routes' parameters are described here, next to the list of
routes; a test checks that every route the app serves is in the document and runs
schemathesis against a live hub."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .. import __version__
from ..eventlog.http_api import MAX_LIMIT
from ..protocol import http as h
from .base import json_response

__all__ = ["build_openapi", "openapi_routes"]

_REF = "#/components/schemas/{name}"
_TYPES: tuple[Any, ...] = (
    h.ErrorReply,
    h.WriteReply,
    h.CommandRequest,
    h.CommandReply,
    h.EventRequest,
    h.EventReply,
    h.Entry,
    h.StateReply,
    h.Snapshot,
    h.DeltaEvent,
    h.Health,
    h.LogReply,
)

_STATUS_TEXT = {
    400: "Bad request: the message names the parameter or field at fault",
    401: "A bearer token is required, or it is not valid",
    403: "The token's role does not allow this",
    404: "Not found",
    409: "expect_version does not match (details.version is the current version)",
    413: "The body is over frame_bytes, or the value over value_bytes",
    429: "A count limit is reached",
    502: "The command's owner failed",
    503: "The needed party is not there (or the hub is stopping)",
    504: "No answer in time",
}


def _ref(t: type) -> dict[str, Any]:
    return {"$ref": _REF.format(name=t.__name__)}


def _json(t: type, text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ref(t)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(h.ErrorReply, _STATUS_TEXT[c]) for c in codes}


def _query(name: str, schema: dict[str, Any], text: str, *, many: bool = False) -> dict[str, Any]:
    if many:
        schema = {"type": "array", "items": schema}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": schema,
        **({"style": "form", "explode": True} if many else {}),
    }


_INT = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_STR = {"type": "string"}
_PATTERN = _query("pattern", _STR, "a key pattern (default `**`); repeatable", many=True)
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "the key (`[A-Za-z0-9_-]` segments joined by dots)",
    "schema": {"type": "string"},
}
_CLIENT_PARAMS = [
    {
        "name": "X-Companion-Client",
        "in": "header",
        "required": False,
        "description": "the client name that writes (without tokens: required for writes "
        "and events; with tokens: one the token allows)",
        "schema": {"type": "string"},
    },
    _query("client", _STR, "the client name, when the header is not given"),
]
_WRITE_PARAMS = [
    _KEY,
    _query("expect_version", _INT, "compare-and-set: the key's current version (0: absent)"),
    _query(
        "durable",
        {"type": "string", "enum": ["1", "0", "true", "false"]},
        "reply only once the change is on disk in the event log",
    ),
    *_CLIENT_PARAMS,
]
_LOG_PARAMS = [
    _PATTERN,
    _query("from_rev", _INT, "the first revision"),
    _query("to_rev", _INT, "the last revision"),
    _query("since", _STR, "the earliest time: ISO 8601 or epoch ms"),
    _query("until", _STR, "the latest time: ISO 8601 or epoch ms"),
    _query("client", _STR, "a client name; repeatable", many=True),
    _query(
        "type",
        _STR,
        "change, event, command, session; repeatable or comma-separated",
        many=True,
    ),
    _query("limit", {"type": "integer", "minimum": 1}, f"records per page (at most {MAX_LIMIT})"),
    _query("after", _STR, "the cursor a page handed out as `next`"),
    _query("after_id", _INT, "the older form of `after`, with from_rev"),
]
_STREAM_TEXT = (
    "Server-Sent Events: `event: snapshot` (data: Snapshot) with `id: <rev>`, then "
    "`event: delta` (data: DeltaEvent) with `id: <rev>` per change, and `: ping` "
    "comments every heartbeat_ms. See docs/http.md."
)


def _operations() -> dict[str, dict[str, Any]]:
    """Every route the HTTP API serves (``/ws`` is the WebSocket of protocol v1)."""
    write_errors = _errors(400, 401, 403, 404, 409, 413, 503)
    return {
        "/api/state": {
            "get": {
                "summary": "The entries of the keys matching the patterns, sorted by key",
                "operationId": "getState",
                "parameters": [_PATTERN],
                "responses": {"200": _json(h.StateReply, "the entries"), **_errors(400, 401)},
            }
        },
        "/api/state/{key}": {
            "get": {
                "summary": "One key's entry",
                "operationId": "getKey",
                "parameters": [_KEY],
                "responses": {"200": _json(h.Entry, "the entry"), **_errors(400, 401, 404)},
            },
            "put": {
                "summary": "Write a key: the body is its new JSON value",
                "operationId": "putKey",
                "parameters": _WRITE_PARAMS,
                "requestBody": {
                    "required": True,
                    "description": "the value (any JSON)",
                    "content": {"application/json": {"schema": {}}},
                },
                "responses": {"200": _json(h.WriteReply, "written"), **write_errors},
            },
            "delete": {
                "summary": "Delete a key",
                "operationId": "deleteKey",
                "parameters": _WRITE_PARAMS,
                "responses": {"200": _json(h.WriteReply, "deleted"), **write_errors},
            },
        },
        "/api/commands": {
            "post": {
                "summary": "Call a command and wait for its outcome",
                "operationId": "postCommand",
                "parameters": _CLIENT_PARAMS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(h.CommandRequest)}},
                },
                "responses": {
                    "200": _json(h.CommandReply, "the command's result (ok: true)"),
                    **{
                        str(c): {
                            "description": "the request was refused (error), or the command "
                            "failed (ok: false, with the status of its error code)",
                            "content": {
                                "application/json": {
                                    "schema": {"anyOf": [_ref(h.ErrorReply), _ref(h.CommandReply)]}
                                }
                            },
                        }
                        for c in (400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504)
                    },
                },
            }
        },
        "/api/events": {
            "post": {
                "summary": "Publish an event under a key the caller owns",
                "operationId": "postEvent",
                "parameters": _CLIENT_PARAMS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(h.EventRequest)}},
                },
                "responses": {
                    "200": _json(h.EventReply, "delivered to this many subscribers"),
                    **_errors(400, 401, 403, 413),
                },
            }
        },
        "/api/stream": {
            "get": {
                "summary": "The state as Server-Sent Events",
                "operationId": "stream",
                "description": _STREAM_TEXT,
                "parameters": [
                    _PATTERN,
                    _query("since", _INT, "resume after this revision"),
                    _query("last_event_id", _INT, "the same as since"),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "resume after this revision (sent by EventSource)",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": _STREAM_TEXT,
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 429),
                },
            }
        },
        "/api/log": {
            "get": {
                "summary": "One page of the event log",
                "operationId": "getLog",
                "parameters": _LOG_PARAMS,
                "responses": {
                    "200": _json(h.LogReply, "a page of records"),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/health/live": {
            "get": {
                "summary": "The process runs",
                "operationId": "healthLive",
                "security": [],
                "responses": {"200": _json(h.Health, "ok")},
            }
        },
        "/health/ready": {
            "get": {
                "summary": "The hub accepts connections (details with a valid token)",
                "operationId": "healthReady",
                "security": [],
                "responses": {
                    "200": _json(h.Health, "ready"),
                    "503": _json(h.Health, "the event log cannot write"),
                },
            }
        },
        "/client.js": _static_file(
            "The JavaScript SDK (an ES module; docs/js-client.md)",
            "clientJs",
            "application/javascript",
        ),
        "/client.d.ts": _static_file(
            "The JavaScript SDK's TypeScript declarations", "clientDts", "text/plain"
        ),
        "/": _static_file(
            'The dashboard (index.html; README.md "Dashboard")', "dashboard", "text/html"
        ),
        "/dashboard.js": _static_file(
            "The dashboard's script (an ES module on /client.js)",
            "dashboardJs",
            "application/javascript",
        ),
        "/dashboard.css": _static_file("The dashboard's style sheet", "dashboardCss", "text/css"),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def _static_file(summary: str, operation_id: str, content_type: str) -> dict[str, Any]:
    """A file the hub serves as it is, with an ETag (web/routes.py)."""
    return {
        "get": {
            "summary": summary,
            "operationId": operation_id,
            "security": [],
            "responses": {
                "200": {
                    "description": summary,
                    "content": {content_type: {"schema": {"type": "string"}}},
                },
                "304": {"description": "not modified (If-None-Match)"},
            },
        }
    }


def build_openapi(served: set[str] | None = None) -> dict[str, Any]:
    """The document; with ``served``, only the paths in it (a route that this app does
    not serve, such as ``/metrics`` before it exists, is left out)."""
    _, components = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    paths = {p: ops for p, ops in _operations().items() if served is None or p in served}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "companion-hub HTTP API",
            "version": __version__,
            "description": "The state hub's HTTP API (docs/http.md). Errors are "
            '`{"error":{"code","message","details"?}}` with the status of the code. '
            "With tokens every /api route needs `Authorization: Bearer TOKEN`.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


def openapi_routes(app: web.Application) -> None:
    """Add ``GET /api/openapi.json`` (built once, on first request, from the routes
    the app serves by then)."""
    cache: list[bytes] = []

    async def get_openapi(request: web.Request) -> web.Response:
        if not cache:
            served = {
                r.resource.canonical for r in request.app.router.routes() if r.resource is not None
            }
            cache.append(msgspec.json.encode(build_openapi(served)))
        return json_response(cache[0])

    app.router.add_get("/api/openapi.json", get_openapi)
