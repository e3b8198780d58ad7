"""A blocking wrapper around :class:`HubClient`, for scripts.

The async client runs on an event loop in a background thread; every method
submits a coroutine to it and waits for the outcome. ::

    from companion_hub.client import SyncHubClient

    with SyncHubClient("ws://127.0.0.1:8420/ws", "script") as hub:
        hub.set("app.script.greeting", "hello")
        print(hub.get("hub.info").value)
        for change in hub.watch("companion.buttons.**"):   # blocks; Ctrl-C to stop
            print(change.key, change.value)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from .errors import Unavailable
from .handlers import CommandHandler
from .hub_client import HubClient
from .messages import Change, Entry, Event, HubLimits, WriteResult
from .streams import EventStream, Subscription, Watch

__all__ = ["SyncHubClient", "SyncSubscription"]

T = TypeVar("T")
F = TypeVar("F", bound=CommandHandler)


class SyncSubscription:
    """A :class:`Subscription` seen from the caller's thread."""

    def __init__(self, owner: SyncHubClient, sub: Subscription) -> None:
        self._owner = owner
        self._sub = sub
        self.id = sub.id
        self.patterns = sub.patterns

    def entries(self) -> dict[str, Entry]:
        """The mirror's entries for this subscription (a copy, read on the loop)."""

        async def read() -> dict[str, Entry]:
            return self._sub.entries()

        return self._owner._call(read())

    def unsubscribe(self) -> None:
        self._owner._call(self._sub.unsubscribe())


class SyncHubClient:
    """Blocking twin of :class:`HubClient` (same constructor arguments).

    Command handlers registered here are plain functions run in a worker thread,
    so they may block.
    """

    def __init__(self, url: str, client: str, **kwargs: Any) -> None:
        self.url = url
        self.client_name = client
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: HubClient | None = None
        self._closed = False

    # --- life cycle -----------------------------------------------------------------

    def connect(self) -> SyncHubClient:
        """Start the loop thread and connect (raises like :meth:`HubClient.connect`)."""
        if self._client is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=f"hub-client-{self.client_name}", daemon=True
        )
        self._thread.start()

        async def start() -> HubClient:
            c = HubClient(self.url, self.client_name, **self._kwargs)
            await c.connect()
            return c

        try:
            self._client = self._call(start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def finish() -> None:
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(finish(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = None
        self._thread = None

    def close(self) -> None:
        """Close the client and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(client.close(), self._loop).result(10)
        self._stop_loop()

    def __enter__(self) -> SyncHubClient:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        loop = self._loop
        if loop is None or self._closed:
            coro.close()
            raise Unavailable("the client is not connected (use connect() or with)")
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def _c(self) -> HubClient:
        if self._client is None:
            raise Unavailable("the client is not connected (use connect() or with)")
        return self._client

    # --- state ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def hub_id(self) -> str | None:
        return self._client.hub_id if self._client is not None else None

    @property
    def namespaces(self) -> list[str]:
        return list(self._client.namespaces) if self._client is not None else []

    @property
    def limits(self) -> HubLimits:
        return self._client.limits if self._client is not None else HubLimits()

    # --- the API --------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self._call(self._c().get(key))

    def get_many(self, *patterns: str) -> dict[str, Entry]:
        return self._call(self._c().get_many(*patterns))

    def set(
        self, key: str, value: Any, expect_version: int | None = None, *, durable: bool = False
    ) -> WriteResult:
        return self._call(self._c().set(key, value, expect_version, durable=durable))

    def set_many(
        self,
        values: Mapping[str, Any],
        expect_versions: Mapping[str, int] | None = None,
        *,
        durable: bool = False,
    ) -> list[WriteResult]:
        return self._call(self._c().set_many(values, expect_versions, durable=durable))

    def delete(
        self, key: str, expect_version: int | None = None, *, durable: bool = False
    ) -> WriteResult:
        return self._call(self._c().delete(key, expect_version, durable=durable))

    def sync(self) -> int:
        return self._call(self._c().sync())

    def publish(self, key: str, data: Any = None) -> int:
        return self._call(self._c().publish(key, data))

    def command(
        self,
        target: str,
        name: str,
        /,
        *,
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Any:
        return self.call(
            target, name, params, timeout_ms=timeout_ms, idempotency_key=idempotency_key
        )

    def call(
        self,
        target: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        return self._call(
            self._c().call(
                target, name, params, timeout_ms=timeout_ms, idempotency_key=idempotency_key
            )
        )

    def subscribe(self, *patterns: str, events: bool = False) -> SyncSubscription:
        return SyncSubscription(self, self._call(self._c().subscribe(*patterns, events=events)))

    def handle(self, name: str, fn: CommandHandler) -> None:
        """Handle command ``name``; ``fn(params, source)`` runs in a worker thread."""
        self._c().handle(name, fn, in_thread=True)

    def on_command(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self.handle(name, fn)
            return fn

        return deco

    def watch(self, *patterns: str, timeout: float | None = None) -> Iterator[Change]:
        """Blocking iterator of changes (current entries first).

        ``timeout``: raise :class:`TimeoutError` when no change comes for that long.
        Closing the iterator (``break`` out of the loop) unsubscribes.
        """
        client = self._c()

        async def start() -> Watch:
            w = client.watch(*patterns)
            await w.start()
            return w

        w = self._call(start())
        try:
            while True:
                try:
                    yield self._call(w.__anext__(), timeout)
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._call(w.aclose(), 10)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Blocking iterator of events (of subscriptions made with ``events=True``)."""
        client = self._c()

        async def start() -> EventStream:
            return client.events()

        stream = self._call(start())
        try:
            while True:
                try:
                    yield self._call(stream.__anext__(), timeout)
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._call(stream.aclose(), 10)
