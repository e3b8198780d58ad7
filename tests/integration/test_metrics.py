"""``GET /metrics`` over real sockets: a HubServer's hub, clients over WebSockets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from companion_hub.metrics import add_metrics_route


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def hello(http: aiohttp.ClientSession, url: str, client: str) -> Any:
    ws = await http.ws_connect(url)
    await ws.send_json({"op": "hello", "id": "h", "client": client})
    welcome = await ws.receive_json()
    assert welcome["op"] == "welcome"
    return ws


async def test_metrics_of_a_running_hub(hub: Any) -> None:
    """The route on an app of our own, over the HubServer's hub and its connections."""
    app = web.Application()
    add_metrics_route(app, hub.hub)
    async with (
        TestClient(TestServer(app)) as metrics_client,
        aiohttp.ClientSession() as http,
    ):
        w = await hello(http, hub.url, "w")
        r = await hello(http, hub.url, "r")
        await r.send_json({"op": "subscribe", "id": 1, "sub": "s", "patterns": ["app.w.**"]})
        await r.receive_json()  # the snapshot
        for i in range(20):
            await w.send_json({"op": "set", "id": i, "key": "app.w.k", "value": i})
        got: dict[Any, float] = {}
        for _ in range(100):
            resp = await metrics_client.get("/metrics")
            assert resp.status == 200
            got = samples(await resp.text())
            sets = got.get(("companion_hub_messages_in_total", (("op", "set"),)), 0)
            if sets == 20 and not got[("companion_hub_queue_depth_sum", ())]:
                break
            await asyncio.sleep(0.02)
        assert got[("companion_hub_connections", (("state", "open"),))] == 2
        assert got[("companion_hub_connections_accepted_total", ())] == 2
        assert got[("companion_hub_messages_in_total", (("op", "set"),))] == 20
        assert got[("companion_hub_messages_in_total", (("op", "subscribe"),))] == 1
        assert got[("companion_hub_deltas_sent_total", ())] >= 1
        assert got[("companion_hub_frames_out_total", ())] >= 3
        await w.close()
        await r.close()


async def test_the_route_wired_into_the_hub_server(hub: Any) -> None:
    """Through HubServer's own app, once the integrator wires ``/metrics`` in."""
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"http://127.0.0.1:{hub.port}/metrics")
        if resp.status == 404:
            pytest.skip("route wired by the integrator")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert "companion_hub_connections" in text
    assert "process_cpu_seconds_total" in text
