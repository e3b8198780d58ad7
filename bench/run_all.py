"""Run every benchmark (each in its own process) and regenerate the table in README.md.

    .venv/bin/python -m bench.run_all            # all: snapshot, fanout, ..., eventlog, mqtt
    .venv/bin/python -m bench.run_all --only fanout latency
    .venv/bin/python -m bench.run_all --table    # only regenerate the table from results/

Bounded: each benchmark has its own time limit (and a watchdog inside); the whole
run takes about 22-31 minutes depending on how busy the machine is (mqtt ~6,
fanout ~2-5 and latency ~2-4: each runs the hub with and without the event log,
companion ~2-3, mosquitto ~2.5).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from . import companion, eventlog, fanout, latency, memory, mosquitto, mqtt, snapshot
from .common import RESULTS, ROOT, table_row

BENCHES = {
    # snapshot, fanout, latency: with the event log (as `serve`) and without, same run
    "snapshot": (snapshot, 400),
    "fanout": (fanout, 720),
    "latency": (latency, 540),
    "memory": (memory, 600),  # 100,000 and 1,000,000 keys, log on disk / none / in memory
    "companion": (companion, 330),  # polling and Ember+ runs, alternating
    "eventlog": (eventlog, 270),
    "mqtt": (mqtt, 480),
    "mosquitto": (mosquitto, 600),  # (b) with the log vs Mosquitto, same run (~2.5 min)
}
README = ROOT / "bench" / "README.md"
START = "<!-- results:start -->"
END = "<!-- results:end -->"


def run(name: str, extra: list[str]) -> bool:
    _, limit = BENCHES[name]
    print(f"== {name}", flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *extra], cwd=ROOT, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"   {name}: timed out after {limit} s", flush=True)
        return False
    print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    return proc.returncode == 0


def table() -> str:
    lines = [
        table_row(["workload", "companion-hub (median)", "floor", "reference (TS)", "meets floor"]),
        table_row(["---"] * 5),
    ]
    meta: dict[str, Any] = {}
    for name, (mod, _) in BENCHES.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            lines.append(table_row([name, "not run", "", "", ""]))
            continue
        r = json.loads(path.read_text())
        meta.setdefault("machine", r.get("machine"))
        meta.setdefault("placement", r.get("placement"))
        meta.setdefault("dates", []).append(f"{name} {r['date']} (commit {r['commit']})")
        lines.extend(table_row(row) for row in mod.rows(r))
    m = meta.get("machine") or {}
    pl = meta.get("placement") or {}
    lines += [
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('mem_gb', '?')} GiB, Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}, "
        f"aiohttp {m.get('aiohttp', '?')}, msgspec {m.get('msgspec', '?')}; hub on uvloop. "
        f"CPU placement: hub on CPUs {pl.get('hub_cpus')}, clients on {pl.get('client_cpus')}.",
        "",
        "Runs: " + "; ".join(meta.get("dates", [])) + ".",
    ]
    return "\n".join(lines)


def write_table() -> None:
    text = README.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(BENCHES), help="run only these")
    ap.add_argument("--table", action="store_true", help="only regenerate the README table")
    args = ap.parse_args()
    ok = True
    if not args.table:
        for name in args.only or list(BENCHES):
            ok = run(name, []) and ok
    write_table()
    print(table())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
