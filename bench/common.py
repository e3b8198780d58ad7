"""Shared helpers: the hub subprocess, the clients' typed decoding, statistics, results.

The clients connect and send with the SDK's :func:`companion_hub.client.connect_raw`.
Where a client is what a benchmark measures (the subscribers of (b), (c) and (f), the
writer's acknowledgements, the snapshot client of (a), the preloads), it reads whole
frames (:meth:`RawConnection.receive_frame`) and decodes them itself with the typed
decoders below, as fast as it can: it measures the wire, not the SDK's dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil

from companion_hub.client import ConnectionClosed, RawConnection

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# --- CPU placement --------------------------------------------------------------------
#
# On a small machine the load generators would otherwise take CPU time from the hub
# (and the hub's numbers would measure the scheduler). By default the hub gets CPU 0
# to itself and every client process (and the coordinator) runs on the other CPUs.
# ``BENCH_NO_PIN=1`` turns this off.

_ALL_CPUS = sorted(os.sched_getaffinity(0))
PIN = len(_ALL_CPUS) >= 2 and not os.environ.get("BENCH_NO_PIN")
HUB_CPUS: set[int] = {_ALL_CPUS[0]} if PIN else set()
CLIENT_CPUS: set[int] = set(_ALL_CPUS[1:]) if PIN else set()


def pin_clients() -> None:
    """Move this process (a client or the coordinator) onto the clients' CPUs."""
    if CLIENT_CPUS:
        os.sched_setaffinity(0, CLIENT_CPUS)


def placement() -> dict[str, Any]:
    return {"pinned": PIN, "hub_cpus": sorted(HUB_CPUS), "client_cpus": sorted(CLIENT_CPUS)}


# --- the hub process -------------------------------------------------------------------


TOKEN_ENV = "BENCH_HUB_TOKEN"


def hub_token() -> str | None:
    """The token the clients say hello with (set by a HubProcess with auth_read)."""
    return os.environ.get(TOKEN_ENV) or None


class HubProcess:
    """``bench.hub_proc`` in a subprocess; ``with HubProcess() as hub: hub.url``.

    As ``companion-hub serve`` runs it by default: with its event log, in ``data_dir``
    (``--data-dir``; a fresh temporary directory, removed at stop, when not given).
    ``log=False``: without the event log (the hub keeps its state in memory only)."""

    def __init__(
        self,
        cpus: set[int] | None = None,
        data_dir: str | None = None,
        auth_read: list[str] | None = None,
        flush_delay_ms: float | None = None,
        log: bool = True,
        log_settings: list[str] | None = None,
        memory_profile: str | None = None,
    ) -> None:
        self.cpus = HUB_CPUS if cpus is None else cpus
        self.log = log or data_dir is not None
        self.data_dir = data_dir
        self._own_data_dir: str | None = None
        self.log_settings = log_settings or []  # "NAME=VALUE": [log] settings
        self.memory_profile = memory_profile  # "stats"/"trace": see bench.memprofile
        self.flush_delay_ms = flush_delay_ms  # None: the hub's default
        # auth_read: run with tokens; every client uses one fleet token whose role
        # reads these patterns (the token goes to the client processes through the
        # BENCH_HUB_TOKEN environment variable, see hub_token())
        self.auth_read = auth_read
        self._tokens_dir: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.pid = 0
        self.loop = ""
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._log = tempfile.NamedTemporaryFile(prefix="hub-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self, timeout: float = 20.0) -> HubProcess:
        auth: list[str] = []
        if self.auth_read is not None:
            from companion_hub.auth.tokens import TokenStore

            self._tokens_dir = tempfile.mkdtemp(prefix="bench-tokens-")
            path = os.path.join(self._tokens_dir, "tokens.json")
            os.environ[TOKEN_ENV] = TokenStore.load(path).add("bench", "bench", client="*")
            auth = ["--tokens", path, *(a for p in self.auth_read for a in ("--role-read", p))]
        else:
            os.environ.pop(TOKEN_ENV, None)
        if self.log and self.data_dir is None:
            self.data_dir = self._own_data_dir = tempfile.mkdtemp(prefix="bench-hub-data-")
        self._launch(
            [
                "-m",
                "bench.hub_proc",
                "--port",
                "0",
                *(["--data-dir", self.data_dir] if self.data_dir else []),
                *(
                    ["--flush-delay-ms", str(self.flush_delay_ms)]
                    if self.flush_delay_ms is not None
                    else []
                ),
                *auth,
                *(a for item in self.log_settings for a in ("--log-setting", item)),
                *(["--memory-profile", self.memory_profile] if self.memory_profile else []),
            ],
            timeout,
        )
        return self

    def _launch(self, argv: list[str], timeout: float) -> None:
        """Start ``python argv...`` pinned to ``self.cpus``; wait for its "ready" line."""
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None,  # noqa: PLW1509
        )
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._wait("ready", timeout)
        self.port, self.pid, self.loop = ready["port"], ready["pid"], ready["loop"]

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))

    def _wait(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"hub did not report {event!r}; log: {self._log.name}")
            try:
                obj = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited; log: {self._log.name}") from None
                continue
            if obj.get("event") == event:
                return obj

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lag_reset(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def lag_report(self) -> dict[str, Any]:
        os.kill(self.pid, signal.SIGUSR2)
        return self._wait("lag", 10.0)

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
        if self._own_data_dir is not None:
            shutil.rmtree(self._own_data_dir, ignore_errors=True)
            self.data_dir = self._own_data_dir = None

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- client processes ------------------------------------------------------------------

_CTX = mp.get_context("spawn")


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when importable (clients too, to be fast)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class Worker:
    """A client process with a duplex pipe: ``send`` commands, ``recv`` reports."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_bootstrap, args=(target, child, *args), daemon=True)
        self.proc.start()
        child.close()

    def send(self, obj: Any) -> None:
        self.conn.send(obj)

    def recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.proc.pid} did not answer within {timeout} s")
        return self.conn.recv()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(3)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(3)


def _bootstrap(target: Callable[..., None], *args: Any) -> None:
    pin_clients()
    target(*args)


@contextlib.contextmanager
def workers(specs: Iterable[tuple[Callable[..., None], tuple[Any, ...]]]) -> Any:
    ws = [Worker(target, *args) for target, args in specs]
    try:
        yield ws
    finally:
        for w in ws:
            w.stop()


async def pipe_recv(conn: Any) -> Any:
    """Await the next object from a multiprocessing connection without blocking the loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, conn.recv)


# --- the protocol, client side ---------------------------------------------------------
#
# Connections, ``hello`` and sending are the SDK's (``connect_raw``, ``RawConnection``).
# What is here decodes the hub's frames into typed structs with only the fields a
# benchmark looks at: cheaper than the SDK's generic dicts, so that the clients keep up.


class SnapEntry(msgspec.Struct):
    key: str
    version: int = 0
    rev: int = 0
    value: msgspec.Raw = msgspec.Raw(b"null")


class Msg(msgspec.Struct):
    """Every field a benchmark client looks at, of any server message."""

    op: str
    id: str | int | None = None
    key: str = ""
    version: int = 0
    rev: int = 0
    deleted: bool = False
    value: msgspec.Raw = msgspec.Raw(b"null")
    entries: list[SnapEntry] | None = None
    done: bool = True
    ok: bool = True
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: Any = None


_one = msgspec.json.Decoder(Msg)
_many = msgspec.json.Decoder(list[Msg])
encode = msgspec.json.Encoder().encode


def decode_frame(data: bytes) -> list[Msg]:
    """A server frame is one message object or a JSON array of them."""
    if data[:1] == b"[":
        return _many.decode(data)
    return [_one.decode(data)]


def ws_frame_overhead(n: int) -> int:
    """Bytes of WebSocket framing of an unmasked server frame with an ``n``-byte payload."""
    return 2 if n < 126 else 4 if n < 65536 else 10


async def preload(conn: RawConnection, keys: list[str], value: Callable[[int], Any]) -> float:
    """Write ``keys`` over an open connection with batched ``set`` (500 entries a batch,
    8 batches in flight); returns the seconds it took. Keep the connection open
    afterwards: closing it would mark every key stale (one more change per key).

    The replies are read as frames and decoded typed, the results left raw: the
    preload rate is reported, so the loader stays as cheap as it was."""
    t0 = time.perf_counter()
    batch = 500
    window = 8
    sent = acked = 0
    n_batches = (len(keys) + batch - 1) // batch
    while acked < n_batches:
        while sent < n_batches and sent - acked < window:
            chunk = keys[sent * batch : (sent + 1) * batch]
            entries = [{"key": k, "value": value(sent * batch + i)} for i, k in enumerate(chunk)]
            await conn.send({"op": "set", "id": sent, "entries": entries})
            sent += 1
        try:
            data = await conn.receive_frame(timeout=None)
        except ConnectionClosed as exc:
            raise RuntimeError(f"preload: connection ended ({exc.close_code})") from None
        for m in decode_frame(data):
            if m.op == "result":
                if not m.ok:
                    raise RuntimeError(f"preload failed: {m.error}")
                acked += 1
    return time.perf_counter() - t0


def cam_value(i: int) -> dict[str, Any]:
    """A ~45-byte JSON value like a button's state."""
    return {"text": f"CAM {i % 1000}", "bg": "#ff0000", "n": i}


# --- statistics and results ------------------------------------------------------------


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


class Histogram:
    """Fixed-resolution latency histogram (mergeable across processes)."""

    def __init__(self, resolution_us: int = 20, max_ms: int = 5_000) -> None:
        self.res = resolution_us
        self.bins = [0] * (max_ms * 1000 // resolution_us + 1)

    def add(self, us: float) -> None:
        i = int(us) // self.res
        bins = self.bins
        bins[min(max(i, 0), len(bins) - 1)] += 1

    def merge(self, bins: list[int]) -> None:
        for i, c in enumerate(bins):
            if c:
                self.bins[i] += c

    @property
    def count(self) -> int:
        return sum(self.bins)

    def quantile(self, q: float) -> float:
        """The q-quantile in milliseconds (upper edge of its bin)."""
        n = self.count
        if not n:
            return 0.0
        rank = q * n
        acc = 0
        for i, c in enumerate(self.bins):
            acc += c
            if acc >= rank:
                return (i + 1) * self.res / 1000
        return len(self.bins) * self.res / 1000


class CpuMeter:
    """CPU used during a window: by the whole machine, by this process tree (hub and
    clients), and by everything else (other users of this shared, noisy machine)."""

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._machine = self._busy()
        self._ours = self._tree()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    @staticmethod
    def _tree() -> dict[int, float]:
        me = psutil.Process()
        out: dict[int, float] = {}
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                out[p.pid] = c.user + c.system
        return out

    def stop(self) -> dict[str, float]:
        dt = time.monotonic() - self._t
        machine_cpu = self._busy() - self._machine
        ours = sum(v - self._ours.get(pid, 0.0) for pid, v in self._tree().items())
        return {
            "machine_cores_busy": round(machine_cpu / dt, 2),
            "bench_cores": round(ours / dt, 2),
            "other_cores": round(max(0.0, machine_cpu - ours) / dt, 2),
        }


def wait_quiet(max_wait: float = 30.0, threshold: float = 0.3) -> dict[str, float]:
    """Wait (at most ``max_wait`` s) until other users of the machine use less than
    ``threshold`` cores over one second; returns how long it waited and the last reading.
    The machine is shared: this keeps runs from starting in the middle of someone
    else's burst, it does not make them quiet."""
    t0 = time.monotonic()
    while True:
        m = CpuMeter()
        time.sleep(1.0)
        other = m.stop()["other_cores"]
        waited = time.monotonic() - t0
        if other < threshold or waited >= max_wait:
            return {"waited_s": round(waited, 1), "other_cores_before": other}


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "msgspec": msgspec.__version__,
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()
    except OSError:
        return ""


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_commit(),
        "machine": machine(),
        "placement": placement(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table_row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table: the header, the separator, a line per row."""
    return "\n".join(
        [table_row(header), table_row(["---"] * len(header)), *(table_row(r) for r in rows)]
    )


def watchdog(seconds: float) -> None:
    """End this process (and so, through ``finally`` blocks, its children) after ``seconds``."""

    def fire(signum: int, frame: object) -> None:
        raise TimeoutError(f"benchmark exceeded {seconds} s")

    pin_clients()
    signal.signal(signal.SIGALRM, fire)
    signal.alarm(int(seconds))
