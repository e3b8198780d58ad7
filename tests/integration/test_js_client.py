"""The JavaScript client (src/companion_hub/web/companion-hub.js) against a real hub.

The tests themselves are in tests/js/*.test.mjs and run with Node's built-in runner
(``node --test``). This wrapper starts a hub on 127.0.0.1 port 0, a Python SDK client
(``py``, owning ``app.py``, with a command handler ``add``), and a small aiohttp app of
the test's own that serves ``/client.js`` and ``/client.d.ts`` with ``add_web_routes``
plus control endpoints for what JS cannot do from outside:

- ``POST /drop?client=NAME`` closes that client's connection from the hub's side;
- ``POST /call`` with ``{"target", "name", "params"}`` makes the Python client call a
  command (of a JS handler) and answers ``{"ok", "result"}`` or ``{"ok", "code"}``.

Node needs a global ``WebSocket``: Node >= 22 has one, Node 20 with
``--experimental-websocket``. Without a usable Node the test is skipped, unless the
environment variable ``CI`` is set: then it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from companion_hub.client import HubClient, HubError
from companion_hub.client.errors import BadRequest
from companion_hub.server.app import HubServer
from companion_hub.web import add_web_routes, read_asset

JS_TESTS = sorted((Path(__file__).parents[1] / "js").glob("*.test.mjs"))


def _node_command() -> tuple[list[str] | None, str]:
    """The node command line with a global WebSocket, or None and why not."""
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed"
    probe = "process.exit(typeof WebSocket === 'function' ? 0 : 3)"
    for flags in ([], ["--experimental-websocket"]):
        try:
            r = subprocess.run(
                [node, *flags, "-e", probe], check=False, capture_output=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"node does not run: {e}"
        if r.returncode == 0:
            return [node, *flags], ""
    return None, "node has no global WebSocket (Node >= 22, or 20 with --experimental-websocket)"


def _need_node() -> list[str]:
    cmd, why = _node_command()
    if cmd is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the JS client tests cannot run: {why}")
        pytest.skip(why)
    return cmd


@pytest.fixture
async def control(hub: HubServer) -> AsyncIterator[str]:
    """The test's own web app: /client.js, /client.d.ts and the control endpoints."""
    py = HubClient(hub.url, "py")  # type: ignore[attr-defined]

    async def add(params: dict[str, Any], source: str) -> Any:
        if not isinstance(params.get("a"), int) or not isinstance(params.get("b"), int):
            raise BadRequest("'a' and 'b' must be integers")
        return {"sum": params["a"] + params["b"], "source": source}

    py.handle("add", add)
    await py.connect()

    async def drop(request: web.Request) -> web.Response:
        session = hub.hub.sessions.get(request.query["client"])
        if session is None:
            return web.json_response({"dropped": False}, status=404)
        ws = session.connection.ws  # type: ignore[attr-defined]
        await ws.close(code=1001, message=b"dropped by the test")
        return web.json_response({"dropped": True})

    async def call(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = await py.call(body["target"], body["name"], body.get("params") or {})
        except HubError as e:
            return web.json_response({"ok": False, "code": str(e.code), "message": e.message})
        return web.json_response({"ok": True, "result": result})

    app = web.Application()
    add_web_routes(app)
    app.router.add_post("/drop", drop)
    app.router.add_post("/call", call)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await py.close()
    await runner.cleanup()


async def test_client_js_route_serves_the_package_file(control: str) -> None:
    js = read_asset("companion-hub.js")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{control}/client.js") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/javascript; charset=utf-8"
            assert r.headers["Cache-Control"] == "no-cache"
            etag = r.headers["ETag"]
            assert etag.startswith('"') and not etag.startswith("W/")
            assert await r.read() == js
        async with s.get(f"{control}/client.js", headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and r.headers["ETag"] == etag
            assert await r.read() == b""
        async with s.get(f"{control}/client.d.ts") as r:
            assert r.status == 200
            assert "export class HubClient" in await r.text()
            assert r.headers["ETag"] != etag
        async with s.head(f"{control}/client.js") as r:
            assert r.status == 200


def test_web_files_are_package_data() -> None:
    text = Path(__file__).parents[2].joinpath("pyproject.toml").read_text()
    assert '"web/*.js"' in text and '"web/*.d.ts"' in text
    assert read_asset("companion-hub.d.ts").startswith(b"// Type declarations")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", JS_TESTS, ids=lambda p: p.name)
async def test_js_suite(hub: HubServer, control: str, script: Path) -> None:
    cmd = _need_node()
    env = {
        **os.environ,
        "HUB_URL": hub.url,  # type: ignore[attr-defined]
        "CONTROL_URL": control,
        "NODE_NO_WARNINGS": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "--test",
        "--test-reporter=tap",
        str(script),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=150)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail("node --test did not finish in time:\n" + out.decode(errors="replace"))
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"node --test failed ({proc.returncode}):\n{text}"
    counts = _tap_counts(text)
    assert counts.get("fail", 0) == 0 and counts.get("pass", 0) == counts.get("tests", -1) > 0, text


def _tap_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "#" and parts[2].isdigit():
            counts[parts[1]] = int(parts[2])
    return counts
