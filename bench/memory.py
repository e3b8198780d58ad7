"""(d) Memory: hub RSS per key with 1,000,000 keys of ~45-byte JSON values.

RSS of the hub process (psutil) after loading 1,000,000 keys through batched
``set`` (500 entries a batch) by a client that stays connected, minus the RSS of
the same hub just before (started, idle), divided by the number of keys. The
hub's defaults apply, so this includes the change history kept for resume
(``history_changes`` = 1,000,000 entries).

    .venv/bin/python -m bench.memory [--keys 1000000] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def _load(hub: HubProcess, n_keys: int) -> dict[str, Any]:
    await asyncio.sleep(1.0)
    rss0 = hub.rss()
    keys = [f"app.writer.k{i:07d}" for i in range(n_keys)]
    async with aiohttp.ClientSession() as session:
        loader = await connect_raw(hub.ws_url, "writer", session=session)
        load_s = await preload(loader, keys, cam_value)
        await asyncio.sleep(1.0)
        rss1 = hub.rss()
        await loader.close()
    return {
        "rss_empty": rss0,
        "rss_loaded": rss1,
        "bytes_per_key": round((rss1 - rss0) / n_keys, 1),
        "load_s": round(load_s, 2),
        "keys_per_s": round(n_keys / load_s),
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    ok = r["median_bytes_per_key"] <= FLOOR_BPK
    return [
        [
            f"(d) hub RSS per key, {r['params']['keys']:,} keys of ~45-byte values",
            f"{r['median_bytes_per_key']:.0f} B/key "
            f"(load {r['runs'][0]['keys_per_s']:,} keys/s via batched set)",
            f"<= {FLOOR_BPK} B/key",
            f"~{REFERENCE_TS_BPK} B/key",
            "yes" if ok else "**no**",
        ]
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="(d) memory benchmark")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args(argv)
    watchdog(args.runs * 120 + 30)
    runs = []
    for _ in range(args.runs):
        with HubProcess() as hub:
            runs.append(run_loop(_load(hub, args.keys)))
        print(f"  run: {runs[-1]}", flush=True)
    result = {
        "params": {"keys": args.keys, "runs": args.runs, "value_example": cam_value(123)},
        "median_bytes_per_key": median(r["bytes_per_key"] for r in runs),
        "runs": runs,
    }
    save(NAME, result)
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    main()
