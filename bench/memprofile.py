"""Where the hub's memory goes: a breakdown read inside the hub process.

``bench.hub_proc`` adds it to its lag report when started with ``--memory-profile``
(``bench.memory --profile`` does that; ``--profile trace`` also runs tracemalloc from
the hub's start). The report has

- ``rss``: the process's resident set (``/proc/self/statm``);
- ``python_traced``: bytes in live Python allocations (tracemalloc), and the 15 lines
  of source that hold the most of them;
- ``pymalloc``: Python's small-object allocator: arenas mapped, bytes in them, bytes
  in used blocks (what is not used is free space held by the allocator); not
  available while tracemalloc runs (it takes over the allocator);
- ``malloc``: glibc's ``mallinfo2``: bytes in use and free in the heaps (all
  threads' arenas), and in separately mapped chunks;
- ``sqlite``: what SQLite allocated (``sqlite3_memory_used``, its high-water mark).

tracemalloc itself costs memory and time (its own tables are not counted in
``python_traced`` but are in ``rss``): compare runs with the profile on against each
other, not against the plain ``bench.memory`` rows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import tempfile
import tracemalloc
from typing import Any

FRAMES = 1


def start() -> None:
    tracemalloc.start(FRAMES)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc() -> dict[str, int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    m = fn()
    return {
        "heap_bytes": m.arena,  # obtained from the system by sbrk/arenas
        "in_use": m.uordblks,
        "free": m.fordblks,
        "mmapped": m.hblkhd,
    }


def _sqlite() -> dict[str, int] | None:
    import _sqlite3  # the library the sqlite3 module is linked against

    try:
        lib = ctypes.CDLL(_sqlite3.__file__)
        used, high = lib.sqlite3_memory_used, lib.sqlite3_memory_highwater
    except (OSError, AttributeError):
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
            used, high = lib.sqlite3_memory_used, lib.sqlite3_memory_highwater
        except (OSError, AttributeError):
            return None
    used.restype = high.restype = ctypes.c_int64
    high.argtypes = [ctypes.c_int]
    return {"used": int(used()), "highwater": int(high(0))}


def _pymalloc() -> dict[str, int] | None:
    """Parse ``sys._debugmallocstats()`` (it writes to the C stderr)."""
    with tempfile.TemporaryFile(mode="w+") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()

    def num(label: str) -> int:
        m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else -1

    if "arenas allocated current" not in text:
        return None  # not pymalloc (tracemalloc hooks the allocator)
    arenas = num("# arenas allocated current")
    m = re.search(r"arenas \* ([\d,]+) bytes/arena", text)
    arena_size = int(m.group(1).replace(",", "")) if m else 0
    return {
        "arenas": arenas,
        "arena_bytes": arenas * arena_size,
        "used_blocks_bytes": num("# bytes in allocated blocks"),
        "free_blocks_bytes": num("# bytes in available blocks"),
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def report(top: int = 15) -> dict[str, Any]:
    out: dict[str, Any] = {"rss": _rss(), "pymalloc": _pymalloc()}
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("lineno")
        out["python_traced"] = sum(s.size for s in stats)
        out["python_top"] = [
            {"where": str(s.traceback), "bytes": s.size, "blocks": s.count} for s in stats[:top]
        ]
    out["malloc"] = _malloc()
    out["sqlite"] = _sqlite()
    return out
