"""Load-generating client processes shared by the fan-out and latency benchmarks.

Each worker is a separate process (``multiprocessing`` spawn) running uvloop, so
that the clients' CPU time is not the hub's. A worker talks to the coordinator over
a pipe: it reports ``("ready", ...)``, waits for ``("go", t0)`` (a ``time.monotonic``
instant: the clock is system-wide on Linux), and reports its results at the end.

- :func:`sub_worker`: ``count`` subscribers to ``**``, each keeping a mirror
  (key -> version) and the monotonic arrival time of each key's current version.
  In fan-out mode it then waits for ``("final", {key: version})`` and reports when
  each mirror equalled that final state. In latency mode every delta value carries
  ``t`` (``time.time_ns()`` at send) and the worker reports a latency histogram.
- :func:`sse_worker`: ``count`` Server-Sent-Events subscribers (``GET /api/stream``)
  with the same mirror, bins, convergence and commands as :func:`sub_worker` in
  fan-out mode (for ``bench.fanout --sse``).
- :func:`writer_worker`: the ``writer`` client, owner of ``app.writer.*``: either
  as fast as the hub accepts with a window of un-acknowledged ``set`` requests, or
  paced at a fixed rate.

Every client connects with the SDK (``connect_raw``, which says ``hello``) and sends
through its :class:`~companion_hub.client.RawConnection`. What they receive is what
these benchmarks measure (deltas decoded as fast as a client can; acknowledgements
timed), so they do not use the SDK's message-level reads (``receive``, which decodes
every message into dicts and queues it): each reads whole frames with
``receive_frame`` and decodes them itself, typed, with only the fields it needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec

from companion_hub.client import ConnectionClosed, RawConnection, connect_raw

from .common import (
    Histogram,
    SnapEntry,
    encode,
    hub_token,
    pipe_recv,
    run_loop,
)

BIN_S = 0.1  # delivered-delta counters are kept in bins of 100 ms after "go"
MAX_BINS = 1200

WRITER = "writer"


def writer_keys(n: int) -> list[str]:
    return [f"app.{WRITER}.btn.{i:04d}" for i in range(n)]


# --- decoding (typed, so that clients stay cheap) ---------------------------------------


class _TVal(msgspec.Struct):
    t: int = 0


class _Msg(msgspec.Struct):
    op: str
    key: str = ""
    version: int = 0
    entries: list[SnapEntry] | None = None
    done: bool = True


class _LMsg(msgspec.Struct):
    op: str
    key: str = ""
    version: int = 0
    value: _TVal | None = None
    entries: list[SnapEntry] | None = None
    done: bool = True


class _Res(msgspec.Struct):
    version: int = 0
    rev: int = 0


class _WMsg(msgspec.Struct):
    op: str
    id: int | str | None = None
    ok: bool = True
    result: _Res | None = None
    error: Any = None


def _decoder(t: type) -> Any:
    one = msgspec.json.Decoder(t).decode
    many = msgspec.json.Decoder(list[t]).decode  # type: ignore[valid-type]

    def decode(data: bytes) -> Any:
        return many(data) if data[:1] == b"[" else [one(data)]

    return decode


# --- subscribers --------------------------------------------------------------------------


class _Mirror:
    """A subscriber's bookkeeping: mirror (key -> version), arrival times, counters."""

    __slots__ = ("at", "bins", "hist", "n", "name", "t0", "ver", "violations", "warm_ns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ver: dict[str, int] = {}
        self.at: dict[str, float] = {}
        self.n = 0
        self.violations = 0
        self.bins = [0] * MAX_BINS
        self.t0 = 0.0
        self.warm_ns = 0
        self.hist: Histogram | None = None


class _Sub(_Mirror):
    __slots__ = ("conn",)

    def __init__(self, name: str, conn: RawConnection) -> None:
        super().__init__(name)
        self.conn = conn


# The subscribers are what (b) and (c) measure: deltas off the wire, decoded as fast as
# a client can. So they read whole frames (RawConnection.receive_frame), not messages
# (RawConnection.receive, which builds dicts), and decode them typed.


async def _subscribe(sub: _Sub, decode: Any) -> None:
    await sub.conn.send({"op": "subscribe", "id": "s", "sub": "all", "patterns": ["**"]})
    while True:
        try:
            data = await sub.conn.receive_frame(timeout=None)
        except ConnectionClosed as exc:
            raise RuntimeError(
                f"{sub.name}: connection ended during snapshot ({exc.close_code})"
            ) from None
        now = time.monotonic()
        for m in decode(data):
            if m.op == "snapshot":
                for e in m.entries:
                    sub.ver[e.key] = e.version
                    sub.at[e.key] = now
                if m.done:
                    return
            elif m.op == "delta":
                sub.ver[m.key] = m.version
                sub.at[m.key] = now


async def _read_fanout(sub: _Sub, decode: Any) -> None:
    receive_frame = sub.conn.receive_frame
    ver = sub.ver
    at = sub.at
    mono = time.monotonic
    while True:
        try:
            data = await receive_frame(None)
        except ConnectionClosed:
            return
        now = mono()
        n = 0
        for m in decode(data):
            if m.op == "delta":
                key = m.key
                if m.version < ver.get(key, 0):
                    sub.violations += 1
                ver[key] = m.version
                at[key] = now
                n += 1
        if n and sub.t0:
            sub.n += n
            i = int((now - sub.t0) / BIN_S)
            if 0 <= i < MAX_BINS:
                sub.bins[i] += n


async def _read_latency(sub: _Sub, decode: Any) -> None:
    receive_frame = sub.conn.receive_frame
    ver = sub.ver
    mono = time.monotonic
    clock_ns = time.time_ns
    while True:
        try:
            data = await receive_frame(None)
        except ConnectionClosed:
            return
        now_ns = clock_ns()
        now = mono()
        hist = sub.hist
        record = hist is not None and now_ns >= sub.warm_ns
        n = 0
        for m in decode(data):
            if m.op == "delta":
                key = m.key
                if m.version < ver.get(key, 0):
                    sub.violations += 1
                ver[key] = m.version
                n += 1
                if record and m.value is not None and m.value.t:
                    hist.add((now_ns - m.value.t) / 1000)  # type: ignore[union-attr]
        if n and sub.t0:
            sub.n += n
            i = int((now - sub.t0) / BIN_S)
            if 0 <= i < MAX_BINS:
                sub.bins[i] += n


def sub_worker(conn: Any, url: str, first: int, count: int, mode: str) -> None:
    run_loop(_sub_main(conn, url, first, count, mode))


async def _sub_main(conn: Any, url: str, first: int, count: int, mode: str) -> None:
    decode = _decoder(_LMsg if mode == "latency" else _Msg)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        subs: list[_Sub] = []
        for i in range(first, first + count):
            name = f"sub{i:03d}"
            hub = await connect_raw(url, name, session=session, token=hub_token())
            subs.append(_Sub(name, hub))
        await asyncio.gather(*(_subscribe(s, decode) for s in subs))
        reader = _read_latency if mode == "latency" else _read_fanout
        tasks = [asyncio.create_task(reader(s, decode)) for s in subs]
        conn.send(("ready", count))
        report = await _coordinate(conn, subs, mode)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in subs:
            await s.conn.close()
    conn.send(("report", report))


async def _coordinate(conn: Any, subs: Sequence[_Mirror], mode: str) -> dict[str, Any]:
    """The command protocol after ``ready``, shared by the WebSocket and SSE
    subscribers (``subs``: :class:`_Mirror` objects their readers keep up to date):
    ``go`` starts the delta bins, ``final`` the wait for convergence; returns the
    report."""
    cmd, t0, warm_ns = await pipe_recv(conn)
    assert cmd == "go"
    for s in subs:
        s.t0 = t0
        s.warm_ns = warm_ns
        if mode == "latency":
            s.hist = Histogram()
    cmd, final, timeout = await pipe_recv(conn)
    assert cmd == "final"
    deadline = time.monotonic() + timeout
    pending = list(subs)
    converged: dict[str, float] = {}
    while pending and time.monotonic() < deadline:
        still = []
        for s in pending:
            ver = s.ver
            if all(ver.get(k) == v for k, v in final.items()):
                converged[s.name] = max(s.at.get(k, 0.0) for k in final) if s.at else 0.0
            else:
                still.append(s)
        pending = still
        if pending:
            await asyncio.sleep(0.005)
    if mode == "latency":
        # the latency reader does not keep arrival times; convergence is "by now"
        now = time.monotonic()
        converged = {k: now for k in converged}
    hist = Histogram()
    for s in subs:
        if s.hist is not None:
            hist.merge(s.hist.bins)
    report = {
        "subs": [
            {
                "name": s.name,
                "deltas": s.n,
                "bins": s.bins,
                "violations": s.violations,
                "converged_at": converged.get(s.name),
                "missing": 0
                if s.name in converged
                else sum(1 for k, v in final.items() if s.ver.get(k) != v),
            }
            for s in subs
        ],
        "hist": hist.bins if mode == "latency" else None,
        "hist_res_us": hist.res,
    }
    return report


# --- Server-Sent-Events subscribers --------------------------------------------------------
#
# The same bookkeeping over ``GET /api/stream?pattern=**`` (docs/http.md): each event is
# ``id: REV\nevent: KIND\ndata: JSON\n\n`` (one ``data:`` line: the JSON has no raw
# newline), comments (``: ping``) and ``retry:`` in between. The reader takes whatever
# bytes have arrived, splits the complete events on blank lines and decodes the data of
# all the deltas of a read at once (one JSON array), typed.


class _SDelta(msgspec.Struct):
    key: str
    version: int = 0
    rev: int = 0
    deleted: bool = False


class _SSnap(msgspec.Struct):
    rev: int = 0
    entries: list[SnapEntry] = []


_sse_deltas = msgspec.json.Decoder(list[_SDelta]).decode
_sse_snapshot = msgspec.json.Decoder(_SSnap).decode
_DATA = b"\ndata: "
_DELTA = b"\nevent: delta\n"


class _SseSub(_Mirror):
    __slots__ = ("buf", "resp")

    def __init__(self, name: str, resp: aiohttp.ClientResponse) -> None:
        super().__init__(name)
        self.resp = resp
        self.buf = bytearray()  # bytes read after the last complete event


async def _sse_open(session: aiohttp.ClientSession, url: str, name: str) -> _SseSub:
    """Open a stream and read up to its snapshot (which fills the mirror)."""
    headers = {"Accept": "text/event-stream"}
    token = hub_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    resp = await session.get(
        url, params={"pattern": "**"}, headers=headers, timeout=aiohttp.ClientTimeout(total=None)
    )
    if resp.status != 200:
        raise RuntimeError(f"{name}: GET /api/stream answered {resp.status}")
    sub = _SseSub(name, resp)
    buf = sub.buf
    scanned = 0
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            raise RuntimeError(f"{name}: the stream ended during the snapshot")
        now = time.monotonic()
        buf += chunk
        while True:
            end = buf.find(b"\n\n", scanned)
            if end < 0:
                scanned = max(0, len(buf) - 1)
                break
            block = bytes(buf[:end])
            del buf[: end + 2]
            scanned = 0
            i = block.find(_DATA)
            if i >= 0 and b"event: snapshot" in block[:i]:
                for e in _sse_snapshot(block[i + len(_DATA) :]).entries:
                    sub.ver[e.key] = e.version
                    sub.at[e.key] = now
                return sub


async def _read_sse(sub: _SseSub) -> None:
    read = sub.resp.content.readany
    buf = sub.buf
    ver = sub.ver
    at = sub.at
    mono = time.monotonic
    chunk = b""  # first what _sse_open read after the snapshot
    while True:
        now = mono()
        buf += chunk
        end = buf.rfind(b"\n\n")
        if end >= 0:
            blocks = bytes(buf[:end]).split(b"\n\n")
            del buf[: end + 2]
            datas = [b[b.find(_DATA) + len(_DATA) :] for b in blocks if _DELTA in b]
            if datas:
                for m in _sse_deltas(b"[" + b",".join(datas) + b"]"):
                    key = m.key
                    if m.version < ver.get(key, 0):
                        sub.violations += 1
                    ver[key] = m.version
                    at[key] = now
                n = len(datas)
                if sub.t0:
                    sub.n += n
                    i = int((now - sub.t0) / BIN_S)
                    if 0 <= i < MAX_BINS:
                        sub.bins[i] += n
        try:
            chunk = await read()
        except (aiohttp.ClientError, ConnectionError):
            return
        if not chunk:
            return


def sse_worker(conn: Any, url_base: str, first: int, count: int) -> None:
    """``count`` SSE subscribers to ``**`` (``GET {url_base}/api/stream``), with the
    same command protocol and report as :func:`sub_worker` in fan-out mode."""
    run_loop(_sse_main(conn, url_base, first, count))


async def _sse_main(conn: Any, url_base: str, first: int, count: int) -> None:
    url = url_base.rstrip("/") + "/api/stream"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        subs = await asyncio.gather(
            *(_sse_open(session, url, f"sse{i:03d}") for i in range(first, first + count))
        )
        tasks = [asyncio.create_task(_read_sse(s)) for s in subs]
        conn.send(("ready", count))
        report = await _coordinate(conn, subs, "fanout")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in subs:
            s.resp.close()
    conn.send(("report", report))


# --- the writer ------------------------------------------------------------------------------


def writer_worker(conn: Any, url: str, n_keys: int, mode: str, params: dict[str, Any]) -> None:
    run_loop(_writer_main(conn, url, n_keys, mode, params))


async def _writer_main(conn: Any, url: str, n_keys: int, mode: str, params: dict[str, Any]) -> None:
    keys = writer_keys(n_keys)
    decode = _decoder(_WMsg)
    async with aiohttp.ClientSession() as session:
        hub = await connect_raw(url, WRITER, session=session, token=hub_token())
        st: dict[str, Any] = {
            "acked": 0,
            "errors": 0,
            "first_error": None,
            "last_ack": 0.0,
            "max_rev": 0,
            "max_inflight": 0,
        }
        final: dict[str, int] = {}
        room = asyncio.Event()
        all_acked = asyncio.Event()
        sent_box = [0]

        async def read() -> None:
            # the acknowledgements are timed (accepted writes/s): frames, decoded typed
            receive_frame = hub.receive_frame
            while True:
                try:
                    data = await receive_frame(None)
                except ConnectionClosed:
                    return
                now = time.monotonic()
                for m in decode(data):
                    if m.op != "result":
                        continue
                    if m.ok and m.result is not None:
                        st["acked"] += 1
                        final[keys[m.id % n_keys]] = m.result.version
                        st["max_rev"] = max(st["max_rev"], m.result.rev)
                    else:
                        st["errors"] += 1
                        st["first_error"] = st["first_error"] or repr(m.error)
                st["last_ack"] = now
                room.set()
                if st["acked"] + st["errors"] >= sent_box[0]:
                    all_acked.set()

        reader = asyncio.create_task(read())
        conn.send(("ready", 0))
        cmd, t0, _warm = await pipe_recv(conn)
        assert cmd == "go"
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        duration = params["duration"]
        t_start = time.monotonic()
        end = t_start + duration
        seq = 0
        frames = 0
        if mode == "window":
            window = params["window"]
            per_frame = params["per_frame"]
            while True:
                inflight = seq - st["acked"] - st["errors"]
                st["max_inflight"] = max(st["max_inflight"], inflight)
                if inflight >= window:
                    room.clear()
                    await room.wait()
                    if time.monotonic() >= end:
                        break
                    continue
                if time.monotonic() >= end:
                    break
                k = min(window - inflight, per_frame)
                msgs = []
                for _ in range(k):
                    msgs.append(
                        {
                            "op": "set",
                            "id": seq,
                            "key": keys[seq % n_keys],
                            "value": {"text": f"CAM {seq % 1000}", "bg": "#ff0000", "n": seq},
                        }
                    )
                    seq += 1
                sent_box[0] = seq
                await hub.send_frame(encode(msgs[0] if k == 1 else msgs))
                frames += 1
        else:  # paced: ``rate`` writes/s, sent every ``tick`` s with what is due
            rate = params["rate"]
            tick = params["tick"]
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                due = int((now - t_start) * rate)
                if due > seq:
                    msgs = []
                    tns = time.time_ns()
                    while seq < due:
                        msgs.append(
                            {
                                "op": "set",
                                "id": seq,
                                "key": keys[seq % n_keys],
                                "value": {"text": f"CAM {seq % 1000}", "n": seq, "t": tns},
                            }
                        )
                        seq += 1
                    sent_box[0] = seq
                    await hub.send_frame(encode(msgs[0] if len(msgs) == 1 else msgs))
                    frames += 1
                    st["max_inflight"] = max(st["max_inflight"], seq - st["acked"] - st["errors"])
                await asyncio.sleep(tick)
        t_stop = time.monotonic()
        sent_box[0] = seq
        if st["acked"] + st["errors"] < seq:
            all_acked.clear()
            try:
                await asyncio.wait_for(all_acked.wait(), 30)
            except TimeoutError:
                pass
        report = {
            "sent": seq,
            "frames": frames,
            "t_start": t_start,
            "t_stop_sending": t_stop,
            "final": final,
            **st,
        }
        conn.send(("report", report))
        # stay connected until told: closing would mark every key stale (1 more delta each)
        await pipe_recv(conn)
        reader.cancel()
        await hub.close()
