"""Connection-level bounds: header timeout, caps overall and per address, and a hub
that keeps serving when one address opens more connections than it has descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from companion_hub.client import connect_raw
from companion_hub.server.listener import raise_fd_limit

from .test_eventlog import free_port, wait_ready


async def half_open(port: int, source: str = "127.0.0.1") -> tuple[Any, Any]:
    """A connection that starts a request and never finishes its headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    return reader, writer


async def test_a_request_must_complete_its_headers_in_time(hub_factory: Any) -> None:
    srv = await hub_factory(request_header_timeout=0.5)
    reader, writer = await half_open(srv.port)
    try:
        async with asyncio.timeout(20):  # generous: the point is that it ends at all
            assert await reader.read() == b""  # closed by the hub
    finally:
        writer.close()
    # a client that completes its request is served as usual
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{srv.port}/health/live") as r,
    ):
        assert r.status == 200


async def test_caps_per_address_and_overall_with_a_clear_reason(hub_factory: Any) -> None:
    srv = await hub_factory(max_connections=8, max_connections_per_address=3)
    held = [await half_open(srv.port, "127.0.0.2") for _ in range(3)]
    try:
        reader, writer = await half_open(srv.port, "127.0.0.2")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"too many connections from 127.0.0.2" in answer
        assert b"LIMIT_EXCEEDED" in answer
        # another address is still served, over WebSocket too
        c = await connect_raw(srv.url, "ok")
        await c.result({"op": "set", "key": "app.ok.x", "value": 1})
        more = [await half_open(srv.port, f"127.0.0.{i}") for i in (3, 4, 5, 6)]
        held.extend(more)  # 3 + 1 (c) + 4 = 8: the overall cap is reached
        assert srv.guard.total == 8, srv.guard.by_address
        reader, writer = await half_open(srv.port, "127.0.0.9")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert b"limit of 8 connections" in answer
        await c.close()
        assert srv.guard.refused == 2
    finally:
        for _, w in held:
            w.close()


def spawn_limited(port: int, config: Path, data: Path, nofile: int) -> subprocess.Popen[str]:
    """``companion-hub serve`` with its open-files limit (soft and hard) at ``nofile``."""
    boot = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        "sys.argv = ['companion-hub', *sys.argv[1:]]; "
        "runpy.run_module('companion_hub', run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", boot, "serve", "--port", str(port), "--config", str(config),
         "--data-dir", str(data), "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.skipif(sys.platform != "linux", reason="uses 127.0.0.x source addresses")
async def test_more_half_open_connections_than_descriptors_do_not_stop_the_hub(
    tmp_path: Path,
) -> None:
    """The reproduction: with the open-file limit at 1,024, 1,100 half-open requests
    from one address used to stop the hub from serving anyone and flood its log."""
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text("request_header_timeout = 3.0\n")

    proc = spawn_limited(port, config, tmp_path / "data", nofile=1024)
    conns: list[tuple[Any, Any]] = []
    try:
        await wait_ready(port, proc)
        assert raise_fd_limit() > 1200, "the test itself needs more than 1,100 descriptors"
        for _ in range(1100):
            with contextlib.suppress(OSError):
                conns.append(await half_open(port, "127.0.0.2"))
        # a client from elsewhere is served at once
        c = await connect_raw(f"ws://127.0.0.1:{port}/ws", "operator")
        r = await c.result({"op": "set", "key": "app.operator.x", "value": 1})
        assert r["version"] >= 1
        await c.close()
        # the half-open ones are dropped after the header timeout (or refused at once)
        async with asyncio.timeout(30):
            for reader, _ in conns:
                with contextlib.suppress(ConnectionError):
                    await reader.read()
    finally:
        for _, w in conns:
            w.close()
        proc.terminate()
        try:
            _, err = await asyncio.to_thread(proc.communicate, timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) < 60, f"{len(lines)} log lines: {lines[:5]}"  # bounded, not ~19,000
    assert any("connection refused" in ln for ln in lines)
