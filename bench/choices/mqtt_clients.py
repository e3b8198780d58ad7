"""MQTT client libraries for the bridge: aiomqtt vs gmqtt (vs amqtt), against a real Mosquitto.

Run (from the repository root, in a scratch venv that has the candidates):
    python -m bench.choices.mqtt_clients            (about 2-3 minutes on 2 cores)
    python bench/choices/mqtt_clients.py --help

One Mosquitto (tests/mosquitto.py) serves every run. Each run starts a fresh publisher
process; the orchestrator only spawns processes, clears the retained store between runs and
reads the results. Workloads, each 50,000 retained ~120-byte JSON payloads over 1,000 topics
(`bench/t/<i % 1000>`), at most 100 unacknowledged QoS 1 messages in flight:

  q1   QoS 1, no subscriber. Time from the first publish to the last PUBACK.
  q0   QoS 0, no subscriber. Time from the first publish to the PUBACK of one QoS 1
       "fence" message sent after the last one (Mosquitto handles one connection's packets
       in order, so the fence proves that the broker has processed all of them).
  e2e  QoS 1 with a subscriber process (plain paho-mqtt, thread loop, the same for every
       candidate) on `bench/t/#` at QoS 1. Time from the first publish until the subscriber
       has all 50,000 (time.monotonic() is system-wide, so the processes share a clock).

Publisher CPU is time.process_time() of the publisher process over the timed interval;
broker CPU is Mosquitto's utime+stime from /proc over the publisher process's life. Rounds
are interleaved (every variant once per workload per round, order rotated); tables show
medians. MQTT 5 features are verified by a probe per library (subscribe with no_local,
publish with response topic, correlation data and user properties, check what comes back).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata as im
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_MESSAGES = 50_000
N_TOPICS = 1_000
WINDOW = 100
RESULTS = ROOT / "bench" / "results" / "mqtt_clients.json"
DEFAULT_VARIANTS = "aiomqtt-workers,aiomqtt-tasks,aiomqtt-paho,gmqtt,amqtt"
ALL_VARIANTS = DEFAULT_VARIANTS + ",aiomqtt-gather"
WORKLOADS = ("q1", "q0", "e2e")

VARIANT_NOTES = {
    "aiomqtt-workers": "aiomqtt: 100 worker coroutines, each `await client.publish()` in turn",
    "aiomqtt-tasks": "aiomqtt: one task per publish, Semaphore(100) sliding window",
    "aiomqtt-gather": "aiomqtt: `asyncio.gather` of batches of 100 `client.publish()`",
    "aiomqtt-paho": "aiomqtt's paho client: `client._client.publish()` for all, paho "
    "max_inflight 100, await the last on_publish",
    "gmqtt": "gmqtt: sync `publish()`, Semaphore(100) released by a PersistentStorage "
    "subclass on PUBACK",
    "amqtt": "amqtt: 100 worker coroutines, each `await client.publish()` (MQTT 3.1.1)",
}

# Facts that cannot be read from the installed package. Release dates: PyPI upload dates of
# the first file of each release, looked up on 2026-12-02.
FACTS: dict[str, dict[str, Any]] = {
    "aiomqtt": {
        "dist": "aiomqtt",
        "model": "asyncio API over paho-mqtt; paho runs in the event loop (add_reader/"
        "add_writer), only connect() runs in an executor thread",
        "releases": "2.3.1 2025-03-31, 2.3.2 2025-04-08, 2.4.0 2025-05-03, 2.5.0 2026-01-04, "
        "2.5.1 2026-03-05; 3.0.0a1 (pre-release) 2026-04-02",
        "last_release": "2026-03-05 (2.5.1); 3.0.0a1 2026-04-02",
        "releases_24m": 6,
        "reconnect": "none built in: catch MqttError and re-enter the (reusable) context "
        "manager; re-subscribe yourself",
        "mqtt5": True,
    },
    "paho-mqtt": {
        "dist": "paho-mqtt",
        "last_release": "2026-11-04 (2.2.0); before that 2.1.0 2024-04-29",
    },
    "gmqtt": {
        "dist": "gmqtt",
        "model": "asyncio-native (asyncio Protocol)",
        "releases": "0.6.14 2024-01-22, 0.6.16 2024-05-02, 0.7.0 2024-11-22, 0.8.0 2026-10-08",
        "last_release": "2026-10-08 (0.8.0); before that 0.7.0 2024-11-22",
        "releases_24m": 1,
        "reconnect": "built in (reconnect_retries, reconnect_delay; unlimited by default); "
        "replays unacknowledged QoS 1/2 only if the broker kept the session, does not "
        "re-subscribe (do it in on_connect)",
        "mqtt5": True,
    },
    "amqtt": {
        "dist": "amqtt",
        "model": "asyncio-native (client and broker)",
        "releases": "0.11.2 2025-07-13, 0.11.3 2025-08-12, 0.11.4 2026-07-29, "
        "0.12.0 2026-08-12, 0.12.1 2026-09-16",
        "last_release": "2026-09-16 (0.12.1)",
        "releases_24m": 7,
        "reconnect": "built in (auto_reconnect, reconnect_retries)",
        "mqtt5": False,
    },
}


def library_of(variant: str) -> str:
    return variant.split("-", 1)[0]


# --------------------------------------------------------------------------- payloads


def make_messages(n: int) -> tuple[list[str], list[bytes]]:
    """Topics and ~120-byte JSON payloads; the sequence number sits at bytes 7..15."""
    topics = [f"bench/t/{k}" for k in range(N_TOPICS)]
    payloads = [
        b'{"seq":%08d,"key":"app.tally.cam%03d","value":{"text":"CAM %d","bg":"#ff0000",'
        b'"n":%d},"rev":%d,"src":"bench-mqtt"}' % (i, i % N_TOPICS, i % 100, i % 1000, 1000 + i)
        for i in range(n)
    ]
    return topics, payloads


# --------------------------------------------------------------------------- publishers


class Timer:
    def __init__(self) -> None:
        self.t0 = self.t1 = self.c0 = self.c1 = 0.0

    def start(self) -> None:
        self.c0 = time.process_time()
        self.t0 = time.monotonic()

    def stop(self) -> None:
        self.t1 = time.monotonic()
        self.c1 = time.process_time()


async def pub_aiomqtt(variant: str, host: str, port: int, qos: int, n: int, tm: Timer) -> int:
    import aiomqtt

    topics, payloads = make_messages(n)
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"bench-{variant}-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=WINDOW,  # paho's default is 20: it would cap the window
    )
    # aiomqtt logs a WARNING on every call made while more than 10 calls are pending.
    client.pending_calls_threshold = 10 * WINDOW
    published = 0
    async with client:
        tm.start()
        if variant == "aiomqtt-workers":

            async def worker(k: int) -> None:
                nonlocal published
                for i in range(k, n, WINDOW):
                    await client.publish(topics[i % N_TOPICS], payloads[i], qos, True)
                    published += 1

            await asyncio.gather(*(worker(k) for k in range(WINDOW)))
        elif variant == "aiomqtt-tasks":
            sem = asyncio.Semaphore(WINDOW)
            failures: list[BaseException] = []

            async def one(i: int) -> None:
                nonlocal published
                try:
                    await client.publish(topics[i % N_TOPICS], payloads[i], qos, True)
                    published += 1
                except Exception as exc:
                    failures.append(exc)
                finally:
                    sem.release()

            tasks: set[asyncio.Task[None]] = set()
            for i in range(n):
                await sem.acquire()
                t = asyncio.create_task(one(i))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            if failures:
                raise failures[0]
        elif variant == "aiomqtt-gather":
            for b in range(0, n, WINDOW):
                await asyncio.gather(
                    *(
                        client.publish(topics[i % N_TOPICS], payloads[i], qos, True)
                        for i in range(b, min(b + WINDOW, n))
                    )
                )
                published += min(WINDOW, n - b)
        elif variant == "aiomqtt-paho":
            paho = client._client
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            original = paho.on_publish
            acked = 0

            def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
                nonlocal acked
                acked += 1
                if acked == n and not done.done():
                    done.set_result(None)
                original(c, u, mid, rc, props)

            paho.on_publish = on_publish
            for i in range(n):
                info = paho.publish(topics[i % N_TOPICS], payloads[i], qos, True)
                if info.rc != 0:
                    raise RuntimeError(f"paho publish rc={info.rc}")
            await asyncio.wait_for(done, 120)
            published = acked
        else:
            raise ValueError(variant)
        if qos == 0:
            await client.publish("bench/fence", b"", 1, False)
        tm.stop()
    return published


async def pub_gmqtt(variant: str, host: str, port: int, qos: int, n: int, tm: Timer) -> int:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50
    from gmqtt.storage import PersistentStorage

    topics, payloads = make_messages(n)
    window = asyncio.Semaphore(WINDOW)

    class WindowStorage(PersistentStorage):
        """gmqtt has no PUBACK callback or per-message future: the in-flight store is the
        only place that learns about PUBACKs."""

        def remove_message_by_mid(self, mid: int) -> None:
            if mid in self._messages:
                window.release()
            super().remove_message_by_mid(mid)

    storage = WindowStorage()
    client = gmqtt.Client(f"bench-{variant}-{os.getpid()}", persistent_storage=storage)
    client.set_config({"reconnect_retries": 0})
    await client.connect(host, port, version=MQTTv50)
    tm.start()
    for i in range(n):
        if qos:
            await window.acquire()
        client.publish(topics[i % N_TOPICS], payloads[i], qos=qos, retain=True)
    if qos == 0:
        await window.acquire()
        client.publish("bench/fence", b"", qos=1, retain=False)
    await storage.wait_empty()
    tm.stop()
    await client.disconnect()
    return n


async def pub_amqtt(variant: str, host: str, port: int, qos: int, n: int, tm: Timer) -> int:
    import logging

    from amqtt.client import MQTTClient

    logging.getLogger("amqtt").setLevel(logging.ERROR)
    topics, payloads = make_messages(n)
    client = MQTTClient(f"bench-{variant}-{os.getpid()}", config={"auto_reconnect": False})
    await client.connect(f"mqtt://{host}:{port}/")
    published = 0
    tm.start()

    async def worker(k: int) -> None:
        nonlocal published
        for i in range(k, n, WINDOW):
            await client.publish(topics[i % N_TOPICS], payloads[i], qos=qos, retain=True)
            published += 1

    await asyncio.gather(*(worker(k) for k in range(WINDOW)))
    if qos == 0:
        await client.publish("bench/fence", b"", qos=1, retain=False)
    tm.stop()
    await client.disconnect()
    return published


def role_publish(args: argparse.Namespace) -> None:
    import resource

    lib = library_of(args.variant)
    fn = {"aiomqtt": pub_aiomqtt, "gmqtt": pub_gmqtt, "amqtt": pub_amqtt}[lib]
    tm = Timer()
    published = asyncio.run(fn(args.variant, args.host, args.port, args.qos, args.n, tm))
    out = {
        "published": published,
        "t_first": tm.t0,
        "t_end": tm.t1,
        "wall": tm.t1 - tm.t0,
        "cpu": tm.c1 - tm.c0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- subscriber


def role_subscribe(args: argparse.Namespace) -> None:
    import paho.mqtt.client as mqtt

    n = args.n
    done = threading.Event()
    subscribed = threading.Event()
    last = [-1] * N_TOPICS
    st = {"count": 0, "disorder": 0, "t_last": 0.0}

    def on_message(c: Any, u: Any, msg: Any) -> None:
        if msg.retain:  # retained copies sent on subscribe: not part of this run
            return
        seq = int(msg.payload[7:15])
        k = seq % N_TOPICS
        if seq < last[k]:
            st["disorder"] += 1
        last[k] = seq
        st["count"] += 1
        if st["count"] == n:
            st["t_last"] = time.monotonic()
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(args.host, args.port)
    c.loop_start()
    c.subscribe("bench/t/#", 1)
    if not subscribed.wait(10):
        raise SystemExit("subscriber: no SUBACK")
    print("READY", flush=True)
    done.wait(args.timeout)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({**st, "complete": done.is_set()}), flush=True)


# --------------------------------------------------------------------------- MQTT 5 probe


async def probe_aiomqtt(host: str, port: int, tag: str) -> dict[str, bool]:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    got: dict[str, Any] = {}
    async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(f"probe/{tag}/a", options=SubscribeOptions(qos=1, noLocal=True))
        await c.subscribe(f"probe/{tag}/b", options=SubscribeOptions(qos=1))
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "probe/reply"
        props.CorrelationData = b"corr-1"
        props.UserProperty = [("k", "v")]
        for t in ("a", "b"):
            await c.publish(f"probe/{tag}/{t}", b"x", qos=1, properties=props)

        async def read() -> None:
            async for m in c.messages:
                got[str(m.topic).rsplit("/", 1)[1]] = m.properties

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(read(), 1.0)
    p = got.get("b")
    return {
        "response_topic": getattr(p, "ResponseTopic", None) == "probe/reply",
        "correlation_data": getattr(p, "CorrelationData", None) == b"corr-1",
        "user_properties": ("k", "v") in (getattr(p, "UserProperty", None) or []),
        "no_local": "b" in got and "a" not in got,
    }


async def probe_gmqtt(host: str, port: int, tag: str) -> dict[str, bool]:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    got: dict[str, Any] = {}

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        got[topic.rsplit("/", 1)[1]] = properties
        return 0

    c = gmqtt.Client(f"probe-{tag}")
    c.on_message = on_message
    await c.connect(host, port, version=MQTTv50)
    c.subscribe(f"probe/{tag}/a", qos=1, no_local=True)
    c.subscribe(f"probe/{tag}/b", qos=1)
    await asyncio.sleep(0.3)  # no SUBACK future in gmqtt (only the on_subscribe callback)
    for t in ("a", "b"):
        c.publish(
            f"probe/{tag}/{t}",
            b"x",
            qos=1,
            response_topic="probe/reply",
            correlation_data=b"corr-1",
            user_property=[("k", "v")],
        )
    await asyncio.sleep(1.0)
    await c.disconnect()
    p = got.get("b") or {}
    return {
        "response_topic": p.get("response_topic") == ["probe/reply"],
        "correlation_data": p.get("correlation_data") == [b"corr-1"],
        "user_properties": ("k", "v") in (p.get("user_property") or []),
        "no_local": "b" in got and "a" not in got,
    }


def role_probe(args: argparse.Namespace) -> None:
    lib = args.variant
    if lib == "amqtt":
        keys = ("response_topic", "correlation_data", "user_properties", "no_local")
        res: dict[str, Any] = dict.fromkeys(keys, False)
        res["note"] = "MQTT 3.1.1 only"
    else:
        fn = {"aiomqtt": probe_aiomqtt, "gmqtt": probe_gmqtt}[lib]
        try:
            res = asyncio.run(fn(args.host, args.port, f"{lib}{os.getpid()}"))
        except Exception as exc:
            res = {"error": repr(exc)}
    print(json.dumps(res), flush=True)


# --------------------------------------------------------------------------- orchestrator


def child(role: str, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *extra]


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clear_retained(host: str, port: int) -> None:
    """Delete the retained messages of the last run (empty retained payloads), QoS 1."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.max_inflight_messages_set(WINDOW)
    c.connect(host, port)
    c.loop_start()
    infos = [c.publish(f"bench/t/{k}", b"", 1, True) for k in range(N_TOPICS)]
    for info in infos:
        info.wait_for_publish(30)
    c.disconnect()
    c.loop_stop()


def run_one(broker: Any, variant: str, workload: str, n: int) -> dict[str, Any]:
    host, port = broker.host, broker.port
    qos = 0 if workload == "q0" else 1
    sub = None
    if workload == "e2e":
        sub = subprocess.Popen(
            child("subscribe", "--host", host, "--port", str(port), "--n", str(n)),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sub.stdout is not None
        line = sub.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"subscriber did not start: {line!r}")
    b0 = proc_cpu(broker.proc.pid)
    args = ["--variant", variant, "--host", host, "--port", str(port)]
    pub = subprocess.run(
        child("publish", *args, "--qos", str(qos), "--n", str(n)),
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    b1 = proc_cpu(broker.proc.pid)
    if pub.returncode != 0:
        if sub is not None:
            sub.kill()
        raise RuntimeError(f"{variant}/{workload} publisher failed:\n{pub.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(pub.stdout.strip().splitlines()[-1])
    res["broker_cpu"] = b1 - b0
    res["rate"] = n / res["wall"]
    res["cpu_per_10k"] = res["cpu"] / n * 10_000
    if sub is not None:
        out, _ = sub.communicate(timeout=120)
        s = json.loads(out.strip().splitlines()[-1])
        res["sub"] = s
        res["e2e"] = s["t_last"] - res["t_first"] if s["complete"] else None
    clear_retained(host, port)
    return res


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def library_facts(lib: str, probe: dict[str, Any]) -> dict[str, Any]:
    f = dict(FACTS[lib])
    md = im.metadata(f["dist"])
    f["version"] = md["Version"]
    f["license"] = md.get("License-Expression") or md.get("License") or ""
    if not f["license"]:
        f["license"] = "; ".join(
            c.split(" :: ")[-1] for c in md.get_all("Classifier") or [] if "License" in c
        )
    files = im.files(f["dist"]) or []
    f["py_typed"] = any(str(p).endswith("py.typed") for p in files)
    f["probe"] = probe
    if lib == "aiomqtt":
        f["paho_version"] = im.version("paho-mqtt")
    return f


def fmt_int(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(summary: dict[str, Any], facts: dict[str, Any], meta: dict[str, Any]) -> str:
    r = meta["rounds"]
    lines = [
        f"#### Publish {meta['n']:,} retained ~{meta['payload_bytes']} B messages over "
        f"{N_TOPICS:,} topics, at most {WINDOW} in flight, median of {r} interleaved rounds",
        "",
        "| variant | QoS 1 msgs/s | QoS 1 CPU s / 10k | QoS 0 msgs/s | QoS 0 CPU s / 10k "
        "| e2e QoS 1 s (msgs/s) | e2e pub CPU s / 10k | broker CPU s / 10k (QoS 1) "
        "| pub peak RSS MB | QoS 1 msgs/s min..max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nan = {"rate": None, "rate_min": None, "rate_max": None, "cpu_per_10k": float("nan")}
    nan |= {"broker_cpu_per_10k": float("nan"), "peak_rss_mb": float("nan"), "e2e_s": None}
    for v, s in summary.items():
        q1, q0, ee = (s.get(w, nan) for w in WORKLOADS)
        e2e = ee["e2e_s"]
        e2e_txt = "-" if e2e is None else f"{e2e:.2f} ({meta['n'] / e2e:,.0f})"
        lines.append(
            f"| {v} | {fmt_int(q1['rate'])} | {q1['cpu_per_10k']:.3f} "
            f"| {fmt_int(q0['rate'])} | {q0['cpu_per_10k']:.3f} | {e2e_txt} "
            f"| {ee['cpu_per_10k']:.3f} | {q1['broker_cpu_per_10k']:.3f} "
            f"| {q1['peak_rss_mb']:.0f} "
            f"| {fmt_int(q1['rate_min'])}..{fmt_int(q1['rate_max'])} |"
        )
    lines += ["", "Variants:", ""]
    lines += [f"* `{v}`: {VARIANT_NOTES[v]}" for v in summary]
    lines += [
        "",
        "#### Libraries",
        "",
        "| library | version | API model | MQTT 5: response topic / correlation data / "
        "user properties / no_local (probe) | last release | releases in the last 24 months "
        "| py.typed | license | reconnect |",
        "|---|---|---|---|---|---:|---|---|---|",
    ]

    def yn(x: Any) -> str:
        return "yes" if x is True else "no" if x is False else "?"

    for lib, f in facts.items():
        p = f["probe"]
        if "error" in p:
            mq = f"probe failed: {p['error']}"
        elif not f["mqtt5"]:
            mq = "no (MQTT 3.1.1 only)"
        else:
            mq = " / ".join(
                yn(p.get(k))
                for k in ("response_topic", "correlation_data", "user_properties", "no_local")
            )
        ver = f["version"] + (f" (paho-mqtt {f['paho_version']})" if "paho_version" in f else "")
        lines.append(
            f"| {lib} | {ver} | {f['model']} | {mq} | {f['last_release']} "
            f"| {f['releases_24m']} | {yn(f['py_typed'])} | {f['license']} | {f['reconnect']} |"
        )
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> None:
    try:
        import pytest  # noqa: F401  (tests.mosquitto imports it at module level)
    except ImportError:
        sys.modules["pytest"] = types.ModuleType("pytest")
    from tests.mosquitto import Mosquitto

    variants = [v for v in args.variants.split(",") if v]
    workloads = [w for w in args.workloads.split(",") if w]
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with Mosquitto() as broker:
        broker_version = subprocess.run(
            [broker.binary, "-h"], check=False, capture_output=True, text=True
        ).stdout.splitlines()[0]
        probes: dict[str, Any] = {}
        for lib in dict.fromkeys(library_of(v) for v in variants):
            p = subprocess.run(
                child("probe", "--variant", lib, "--host", broker.host, "--port", str(broker.port)),
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            probes[lib] = (
                json.loads(p.stdout.strip().splitlines()[-1])
                if p.returncode == 0 and p.stdout.strip()
                else {"error": p.stderr[-300:]}
            )
            print(f"probe {lib}: {probes[lib]}", file=sys.stderr)
        clear_retained(broker.host, broker.port)
        for rnd in range(args.rounds):
            for wl in workloads:
                k = rnd % len(variants)
                for v in variants[k:] + variants[:k]:
                    res = run_one(broker, v, wl, args.n)
                    res.update(round=rnd, variant=v, workload=wl)
                    runs.append(res)
                    extra = ""
                    if "sub" in res:
                        s = res["sub"]
                        extra = f" e2e={res['e2e']} got={s['count']} disorder={s['disorder']}"
                    print(
                        f"round {rnd} {wl:3} {v:16} {res['rate']:9,.0f} msgs/s "
                        f"cpu/10k={res['cpu_per_10k']:.3f} broker={res['broker_cpu']:.2f}s"
                        f"{extra} [{time.monotonic() - started:.0f} s]",
                        file=sys.stderr,
                        flush=True,
                    )
    summary: dict[str, Any] = {}
    for v in variants:
        summary[v] = {}
        for wl in workloads:
            rs = [r for r in runs if r["variant"] == v and r["workload"] == wl]
            rates = [r["rate"] for r in rs]
            summary[v][wl] = {
                "rate": med(rates),
                "rate_min": min(rates),
                "rate_max": max(rates),
                "cpu_per_10k": med([r["cpu_per_10k"] for r in rs]),
                "broker_cpu_per_10k": med([r["broker_cpu"] / args.n * 10_000 for r in rs]),
                "peak_rss_mb": med([r["peak_rss_mb"] for r in rs]),
            }
            if wl == "e2e":
                e2es = [r["e2e"] for r in rs]
                summary[v][wl]["e2e_s"] = None if any(x is None for x in e2es) else med(e2es)
                summary[v][wl]["disorder"] = sum(r["sub"]["disorder"] for r in rs)
                summary[v][wl]["complete"] = all(r["sub"]["complete"] for r in rs)
    facts = {lib: library_facts(lib, probes[lib]) for lib in probes}
    meta = {
        "n": args.n,
        "topics": N_TOPICS,
        "window": WINDOW,
        "payload_bytes": round(statistics.mean(len(p) for p in make_messages(1000)[1])),
        "rounds": args.rounds,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "broker": broker_version,
        "date": time.strftime("%Y-%m-%d"),
        "duration_s": round(time.monotonic() - started, 1),
    }
    table = render(summary, facts, meta)
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {"meta": meta, "summary": summary, "libraries": facts, "runs": runs}, indent=1
            )
            + "\n"
        )
        print(f"\nwrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--role", default="orchestrate", choices=["orchestrate", "publish", "subscribe", "probe"]
    )
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=N_MESSAGES)
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON results")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--qos", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=90.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    {
        "orchestrate": orchestrate,
        "publish": role_publish,
        "subscribe": role_subscribe,
        "probe": role_probe,
    }[args.role](args)


if __name__ == "__main__":
    main()
