"""Server-side cost of aiohttp vs websockets vs picows for companion-hub workloads.

Run:  python bench/choices/ws_servers.py            (about 2-3 minutes on 2 cores)
      python bench/choices/ws_servers.py --help

Every measurement starts a fresh server process plus separate client process(es);
clients are a raw-socket asyncio BufferedProtocol on uvloop (identical for every
server, no frame parsing) so that as little CPU as possible is taken from the server.

Workloads
  fanout  100 clients (in 2 client processes). Once all 100 are connected the server
          sends each client N text frames of one shared pre-encoded ~16 KiB JSON
          array, honouring back-pressure (await the library's drain mechanism).
          Clients count bytes and close the socket when they have everything.
          Server reports wall time (all connected -> all disconnected) and
          getrusage(RUSAGE_SELF) user+sys CPU over the same interval, plus peak
          RSS (a check that back-pressure is really honoured).
  ingest  1 client sends M masked ~100-byte text frames (JSON `set` messages)
          pipelined in one sendall(). Server receives each as bytes and counts.
          Rate = (M - 1) / (t_last - t_first) measured in the server process.

Rounds are interleaved (every variant once per round, order rotated) and each
variant's ratio is computed against the reference variant of the same round;
tables show medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import resource
import statistics
import subprocess
import sys
import time

HOST = "127.0.0.1"
DEFAULT_VARIANTS = "aiohttp,websockets,picows,picows+aiofastnet"
REFERENCE = "aiohttp"


# --------------------------------------------------------------------------- payloads


def make_fanout_payload(target: int) -> bytes:
    """A JSON array of ~100-byte pre-encoded objects, total length <= target."""
    objs: list[bytes] = []
    size = 2
    i = 0
    while True:
        o = (
            b'{"op":"delta","key":"app.tally.cam%03d","value":{"text":"CAM %d","bg":"#ff0000",'
            b'"n":%d},"version":8,"rev":%d}' % (i % 1000, i % 100, i, 1000 + i)
        )
        if size + len(o) + 1 > target:
            break
        objs.append(o)
        size += len(o) + 1
        i += 1
    payload = b"[" + b",".join(objs) + b"]"
    json.loads(payload)  # sanity
    return payload


def make_set_message(i: int) -> bytes:
    return (
        b'{"op":"set","id":"%07d","key":"app.tally.status","value":'
        b'{"text":"CAM 1","bg":"#ff0000","n":%d}}' % (i, i % 100)
    )


def ws_header_len(n: int) -> int:
    return 2 if n < 126 else 4 if n < 65536 else 10


# --------------------------------------------------------------------------- servers


class Hub:
    """Shared bookkeeping inside the server process."""

    def __init__(self, nconn: int) -> None:
        self.nconn = nconn
        self.connected = 0
        self.closed = 0
        self.start = asyncio.Event()
        self.finished = asyncio.Event()
        self.t0 = self.t1 = 0.0
        self.r0 = self.r1 = None
        self.count = 0

    def _mark(self):
        return time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)

    def on_connected(self) -> None:
        self.connected += 1
        if self.connected == self.nconn:
            self.t0, self.r0 = self._mark()
            self.start.set()

    def on_closed(self) -> None:
        self.closed += 1
        if self.closed == self.nconn:
            self.t1, self.r1 = self._mark()
            self.finished.set()

    # ingest
    def on_message(self) -> None:
        self.count += 1
        if self.count == 1:
            self.t0, self.r0 = self._mark()
        elif self.count == self.nconn:  # nconn holds the message count for ingest
            self.t1, self.r1 = self._mark()
            self.finished.set()


async def start_aiohttp(hub: Hub, args: argparse.Namespace):
    from aiohttp import WSMsgType, web

    payload = make_fanout_payload(args.frame_bytes) if args.workload == "fanout" else b""
    nframes = args.frames

    async def fanout(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, decode_text=False)
        await ws.prepare(request)
        hub.on_connected()
        await hub.start.wait()
        send_frame = ws.send_frame
        for _ in range(nframes):
            # send_frame writes synchronously; it only awaits the protocol's
            # drain helper when >writer_limit bytes were written since the last
            # check AND the transport is paused (above its high-water mark).
            await send_frame(payload, WSMsgType.TEXT)
        async for _msg in ws:  # until the client closes the TCP connection
            pass
        hub.on_closed()
        return ws

    async def ingest(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, decode_text=False)
        await ws.prepare(request)
        receive = ws.receive
        while not hub.finished.is_set():
            msg = await receive()
            if msg.type is WSMsgType.TEXT:  # msg.data is bytes (decode_text=False)
                hub.on_message()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", fanout if args.workload == "fanout" else ingest)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    return runner.addresses[0][1], runner


async def start_websockets(hub: Hub, args: argparse.Namespace):
    from websockets.asyncio.server import serve

    payload = make_fanout_payload(args.frame_bytes) if args.workload == "fanout" else b""
    nframes = args.frames

    async def fanout(ws) -> None:
        hub.on_connected()
        await hub.start.wait()
        send = ws.send
        for _ in range(nframes):
            # send() writes then awaits drain() (waits while transport is paused,
            # write_limit = transport high-water mark, default 32 KiB).
            await send(payload, text=True)
        await ws.wait_closed()
        hub.on_closed()

    async def ingest(ws) -> None:
        recv = ws.recv
        try:
            while not hub.finished.is_set():
                await recv(decode=False)  # bytes, even for text frames
                hub.on_message()
        except Exception:
            pass

    server = await serve(
        fanout if args.workload == "fanout" else ingest,
        HOST,
        0,
        compression=None,
        ping_interval=None,
        max_size=2**20,
    )

    return server.sockets[0].getsockname()[1], server


async def start_picows(hub: Hub, args: argparse.Namespace, aiofastnet: bool):
    from picows import WSListener, WSMsgType, ws_create_server

    payload = make_fanout_payload(args.frame_bytes) if args.workload == "fanout" else b""
    nframes = args.frames
    TEXT = WSMsgType.TEXT

    class FanoutListener(WSListener):
        def on_ws_connected(self, transport) -> None:
            self.transport = transport
            self.writable = asyncio.Event()
            self.writable.set()
            self.task = asyncio.get_running_loop().create_task(self.run())
            hub.on_connected()

        async def run(self) -> None:
            await hub.start.wait()
            send = self.transport.send
            writable = self.writable
            for _ in range(nframes):
                send(TEXT, payload)  # synchronous, never blocks
                if not writable.is_set():  # back-pressure is DIY via pause/resume_writing
                    await writable.wait()

        # picows forwards the asyncio transport flow-control callbacks; the base class
        # raises NotImplemented (logged as a warning) if these are not overridden.
        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

        def on_ws_disconnected(self, transport) -> None:
            self.writable.set()
            hub.on_closed()

    class IngestListener(WSListener):
        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type == TEXT:
                frame.get_payload_as_bytes()  # copy out as bytes, like the others
                hub.on_message()
                if hub.finished.is_set():
                    transport.send_close()
                    transport.disconnect()

    listener = FanoutListener if args.workload == "fanout" else IngestListener
    server = await ws_create_server(
        lambda _request: listener(),
        HOST,
        0,
        enable_auto_ping=False,
        use_aiofastnet=aiofastnet,
    )

    return server.sockets[0].getsockname()[1], server


async def server_main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.CRITICAL)
    lib = args.variant.split("+")[0]
    n = args.clients if args.workload == "fanout" else args.messages
    hub = Hub(n)
    if lib == "aiohttp":
        port, _keep = await start_aiohttp(hub, args)
    elif lib == "websockets":
        port, _keep = await start_websockets(hub, args)
    elif lib == "picows":
        port, _keep = await start_picows(hub, args, aiofastnet="aiofastnet" in args.variant)
    else:
        raise SystemExit(f"unknown variant {args.variant}")
    print(f"READY {port}", flush=True)
    await asyncio.wait_for(hub.finished.wait(), args.timeout)
    r0, r1 = hub.r0, hub.r1
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    res = {
        "wall": hub.t1 - hub.t0,
        "cpu": user + sys_,
        "user": user,
        "sys": sys_,
        "maxrss_mb": r1.ru_maxrss / 1024,
        "loop": type(asyncio.get_running_loop()).__module__,
    }
    # Report and exit hard: graceful shutdown paths differ per library (aiohttp's
    # close() waits up to 10 s for a close frame the raw clients never send) and
    # are not part of the measurement.
    print("RESULT " + json.dumps(res), flush=True)
    os._exit(0)


def run_server(args: argparse.Namespace) -> None:
    if "uvloop" in args.variant:
        import uvloop

        factory = uvloop.new_event_loop
    else:
        factory = None  # stock asyncio (selector) loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(server_main(args))


# --------------------------------------------------------------------------- clients


def handshake_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class CountingClient(asyncio.BufferedProtocol):
    """Counts bytes after the 101 response; checks the first frame header only."""

    def __init__(self, port: int, expected: int, first_header: bytes, done: asyncio.Future) -> None:
        self.port = port
        self.expected = expected
        self.first_header = first_header
        self.done = done
        self.buf = memoryview(bytearray(256 * 1024))
        self.hs = bytearray()
        self.head = bytearray()
        self.got = 0
        self.upgraded = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(handshake_request(self.port))

    def get_buffer(self, sizehint: int):
        return self.buf

    def _data(self, data) -> None:
        if len(self.head) < len(self.first_header):
            self.head += data[: len(self.first_header) - len(self.head)]
            if len(self.head) == len(self.first_header) and bytes(self.head) != self.first_header:
                self._finish(RuntimeError(f"unexpected frame header {bytes(self.head)!r}"))
                return
        self.got += len(data)
        if self.got >= self.expected:
            self._finish(None if self.got == self.expected else RuntimeError("too many bytes"))

    def buffer_updated(self, nbytes: int) -> None:
        if self.upgraded:
            self._data(self.buf[:nbytes])
            return
        self.hs += self.buf[:nbytes]
        i = self.hs.find(b"\r\n\r\n")
        if i < 0:
            return
        if not self.hs.startswith(b"HTTP/1.1 101"):
            self._finish(RuntimeError(bytes(self.hs[:200]).decode(errors="replace")))
            return
        self.upgraded = True
        rest = bytes(self.hs[i + 4 :])
        if rest:
            self._data(rest)

    def _finish(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(exc)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(
                RuntimeError(f"lost after {self.got}/{self.expected} bytes: {exc}")
            )


async def fanout_client_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    futs = []
    for _ in range(args.clients):
        fut = loop.create_future()
        hdr = bytes([0x81, 126]) + args.frame_len.to_bytes(2, "big")
        await loop.create_connection(
            lambda f=fut, h=hdr: CountingClient(args.port, args.expected, h, f), HOST, args.port
        )
        futs.append(fut)
    results = await asyncio.wait_for(asyncio.gather(*futs), args.timeout)
    errors = [str(r) for r in results if r is not None]
    print("RESULT " + json.dumps({"errors": errors[:3], "cpu": time.process_time()}), flush=True)


def mask_frame(payload: bytes, rnd: random.Random) -> bytes:
    key = rnd.randbytes(4)
    n = len(payload)
    keystream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    assert n < 126
    return bytes([0x81, 0x80 | n]) + key + masked


def ingest_client_main(args: argparse.Namespace) -> None:
    import socket

    rnd = random.Random(1)
    blob = b"".join(mask_frame(make_set_message(i), rnd) for i in range(args.messages))
    s = socket.create_connection((HOST, args.port))
    s.sendall(handshake_request(args.port))
    hs = b""
    while b"\r\n\r\n" not in hs:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("no handshake")
        hs += chunk
    assert hs.startswith(b"HTTP/1.1 101"), hs[:200]
    s.sendall(blob)
    s.settimeout(args.timeout)
    try:
        while s.recv(65536):  # until the server closes
            pass
    except OSError:
        pass
    s.close()
    print("RESULT " + json.dumps({"errors": [], "bytes": len(blob)}), flush=True)


def run_client(args: argparse.Namespace) -> None:
    if args.role == "fanout-client":
        import uvloop

        uvloop.run(fanout_client_main(args))
    else:
        ingest_client_main(args)


# --------------------------------------------------------------------------- orchestration


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"timeout; stderr: {err[-2000:]}") from None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"no result (rc={proc.returncode}); stderr: {err[-2000:]}")


def run_once(opts: argparse.Namespace, variant: str, workload: str) -> dict:
    py, me = sys.executable, os.path.abspath(__file__)
    common = [
        "--frames",
        str(opts.frames),
        "--frame-bytes",
        str(opts.frame_bytes),
        "--messages",
        str(opts.messages),
        "--clients",
        str(opts.clients),
        "--timeout",
        str(opts.timeout),
    ]
    srv = subprocess.Popen(
        [py, me, "--role", "server", "--variant", variant, "--workload", workload, *common],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = srv.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"server failed: {line} {srv.stderr.read()[-2000:]}")
        port = line.split()[1]
        clients = []
        if workload == "fanout":
            frame_len = len(make_fanout_payload(opts.frame_bytes))
            expected = opts.frames * (frame_len + ws_header_len(frame_len))
            per = [opts.clients // opts.client_procs] * opts.client_procs
            per[0] += opts.clients - sum(per)
            for n in per:
                clients.append(
                    subprocess.Popen(
                        [
                            py,
                            me,
                            "--role",
                            "fanout-client",
                            "--port",
                            port,
                            "--clients",
                            str(n),
                            "--expected",
                            str(expected),
                            "--frame-len",
                            str(frame_len),
                            "--timeout",
                            str(opts.timeout),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
        else:
            clients.append(
                subprocess.Popen(
                    [
                        py,
                        me,
                        "--role",
                        "ingest-client",
                        "--port",
                        port,
                        "--messages",
                        str(opts.messages),
                        "--timeout",
                        str(opts.timeout),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        res = _result(srv, opts.timeout + 10)
        for c in clients:
            cres = _result(c, opts.timeout + 10)
            if cres["errors"]:
                raise RuntimeError(f"client errors: {cres['errors']}")
        return res
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma list; lib[+uvloop|+aiofastnet] (picows only for aiofastnet). "
        f"First must be the reference. Default {DEFAULT_VARIANTS}",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workloads", default="fanout,ingest")
    p.add_argument("--frames", type=int, default=4000, help="fan-out frames per client")
    p.add_argument("--frame-bytes", type=int, default=16 * 1024, help="max fan-out frame payload")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--timeout", type=float, default=60.0)
    # internal
    p.add_argument("--role", default="main", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    p.add_argument("--frame-len", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.role == "server":
        run_server(args)
        return
    if args.role in ("fanout-client", "ingest-client"):
        run_client(args)
        return

    variants = args.variants.split(",")
    workloads = args.workloads.split(",")
    frame_len = len(make_fanout_payload(args.frame_bytes))
    fan_mb = args.clients * args.frames * frame_len / 1e6
    t_start = time.monotonic()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, rounds={args.rounds}; "
        f"fan-out {args.clients} clients x {args.frames} frames x {frame_len} B = {fan_mb:.0f} MB "
        f"payload per run; ingest {args.messages} msgs of ~{len(make_set_message(0))} B",
        file=sys.stderr,
    )
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for wl in workloads:
            for v in order:
                res = run_once(args, v, wl)
                results.setdefault((wl, v), []).append(res)
                print(
                    f"round {r + 1} {wl:6} {v:20} wall={res['wall']:.3f}s cpu={res['cpu']:.3f}s "
                    f"(user {res['user']:.3f} sys {res['sys']:.3f}) rss={res['maxrss_mb']:.0f}MB "
                    f"loop={res['loop']}",
                    file=sys.stderr,
                )

    ref = variants[0]
    if "fanout" in workloads:
        print(
            f"\n### Fan-out: {args.clients} clients, {args.frames} x {frame_len} B text frames each "
            f"({fan_mb:.0f} MB payload/run), median of {args.rounds}\n"
        )
        print(
            f"| server | delivered MB/s | server CPU s / 100 MB (user + sys) "
            f"| user CPU us / frame | CPU % of wall | peak RSS MB | MB/s vs {ref} "
            f"| CPU vs {ref} | user CPU vs {ref} |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        nframes_total = args.clients * args.frames
        base = results[("fanout", ref)]
        for v in variants:
            rs = results[("fanout", v)]
            mbps = [fan_mb / x["wall"] for x in rs]
            cpu = [x["cpu"] / fan_mb * 100 for x in rs]
            user = [x["user"] / fan_mb * 100 for x in rs]
            sys_ = [x["sys"] / fan_mb * 100 for x in rs]
            rss = [x["maxrss_mb"] for x in rs]
            util = [x["cpu"] / x["wall"] * 100 for x in rs]
            r_mbps = [
                (fan_mb / a["wall"]) / (fan_mb / b["wall"]) for a, b in zip(rs, base, strict=True)
            ]
            r_cpu = [a["cpu"] / b["cpu"] for a, b in zip(rs, base, strict=True)]
            r_user = [a["user"] / b["user"] for a, b in zip(rs, base, strict=True)]
            us_frame = [x["user"] / nframes_total * 1e6 for x in rs]
            print(
                f"| {v} | {fmt(statistics.median(mbps))} | {statistics.median(cpu):.4f} "
                f"({statistics.median(user):.4f} + {statistics.median(sys_):.4f}) "
                f"| {statistics.median(us_frame):.2f} "
                f"| {statistics.median(util):.0f}% | {statistics.median(rss):.0f} "
                f"| {statistics.median(r_mbps):.2f}x "
                f"| {statistics.median(r_cpu):.2f}x | {statistics.median(r_user):.2f}x |"
            )
        print(
            "\nuser and sys medians are taken separately, so they need not add up exactly. "
            "sys (kernel TCP send, loopback delivery) dominates and is noisy; "
            "user CPU is the part the library controls."
        )
    if "ingest" in workloads:
        print(
            f"\n### Ingest: 1 client, {args.messages:,} pipelined ~{len(make_set_message(0))} B text "
            f"frames, received as bytes, median of {args.rounds}\n"
        )
        print(f"| server | msgs/s received | server CPU us / msg (user + sys) | msgs/s vs {ref} |")
        print("|---|---:|---:|---:|")

        base = results[("ingest", ref)]
        n = args.messages - 1
        for v in variants:
            rs = results[("ingest", v)]
            rate = [n / x["wall"] for x in rs]
            cpu = [x["cpu"] / n * 1e6 for x in rs]
            user = [x["user"] / n * 1e6 for x in rs]
            sys_ = [x["sys"] / n * 1e6 for x in rs]
            ratio = [b["wall"] / a["wall"] for a, b in zip(rs, base, strict=True)]
            print(
                f"| {v} | {fmt(statistics.median(rate))} | {statistics.median(cpu):.2f} "
                f"({statistics.median(user):.2f} + {statistics.median(sys_):.2f}) "
                f"| {statistics.median(ratio):.2f}x |"
            )
    print(f"\n(total bench time {time.monotonic() - t_start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
