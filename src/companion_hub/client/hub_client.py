"""The asyncio client of companion-hub, built only on the public protocol (spec v1).

:class:`HubClient` is a facade: the conversation with the hub is the sans-I/O
:class:`~companion_hub.client.protocol.ClientProtocol`, the sockets, timers and
reconnection are the :class:`~companion_hub.client.connection.Driver`, the entries
are in the :class:`~companion_hub.client.mirror.Mirror`, and watches and event
streams are in :mod:`~companion_hub.client.streams`. See ``docs/sdk.md``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from ssl import SSLContext
from types import TracebackType
from typing import Any, TypeVar

from . import requests
from .connection import ClientState, Connected, Disconnected, Driver, DriverEvent
from .errors import BadRequest, NotFound, Unavailable
from .events import (
    CommandReceived,
    ErrorReceived,
    EventReceived,
    EventsDropped,
    MalformedMessage,
    SubscriptionLost,
)
from .handlers import CommandHandler, CommandHandlers
from .hooks import ConnectHook, DisconnectHook, Hooks
from .messages import (
    Entry,
    HubLimits,
    Welcome,
    WriteResult,
    entries_from_result,
    write_result_from_wire,
)
from .mirror import Mirror
from .protocol import ClientProtocol, RequestKind, is_key, parse_patterns
from .streams import EventStream, Streams, Subscription, Watch
from .tls import client_ssl

__all__ = ["CommandHandler", "ConnectHook", "DisconnectHook", "HubClient"]

log = logging.getLogger("companion_hub.client")

F = TypeVar("F", bound=CommandHandler)


class _DriverSetting:
    """A :class:`HubClient` attribute that is its driver's attribute of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, client: HubClient | None, owner: type | None = None) -> Any:
        return self if client is None else getattr(client._driver, self.name)

    def __set__(self, client: HubClient, value: Any) -> None:
        setattr(client._driver, self.name, value)


class HubClient:
    """An async client of companion-hub with a local mirror of its subscriptions.

    :param url: ``ws://host:port/ws``, or ``wss://host:port/ws`` for a hub serving TLS.
    :param client: the client name, ``[a-z0-9][a-z0-9_-]{0,62}``; it owns ``app.<client>``.
        An invalid one raises :class:`BadRequest` (a :class:`ValueError`) at once.
    :param token: the token, when the hub requires one.
    :param backoff_base: the first reconnection delay bound, in seconds; the bound
        doubles per failed attempt up to ``backoff_max`` and each delay is drawn
        uniformly from [0, bound] (full jitter).
    :param connect_timeout: how long :meth:`connect` waits for the first ``welcome``.
    :param request_timeout: how long a request waits for a connection while the
        client is reconnecting before it raises :class:`Unavailable`.
    :param max_msg_size: the largest frame accepted from the hub, in bytes.
    :param ca_file: for ``wss://``: a PEM file of the CA certificates to trust (the
        hub's self-signed certificate, or the CA that signed it) instead of the
        system's trust store. The certificate is always verified, host name included.
    :param ssl: for ``wss://``: an :class:`ssl.SSLContext` used as given (client
        certificates, pinning...), instead of ``ca_file``. Without either, the
        system's trust store is used. A certificate that fails verification makes
        :meth:`connect` raise :class:`Unavailable` at once, saying so.

    ::

        async with HubClient("ws://127.0.0.1:8420/ws", "tally") as hub:
            await hub.set("app.tally.status", "live")             # write under app.<client>
            sub = await hub.subscribe("companion.buttons.1.**")
            print(hub.mirror.get("companion.buttons.1.0.2"))
            async for change in hub.watch("companion.buttons.**"):  # snapshot, then changes
                print(change.key, change.value, "STALE" if change.stale else "")

            @hub.on_command("reset")
            async def reset(params, source):
                return {"ok": True}
    """

    backoff_base = _DriverSetting()
    backoff_max = _DriverSetting()
    connect_timeout = _DriverSetting()
    request_timeout = _DriverSetting()
    max_msg_size = _DriverSetting()

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
        ca_file: str | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self._protocol = ClientProtocol(client, token)
        tls = client_ssl(url, ca_file=ca_file, ssl=ssl)
        self.url = url
        self.client = client
        self.token = token
        self.mirror: Mirror = self._protocol.mirror
        self.welcome: Welcome | None = None
        self.namespaces: list[str] = []
        self.session_id: str | None = None
        self.heartbeat_ms: int | None = None
        self.dropped_events = 0
        self.reconnects = 0  # successful connections after the first
        self._subs: dict[str, Subscription] = {}
        self._handlers = CommandHandlers(client)
        self._streams = Streams()
        self.mirror.add_listener(self._streams.change)
        self._driver = Driver(
            self._protocol,
            url,
            self._on_event,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_msg_size=max_msg_size,
            ssl=tls,
        )
        self._hooks = Hooks(self, self._driver.spawn)

    def __repr__(self) -> str:
        return f"<HubClient {self.client} {self.url} {self.state}>"

    # --- state ------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """``idle``, ``connecting``, ``connected``, ``replaced`` or ``closed``."""
        return self._driver.state

    @property
    def connected(self) -> bool:
        return self._driver.state is ClientState.CONNECTED

    @property
    def replaced(self) -> bool:
        """Another connection with the same client name took this one over."""
        return self._driver.replaced

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed."""
        return self._driver.last_error

    @property
    def hub_id(self) -> str | None:
        """The id of the hub this client last talked to."""
        return self.mirror.hub

    @property
    def rev(self) -> int:
        """The resume point: the highest ``rev`` of any delta, snapshot or progress."""
        return self.mirror.rev

    @property
    def limits(self) -> HubLimits:
        """The limits of the last ``welcome`` (all None before it), ``oldest_rev``
        included: the oldest revision from which the hub can still resume."""
        return self.welcome.limits if self.welcome is not None else HubLimits()

    # --- life cycle -------------------------------------------------------------------

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
        try:
            await self._driver.start()
        except BaseException:
            if self._driver.closed:
                self._streams.end_all()
            raise

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client is connected (raises :class:`Unavailable` on timeout)."""
        await self._driver.ready(timeout)

    async def close(self) -> None:
        """Close the connection, cancel every task, end watches and fail waiting requests."""
        await self._driver.close()
        self._streams.end_all()

    # --- hooks ------------------------------------------------------------------------

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
        self._hooks.connected.append(fn)
        return fn

    def on_disconnect(self, fn: DisconnectHook) -> DisconnectHook:
        """Run ``fn(client, reason)`` whenever a connection is lost (usable as a
        decorator): a dropped network, a dead hub, a takeover. The client reconnects
        by itself afterwards, except after a takeover (see :meth:`on_replaced`)."""
        self._hooks.disconnected.append(fn)
        return fn

    def on_replaced(self, fn: ConnectHook) -> ConnectHook:
        """Run ``fn(client)`` when another connection with the same client name took
        over this one (close code 4000). The client then stops: it does not reconnect,
        since two programs fighting over one name would take it from each other forever.
        Its watches end, requests fail with ``Unavailable`` ("taken over"), and
        ``replaced`` is True. Start a new client (or exit) from this hook if that is what
        the program should do."""
        self._hooks.replaced.append(fn)
        return fn

    # --- what the driver reports ------------------------------------------------------

    def _on_event(self, event: DriverEvent) -> None:
        if isinstance(event, Connected):
            if self.welcome is not None:
                self.reconnects += 1
            self.welcome = event.welcome
            self.namespaces = list(event.welcome.namespaces)
            self.session_id = event.welcome.session
            self.heartbeat_ms = event.welcome.heartbeat_ms
            self._hooks.run(self._hooks.connected, "on-connect")
        elif isinstance(event, Disconnected):
            self._hooks.run(self._hooks.disconnected, "on-disconnect", event.reason)
            if event.replaced:
                self._hooks.run(self._hooks.replaced, "on-replaced")
                self._streams.end_all()
        elif isinstance(event, EventReceived):
            self._streams.event(event.event)
        elif isinstance(event, EventsDropped):
            self.dropped_events += event.count
            self._streams.dropped(event.count)
            log.warning(
                "the hub dropped events", extra={"client": self.client, "events": event.count}
            )
        elif isinstance(event, CommandReceived):
            answer = self._handlers.answer(event, self._protocol, self._driver.flush_quietly)
            self._driver.spawn(answer, f"hub-client-cmd-{event.id}")
        elif isinstance(event, SubscriptionLost):
            self._subs.pop(event.sub_id, None)
            log.warning(
                "re-subscribing failed; subscription dropped",
                extra={"client": self.client, "sub": event.sub_id, "error": str(event.error)},
            )
        elif isinstance(event, ErrorReceived | MalformedMessage):
            log.warning(
                "error from the hub" if isinstance(event, ErrorReceived) else "bad message",
                extra={"client": self.client, "event": repr(event)},
            )

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, *patterns: str, events: bool = False) -> Subscription:
        """Subscribe to ``patterns``; returns once the snapshot is in the mirror.

        With ``events=True`` the subscription also receives events published under
        the patterns (read them with :meth:`events`). The subscription survives
        reconnections. An invalid pattern raises :class:`BadRequest` before anything
        is sent. ::

            sub = await hub.subscribe("companion.buttons.1.**", "hub.clients.*")
            for key, entry in sub.entries().items():
                print(key, entry.value)
        """
        if not patterns:
            raise BadRequest("subscribe() needs at least one pattern")
        parse_patterns(patterns)
        await self._driver.ready()
        spec, request_id = self._protocol.subscribe(patterns, events=events)
        try:
            await self._driver.wait(request_id, RequestKind.SUBSCRIBE, "subscribe")
        except BaseException:
            self._protocol.forget_subscription(spec.id)
            raise
        sub = Subscription(spec, self.mirror, self._unsubscribe, self)
        self._subs[spec.id] = sub
        return sub

    async def _unsubscribe(self, sub_id: str) -> None:
        self._subs.pop(sub_id, None)
        request_id = self._protocol.unsubscribe(sub_id)
        if request_id is None:
            return  # unknown, or not connected: not re-subscribed on reconnect anyway
        with contextlib.suppress(NotFound, Unavailable):
            await self._driver.wait(request_id, RequestKind.READ, "unsubscribe")

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
        return Watch(self.subscribe, self.mirror, self._streams, patterns, parse_patterns(patterns))

    def events(self, maxlen: int = 1000) -> EventStream:
        """Events delivered to subscriptions made with ``events=True``. ::

        await hub.subscribe("app.panel.**", events=True)
        async for ev in hub.events():
            print(ev.key, ev.data, ev.source)
        """
        return self._streams.open_event_stream(maxlen)

    # --- reads ------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry of ``key`` (None if it does not exist).

        Answered from the mirror when a subscription covers the key, else with a
        one-off ``get`` request. ::

            e = await hub.get("hub.info")
            print(e.value["version"] if e else "missing")
        """
        (pattern,) = parse_patterns([key])
        if not is_key(key):
            raise BadRequest(f"{key!r} is a pattern; use get_many()")
        if self.mirror.covered(pattern):
            return self.mirror.get(key)
        result = await self._driver.request(requests.get_message([key]), RequestKind.READ)
        for e in entries_from_result(result):
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
        parsed = parse_patterns(patterns)
        if all(self.mirror.covered(p) for p in parsed):
            return self.mirror.matching(parsed)
        result = await self._driver.request(requests.get_message(patterns), RequestKind.READ)
        return {e.key: e for e in sorted(entries_from_result(result), key=lambda e: e.key)}

    # --- writes -----------------------------------------------------------------------

    async def set(
        self, key: str, value: Any, expect_version: int | None = None, *, durable: bool = False
    ) -> WriteResult:
        """Write ``key`` (under a namespace this client owns, by default ``app.<client>``).

        ``expect_version`` is compare-and-set (0: the key must not exist); a mismatch
        raises :class:`Conflict`. With ``durable=True`` the hub replies only once the
        change is on disk in its event log. Raises :class:`Unavailable` if the
        connection drops before the reply (the write may have been applied). ::

            r = await hub.set("app.tally.status", "live")
            await hub.set("app.tally.status", "off", expect_version=r.version)
            await hub.set("app.tally.config", {"cams": 4}, durable=True)
        """
        msg = requests.set_message(key, value, expect_version, durable)
        return write_result_from_wire(key, await self._write(msg))

    async def set_many(
        self,
        values: Mapping[str, Any],
        expect_versions: Mapping[str, int] | None = None,
        *,
        durable: bool = False,
    ) -> list[WriteResult]:
        """Write several keys atomically (consecutive revisions, all or none). ::

        await hub.set_many({"app.tally.a": 1, "app.tally.b": 2}, durable=True)
        """
        if not values:
            raise BadRequest("set_many() needs at least one entry")
        msg = requests.set_many_message(values, expect_versions, durable)
        return requests.write_results_from_wire(await self._write(msg))

    async def delete(
        self, key: str, expect_version: int | None = None, *, durable: bool = False
    ) -> WriteResult:
        """Delete ``key``; :class:`NotFound` if it does not exist. ``durable`` as for
        :meth:`set`."""
        msg = requests.delete_message(key, expect_version, durable)
        return write_result_from_wire(key, await self._write(msg))

    async def _write(self, msg: dict[str, Any]) -> Any:
        return await self._driver.request(msg, RequestKind.WRITE)

    async def sync(self) -> int:
        """Tell the hub that everything this client owns has been written on this
        connection: its other keys are deleted. Returns how many were deleted."""
        return requests.count_from_result(await self._write({"op": "sync"}), "deleted")

    async def publish(self, key: str, data: Any = None) -> int:
        """Publish an ephemeral event; returns how many connections it was delivered to."""
        result = await self._write({"op": "publish", "key": key, "data": data})
        return requests.count_from_result(result, "delivered")

    # --- commands ---------------------------------------------------------------------

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
        msg = requests.command_message(target, name, params, timeout_ms, idempotency_key)
        wait_s = requests.command_wait_s(timeout_ms)
        return await self._driver.request(msg, RequestKind.COMMAND, timeout=wait_s)

    def handle(self, name: str, fn: CommandHandler, *, in_thread: bool = False) -> None:
        """Handle command ``name`` sent to this client's namespaces.

        ``fn(params, source)`` may be sync or async; its return value is the result.
        Raise a :class:`HubError` subclass to answer with that code; any other
        exception answers ``FAILED`` with its message. Commands with no handler get
        ``NOT_FOUND``. Sync handlers run on the event loop unless ``in_thread``.
        """
        self._handlers.register(name, fn, in_thread=in_thread)

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
