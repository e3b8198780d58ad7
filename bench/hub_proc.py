"""The hub under test, in its own process, with an opt-in event-loop lag probe.

Same code path as ``companion-hub serve`` (``HubServer`` on uvloop when importable,
logging set up the same way), plus one task that sleeps 10 ms in a loop and records
how late it wakes up. It talks to the benchmark over stdout, one JSON object a line:

- ``{"event":"ready","port":P,"pid":N,"loop":"uvloop"}`` once listening;
- SIGUSR1 resets the lag samples; SIGUSR2 prints ``{"event":"lag",...}``;
- SIGTERM prints a final ``{"event":"lag",...}`` and stops the hub.

With ``--data-dir DIR`` the hub runs with its event log (as ``companion-hub serve
--data-dir DIR``); the probe then also samples the log's backlog (``pending``) every
tick, and the lag report gets a ``log`` object: rows appended and written, batches and
the writer thread's seconds in them, bytes the process wrote to storage (``/proc``)
since the reset, the largest backlog seen (by the probe on the loop, and by the writer
thread), ``durable_rev`` and the hub's ``rev``.

    python -m bench.hub_proc --port 0 [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from array import array

from companion_hub.core.acl import Role
from companion_hub.hub import Hub, HubConfig
from companion_hub.logs import setup_logging
from companion_hub.server.app import HubServer

PROBE_INTERVAL_S = 0.010


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _write_bytes() -> int:
    """Bytes this process caused to be written to storage (Linux ``/proc/self/io``)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class LagProbe:
    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub
        self.samples = array("d")  # lateness in ms
        self.since = time.monotonic()
        self.pending_max = 0
        self.log_base: dict[str, float] = {}
        self.memory_profile: str | None = None  # "stats"/"trace": bench.memprofile's report
        self.reset()

    def _log_counters(self) -> dict[str, float]:
        el = self.hub.event_log if self.hub is not None else None
        if el is None:
            return {}
        st = el.stats
        return {
            "disk_write_bytes": _write_bytes(),
            "appended": st.appended,
            "written": st.written,
            "batches": st.batches,
            "write_seconds": st.write_seconds,
            "index_seconds": st.index_seconds,
            # (getattr: the harness also measures older hubs, see bench/README.md)
            "snapshots": getattr(st, "snapshots", 0),
            "snapshot_seconds": getattr(st, "snapshot_seconds", 0.0),
            "errors": st.errors,
        }

    def reset(self) -> None:
        self.samples = array("d")
        self.since = time.monotonic()
        self.pending_max = 0
        self.log_base = self._log_counters()
        el = self.hub.event_log if self.hub is not None else None
        if el is not None:
            el.stats.max_pending_seen = 0  # the writer's own high-water mark, from now on

    def log_report(self) -> dict[str, object] | None:
        el = self.hub.event_log if self.hub is not None else None
        if el is None or self.hub is None:
            return None
        now = self._log_counters()
        out: dict[str, object] = {k: round(v - self.log_base.get(k, 0), 4) for k, v in now.items()}
        out.update(
            {
                "pending_max_loop": self.pending_max,
                "pending_max_writer": el.stats.max_pending_seen,
                "pending_now": el.pending,
                "max_pending_limit": el.settings.max_pending,
                "durable_rev": el.durable_rev,
                "rev": self.hub.store.rev,
            }
        )
        return out

    def report(self) -> dict[str, object]:
        s = sorted(self.samples)
        n = len(s)

        def q(p: float) -> float:
            return round(s[min(n - 1, int(p * n))], 3) if n else 0.0

        out: dict[str, object] = {
            "event": "lag",
            "n": n,
            "window_s": round(time.monotonic() - self.since, 3),
            "p50_ms": q(0.50),
            "p99_ms": q(0.99),
            "max_ms": round(s[-1], 3) if n else 0.0,
        }
        log = self.log_report()
        if log is not None:
            out["log"] = log
        if self.memory_profile:
            from . import memprofile

            out["memory"] = memprofile.report()
        return out

    async def run(self) -> None:
        mono = time.monotonic
        el = self.hub.event_log if self.hub is not None else None
        while True:
            t0 = mono()
            await asyncio.sleep(PROBE_INTERVAL_S)
            self.samples.append((mono() - t0 - PROBE_INTERVAL_S) * 1000.0)
            if el is not None:
                p = el.pending
                self.pending_max = max(self.pending_max, p)


async def main(
    host: str,
    port: int,
    data_dir: str | None = None,
    tokens: str | None = None,
    role_read: list[str] | None = None,
    flush_delay_ms: float | None = None,
    log_settings: list[str] | None = None,
    memory_profile: str | None = None,
) -> None:
    # with tokens: every client is the fleet token's "bench" role, reading role_read
    roles = {"bench": Role("bench", read=tuple(role_read or ["**"]))} if tokens else {}
    cfg = HubConfig(host=host, port=port, data_dir=data_dir, tokens_file=tokens, roles=roles)
    if flush_delay_ms is not None:
        cfg.flush_delay_ms = flush_delay_ms
    for item in log_settings or []:  # "snapshot_every=1000000": HubConfig.log_<NAME>
        name, _, value = item.partition("=")
        attr = "log_" + name
        setattr(cfg, attr, type(getattr(cfg, attr))(value))
    server = HubServer(cfg)
    probe = LagProbe(server.hub)
    probe.memory_profile = memory_profile
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, probe.reset)
    loop.add_signal_handler(signal.SIGUSR2, lambda: _emit(probe.report()))
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
        _emit(probe.report())
        task.cancel()
        await server.stop()


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--data-dir", help="run the hub with its event log in DIR")
    ap.add_argument("--tokens", help="require tokens (this token file)")
    ap.add_argument("--role-read", action="append", help="the bench role's read patterns")
    ap.add_argument("--flush-delay-ms", type=float, help="HubConfig.flush_delay_ms")
    ap.add_argument("--log-setting", action="append", metavar="NAME=VALUE", help="a [log] setting")
    ap.add_argument(
        "--memory-profile",
        choices=["stats", "trace"],
        help="add bench.memprofile's breakdown to the lag report (trace: with tracemalloc)",
    )
    args = ap.parse_args()
    setup_logging(args.log_level, "json")
    coro = main(
        args.host,
        args.port,
        args.data_dir,
        args.tokens,
        args.role_read,
        args.flush_delay_ms,
        args.log_setting,
        args.memory_profile,
    )
    if args.memory_profile == "trace":
        from . import memprofile

        memprofile.start()
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    cli()
