"""The browser client of the hub: ``companion-hub.js`` (an ES module), its TypeScript
declarations, and the aiohttp routes that serve them (``/client.js``, ``/client.d.ts``).
See docs/js-client.md."""

from __future__ import annotations

from .routes import CLIENT_DTS, CLIENT_JS, add_web_routes, read_asset

__all__ = ["CLIENT_DTS", "CLIENT_JS", "add_web_routes", "read_asset"]
