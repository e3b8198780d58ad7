"""The asyncio client of companion-hub, built only on the public protocol (spec v1).

Quick start::

    from companion_hub.client import HubClient

    async with HubClient("ws://127.0.0.1:8420/ws", "tally") as hub:
        await hub.set("app.tally.status", "live")             # write under app.<client>
        entry = await hub.get("companion.buttons.1.0.2")       # one-off read
        async for change in hub.watch("companion.buttons.**"):  # snapshot, then changes
            print(change.key, change.value, change.version, "STALE" if change.stale else "")

The client keeps one WebSocket open (aiohttp), says ``hello`` (with ``resume``
once it has a hub id and revision), and reconnects with exponential back-off and
full jitter when the connection drops or the hub goes silent for more than
2 x ``heartbeat_ms``. After a reconnection it re-subscribes every subscription,
with ``since`` = the highest revision seen when the hub id is unchanged (an
incremental snapshot) and without it otherwise (a full snapshot that replaces the
mirror). See ``docs/sdk.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp
import msgspec
from aiohttp import WSMsgType

from .errors import (
    BadRequest,
    ErrorCode,
    HubError,
    NotFound,
    Timeout,
    Unavailable,
    error_from_wire,
)
from .mirror import Change, Entry, Mirror, entry_from_wire
from .patterns import Pattern, is_key, is_valid_client_name, match_any, parse

__all__ = [
    "CommandHandler",
    "ConnectHook",
    "Event",
    "EventStream",
    "HubClient",
    "Subscription",
    "Watch",
    "WriteResult",
]

log = logging.getLogger("companion_hub.client")

PROTOCOL = 1
CLOSE_REPLACED = 4000
DEFAULT_COMMAND_TIMEOUT_MS = 5_000
MAX_COMMAND_TIMEOUT_MS = 60_000
# extra time the SDK waits for a command's final result beyond its timeout_ms
COMMAND_GRACE_S = 5.0

CommandHandler = Callable[[dict[str, Any], str], Any]
"""``fn(params, source) -> result``; may be a coroutine function."""

ConnectHook = Callable[["HubClient"], Any]
"""``fn(client)`` run after every (re)connection; may be a coroutine function."""
DisconnectHook = Callable[["HubClient", str], Any]
"""``fn(client, reason)`` run after every lost connection; may be a coroutine function."""

F = TypeVar("F", bound=CommandHandler)

_encode = msgspec.json.encode
_decode = msgspec.json.decode

_Kind = Literal["read", "write", "command", "subscribe", "resubscribe"]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The reply to a write: the key's version and the revision of the change."""

    key: str
    version: int
    rev: int


@dataclass(frozen=True, slots=True)
class Event:
    """An ephemeral event (spec section 7)."""

    key: str
    data: Any
    source: str
    ts: int | None


@dataclass(slots=True)
class _Pending:
    fut: asyncio.Future[Any]
    kind: _Kind
    sub: str | None = None


class _Conn:
    """One live WebSocket connection and the requests waiting for a reply on it."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, welcome: dict[str, Any], now: float
    ) -> None:
        self.ws = ws
        self.welcome = welcome
        hb = welcome.get("heartbeat_ms")
        self.heartbeat_ms = hb if isinstance(hb, int) and hb > 0 else 10_000
        self.pending: dict[str, _Pending] = {}
        self.open = True
        self.last_rx = now
        self.reason = "connection closed"
        self.close_code: int | None = None

    async def send(self, data: bytes) -> None:
        if not self.open or self.ws.closed:
            raise ConnectionError("the connection is closed")
        await self.ws.send_frame(data, WSMsgType.TEXT)


class _HelloRefused(Exception):
    def __init__(self, error: HubError) -> None:
        super().__init__(str(error))
        self.error = error


class Subscription:
    """A live subscription; its entries are in the client's mirror.

    Re-established automatically after a reconnection. ``await sub.unsubscribe()``
    ends it.
    """

    def __init__(
        self, client: HubClient, sub_id: str, patterns: tuple[str, ...], events: bool
    ) -> None:
        self.client = client
        self.id = sub_id
        self.patterns = patterns
        self.events = events
        self._parsed = tuple(parse(p) for p in patterns)

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {list(self.patterns)}>"

    def entries(self) -> dict[str, Entry]:
        """The mirror's entries matching this subscription, by key."""
        return self.client.mirror.matching(self._parsed)

    async def unsubscribe(self) -> None:
        await self.client._unsubscribe(self.id)


class Watch:
    """Async iterator of :class:`Change` for some patterns: the current entries first
    (from the subscription's snapshot), then every change, stale flips and deletes
    included.

    Changes waiting to be consumed are coalesced per key, like the hub does: a slow
    consumer skips intermediate versions but never sees an older value after a newer
    one. Iteration ends when the client is closed; leaving an ``async with`` block or
    calling :meth:`aclose` unsubscribes.

    ::

        async with hub.watch("companion.buttons.**") as changes:
            async for ch in changes:
                ...
    """

    def __init__(self, client: HubClient, patterns: tuple[str, ...]) -> None:
        if not patterns:
            raise BadRequest("watch() needs at least one pattern")
        self._client = client
        self.patterns = patterns
        self._parsed = tuple(parse(p) for p in patterns)
        self._queue: OrderedDict[str, Change] = OrderedDict()
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Subscribe and take the initial entries (done by the first ``__anext__``)."""
        if self._started:
            return
        self._started = True
        try:
            self._sub = await self._client.subscribe(*self.patterns)
        except BaseException:
            self._started = False  # a later __anext__ tries again
            raise
        # no await between reading the mirror and registering: nothing is missed
        for entry in self._client.mirror.matching(self._parsed).values():
            self._queue[entry.key] = Change.of(entry)
        self._client._watches.add(self)
        self._wake.set()

    def _push(self, change: Change) -> None:
        if self._closed or not match_any(self._parsed, change.key):
            return
        self._queue.pop(change.key, None)
        self._queue[change.key] = change
        self._wake.set()

    def _end(self) -> None:
        self._closed = True
        self._wake.set()

    def pending(self) -> int:
        """Changes waiting to be consumed."""
        return len(self._queue)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Change:
        if not self._started:
            await self.start()
        while True:
            if self._queue:
                return self._queue.popitem(last=False)[1]
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        """Stop watching and unsubscribe."""
        self._end()
        self._client._watches.discard(self)
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(HubError):
                await sub.unsubscribe()

    async def __aenter__(self) -> Watch:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventStream:
    """Async iterator of :class:`Event` received by subscriptions with ``events=True``.

    Holds at most ``maxlen`` events; on overflow the oldest are dropped and counted
    in :attr:`dropped` (as is the hub's own ``dropped`` notice).
    """

    def __init__(self, client: HubClient, maxlen: int = 1000) -> None:
        self._client = client
        self._queue: deque[Event] = deque()
        self._maxlen = max(1, maxlen)
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _push(self, ev: Event) -> None:
        if len(self._queue) >= self._maxlen:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(ev)
        self._wake.set()

    def _end(self) -> None:
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        self._end()
        self._client._event_streams.discard(self)


class HubClient:
    """An async client of companion-hub with a local mirror of its subscriptions.

    :param url: ``ws://host:port/ws``.
    :param client: the client name, ``[a-z0-9][a-z0-9_-]{0,62}``; it owns ``app.<client>``.
    :param token: the token, when the hub requires one.
    :param backoff_base: the first reconnection delay bound, in seconds; the bound
        doubles per failed attempt up to ``backoff_max`` and each delay is drawn
        uniformly from [0, bound] (full jitter).
    :param connect_timeout: how long :meth:`connect` waits for the first ``welcome``.
    :param request_timeout: how long a request waits for a connection while the
        client is reconnecting before it raises :class:`Unavailable`.

    ::

        async with HubClient("ws://127.0.0.1:8420/ws", "tally") as hub:
            sub = await hub.subscribe("companion.buttons.1.**")
            print(hub.mirror.get("companion.buttons.1.0.2"))

            @hub.on_command("reset")
            async def reset(params, source):
                return {"ok": True}
    """

    def __init__(
        self,
        url: str,
        client: str,
        *,
        token: str | None = None,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        max_msg_size: int = 16 * 1024 * 1024,
    ) -> None:
        if not is_valid_client_name(client):
            raise ValueError(f"invalid client name {client!r}: [a-z0-9][a-z0-9_-]{{0,62}}")
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        self.url = url
        self.client = client
        self.token = token
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_msg_size = max_msg_size
        self.mirror = Mirror()
        self.mirror.add_listener(self._on_change)
        self.namespaces: list[str] = []
        self.session_id: str | None = None
        self.heartbeat_ms: int | None = None
        self.dropped_events = 0
        self.reconnects = 0  # successful connections after the first
        self.last_error: str | None = None
        self.replaced = False
        self._subs: dict[str, Subscription] = {}
        self._handlers: dict[str, tuple[CommandHandler, bool]] = {}
        self._on_connect: list[ConnectHook] = []
        self._on_disconnect: list[DisconnectHook] = []
        self._on_replaced: list[ConnectHook] = []
        self._watches: set[Watch] = set()
        self._event_streams: set[EventStream] = set()
        self._ids = itertools.count(1)
        self._sub_ids = itertools.count(1)
        self._conn: _Conn | None = None
        self._connected: asyncio.Event | None = None
        self._first: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        self._welcomed = 0

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self._closed else "connecting"
        return f"<HubClient {self.client} {self.url} {state}>"

    # --- state ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.open

    @property
    def hub_id(self) -> str | None:
        """The id of the hub this client last talked to."""
        return self.mirror.hub

    @property
    def rev(self) -> int:
        """The resume point: the highest ``rev`` of any delta, snapshot or progress."""
        return self.mirror.rev

    # --- life cycle -----------------------------------------------------------------

    async def __aenter__(self) -> HubClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start the connection and wait for the first ``welcome``.

        Raises the hub's error (e.g. :class:`Unauthorized`) if it refuses the
        ``hello``, or :class:`Unavailable` if no connection succeeds within
        ``connect_timeout``; the client is closed in both cases.
        """
        if self._closed:
            raise Unavailable("the client is closed")
        if self._runner is not None:
            await self.wait_connected(self.connect_timeout)
            return
        loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._first = first = loop.create_future()
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout
            )
        )
        self._runner = asyncio.create_task(self._run(), name=f"hub-client-{self.client}")
        try:
            await asyncio.wait_for(first, self.connect_timeout)
        except TimeoutError:
            await self.close()
            raise Unavailable(
                f"could not connect to {self.url} within {self.connect_timeout:g} s"
                + (f": {self.last_error}" if self.last_error else "")
            ) from None
        except BaseException:
            await self.close()
            raise

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client is connected (raises :class:`Unavailable` on timeout)."""
        await self._ready(timeout)

    async def close(self) -> None:
        """Close the connection, cancel every task, end watches and fail waiting requests."""
        if self._closed and self._runner is None:
            return
        self._closed = True
        conn = self._conn
        if conn is not None and conn.open:
            # a clean closing handshake; the reader sees it and the runner stops
            with contextlib.suppress(Exception):
                await conn.ws.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            # not suppress(CancelledError): a cancellation of close() itself must not
            # be swallowed
            await asyncio.gather(runner, return_exceptions=True)
        if conn is not None:
            self._lost(conn, "the client was closed")
        await self._cancel_tasks()
        for w in list(self._watches):
            w._end()
        self._watches.clear()
        for s in list(self._event_streams):
            s._end()
        self._event_streams.clear()
        if self._first is not None and not self._first.done():
            self._first.cancel()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def _cancel_tasks(self) -> None:
        while self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the connection loop --------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                conn, rest = await self._open()
            except asyncio.CancelledError:
                raise
            except _HelloRefused as exc:
                self.last_error = str(exc.error)
                log.warning("hub refused hello", extra={"client": self.client, "error": str(exc)})
                if self._welcomed == 0:
                    if self._first is not None and not self._first.done():
                        self._first.set_exception(exc.error)
                    return
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
                log.debug("connect failed", extra={"client": self.client, "error": self.last_error})
            else:
                attempt = 0
                try:
                    await self._serve(conn, rest)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not end the reconnect loop
                    log.exception("connection failed", extra={"client": self.client})
                for dhook in self._on_disconnect:
                    self._spawn(
                        self._run_hook(dhook, conn.reason),
                        f"hub-client-on-disconnect-{self.client}",
                    )
                if self.replaced:
                    for rhook in self._on_replaced:
                        self._spawn(self._run_hook(rhook), f"hub-client-on-replaced-{self.client}")
                    log.warning(
                        "connection replaced by another one with the same client name; "
                        "not reconnecting",
                        extra={"client": self.client},
                    )
                    for w in list(self._watches):
                        w._end()
                    for s in list(self._event_streams):
                        s._end()
                    return
            bound = min(self.backoff_max, self.backoff_base * (2**attempt))
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(random.uniform(0, bound))

    async def _open(self) -> tuple[_Conn, list[Any]]:
        """Connect, say hello, wait for welcome."""
        assert self._http is not None
        ws = await self._http.ws_connect(
            self.url,
            autoping=False,  # we see (and answer) pings ourselves: every frame counts
            autoclose=True,
            max_msg_size=self.max_msg_size,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
        )
        try:
            hello: dict[str, Any] = {
                "op": "hello",
                "id": "hello",
                "client": self.client,
                "protocol": PROTOCOL,
            }
            if self.token is not None:
                hello["token"] = self.token
            resume = self.mirror.resume()
            if resume is not None:
                hello["resume"] = resume
            await ws.send_frame(_encode(hello), WSMsgType.TEXT)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.connect_timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError("no welcome from the hub")
                msg = await ws.receive(timeout=remaining)
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type is WSMsgType.PONG:
                    continue
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    raise ConnectionError(
                        f"connection closed during the handshake (code {ws.close_code})"
                    )
                items = _items(msg.data)
                if not items:
                    continue
                first, rest = items[0], items[1:]
                op = first.get("op")
                if op == "welcome":
                    return _Conn(ws, first, loop.time()), rest
                if op == "error" or (op == "result" and first.get("ok") is False):
                    err = first.get("error") if op == "result" else first
                    raise _HelloRefused(error_from_wire(err))
                log.debug("unexpected message before welcome", extra={"op": op})
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    async def _serve(self, conn: _Conn, rest: list[Any]) -> None:
        welcome = conn.welcome
        hub = str(welcome.get("hub", ""))
        same = self.mirror.on_welcome(hub)
        ns = welcome.get("namespaces")
        self.namespaces = [n for n in ns if isinstance(n, str)] if isinstance(ns, list) else []
        session = welcome.get("session")
        self.session_id = session if isinstance(session, str) else None
        self.heartbeat_ms = conn.heartbeat_ms
        if self._welcomed:
            self.reconnects += 1
        self._welcomed += 1
        self._conn = conn
        log.info(
            "connected",
            extra={"client": self.client, "hub": hub, "resumed": same, "subs": len(self._subs)},
        )
        # re-subscribe everything before any new request can go out
        batch: list[dict[str, Any]] = []
        for sub in self._subs.values():
            rid = self._next_id()
            msg: dict[str, Any] = {
                "op": "subscribe",
                "id": rid,
                "sub": sub.id,
                "patterns": list(sub.patterns),
                "snapshot": True,
                "events": sub.events,
            }
            since = self.mirror.since(sub.id)
            if since is not None:
                msg["since"] = since
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(self._resubscribed(sub.id))
            conn.pending[rid] = _Pending(fut, "resubscribe", sub.id)
            batch.append(msg)
        for item in rest:
            if isinstance(item, dict):
                self._dispatch(conn, item)
        pinger = asyncio.create_task(self._pinger(conn), name=f"hub-client-ping-{self.client}")
        try:
            if batch:
                await conn.send(_encode(batch))
            assert self._connected is not None
            self._connected.set()
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            for hook in self._on_connect:
                self._spawn(self._run_hook(hook), f"hub-client-on-connect-{self.client}")
            await self._read_loop(conn)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            conn.reason = f"send failed: {exc!r}"
        finally:
            # lost first, in the same step that saw the close: nothing may observe the
            # connection as open (or `replaced` without `connected` being False) while
            # the pinger winds down
            self._lost(conn, conn.reason)
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
            if not conn.ws.closed:
                # do not wait for a closing handshake with a hub that may be dead
                self._spawn(conn.ws.close(), "hub-client-close")
        log.info(
            "disconnected",
            extra={"client": self.client, "reason": conn.reason, "code": conn.close_code},
        )

    async def _run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            result = hook(self, *args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "hook failed", extra={"client": self.client, "hook": getattr(hook, "__name__", "")}
            )

    def on_disconnect(self, fn: DisconnectHook) -> DisconnectHook:
        """Run ``fn(client, reason)`` whenever a connection is lost (usable as a
        decorator): a dropped network, a dead hub, a takeover. The client reconnects
        by itself afterwards, except after a takeover (see :meth:`on_replaced`)."""
        self._on_disconnect.append(fn)
        return fn

    def on_replaced(self, fn: ConnectHook) -> ConnectHook:
        """Run ``fn(client)`` when another connection with the same client name took
        over this one (close code 4000). The client then stops: it does not reconnect,
        since two programs fighting over one name would take it from each other forever.
        Its watches end, requests fail with ``Unavailable`` ("taken over"), and
        ``replaced`` is True. Start a new client (or exit) from this hook if that is what
        the program should do."""
        self._on_replaced.append(fn)
        return fn

    def on_connect(self, fn: ConnectHook) -> ConnectHook:
        """Run ``fn(client)`` after every connection, the first included (usable as a
        decorator). Keys a client owns turn stale while it is away; re-write them here
        (an equal value clears the flag), then call :meth:`sync` if you want the hub to
        delete the ones you no longer have. ::

            @hub.on_connect
            async def republish(hub):
                await hub.set_many(current_state)
                await hub.sync()
        """
        self._on_connect.append(fn)
        return fn

    def _resubscribed(self, sub_id: str) -> Callable[[asyncio.Future[Any]], None]:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None or isinstance(exc, Unavailable):
                return  # ok, or the connection dropped: retried on the next one
            log.warning(
                "re-subscribing failed; subscription dropped",
                extra={"client": self.client, "sub": sub_id, "error": str(exc)},
            )
            self._forget_sub(sub_id)

        return done

    async def _read_loop(self, conn: _Conn) -> None:
        ws = conn.ws
        loop = asyncio.get_running_loop()
        while True:
            # a dead hub: no frame at all (not even a ping) for 2 x heartbeat_ms
            timeout = 2 * conn.heartbeat_ms / 1000
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                conn.reason = f"no frame from the hub for {timeout:g} s"
                return
            conn.last_rx = loop.time()
            t = msg.type
            if t is WSMsgType.TEXT or t is WSMsgType.BINARY:
                for item in _items(msg.data):
                    try:
                        self._dispatch(conn, item)
                    except Exception:
                        log.exception("bad message from the hub", extra={"op": item.get("op")})
            elif t is WSMsgType.PING:
                await ws.pong(msg.data)
            elif t is WSMsgType.PONG:
                pass
            else:
                if t is WSMsgType.CLOSE:
                    conn.close_code = msg.data
                    conn.reason = f"closed by the hub ({msg.data} {msg.extra or ''})".strip()
                elif t is WSMsgType.ERROR:
                    conn.reason = f"connection error: {msg.data!r}"
                else:
                    conn.close_code = ws.close_code
                    conn.reason = f"connection closed ({ws.close_code})"
                if conn.close_code == CLOSE_REPLACED:
                    self.replaced = True
                return

    async def _pinger(self, conn: _Conn) -> None:
        """Ping a quiet hub so that a live one always answers within 2 x heartbeat_ms."""
        hb = conn.heartbeat_ms / 1000
        loop = asyncio.get_running_loop()
        while conn.open:
            await asyncio.sleep(hb / 2)
            if loop.time() - conn.last_rx >= hb / 2 and not conn.ws.closed:
                try:
                    await conn.ws.ping()
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    return

    def _lost(self, conn: _Conn, reason: str) -> None:
        """The connection is gone: fail what waits on it (with the right message)."""
        if not conn.open:
            return
        conn.open = False
        if self._conn is conn:
            self._conn = None
            if self._connected is not None:
                self._connected.clear()
        pending, conn.pending = conn.pending, {}
        for p in pending.values():
            if p.kind == "write":
                text = (
                    f"connection lost before the reply ({reason}); the write may have been applied"
                )
            elif p.kind == "command":
                text = (
                    f"connection lost before the result ({reason}); "
                    "the command may have been executed"
                )
            else:
                text = f"connection lost ({reason})"
            if p.kind == "subscribe" and p.sub is not None:
                self._forget_sub(p.sub)
            if not p.fut.done():
                p.fut.set_exception(Unavailable(text))

    # --- incoming messages ----------------------------------------------------------

    def _dispatch(self, conn: _Conn, item: dict[str, Any]) -> None:
        op = item.get("op")
        if op == "delta":
            self.mirror.on_delta(item)
        elif op == "result":
            p = conn.pending.pop(str(item.get("id")), None)
            if p is None or p.fut.done():
                return
            if item.get("ok"):
                p.fut.set_result(item.get("result"))
            else:
                p.fut.set_exception(error_from_wire(item.get("error")))
        elif op == "snapshot":
            if self.mirror.on_snapshot(item):
                p = conn.pending.pop(str(item.get("id")), None)
                if p is not None and not p.fut.done():
                    p.fut.set_result(item.get("rev"))
        elif op == "progress":
            rev = item.get("rev")
            if isinstance(rev, int):
                self.mirror.on_progress(rev)
        elif op == "event":
            ts = item.get("ts")
            ev = Event(
                str(item.get("key")),
                item.get("data"),
                str(item.get("source", "")),
                ts if isinstance(ts, int) else None,
            )
            for s in list(self._event_streams):
                s._push(ev)
        elif op == "dropped":
            n = item.get("events")
            if isinstance(n, int):
                self.dropped_events += n
                for s in list(self._event_streams):
                    s.dropped += n
                log.warning("the hub dropped events", extra={"client": self.client, "events": n})
        elif op == "command":
            self._spawn(self._run_handler(conn, item), f"hub-client-cmd-{item.get('id')}")
        elif op == "error":
            rid = item.get("id")
            p = conn.pending.pop(str(rid), None) if rid is not None else None
            if p is not None and not p.fut.done():
                p.fut.set_exception(error_from_wire(item))
            else:
                log.warning(
                    "error from the hub",
                    extra={"client": self.client, "code": item.get("code"), "error": item},
                )
        else:
            log.debug("ignored message", extra={"op": op})

    def _on_change(self, change: Change) -> None:
        for w in list(self._watches):
            w._push(change)

    async def _run_handler(self, conn: _Conn, item: dict[str, Any]) -> None:
        hid = item.get("id")
        name = str(item.get("name", ""))
        params = item.get("params")
        if not isinstance(params, dict):
            params = {}
        source = str(item.get("source", ""))
        reply: dict[str, Any] = {"op": "reply", "id": hid}
        registered = self._handlers.get(name)
        if registered is None:
            reply["ok"] = False
            reply["error"] = NotFound(f"{self.client} has no command {name!r}").to_wire()
        else:
            fn, in_thread = registered
            try:
                if in_thread:
                    result = await asyncio.to_thread(fn, params, source)
                else:
                    result = fn(params, source)
                if inspect.isawaitable(result):
                    result = await result
                reply["ok"] = True
                reply["result"] = result
            except asyncio.CancelledError:
                raise
            except HubError as exc:
                reply["ok"] = False
                reply["error"] = exc.to_wire()
            except Exception as exc:
                log.info(
                    "command handler failed",
                    extra={"client": self.client, "command": name, "error": repr(exc)},
                )
                reply["ok"] = False
                reply["error"] = {
                    "code": str(ErrorCode.FAILED),
                    "message": str(exc) or type(exc).__name__,
                }
        try:
            data = _encode(reply)
        except (TypeError, ValueError, OverflowError) as exc:
            data = _encode(
                {
                    "op": "reply",
                    "id": hid,
                    "ok": False,
                    "error": {
                        "code": str(ErrorCode.FAILED),
                        "message": f"the handler's result is not JSON: {exc}",
                    },
                }
            )
        if not conn.open:
            # the hub already answered the caller with UNAVAILABLE
            log.info("reply dropped: connection gone", extra={"command": name})
            return
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await conn.send(data)

    # --- requests -------------------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    async def _ready(self, timeout: float | None = None) -> _Conn:
        if timeout is None:
            timeout = self.request_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.replaced:
                raise Unavailable(
                    "this connection was taken over by another one with the same client name"
                )
            if self._closed or self._connected is None:
                raise Unavailable("the client is not running (use connect() or async with)")
            conn = self._conn
            if conn is not None and conn.open:
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(
                    f"not connected to the hub (waited {timeout:g} s)"
                    + (f": {self.last_error}" if self.last_error else "")
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), remaining)

    async def _send_request(
        self,
        conn: _Conn,
        msg: dict[str, Any],
        kind: _Kind,
        *,
        sub: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        rid = self._next_id()
        msg["id"] = rid
        try:
            data = _encode(msg)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadRequest(f"not JSON: {exc}") from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[rid] = _Pending(fut, kind, sub)
        try:
            await conn.send(data)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            conn.pending.pop(rid, None)
            may = (
                "; the write may have been applied"
                if kind == "write"
                else "; the command may have been executed"
                if kind == "command"
                else ""
            )
            raise Unavailable(f"could not send {msg['op']!r}: {exc}{may}") from None
        try:
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout(
                f"no result from the hub within {timeout:g} s; the command may have been executed"
            ) from None
        finally:
            conn.pending.pop(rid, None)

    async def _request(
        self, msg: dict[str, Any], kind: _Kind, *, timeout: float | None = None
    ) -> Any:
        conn = await self._ready()
        return await self._send_request(conn, msg, kind, timeout=timeout)

    # --- subscriptions --------------------------------------------------------------

    async def subscribe(self, *patterns: str, events: bool = False) -> Subscription:
        """Subscribe to ``patterns``; returns once the snapshot is in the mirror.

        With ``events=True`` the subscription also receives events published under
        the patterns (read them with :meth:`events`). The subscription survives
        reconnections. ::

            sub = await hub.subscribe("companion.buttons.1.**", "hub.clients.*")
            for key, entry in sub.entries().items():
                print(key, entry.value)
        """
        if not patterns:
            raise BadRequest("subscribe() needs at least one pattern")
        parsed = [parse(p) for p in patterns]
        conn = await self._ready()
        sub_id = f"s{next(self._sub_ids)}"
        sub = Subscription(self, sub_id, tuple(patterns), events)
        # registered now, with no await before the request is queued: a reconnection
        # re-subscribes it, and a drop before the snapshot forgets it (see _lost)
        self._subs[sub_id] = sub
        self.mirror.add_sub(sub_id, parsed)
        msg: dict[str, Any] = {
            "op": "subscribe",
            "sub": sub_id,
            "patterns": list(patterns),
            "snapshot": True,
            "events": events,
        }
        try:
            await self._send_request(conn, msg, "subscribe", sub=sub_id)
        except BaseException:
            self._forget_sub(sub_id)
            raise
        return sub

    def _forget_sub(self, sub_id: str) -> None:
        self._subs.pop(sub_id, None)
        self.mirror.remove_sub(sub_id)

    async def _unsubscribe(self, sub_id: str) -> None:
        if sub_id not in self._subs:
            return
        self._forget_sub(sub_id)
        conn = self._conn
        if conn is None or not conn.open:
            return  # not re-subscribed on reconnect
        with contextlib.suppress(NotFound, Unavailable):
            await self._send_request(conn, {"op": "unsubscribe", "sub": sub_id}, "read")

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def watch(self, *patterns: str) -> Watch:
        """Watch keys matching ``patterns``: the current entries, then every change.

        ::

            async for ch in hub.watch("companion.buttons.**"):
                if ch.deleted:
                    print(ch.key, "deleted")
                else:
                    print(ch.key, ch.value, "STALE" if ch.stale else "")
        """
        return Watch(self, patterns)

    def events(self, maxlen: int = 1000) -> EventStream:
        """Events delivered to subscriptions made with ``events=True``. ::

        await hub.subscribe("app.panel.**", events=True)
        async for ev in hub.events():
            print(ev.key, ev.data, ev.source)
        """
        stream = EventStream(self, maxlen)
        if self._closed:
            stream._end()
        else:
            self._event_streams.add(stream)
        return stream

    # --- reads ----------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry of ``key`` (None if it does not exist).

        Answered from the mirror when a subscription covers the key, else with a
        one-off ``get`` request. ::

            e = await hub.get("hub.info")
            print(e.value["version"] if e else "missing")
        """
        p = parse(key)
        if not is_key(key):
            raise BadRequest(f"{key!r} is a pattern; use get_many()")
        if self.mirror.covered(p):
            return self.mirror.get(key)
        res = await self._request({"op": "get", "patterns": [key]}, "read")
        for e in _entries_of(res):
            if e.key == key:
                return e
        return None

    async def get_many(self, *patterns: str) -> dict[str, Entry]:
        """Entries matching any of ``patterns``, by key (sorted).

        From the mirror when subscriptions cover every pattern, else one ``get``. ::

            for key, e in (await hub.get_many("hub.clients.*")).items():
                print(key, e.value["connected"])
        """
        if not patterns:
            raise BadRequest("get_many() needs at least one pattern")
        parsed: list[Pattern] = [parse(p) for p in patterns]
        if all(self.mirror.covered(p) for p in parsed):
            return self.mirror.matching(parsed)
        res = await self._request({"op": "get", "patterns": list(patterns)}, "read")
        return {e.key: e for e in sorted(_entries_of(res), key=lambda e: e.key)}

    # --- writes ---------------------------------------------------------------------

    async def set(self, key: str, value: Any, expect_version: int | None = None) -> WriteResult:
        """Write ``key`` (under a namespace this client owns, by default ``app.<client>``).

        ``expect_version`` is compare-and-set (0: the key must not exist); a mismatch
        raises :class:`Conflict`. Raises :class:`Unavailable` if the connection drops
        before the reply (the write may have been applied). ::

            r = await hub.set("app.tally.status", "live")
            await hub.set("app.tally.status", "off", expect_version=r.version)
        """
        msg: dict[str, Any] = {"op": "set", "key": key, "value": value}
        if expect_version is not None:
            msg["expect_version"] = expect_version
        res = await self._request(msg, "write")
        return WriteResult(key, int(res["version"]), int(res["rev"]))

    async def set_many(
        self, values: Mapping[str, Any], expect_versions: Mapping[str, int] | None = None
    ) -> list[WriteResult]:
        """Write several keys atomically (consecutive revisions, all or none). ::

        await hub.set_many({"app.tally.a": 1, "app.tally.b": 2})
        """
        if not values:
            raise BadRequest("set_many() needs at least one entry")
        entries: list[dict[str, Any]] = []
        for k, v in values.items():
            e: dict[str, Any] = {"key": k, "value": v}
            if expect_versions and k in expect_versions:
                e["expect_version"] = expect_versions[k]
            entries.append(e)
        res = await self._request({"op": "set", "entries": entries}, "write")
        return [WriteResult(r["key"], int(r["version"]), int(r["rev"])) for r in res["results"]]

    async def delete(self, key: str, expect_version: int | None = None) -> WriteResult:
        """Delete ``key``; :class:`NotFound` if it does not exist."""
        msg: dict[str, Any] = {"op": "delete", "key": key}
        if expect_version is not None:
            msg["expect_version"] = expect_version
        res = await self._request(msg, "write")
        return WriteResult(key, int(res["version"]), int(res["rev"]))

    async def sync(self) -> int:
        """Tell the hub that everything this client owns has been written on this
        connection: its other keys are deleted. Returns how many were deleted."""
        res = await self._request({"op": "sync"}, "write")
        return int(res.get("deleted", 0)) if isinstance(res, dict) else 0

    async def publish(self, key: str, data: Any = None) -> int:
        """Publish an ephemeral event; returns how many connections it was delivered to."""
        res = await self._request({"op": "publish", "key": key, "data": data}, "write")
        return int(res.get("delivered", 0)) if isinstance(res, dict) else 0

    # --- commands -------------------------------------------------------------------

    async def command(
        self,
        target: str,
        name: str,
        /,
        *,
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Any:
        """Send command ``name`` to the owner of namespace ``target``; return its result.

        Raises the typed error of the outcome: :class:`Unavailable` (owner offline, or
        the connection dropped: it may have been executed), :class:`Timeout`,
        :class:`NotFound` (unknown name), :class:`Failed` (the owner failed)... ::

            r = await hub.command("companion", "press", location="1/0/2")
            r = await hub.command("app.mixer", "cut", timeout_ms=2000, idempotency_key="cut-17")
        """
        return await self.call(
            target, name, params, timeout_ms=timeout_ms, idempotency_key=idempotency_key
        )

    async def call(
        self,
        target: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Like :meth:`command`, with the params as a mapping."""
        msg: dict[str, Any] = {
            "op": "command",
            "target": target,
            "name": name,
            "params": dict(params or {}),
        }
        if timeout_ms is not None:
            msg["timeout_ms"] = timeout_ms
        if idempotency_key is not None:
            msg["idempotency_key"] = idempotency_key
        t = timeout_ms if timeout_ms is not None else DEFAULT_COMMAND_TIMEOUT_MS
        guard = min(max(t, 1), MAX_COMMAND_TIMEOUT_MS) / 1000 + COMMAND_GRACE_S
        return await self._request(msg, "command", timeout=guard)

    def handle(self, name: str, fn: CommandHandler, *, in_thread: bool = False) -> None:
        """Handle command ``name`` sent to this client's namespaces.

        ``fn(params, source)`` may be sync or async; its return value is the result.
        Raise a :class:`HubError` subclass to answer with that code; any other
        exception answers ``FAILED`` with its message. Commands with no handler get
        ``NOT_FOUND``. Sync handlers run on the event loop unless ``in_thread``.
        """
        self._handlers[name] = (fn, in_thread)

    def on_command(self, name: str) -> Callable[[F], F]:
        """Decorator form of :meth:`handle`. ::

        @hub.on_command("reset")
        async def reset(params, source):
            return {"done": True}
        """

        def deco(fn: F) -> F:
            self.handle(name, fn)
            return fn

        return deco


def _items(data: str | bytes) -> list[dict[str, Any]]:
    """The messages of one frame: an object, or an array of objects."""
    try:
        obj = _decode(data)
    except msgspec.DecodeError:
        log.warning("unparsable frame from the hub")
        return []
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list):
        return [m for m in obj if isinstance(m, dict)]
    return []


def _entries_of(result: Any) -> list[Entry]:
    if not isinstance(result, dict):
        return []
    return [entry_from_wire(e) for e in result.get("entries") or () if isinstance(e, dict)]
