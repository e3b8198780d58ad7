"""``GET /api/stream``: the state as Server-Sent Events (docs/http.md).

The stream subscribes like a WebSocket subscriber: a snapshot and the registration
happen in one synchronous step (so nothing is missed or repeated), then the deltas
arrive through a :class:`~companion_hub.core.delivery.DeliveryQueue` registered
with ``Hub.subscribe``. The queue coalesces by key, so a reader that does not keep
up (or does not read at all) costs at most one pending delta per key: while the
socket is full, the handler waits in ``write`` and newer changes replace older ones.
Reads outside the identity's role are filtered as on the WebSocket.

Format::

    retry: 2000

    id: 1250
    event: snapshot
    data: {"rev":1250,"mode":"full","hub":"…","entries":[…],"removed":[]}

    id: 1251
    event: delta
    data: {"op":"delta","key":"app.x.y","value":1,"version":2,"rev":1251,…}

    : ping

``Last-Event-ID`` (what a browser's EventSource sends when it reconnects), or the
``since`` / ``last_event_id`` query parameters, resume like ``subscribe``'s
``since``: an incremental snapshot when the hub still knows every change after that
revision, else a full one. A comment line (``: ping``) goes out after every
``heartbeat_ms`` without data. The stream ends when the client goes away or the
server stops; its subscription is removed then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator

import msgspec
from aiohttp import web

from ..core.delivery import DeliveryQueue
from ..core.errors import ErrorCode, HubError
from ..core.keys import Pattern, parse_pattern
from ..core.store import Entry
from ..protocol import encode as wire
from ..protocol.snapshot import take_snapshot
from .base import HUB_KEY, STOPPING, error_response
from .base import identity as request_identity

__all__ = ["RETRY_MS", "STREAMS", "add_stream_routes"]

log = logging.getLogger("companion_hub.server.sse")

RETRY_MS = 2000  # the browser's reconnection delay
TAKE_BYTES = 64 * 1024  # deltas per write
# SSE has no pong, so the WebSocket's delivery window cannot bound what is in flight;
# a small kernel send buffer does: a slow reader then holds the writer in ``write``
# (and newer changes coalesce in the queue) instead of megabytes of superseded
# deltas waiting in the socket (loopback autotunes its buffers to several MB)
SEND_BUFFER_BYTES = 128 * 1024
CHUNK_ENTRIES = 256  # snapshot entries per write
# the live streams' queues (diagnostics and tests)
STREAMS: web.AppKey[set[DeliveryQueue]] = web.AppKey("streams")
# how often an idle stream looks whether its client went away
_POLL_S = 0.5


class _Rev(msgspec.Struct):
    rev: int


_rev_of = msgspec.json.Decoder(_Rev).decode


def _patterns(request: web.Request) -> list[Pattern]:
    hub = request.app[HUB_KEY]
    lim = hub.limits
    texts = request.query.getall("pattern", []) or ["**"]
    if len(texts) > lim.patterns_per_subscription:
        raise HubError(
            ErrorCode.LIMIT_EXCEEDED,
            f"more than {lim.patterns_per_subscription} patterns",
            {"parameter": "pattern"},
        )
    return [parse_pattern(t, lim.key_bytes) for t in texts]


def _since(request: web.Request) -> int | None:
    """The revision to resume after: ``Last-Event-ID``, else ``since`` or
    ``last_event_id`` (None: a full snapshot)."""
    header = request.headers.get("Last-Event-ID")
    candidates = [("Last-Event-ID", header)] if header else []
    for name in ("since", "last_event_id"):
        values = request.query.getall(name, [])
        if len(values) > 1:
            raise HubError(ErrorCode.BAD_REQUEST, f"{name} is given {len(values)} times")
        if values and values[0] != "":
            candidates.append((name, values[0]))
    if not candidates:
        return None
    name, text = candidates[0]
    t = text.strip()
    if not t.isascii() or not t.isdigit() or len(t) > 18:
        raise HubError(
            ErrorCode.BAD_REQUEST,
            f"{name} must be a revision (an integer >= 0), not {text[:40]!r}",
            {"parameter": name},
        )
    return int(t)


def _snapshot_parts(
    hub_id: str, rev: int, mode: str, entries: list[Entry], removed: list[tuple[str, int, int]]
) -> Iterator[bytes]:
    """The snapshot event, a few entries per piece (one ``data:`` line in all)."""
    yield b'id: %d\nevent: snapshot\ndata: {"rev":%d,"mode":"%b","hub":%b,"entries":[' % (
        rev,
        rev,
        mode.encode(),
        wire.encode(hub_id),
    )
    for i in range(0, len(entries), CHUNK_ENTRIES):
        part = b",".join([wire.entry(e) for e in entries[i : i + CHUNK_ENTRIES]])
        yield part if i == 0 else b"," + part
    yield (b'],"removed":[' + b",".join([wire.removed_entry(*r) for r in removed]) + b"]}\n\n")


def _deltas(msgs: list[bytes]) -> bytes:
    out = []
    for data in msgs:
        try:
            rev = _rev_of(data).rev
        except msgspec.DecodeError:  # pragma: no cover - only deltas are queued
            continue
        out.append(b"id: %d\nevent: delta\ndata: %b\n\n" % (rev, data))
    return b"".join(out)


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    try:
        patterns = _patterns(request)
        since = _since(request)
    except HubError as err:
        return error_response(err)
    ident = request_identity(request)
    stopping = request.app[STOPPING]
    wake = asyncio.Event()
    queue = DeliveryQueue(hub.limits.event_queue, notify=wake.set)
    queue.may_read = ident.reader  # shared by the role: see Hub._fan_out
    # --- one synchronous step: snapshot and registration, nothing in between ---
    snap = take_snapshot(hub.store, patterns, since, ident)
    if snap.mode == "full":
        snap.entries.sort(key=lambda e: e.key)
    hub.subscribe(queue, patterns, False)
    streams = request.app[STREAMS]
    streams.add(queue)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy must not buffer the stream
        }
    )
    heartbeat = hub.config.heartbeat_ms / 1000
    try:
        await resp.prepare(request)
        _small_send_buffer(request)
        await resp.write(b"retry: %d\n\n" % RETRY_MS)
        for part in _snapshot_parts(hub.hub_id, snap.rev, snap.mode, snap.entries, snap.removed):
            await resp.write(part)
        del snap  # the entries it holds: not kept for the stream's lifetime
        last_write = time.monotonic()
        while not stopping.is_set():
            msgs = queue.take(TAKE_BYTES, wire.dropped)
            if msgs:
                await resp.write(_deltas(msgs))
                last_write = time.monotonic()
                continue
            wake.clear()  # the queue is empty now: its next push sets it
            transport = request.transport
            if transport is None or transport.is_closing():
                break  # the client went away
            idle = time.monotonic() - last_write
            if idle >= heartbeat:
                await resp.write(b": ping\n\n")
                last_write = time.monotonic()
                continue
            try:
                await asyncio.wait_for(wake.wait(), min(heartbeat - idle, _POLL_S))
            except TimeoutError:
                pass
    except (ConnectionError, RuntimeError) as exc:  # the client went away mid-write
        log.debug("event stream ended", extra={"error": str(exc)[:200]})
    finally:
        hub.unsubscribe(queue, patterns, False)
        streams.discard(queue)
    return resp


def add_stream_routes(app: web.Application) -> None:
    app[STREAMS] = set()
    app.router.add_get("/api/stream", stream)


def _small_send_buffer(request: web.Request) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
