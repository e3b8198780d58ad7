"""The hub under test, in its own process, with an opt-in event-loop lag probe.

Same code path as ``companion-hub serve`` (``HubServer`` on uvloop when importable,
logging set up the same way), plus one task that sleeps 10 ms in a loop and records
how late it wakes up. It talks to the benchmark over stdout, one JSON object a line:

- ``{"event":"ready","port":P,"pid":N,"loop":"uvloop"}`` once listening;
- SIGUSR1 resets the lag samples; SIGUSR2 prints ``{"event":"lag",...}``;
- SIGTERM prints a final ``{"event":"lag",...}`` and stops the hub.

    python -m bench.hub_proc --port 0
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

from companion_hub.logs import setup_logging
from companion_hub.server.app import HubServer
from companion_hub.server.hub import HubConfig

PROBE_INTERVAL_S = 0.010


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class LagProbe:
    def __init__(self) -> None:
        self.samples = array("d")  # lateness in ms
        self.since = time.monotonic()

    def reset(self) -> None:
        self.samples = array("d")
        self.since = time.monotonic()

    def report(self) -> dict[str, object]:
        s = sorted(self.samples)
        n = len(s)

        def q(p: float) -> float:
            return round(s[min(n - 1, int(p * n))], 3) if n else 0.0

        return {
            "event": "lag",
            "n": n,
            "window_s": round(time.monotonic() - self.since, 3),
            "p50_ms": q(0.50),
            "p99_ms": q(0.99),
            "max_ms": round(s[-1], 3) if n else 0.0,
        }

    async def run(self) -> None:
        mono = time.monotonic
        while True:
            t0 = mono()
            await asyncio.sleep(PROBE_INTERVAL_S)
            self.samples.append((mono() - t0 - PROBE_INTERVAL_S) * 1000.0)


async def main(host: str, port: int) -> None:
    probe = LagProbe()
    server = HubServer(HubConfig(host=host, port=port))
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
    args = ap.parse_args()
    setup_logging(args.log_level, "json")
    coro = main(args.host, args.port)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    cli()
