"""(f) Companion end to end: a simulated Companion changing 1,000 buttons and 1,000
variables per second, through the Companion adapter, to a hub client.

Three processes (plus the coordinator):

- the **simulator** (``companion_hub.simulator``, a load-generating client process on
  the clients' CPUs): 32 pages of 4x8 buttons (1,024 locations) and 1,000 custom
  variables ``v0000``... A driver task in it, every 1 ms, makes what is due of
  1,000 button changes/s (round-robin over the 1,024 locations, the text is the send
  time ``time.time_ns()``) and 1,000 variable changes/s (round-robin over the 1,000
  variables, the value is the send time);
- the **hub** (``HubServer`` on uvloop, pinned to its own CPU, with the lag probe of
  ``bench.hub_proc``; as ``companion-hub serve`` runs it, with the event log in a
  temporary data directory, or without the log with ``--no-log``) with one Companion
  adapter pointed at the simulator: button
  subscriptions for exactly pages 1-32 (4x8), HTTP polling of the 1,000 variables
  every ``--poll`` s (0.2 s);
- one **subscriber** to ``companion.**`` (and ``hub.adapters.companion``), which takes
  ``time.time_ns()`` when a frame arrives and records ``arrival - send time`` for each
  delta, separately for buttons and variables.

Companion cannot push variable values (only a surface's transferable outputs), so
variable latency is bounded by the adapter's HTTP polling: one poll reads each variable
with its own GET, and the adapter writes them all when the poll is complete. It is
reported apart from button latency, with the poll cycle the subscriber saw.

CPU: the hub's and the simulator's (psutil, cores used over the measured window). The
adapter's share of the hub's CPU, two ways: (1) after the measured window the
subscriber disconnects and the simulator makes the same changes for ``--alone`` s
more: the hub's CPU then is the adapter's (its links, parsing and store writes) plus an
idle hub; (2) a py-spy profile of the hub during the measured window (when py-spy is in
the venv: ``.venv/bin/pip install py-spy``), see :func:`adapter_share`.

    .venv/bin/python -m bench.companion [--runs 3] [--duration 10] [--poll 0.2] [--no-log]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil

from companion_hub.client import ConnectionClosed, connect_raw

from .common import (
    CpuMeter,
    Histogram,
    HubProcess,
    median,
    pipe_recv,
    run_loop,
    save,
    table_row,
    wait_quiet,
    watchdog,
    workers,
)
from .profile import Profiler

NAME = "companion"
PAGES = 32
ROWS = 4
COLUMNS = 8
N_VARS = 1000
NS = "companion"
BTN_PREFIX = f"{NS}.buttons."
VAR_PREFIX = f"{NS}.variables.custom."
ADAPTER_KEY = "hub.adapters.companion"
BTN_RES_US, BTN_MAX_MS = 20, 5_000
VAR_RES_US, VAR_MAX_MS = 100, 20_000
POLL_GAP_S = 0.03  # variable deltas further apart than this belong to different polls


def var_names(n: int) -> list[str]:
    return [f"v{i:04d}" for i in range(n)]


def locations(pages: int) -> list[tuple[int, int, int]]:
    return [(p, r, c) for p in range(1, pages + 1) for r in range(ROWS) for c in range(COLUMNS)]


def scenario_doc(pages: int, n_vars: int) -> dict[str, Any]:
    return {
        "device_page": 1,
        "pages": [
            {
                "number": p,
                "name": f"Bench {p}",
                "buttons": [
                    {"row": r, "column": c, "text": "init", "bgcolor": "#202020"}
                    for r in range(ROWS)
                    for c in range(COLUMNS)
                ],
            }
            for p in range(1, pages + 1)
        ],
        "custom_variables": {name: "0" for name in var_names(n_vars)},
    }


# --- the simulator process -----------------------------------------------------------------


def sim_worker(conn: Any, params: dict[str, Any]) -> None:
    run_loop(_sim_main(conn, params))


async def _sim_main(conn: Any, p: dict[str, Any]) -> None:
    from companion_hub.logs import setup_logging
    from companion_hub.simulator import CompanionSimulator
    from companion_hub.simulator.scenario import scenario_from_dict

    setup_logging("warning", "json")
    sim = CompanionSimulator(
        scenario_from_dict(scenario_doc(p["pages"], p["vars"])),
        host="127.0.0.1",
        satellite_port=0,
        ws_port=0,
        http_port=0,
        subscriptions=True,
        clock=False,
        connection_status_changes=False,
        ember_port=0 if p["ember"] else None,  # the Ember+ provider on a free port
    )
    await sim.start()
    try:
        conn.send(
            (
                "ready",
                {
                    "satellite_port": sim.satellite_port,
                    "http_port": sim.http_port,
                    "ember_port": sim.ember_port,
                },
            )
        )
        while True:
            cmd, *args = await pipe_recv(conn)
            if cmd != "go":
                break  # "close"
            t0, warm_ns, duration = args
            report = await _drive(sim, {**p, "duration": duration}, t0, warm_ns)
            conn.send(("done", report))
    finally:
        await sim.stop()


async def _drive(sim: Any, p: dict[str, Any], t0: float, warm_ns: int) -> dict[str, Any]:
    """Every ``tick`` s, make the button and variable changes that are due (paced)."""
    locs = locations(p["pages"])
    names = var_names(p["vars"])
    btn_keys = [f"{BTN_PREFIX}{pg}.{r}.{c}" for pg, r, c in locs]
    var_keys = [f"{VAR_PREFIX}{n}" for n in names]
    rate_b, rate_v, tick = p["button_rate"], p["var_rate"], p["tick"]
    set_button, set_var = sim.set_button, sim.set_custom_variable
    final: dict[str, int] = {}
    nb = nv = 0
    nb_win = nv_win = 0  # changes sent at or after warm_ns
    late_ticks = 0
    max_tick_ms = 0.0
    clock_ns = time.time_ns
    mono = time.monotonic
    await asyncio.sleep(max(0.0, t0 - mono()))
    start = mono()
    end = start + p["duration"]
    prev = start
    while True:
        now = mono()
        if now >= end:
            break
        gap = now - prev
        prev = now
        if gap > 10 * tick:
            late_ticks += 1
        max_tick_ms = max(max_tick_ms, gap * 1000)
        due_b = int((now - start) * rate_b)
        due_v = int((now - start) * rate_v)
        while nb < due_b or nv < due_v:
            tns = clock_ns()
            text = str(tns)
            counted = tns >= warm_ns
            if nb < due_b:
                i = nb % len(locs)
                pg, r, c = locs[i]
                set_button(pg, r, c, text=text)
                final[btn_keys[i]] = tns
                nb += 1
                nb_win += counted
            if nv < due_v:
                i = nv % len(names)
                set_var(names[i], text)
                final[var_keys[i]] = tns
                nv += 1
                nv_win += counted
        await asyncio.sleep(tick)
    stop = mono()
    return {
        "buttons_sent": nb,
        "vars_sent": nv,
        "buttons_in_window": nb_win,
        "vars_in_window": nv_win,
        "button_rate": round(nb / (stop - start)),
        "var_rate": round(nv / (stop - start)),
        "t_start": start,
        "t_stop": stop,
        "stop_ns": clock_ns(),
        "late_ticks": late_ticks,
        "max_tick_ms": round(max_tick_ms, 1),
        "final": final,
    }


# --- the hub process ---------------------------------------------------------------------


def _hub_main(spec: dict[str, Any]) -> None:
    """The hub under test with one Companion adapter (``python -m bench.companion _hub``)."""
    import signal

    from companion_hub.adapters.companion.adapter import CompanionConfig
    from companion_hub.hub import HubConfig
    from companion_hub.logs import setup_logging
    from companion_hub.server.app import HubServer

    from .hub_proc import LagProbe, _emit

    setup_logging("warning", "json")

    async def main() -> None:
        probe = LagProbe()
        ember = spec["mode"] == "ember"
        cfg = CompanionConfig(
            host="127.0.0.1",
            satellite_port=spec["satellite_port"],
            http_port=spec["http_port"],
            pages=list(range(1, spec["pages"] + 1)),
            rows=ROWS,
            columns=COLUMNS,
            # Ember+ lists every custom variable itself: none listed for HTTP polling
            variables=[] if ember else [f"custom:{n}" for n in var_names(spec["vars"])],
            poll_interval=spec["poll"],
            ember=ember,
            ember_port=spec["ember_port"] if ember else 9092,
        )
        # spec["data_dir"]: the event log there (as ``serve`` runs); None: no log
        server = HubServer(
            HubConfig(host="127.0.0.1", port=0, data_dir=spec.get("data_dir")), companions=[cfg]
        )
        probe.hub = server.hub  # the event log's counters in the lag report

        def ember_stats() -> dict[str, Any] | None:
            link = getattr(server.adapters[0], "ember", None) if server.adapters else None
            if link is None:
                return None
            consumer = link.consumer
            return {
                "connections": link.connections,  # sessions that listed the variables
                "stalls": link.stalls,  # abandoned by the provider, reconnected
                "listed": link.listed,
                "problems": dict(consumer.problems) if consumer is not None else None,
            }

        def report() -> dict[str, Any]:
            return {**probe.report(), "ember": ember_stats()}

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, probe.reset)
        loop.add_signal_handler(signal.SIGUSR2, lambda: _emit(report()))
        await server.start()
        task = loop.create_task(probe.run())
        _emit(
            {
                "event": "ready",
                "port": server.port,
                "pid": os.getpid(),
                "loop": type(loop).__module__.split(".")[0],
            }
        )
        try:
            await stop.wait()
        finally:
            _emit(report())
            task.cancel()
            await server.stop()

    run_loop(main())


class CompanionHubProcess(HubProcess):
    """``HubProcess`` running :func:`_hub_main` (the hub plus a Companion adapter). As
    ``HubProcess``: with the event log in a fresh temporary data directory (removed at
    stop); ``log=False``: without the event log."""

    def __init__(self, spec: dict[str, Any], log: bool = True) -> None:
        super().__init__(log=log)
        self.spec = spec

    def start(self, timeout: float = 20.0) -> CompanionHubProcess:
        if self.log and self.data_dir is None:
            self.data_dir = self._own_data_dir = tempfile.mkdtemp(prefix="bench-hub-data-")
        spec = {**self.spec, "data_dir": self.data_dir if self.log else None}
        self._launch(["-m", "bench.companion", "_hub", json.dumps(spec)], timeout)
        return self

    def __enter__(self) -> CompanionHubProcess:
        return self.start()


# --- the subscriber ------------------------------------------------------------------------


class _Entry(msgspec.Struct):
    key: str
    value: msgspec.Raw = msgspec.Raw(b"null")


class _M(msgspec.Struct):
    op: str
    key: str = ""
    value: msgspec.Raw = msgspec.Raw(b"null")
    stale: bool = False
    deleted: bool = False
    entries: list[_Entry] | None = None
    done: bool = True


class _Btn(msgspec.Struct):
    text: str = ""


class _Link(msgspec.Struct):
    state: str = ""
    detail: str = ""


class _State(msgspec.Struct):
    state: str = ""
    detail: str = ""
    ember: _Link = msgspec.field(default_factory=_Link)


_one = msgspec.json.Decoder(_M).decode
_many = msgspec.json.Decoder(list[_M]).decode
_btn = msgspec.json.Decoder(_Btn).decode
_str = msgspec.json.Decoder(str).decode
_adapter = msgspec.json.Decoder(_State).decode


def _decode(data: bytes) -> list[_M]:
    return _many(data) if data[:1] == b"[" else [_one(data)]


def _t_of(key: str, raw: msgspec.Raw) -> tuple[str, int] | None:
    """("b"|"v", send time) of a button or variable value carrying one."""
    try:
        if key.startswith(BTN_PREFIX):
            return "b", int(_btn(raw).text)
        if key.startswith(VAR_PREFIX):
            return "v", int(_str(raw))
    except (ValueError, msgspec.DecodeError):
        return None
    return None


def sub_worker(
    conn: Any, url: str, expect_buttons: int, expect_vars: int, ember: bool = False
) -> None:
    run_loop(_sub_main(conn, url, expect_buttons, expect_vars, ember))


async def _sub_main(
    conn: Any, url: str, expect_buttons: int, expect_vars: int, ember: bool = False
) -> None:
    """``ember``: synced only once the adapter says its Ember+ link is connected."""
    last: dict[str, int] = {}  # key -> send time of the value seen last
    keys_b: set[str] = set()
    keys_v: set[str] = set()
    st: dict[str, Any] = {
        "warm_ns": None,
        "stop_ns": 1 << 62,
        "b_seen": 0,
        "v_seen": 0,
        "b_dups": 0,
        "v_dups": 0,
        "stale_deltas": 0,
        "adapter_states": [],
        "ember_state": "",
        "var_bursts": [],  # [first, last] monotonic arrival of each poll's deltas
    }
    hb = Histogram(BTN_RES_US, BTN_MAX_MS)
    hv = Histogram(VAR_RES_US, VAR_MAX_MS)
    synced = asyncio.Event()
    arrived_at: dict[str, float] = {}

    def on_value(key: str, raw: msgspec.Raw, now_ns: int, now: float, delta: bool) -> None:
        if key == ADAPTER_KEY:
            s = _adapter(raw)
            st["adapter_states"].append([round(now, 3), s.state, s.detail, s.ember.state])
            st["ember_state"] = s.ember.state
            if (
                ember
                and s.ember.state == "connected"
                and len(keys_v) >= expect_vars
                and len(keys_b) >= expect_buttons
            ):
                synced.set()
            return
        tv = _t_of(key, raw)
        if key.startswith(BTN_PREFIX):
            keys_b.add(key)
        elif key.startswith(VAR_PREFIX):
            keys_v.add(key)
        if (
            len(keys_b) >= expect_buttons
            and len(keys_v) >= expect_vars
            and (not ember or st["ember_state"] == "connected")
        ):
            synced.set()
        if tv is None:
            return
        kind, t = tv
        if last.get(key) == t:
            st[f"{kind}_dups"] += 1  # the same value again (e.g. a stale flag cleared)
            return
        last[key] = t
        arrived_at[key] = now
        warm = st["warm_ns"]
        if not delta or warm is None or not warm <= t <= st["stop_ns"]:
            return
        if kind == "b":
            st["b_seen"] += 1
            hb.add((now_ns - t) / 1000)
        else:
            st["v_seen"] += 1
            hv.add((now_ns - t) / 1000)
            bursts = st["var_bursts"]
            if bursts and now - bursts[-1][1] <= POLL_GAP_S:
                bursts[-1][1] = now
            else:
                bursts.append([now, now])

    async with aiohttp.ClientSession() as session:
        hub = await connect_raw(url, "bench-companion-sub", session=session)
        await hub.send(
            {"op": "subscribe", "id": "s", "sub": "c", "patterns": [f"{NS}.**", ADAPTER_KEY]}
        )

        async def read() -> None:
            # The latency is measured here, at the frame's arrival: it reads whole frames
            # (RawConnection.receive_frame), not messages (receive, which builds dicts),
            # and decodes them typed, as fast as a client can.
            receive_frame = hub.receive_frame
            clock_ns = time.time_ns
            mono = time.monotonic
            while True:
                try:
                    data = await receive_frame(None)
                except ConnectionClosed:
                    return
                now_ns = clock_ns()
                now = mono()
                for m in _decode(data):
                    if m.op == "delta":
                        if m.stale:
                            st["stale_deltas"] += 1
                        if not m.deleted:
                            on_value(m.key, m.value, now_ns, now, True)
                    elif m.op == "snapshot" and m.entries:
                        for e in m.entries:
                            on_value(e.key, e.value, now_ns, now, False)

        reader = asyncio.create_task(read())
        try:
            await asyncio.wait_for(synced.wait(), 60)
        except TimeoutError:
            conn.send(
                (
                    "error",
                    f"not synced: {len(keys_b)} buttons, {len(keys_v)} variables, "
                    f"Ember+ {st['ember_state'] or '?'}",
                )
            )
            return
        conn.send(
            (
                "ready",
                {"buttons": len(keys_b), "vars": len(keys_v), "ember_state": st["ember_state"]},
            )
        )
        cmd, _t0, warm_ns = await pipe_recv(conn)
        assert cmd == "go"
        st["warm_ns"] = warm_ns
        cmd, final, stop_ns, timeout = await pipe_recv(conn)
        assert cmd == "final"
        st["stop_ns"] = stop_ns
        t_final = time.monotonic()
        deadline = t_final + timeout
        conv: dict[str, float | None] = {"b": None, "v": None}
        fb = {k: v for k, v in final.items() if k.startswith(BTN_PREFIX)}
        fv = {k: v for k, v in final.items() if k.startswith(VAR_PREFIX)}
        while time.monotonic() < deadline:
            for kind, fin in (("b", fb), ("v", fv)):
                if conv[kind] is None and all(last.get(k) == v for k, v in fin.items()):
                    conv[kind] = max((arrived_at.get(k, 0.0) for k in fin), default=0.0)
            if conv["b"] is not None and conv["v"] is not None:
                break
            await asyncio.sleep(0.005)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await hub.close()
    report = {
        **{k: v for k, v in st.items() if k != "var_bursts"},
        "var_polls": len(st["var_bursts"]),
        "var_burst_ms": [round((b - a) * 1000, 1) for a, b in st["var_bursts"]],
        "var_burst_starts": [round(a, 3) for a, _ in st["var_bursts"]],
        "hist_b": hb.bins,
        "hist_v": hv.bins,
        "t_final": t_final,
        "converged_b": conv["b"],
        "converged_v": conv["v"],
        "missing_b": sum(1 for k, v in fb.items() if last.get(k) != v),
        "missing_v": sum(1 for k, v in fv.items() if last.get(k) != v),
    }
    conn.send(("report", report))


# --- the adapter's share of the hub's CPU (py-spy) -------------------------------------------

# aiohttp files that only the adapter's HTTP client runs in the hub (the hub's own server
# writes WebSocket frames with ``_websocket/writer.py`` and receives no HTTP bodies)
_CLIENT_FILES = (
    "client.py",
    "client_proto.py",
    "client_reqrep.py",
    "connector.py",
    "http_writer.py",
    "streams.py",
)


def adapter_share(raw: str) -> dict[str, Any]:
    """Split the hub's on-CPU samples (py-spy raw output) between the adapter and the rest.

    A stack is the adapter's if it has a frame in ``companion_hub/adapters/``, an aiohttp
    client frame (:data:`_CLIENT_FILES`: in the hub only the adapter's HTTP link is a
    client) or an ``asyncio/streams.py`` frame (only the Satellite link uses asyncio
    streams; the hub serves with aiohttp). Its samples are split further into store
    writes and fan-out the adapter caused (a ``companion_hub/core`` or ``server`` frame
    below an adapter frame), the HTTP link, and the Satellite link. Samples in uvloop's
    C code (no Python frame below the loop's ``run``: socket I/O, callbacks) cannot be
    attributed and are counted apart.
    """
    cats: Counter[str] = Counter()
    n = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        n += c
        if not stack.strip():
            cats["loop"] += c  # no Python frame at all
            continue
        frames = stack.split(";")
        paths = [f.rpartition(" (")[2] for f in frames]
        first_adapter = next(
            (i for i, p in enumerate(paths) if "companion_hub/adapters/" in p), None
        )
        http_client = any(
            "aiohttp/" in p and p.split(":")[0].endswith(_CLIENT_FILES) for p in paths
        )
        streams = any("asyncio/streams.py" in p for p in paths)
        if first_adapter is None and not http_client and not streams:
            leaf = paths[-1]
            if not frames[-1].strip() or "asyncio/runners.py" in leaf or "uvloop/" in leaf:
                cats["loop"] += c  # in uvloop's C code (I/O, callbacks): not attributable
            else:
                cats["hub"] += c
            continue
        start = first_adapter if first_adapter is not None else 0
        below = paths[start + 1 :]
        if first_adapter is not None and any(
            "companion_hub/core/" in p or "companion_hub/server/" in p for p in below
        ):
            cats["adapter_store_fanout"] += c
        elif http_client or any(
            "adapters/companion/http.py" in p or "_poll_loop" in f or "_http_polled" in f
            for p, f in zip(paths, frames, strict=True)
        ):
            cats["adapter_http"] += c
        elif any("adapters/companion/ember" in p for p in paths):
            cats["adapter_ember"] += c  # ember_link.py and ember/ (consumer, Glow, BER)
        else:
            cats["adapter_satellite"] += c
    adapter = sum(v for k, v in cats.items() if k.startswith("adapter"))

    def pct(v: int) -> float:
        return round(100 * v / n, 1) if n else 0.0

    return {
        "samples": n,
        "adapter_pct": pct(adapter),
        "adapter_http_pct": pct(cats["adapter_http"]),
        "adapter_satellite_pct": pct(cats["adapter_satellite"]),
        "adapter_ember_pct": pct(cats["adapter_ember"]),
        "adapter_store_fanout_pct": pct(cats["adapter_store_fanout"]),
        "hub_rest_pct": pct(cats["hub"]),
        "event_loop_c_pct": pct(cats["loop"]),
        # the adapter's share of the samples in Python code (uvloop's C code left out)
        "adapter_pct_of_python": round(100 * adapter / (n - cats["loop"]), 1)
        if n > cats["loop"]
        else 0.0,
    }


# --- one run -----------------------------------------------------------------------------------


def _cpu(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


def run_once(
    *,
    mode: str = "poll",
    duration: float,
    warmup: float,
    poll: float,
    rate: int,
    profile: bool,
    alone_s: float = 4.0,
    keep_profile: str | None = None,
    log: bool = True,
) -> dict[str, Any]:
    params = {
        "pages": PAGES,
        "vars": N_VARS,
        "button_rate": rate,
        "var_rate": rate,
        "tick": 0.001,
        "duration": duration,
        "ember": mode == "ember",
    }
    quiet = wait_quiet(max_wait=10.0)
    t_setup = time.monotonic()
    with workers([(sim_worker, (params,))]) as (sim,):
        tag, ports = sim.recv(60)
        assert tag == "ready", (tag, ports)
        spec = {**ports, "pages": PAGES, "vars": N_VARS, "poll": poll, "mode": mode}
        ember = mode == "ember"
        with (
            CompanionHubProcess(spec, log=log) as hub,
            workers([(sub_worker, (hub.ws_url, PAGES * ROWS * COLUMNS, N_VARS, ember))]) as (sub,),
        ):
            tag, info = sub.recv(90)
            if tag != "ready":
                raise RuntimeError(f"subscriber: {info}")
            if ember and info["ember_state"] != "connected":
                raise RuntimeError(f"Ember+ not connected before measuring: {info}")
            setup_s = time.monotonic() - t_setup
            t0 = time.monotonic() + 0.3
            warm_ns = time.time_ns() + int((0.3 + warmup) * 1e9)
            sim.send(("go", t0, warm_ns, duration))
            sub.send(("go", t0, warm_ns))
            time.sleep(max(0.0, t0 + warmup - time.monotonic()))
            t_win = time.monotonic()
            hub.lag_reset()
            cpu0 = {"hub": hub.cpu_seconds(), "sim": _cpu(sim.proc.pid), "sub": _cpu(sub.proc.pid)}
            meter = CpuMeter()
            prof = None
            raw_path = keep_profile or ""
            if profile and not raw_path:
                with tempfile.NamedTemporaryFile(
                    prefix="companion-", suffix=".raw", delete=False
                ) as f:
                    raw_path = f.name
            if profile:
                prof = Profiler(hub.pid, (duration - warmup) * 0.9, raw_path)
            tag, drv = sim.recv(duration + 60)
            assert tag == "done", tag
            window = time.monotonic() - t_win
            noise = meter.stop()
            cpu = {
                "hub": hub.cpu_seconds() - cpu0["hub"],
                "sim": _cpu(sim.proc.pid) - cpu0["sim"],
                "sub": _cpu(sub.proc.pid) - cpu0["sub"],
            }
            lag = hub.lag_report()
            share = prof_top = None
            if prof is not None:
                prof_top = prof.finish()
                if prof.proc is not None and Path(raw_path).exists():
                    share = adapter_share(Path(raw_path).read_text())
                if not keep_profile:
                    prof_top = None
                    with contextlib.suppress(OSError):
                        os.unlink(raw_path)
            sub.send(("final", drv["final"], drv["stop_ns"], max(5.0, 10 * poll)))
            tag, rep = sub.recv(60)
            assert tag == "report", tag
            # the same changes with no client connected: the hub's CPU is then the
            # adapter's (Satellite and HTTP links, parsing, its store writes)
            alone = None
            if alone_s > 0:
                t0 = time.monotonic() + 0.2
                sim.send(("go", t0, 0, alone_s + 0.5))
                time.sleep(max(0.0, t0 + 0.5 - time.monotonic()))
                c0, tw = hub.cpu_seconds(), time.monotonic()
                tag, _ = sim.recv(alone_s + 60)
                assert tag == "done", tag
                alone = round((hub.cpu_seconds() - c0) / (time.monotonic() - tw), 2)
            sim.send(("close",))
    hb = Histogram(BTN_RES_US, BTN_MAX_MS)
    hb.merge(rep["hist_b"])
    hv = Histogram(VAR_RES_US, VAR_MAX_MS)
    hv.merge(rep["hist_v"])
    conv_b = rep["converged_b"]
    conv_v = rep["converged_v"]
    starts = rep["var_burst_starts"]
    cycles = [b - a for a, b in itertools.pairwise(starts)]
    ember_link = lag.pop("ember", None)
    return {
        "mode": mode,
        "event_log": log,
        "setup_s": round(setup_s, 1),
        "driver": {k: v for k, v in drv.items() if k != "final"},
        "buttons": {
            "sent": drv["buttons_in_window"],
            "seen": rep["b_seen"],
            "seen_fraction": round(rep["b_seen"] / max(1, drv["buttons_in_window"]), 4),
            "p50_ms": hb.quantile(0.5),
            "p90_ms": hb.quantile(0.9),
            "p99_ms": hb.quantile(0.99),
            "max_ms": hb.quantile(1.0),
            "dups": rep["b_dups"],
            "missing_at_end": rep["missing_b"],
            "converged_ms": None
            if conv_b is None
            else round(max(0.0, conv_b - drv["t_stop"]) * 1000),
        },
        "variables": {
            "sent": drv["vars_in_window"],
            "seen": rep["v_seen"],
            "seen_fraction": round(rep["v_seen"] / max(1, drv["vars_in_window"]), 4),
            "p50_ms": hv.quantile(0.5),
            "p90_ms": hv.quantile(0.9),
            "p99_ms": hv.quantile(0.99),
            "max_ms": hv.quantile(1.0),
            "dups": rep["v_dups"],
            "missing_at_end": rep["missing_v"],
            "converged_ms": None
            if conv_v is None
            else round(max(0.0, conv_v - drv["t_stop"]) * 1000),
            "polls_seen": None if ember else rep["var_polls"],
            "poll_cycle_ms": round(median(cycles) * 1000) if cycles and not ember else None,
            "poll_burst_ms": median(rep["var_burst_ms"])
            if rep["var_burst_ms"] and not ember
            else None,
        },
        "stale_deltas": rep["stale_deltas"],
        "adapter_states": rep["adapter_states"],
        # Ember+ state in hub.adapters.companion during the window (all "connected"?)
        "ember_state_at_end": rep["ember_state"],
        "ember_link": ember_link,
        "window_s": round(window, 2),
        "hub_cores": round(cpu["hub"] / window, 2),
        "hub_cores_without_client": alone,
        "sim_cores": round(cpu["sim"] / window, 2),
        "sub_cores": round(cpu["sub"] / window, 2),
        "adapter_profile": share,
        "profile_top": prof_top,
        "hub_lag": lag,
        "cpu": noise,
        "quiet_gate": quiet,
    }


def _print_run(i: int, r: dict[str, Any]) -> None:
    b, v, prof = r["buttons"], r["variables"], r["adapter_profile"]
    share = f"adapter {prof['adapter_pct']}% of hub samples" if prof else "no profile"
    if r["mode"] == "ember":
        link = r["ember_link"] or {}
        how = (
            f"Ember+ {r['ember_state_at_end']}, {link.get('connections')} listing(s), "
            f"{link.get('stalls')} stall(s)"
        )
    else:
        how = f"poll cycle {v['poll_cycle_ms']} ms"
    print(
        f"  round {i + 1} {r['mode']:>5}: buttons p50 {b['p50_ms']:.2f} p99 {b['p99_ms']:.2f} "
        f"max {b['max_ms']:.1f} ms ({b['seen_fraction'] * 100:.1f}% seen); variables p50 "
        f"{v['p50_ms']:.1f} p99 {v['p99_ms']:.1f} max {v['max_ms']:.1f} ms "
        f"({v['seen_fraction'] * 100:.1f}% seen, {how}); hub {r['hub_cores']} cores ({share}), "
        f"sim {r['sim_cores']}, lag p99 {r['hub_lag']['p99_ms']} ms, other users' cpu "
        f"{r['cpu']['other_cores']} cores",
        flush=True,
    )


def _medians(runs: list[dict[str, Any]], alone: bool) -> dict[str, Any]:
    """The medians over one mode's runs (the fields of the JSON's ``median``)."""
    profs = [r["adapter_profile"] for r in runs if r["adapter_profile"]]

    def med(path: tuple[str, str]) -> float:
        return median(r[path[0]][path[1]] for r in runs)

    def pmed(field: str) -> float | None:
        return median(p[field] for p in profs) if profs else None

    cycles = [r["variables"]["poll_cycle_ms"] for r in runs if r["variables"]["poll_cycle_ms"]]
    return {
        "button_p50_ms": med(("buttons", "p50_ms")),
        "button_p99_ms": med(("buttons", "p99_ms")),
        "button_max_ms": med(("buttons", "max_ms")),
        "button_seen_fraction": med(("buttons", "seen_fraction")),
        "var_p50_ms": med(("variables", "p50_ms")),
        "var_p99_ms": med(("variables", "p99_ms")),
        "var_max_ms": med(("variables", "max_ms")),
        "var_seen_fraction": med(("variables", "seen_fraction")),
        "var_poll_cycle_ms": median(cycles) if cycles else None,
        "hub_cores": median(r["hub_cores"] for r in runs),
        "hub_cores_without_client": median(r["hub_cores_without_client"] for r in runs)
        if alone
        else None,
        "sim_cores": median(r["sim_cores"] for r in runs),
        "hub_lag_p99_ms": median(r["hub_lag"]["p99_ms"] for r in runs),
        "adapter_pct": pmed("adapter_pct"),
        "adapter_http_pct": pmed("adapter_http_pct"),
        "adapter_satellite_pct": pmed("adapter_satellite_pct"),
        "adapter_ember_pct": pmed("adapter_ember_pct"),
        "adapter_store_fanout_pct": pmed("adapter_store_fanout_pct"),
        "adapter_pct_of_python": pmed("adapter_pct_of_python"),
        "event_loop_c_pct": pmed("event_loop_c_pct"),
    }


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    modes = ["poll", "ember"] if args.variables == "both" else [args.variables]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for i in range(args.runs):
        for mode in modes:  # alternating: poll, ember, poll, ember, ...
            r = run_once(
                mode=mode,
                duration=args.duration,
                warmup=args.warmup,
                poll=args.poll,
                rate=args.rate,
                profile=not args.no_profile,
                alone_s=args.alone,
                keep_profile=f"{args.profile}.{mode}" if args.profile and i == 0 else None,
                log=not args.no_log,
            )
            runs[mode].append(r)
            _print_run(i, r)
    out: dict[str, Any] = {
        "params": {
            "pages": PAGES,
            "rows": ROWS,
            "columns": COLUMNS,
            "button_locations": PAGES * ROWS * COLUMNS,
            "variables": N_VARS,
            "button_changes_per_s": args.rate,
            "variable_changes_per_s": args.rate,
            "poll_interval_s": args.poll,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "without_client_s": args.alone,
            "runs": args.runs,
            "variables_by": args.variables,
            "event_log": not args.no_log,
        },
    }
    alone = args.alone > 0
    if "poll" in runs:
        # polling keeps the original field names (and rows)
        out["median"] = _medians(runs["poll"], alone)
        out["runs"] = runs["poll"]
    if "ember" in runs:
        em = _medians(runs["ember"], alone)
        em["ember_stalls"] = sum((r["ember_link"] or {}).get("stalls", 0) for r in runs["ember"])
        em["ember_connected_in_every_run"] = all(
            r["ember_state_at_end"] == "connected" for r in runs["ember"]
        )
        out["ember"] = em
        out["ember_runs"] = runs["ember"]
    if "poll" in runs and "ember" in runs:
        pairs = list(zip(runs["poll"], runs["ember"], strict=True))
        per_round = [
            round(p["variables"]["p99_ms"] / max(e["variables"]["p99_ms"], 1e-3), 1)
            for p, e in pairs
        ]
        out["ember_vs_poll"] = {
            # polling p99 / Ember+ p99 (medians over the rounds), and per round
            "p99_ratio": round(out["median"]["var_p99_ms"] / max(em["var_p99_ms"], 1e-3), 1),
            "p50_ratio": round(out["median"]["var_p50_ms"] / max(em["var_p50_ms"], 1e-3), 1),
            "p99_ratio_per_round": per_round,
            "p99_ratio_min": min(per_round),
        }
    return out


def _f(p: dict[str, Any]) -> str:
    """The rows' prefix; results from before the log was on by default ran without it."""
    return (
        "(f) Companion, event log on"
        if p.get("event_log")
        else "(f) Companion, without the event log"
    )


def _poll_rows(r: dict[str, Any]) -> list[list[str]]:
    p, m = r["params"], r["median"]
    rate = f"{p['button_changes_per_s']:,}"
    if m["adapter_pct"] is not None:
        share = (
            f"py-spy: adapter {m['adapter_pct']:.0f}% of the hub's samples "
            f"({m['adapter_pct_of_python']:.0f}% of those in Python code; HTTP polling "
            f"{m['adapter_http_pct']:.0f}%, Satellite {m['adapter_satellite_pct']:.0f}%, its "
            f"store writes {m['adapter_store_fanout_pct']:.0f}%, uvloop C code "
            f"{m['event_loop_c_pct']:.0f}%)"
        )
    else:
        share = "no py-spy profile: hub process only"
    alone = m.get("hub_cores_without_client")
    alone_text = f" ({alone:.2f} with no client connected)" if alone is not None else ""
    return [
        [
            f"{_f(p)}: {rate} button changes/s ({p['button_locations']:,} locations) -> "
            "hub client delta, p99 (p50)",
            f"{m['button_p99_ms']:.1f} ms ({m['button_p50_ms']:.1f} ms), "
            f"{m['button_seen_fraction'] * 100:.0f}% of changes seen",
            "-",
            "-",
            "-",
        ],
        [
            f"{_f(p)}: {rate} variable changes/s ({p['variables']:,} variables, HTTP poll "
            f"every {p['poll_interval_s']:g} s) -> hub client delta, p99 (p50)",
            f"{m['var_p99_ms']:.0f} ms ({m['var_p50_ms']:.0f} ms), poll cycle "
            f"{m['var_poll_cycle_ms'] or 0:.0f} ms, {m['var_seen_fraction'] * 100:.0f}% of "
            "changes seen",
            "-",
            "-",
            "-",
        ],
        [
            f"{_f(p)}: CPU meanwhile (cores)",
            f"hub {m['hub_cores']:.2f}{alone_text}; {share}; simulator {m['sim_cores']:.2f}; "
            f"hub loop lag p99 {m['hub_lag_p99_ms']:.1f} ms",
            "-",
            "-",
            "-",
        ],
    ]


def _ember_rows(r: dict[str, Any]) -> list[list[str]]:
    p, e = r["params"], r["ember"]
    rate = f"{p['variable_changes_per_s']:,}"
    vs = r.get("ember_vs_poll")
    ref = (
        f"x{vs['p99_ratio']:.0f} lower p99 than polling in the same run "
        f"(rounds x{min(vs['p99_ratio_per_round']):.0f}-x{max(vs['p99_ratio_per_round']):.0f})"
        if vs
        else "-"
    )
    alone = e.get("hub_cores_without_client")
    alone_text = f" ({alone:.2f} with no client connected)" if alone is not None else ""
    share = (
        f"; py-spy: adapter {e['adapter_pct']:.0f}% of the hub's samples (Ember+ "
        f"{e['adapter_ember_pct']:.0f}%, Satellite {e['adapter_satellite_pct']:.0f}%, HTTP "
        f"{e['adapter_http_pct']:.0f}%)"
        if e.get("adapter_pct") is not None
        else ""
    )
    return [
        [
            f"{_f(p)}: {rate} variable changes/s ({p['variables']:,} variables) by Ember+ "
            "-> hub client delta, p99 (p50)",
            f"{e['var_p99_ms']:.1f} ms ({e['var_p50_ms']:.1f} ms), max {e['var_max_ms']:.0f} ms, "
            f"{e['var_seen_fraction'] * 100:.0f}% of changes seen; hub "
            f"{e['hub_cores']:.2f} cores{alone_text}{share}; simulator {e['sim_cores']:.2f}",
            "-",
            ref,
            "-",
        ],
    ]


def rows(r: dict[str, Any]) -> list[list[str]]:
    out = _poll_rows(r) if "median" in r else []
    if "ember" in r:
        out += _ember_rows(r)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="(f) Companion end-to-end benchmark")
    ap.add_argument(
        "--runs", type=int, default=3, help="rounds (one run per --variables mode each)"
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of changes per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="first seconds not recorded")
    ap.add_argument("--rate", type=int, default=1000, help="button and variable changes/s each")
    ap.add_argument("--poll", type=float, default=0.2, help="the adapter's poll_interval")
    ap.add_argument(
        "--variables",
        choices=["poll", "ember", "both"],
        default="both",
        help="variables by HTTP polling, by Ember+, or both (alternating runs)",
    )
    ap.add_argument(
        "--alone", type=float, default=4.0, help="seconds of changes with no hub client (0: none)"
    )
    ap.add_argument("--no-profile", action="store_true", help="no py-spy (hub CPU only)")
    ap.add_argument(
        "--no-log",
        action="store_true",
        help="run the hub without the event log (default: as `serve` runs it, log on)",
    )
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="keep the first round's py-spy output (FILE.poll, FILE.ember) and top functions",
    )
    args = ap.parse_args(argv)
    n_modes = 2 if args.variables == "both" else 1
    watchdog(max(115, args.runs * n_modes * (args.duration + args.alone + 30)))
    result = _bench(args)
    save(NAME, result)
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["_hub"]:
        _hub_main(json.loads(sys.argv[2]))
    else:
        main()
