"""(b) with the event log against Mosquitto 2.0.11: the same workload, machine and run.

Interleaved round by round, every run on a fresh server pinned to the hub's CPUs
(``HUB_CPUS``), every client process pinned to the clients' CPUs (``CLIENT_CPUS``):

1. **hub**: ``bench.fanout.run_once`` with ``data_dir`` (a temp dir: the event log on,
   as ``companion-hub serve`` runs it): one writer, a window of 200 unacknowledged
   ``set``s packed up to 50 a frame, 1,000 keys round-robin, 100 subscribers to ``**``
   in 4 processes; accepted writes/s and convergence (last ack -> every subscriber has
   every key's final version).
2. **Mosquitto** (``tests/mosquitto.py``'s broker: the Debian binary, its config, no
   persistence): one publisher process pipelining QoS 1 *retained* PUBLISHes (the
   hub's keys are retained state) with the same sliding window (200 unacknowledged,
   packed up to 50 per socket write), the same payload bytes as the hub writer's
   values (``{"text":"CAM i","bg":"#ff0000","n":seq}``) on 1,000 topics
   ``app/writer/btn/0000``... round-robin, for the same duration; 100 subscriber
   connections subscribed to ``#`` in 4 processes (25 each, as fanout.py spreads
   its subscribers), at QoS 1 (each gets every message, acknowledged: MQTT does not
   coalesce) and, as an extra row, at QoS 0 (plain delivery). Accepted rate = PUBACKs /
   (last PUBACK - first send); convergence = last PUBACK -> every subscriber has every
   topic's final payload.

The MQTT clients are minimal MQTT 3.1.1 clients on asyncio (uvloop) written for this
bench, the counterpart of the hub bench's subscribers (which read whole frames and
decode them typed, not through the SDK's dicts): a protocol parses PUBLISH packets
straight from the bytes received, keeps topic -> (payload, arrival time), and sends
the PUBACKs of one read in one write. paho-mqtt (``bench.mqtt``'s subscribers, one
thread per connection) would make the Python clients, not the broker, the limit.

    .venv/bin/python -m bench.mosquitto [--rounds 3] [--quick] [--no-qos0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from . import fanout
from .common import (
    CLIENT_CPUS,
    HUB_CPUS,
    ROOT,
    CpuMeter,
    markdown_table,
    median,
    pipe_recv,
    run_loop,
    save,
    table_row,
    wait_quiet,
    watchdog,
    workers,
)

NAME = "mosquitto"
TARGET_RATIO = 7.0  # issue 13: the hub with its log at least x7 Mosquitto's rate
TOPIC = "app/writer/btn/%04d"  # as long as the hub's keys app.writer.btn.0000
BIN_S = 0.1
MAX_BINS = 1200


# --- the broker ---------------------------------------------------------------------------


def _broker(extra: list[str]) -> Any:
    """``tests/mosquitto.py``'s broker, with ``extra`` configuration lines appended."""
    sys.path.insert(0, str(ROOT))
    from tests.mosquitto import Mosquitto

    class Broker(Mosquitto):  # type: ignore[misc]
        def _write_config(self) -> Any:
            path = super()._write_config()
            if extra:
                path.write_text(path.read_text() + "".join(line + "\n" for line in extra))
            return path

    return Broker()


def broker_version() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.mosquitto import mosquitto_binary

    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("mosquitto is not installed (Debian: apt-get install mosquitto)")
    out = subprocess.run([binary, "-h"], check=False, capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def _cpu(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


# --- minimal MQTT 3.1.1 clients -------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _connect(client_id: str) -> bytes:
    # protocol MQTT level 4 (3.1.1), clean session, keep-alive 0 (no pings)
    return _packet(0x10, _s(b"MQTT") + b"\x04\x02\x00\x00" + _s(client_id.encode()))


DISCONNECT = b"\xe0\x00"


class _Proto(asyncio.Protocol):
    """Packet framing; PUBLISH, PUBACK, CONNACK and SUBACK, each counted or handled."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.buf = b""
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[int] = loop.create_future()
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for f in (self.connack, self.suback):
            if not f.done():
                f.set_exception(ConnectionError(f"connection lost: {exc}"))
                f.exception()  # retrieved: an awaiter still gets it, nobody else logs it

    def control(self, kind: int, body: bytes) -> None:
        if kind == 2:
            self.connack.set_result(body[1])
        elif kind == 9:
            self.suback.set_result(body[-1])


class _SubProto(_Proto):
    """A subscriber: topic -> (payload, monotonic arrival) of its last message."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.last: dict[bytes, tuple[bytes, float]] = {}
        self.n = 0
        self.bins = [0] * MAX_BINS
        self.t0 = 0.0

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf + data if self.buf else data
        size = len(buf)
        i = 0
        acks = []
        n = 0
        last = self.last
        while size - i >= 2:
            b0 = buf[i]
            c = buf[i + 1]
            if c < 128:
                rl, j = c, i + 2
            else:
                rl, mult, j = c & 127, 128, i + 2
                while True:
                    if j >= size:
                        rl = -1
                        break
                    c = buf[j]
                    j += 1
                    rl += (c & 127) * mult
                    if c < 128:
                        break
                    mult *= 128
                if rl < 0:
                    break
            end = j + rl
            if end > size:
                break
            if b0 >> 4 == 3:  # PUBLISH
                k = j + 2 + ((buf[j] << 8) | buf[j + 1])
                topic = buf[j + 2 : k]
                if b0 & 6:
                    acks.append(b"\x40\x02" + buf[k : k + 2])
                    k += 2
                last[topic] = (buf[k:end], now)
                n += 1
            else:
                self.control(b0 >> 4, buf[j:end])
            i = end
        self.buf = buf[i:] if i < size else b""
        if acks:
            self.transport.write(b"".join(acks))
        if n:
            self.n += n
            if self.t0:
                b = int((now - self.t0) / BIN_S)
                if 0 <= b < MAX_BINS:
                    self.bins[b] += n


class _PubProto(_Proto):
    """The publisher's side: counts PUBACKs, times the last one, wakes the sender."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = 0
        self.last_ack = 0.0
        self.room = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        size = len(buf)
        i = 0
        acked = 0
        while size - i >= 2:
            end = i + 2 + buf[i + 1]  # every packet the publisher gets is short
            if end > size:
                break
            if buf[i] >> 4 == 4:
                acked += 1
            else:
                self.control(buf[i] >> 4, buf[i + 2 : end])
            i = end
        self.buf = buf[i:] if i < size else b""
        if acked:
            self.acked += acked
            self.last_ack = time.monotonic()
            self.room.set()


async def _open(host: str, port: int, proto: _Proto, client_id: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: proto, host, port)
    proto.transport.write(_connect(client_id))
    rc = await asyncio.wait_for(proto.connack, 10)
    if rc != 0:
        raise RuntimeError(f"{client_id}: CONNACK {rc}")


# --- subscriber processes ---------------------------------------------------------------------


def sub_worker(conn: Any, host: str, port: int, first: int, count: int, qos: int) -> None:
    run_loop(_sub_main(conn, host, port, first, count, qos))


async def _sub_main(conn: Any, host: str, port: int, first: int, count: int, qos: int) -> None:
    subs: list[_SubProto] = []
    for i in range(first, first + count):
        s = _SubProto(f"sub{i:03d}")
        await _open(host, port, s, f"bench-{s.name}-{os.getpid()}")
        s.transport.write(_packet(0x82, b"\x00\x01" + _s(b"#") + bytes([qos])))
        granted = await asyncio.wait_for(s.suback, 10)
        if granted != qos:
            raise RuntimeError(f"{s.name}: SUBACK granted {granted}, asked {qos}")
        subs.append(s)
    conn.send(("ready", count))
    cmd, t0 = await pipe_recv(conn)
    assert cmd == "go"
    for s in subs:
        s.t0 = t0
    cmd, final, timeout = await pipe_recv(conn)
    assert cmd == "final"
    final = {t.encode(): p for t, p in final.items()}
    deadline = time.monotonic() + timeout
    pending = list(subs)
    converged: dict[str, float] = {}
    while pending and time.monotonic() < deadline:
        still = []
        for s in pending:
            last = s.last
            if all(last.get(t, (None,))[0] == p for t, p in final.items()):
                converged[s.name] = max(last[t][1] for t in final)
            else:
                still.append(s)
        pending = still
        if pending:
            await asyncio.sleep(0.005)
    report = [
        {
            "name": s.name,
            "received": s.n,
            "bins": s.bins,
            "converged_at": converged.get(s.name),
            "lost": s.lost,
            "missing": 0
            if s.name in converged
            else sum(1 for t, p in final.items() if s.last.get(t, (None,))[0] != p),
        }
        for s in subs
    ]
    for s in subs:
        if not s.lost:
            s.transport.write(DISCONNECT)
            s.transport.close()
    conn.send(("report", report))


# --- the publisher process --------------------------------------------------------------------


def pub_worker(conn: Any, host: str, port: int, n_topics: int, params: dict[str, Any]) -> None:
    run_loop(_pub_main(conn, host, port, n_topics, params))


async def _pub_main(conn: Any, host: str, port: int, n_topics: int, params: dict[str, Any]) -> None:
    p = _PubProto()
    await _open(host, port, p, f"bench-pub-{os.getpid()}")
    topics = [_s((TOPIC % i).encode()) for i in range(n_topics)]
    first = 0x33 if params["retain"] else 0x32  # PUBLISH, QoS 1 (+ retain)
    window, per_frame, duration = params["window"], params["per_frame"], params["duration"]
    final: dict[int, bytes] = {}
    conn.send(("ready", 0))
    cmd, t0 = await pipe_recv(conn)
    assert cmd == "go"
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    t_start = time.monotonic()
    end = t_start + duration
    seq = 0
    writes = 0
    max_inflight = 0
    write = p.transport.write
    while True:
        inflight = seq - p.acked
        max_inflight = max(max_inflight, inflight)
        if inflight >= window:
            p.room.clear()
            await p.room.wait()
            if time.monotonic() >= end:
                break
            continue
        if time.monotonic() >= end:
            break
        parts = []
        for _ in range(min(window - inflight, per_frame)):
            i = seq % n_topics
            payload = b'{"text":"CAM %d","bg":"#ff0000","n":%d}' % (seq % 1000, seq)
            body = topics[i] + (seq % 65535 + 1).to_bytes(2, "big") + payload
            parts.append(bytes([first]) + _varint(len(body)) + body)
            final[i] = payload
            seq += 1
        write(b"".join(parts))
        writes += 1
        if p.lost:
            raise RuntimeError("publisher: connection lost")
        await asyncio.sleep(0)  # let the acknowledgements in, as the hub writer's awaits do
    t_stop = time.monotonic()
    deadline = t_stop + 60
    while p.acked < seq and time.monotonic() < deadline and not p.lost:
        p.room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.room.wait(), 1.0)
    conn.send(
        (
            "report",
            {
                "sent": seq,
                "acked": p.acked,
                "writes": writes,
                "t_start": t_start,
                "t_stop_sending": t_stop,
                "last_ack": p.last_ack,
                "max_inflight": max_inflight,
                "final": {(TOPIC % i): pl for i, pl in final.items()},
            },
        )
    )
    await pipe_recv(conn)  # ("close",)
    if not p.lost:
        write(DISCONNECT)
        p.transport.close()


# --- one run of each side ---------------------------------------------------------------------


def mosquitto_once(
    *,
    qos: int,
    subs: int,
    procs: int,
    keys: int,
    duration: float,
    window: int,
    per_frame: int,
    retain: bool,
    extra_conf: list[str],
    conv_timeout: float,
) -> dict[str, Any]:
    """One run on a fresh broker pinned to ``HUB_CPUS``."""
    quiet = wait_quiet()
    broker = _broker(extra_conf)
    try:
        broker.start()
        if HUB_CPUS:
            os.sched_setaffinity(broker.proc.pid, HUB_CPUS)
        pid = broker.proc.pid
        params = {"duration": duration, "window": window, "per_frame": per_frame, "retain": retain}
        specs: list[Any] = []
        first = 0
        for n in fanout._spread(subs, procs):
            specs.append((sub_worker, (broker.host, broker.port, first, n, qos)))
            first += n
        specs.append((pub_worker, (broker.host, broker.port, keys, params)))
        with workers(specs) as ws:
            sub_ws, pub = ws[:-1], ws[-1]
            for w in ws:
                tag, _ = w.recv(60)
                assert tag == "ready", tag
            t0 = time.monotonic() + 0.3
            for w in ws:
                w.send(("go", t0))
            time.sleep(max(0.0, t0 - time.monotonic()))
            cpu0 = _cpu(pid)
            meter = CpuMeter()
            _, wr = pub.recv(duration + 90)
            noise = meter.stop()
            broker_cpu = _cpu(pid) - cpu0
            for w in sub_ws:
                w.send(("final", wr["final"], conv_timeout))
            reports = [s for w in sub_ws for s in w.recv(conv_timeout + 30)[1]]
            t_done = time.monotonic()
            broker_cpu_all = _cpu(pid) - cpu0
            rss = psutil.Process(pid).memory_info().rss
            pub.send(("close",))
        log = broker.log_tail(100_000)
    finally:
        broker.close()
    write_s = wr["last_ack"] - wr["t_start"]
    last_bin = int((wr["last_ack"] - t0) / BIN_S)
    delivered = sum(sum(s["bins"][: last_bin + 1]) for s in reports)
    received = sum(s["received"] for s in reports)
    conv = [s["converged_at"] for s in reports]
    ok = all(c is not None for c in conv)
    conv_ms = (max(conv) - wr["last_ack"]) * 1000 if ok and conv else None
    return {
        "qos": qos,
        "retain": retain,
        "sent": wr["sent"],
        "accepted": wr["acked"],
        "writes": wr["writes"],
        "write_s": round(write_s, 3),
        "msgs_per_s": round(wr["acked"] / write_s),
        "publisher_max_inflight": wr["max_inflight"],
        "delivered_while_writing_per_s": round(delivered / write_s),
        "delivered_while_writing_fraction": round(delivered / (wr["acked"] * subs), 4),
        "received_total": received,
        "received_fraction": round(received / (wr["acked"] * subs), 4),
        "all_converged": ok,
        "not_converged": sum(1 for c in conv if c is None),
        "missing_topics_max": max((s["missing"] for s in reports), default=0),
        "connections_lost": sum(1 for s in reports if s["lost"]),
        "convergence_ms_raw": round(conv_ms, 2) if conv_ms is not None else None,
        "convergence_ms": round(max(0.0, conv_ms), 2) if conv_ms is not None else None,
        "broker_cpu_s": round(broker_cpu, 2),
        "broker_cpu_util": round(broker_cpu / write_s, 2),
        "broker_cpu_s_until_converged": round(broker_cpu_all, 2),
        "until_converged_s": round(t_done - wr["t_start"], 2),
        "broker_rss_end": rss,
        "broker_dropped_lines": log.count("dropped"),
        "cpu": noise,
        "client_cores": round(max(0.0, noise["bench_cores"] - broker_cpu / write_s), 2),
        "quiet_gate": quiet,
    }


def hub_once(args: argparse.Namespace) -> dict[str, Any]:
    """(b) with the event log: ``bench.fanout.run_once`` with a temp data dir."""
    d = tempfile.mkdtemp(prefix="bench-mosquitto-hub-")
    try:
        r = fanout.run_once(
            subs=args.subs,
            procs=args.procs,
            keys=args.keys,
            duration=args.duration,
            window=args.window,
            per_frame=args.per_frame,
            data_dir=d,
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    r["client_cores"] = round(max(0.0, r["cpu"]["bench_cores"] - r["hub_cpu_util"]), 2)
    r.pop("profile_top", None)
    return r


# --- the run, the table ---------------------------------------------------------------------


def _mq(args: argparse.Namespace, qos: int) -> dict[str, Any]:
    return mosquitto_once(
        qos=qos,
        subs=args.subs,
        procs=args.procs,
        keys=args.keys,
        duration=args.duration,
        window=args.window,
        per_frame=args.per_frame,
        retain=not args.no_retain,
        extra_conf=args.conf,
        conv_timeout=args.conv_timeout,
    )


def _say(rnd: int, label: str, r: dict[str, Any]) -> None:
    if label == "hub":
        print(
            f"  [{rnd + 1}] hub (log on): {r['writes_per_s']:,} writes/s, "
            f"{r['delivered_per_s']:,} deltas/s ({r['delivered_fraction'] * 100:.0f}%), "
            f"converged {r['all_converged']} in {r['convergence_ms']} ms, "
            f"hub cpu {r['hub_cpu_util']}, clients {r['client_cores']} cores, "
            f"others {r['cpu']['other_cores']}",
            flush=True,
        )
    else:
        print(
            f"  [{rnd + 1}] mosquitto {label}: {r['msgs_per_s']:,} msgs/s, "
            f"{r['delivered_while_writing_per_s']:,} deliveries/s while writing "
            f"({r['delivered_while_writing_fraction'] * 100:.0f}%), received "
            f"{r['received_fraction'] * 100:.1f}%, converged {r['all_converged']} in "
            f"{r['convergence_ms']} ms, broker cpu {r['broker_cpu_util']}, clients "
            f"{r['client_cores']} cores, others {r['cpu']['other_cores']}, "
            f"dropped lines {r['broker_dropped_lines']}",
            flush=True,
        )


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    version = broker_version()
    kinds = ["hub", "qos1"] + ([] if args.no_qos0 else ["qos0"])
    rounds: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        order = kinds if rnd % 2 == 0 else kinds[1:] + kinds[:1]
        out: dict[str, Any] = {"order": order}
        for kind in order:
            r = hub_once(args) if kind == "hub" else _mq(args, int(kind[-1]))
            out[kind] = r
            _say(rnd, kind, r)
        out["ratio_qos1"] = round(out["hub"]["writes_per_s"] / out["qos1"]["msgs_per_s"], 2)
        if "qos0" in out:
            out["ratio_qos0"] = round(out["hub"]["writes_per_s"] / out["qos0"]["msgs_per_s"], 2)
        print(
            f"  [{rnd + 1}] ratio hub/mosquitto: QoS 1 x{out['ratio_qos1']}"
            + (f", QoS 0 x{out['ratio_qos0']}" if "qos0" in out else ""),
            flush=True,
        )
        rounds.append(out)

    def med(xs: list[Any]) -> float | None:
        xs = [x for x in xs if x is not None]
        return round(median(xs), 2) if xs else None

    hubs = [r["hub"] for r in rounds]
    summary: dict[str, Any] = {
        "hub": {
            "writes_per_s": round(median(h["writes_per_s"] for h in hubs)),
            "delivered_per_s": round(median(h["delivered_per_s"] for h in hubs)),
            "delivered_fraction": med([h["delivered_fraction"] for h in hubs]),
            "all_converged": all(h["all_converged"] for h in hubs),
            "convergence_ms": med([h["convergence_ms"] for h in hubs]),
            "convergence_max_ms": max((h["convergence_ms"] or 0) for h in hubs),
            "hub_cpu_util": med([h["hub_cpu_util"] for h in hubs]),
            "client_cores": med([h["client_cores"] for h in hubs]),
            "lag_p99_ms": med([h["hub_lag"]["p99_ms"] for h in hubs]),
            "other_cores": med([h["cpu"]["other_cores"] for h in hubs]),
        }
    }
    for kind in kinds[1:]:
        ms = [r[kind] for r in rounds]
        summary[kind] = {
            "msgs_per_s": round(median(m["msgs_per_s"] for m in ms)),
            "delivered_while_writing_per_s": round(
                median(m["delivered_while_writing_per_s"] for m in ms)
            ),
            "delivered_while_writing_fraction": med(
                [m["delivered_while_writing_fraction"] for m in ms]
            ),
            "received_fraction": med([m["received_fraction"] for m in ms]),
            "all_converged": all(m["all_converged"] for m in ms),
            "convergence_ms": med([m["convergence_ms"] for m in ms]),
            "convergence_max_ms": max((m["convergence_ms"] or 0) for m in ms),
            "broker_cpu_util": med([m["broker_cpu_util"] for m in ms]),
            "client_cores": med([m["client_cores"] for m in ms]),
            "other_cores": med([m["cpu"]["other_cores"] for m in ms]),
            "dropped_lines": sum(m["broker_dropped_lines"] for m in ms),
            "ratios": [r["ratio_" + kind] for r in rounds],
            "ratio_median": med([r["ratio_" + kind] for r in rounds]),
            "ratio_of_medians": round(
                summary["hub"]["writes_per_s"] / median(m["msgs_per_s"] for m in ms), 2
            ),
        }
    return {
        "params": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "subscribers": args.subs,
            "client_processes": args.procs,
            "keys": args.keys,
            "window": args.window,
            "per_frame": args.per_frame,
            "mosquitto_retain": not args.no_retain,
            "mosquitto_extra_conf": args.conf,
            "mosquitto_version": version,
            "mosquitto_conf": "tests/mosquitto.py: no persistence, max_inflight_messages 1000, "
            "max_queued_messages 100000",
            "server_cpus": sorted(HUB_CPUS),
            "client_cpus": sorted(CLIENT_CPUS),
            "target_ratio": TARGET_RATIO,
            "quick": args.quick,
        },
        "summary": summary,
        "rounds": rounds,
    }


def _conv(s: dict[str, Any]) -> str:
    if not s["all_converged"]:
        return "**not converged**"
    return f"{s['convergence_ms']:,.0f} ms (max {s['convergence_max_ms']:,.0f})"


def detail_rows(r: dict[str, Any]) -> list[list[str]]:
    s = r["summary"]
    h = s["hub"]
    out = [
        [
            "companion-hub, (b) with the event log",
            f"{h['writes_per_s']:,}/s",
            f"{h['delivered_per_s']:,}/s ({h['delivered_fraction'] * 100:.0f}%; rest coalesced)",
            _conv(h),
            f"hub {h['hub_cpu_util']}, clients {h['client_cores']}",
            "",
        ]
    ]
    for kind, label in (("qos1", "QoS 1"), ("qos0", "QoS 0")):
        if kind not in s:
            continue
        m = s[kind]
        out.append(
            [
                f"Mosquitto, subscribers at {label}",
                f"{m['msgs_per_s']:,}/s",
                f"{m['delivered_while_writing_per_s']:,}/s "
                f"({m['delivered_while_writing_fraction'] * 100:.0f}%; received in the end "
                f"{m['received_fraction'] * 100:.0f}%)",
                _conv(m),
                f"broker {m['broker_cpu_util']}, clients {m['client_cores']}",
                f"x{m['ratio_median']} (rounds {', '.join(f'x{x}' for x in m['ratios'])})",
            ]
        )
    return out


def print_table(r: dict[str, Any]) -> None:
    header = [
        "same run, medians",
        "accepted writes/s / messages/s",
        "delivered while writing (sum over 100 subscribers)",
        "last ack -> every subscriber converged",
        "cores (server / clients)",
        "hub / Mosquitto",
    ]
    print(markdown_table(header, detail_rows(r)))


def rows(r: dict[str, Any]) -> list[list[str]]:
    """The row of the README's main table (bench.run_all)."""
    s = r["summary"]
    h, m = s["hub"], s["qos1"]
    ver = r["params"]["mosquitto_version"].replace("mosquitto version ", "")
    extra = (
        f"; QoS 0 subscribers {s['qos0']['msgs_per_s']:,}/s (x{s['qos0']['ratio_median']})"
        if "qos0" in s
        else ""
    )
    return [
        [
            f"(b) vs Mosquitto {ver}, same run: accepted writes/s with the log / Mosquitto "
            "messages/s (ratio)",
            f"{h['writes_per_s']:,}/s / {m['msgs_per_s']:,}/s (x{m['ratio_median']}, rounds "
            f"{', '.join(f'x{x}' for x in m['ratios'])}); QoS 1 retained, 100 subscribers to `#`; "
            f"converged {_conv(h)} / {_conv(m)}{extra}",
            f">= x{TARGET_RATIO:.0f}",
            "-",
            "yes" if (m["ratio_median"] or 0) >= TARGET_RATIO else "**no**",
        ]
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--subs", type=int, default=100)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--per-frame", type=int, default=50)
    ap.add_argument("--no-qos0", action="store_true", help="skip the QoS 0 subscribers' runs")
    ap.add_argument("--no-retain", action="store_true", help="publish without the retain flag")
    ap.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="LINE",
        help="an extra mosquitto.conf line (e.g. 'set_tcp_nodelay true'); repeatable",
    )
    ap.add_argument("--conv-timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.duration = 3.0
    runs = args.rounds * (2 if args.no_qos0 else 3)
    watchdog(60 + runs * (args.duration + 45))  # under run_all's limit (600 s)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    result = _bench(args)
    save(NAME + ("_quick" if args.quick else ""), result)
    print()
    print_table(result)
    print()
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    main()
