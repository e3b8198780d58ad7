"""(b) Fan-out throughput and convergence, and (e) the hub's event-loop lag meanwhile.

One ``writer`` client updates 1,000 keys round-robin as fast as the hub accepts
(``set`` requests, a window of 200 un-acknowledged ones in flight, packed up to 50
per frame as the protocol allows), while 100 subscribers to ``**`` spread over 4
client processes keep a mirror of what they receive. After ~10 s of writing, the
writer reports the version each key ended at; each subscriber waits until its
mirror equals that state and reports when the last needed delta arrived.

Reported (medians over runs, each run on a fresh hub):
- accepted writes/s: acknowledged ``set`` results / (last ack - first send);
- delivered deltas/s: deltas received by all subscribers while the writer ran;
- convergence: last needed delta at the slowest subscriber - writer's last ack;
- (e) hub event-loop lag p50/p99/max during the writing (``bench.hub_proc`` probe).

Each round runs the hub twice, on fresh hubs, in alternating order: as
``companion-hub serve`` runs it (the event log on, in a temporary data directory:
the table's main rows) and without the event log (its own rows);
``--skip-without-log``: only the first. Reference in the same run: the writer alone
(no subscribers, event log on) for 5 s, once per round.

    .venv/bin/python -m bench.fanout [--runs 3] [--duration 10] [--profile] [--skip-without-log]

``--sse N``: only (b), with N of the subscribers on Server-Sent Events
(``GET /api/stream?pattern=**``) and the rest on the WebSocket, in the same run;
deltas/s, delivered fraction and convergence by kind (results in ``fanout_sse.json``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from .common import CpuMeter, HubProcess, median, save, table_row, wait_quiet, watchdog, workers
from .load import BIN_S, sse_worker, sub_worker, writer_worker
from .profile import Profiler

NAME = "fanout"
FLOOR_WPS = 20_000
FLOOR_CONV_MS = 200
FLOOR_LAG_P99_MS = 20
REFERENCE_TS_WPS = 2_330
QUIET_CORES = 0.3  # a run during which other users took less CPU than this is "quiet"


def run_once(
    *,
    subs: int,
    procs: int,
    keys: int,
    duration: float,
    window: int,
    per_frame: int,
    profile: str | None = None,
    data_dir: str | None = None,
    after_write: Callable[[HubProcess, dict[str, Any]], dict[str, Any]] | None = None,
    auth_read: list[str] | None = None,
    sse: int = 0,
    log: bool = True,
) -> dict[str, Any]:
    """One run on a fresh hub. As ``companion-hub serve`` runs it: with its event log in
    ``data_dir`` (a temporary directory when not given); ``log=False``: without the event
    log (ignored when ``data_dir`` is given);
    ``after_write(hub, writer_report)`` is called once the writer is done (its result
    goes into the run's ``after_write``), while the hub and the clients still run.
    ``sse``: that many of the ``subs`` subscribers use Server-Sent Events (in their own
    client processes, see :func:`_split`); the run then has ``by_kind``."""
    params = {"duration": duration, "window": window, "per_frame": per_frame}
    quiet = wait_quiet()
    with HubProcess(data_dir=data_dir, auth_read=auth_read, log=log) as hub:
        specs: list[Any] = []
        kinds: list[str] = []
        for kind, n_kind, n_procs in _split(subs, sse, procs):
            first = 0
            for n in _spread(n_kind, n_procs):
                if kind == "sse":
                    specs.append((sse_worker, (hub.http_url, first, n)))
                else:
                    specs.append((sub_worker, (hub.ws_url, first, n, "fanout")))
                kinds.append(kind)
                first += n
        specs.append((writer_worker, (hub.ws_url, keys, "window", params)))
        with workers(specs) as ws:
            sub_ws, writer = ws[:-1], ws[-1]
            for w in ws:
                tag, _ = w.recv(60)
                assert tag == "ready"
            t0 = time.monotonic() + 0.3
            for w in ws:
                w.send(("go", t0, 0))
            time.sleep(max(0.0, t0 - time.monotonic()))
            hub.lag_reset()
            cpu0 = hub.cpu_seconds()
            meter = CpuMeter()
            prof = Profiler(hub.pid, duration * 0.8, profile) if profile else None
            _, wr = writer.recv(duration + 60)
            noise = meter.stop()
            lag = hub.lag_report()
            hub_cpu = hub.cpu_seconds() - cpu0
            prof_top = prof.finish() if prof else None
            extra = after_write(hub, wr) if after_write else None
            for w in sub_ws:
                w.send(("final", wr["final"], 10.0))
            reports = [w.recv(40)[1] for w in sub_ws]
            writer.send(("close",))
        rss = hub.rss() if hub.proc and hub.proc.poll() is None else 0
    write_s = wr["last_ack"] - wr["t_start"]
    last_bin = int((wr["last_ack"] - t0) / BIN_S)
    all_subs = [s for r in reports for s in r["subs"]]
    delivered = sum(sum(s["bins"][: last_bin + 1]) for s in all_subs)
    conv = [s["converged_at"] for s in all_subs]
    ok = all(c is not None for c in conv)
    conv_ms = (max(c for c in conv) - wr["last_ack"]) * 1000 if ok and conv else None
    by_kind = None
    if sse:
        by_kind = {
            kind: _kind_stats(
                [s for k, r in zip(kinds, reports, strict=True) if k == kind for s in r["subs"]],
                wr,
                last_bin,
                write_s,
            )
            for kind in ("ws", "sse")
            if kind in kinds
        }
    return {
        "accepted": wr["acked"],
        "errors": wr["errors"],
        "first_error": wr["first_error"],
        "frames": wr["frames"],
        "write_s": round(write_s, 3),
        "writes_per_s": round(wr["acked"] / write_s),
        "delivered_deltas": delivered,
        "delivered_per_s": round(delivered / write_s) if subs else 0,
        "delivered_fraction": round(delivered / (wr["acked"] * subs), 4) if subs else None,
        "all_converged": ok,
        "not_converged": sum(1 for c in conv if c is None),
        "missing_keys_max": max((s["missing"] for s in all_subs), default=0),
        "convergence_ms_raw": round(conv_ms, 2) if conv_ms is not None else None,
        "convergence_ms": round(max(0.0, conv_ms), 2) if conv_ms is not None else None,
        "version_violations": sum(s["violations"] for s in all_subs),
        "hub_lag": lag,
        "hub_cpu_s": round(hub_cpu, 2),
        "hub_cpu_util": round(hub_cpu / write_s, 2),
        "hub_rss_end": rss,
        "cpu": noise,
        "quiet_gate": quiet,
        "max_rev": wr["max_rev"],
        "writer_max_inflight": wr["max_inflight"],
        "event_log": hub.log,
        "profile_top": prof_top,
        "after_write": extra,
        **({"by_kind": by_kind} if by_kind is not None else {}),
    }


def _spread(n: int, procs: int) -> list[int]:
    """``n`` subscribers over ``procs`` processes, as evenly as can be."""
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)] if n else []


def _split(subs: int, sse: int, procs: int) -> list[tuple[str, int, int]]:
    """(kind, subscribers, processes) for each kind of subscriber. Each client process
    runs one kind; the processes go to the kinds in proportion to their subscribers
    (at least one each), so that a process has about as many as with one kind."""
    sse = max(0, min(sse, subs))
    ws = subs - sse
    if not sse:
        return [("ws", ws, procs)] if ws else []
    if not ws:
        return [("sse", sse, procs)]
    p_sse = min(max(1, round(procs * sse / subs)), max(1, procs - 1))
    return [("ws", ws, max(1, procs - p_sse)), ("sse", sse, p_sse)]


def _kind_stats(
    subs: list[dict[str, Any]], wr: dict[str, Any], last_bin: int, write_s: float
) -> dict[str, Any]:
    """Deltas/s, delivered fraction and convergence of one kind's subscribers."""
    delivered = sum(sum(s["bins"][: last_bin + 1]) for s in subs)
    conv = [s["converged_at"] for s in subs]
    ok = all(c is not None for c in conv)
    conv_ms = (max(conv) - wr["last_ack"]) * 1000 if ok and conv else None
    n = len(subs)
    return {
        "subscribers": n,
        "delivered_deltas": delivered,
        "delivered_per_s": round(delivered / write_s) if n else 0,
        "delivered_per_s_per_subscriber": round(delivered / write_s / n) if n else 0,
        "delivered_fraction": round(delivered / (wr["acked"] * n), 4) if n else None,
        "all_converged": ok,
        "not_converged": sum(1 for c in conv if c is None),
        "missing_keys_max": max((s["missing"] for s in subs), default=0),
        "convergence_ms_raw": round(conv_ms, 2) if conv_ms is not None else None,
        "convergence_ms": round(max(0.0, conv_ms), 2) if conv_ms is not None else None,
        "version_violations": sum(s["violations"] for s in subs),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of one configuration's runs."""
    conv_ok = all(r["all_converged"] for r in runs)
    quiet = [r for r in runs if r["cpu"]["other_cores"] < QUIET_CORES]
    return {
        "quiet_runs": len(quiet),
        "quiet_median_writes_per_s": round(median(r["writes_per_s"] for r in quiet))
        if quiet
        else None,
        "quiet_median_convergence_ms": median(r["convergence_ms"] or 0 for r in quiet)
        if quiet
        else None,
        "quiet_median_lag_p99_ms": median(r["hub_lag"]["p99_ms"] for r in quiet) if quiet else None,
        "median_writes_per_s": round(median(r["writes_per_s"] for r in runs)),
        "median_delivered_per_s": round(median(r["delivered_per_s"] for r in runs)),
        "median_delivered_fraction": median(r["delivered_fraction"] for r in runs),
        "all_converged": conv_ok,
        "median_convergence_ms": round(median(r["convergence_ms"] for r in runs), 1)
        if conv_ok
        else None,
        "max_convergence_ms": max(r["convergence_ms"] for r in runs) if conv_ok else None,
        "median_lag_p50_ms": median(r["hub_lag"]["p50_ms"] for r in runs),
        "median_lag_p99_ms": median(r["hub_lag"]["p99_ms"] for r in runs),
        "median_lag_max_ms": median(r["hub_lag"]["max_ms"] for r in runs),
        "median_hub_cpu_util": median(r["hub_cpu_util"] for r in runs),
        "version_violations": sum(r["version_violations"] for r in runs),
    }


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    common = {
        "keys": args.keys,
        "window": args.window,
        "per_frame": args.per_frame,
    }
    configs = [True] if args.skip_without_log else [True, False]
    runs: dict[bool, list[dict[str, Any]]] = {c: [] for c in configs}
    refs = []
    for i in range(args.runs):
        # alternating order: with the log first in odd rounds, without first in even ones
        for log in configs if i % 2 == 0 else configs[::-1]:
            r = run_once(
                subs=args.subs,
                procs=args.procs,
                duration=args.duration,
                profile=args.profile if i == 0 and log else None,
                log=log,
                **common,
            )
            runs[log].append(r)
            print(
                f"  run {i + 1} ({'event log on' if log else 'without the event log'}): "
                f"{r['writes_per_s']:,} writes/s, {r['delivered_per_s']:,} deltas/s, "
                f"converged {r['all_converged']} in {r['convergence_ms']} ms, "
                f"lag p99 {r['hub_lag']['p99_ms']} ms, hub cpu {r['hub_cpu_util']}, "
                f"other users' cpu {r['cpu']['other_cores']} cores",
                flush=True,
            )
        ref = run_once(subs=0, procs=0, duration=args.ref_duration, **common)
        refs.append(ref)
        print(f"  reference (no subscribers): {ref['writes_per_s']:,} writes/s", flush=True)
    with_log = _summary(runs[True])
    result = {
        "params": {
            "subscribers": args.subs,
            "client_processes": args.procs,
            "keys": args.keys,
            "duration_s": args.duration,
            "window": args.window,
            "sets_per_frame_max": args.per_frame,
            "runs": args.runs,
            "event_log": True,
        },
        **with_log,
        "median_ref_writes_per_s": round(median(r["writes_per_s"] for r in refs)),
        "runs": runs[True],
        "reference_runs": refs,
    }
    if False in runs:
        without = _summary(runs[False])
        # with the log / without, per round and of the medians
        per_round = [
            round(a["writes_per_s"] / b["writes_per_s"], 3)
            for a, b in zip(runs[True], runs[False], strict=True)
        ]
        result["without_log"] = {
            **without,
            "ratio_writes_with_log": round(
                with_log["median_writes_per_s"] / without["median_writes_per_s"], 3
            ),
            "ratio_writes_with_log_per_round": per_round,
            "runs": runs[False],
        }
    return result


AUTH_READ = ["app.**"]  # the role of the auth rows: read patterns, checked per delta


def _compare_auth(args: argparse.Namespace) -> dict[str, Any]:
    """(b) without and with tokens, alternating in the same run: every client uses a
    token whose role has read patterns (``AUTH_READ``), so each delta to each
    subscriber passes the role's read check."""
    common = {"keys": args.keys, "window": args.window, "per_frame": args.per_frame}
    off, on = [], []
    for i in range(args.runs):
        for label, auth, out in (("auth off", None, off), ("auth on", AUTH_READ, on)):
            r = run_once(
                subs=args.subs, procs=args.procs, duration=args.duration, auth_read=auth, **common
            )
            out.append(r)
            print(
                f"  round {i + 1} {label}: {r['writes_per_s']:,} writes/s, "
                f"converged {r['all_converged']} in {r['convergence_ms']} ms, "
                f"errors {r['errors']}, other users' cpu {r['cpu']['other_cores']} cores",
                flush=True,
            )
    m_off = median(r["writes_per_s"] for r in off)
    m_on = median(r["writes_per_s"] for r in on)
    result = {
        "auth_read": AUTH_READ,
        "median_writes_per_s_auth_off": round(m_off),
        "median_writes_per_s_auth_on": round(m_on),
        "ratio_on_off": round(m_on / m_off, 3),
        "all_converged": all(r["all_converged"] for r in off + on),
        "errors": sum(r["errors"] for r in off + on),
        "runs_auth_off": off,
        "runs_auth_on": on,
    }
    print(
        f"| (b) with tokens (a role reading {', '.join(AUTH_READ)}) vs without, same run | "
        f"{round(m_on):,}/s vs {round(m_off):,}/s (x{m_on / m_off:.2f}) |",
        flush=True,
    )
    return result


_KIND_NAMES = {"sse": "SSE", "ws": "WebSocket"}


def _compare_sse(args: argparse.Namespace) -> dict[str, Any]:
    """(b) with ``args.sse`` of the subscribers on Server-Sent Events and the rest on
    the WebSocket, in the same runs: delivered deltas/s, delivered fraction and
    convergence by kind, and the writer's accepted writes/s."""
    common = {"keys": args.keys, "window": args.window, "per_frame": args.per_frame}
    sse = max(0, min(args.sse, args.subs))
    runs = []
    for i in range(args.runs):
        r = run_once(subs=args.subs, procs=args.procs, duration=args.duration, sse=sse, **common)
        runs.append(r)
        kinds = "; ".join(
            f"{_KIND_NAMES[k]} x{v['subscribers']}: {v['delivered_per_s']:,} deltas/s "
            f"({(v['delivered_fraction'] or 0) * 100:.0f}%), converged {v['all_converged']} "
            f"in {v['convergence_ms']} ms"
            for k, v in r["by_kind"].items()
        )
        print(
            f"  run {i + 1}: {r['writes_per_s']:,} writes/s; {kinds}; "
            f"lag p99 {r['hub_lag']['p99_ms']} ms, hub cpu {r['hub_cpu_util']}, "
            f"other users' cpu {r['cpu']['other_cores']} cores",
            flush=True,
        )
    by_kind: dict[str, Any] = {}
    for k in runs[0]["by_kind"]:
        ks = [r["by_kind"][k] for r in runs]
        ok = all(x["all_converged"] for x in ks)
        by_kind[k] = {
            "subscribers": ks[0]["subscribers"],
            "median_delivered_per_s": round(median(x["delivered_per_s"] for x in ks)),
            "median_delivered_per_s_per_subscriber": round(
                median(x["delivered_per_s_per_subscriber"] for x in ks)
            ),
            "median_delivered_fraction": median(x["delivered_fraction"] for x in ks),
            "all_converged": ok,
            "median_convergence_ms": round(median(x["convergence_ms"] for x in ks), 1)
            if ok
            else None,
            "max_convergence_ms": max(x["convergence_ms"] for x in ks) if ok else None,
            "version_violations": sum(x["version_violations"] for x in ks),
        }
    result = {
        "params": {
            "subscribers": args.subs,
            "sse_subscribers": sse,
            "client_processes": args.procs,
            "client_processes_by_kind": {k: p for k, _, p in _split(args.subs, sse, args.procs)},
            "keys": args.keys,
            "duration_s": args.duration,
            "window": args.window,
            "sets_per_frame_max": args.per_frame,
            "runs": args.runs,
        },
        "median_writes_per_s": round(median(r["writes_per_s"] for r in runs)),
        "median_lag_p99_ms": median(r["hub_lag"]["p99_ms"] for r in runs),
        "all_converged": all(r["all_converged"] for r in runs),
        "by_kind": by_kind,
        "runs": runs,
    }
    cells = []
    for k in ("sse", "ws"):
        if k in by_kind:
            v = by_kind[k]
            conv = (
                f"converged in {v['median_convergence_ms']:.0f} ms "
                f"(max {v['max_convergence_ms']:.0f} ms)"
                if v["all_converged"]
                else "**not converged**"
            )
            cells.append(
                f"{_KIND_NAMES[k]}: {v['median_delivered_per_s']:,} deltas/s "
                f"({v['median_delivered_per_s_per_subscriber']:,}/s each, "
                f"{v['median_delivered_fraction'] * 100:.0f}% of writes x subscribers), {conv}"
            )
    print(
        f"| (b) with {sse} SSE + {args.subs - sse} WebSocket subscribers: deltas/s and "
        f"convergence by kind | {'; '.join(cells)}; writer {result['median_writes_per_s']:,} "
        "writes/s |",
        flush=True,
    )
    return result


def _quiet(r: dict[str, Any], field: str, fmt: str) -> str:
    """The median over the runs during which the rest of the machine was quiet."""
    if not r.get("quiet_runs") or r["quiet_runs"] == r["params"]["runs"]:
        return ""
    return f"; quiet runs only (n={r['quiet_runs']}): {fmt.format(r[field])}"


def rows(r: dict[str, Any]) -> list[list[str]]:
    p = r["params"]
    wps_ok = r["median_writes_per_s"] >= FLOOR_WPS
    conv = r["median_convergence_ms"]
    conv_ok = r["all_converged"] and r["max_convergence_ms"] <= FLOOR_CONV_MS
    lag_ok = r["median_lag_p99_ms"] <= FLOOR_LAG_P99_MS
    yes = lambda b: "yes" if b else "**no**"  # noqa: E731
    # results from before the event log was on by default ran without it
    log = "event log on" if p.get("event_log") else "without the event log"
    out = [
        [
            f"(b) fan-out, {log}: accepted writes/s, 1 writer, {p['keys']:,} keys, "
            f"{p['subscribers']} subscribers to `**`",
            f"{r['median_writes_per_s']:,}/s (writer alone: {r['median_ref_writes_per_s']:,}/s)"
            + _quiet(r, "quiet_median_writes_per_s", "{:,}/s"),
            f">= {FLOOR_WPS:,}/s",
            f"{REFERENCE_TS_WPS:,}/s",
            yes(wps_ok),
        ],
        [
            "(b) fan-out: delivered deltas/s (sum over subscribers)",
            f"{r['median_delivered_per_s']:,}/s "
            f"({r['median_delivered_fraction'] * 100:.0f}% of writes x subscribers; "
            "rest coalesced)",
            "-",
            "-",
            "-",
        ],
        [
            "(b) fan-out: writer's last ack -> every subscriber converged",
            (
                f"{conv:.0f} ms (max of runs {r['max_convergence_ms']:.0f} ms)"
                if conv is not None
                else "not converged"
            )
            + _quiet(r, "quiet_median_convergence_ms", "{:.0f} ms"),
            f"<= {FLOOR_CONV_MS} ms",
            "-",
            yes(conv_ok),
        ],
        [
            "(e) hub event-loop lag during (b), p99 (p50 / max)",
            f"{r['median_lag_p99_ms']:.1f} ms ({r['median_lag_p50_ms']:.1f} / "
            f"{r['median_lag_max_ms']:.1f} ms)" + _quiet(r, "quiet_median_lag_p99_ms", "{:.1f} ms"),
            f"<= {FLOOR_LAG_P99_MS} ms",
            "-",
            yes(lag_ok),
        ],
    ]
    w = r.get("without_log")
    if w:
        wconv = (
            f"converged in {w['median_convergence_ms']:.0f} ms "
            f"(max {w['max_convergence_ms']:.0f} ms)"
            if w["all_converged"]
            else "**not converged**"
        )
        out += [
            [
                "(b) fan-out without the event log (same run): accepted writes/s; "
                "delivered deltas/s; convergence",
                f"{w['median_writes_per_s']:,}/s (with the log x{w['ratio_writes_with_log']:.2f}); "
                f"{w['median_delivered_per_s']:,}/s "
                f"({w['median_delivered_fraction'] * 100:.0f}%); {wconv}",
                "-",
                "-",
                "-",
            ],
            [
                "(e) hub event-loop lag during (b) without the event log, p99 (p50 / max)",
                f"{w['median_lag_p99_ms']:.1f} ms ({w['median_lag_p50_ms']:.1f} / "
                f"{w['median_lag_max_ms']:.1f} ms)",
                "-",
                "-",
                "-",
            ],
        ]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="(b) fan-out and (e) loop lag benchmark")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--ref-duration", type=float, default=5.0)
    ap.add_argument("--subs", type=int, default=100)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--per-frame", type=int, default=50)
    ap.add_argument("--profile", metavar="FILE", help="py-spy record the hub (first run)")
    ap.add_argument(
        "--compare-auth",
        action="store_true",
        help="only (b) without and with tokens, alternating (results in fanout_auth.json)",
    )
    ap.add_argument(
        "--sse",
        type=int,
        default=0,
        metavar="N",
        help="only (b), with N of the --subs subscribers on Server-Sent Events and the "
        "rest on the WebSocket (results in fanout_sse.json)",
    )
    ap.add_argument(
        "--skip-without-log",
        action="store_true",
        help="only the hub as `serve` runs it (event log on), not also without the log",
    )
    args = ap.parse_args(argv)
    n_configs = 1 if args.skip_without_log or args.sse or args.compare_auth else 2
    watchdog(args.runs * ((args.duration + 120) * 2 * n_configs + args.ref_duration + 120) + 60)
    if args.sse:
        result = _compare_sse(args)
        save(NAME + "_sse", result)
        return result
    if args.compare_auth:
        auth = _compare_auth(args)
        save(NAME + "_auth", auth)
        return auth
    result = _bench(args)
    save(NAME, result)
    for row in rows(result):
        print(table_row(row))
    return result


if __name__ == "__main__":
    main()
