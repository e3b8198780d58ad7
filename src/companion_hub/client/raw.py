"""Raw protocol messages over one live WebSocket: no mirror, no routing, no reconnection.

For conformance tests, benchmarks and tools that must see (or send) exactly what is on
the wire, including what a well-behaved client never sends: malformed JSON, binary
frames, invalid UTF-8, requests without ``hello``. ::

    from companion_hub.client import connect_raw

    async with await connect_raw("ws://127.0.0.1:8420/ws", "probe") as conn:
        print(conn.welcome["hub"], conn.welcome["limits"])
        r = await conn.request({"op": "set", "key": "app.probe.x", "value": 1})
        assert r["op"] == "result" and r["ok"]
        rev, entries = await conn.subscribe("app.probe.**")
        delta = await conn.receive(lambda m: m["op"] == "delta")
        await conn.send('{"op": "set", "id": "x"')        # a malformed frame, as is
        err = await conn.receive(lambda m: m["op"] == "error")

Received frames are split into messages (a batch is several); :meth:`RawConnection.receive`
takes the first that matches and leaves the others, in order, in :attr:`~RawConnection.inbox`.
Pings are answered while reading (``answer_pings=False`` to let them go unanswered).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from ssl import SSLContext
from types import TracebackType
from typing import Any, Literal

import aiohttp
from aiohttp import WSMsgType

from .errors import ConnectionClosed, error_from_wire
from .protocol import PROTOCOL_VERSION, hello_message
from .tls import client_ssl
from .wire import decode_frame, encode

__all__ = ["RawConnection", "connect_raw"]

Message = dict[str, Any]

DEFAULT_TIMEOUT = 5.0
_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def _any_message(msg: Message) -> bool:
    return True


class RawConnection:
    """One WebSocket to the hub; made by :func:`connect_raw`."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[Literal[False]],
        http: aiohttp.ClientSession,
        *,
        owns_http: bool,
    ) -> None:
        self.ws = ws
        self.inbox: deque[Message] = deque()
        """Messages received but not yet taken by :meth:`receive`, in order."""
        self.welcome: Message | None = None
        """The ``welcome`` when :func:`connect_raw` said hello, else None."""
        self._http = http
        self._owns_http = owns_http
        self._request_ids = itertools.count(1)

    def __repr__(self) -> str:
        state = "closed" if self.ws.closed else "open"
        return f"<RawConnection {state} inbox={len(self.inbox)}>"

    @property
    def closed(self) -> bool:
        return self.ws.closed

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code, once the connection is closed."""
        return self.ws.close_code if self.ws.closed else None

    # --- sending ----------------------------------------------------------------------

    async def send(
        self, message: Mapping[str, Any] | Sequence[Mapping[str, Any]] | str | bytes
    ) -> None:
        """Send one frame: a message (or a list of them, a batch) encoded as JSON in a
        text frame; a ``str`` as a text frame exactly as given (it need not be JSON);
        ``bytes`` as a binary frame. See :meth:`send_frame` for invalid UTF-8."""
        if isinstance(message, bytes):
            await self.ws.send_frame(message, WSMsgType.BINARY)
        elif isinstance(message, str):
            await self.ws.send_frame(message.encode(), WSMsgType.TEXT)
        else:
            await self.ws.send_frame(encode(message), WSMsgType.TEXT)

    async def send_frame(self, payload: bytes, *, binary: bool = False) -> None:
        """Send ``payload`` as one text (or binary) frame, byte for byte: a text frame
        may carry invalid UTF-8."""
        await self.ws.send_frame(payload, WSMsgType.BINARY if binary else WSMsgType.TEXT)

    def new_id(self) -> str:
        """A request id not used before on this connection: ``r1``, ``r2``..."""
        return f"r{next(self._request_ids)}"

    # --- receiving --------------------------------------------------------------------

    async def receive_frame(self, timeout: float | None = DEFAULT_TIMEOUT) -> bytes:
        """The payload of the next data frame (text frames as UTF-8 bytes), without
        looking at :attr:`inbox`. Raises :class:`TimeoutError` when none comes within
        ``timeout`` seconds (None: wait forever), :class:`ConnectionClosed` when the
        connection closes."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            if deadline is None:
                msg = await self.ws.receive()
            else:
                # not ws.receive(timeout=...): aiohttp restarts that timeout after every ping
                async with asyncio.timeout_at(deadline):
                    msg = await self.ws.receive()
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                data = msg.data
                return data if isinstance(data, bytes) else str(data).encode()
            if msg.type in _CLOSING:
                code = self.ws.close_code
                raise ConnectionClosed(
                    f"the connection closed ({code})", {"close_code": code} if code else None
                )
            # a ping or pong (when not answered by aiohttp): not data

    async def receive(
        self,
        match: Callable[[Message], bool] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Message:
        """The first received message for which ``match`` is true (any message when
        None): :attr:`inbox` first, then new frames; messages it skips stay queued.
        Raises :class:`TimeoutError` or :class:`ConnectionClosed` like
        :meth:`receive_frame`, and :class:`~companion_hub.client.errors.Internal` for a
        frame that is not JSON."""
        pred = match or _any_message
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        scanned = 0
        while True:
            for i in range(scanned, len(self.inbox)):
                if pred(self.inbox[i]):
                    found = self.inbox[i]
                    del self.inbox[i]
                    return found
            scanned = len(self.inbox)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(f"no matching message; inbox: {list(self.inbox)[:5]}")
            self.inbox.extend(decode_frame(await self.receive_frame(left)))

    async def request(
        self, message: Mapping[str, Any], timeout: float | None = DEFAULT_TIMEOUT
    ) -> Message:
        """Send ``message`` (with a new ``id`` unless it has one) and return the reply:
        the first message with the same ``id`` that is not an inbound ``command``
        (a ``result``, an ``error``, the first ``snapshot`` chunk, a ``welcome``)."""
        msg = dict(message)
        if "id" not in msg:
            msg["id"] = self.new_id()
        request_id = msg["id"]
        await self.send(msg)
        return await self.receive(
            lambda m: m.get("id") == request_id and m.get("op") != "command", timeout
        )

    async def result(
        self, message: Mapping[str, Any], timeout: float | None = DEFAULT_TIMEOUT
    ) -> Any:
        """Like :meth:`request`, but return the reply's ``result``; an error reply raises
        its typed :class:`~companion_hub.client.errors.HubError`."""
        reply = await self.request(message, timeout)
        if reply.get("op") == "result" and reply.get("ok") is True:
            return reply.get("result")
        raise error_from_wire(reply.get("error") if reply.get("op") == "result" else reply)

    async def subscribe(
        self, *patterns: str, sub: str = "s", timeout: float | None = DEFAULT_TIMEOUT, **fields: Any
    ) -> tuple[int, list[Message]]:
        """Subscribe and collect the whole snapshot (every chunk): returns its ``rev``
        and entries. ``fields`` are added to the message (``since``, ``events``,
        ``snapshot``...); with ``snapshot=False`` the result's ``rev`` and no entries.
        An error reply raises its typed error."""
        request_id = self.new_id()
        msg = {"op": "subscribe", "id": request_id, "sub": sub, "patterns": list(patterns)}
        await self.send({**msg, **fields})
        entries: list[Message] = []
        while True:
            m = await self.receive(lambda m: m.get("id") == request_id, timeout)
            if m.get("op") == "result" and m.get("ok") is True:
                result = m.get("result") or {}
                return int(result.get("rev", 0)), entries
            if m.get("op") != "snapshot":
                raise error_from_wire(m.get("error") if m.get("op") == "result" else m)
            entries.extend(m.get("entries") or ())
            if m.get("done", True):
                return int(m["rev"]), entries

    async def wait_closed(self, timeout: float | None = DEFAULT_TIMEOUT) -> int | None:
        """Wait for the hub to close the connection (messages that come first go to the
        :attr:`inbox`); returns the close code. :class:`TimeoutError` if it stays open."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.ws.closed:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                self.inbox.extend(decode_frame(await self.receive_frame(left)))
            except ConnectionClosed:
                break
        return self.ws.close_code

    # --- closing ----------------------------------------------------------------------

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Close the WebSocket (and the HTTP session, when :func:`connect_raw` made it)."""
        try:
            await self.ws.close(code=code, message=message)
        finally:
            if self._owns_http:
                await self._http.close()

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect_raw(
    url: str,
    client: str | None,
    *,
    token: str | None = None,
    protocol: int | None = PROTOCOL_VERSION,
    session: aiohttp.ClientSession | None = None,
    headers: Mapping[str, str] | None = None,
    answer_pings: bool = True,
    max_msg_size: int = 0,
    timeout: float | None = DEFAULT_TIMEOUT,
    ca_file: str | None = None,
    ssl: SSLContext | None = None,
    **hello: Any,
) -> RawConnection:
    """Open a WebSocket to the hub at ``url`` (``ws://HOST:PORT/ws``, or ``wss://``).

    With a ``client`` name it says ``hello`` (with ``token`` and ``protocol`` unless
    None, and any other ``hello`` fields, e.g. ``resume={"hub": ..., "rev": ...}``) and
    waits for the ``welcome``, kept in :attr:`RawConnection.welcome`; a refused hello
    raises the hub's typed error (the connection is closed). With ``client=None``
    nothing is sent: the first message is yours.

    ``session``: an aiohttp session to use (kept open on close; by default the
    connection has its own). ``headers``: extra handshake headers (e.g. ``Origin``).
    ``max_msg_size``: the largest frame accepted, 0 for no limit.

    ``wss://`` verifies the hub's certificate against the system's trust store, or
    against the CA certificates in the PEM file ``ca_file``, or as the
    :class:`ssl.SSLContext` ``ssl`` says (as for :class:`HubClient`). A failed
    verification raises :class:`aiohttp.ClientConnectorCertificateError`.
    """
    tls = client_ssl(url, ca_file=ca_file, ssl=ssl)
    http = session if session is not None else aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(
            url,
            autoping=answer_pings,
            max_msg_size=max_msg_size,
            headers=dict(headers) if headers else None,
            decode_text=False,
            ssl=tls,
        )
    except BaseException:
        if session is None:
            await http.close()
        raise
    conn = RawConnection(ws, http, owns_http=session is None)
    if client is None:
        return conn
    try:
        reply = await conn.request(
            hello_message(client, token=token, protocol=protocol, **hello), timeout
        )
        if reply.get("op") != "welcome":
            raise error_from_wire(reply.get("error") if reply.get("op") == "result" else reply)
    except BaseException:
        await conn.close()
        raise
    conn.welcome = reply
    return conn
