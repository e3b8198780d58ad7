"""MQTT bridge: hub change -> retained MQTT message, against a plain broker in the same run.

A real Mosquitto (``tests/mosquitto.py``, no persistence, pinned to the clients' CPU),
a hub in its own process (pinned to the hub's CPU, event log in a temp data dir, one
``[[mqtt]]`` bridge with its defaults: prefix ``companion-hub``, publish ``**``, QoS 1,
100 in flight), a ``bench`` writer client (the SDK's ``connect_raw``) and MQTT client
processes (paho-mqtt subscribers, MQTT 5, QoS 1; the reference publisher is aiomqtt,
the bridge's own client library, used the bridge's way: QoS 1 retained, 100 in flight).

1. **Latency at 2,000 changes/s**: the writer sets ``app.bench.k<i % 1000>`` paced
   (every 1 ms what is due, one frame), values ``{"text","n","t"}`` with
   ``t = time.time_ns()``; a subscriber to ``companion-hub/state/app/bench/#`` records
   arrival minus ``t``. Reference: a publisher process publishes the same payloads
   (same size) at the same pace to ``ref/bench/k<i % 1000>``, same subscriber.
2. **Highest sustained change rate** over 1,000 keys: steps of ~5 s at 2k, 5k, 10k,
   20k, 40k changes/s and "max" (a window of 200 unacknowledged sets). A live
   subscriber counts what the bridge published and when each key's final value
   arrived ("convergence" = that minus the writer's last acknowledgement); then a
   fresh subscriber fetches the retained tree and checks every key's final value.
   Reference: the publisher at its max rate (batches of 100 pipelined, as the bridge).
3. **Republish after a reconnect**: 10,000 and 100,000 keys in the hub, all published;
   Mosquitto is restarted on the same port (its retained store is lost) and a
   subscriber, connecting as soon as the broker listens, times the bridge's
   ``online`` status and the moment it has every key again.

    .venv/bin/python -m bench.mqtt [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import msgspec
import psutil

from .common import (
    CLIENT_CPUS,
    HUB_CPUS,
    ROOT,
    CpuMeter,
    Histogram,
    HubProcess,
    cam_value,
    hub_token,
    markdown_table,
    median,
    pipe_recv,
    preload,
    run_loop,
    save,
    wait_quiet,
    watchdog,
    workers,
)

NAME = "mqtt"
N_KEYS = 1000
PREFIX = "companion-hub"
HUB_FILTER = f"{PREFIX}/state/app/bench/#"
HUB_TOPIC = f"{PREFIX}/state/app/bench/k"  # + index
REF_FILTER = "ref/bench/#"
REF_TOPIC = "ref/bench/k"
STATUS_TOPIC = f"{PREFIX}/status"
IN_FLIGHT = 100  # the bridge's default max_in_flight (and its batch size)


# --- the hub, with one MQTT bridge (its own process) ------------------------------------


async def _serve(broker_port: int, data_dir: str | None) -> None:
    from companion_hub.adapters.mqtt.bridge import MqttBridge
    from companion_hub.adapters.mqtt.config import MqttConfig
    from companion_hub.hub import HubConfig
    from companion_hub.server.app import HubServer

    from .hub_proc import LagProbe, _emit

    server = HubServer(
        HubConfig(host="127.0.0.1", port=0, data_dir=data_dir),
        mqtt=[MqttConfig(host="127.0.0.1", port=broker_port)],
    )
    probe = LagProbe(server.hub)

    def report() -> None:
        out = probe.report()
        bridges = [a for a in server.adapters if isinstance(a, MqttBridge)]
        if bridges:
            b = bridges[0]
            out["bridge"] = {
                "published": b.published,
                "marked": b.outbox.marked,
                "coalesced": b.outbox.coalesced,
                "dirty": len(b.outbox),
                "state": b._status.state.value,
                "link_drops": b.counters.link_drops,
                "reconnects": b.counters.reconnects,
            }
        _emit(out)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, probe.reset)
    loop.add_signal_handler(signal.SIGUSR2, report)
    await server.start()
    task = loop.create_task(probe.run())
    _emit({"event": "ready", "port": server.port, "pid": os.getpid(), "loop": "uvloop"})
    try:
        await stop.wait()
    finally:
        report()
        task.cancel()
        await server.stop()


def _serve_cli(broker_port: int, data_dir: str | None) -> None:
    from companion_hub.logs import setup_logging

    setup_logging("warning", "json")
    run_loop(_serve(broker_port, data_dir))


class BridgeHub(HubProcess):
    """``bench.mqtt --serve-hub``: ``bench.hub_proc``'s hub (same probe, same signals)
    plus one MQTT bridge; its lag report carries the bridge's counters."""

    def __init__(self, broker_port: int) -> None:
        self._tmp = tempfile.mkdtemp(prefix="bench-mqtt-data-")
        super().__init__(data_dir=self._tmp)
        self.broker_port = broker_port
        self.pending_warnings = 0  # aiomqtt's "There are N pending publish calls." lines

    def start(self, timeout: float = 20.0) -> BridgeHub:
        self._launch(
            [
                "-m",
                "bench.mqtt",
                "--serve-hub",
                "--broker-port",
                str(self.broker_port),
                "--data-dir",
                self._tmp,
            ],
            timeout,
        )
        return self

    def bridge(self) -> dict[str, Any]:
        return dict(self.lag_report().get("bridge") or {})

    def wait_idle(self, timeout: float) -> dict[str, Any]:
        """Until the bridge is connected with nothing dirty (everything published)."""
        deadline = time.monotonic() + timeout
        while True:
            b = self.bridge()
            if (
                b.get("state") == "connected" and b.get("dirty") == 0
            ) or time.monotonic() > deadline:
                return b
            time.sleep(0.05)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._log.flush()
            with open(self._log.name, "rb") as f:
                self.pending_warnings = f.read().count(b"pending publish calls")
        super().stop()
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)


def _broker(port: int | None = None) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.mosquitto import Mosquitto

    return Mosquitto(port=port)


def _pin_broker(mosq: Any) -> None:
    if CLIENT_CPUS and mosq.proc is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(mosq.proc.pid, CLIENT_CPUS)


def _cpu(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


# --- the hub writer (a WebSocket client process) ------------------------------------------


class _Res(msgspec.Struct):
    version: int = 0


class _WMsg(msgspec.Struct):
    op: str
    id: int | str | None = None
    ok: bool = True
    result: _Res | None = None
    error: Any = None


def writer_worker(conn: Any, url: str) -> None:
    run_loop(_writer_main(conn, url))


async def _writer_main(conn: Any, url: str) -> None:
    import aiohttp

    from companion_hub.client import ConnectionClosed, connect_raw

    from .common import encode

    one = msgspec.json.Decoder(_WMsg).decode
    many = msgspec.json.Decoder(list[_WMsg]).decode
    keys = [f"app.bench.k{i}" for i in range(N_KEYS)]
    async with aiohttp.ClientSession() as session:
        hub = await connect_raw(url, "bench", session=session, token=hub_token())
        st = {"acked": 0, "errors": 0, "last_ack": 0.0}
        room = asyncio.Event()
        all_acked = asyncio.Event()
        sent_box = [0]

        async def read() -> None:
            while True:
                try:
                    data = await hub.receive_frame(None)
                except ConnectionClosed:
                    return
                now = time.monotonic()
                for m in many(data) if data[:1] == b"[" else [one(data)]:
                    if m.op != "result":
                        continue
                    if m.ok:
                        st["acked"] += 1
                    else:
                        st["errors"] += 1
                st["last_ack"] = now
                room.set()
                if st["acked"] + st["errors"] >= sent_box[0]:
                    all_acked.set()

        reader = asyncio.create_task(read())
        seq = 0  # global: every value ever written is unique (n)
        conn.send(("ready", 0))
        while True:
            cmd = await pipe_recv(conn)
            if cmd[0] == "close":
                break
            if cmd[0] == "preload":
                n = cmd[1]
                ks = [f"app.bench.k{i}" for i in range(n)]
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                dt = await preload(hub, ks, cam_value)
                reader = asyncio.create_task(read())
                conn.send(("preloaded", {"seconds": dt, "rate": n / dt}))
                continue
            _, mode, rate, duration, t0 = cmd
            st.update(acked=0, errors=0, last_ack=0.0)
            first = seq
            final: dict[int, int] = {}
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            t_start = time.monotonic()
            end = t_start + duration
            frames = 0

            def sets(upto: int, start: int, final: dict[int, int] = final) -> list[dict[str, Any]]:
                """The set messages ``start .. upto - 1`` (one timestamp: one frame)."""
                tns = time.time_ns()
                out = []
                for n in range(start, upto):
                    i = n % N_KEYS
                    out.append(
                        {
                            "op": "set",
                            "id": n,
                            "key": keys[i],
                            "value": {"text": f"CAM {i}", "n": n, "t": tns},
                        }
                    )
                    final[i] = n
                return out

            if mode == "window":  # as fast as the hub accepts: 200 unacknowledged sets
                window, per_frame = 200, 50
                while True:
                    inflight = (seq - first) - st["acked"] - st["errors"]
                    if inflight >= window:
                        room.clear()
                        await room.wait()
                        continue
                    if time.monotonic() >= end:
                        break
                    k = min(window - inflight, per_frame)
                    msgs = sets(seq + k, seq)
                    seq += k
                    sent_box[0] = seq - first
                    await hub.send_frame(encode(msgs[0] if k == 1 else msgs))
                    frames += 1
            else:  # paced: every 1 ms, what is due, in one frame
                while True:
                    now = time.monotonic()
                    if now >= end:
                        break
                    due = first + int((now - t_start) * rate)
                    if due > seq:
                        msgs = sets(due, seq)
                        seq = due
                        sent_box[0] = seq - first
                        await hub.send_frame(encode(msgs[0] if len(msgs) == 1 else msgs))
                        frames += 1
                    await asyncio.sleep(0.001)
            t_stop = time.monotonic()
            sent_box[0] = seq - first
            if st["acked"] + st["errors"] < seq - first:
                all_acked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_acked.wait(), 60)
            conn.send(
                (
                    "report",
                    {
                        "sent": seq - first,
                        "frames": frames,
                        "t_start": t_start,
                        "t_stop_sending": t_stop,
                        "final": final,
                        **st,
                    },
                )
            )
        reader.cancel()
        await hub.close()


# --- MQTT clients (paho subscribers, aiomqtt publisher): a client process -----------------


class _V(msgspec.Struct):
    n: int = -1
    t: int = 0


class _State(msgspec.Struct):
    value: _V | None = None


_decode_state = msgspec.json.Decoder(_State).decode


def _ref_payload(i: int, n: int, tns: int) -> bytes:
    """The same bytes a state message of the bridge carries for the writer's value."""
    value = b'{"text":"CAM %d","n":%d,"t":%d}' % (i, n, tns)
    return b'{"value":%b,"version":%d,"rev":%d,"stale":false,"ts":%d,"owner":"bench"}' % (
        value,
        n // N_KEYS + 1,
        n + 1000,
        tns // 1_000_000,
    )


def _paho(name: str) -> Any:
    import paho.mqtt.client as mqtt

    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bench-{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}",
        protocol=mqtt.MQTTv5,
    )


def _subscribe(client: Any, filters: list[str]) -> None:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
    if not done.wait(10):
        raise TimeoutError("no SUBACK")


class _Sub:
    """A live subscriber: latency of every non-retained message, the last ``n`` and its
    arrival time per topic, counts."""

    def __init__(self, host: str, port: int, filters: list[str], warm_ns: int) -> None:
        self.lock = threading.Lock()
        self.reset(warm_ns)
        self.client = _paho("sub")
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        _subscribe(self.client, filters)

    def reset(self, warm_ns: int) -> None:
        self.warm_ns = warm_ns
        self.hist = Histogram()
        self.live = 0
        self.retained = 0
        self.recorded = 0
        self.last: dict[str, tuple[int, float]] = {}
        self.first_at = 0.0
        self.last_at = 0.0

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now_ns = time.time_ns()
        now = time.monotonic()
        try:
            v = _decode_state(msg.payload).value
        except msgspec.DecodeError:
            return
        if v is None:
            return
        if msg.retain:
            self.retained += 1
        else:
            self.live += 1
            if not self.first_at:
                self.first_at = now
            self.last_at = now
            if v.t >= self.warm_ns:
                self.hist.add((now_ns - v.t) / 1000.0)
                self.recorded += 1
        self.last[msg.topic] = (v.n, now)

    def wait_final(self, final: dict[str, int], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            last = dict(self.last)
            missing = [t for t, n in final.items() if last.get(t, (-1, 0.0))[0] != n]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        t_final = max((last[t][1] for t in final if t in last), default=0.0)
        return {
            "converged": not missing,
            "missing": len(missing),
            "t_final": t_final,
            "live": self.live,
            "retained": self.retained,
            "recorded": self.recorded,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "hist": self.hist.bins,
        }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _fetch(
    host: str, port: int, flt: str, expect: dict[str, int] | int, timeout: float
) -> dict[str, Any]:
    """A fresh subscriber: the retained messages under ``flt`` until it has every
    expected topic (a map topic -> final n, or a count), or 1 s without a message."""
    got: dict[str, int] = {}
    n_expect = expect if isinstance(expect, int) else len(expect)
    done = threading.Event()
    last_msg = [time.monotonic()]

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        last_msg[0] = time.monotonic()
        try:
            v = _decode_state(msg.payload).value
        except msgspec.DecodeError:
            return
        got[msg.topic] = -1 if v is None else v.n
        if len(got) >= n_expect:
            done.set()

    c = _paho("fetch")
    c.on_message = on_message
    t0 = time.monotonic()
    c.connect(host, port, keepalive=60)
    c.loop_start()
    try:
        _subscribe(c, [flt])
        deadline = t0 + timeout
        while not done.wait(0.05):
            now = time.monotonic()
            if now > deadline or now - last_msg[0] > 1.0:
                break
        t_all = time.monotonic() - t0 if done.is_set() else None
    finally:
        c.disconnect()
        c.loop_stop()
    out: dict[str, Any] = {"received": len(got), "seconds": t_all}
    if isinstance(expect, dict):
        wrong = [t for t, n in expect.items() if got.get(t) != n]
        out["wrong"] = len(wrong)
        out["correct"] = not wrong
        out["example_wrong"] = [(t, expect[t], got.get(t)) for t in wrong[:3]]
    else:
        out["correct"] = len(got) >= expect
    return out


def _watch(host: str, port: int, n_expect: int, timeout: float) -> dict[str, Any]:
    """Connect as soon as the broker listens (retry every 5 ms); time the bridge's
    ``online`` and the moment every one of ``n_expect`` bench keys has arrived."""
    got: set[str] = set()
    st: dict[str, Any] = {"t_online": None, "t_all": None, "retained": 0, "live": 0}
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        if msg.topic == STATUS_TOPIC:
            if msg.payload == b"online" and st["t_online"] is None:
                st["t_online"] = now
            return
        st["retained" if msg.retain else "live"] += 1
        got.add(msg.topic)
        if len(got) >= n_expect and st["t_all"] is None:
            st["t_all"] = now
            done.set()

    deadline = time.monotonic() + timeout
    while True:
        c = _paho("watch")
        c.on_message = on_message
        try:
            c.connect(host, port, keepalive=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    st["t_connect"] = time.monotonic()
    c.loop_start()
    try:
        _subscribe(c, [HUB_FILTER, STATUS_TOPIC])
        done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        c.disconnect()
        c.loop_stop()
    st["received"] = len(got)
    return st


async def _publish(
    host: str, port: int, mode: str, rate: int, duration: float, t0: float
) -> dict[str, Any]:
    """The reference publisher: aiomqtt, QoS 1 retained, 100 in flight. ``paced``: every
    1 ms what is due (each publish its own task); ``max``: as fast as it goes, a sliding
    window of 100 unacknowledged; ``gather``: batches of 100 (``asyncio.gather``), each
    acknowledged before the next: the old bridge's pattern (before its sliding window), without the hub."""
    import aiomqtt

    final: dict[int, int] = {}
    async with aiomqtt.Client(
        host,
        port,
        identifier=f"bench-ref-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=IN_FLIGHT,
        clean_start=True,
    ) as client:
        # aiomqtt logs a warning per publish beyond 10 pending; the plain reference
        # does not pay for that (the bridge does: see the README)
        client.pending_calls_threshold = 10**9
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        t_start = time.monotonic()
        end = t_start + duration
        seq = 0
        if mode == "gather":  # the bridge's pattern: a batch of 100, all acked, the next
            while time.monotonic() < end:
                tns = time.time_ns()
                batch = []
                for _ in range(IN_FLIGHT):
                    i = seq % N_KEYS
                    batch.append(
                        client.publish(
                            REF_TOPIC + str(i), _ref_payload(i, seq, tns), qos=1, retain=True
                        )
                    )
                    final[i] = seq
                    seq += 1
                t_stop = time.monotonic()
                await asyncio.gather(*batch)
            last_ack = time.monotonic()
        else:
            # paced: every 1 ms what is due; max: a sliding window of 100 in flight
            pending: set[asyncio.Task[None]] = set()
            room = asyncio.Semaphore(IN_FLIGHT)

            windowed = mode == "max"

            async def one(topic: str, payload: bytes) -> None:
                try:
                    await client.publish(topic, payload, qos=1, retain=True)
                finally:
                    if windowed:
                        room.release()

            while True:
                now = time.monotonic()
                if now >= end:
                    break
                due = int((now - t_start) * rate) if mode == "paced" else seq + 1
                tns = time.time_ns()
                while seq < due:
                    if windowed:
                        await room.acquire()
                    i = seq % N_KEYS
                    task = asyncio.ensure_future(one(REF_TOPIC + str(i), _ref_payload(i, seq, tns)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    final[i] = seq
                    seq += 1
                if mode == "paced":
                    await asyncio.sleep(0.001)
            t_stop = time.monotonic()
            if pending:
                await asyncio.gather(*pending)
            last_ack = time.monotonic()
    return {
        "sent": seq,
        "t_start": t_start,
        "t_stop_sending": t_stop,
        "last_ack": last_ack,
        "final": final,
    }


def mqtt_worker(conn: Any, host: str, port: int) -> None:
    """One MQTT client process, driven over its pipe (see the module docstring)."""
    sub: _Sub | None = None
    conn.send(("ready", 0))
    while True:
        cmd = conn.recv()
        op = cmd[0]
        try:
            if op == "close":
                break
            if op == "sub":
                if sub is not None:
                    sub.close()
                sub = _Sub(host, port, cmd[1], cmd[2])
                conn.send(("ok", None))
            elif op == "reset":
                assert sub is not None
                sub.reset(cmd[1])
                conn.send(("ok", None))
            elif op == "final":
                assert sub is not None
                conn.send(("ok", sub.wait_final(cmd[1], cmd[2])))
            elif op == "unsub":
                if sub is not None:
                    sub.close()
                    sub = None
                conn.send(("ok", None))
            elif op == "fetch":
                conn.send(("ok", _fetch(host, port, cmd[1], cmd[2], cmd[3])))
            elif op == "watch":
                conn.send(("ok", _watch(host, port, cmd[1], cmd[2])))
            elif op == "publish":
                conn.send(("ok", run_loop(_publish(host, port, *cmd[1:]))))
        except Exception as exc:  # report, do not hang the coordinator
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    if sub is not None:
        sub.close()


def _ask(w: Any, cmd: tuple[Any, ...], timeout: float) -> Any:
    w.send(cmd)
    tag, val = w.recv(timeout)
    if tag == "error":
        raise RuntimeError(f"{cmd[0]}: {val}")
    return val


# --- the workloads ---------------------------------------------------------------------------


def _lat_summary(rep: dict[str, Any], sent_measured: float) -> dict[str, Any]:
    h = Histogram()
    h.merge(rep["hist"])
    return {
        "samples": h.count,
        "sent_measured": round(sent_measured),
        "delivered_fraction": round(h.count / sent_measured, 4) if sent_measured else None,
        "p50_ms": h.quantile(0.5),
        "p90_ms": h.quantile(0.9),
        "p99_ms": h.quantile(0.99),
        "max_ms": h.quantile(1.0),
        "converged": rep["converged"],
    }


def latency_once(
    hub: BridgeHub,
    mosq: Any,
    writer: Any,
    sub: Any,
    pub: Any,
    *,
    which: str,
    rate: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    warm_ns = time.time_ns() + int((0.3 + warmup) * 1e9)
    t0 = time.monotonic() + 0.3
    flt, topic = (HUB_FILTER, HUB_TOPIC) if which == "hub" else (REF_FILTER, REF_TOPIC)
    _ask(sub, ("sub", [flt], warm_ns), 20)
    hub_cpu0, broker_cpu0 = hub.cpu_seconds(), _cpu(mosq.proc.pid)
    if which == "hub":
        hub.lag_reset()
        b0 = hub.bridge()
    meter = CpuMeter()
    if which == "hub":
        writer.send(("run", "paced", rate, duration, t0))
        _tag, wr = writer.recv(duration + 90)
    else:
        wr = _ask(pub, ("publish", "paced", rate, duration, t0), duration + 90)
    cpu = meter.stop()
    final = {topic + str(i): n for i, n in wr["final"].items()}
    rep = _ask(sub, ("final", final, 15.0), 60)
    _ask(sub, ("unsub",), 20)
    window = wr["t_stop_sending"] - wr["t_start"]
    out = _lat_summary(rep, wr["sent"] * (window - warmup) / window)
    out.update(
        {
            "sent": wr["sent"],
            "rate": round(wr["sent"] / window),
            "live_received": rep["live"],
            "hub_cpu_util": round((hub.cpu_seconds() - hub_cpu0) / window, 2),
            "broker_cpu_util": round((_cpu(mosq.proc.pid) - broker_cpu0) / window, 2),
            "cpu": cpu,
        }
    )
    if which == "hub":
        lag = hub.lag_report()
        b1 = lag.get("bridge") or {}
        out["hub_lag"] = {k: lag[k] for k in ("p50_ms", "p99_ms", "max_ms")}
        out["bridge_published"] = b1.get("published", 0) - b0.get("published", 0)
        out["bridge_coalesced"] = b1.get("coalesced", 0) - b0.get("coalesced", 0)
    return out


def step_once(
    hub: BridgeHub | None,
    mosq: Any,
    writer: Any,
    sub: Any,
    pub: Any,
    *,
    which: str,
    rate: int | None,
    duration: float,
    ref_mode: str = "max",
) -> dict[str, Any]:
    """One rate step: a live subscriber counts and times, then a fresh one checks."""
    flt, topic = (HUB_FILTER, HUB_TOPIC) if which == "hub" else (REF_FILTER, REF_TOPIC)
    _ask(sub, ("sub", [flt], 0), 20)
    t0 = time.monotonic() + 0.2
    broker_cpu0 = _cpu(mosq.proc.pid)
    if hub is not None:
        hub_cpu0 = hub.cpu_seconds()
        b0 = hub.bridge()
        writer.send(("run", "window" if rate is None else "paced", rate or 0, duration, t0))
        _tag, wr = writer.recv(duration + 120)
    else:
        wr = _ask(pub, ("publish", ref_mode, 0, duration, t0), duration + 120)
    final = {topic + str(i): n for i, n in wr["final"].items()}
    rep = _ask(sub, ("final", final, 20.0), 60)
    _ask(sub, ("unsub",), 20)
    t_end = time.monotonic()
    chk = _ask(pub, ("fetch", flt, final, 30.0), 60)
    send_window = wr["t_stop_sending"] - wr["t_start"]
    accept_window = max(wr["last_ack"], wr["t_stop_sending"]) - wr["t_start"]
    out: dict[str, Any] = {
        "target_rate": rate,
        "sent": wr["sent"],
        "accepted_rate": round(wr["sent"] / accept_window),
        "send_rate": round(wr["sent"] / send_window),
        # what the subscriber got while the step ran, per second of the step
        "received_rate": round(rep["live"] / accept_window),
        "delivered_fraction": round(rep["live"] / wr["sent"], 4),
        # from the last write: the hub's last acknowledgement; the publisher's last publish
        "convergence_ms": round(
            (rep["t_final"] - (wr["last_ack"] if hub else wr["t_stop_sending"])) * 1000, 1
        )
        if rep["converged"]
        else None,
        "live_converged": rep["converged"],
        "live_missing": rep["missing"],
        "final_correct": chk["correct"],
        "fetch": chk,
        "broker_cpu_util": round((_cpu(mosq.proc.pid) - broker_cpu0) / (t_end - wr["t_start"]), 2),
    }
    if hub is not None:
        b1 = hub.bridge()
        pub_n = b1.get("published", 0) - b0.get("published", 0)
        out["bridge_published"] = pub_n
        out["bridge_published_rate"] = round(pub_n / (t_end - wr["t_start"]))
        out["bridge_coalesced"] = b1.get("coalesced", 0) - b0.get("coalesced", 0)
        out["hub_cpu_util"] = round((hub.cpu_seconds() - hub_cpu0) / (t_end - wr["t_start"]), 2)
    out["sustained"] = bool(
        chk["correct"] and out["convergence_ms"] is not None and out["convergence_ms"] < 1000
    )
    return out


def round_rates(args: argparse.Namespace, rnd: int) -> dict[str, Any]:
    """Parts 1 and 2 on a fresh broker and a fresh hub."""
    out: dict[str, Any] = {"quiet_gate": wait_quiet(max_wait=10.0)}
    mosq = _broker()
    try:
        mosq.start()
        _pin_broker(mosq)
        with BridgeHub(mosq.port) as hub:
            hub.wait_idle(15)
            specs = [
                (writer_worker, (hub.ws_url,)),
                (mqtt_worker, (mosq.host, mosq.port)),
                (mqtt_worker, (mosq.host, mosq.port)),
            ]
            with workers(specs) as ws:
                writer, sub, pub = ws
                for w in ws:
                    assert w.recv(60)[0] == "ready"
                # 1. latency, hub and reference, alternating which goes first
                order = ["hub", "ref"] if rnd % 2 == 0 else ["ref", "hub"]
                lat = {}
                for which in order:
                    lat[which] = latency_once(
                        hub,
                        mosq,
                        writer,
                        sub,
                        pub,
                        which=which,
                        rate=args.rate,
                        duration=args.duration,
                        warmup=args.warmup,
                    )
                    r = lat[which]
                    print(
                        f"  [{rnd + 1}] latency {which}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                        f"max {r['max_ms']:.1f} ms, delivered {r['delivered_fraction'] * 100:.1f}%, "
                        f"hub cpu {r['hub_cpu_util']}, broker cpu {r['broker_cpu_util']}, "
                        f"others {r['cpu']['other_cores']}",
                        flush=True,
                    )
                out["latency"] = lat
                # 2. rate steps, then the reference at its max rate
                steps = []
                for rate in [*args.steps, None]:
                    s = step_once(
                        hub,
                        mosq,
                        writer,
                        sub,
                        pub,
                        which="hub",
                        rate=rate,
                        duration=args.step_duration,
                    )
                    steps.append(s)
                    print(
                        f"  [{rnd + 1}] step {rate or 'max'}: accepted {s['accepted_rate']:,}/s, "
                        f"bridge published {s['bridge_published_rate']:,}/s "
                        f"(subscriber got {s['received_rate']:,}/s, {s['delivered_fraction'] * 100:.0f}%), "
                        f"convergence {s['convergence_ms']} ms, final values correct {s['final_correct']} "
                        f"(fetch {s['fetch']['seconds']} s), hub cpu {s['hub_cpu_util']}, "
                        f"broker cpu {s['broker_cpu_util']}",
                        flush=True,
                    )
                out["steps"] = steps
                for mode in ("max", "gather"):
                    ref = step_once(
                        None,
                        mosq,
                        writer,
                        sub,
                        pub,
                        which="ref",
                        rate=None,
                        duration=args.step_duration,
                        ref_mode=mode,
                    )
                    print(
                        f"  [{rnd + 1}] reference {mode}: published {ref['accepted_rate']:,}/s, "
                        f"subscriber got {ref['received_rate']:,}/s, convergence {ref['convergence_ms']} ms, "
                        f"correct {ref['final_correct']}, broker cpu {ref['broker_cpu_util']}",
                        flush=True,
                    )
                    out["ref_" + mode] = ref
                writer.send(("close",))
        out["aiomqtt_warnings"] = hub.pending_warnings
    finally:
        mosq.close()
    return out


def republish_once(n_keys: int) -> dict[str, Any]:
    """Part 3: ``n_keys`` exported keys, broker restarted, time until all are back."""
    mosq = _broker()
    try:
        mosq.start()
        _pin_broker(mosq)
        with BridgeHub(mosq.port) as hub:
            specs = [(writer_worker, (hub.ws_url,)), (mqtt_worker, (mosq.host, mosq.port))]
            with workers(specs) as ws:
                writer, watcher = ws
                for w in ws:
                    assert w.recv(60)[0] == "ready"
                writer.send(("preload", n_keys))
                _, pre = writer.recv(120)
                t0 = time.monotonic()
                b = hub.wait_idle(120)
                first_publish = time.monotonic() - t0
                assert b.get("dirty") == 0, b
                b0 = hub.bridge()
                cpu0, mcpu0 = hub.cpu_seconds(), 0.0
                mosq.stop()
                watcher.send(("watch", n_keys, 120.0))
                mosq.start()
                t_back = time.monotonic()
                _pin_broker(mosq)
                mcpu0 = _cpu(mosq.proc.pid)
                tag, w = watcher.recv(180)
                if tag == "error":
                    raise RuntimeError(w)
                b1 = hub.wait_idle(60)
                hub_cpu = hub.cpu_seconds() - cpu0
                broker_cpu = _cpu(mosq.proc.pid) - mcpu0
                # a fresh subscriber: is every key retained (and how long does it take
                # a client to read them)?
                chk = _ask(watcher, ("fetch", HUB_FILTER, n_keys, 120.0), 180)
                writer.send(("close",))
    finally:
        mosq.close()
    t_all = w["t_all"]
    t_on = w["t_online"]
    back = min(t_back, w["t_connect"])
    res = {
        "keys": n_keys,
        "preload_rate": round(pre["rate"]),
        "first_publish_s": round(first_publish, 3),
        "broker_back_to_online_s": round(t_on - back, 3) if t_on else None,
        "online_to_all_s": round(t_all - t_on, 3) if t_all and t_on else None,
        "broker_back_to_all_s": round(t_all - back, 3) if t_all else None,
        "all_received": w["received"] >= n_keys,
        "watch": w,
        "republished": b1.get("published", 0) - b0.get("published", 0),
        "hub_cpu_s": round(hub_cpu, 2),
        "broker_cpu_s": round(broker_cpu, 2),
        "fresh_fetch": chk,
    }
    if t_all and t_on:
        res["republish_rate"] = round(n_keys / (t_all - t_on))
    return res


# --- the whole run, the table -------------------------------------------------------------


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    rounds = [round_rates(args, i) for i in range(args.rounds)]
    repub: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.republish_rounds or args.rounds):
        for n in args.republish:
            r = republish_once(n)
            repub.setdefault(str(n), []).append(r)
            print(
                f"  [{i + 1}] republish {n:,} keys: first publish {r['first_publish_s']} s; "
                f"after restart: broker back -> bridge online {r['broker_back_to_online_s']} s, "
                f"online -> all keys {r['online_to_all_s']} s ({r.get('republish_rate', 0):,}/s), "
                f"all {r['all_received']}, republished {r['republished']:,}, hub cpu {r['hub_cpu_s']} s, "
                f"broker cpu {r['broker_cpu_s']} s; fresh fetch {r['fresh_fetch']['seconds']} s",
                flush=True,
            )

    def med(xs: list[Any]) -> float | None:
        xs = [x for x in xs if x is not None]
        return round(median(xs), 3) if xs else None

    lat = {}
    for which in ("hub", "ref"):
        rs = [r["latency"][which] for r in rounds]
        lat[which] = {
            k: med([r[k] for r in rs])
            for k in (
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "max_ms",
                "delivered_fraction",
                "hub_cpu_util",
                "broker_cpu_util",
            )
        }
        lat[which]["max_of_runs_max_ms"] = max(r["max_ms"] for r in rs)
    lat["hub"]["lag_p99_ms"] = med([r["latency"]["hub"]["hub_lag"]["p99_ms"] for r in rounds])
    steps = []
    for j, rate in enumerate([*args.steps, None]):
        rs = [r["steps"][j] for r in rounds]
        steps.append(
            {
                "target_rate": rate,
                "accepted_rate": med([r["accepted_rate"] for r in rs]),
                "bridge_published_rate": med([r["bridge_published_rate"] for r in rs]),
                "received_rate": med([r["received_rate"] for r in rs]),
                "delivered_fraction": med([r["delivered_fraction"] for r in rs]),
                "convergence_ms": med([r["convergence_ms"] for r in rs]),
                "convergence_max_ms": max((r["convergence_ms"] or 1e9) for r in rs),
                "all_correct": all(r["final_correct"] for r in rs),
                "sustained_all_rounds": all(r["sustained"] for r in rs),
                "hub_cpu_util": med([r["hub_cpu_util"] for r in rs]),
                "broker_cpu_util": med([r["broker_cpu_util"] for r in rs]),
            }
        )
    sustained = [s for s in steps if s["sustained_all_rounds"]]
    best = max(sustained, key=lambda s: s["accepted_rate"] or 0) if sustained else None

    def ref_sum(mode: str) -> dict[str, Any]:
        refs = [r["ref_" + mode] for r in rounds]
        return {
            "published_rate": med([r["accepted_rate"] for r in refs]),
            "received_rate": med([r["received_rate"] for r in refs]),
            "convergence_ms": med([r["convergence_ms"] for r in refs]),
            "all_correct": all(r["final_correct"] for r in refs),
            "broker_cpu_util": med([r["broker_cpu_util"] for r in refs]),
        }

    ref_max = ref_sum("max")
    ref_gather = ref_sum("gather")
    hub_warnings = [r.get("aiomqtt_warnings") for r in rounds]
    rep_sum = {}
    for n, rs in repub.items():
        rep_sum[n] = {
            k: med([r.get(k) for r in rs])
            for k in (
                "first_publish_s",
                "broker_back_to_online_s",
                "online_to_all_s",
                "broker_back_to_all_s",
                "republish_rate",
                "hub_cpu_s",
                "broker_cpu_s",
            )
        }
        rep_sum[n]["fresh_fetch_s"] = med([r["fresh_fetch"]["seconds"] for r in rs])
        rep_sum[n]["all_received"] = all(
            r["all_received"] and r["fresh_fetch"]["correct"] for r in rs
        )
    return {
        "params": {
            "rounds": args.rounds,
            "rate": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "keys": N_KEYS,
            "steps": args.steps,
            "step_duration_s": args.step_duration,
            "republish_keys": args.republish,
            "republish_rounds": args.republish_rounds or args.rounds,
            "quick": args.quick,
            "broker": "mosquitto (tests/mosquitto.py), no persistence, on the clients' CPU",
            "broker_cpus": sorted(CLIENT_CPUS),
            "hub_cpus": sorted(HUB_CPUS),
        },
        "latency": lat,
        "steps": steps,
        "highest_sustained": best,
        "ref_max": ref_max,
        "ref_gather": ref_gather,
        "aiomqtt_pending_warnings_per_round": hub_warnings,
        "republish": rep_sum,
        "rounds": rounds,
        "republish_runs": repub,
    }


def _n(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def detail_rows(r: dict[str, Any]) -> list[list[str]]:
    p = r["params"]
    lh, lr = r["latency"]["hub"], r["latency"]["ref"]
    rows = [
        [
            f"latency at {p['rate']:,} changes/s, 1,000 keys, p50 / p99 / max",
            f"{lh['p50_ms']:.2f} / {lh['p99_ms']:.2f} / {lh['max_ms']:.1f} ms "
            f"({lh['delivered_fraction'] * 100:.1f}% delivered; hub cpu {lh['hub_cpu_util']}, "
            f"loop lag p99 {lh['lag_p99_ms']} ms)",
            f"{lr['p50_ms']:.2f} / {lr['p99_ms']:.2f} / {lr['max_ms']:.1f} ms "
            f"({lr['delivered_fraction'] * 100:.1f}% delivered)",
            f"x{lh['p50_ms'] / lr['p50_ms']:.1f} / x{lh['p99_ms'] / lr['p99_ms']:.1f}"
            if lr["p50_ms"] and lr["p99_ms"]
            else "-",
        ]
    ]
    for s in r["steps"]:
        tr = "max (window 200)" if s["target_rate"] is None else f"{s['target_rate']:,}/s"
        rows.append(
            [
                f"step {tr}: accepted / bridge published / subscriber got, convergence, final values",
                f"{_n(s['accepted_rate'])}/s / {_n(s['bridge_published_rate'])}/s / "
                f"{_n(s['received_rate'])}/s ({_n((s['delivered_fraction'] or 0) * 100)}%), "
                f"{_n(s['convergence_ms'])} ms, {'all correct' if s['all_correct'] else '**wrong**'}"
                f"; hub cpu {s['hub_cpu_util']}",
                "",
                "",
            ]
        )
    best = r["highest_sustained"]
    rm = r["ref_max"]
    rows.append(
        [
            "highest sustained change rate (all final values correct, convergence < 1 s, every round)",
            "-"
            if best is None
            else f"{_n(best['accepted_rate'])}/s (step {'max' if best['target_rate'] is None else _n(best['target_rate'])})",
            f"publisher max {_n(rm['published_rate'])}/s, subscriber got {_n(rm['received_rate'])}/s, "
            f"convergence {_n(rm['convergence_ms'])} ms, {'all correct' if rm['all_correct'] else '**wrong**'}",
            "",
        ]
    )
    rg = r["ref_gather"]
    rows.append(
        [
            "reference with the old bridge's publish pattern (batches of 100 via asyncio.gather, each "
            "fully acknowledged before the next), no hub",
            "",
            f"publisher max {_n(rg['published_rate'])}/s, convergence {_n(rg['convergence_ms'])} ms, "
            f"{'all correct' if rg['all_correct'] else '**wrong**'}",
            "",
        ]
    )
    for n, s in r["republish"].items():
        rows.append(
            [
                f"republish {int(n):,} keys after a broker restart: broker back -> bridge online -> "
                "subscriber has every key",
                f"{_n(s['broker_back_to_all_s'], '.2f')} s (online after {_n(s['broker_back_to_online_s'], '.2f')} s, "
                f"then {_n(s['online_to_all_s'], '.2f')} s = {_n(s['republish_rate'])} keys/s; "
                f"hub cpu {s['hub_cpu_s']} s)" + ("" if s["all_received"] else " **keys missing**"),
                f"first publish {_n(s['first_publish_s'], '.2f')} s; a fresh subscriber reads them "
                f"in {_n(s['fresh_fetch_s'], '.2f')} s",
                "",
            ]
        )
    return rows


def rows(r: dict[str, Any]) -> list[list[str]]:
    """Rows of the README's main table (bench.run_all)."""
    lh, lr = r["latency"]["hub"], r["latency"]["ref"]
    best = r["highest_sustained"]
    rm = r["ref_max"]
    out = [
        [
            f"(j) MQTT: hub change -> MQTT subscriber at {r['params']['rate']:,} changes/s, p99 (p50)",
            f"{lh['p99_ms']:.1f} ms ({lh['p50_ms']:.1f} ms), {lh['delivered_fraction'] * 100:.0f}% delivered",
            "-",
            f"MQTT publisher -> subscriber {lr['p99_ms']:.1f} ms ({lr['p50_ms']:.1f} ms)",
            "-",
        ],
        [
            "(j) MQTT: highest sustained change rate, every final value retained, converged < 1 s",
            "-"
            if best is None
            else f"{_n(best['accepted_rate'])}/s (bridge published "
            f"{_n(best['bridge_published_rate'])} msgs/s)",
            "-",
            f"publisher at max {_n(rm['published_rate'])}/s",
            "-",
        ],
    ]
    for n, s in r["republish"].items():
        out.append(
            [
                f"(j) MQTT: republish {int(n):,} keys after a broker restart (broker back -> all retained)",
                f"{_n(s['broker_back_to_all_s'], '.2f')} s (bridge online {_n(s['broker_back_to_online_s'], '.2f')} s)",
                "-",
                "-",
                "-",
            ]
        )
    return out


def print_table(r: dict[str, Any]) -> None:
    header = [
        "MQTT bridge",
        "companion-hub -> bridge -> Mosquitto",
        "reference: publisher -> Mosquitto",
        "ratio",
    ]
    print(markdown_table(header, detail_rows(r)))


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[2000, 5000, 10000, 20000, 40000],
    )
    ap.add_argument("--step-duration", type=float, default=5.0)
    ap.add_argument(
        "--republish", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000]
    )
    ap.add_argument(
        "--republish-rounds", type=int, default=2, help="rounds of part 3 (0: --rounds)"
    )
    ap.add_argument("--serve-hub", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--broker-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_hub:
        _serve_cli(args.broker_port, args.data_dir)
        return None
    if args.quick:
        args.rounds = 1
        args.duration = 3.0
        args.step_duration = 1.5
        args.steps = [2000, 10000]
        args.republish = [10_000]
        args.republish_rounds = 1
    watchdog(
        60
        + args.rounds
        * (2 * (args.duration + 40) + (len(args.steps) + 2) * (args.step_duration + 60) + 300)
    )
    result = _bench(args)
    if not args.quick:
        save(NAME, result)
    else:
        save(NAME + "_quick", result)
    print()
    print_table(result)
    return result


if __name__ == "__main__":
    main()
