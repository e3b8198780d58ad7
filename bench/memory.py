"""(d) Memory: hub RSS per key with 100,000 and 1,000,000 keys of ~45-byte JSON values.

As ``companion-hub serve`` runs by default: the event log on, in a (temporary) data
directory. A client loads the keys through batched ``set`` (500 entries a batch) and
stays connected; then the bench waits until the log has caught up (``/health/ready``:
``durable_rev`` equals ``rev`` and nothing is pending) and the hub has been idle for a
moment, and reads the hub's RSS (psutil). Per key = (that RSS - the RSS of the same
hub started and idle just before) / keys. The peak is the highest RSS sampled (every
20 ms) from the start of the load until the measurement. The hub's defaults apply, so
this includes the change history kept for resume (``history_changes`` = 1,000,000
entries) and the log's compact snapshots (every 200,000 changes). The same
measurement without the event log, and with the log in memory (``--data-dir
memory``), are further rows.

    .venv/bin/python -m bench.memory [--keys 100000,1000000] [--runs 1] [--modes disk,none,memory]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import aiohttp

from companion_hub.client import connect_raw

from .common import (
    HubProcess,
    cam_value,
    median,
    preload,
    run_loop,
    save,
    table_row,
    watchdog,
)

NAME = "memory"
FLOOR_BPK = 400
REFERENCE_TS_BPK = 620
SAMPLE_S = 0.02


class PeakRss:
    """Samples a process's RSS in a thread; ``peak`` is the highest seen."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.hub.rss())
            except Exception:  # the process went away
                return
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _caught_up(session: aiohttp.ClientSession, hub: HubProcess, timeout: float) -> float:
    """Wait until the log has everything (durable_rev == rev, nothing pending); returns
    the seconds waited. Without the log: at once."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        async with session.get(hub.http_url + "/health/ready") as resp:
            doc = await resp.json()
        if "durable_rev" not in doc:
            return 0.0
        if doc["durable_rev"] == doc["rev"] and doc["log_pending"] == 0:
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the event log did not catch up: {doc}")
        await asyncio.sleep(0.05)


async def _load(hub: HubProcess, n_keys: int) -> dict[str, Any]:
    await asyncio.sleep(1.0)
    rss0 = hub.rss()
    keys = [f"app.writer.k{i:07d}" for i in range(n_keys)]
    async with aiohttp.ClientSession() as session:
        with PeakRss(hub) as peak:
            loader = await connect_raw(hub.ws_url, "writer", session=session)
            load_s = await preload(loader, keys, cam_value)
            catch_up_s = await _caught_up(session, hub, 120.0)
            # the log indexes its tail after ~2 s without new rows: let it settle
            await asyncio.sleep(3.0)
            rss1 = hub.rss()
            lag = hub.lag_report()
        await loader.close()
    return {
        "rss_empty": rss0,
        "rss_loaded": rss1,
        "rss_peak": peak.peak,
        "bytes_per_key": round((rss1 - rss0) / n_keys, 1),
        "peak_bytes_per_key": round((peak.peak - rss0) / n_keys, 1),
        "load_s": round(load_s, 2),
        "keys_per_s": round(n_keys / load_s),
        "log_catch_up_s": round(catch_up_s, 2),
        "log_pending_max": (lag.get("log") or {}).get("pending_max_writer"),
        "log": lag.get("log"),
        "memory": lag.get("memory"),
    }


MODES = {
    "disk": "with the event log",
    "none": "without the event log",
    "memory": "with the event log in memory (`--data-dir memory`)",
}


def rows(r: dict[str, Any]) -> list[list[str]]:
    out = []
    for m in r["measurements"]:
        n = m["keys"]
        bpk = m["median_bytes_per_key"]
        gate = m["mode"] == "disk" and n == max(
            x["keys"] for x in r["measurements"] if x["mode"] == "disk"
        )
        first = m["runs"][0]
        catch = (
            f", log caught up {first['log_catch_up_s']} s after the last ack"
            if m["mode"] != "none"
            else ""
        )
        out.append(
            [
                f"(d) hub RSS per key, {n:,} keys of ~45-byte values, {MODES[m['mode']]}",
                f"{bpk:.0f} B/key, peak during the load {m['median_peak_bytes_per_key']:.0f} B/key "
                f"(load {first['keys_per_s']:,} keys/s via batched set{catch})",
                f"<= {FLOOR_BPK} B/key" if gate else "-",
                f"~{REFERENCE_TS_BPK} B/key" if gate else "-",
                ("yes" if bpk <= FLOOR_BPK else "**no**") if gate else "-",
            ]
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="(d) memory benchmark")
    ap.add_argument("--keys", default="100000,1000000", help="comma-separated key counts")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument(
        "--modes",
        default="disk,none,memory",
        help="comma-separated: disk (the log in a data dir, as serve runs), none (no log), "
        "memory (the log in memory, serve --data-dir memory)",
    )
    ap.add_argument("--log-setting", action="append", metavar="NAME=VALUE", help="a [log] setting")
    ap.add_argument(
        "--profile",
        choices=["stats", "trace"],
        help="the hub's memory breakdown (bench.memprofile; trace: with tracemalloc)",
    )
    args = ap.parse_args(argv)
    counts = [int(k) for k in args.keys.split(",")]
    configs = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in configs):
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    watchdog(args.runs * len(configs) * sum(60 + k / 5_000 for k in counts) + 60)
    measurements = []
    for mode in configs:
        for n in counts:
            runs = []
            for _ in range(args.runs):
                with HubProcess(
                    log=mode != "none",
                    data_dir=":memory:" if mode == "memory" else None,
                    log_settings=args.log_setting,
                    memory_profile=args.profile,
                ) as hub:
                    runs.append(run_loop(_load(hub, n)))
                print(f"  {n:,} keys, log={mode}: {runs[-1]}", flush=True)
            measurements.append(
                {
                    "keys": n,
                    "mode": mode,
                    "median_bytes_per_key": median(r["bytes_per_key"] for r in runs),
                    "median_peak_bytes_per_key": median(r["peak_bytes_per_key"] for r in runs),
                    "runs": runs,
                }
            )
    result = {
        "params": {"keys": counts, "runs": args.runs, "value_example": cam_value(123)},
        "measurements": measurements,
    }
    save(NAME, result)
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    main()
