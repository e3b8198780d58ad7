"""(a) Snapshot: a new client's time to a full snapshot of 100,000 keys.

The hub (own process) is preloaded with 100,000 keys of ~45-byte JSON values by a
``writer`` client (batched ``set``, 500 entries a batch; it stays connected so
nothing goes stale). Then, repeatedly, a fresh client connects, says hello,
subscribes to ``**`` and reads snapshot messages until ``done: true``, decoding
every frame. Measured: time from before the TCP connect to the last chunk decoded,
and wire bytes (WebSocket payload + framing) per key received.

Reference in the same run: the same client fetches ``GET /api/state?pattern=**``
(the same entries as one JSON body) and decodes it the same way; the table shows
the median snapshot time divided by the median GET time.

Two hubs, both running at once on the hub's CPU, each preloaded the same way: one as
``companion-hub serve`` runs it (the event log on, in a temporary data directory; the
measurement starts once the log has caught up with the preload and settled) and one
without the event log. The runs alternate between them (log first in odd runs,
without first in even ones), the same number each; ``--skip-without-log``: only the
first.

    .venv/bin/python -m bench.snapshot [--keys 100000] [--runs 7] [--skip-without-log]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import msgspec

from companion_hub.client import ConnectionClosed, connect_raw

from .common import (
    HubProcess,
    SnapEntry,
    cam_value,
    decode_frame,
    median,
    preload,
    run_loop,
    save,
    table_row,
    watchdog,
    ws_frame_overhead,
)

NAME = "snapshot"
FLOOR_S = 0.6
REFERENCE_TS = "1.18 s, 257 B/key"


class _State(msgspec.Struct):
    rev: int
    entries: list[SnapEntry]


_state = msgspec.json.Decoder(_State)


async def snapshot_once(session: aiohttp.ClientSession, url: str, n: int) -> dict[str, Any]:
    """The measured client. It measures the wire (bytes per key, time to the last chunk
    decoded), so it reads whole frames (``RawConnection.receive_frame``) and decodes
    them typed, rather than the SDK's ``subscribe``, which collects the chunks as dicts."""
    t0 = time.perf_counter()
    conn = await connect_raw(url, f"snap{n}", session=session)
    t_hello = time.perf_counter()
    await conn.send({"op": "subscribe", "id": "s", "sub": "all", "patterns": ["**"]})
    keys = wire = frames = 0
    done = False
    while not done:
        try:
            data = await conn.receive_frame(timeout=None)
        except ConnectionClosed as exc:
            raise RuntimeError(f"snapshot: connection ended ({exc.close_code})") from None
        frames += 1
        wire += len(data) + ws_frame_overhead(len(data))
        for m in decode_frame(data):
            if m.op == "snapshot":
                assert m.entries is not None
                keys += len(m.entries)
                done = done or m.done
    t = time.perf_counter() - t0
    await conn.close()
    return {
        "seconds": t,
        "hello_s": t_hello - t0,
        "keys": keys,
        "wire_bytes": wire,
        "frames": frames,
    }


async def http_once(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with session.get(f"{base}/api/state", params={"pattern": "**"}) as resp:
        body = await resp.read()
    state = _state.decode(body)
    return {"seconds": time.perf_counter() - t0, "keys": len(state.entries), "bytes": len(body)}


async def _caught_up(session: aiohttp.ClientSession, hub: HubProcess, timeout: float) -> float:
    """Wait until the event log has everything (``durable_rev == rev``, nothing pending);
    returns the seconds waited. Without the log: at once."""
    t0 = time.perf_counter()
    while True:
        async with session.get(hub.http_url + "/health/ready") as resp:
            doc = await resp.json()
        if "durable_rev" not in doc:
            return 0.0
        if doc["durable_rev"] == doc["rev"] and doc["log_pending"] == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"the event log did not catch up: {doc}")
        await asyncio.sleep(0.05)


def _summary(
    snaps: list[dict[str, Any]], gets: list[dict[str, Any]], load: dict[str, Any]
) -> dict[str, Any]:
    """The medians of one configuration's runs (the fields of the JSON's top level)."""
    t_snap = median(s["seconds"] for s in snaps)
    t_get = median(g["seconds"] for g in gets)
    return {
        **load,
        "median_s": round(t_snap, 4),
        "median_wire_bytes_per_key": round(median(s["wire_bytes"] / s["keys"] for s in snaps), 1),
        "median_get_s": round(t_get, 4),
        "ratio_snapshot_to_get": round(t_snap / t_get, 2),
        "median_hub_cpu_s": round(median(s["hub_cpu_s"] for s in snaps), 4),
        "runs": snaps,
        "get_runs": gets,
    }


async def _bench(hubs: dict[str, HubProcess], n_keys: int, runs: int) -> dict[str, Any]:
    """``hubs``: ``"log"`` (as ``serve`` runs) and, optionally, ``"nolog"``."""
    keys = [f"app.writer.k{i:06d}" for i in range(n_keys)]
    snaps: dict[str, list[dict[str, Any]]] = {c: [] for c in hubs}
    gets: dict[str, list[dict[str, Any]]] = {c: [] for c in hubs}
    load: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:
        loaders = []
        for c, hub in hubs.items():
            loader = await connect_raw(hub.ws_url, "writer", session=session)
            loaders.append(loader)
            load_s = await preload(loader, keys, cam_value)
            catch_up_s = await _caught_up(session, hub, 120.0)
            load[c] = {
                "preload_s": round(load_s, 3),
                "preload_keys_per_s": round(n_keys / load_s),
                "log_catch_up_s": round(catch_up_s, 2),
                "hub_rss_after_preload": hub.rss(),
                "hub_loop": hub.loop,
            }
        # the log indexes its tail after ~2 s without new rows: let it settle
        await asyncio.sleep(3.0)
        for hub in hubs.values():  # warm-up, not counted
            await snapshot_once(session, hub.ws_url, 0)
            await http_once(session, hub.http_url)
        order = list(hubs)
        for i in range(runs):
            for c in order if i % 2 == 0 else order[::-1]:
                hub = hubs[c]
                cpu0 = hub.cpu_seconds()
                s = await snapshot_once(session, hub.ws_url, i + 1)
                s["hub_cpu_s"] = hub.cpu_seconds() - cpu0
                snaps[c].append(s)
                gets[c].append(await http_once(session, hub.http_url))
        for loader in loaders:
            await loader.close()
    out = {
        "params": {
            "keys": n_keys,
            "runs": runs,
            "value_example": cam_value(123),
            "event_log": True,
        },
        **_summary(snaps["log"], gets["log"], load["log"]),
    }
    if "nolog" in hubs:
        out["without_log"] = _summary(snaps["nolog"], gets["nolog"], load["nolog"])
    return out


def rows(r: dict[str, Any]) -> list[list[str]]:
    ok = "yes" if r["median_s"] <= FLOOR_S else "**no**"
    n = r["params"]["keys"]
    # results from before the event log was on by default ran without it
    log = "event log on" if r["params"].get("event_log") else "without the event log"
    out = [
        [
            f"(a) snapshot, {n:,} keys, {log}: connect+hello to last chunk",
            f"{r['median_s']:.3f} s (GET /api/state: {r['median_get_s']:.3f} s, "
            f"ratio {r['ratio_snapshot_to_get']:.2f})",
            f"<= {FLOOR_S} s",
            "1.18 s",
            ok,
        ],
        [
            "(a) snapshot wire bytes per key",
            f"{r['median_wire_bytes_per_key']:.0f} B",
            "-",
            "257 B",
            "-",
        ],
    ]
    w = r.get("without_log")
    if w:
        out.append(
            [
                f"(a) snapshot, {n:,} keys, without the event log (same run)",
                f"{w['median_s']:.3f} s (GET /api/state: {w['median_get_s']:.3f} s, "
                f"ratio {w['ratio_snapshot_to_get']:.2f})",
                "-",
                "-",
                "-",
            ]
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="(a) snapshot benchmark")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--skip-without-log",
        action="store_true",
        help="only the hub as `serve` runs it (event log on), not also without the log",
    )
    args = ap.parse_args(argv)
    watchdog(360)
    with contextlib.ExitStack() as stack:
        hubs = {"log": stack.enter_context(HubProcess())}
        if not args.skip_without_log:
            hubs["nolog"] = stack.enter_context(HubProcess(log=False))
        result = run_loop(_bench(hubs, args.keys, args.runs))
    save(NAME, result)
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    main()
