"""Serve the JavaScript client from the package: ``GET /client.js`` and
``GET /client.d.ts``; and the dashboard (``web/dashboard/``): ``GET /`` (its
``index.html``), ``GET /dashboard.js`` and ``GET /dashboard.css``.

The files are read once, when the routes are added. Each response carries a strong
``ETag`` (a hash of the content) and ``Cache-Control: no-cache``, so browsers revalidate
and get ``304 Not Modified`` while the file is unchanged, and a new version of the hub
is picked up at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

__all__ = ["CLIENT_DTS", "CLIENT_JS", "add_web_routes", "read_asset"]

CLIENT_JS = "companion-hub.js"
CLIENT_DTS = "companion-hub.d.ts"

_ROUTES = {
    "/client.js": (CLIENT_JS, "application/javascript; charset=utf-8"),
    "/client.d.ts": (CLIENT_DTS, "text/plain; charset=utf-8"),
    "/": ("dashboard/index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard/dashboard.js", "application/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard/dashboard.css", "text/css; charset=utf-8"),
}


def read_asset(name: str) -> bytes:
    """The bytes of one of the package's web files (``name`` may be ``dir/file``)."""
    node = resources.files(__package__)
    for part in name.split("/"):
        node = node.joinpath(part)
    return node.read_bytes()


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str

    async def handle(self, request: web.Request) -> web.Response:
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"}
        if_none_match = request.headers.get("If-None-Match", "")
        if self.etag in (t.strip() for t in if_none_match.split(",")) or if_none_match == "*":
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = self.content_type
        return web.Response(body=self.body, headers=headers)


def add_web_routes(app: web.Application) -> None:
    """Add ``GET /client.js``, ``GET /client.d.ts`` and the dashboard (``/``,
    ``/dashboard.js``, ``/dashboard.css``), HEAD too, to ``app``."""
    for path, (name, content_type) in _ROUTES.items():
        body = read_asset(name)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        app.router.add_get(path, _Asset(body, content_type, etag).handle)
