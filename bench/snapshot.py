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

    .venv/bin/python -m bench.snapshot [--keys 100000] [--runs 7]
"""

from __future__ import annotations

import argparse
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


async def _bench(hub: HubProcess, n_keys: int, runs: int) -> dict[str, Any]:
    keys = [f"app.writer.k{i:06d}" for i in range(n_keys)]
    async with aiohttp.ClientSession() as session:
        loader = await connect_raw(hub.ws_url, "writer", session=session)
        load_s = await preload(loader, keys, cam_value)
        rss = hub.rss()
        snaps: list[dict[str, Any]] = []
        gets: list[dict[str, Any]] = []
        await snapshot_once(session, hub.ws_url, 0)  # warm-up, not counted
        await http_once(session, hub.http_url)
        for i in range(runs):
            cpu0 = hub.cpu_seconds()
            s = await snapshot_once(session, hub.ws_url, i + 1)
            s["hub_cpu_s"] = hub.cpu_seconds() - cpu0
            snaps.append(s)
            gets.append(await http_once(session, hub.http_url))
        await loader.close()
    t_snap = median(s["seconds"] for s in snaps)
    t_get = median(g["seconds"] for g in gets)
    bpk = median(s["wire_bytes"] / s["keys"] for s in snaps)
    return {
        "params": {"keys": n_keys, "runs": runs, "value_example": cam_value(123)},
        "preload_s": round(load_s, 3),
        "preload_keys_per_s": round(n_keys / load_s),
        "hub_rss_after_preload": rss,
        "median_s": round(t_snap, 4),
        "median_wire_bytes_per_key": round(bpk, 1),
        "median_get_s": round(t_get, 4),
        "ratio_snapshot_to_get": round(t_snap / t_get, 2),
        "median_hub_cpu_s": round(median(s["hub_cpu_s"] for s in snaps), 4),
        "runs": snaps,
        "get_runs": gets,
        "hub_loop": hub.loop,
    }


def rows(r: dict[str, Any]) -> list[list[str]]:
    ok = "yes" if r["median_s"] <= FLOOR_S else "**no**"
    return [
        [
            f"(a) snapshot, {r['params']['keys']:,} keys: connect+hello to last chunk",
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="(a) snapshot benchmark")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    watchdog(240)
    with HubProcess() as hub:
        result = run_loop(_bench(hub, args.keys, args.runs))
    save(NAME, result)
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    main()
