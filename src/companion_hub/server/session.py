"""One client connection: the protocol v1 session over a WebSocket.

A session has two tasks. The *reader* (the aiohttp handler itself) decodes frames
and handles each message synchronously against the hub; the *writer* drains the
session's :class:`~companion_hub.core.delivery.DeliveryQueue` into batched frames
whenever the socket can take more. A client that stops reading therefore only
lets its own queue coalesce; it never slows the hub or other clients.

Delivery window: the writer keeps at most ``delivery_window_bytes`` sent but not
yet confirmed by the client. It sends a WebSocket ping carrying the byte offset
every quarter window; the client's pong (which it can only send after reading
everything before the ping) confirms that offset. Without this, a client slower
than the hub would have megabytes of superseded deltas waiting in kernel socket
buffers (loopback autotunes them to tens of MB), and would converge seconds
after the writes stop; with it, the backlog stays in the coalescing queue, where
it is at most one delta per key. Replies are exempt from the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from ..core.commands import InFlight, Outcome, ReplyStatus
from ..core.delivery import DeliveryQueue
from ..core.errors import ErrorCode, HubError
from ..core.keys import Pattern, is_valid_client_name, match, parse_pattern
from ..core.limits import HELLO_TIMEOUT_S
from ..core.ratelimit import TokenBucket
from ..core.store import Entry
from ..core.window import DeliveryWindow
from ..protocol import encode as wire
from ..protocol import messages as m
from ..supervisor import cancel_and_wait
from .hub import Hub, now_ms

log = logging.getLogger("companion_hub.session")

CLOSE_REPLACED = 4000
# A client that sends requests but does not read the replies is paused (we stop
# reading its frames) once this many bytes of replies wait for it.
CONTROL_BACKLOG_BYTES = 4 * 1024 * 1024
# ... or while this many snapshots/barriers wait (each may hold a list of entries)
BARRIER_BACKLOG = 256


@dataclass(slots=True)
class _Sub:
    patterns: list[Pattern]
    events: bool


_BINARY = object()  # the first frame was binary


class _Closed(Exception):
    """The session must end now (the close frame has been sent)."""


class Session:
    def __init__(self, hub: Hub, ws: web.WebSocketResponse, address: str) -> None:
        self.hub = hub
        self.ws = ws
        self.address = address
        self.session_id = secrets.token_hex(8)
        self.client = ""
        self.owned: frozenset[str] = frozenset()
        self.epoch = hub.new_epoch()  # marks the keys this connection writes (for sync)
        self.writer = hub.writer("", (), self.epoch)  # replaced after hello
        self.subs: dict[str, _Sub] = {}
        self.replaced = False
        self.resume_hub: str | None = None
        self.last_send_ms = now_ms()
        self._wake = asyncio.Event()
        self.finished = asyncio.Event()  # set when the session has cleaned up
        self._room = asyncio.Event()
        self._room.set()
        self.queue = DeliveryQueue(hub.limits.event_queue, notify=self._wake.set)
        self._writer_task: asyncio.Task[None] | None = None
        # delivery window accounting (bytes)
        window = hub.config.delivery_window_bytes
        self.window = DeliveryWindow(window, max(1, window // 4))
        self._ping_out: deque[bytes] = deque()  # pings the window asked for
        self._last_tick_ms = now_ms()  # the window's heartbeat tick
        self._bad_frames = 0

        rps = hub.limits.requests_per_second
        self._bucket = TokenBucket(rps, rps, time.monotonic())

    def __repr__(self) -> str:
        return f"<Session {self.client or '?'} {self.session_id}>"

    # --- life cycle -----------------------------------------------------------------

    async def run(self) -> None:
        self._writer_task = asyncio.create_task(self._writer(), name=f"writer-{self.session_id}")
        try:
            if await self._handshake():
                await self._read_loop()
        except _Closed:
            pass
        finally:
            try:
                await self._cleanup()
            finally:
                self.finished.set()

    async def _first_frame(self) -> Any:
        """The first data frame (answering pings meanwhile), or None if the connection
        ended first. Raises TimeoutError after HELLO_TIMEOUT_S."""
        async with asyncio.timeout(HELLO_TIMEOUT_S):
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.TEXT:
                    return msg
                if msg.type is WSMsgType.BINARY:
                    return _BINARY
                if msg.type is WSMsgType.PING:
                    with contextlib.suppress(ConnectionError):
                        await self.ws.pong(msg.data)
                elif msg.type is not WSMsgType.PONG:
                    return None

    async def _handshake(self) -> bool:
        try:
            msg = await self._first_frame()
        except TimeoutError:
            await self._fail_session(HubError(ErrorCode.BAD_REQUEST, "no hello within 10 s"), None)
            return False
        if msg is None:
            return False
        if msg is _BINARY:
            await self._fail_session(
                HubError(ErrorCode.BAD_REQUEST, "binary frames are not supported; send text"),
                None,
            )
            return False
        try:
            msgs = m.decode_frame(msg.data)
        except m.FrameError as exc:
            self._bad_frame(exc)
            await self._fail_session(HubError(ErrorCode.BAD_REQUEST, str(exc)), None)
            return False
        first = msgs[0] if msgs else None
        if not isinstance(first, m.Hello):
            rid = first.id if first is not None else None
            await self._fail_session(
                HubError(ErrorCode.BAD_REQUEST, "the first message must be 'hello'"), rid
            )
            return False
        if not is_valid_client_name(first.client):
            await self._fail_session(
                HubError(
                    ErrorCode.BAD_REQUEST,
                    f"invalid client name {first.client!r}: [a-z0-9][a-z0-9_-]{{0,62}}",
                ),
                first.id,
            )
            return False
        if first.protocol != 1:
            await self._fail_session(
                HubError(
                    ErrorCode.BAD_REQUEST,
                    f"unsupported protocol {first.protocol}; this hub speaks 1",
                ),
                first.id,
            )
            return False
        self._accept(first)
        await self._handle_all(msgs[1:])
        return True

    def _accept(self, hello: m.Hello) -> None:
        hub = self.hub
        self.client = hello.client
        self.resume_hub = hello.resume.hub if hello.resume is not None else None
        old = hub.sessions.get(self.client)
        if old is not None:
            old.replace()
            if hub.recorder is not None:
                hub.recorder.session(
                    "takeover", self.client, address=self.address, session=old.session_id
                )
        namespaces = hub.namespaces_for(self.client)
        owned = []
        for ns in namespaces:
            try:
                hub.register_namespace(ns, self.client)
            except HubError as exc:
                log.warning(
                    "namespace not granted",
                    extra={"client": self.client, "namespace": ns, "reason": exc.message},
                )
                continue
            owned.append(ns)
            hub.router.set_owner(ns, self)
        self.owned = frozenset(owned)
        self.writer = hub.writer(self.client, self.owned, self.epoch)
        hub.sessions[self.client] = self
        hub.client_connected(self)
        if hub.recorder is not None:
            hub.recorder.session(
                "connect", self.client, address=self.address, session=self.session_id
            )
        log.info(
            "client connected",
            extra={
                "client": self.client,
                "session": self.session_id,
                "address": self.address,
                "takeover": old is not None,
            },
        )
        self._send(
            wire.encode(
                {
                    "op": "welcome",
                    "id": hello.id,
                    "session": self.session_id,
                    "hub": hub.hub_id,
                    "rev": hub.store.rev,
                    "namespaces": owned,
                    "heartbeat_ms": hub.config.heartbeat_ms,
                    "server": hub.server_name,
                    "limits": hub.welcome_limits(),
                }
            )
        )

    def replace(self) -> None:
        """A newer connection of the same client takes over: hand ownership over now,
        without marking anything stale, and close this connection with 4000."""
        self.replaced = True
        self.owned = frozenset()  # the new connection owns the namespaces from now on
        self.writer.owned = self.owned
        hub = self.hub
        if hub.sessions.get(self.client) is self:
            del hub.sessions[self.client]
        hub.router.owner_gone(self, "the owner's connection was replaced")
        self._unsubscribe_all()
        task = asyncio.get_running_loop().create_task(
            self.ws.close(code=CLOSE_REPLACED, message=b"replaced")
        )
        hub.track(task)

    async def _cleanup(self) -> None:
        hub = self.hub
        self._unsubscribe_all()
        hub.router.caller_gone(self)
        if not self.replaced and self.client and hub.sessions.get(self.client) is self:
            del hub.sessions[self.client]
            hub.router.owner_gone(self, "the owner disconnected")
            for ns in self.owned:
                hub.mark_stale(ns)
            hub.client_disconnected(self)
            if hub.recorder is not None:
                hub.recorder.session(
                    "disconnect",
                    self.client,
                    address=self.address,
                    session=self.session_id,
                    reason=f"close code {self.ws.close_code}",
                )
            log.info(
                "client disconnected",
                extra={
                    "client": self.client,
                    "session": self.session_id,
                    "close_code": self.ws.close_code,
                },
            )
        await cancel_and_wait(self._writer_task)
        if not self.ws.closed:
            await self.ws.close()

    async def close(self, code: int, message: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)

    def _unsubscribe_all(self) -> None:
        for sub in self.subs.values():
            self.hub.unsubscribe(self.queue, sub.patterns, sub.events)
        self.subs.clear()

    async def _fail_session(self, err: HubError, rid: m.RequestId) -> None:
        """Bad hello: the error, then close code 1008."""
        with contextlib.suppress(Exception):
            await self.ws.send_frame(wire.error(err, rid), WSMsgType.TEXT)
        await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=err.message[:120].encode())

    # --- reading --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        ws = self.ws
        while True:
            msg = await ws.receive()
            t = msg.type
            if t is WSMsgType.TEXT:
                try:
                    items = m.decode_frame(msg.data)
                except m.FrameError as exc:
                    self._bad_frame(exc)
                    self._send(wire.error(HubError(ErrorCode.BAD_REQUEST, str(exc))))
                    continue
                await self._handle_all(items)
            elif t is WSMsgType.PONG:
                self._on_pong(msg.data)
                continue
            elif t is WSMsgType.PING:
                with contextlib.suppress(ConnectionError):
                    await ws.pong(msg.data)
                continue
            elif t is WSMsgType.BINARY:
                self._send(
                    wire.error(
                        HubError(
                            ErrorCode.BAD_REQUEST, "binary frames are not supported; send text"
                        )
                    )
                )
            elif t is WSMsgType.ERROR:
                log.info(
                    "connection error",
                    extra={"client": self.client, "error": str(msg.data)},
                )
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    def _bad_frame(self, exc: Exception) -> None:
        """An unusable frame (not JSON, invalid UTF-8, nested too deep) is answered with
        BAD_REQUEST and the connection kept; logged once per connection, without a
        traceback, so that a client cannot flood the log."""
        self._bad_frames += 1
        if self._bad_frames == 1:
            log.warning(
                "unusable frame answered with BAD_REQUEST (logged once per connection)",
                extra={"client": self.client, "address": self.address, "error": str(exc)[:200]},
            )

    async def _handle_all(self, items: list[m.Message | m.BadMessage]) -> None:
        """Handle a frame's messages in order. A client that sends requests faster than
        it reads the replies is paused (we stop reading its frames) while more than
        CONTROL_BACKLOG_BYTES of replies wait for it."""
        hub = self.hub
        for item in items:
            if hub.log_over_limit:  # the disk is behind: hold this writer briefly
                await hub.wait_log_room()
            self._handle(item)
            q = self.queue
            if q.control_bytes > CONTROL_BACKLOG_BYTES or q.ordered_backlog > BARRIER_BACKLOG:
                self._room.clear()
                await self._room.wait()

    # --- writing --------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.queue.push_control(data)

    def _reply(self, data: bytes, durable_rev: int) -> None:
        """Send a write's reply; with ``durable_rev`` (a ``durable: true`` write) only
        once the event log has that revision on disk."""
        if not durable_rev:
            self._send(data)
            return

        def send() -> None:
            if not self.finished.is_set():
                self._send(data)

        self.hub.after_durable(durable_rev, send)

    def _on_pong(self, payload: bytes) -> None:
        """Any pong goes to the delivery window (see core/window.py): ours confirm what
        was sent before their ping; one we cannot match (RFC 6455 lets a peer answer
        only the latest ping, and the heartbeat's pings are empty) asks for a probe."""
        opened, ping = self.window.on_pong(payload)
        if ping is not None:
            self._ping_out.append(ping)
        if opened or ping is not None:
            self._wake.set()

    async def _writer(self) -> None:
        q = self.queue
        ws = self.ws
        window = self.window
        pings = self._ping_out
        target = self.hub.config.frame_target_bytes
        wake = self._wake
        try:
            while True:
                while pings:
                    await ws.ping(pings.popleft())
                msgs = q.take(target, wire.dropped, stream=window.can_send())
                if (
                    not self._room.is_set()
                    and q.control_bytes < CONTROL_BACKLOG_BYTES // 2
                    and q.ordered_backlog < BARRIER_BACKLOG // 2
                ):
                    self._room.set()  # the reader may take requests again
                if not msgs:
                    wake.clear()
                    if not pings:
                        await wake.wait()
                    continue
                frame = wire.batch(msgs)
                await ws.send_frame(frame, WSMsgType.TEXT)
                self.last_send_ms = now_ms()
                ping = window.on_sent(len(frame))
                if ping is not None:
                    await ws.ping(ping)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, RuntimeError) as exc:
            log.info("write failed", extra={"client": self.client, "error": repr(exc)})
            self._room.set()
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY)
        except Exception as exc:
            # a bug, not the network: say so once with the traceback, end this session
            # (the client reconnects and resumes) rather than leave it without a writer
            log.error(
                "connection writer failed; closing the connection",
                exc_info=exc,
                extra={"client": self.client, "session": self.session_id},
            )
            self._room.set()
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")

    def maybe_progress(self, rev: int, now: int, heartbeat_ms: int) -> None:
        """Tell an idle subscriber that the hub moved on (see protocol section 4); and
        re-probe a delivery window that has stayed full for a heartbeat (its window
        pings may have gone unanswered: a later ping's pong does not name them)."""
        if now - self._last_tick_ms >= heartbeat_ms:  # once per heartbeat interval
            self._last_tick_ms = now
            probe = self.window.on_heartbeat()
            if probe is not None:
                self._ping_out.append(probe)
                self._wake.set()
        q = self.queue
        if (
            self.subs
            and q.last_rev < rev
            and q.is_empty()
            and now - self.last_send_ms >= heartbeat_ms
        ):
            q.push_control(wire.progress(rev), barrier_rev=rev)

    # --- command delivery (this session as an owner) --------------------------------

    def deliver_command(self, cmd: InFlight) -> None:
        self._send(
            wire.encode(
                {
                    "op": "command",
                    "id": cmd.hid,
                    "source": cmd.source,
                    "name": cmd.name,
                    "params": cmd.params,
                    "deadline": cmd.deadline_ms,
                }
            )
        )

    # --- dispatch -------------------------------------------------------------------

    def _handle(self, msg: m.Message | m.BadMessage) -> None:
        if isinstance(msg, m.BadMessage):
            self._send(self._error_reply(msg.id, msg.error))
            return
        if not isinstance(msg, m.Reply) and not self._bucket.take(time.monotonic()):
            err = HubError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.hub.limits.requests_per_second} requests per second",
            )
            self._send(self._error_reply(msg.id, err))
            return
        try:
            handler = _HANDLERS[type(msg)]
            handler(self, msg)
        except HubError as err:
            self._send(self._error_reply(msg.id, err))
        except Exception:
            log.exception("internal error", extra={"client": self.client, "op": type(msg).__name__})
            self._send(self._error_reply(msg.id, HubError(ErrorCode.INTERNAL, "internal error")))

    @staticmethod
    def _error_reply(rid: m.RequestId, err: HubError) -> bytes:
        if rid is None:
            return wire.error(err)
        return wire.result_error(rid, err)

    # hello after hello
    def _on_hello(self, msg: m.Hello) -> None:
        raise HubError(ErrorCode.BAD_REQUEST, "already said hello on this connection")

    def _patterns(self, texts: list[str]) -> list[Pattern]:
        lim = self.hub.limits
        if not texts:
            raise HubError(ErrorCode.BAD_REQUEST, "'patterns' must be a non-empty list")
        if len(texts) > lim.patterns_per_subscription:
            raise HubError(
                ErrorCode.LIMIT_EXCEEDED,
                f"more than {lim.patterns_per_subscription} patterns",
            )
        return [parse_pattern(t, lim.key_bytes) for t in texts]

    def _on_subscribe(self, msg: m.Subscribe) -> None:
        hub = self.hub
        lim = hub.limits
        if not msg.sub:
            raise HubError(ErrorCode.BAD_REQUEST, "'sub' must be a non-empty string")
        if msg.sub in self.subs:
            raise HubError(ErrorCode.BAD_REQUEST, f"subscription {msg.sub!r} already exists")
        if len(self.subs) >= lim.subscriptions:
            raise HubError(ErrorCode.LIMIT_EXCEEDED, f"more than {lim.subscriptions} subscriptions")
        patterns = self._patterns(msg.patterns)
        store = hub.store
        # --- one synchronous step: snapshot and registration, no await in between ---
        rev = store.rev
        mode = "full"
        removed: list[tuple[str, int, int]] = []  # (key, version, rev) of a delete
        entries: list[Entry] = []
        if msg.snapshot:
            changed = None
            if msg.since is not None and self.resume_hub == hub.hub_id and 0 <= msg.since <= rev:
                changed = store.last_changes_since(msg.since)
            if changed is not None:
                mode = "incremental"
                for key, last_rev in changed.items():
                    if any(match(p, key) for p in patterns):
                        e = store.get(key)
                        if e is None:
                            removed.append((key, store.deleted_version(key), last_rev))
                        else:
                            entries.append(e)
            else:
                entries = store.matching(patterns)
        hub.subscribe(self.queue, patterns, msg.events)
        self.subs[msg.sub] = _Sub(patterns, msg.events)
        if msg.snapshot:
            self.queue.push_lazy(
                wire.snapshot_chunks(
                    msg.id, msg.sub, rev, mode, entries, removed, hub.config.snapshot_chunk_bytes
                ),
                rev,
            )
        else:
            self.queue.push_control(wire.result_ok(msg.id, {"rev": rev}), barrier_rev=rev)

    def _on_unsubscribe(self, msg: m.Unsubscribe) -> None:
        sub = self.subs.pop(msg.sub, None)
        if sub is None:
            raise HubError(ErrorCode.NOT_FOUND, f"no subscription {msg.sub!r}")
        self.hub.unsubscribe(self.queue, sub.patterns, sub.events)
        self._send(wire.result_ok(msg.id, {}))

    def _on_get(self, msg: m.Get) -> None:
        store = self.hub.store
        patterns = self._patterns(msg.patterns)
        entries = store.matching(patterns)
        entries.sort(key=_by_key)
        body = b'{"rev":%d,"entries":%b}' % (store.rev, wire.entries_array(entries))
        self._send(wire.result_raw(msg.id, body))

    def _on_set(self, msg: m.Set) -> None:
        writer = self.writer
        if msg.entries is not None:
            if msg.key is not None:
                raise HubError(ErrorCode.BAD_REQUEST, "give either 'key' or 'entries', not both")
            for i, be in enumerate(msg.entries):
                if be.value is msgspec.UNSET:
                    raise HubError(
                        ErrorCode.BAD_REQUEST,
                        f"entry {i}: missing 'value'",
                        {"index": i, "key": be.key},
                    )
            results = writer.set_many([(be.key, be.value, be.expect_version) for be in msg.entries])
            self._reply(
                wire.result_ok(
                    msg.id,
                    {
                        "results": [
                            {"key": r.key, "version": r.version, "rev": r.rev} for r in results
                        ]
                    },
                ),
                max((r.rev for r in results), default=0) if msg.durable else 0,
            )
            return
        if msg.key is None:
            raise HubError(ErrorCode.BAD_REQUEST, "missing 'key' (or 'entries')")
        if msg.value is msgspec.UNSET:
            raise HubError(ErrorCode.BAD_REQUEST, "missing 'value'")
        r = writer.set(msg.key, msg.value, msg.expect_version)
        self._reply(
            b'{"op":"result","id":%b,"ok":true,"result":{"version":%d,"rev":%d}}'
            % (wire.encode(msg.id), r.version, r.rev),
            r.rev if msg.durable else 0,
        )

    def _on_delete(self, msg: m.Delete) -> None:
        r = self.writer.delete(msg.key, msg.expect_version)
        self._reply(
            wire.result_ok(msg.id, {"version": r.version, "rev": r.rev}),
            r.rev if msg.durable else 0,
        )

    def _on_sync(self, msg: m.Sync) -> None:
        deleted = self.writer.sync()
        self._send(wire.result_ok(msg.id, {"deleted": len(deleted), "rev": self.hub.store.rev}))

    def _on_publish(self, msg: m.Publish) -> None:
        key = self.writer.check_key(msg.key)
        ns = self.hub.store.namespace_of(key)
        if ns is None or ns.name not in self.owned:
            raise HubError(ErrorCode.NOT_OWNER, f"you do not own the namespace of {key!r}")
        self.writer.encode(msg.data)  # within value_bytes
        n = self.hub.publish_event(key, msg.data, self.client)
        self._send(wire.result_ok(msg.id, {"delivered": n}))

    def _on_command(self, msg: m.Command) -> None:
        if msg.id is None:
            raise HubError(ErrorCode.BAD_REQUEST, "a command needs an 'id'")
        if not msg.target or not msg.name:
            raise HubError(ErrorCode.BAD_REQUEST, "a command needs 'target' and 'name'")
        if msg.timeout_ms is not None and msg.timeout_ms <= 0:
            raise HubError(ErrorCode.BAD_REQUEST, "'timeout_ms' must be positive")
        rid = msg.id

        def on_result(outcome: Outcome) -> None:
            if outcome.ok:
                self._send(wire.result_ok(rid, outcome.result))
            else:
                assert outcome.error is not None
                self._send(wire.result_error(rid, outcome.error))

        self.hub.dispatch_command(
            caller=self,
            source=self.client,
            target=msg.target,
            name=msg.name,
            params=msg.params,
            timeout_ms=msg.timeout_ms,
            idempotency_key=msg.idempotency_key,
            on_result=on_result,
        )

    def _on_reply(self, msg: m.Reply) -> None:
        if not isinstance(msg.id, str):
            raise HubError(ErrorCode.BAD_REQUEST, "a reply needs the command's 'id'")
        if msg.ok:
            outcome = Outcome(True, msg.result)
        else:
            body = msg.error or m.ErrorBody()
            try:
                code = ErrorCode(body.code)
            except ValueError:
                code = ErrorCode.FAILED
            details = body.details if isinstance(body.details, dict) else None
            outcome = Outcome(False, None, HubError(code, body.message or str(code), details))
        router = self.hub.router
        status = router.reply(self, msg.id, outcome)
        if status is ReplyStatus.TOO_LARGE:
            # the caller got TOO_LARGE; the owner learns why its reply went nowhere
            self._send(
                wire.error(
                    HubError(
                        ErrorCode.TOO_LARGE,
                        f"the reply to {msg.id!r} is larger than {router.max_result_bytes} "
                        "bytes; its caller got TOO_LARGE",
                        {"id": msg.id, "limit": router.max_result_bytes},
                    )
                )
            )
        elif not status:
            self._send(
                wire.error(
                    HubError(
                        ErrorCode.NOT_FOUND,
                        f"no command {msg.id!r} in flight to you (it may have timed out)",
                    )
                )
            )


def _by_key(e: Entry) -> str:
    return e.key


_HANDLERS: dict[type, Any] = {
    m.Hello: Session._on_hello,
    m.Subscribe: Session._on_subscribe,
    m.Unsubscribe: Session._on_unsubscribe,
    m.Get: Session._on_get,
    m.Set: Session._on_set,
    m.Delete: Session._on_delete,
    m.Sync: Session._on_sync,
    m.Publish: Session._on_publish,
    m.Command: Session._on_command,
    m.Reply: Session._on_reply,
}
