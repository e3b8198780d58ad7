"""Prometheus metrics of one hub (docs/metrics.md lists every metric).

The hot path never touches ``prometheus_client``: the hub, its sessions and their
delivery queues keep plain integer counters (``SessionCounters``, the queues'
``deltas_sent``/``coalesced``, ``AdapterCounters``, the event log's ``LogStats``),
and :class:`HubCollector` reads them when Prometheus scrapes. Only what happens once
per command (its latency) or a few times a second (the event-loop lag probe) goes
into ``prometheus_client`` histograms directly.

Each hub has its own :class:`~prometheus_client.CollectorRegistry` (several hubs can
run in one process, as in the tests), with the process collector on it.

Wiring: :func:`add_metrics_route` adds ``GET /metrics`` to an aiohttp application and
runs the event-loop lag probe while the application runs (under the hub's
supervisor, so the hub's shutdown cancels it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .adapters.companion.status import LinkState
from .protocol import messages as m
from .protocol.session import SessionState

if TYPE_CHECKING:
    from .core.commands import InFlight, Outcome
    from .hub import Hub
    from .supervisor import Supervised

PREFIX = "companion_hub"
# how often the event-loop lag probe sleeps (its overshoot is the lag)
LAG_PROBE_INTERVAL = 0.25
COMMAND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_LINK_STATES = [s.value for s in LinkState]


def _op_name(t: type) -> str:
    if t is m.BadMessage:
        return "invalid"
    cfg = getattr(t, "__struct_config__", None)
    tag = getattr(cfg, "tag", None)
    return tag if isinstance(tag, str) else t.__name__.lower()


class HubCollector(Collector):
    """Reads the hub's plain counters and gauges at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        c = hub.session_counters
        yield from self._connections(hub)
        ops = CounterMetricFamily(
            f"{PREFIX}_messages_in",
            "Protocol messages received from clients, by op (hello included).",
            labels=["op"],
        )
        for t, n in sorted(c.messages_in.items(), key=lambda kv: _op_name(kv[0])):
            ops.add_metric([_op_name(t)], n)
        yield ops
        yield CounterMetricFamily(
            f"{PREFIX}_frames_in", "WebSocket text frames received.", value=c.frames_in
        )
        yield CounterMetricFamily(
            f"{PREFIX}_frames_out", "WebSocket text frames sent (batches).", value=c.frames_out
        )
        yield CounterMetricFamily(
            f"{PREFIX}_messages_out",
            "Protocol messages sent (replies, deltas, snapshot chunks, events...).",
            value=c.messages_out,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_bytes_out", "Bytes of text frames sent.", value=c.bytes_out
        )

        # deltas: folded totals of closed sessions plus the live queues
        sent = c.deltas_sent
        coalesced = c.deltas_coalesced
        depth_sum = depth_max = pending_sum = stalled = 0
        for s in list(c.live):
            q = s.queue
            sent += q.deltas_sent
            coalesced += q.coalesced
            depth = len(q)
            depth_sum += depth
            depth_max = max(depth_max, depth)
            pending_sum += len(q.pending)
            if s.stalled:
                stalled += 1
        yield CounterMetricFamily(f"{PREFIX}_deltas_sent", "Deltas sent to clients.", value=sent)
        yield CounterMetricFamily(
            f"{PREFIX}_deltas_coalesced",
            "Pending deltas replaced by a newer change to the same key before being sent.",
            value=coalesced,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth_sum",
            "Messages waiting in the delivery queues of all connections.",
            value=depth_sum,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth_max",
            "Messages waiting in the fullest delivery queue.",
            value=depth_max,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_pending_deltas",
            "Coalescing (not yet sealed) deltas waiting, over all connections.",
            value=pending_sum,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_window_stalls",
            "Times a connection had deltas waiting while its delivery window was full.",
            value=c.window_stalls,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_window_stalled_connections",
            "Connections whose delivery window is full while deltas wait.",
            value=stalled,
        )
        yield from self._adapters(hub)
        yield from self._event_log(hub)
        yield GaugeMetricFamily(
            f"{PREFIX}_store_revision", "The store's current revision.", value=hub.store.rev
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_commands_in_flight",
            "Commands routed to an owner and not finished.",
            value=hub.router.in_flight(),
        )

    @staticmethod
    def _connections(hub: Hub) -> Iterator[Metric]:
        c = hub.session_counters
        by_state = dict.fromkeys((s.value for s in SessionState if s is not SessionState.CLOSED), 0)
        for s in list(c.live):
            if s.state.value in by_state:
                by_state[s.state.value] += 1
        g = GaugeMetricFamily(
            f"{PREFIX}_connections",
            "Client connections now, by protocol state.",
            labels=["state"],
        )
        for state, n in by_state.items():
            g.add_metric([state], n)
        yield g
        yield CounterMetricFamily(
            f"{PREFIX}_connections_accepted",
            "WebSocket connections accepted (sessions started).",
            value=c.opened,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_clients", "Welcomed clients (live sessions).", value=len(hub.sessions)
        )

    @staticmethod
    def _adapters(hub: Hub) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            f"{PREFIX}_adapter_link_state",
            "1 for an adapter link's current state, 0 for the others "
            "(link: adapter (overall), satellite, http).",
            labels=["adapter", "link", "state"],
        )
        for name, links in sorted(hub.adapter_links.items()):
            for link, current in links.items():
                for state in _LINK_STATES:
                    g.add_metric([name, link, state], 1.0 if state == current else 0.0)
        yield g
        rc = CounterMetricFamily(
            f"{PREFIX}_adapter_reconnects",
            "Times an adapter's link (Satellite, an MQTT broker) came back after a drop.",
            labels=["adapter"],
        )
        drops = CounterMetricFamily(
            f"{PREFIX}_adapter_link_drops",
            "Times an adapter's link (Satellite, an MQTT broker) went down after being up.",
            labels=["adapter"],
        )
        for name, ac in sorted(hub.adapter_stats.items()):
            rc.add_metric([name], ac.reconnects)
            drops.add_metric([name], ac.link_drops)
        yield rc
        yield drops

    @staticmethod
    def _event_log(hub: Hub) -> Iterator[Metric]:
        el = hub.event_log
        if el is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_eventlog_pending",
            "Event log rows not yet committed (the backlog of the writer thread).",
            value=el.pending,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_eventlog_durable_lag",
            "Revisions committed in memory but not yet on disk (store rev - durable rev).",
            value=max(0, hub.store.rev - el.durable_rev),
        )
        st = el.stats
        yield CounterMetricFamily(
            f"{PREFIX}_eventlog_rows_appended", "Rows queued for the event log.", value=st.appended
        )
        yield CounterMetricFamily(
            f"{PREFIX}_eventlog_rows_written", "Rows committed to the event log.", value=st.written
        )
        yield CounterMetricFamily(
            f"{PREFIX}_eventlog_write_errors",
            "Failed event log batch commits (retried).",
            value=st.errors,
        )


class HubMetrics:
    """One hub's registry, collector, histograms and lag probe."""

    def __init__(self, hub: Hub, *, process: bool = True) -> None:
        self.hub = hub
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(hub))
        if process:
            ProcessCollector(registry=self.registry)
        self.command_seconds = Histogram(
            f"{PREFIX}_command_duration_seconds",
            "Time from routing a command to its outcome, by target namespace and outcome "
            "(ok or the error code).",
            ["target", "outcome"],
            buckets=COMMAND_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds",
            f"How late the event loop woke a {LAG_PROBE_INTERVAL} s sleep.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.last_lag = 0.0
        self._probe: Supervised | None = None
        hub.command_observer = self.observe_command

    def observe_command(self, cmd: InFlight, outcome: Outcome, seconds: float) -> None:
        if outcome.ok:
            label = "ok"
        else:
            err = outcome.error
            label = "failed" if err is None else str(err.code.value).lower()
        self.command_seconds.labels(cmd.target, label).observe(max(0.0, seconds))

    def generate(self) -> bytes:
        return generate_latest(self.registry)

    # --- the event-loop lag probe -------------------------------------------------------

    def start(self) -> None:
        """Start the lag probe under the hub's supervisor (idempotent; needs a running
        loop). ``Hub.shutdown`` (through its supervisor) or :meth:`stop` ends it."""
        if self._probe is not None and self._probe.running:
            return
        self._probe = self.hub.supervisor.spawn("metrics-loop-lag", self._lag_loop)

    async def stop(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.task is None:
            return
        probe.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe.task

    async def _lag_loop(self) -> None:
        interval = LAG_PROBE_INTERVAL
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - t0 - interval)
            self.last_lag = lag
            self.loop_lag.observe(lag)


def attach_metrics(hub: Hub) -> HubMetrics:
    """The hub's metrics (created once, kept in ``hub.metrics``)."""
    existing = hub.metrics
    if isinstance(existing, HubMetrics):
        return existing
    metrics = HubMetrics(hub)
    hub.metrics = metrics
    return metrics


METRICS_KEY: web.AppKey[HubMetrics] = web.AppKey("metrics", HubMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format, version 0.0.4 (prometheus_client's
    CONTENT_TYPE_LATEST says 1.0.0 since 0.22; our names and labels are all legacy
    names, so the body is the same)."""
    metrics = request.app[METRICS_KEY]
    body = metrics.generate()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
    return resp


def add_metrics_route(app: web.Application, hub: Hub) -> HubMetrics:
    """Add ``GET /metrics`` for ``hub`` to ``app``, and run the lag probe while the
    application runs (started on the app's startup, stopped on its cleanup; the hub's
    shutdown stops it as well)."""
    metrics = attach_metrics(hub)
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", metrics_handler)

    async def on_startup(_app: web.Application) -> None:
        metrics.start()

    async def on_cleanup(_app: web.Application) -> None:
        await metrics.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return metrics
