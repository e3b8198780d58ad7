"""A custom variable created while the hub runs: how long after Companion's Ember+
provider rebuilds its tree does it appear in the hub?

The simulator's provider behaves like Companion 5.1's: a new custom variable rebuilds
the tree after a debounce (2.5 s in Companion; 0.5 s here, to keep the run short: it
is not part of what is measured), and the open connection is abandoned without being
closed. The adapter (its default Ember+ timing) must notice, reconnect and list again.
Measured: from the rebuild to the key in the hub's store, for ``--n`` variables, one
after another, in one process (no pinning: the hub, the simulator and the clock share
the loop, which only makes it slower).

    .venv/bin/python -m bench.ember_rebuild [--n 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from companion_hub.adapters.companion.adapter import CompanionConfig
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from companion_hub.simulator import CompanionSimulator, demo_scenario


async def _wait(pred: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def run(n: int) -> list[float]:
    sim = CompanionSimulator(demo_scenario(), clock=False, ember_port=0)
    sim.ember_rebuild_delay = 0.5
    await sim.start()
    cfg = CompanionConfig(
        host="127.0.0.1",
        satellite_port=sim.satellite_port,
        http_port=sim.http_port,
        ember_port=sim.ember_port or 0,
        pages=[1],
    )
    srv = HubServer(HubConfig(port=0), companions=[cfg])
    await srv.start()
    store = srv.hub.store
    out: list[float] = []
    try:
        await _wait(lambda: store.get("companion.variables.custom.program") is not None, 20)
        ember = sim.ember
        assert ember is not None
        for i in range(n):
            before = ember.rebuilds
            sim.create_custom_variable(f"late{i}", str(i))
            await _wait(lambda b=before: ember.rebuilds > b, 20)
            t0 = time.monotonic()
            await _wait(
                lambda i=i: store.get(f"companion.variables.custom.late{i}") is not None, 20
            )
            out.append(time.monotonic() - t0)
            await asyncio.sleep(0.3)
    finally:
        await srv.stop()
        await sim.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()
    times = asyncio.run(run(args.n))
    ms = sorted(t * 1000 for t in times)
    print(
        f"new custom variable in the hub after the provider's rebuild, {len(ms)} runs: "
        f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms "
        f"(min {ms[0]:.0f} ms)"
    )


if __name__ == "__main__":
    main()
