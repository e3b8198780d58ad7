"""Optional sampling profile of the hub process with py-spy (not a project dependency).

``Profiler(pid, seconds, out)`` starts ``py-spy record --format raw`` on the hub in
the background; ``finish()`` waits for it and returns the top functions by self
and by total (inclusive) samples. Install py-spy into the venv yourself
(``.venv/bin/pip install py-spy``); without it, profiling is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Top frames by self samples and by inclusive samples from py-spy's raw output."""
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    n = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        n += c
        frames = [_short(f) for f in stack.split(";")]
        self_c[frames[-1]] += c
        for f in set(frames):
            total_c[f] += c

    def pct(counter: Counter[str]) -> list[list[Any]]:
        return [[f, round(100 * c / n, 1)] for f, c in counter.most_common(top)] if n else []

    return {"samples": n, "self_pct": pct(self_c), "total_pct": pct(total_c)}


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short}:{line})" if where else name


class Profiler:
    def __init__(self, pid: int, seconds: float, out: str) -> None:
        self.out = Path(out)
        exe = _py_spy()
        self.proc: subprocess.Popen[bytes] | None = None
        if exe is None:
            print("  (py-spy not found: no profile)", file=sys.stderr)
            return
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if not self.out.exists():
            return None
        return summarize(self.out.read_text())
