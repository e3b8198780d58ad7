"""Prometheus metrics (``companion_hub.metrics``): the plain counters the hub keeps on
its hot path, and what a scrape of a hub's own registry reads from them."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from companion_hub import metrics as metrics_mod
from companion_hub.core.delivery import DeliveryQueue, Delta
from companion_hub.hub import Hub, HubConfig
from companion_hub.metrics import HubMetrics, add_metrics_route, attach_metrics
from companion_hub.protocol.session import HubSession, SessionSettings, SessionState

SETTINGS = SessionSettings(
    heartbeat_ms=1000, window_bytes=4096, frame_target_bytes=64 * 1024, snapshot_chunk_bytes=512
)


class Peer:
    def __init__(self, hub: Hub, settings: SessionSettings = SETTINGS) -> None:
        self.s = HubSession(hub, settings, "127.0.0.1:5000", now=1000.0, now_ms=0)

    def send(self, *msgs: dict[str, Any]) -> None:
        for msg in msgs:
            self.s.receive_text(msgspec.json.encode(msg).decode())
        self.s.process(1000.0)

    def out(self, *, confirm: bool = True) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while (frame := self.s.next_frame()) is not None:
            obj = msgspec.json.decode(frame)
            got.extend(obj if isinstance(obj, list) else [obj])
            ping = self.s.frame_sent(len(frame), 0)
            if confirm and ping is not None:
                self.s.receive_pong(ping)
        return got


def connect(hub: Hub, client: str, settings: SessionSettings = SETTINGS) -> Peer:
    p = Peer(hub, settings)
    p.send({"op": "hello", "id": "h", "client": client})
    assert p.out()[0]["op"] == "welcome"
    return p


def scrape(hub: Hub) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the hub's registry: (name, sorted labels) -> value."""
    text = attach_metrics(hub).generate().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# --- the plain counters --------------------------------------------------------------


def test_the_queue_counts_coalesced_and_sent_deltas() -> None:
    q = DeliveryQueue()
    for rev in range(1, 6):
        q.push_delta("a", Delta(rev, b"x"))
    q.push_delta("b", Delta(6, b"y"))
    assert q.coalesced == 4 and q.deltas_sent == 0
    assert q.take(1 << 20, lambda n: b"") == [b"x", b"y"]
    assert q.deltas_sent == 2
    q.push_delta("a", Delta(7, b"z"))
    q.push_control(b"barrier", barrier_rev=7)  # seals the pending delta into a run
    assert q.take(1 << 20, lambda n: b"") == [b"z", b"barrier"]
    assert q.deltas_sent == 3 and q.coalesced == 4


async def test_session_counters_messages_frames_and_connections() -> None:
    hub = Hub(HubConfig())
    c = hub.session_counters
    a = connect(hub, "a")
    b = connect(hub, "b")
    assert c.opened == 2 and len(c.live) == 2
    a.send({"op": "set", "id": 1, "key": "app.a.x", "value": 1})
    a.send({"op": "get", "id": 2, "patterns": ["app.**"]}, {"op": "bogus", "id": 3})
    a.out()
    assert c.frames_in == 5  # two hellos + three frames
    ops = {t.__name__: n for t, n in c.messages_in.items()}
    assert ops == {"Hello": 2, "Set": 1, "Get": 1, "BadMessage": 1}
    assert c.frames_out >= 3 and c.messages_out >= 5 and c.bytes_out > 0
    b.s.connection_lost(1000)
    assert len(c.live) == 1 and c.opened == 2


def test_window_stalls_count_once_per_stall() -> None:
    hub = Hub(HubConfig())
    small = SessionSettings(
        heartbeat_ms=1000, window_bytes=256, frame_target_bytes=256, snapshot_chunk_bytes=512
    )
    w = connect(hub, "w")
    r = connect(hub, "r", small)
    r.send({"op": "subscribe", "id": 1, "sub": "s", "patterns": ["app.**"]})
    r.out()
    for i in range(50):
        w.send({"op": "set", "id": i, "key": f"app.w.k{i}", "value": "v" * 40})
    r.out(confirm=False)  # fills the window; the pongs never come
    assert not r.s.window.can_send()
    assert r.s.next_frame() is None and r.s.stalled
    assert r.s.next_frame() is None  # still the same stall
    assert hub.session_counters.window_stalls == 1
    samples = scrape(hub)
    assert val(samples, "companion_hub_window_stalls_total") == 1
    assert val(samples, "companion_hub_window_stalled_connections") == 1
    assert val(samples, "companion_hub_queue_depth_max") > 0


# --- the scrape ------------------------------------------------------------------------


async def test_a_scrape_reads_the_counters() -> None:
    hub = Hub(HubConfig())
    w = connect(hub, "w")
    r = connect(hub, "r")
    r.send({"op": "subscribe", "id": 1, "sub": "s", "patterns": ["app.**"]})
    r.out()
    for i in range(5):
        w.send({"op": "set", "id": i, "key": "app.w.k", "value": i})
    w.out()
    before = scrape(hub)
    assert val(before, "companion_hub_deltas_coalesced_total") == 4
    assert val(before, "companion_hub_deltas_sent_total") == 0
    assert val(before, "companion_hub_queue_pending_deltas") == 1
    r.out()
    p = Peer(hub)  # connected, no hello yet
    samples = scrape(hub)
    assert val(samples, "companion_hub_deltas_sent_total") == 1
    assert val(samples, "companion_hub_connections", state="open") == 2
    assert val(samples, "companion_hub_connections", state="awaiting-hello") == 1
    assert val(samples, "companion_hub_connections_accepted_total") == 3
    assert val(samples, "companion_hub_clients") == 2
    assert val(samples, "companion_hub_messages_in_total", op="set") == 5
    assert val(samples, "companion_hub_messages_in_total", op="hello") == 2
    assert val(samples, "companion_hub_store_revision") == hub.store.rev
    assert ("process_cpu_seconds_total", ()) in samples
    # a closed session's deltas stay counted (counters never go down)
    r.s.connection_lost(1000)
    p.s.connection_lost(None)
    after = scrape(hub)
    assert val(after, "companion_hub_deltas_sent_total") == 1
    assert val(after, "companion_hub_deltas_coalesced_total") == 4
    assert val(after, "companion_hub_connections", state="open") == 1
    assert val(after, "companion_hub_connections", state="awaiting-hello") == 0


def test_each_hub_has_its_own_registry() -> None:
    h1, h2 = Hub(HubConfig()), Hub(HubConfig())
    connect(h1, "a")
    m1, m2 = attach_metrics(h1), attach_metrics(h2)
    assert m1 is not m2 and m1.registry is not m2.registry
    assert attach_metrics(h1) is m1
    assert val(scrape(h1), "companion_hub_connections_accepted_total") == 1
    assert val(scrape(h2), "companion_hub_connections_accepted_total") == 0


def test_adapter_link_state_and_reconnects() -> None:
    hub = Hub(HubConfig())
    hub.set_adapter_state(
        "companion",
        "connecting",
        "",
        satellite={"state": "connecting", "detail": ""},
        http={"state": "off", "detail": ""},
    )
    counters = hub.adapter_counters("companion")
    counters.reconnects += 2
    counters.link_drops += 3
    s = scrape(hub)
    labels = {"adapter": "companion"}
    assert (
        val(s, "companion_hub_adapter_link_state", link="adapter", state="connecting", **labels)
        == 1
    )
    assert (
        val(s, "companion_hub_adapter_link_state", link="adapter", state="connected", **labels) == 0
    )
    assert (
        val(s, "companion_hub_adapter_link_state", link="satellite", state="connecting", **labels)
        == 1
    )
    assert val(s, "companion_hub_adapter_link_state", link="http", state="off", **labels) == 1
    assert val(s, "companion_hub_adapter_reconnects_total", **labels) == 2
    assert val(s, "companion_hub_adapter_link_drops_total", **labels) == 3
    hub.set_adapter_state(
        "companion", "connected", "", satellite={"state": "connected"}, http={"state": "off"}
    )
    s = scrape(hub)
    assert (
        val(s, "companion_hub_adapter_link_state", link="adapter", state="connected", **labels) == 1
    )
    assert (
        val(s, "companion_hub_adapter_link_state", link="satellite", state="connecting", **labels)
        == 0
    )


async def test_command_latency_by_target_and_outcome() -> None:
    hub = Hub(HubConfig())
    attach_metrics(hub)
    owner = connect(hub, "dev")
    caller = connect(hub, "ui")
    caller.send({"op": "command", "id": "c1", "target": "app.dev", "name": "go", "params": {}})
    (cmd,) = [m for m in owner.out() if m["op"] == "command"]
    owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": {"done": True}})
    caller.send({"op": "command", "id": "c2", "target": "app.dev", "name": "go", "timeout_ms": 20})
    await asyncio.sleep(0.1)  # the second one times out
    results = [m for m in caller.out() if m["op"] == "result"]
    assert [m["ok"] for m in results] == [True, False]
    s = scrape(hub)
    ok = val(s, "companion_hub_command_duration_seconds_count", target="app.dev", outcome="ok")
    timeout = val(
        s, "companion_hub_command_duration_seconds_count", target="app.dev", outcome="timeout"
    )
    assert (ok, timeout) == (1, 1)
    await hub.shutdown()


async def test_event_log_backlog_and_durable_lag(tmp_path: Any) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path)))
    hub.start_background()
    try:
        w = connect(hub, "w")
        for i in range(10):
            w.send({"op": "set", "id": i, "key": f"app.w.k{i}", "value": i})
        s = scrape(hub)
        assert val(s, "companion_hub_eventlog_pending") >= 0
        assert 0 <= val(s, "companion_hub_eventlog_durable_lag") <= hub.store.rev
        assert val(s, "companion_hub_eventlog_rows_appended_total") > 0
        assert hub.event_log is not None
        for _ in range(200):
            if hub.event_log.durable_rev >= hub.store.rev and not hub.event_log.pending:
                break
            await asyncio.sleep(0.01)
        s = scrape(hub)
        assert val(s, "companion_hub_eventlog_durable_lag") == 0
        assert val(s, "companion_hub_eventlog_pending") == 0
    finally:
        await hub.shutdown()


def test_no_event_log_no_event_log_metrics() -> None:
    s = scrape(Hub(HubConfig()))
    assert not [k for k in s if k[0].startswith("companion_hub_eventlog")]


# --- the route and the lag probe -------------------------------------------------------------


async def test_metrics_route_and_lag_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_mod, "LAG_PROBE_INTERVAL", 0.01)
    hub = Hub(HubConfig())
    app = web.Application()
    metrics = add_metrics_route(app, hub)
    assert isinstance(metrics, HubMetrics) and hub.metrics is metrics
    async with TestClient(TestServer(app)) as client:
        probes = [i for i in hub.supervisor.items if i.name == "metrics-loop-lag"]
        assert len(probes) == 1 and probes[0].running
        await asyncio.sleep(0.1)
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert "# TYPE companion_hub_connections gauge" in text
    assert "# TYPE companion_hub_event_loop_lag_seconds histogram" in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    (count,) = [
        s.value
        for s in fams["companion_hub_event_loop_lag_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert count >= 1
    assert not probes[0].running  # the app's cleanup stopped it
    await hub.shutdown()


async def test_the_hub_shutdown_cancels_the_probe() -> None:
    hub = Hub(HubConfig())
    metrics = attach_metrics(hub)
    metrics.start()
    metrics.start()  # idempotent
    probes = [i for i in hub.supervisor.items if i.name == "metrics-loop-lag"]
    assert len(probes) == 1 and probes[0].running
    await hub.shutdown()
    assert not probes[0].running


async def test_start_background_starts_an_attached_probe() -> None:
    hub = Hub(HubConfig())
    attach_metrics(hub)
    hub.start_background()
    assert any(i.name == "metrics-loop-lag" and i.running for i in hub.supervisor.items)
    await hub.shutdown()


async def test_closed_state_is_not_a_connection() -> None:
    hub = Hub(HubConfig())
    p = connect(hub, "a")
    p.s.connection_lost(1000)
    assert p.s.state is SessionState.CLOSED
    s = scrape(hub)
    assert ("companion_hub_connections", (("state", "closed"),)) not in s
