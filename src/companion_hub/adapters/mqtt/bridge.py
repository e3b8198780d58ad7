"""The MQTT bridge: the hub's state and commands on a broker, and devices' state in.

One bridge is one broker connection (``[[mqtt]]``) and plays three parts, each under
the hub's ordinary rules:

- **a subscriber** of the hub: a store listener marks every exported key dirty in an
  :class:`~.outbox.Outbox`; a publisher task sends each dirty key's *current* state as
  a retained message (coalesced per key: memory never grows with the update rate).
  After every (re)connection it first reads what the broker retains in its trees
  (:meth:`MqttBridge._sweep`), then republishes what differs and clears what no key
  stands for: correct whatever the broker kept (a broker restarted without persistence
  has lost every retained message), and cheap when it kept everything.
- **a caller** of commands: ``<prefix>/command/<target>/<name>`` runs a hub command
  as the caller ``bridge:<name>``, within the ``call`` permissions of its
  configuration and the router's per-caller limit; exactly one result goes to the MQTT
  5 Response Topic (with the Correlation Data) or to ``<prefix>/reply/...``.
- **an owner** of a namespace (``mqtt`` by default): import rules map topic filters
  to keys there, written through the one write path (:meth:`Hub.writer`); a device's
  ``offline`` availability marks its keys stale, and so does the loss of the broker.

**No loops, by construction.** The bridge never exports a key of its own namespace
(what it imported never goes back out), import filters may not overlap the bridge's
own topic tree (checked when the configuration is loaded, and every message on the
tree is ignored by the import path), its own publications never come back to it
(MQTT 5 No Local), and a Response Topic inside its own tree is refused (a result can
never become a command or a key's state).

The bridge's status is ``hub.adapters.<name>``: ``connecting``, ``connected``,
``disconnected`` or ``error`` with a detail, the broker's URL and the next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import ssl
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt import client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ...core.acl import Identity, Role
from ...core.commands import Outcome
from ...core.errors import ErrorCode, HubError
from ...core.keys import compile_patterns, parse_pattern
from ...core.store import Change
from ...logs import Throttle
from ...supervisor import Backoff, Supervisor, cancel_and_wait
from ..linkstate import LinkState, LinkStatus
from .config import MqttConfig
from .discovery import Discovery
from .inbox import Inbox, Refused, inbox_type
from .outbox import Outbox
from .payloads import (
    command_params,
    error_payload,
    imported_value,
    plain_payload,
    result_payload,
    state_payload,
)
from .topics import (
    COMMAND,
    STATE,
    STATUS,
    VALUE,
    CommandTopic,
    key_topic,
    parse_command_topic,
    reply_topic,
)

if TYPE_CHECKING:
    from ...hub import Hub

log = logging.getLogger("companion_hub.adapters.mqtt")
_throttled = Throttle(log, interval=5.0)

Message = tuple[str, bytes]


class BrokerDown(Exception):
    """The broker connection ended (the reason is the message)."""


class MqttBridge:
    """In-process bridge between the hub and one MQTT broker."""

    def __init__(self, hub: Hub, config: MqttConfig) -> None:
        self.hub = hub
        self.config = config
        cfg = config
        self.actor = cfg.actor
        self.prefix = cfg.prefix
        self.status_topic = f"{cfg.prefix}/{STATUS}"
        self._command_head = f"{cfg.prefix}/{COMMAND}/"
        self._own_tree = f"{cfg.prefix}/"
        self.namespace = cfg.namespace
        self._ns_prefix = cfg.namespace + "."
        self.writer = hub.writer(self.actor, {cfg.namespace}) if cfg.imports else None
        self._export = compile_patterns([parse_pattern(p) for p in cfg.publish])
        self.discovery = (
            Discovery(
                prefix=cfg.prefix,
                discovery_prefix=cfg.discovery_prefix,
                namespace=cfg.discovery_companion,
                adapter=cfg.discovery_companion,
            )
            if cfg.discovery
            else None
        )
        self._announced: dict[str, str] = {}  # HA: key -> the name announced
        self.identity = Identity(
            f"bridge-{cfg.name}", Role(f"mqtt:{cfg.name}", own=(), call=tuple(cfg.call)), None, True
        )
        self.outbox = Outbox()
        # messages sent as they are: command results (not retained, with correlation
        # data) and clears of retained messages that no key stands for
        self._direct: deque[tuple[str, bytes, bool, bytes | None]] = deque()
        self.discovery_names: dict[str, str] = {}  # filled by _messages_for(announce=False)
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._inbox: type[Inbox] = inbox_type(self._is_command, 1000)
        self._status = LinkStatus(LinkState.CONNECTING, "starting")
        self._published_status: tuple[str, str, str] | None = None
        self.supervisor = Supervisor(f"mqtt:{cfg.name}")
        self.counters = hub.adapter_counters(cfg.name)
        self._listening = False
        self._stopping = False
        # imports: every key imported, and per (rule, device) the keys of that device
        self._imported: set[str] = set()
        self._device_keys: dict[tuple[int, tuple[str, ...]], set[str]] = {}
        self._offline: set[tuple[int, tuple[str, ...]]] = set()
        # plain counters (metrics, tests, the bench)
        self.published = 0
        self.commands = 0
        self.imported = 0
        self.refused = 0
        self.replies_lost = 0
        self._seq = itertools.count(1)

    # --- what is exported ----------------------------------------------------------------

    def exportable(self, key: str) -> bool:
        """Published to MQTT? Never a key of the bridge's own namespace (no loops)."""
        if key.startswith(self._ns_prefix) or key == self.namespace:
            return False
        if self._export.fullmatch(key) is not None:
            return True
        return self.discovery is not None and self.discovery.wants(key)

    def _on_change(self, change: Change) -> None:
        """Store listener (synchronous, on every committed change): mark, never raise."""
        if self.exportable(change.key):
            self.outbox.mark(change.key)
            self._wake.set()

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if self.writer is not None:
            self.hub.register_namespace(cfg.namespace, self.actor)
        self.hub.store.add_listener(self._on_change)
        self._listening = True
        self._publish_status()
        self.supervisor.spawn(
            f"mqtt-broker:{cfg.name}",
            self._run,
            on_crash=self._crashed,
            backoff=Backoff(cfg.timing.backoff_base, cfg.timing.backoff_max),
            stable_after=cfg.timing.stable_after,
        )

    async def stop(self) -> None:
        """Say ``offline`` on the status topic, disconnect, mark the imports stale."""
        self._stopping = True
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(
                    client.publish(self.status_topic, b"offline", qos=1, retain=True), 2.0
                )
        await self.supervisor.stop()
        if self._listening:
            self.hub.store.remove_listener(self._on_change)
            self._listening = False
        self.hub.router.caller_gone(self)
        if self.writer is not None:
            self.writer.mark_stale()
        self._status = LinkStatus(LinkState.DISCONNECTED, "bridge stopped")
        self._publish_status()

    def _crashed(self, exc: BaseException) -> None:
        self._broker_lost()
        self._status = LinkStatus(
            LinkState.ERROR, f"internal error: {type(exc).__name__}: {exc}"[:300]
        )
        self._publish_status()

    def _publish_status(self) -> None:
        st = self._status
        extra: dict[str, Any] = {
            "broker": self.config.url,
            "prefix": self.prefix,
            "next_retry": None if st.retry_at is None else int(st.retry_at * 1000),
        }
        snapshot = (st.state.value, st.detail, repr(extra))
        if snapshot == self._published_status:
            return  # unchanged: no new version (and no message to MQTT about it)
        self._published_status = snapshot
        self.hub.set_adapter_state(self.config.name, st.state.value, st.detail, **extra)

    # --- the connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect, serve, and after a loss reconnect with back-off, forever."""
        timing = self.config.timing
        backoff = Backoff(timing.backoff_base, timing.backoff_max)
        while True:
            started = time.monotonic()
            try:
                await self._session()
                detail = "the broker closed the connection"
            except (aiomqtt.MqttError, BrokerDown, OSError) as exc:
                detail = str(exc) or type(exc).__name__
            if time.monotonic() - started >= timing.stable_after:
                backoff.reset()
            delay = backoff.next_delay()
            was_connected = self._status.state is LinkState.CONNECTED
            self._broker_lost()
            if was_connected:
                self.counters.link_drops += 1
            self._status = LinkStatus(LinkState.DISCONNECTED, detail[:300], time.time() + delay)
            self._publish_status()
            (log.warning if was_connected else log.info)(
                "MQTT broker connection down",
                extra={"bridge": self.config.name, "broker": self.config.url, "reason": detail},
            )
            await asyncio.sleep(delay)
            self._status = LinkStatus(LinkState.CONNECTING, f"connecting to {self.config.url}")
            self._publish_status()

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.config
        v5 = cfg.version == "5"
        tls: ssl.SSLContext | None = None
        if cfg.tls:
            tls = ssl.create_default_context(cafile=cfg.tls_ca or None)
        identifier = cfg.client_id or f"companion-hub-{cfg.name}-{uuid.uuid4().hex[:8]}"
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=identifier,
            username=cfg.username,
            password=cfg.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            # a clean session: nothing (no command) is queued for the bridge while it is
            # away. MQTT 3.1.1 says so with clean_session; MQTT 5 with clean_start
            clean_session=None if v5 else True,
            clean_start=True if v5 else paho_client.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=cfg.keepalive,
            timeout=cfg.timing.connect_timeout,
            tls_context=tls,
            queue_type=self._inbox,
            max_inflight_messages=cfg.max_in_flight,
        )
        # the window keeps up to max_in_flight publishes pending by design: no warning
        client.pending_calls_threshold = cfg.max_in_flight + 1000
        return client

    async def _session(self) -> None:
        """One broker connection, until it ends (raises the reason)."""
        cfg = self.config
        client = self._make_client()
        async with client:
            self._client = client
            try:
                await client.publish(self.status_topic, b"online", qos=1, retain=True)
                await self._subscribe(client)  # commands are served during the sweep
                retained = await self._sweep(client)
                self._plan_republish(retained)
                self._wake.set()
                if self._status.state is not LinkState.CONNECTED and self.counters.link_drops:
                    self.counters.reconnects += 1
                self._status = LinkStatus(LinkState.CONNECTED, f"connected to {cfg.url}")
                self._publish_status()
                log.info(
                    "MQTT broker connected",
                    extra={"bridge": cfg.name, "broker": cfg.url, "prefix": self.prefix},
                )
                await _first_failure(self._publisher(client), self._reader(client))
            finally:
                self._client = None
                # results not sent by now would arrive late after a reconnect: dropped
                self.replies_lost += sum(1 for d in self._direct if not d[2])
                self._direct.clear()

    async def _sweep(self, client: aiomqtt.Client) -> dict[str, bytes] | None:
        """What the broker retains in the bridge's trees (state, values, its Home
        Assistant configs), read before anything is published: subscribe, then send a
        marker to the bridge itself; the broker delivers a subscription's retained
        messages before a later message, so everything retained has arrived when the
        marker does. None when the broker goes silent for ``sweep_timeout`` seconds
        before the marker is back."""
        cfg = self.config
        marker = f"{self.prefix}/sweep/{uuid.uuid4().hex}"
        trees = [f"{self.prefix}/{STATE}/#", f"{self.prefix}/{VALUE}/#", marker]
        if self.discovery is not None:
            trees.append(f"{cfg.discovery_prefix}/+/{self.discovery.node}/+/config")
        sweep_heads = (*(f.removesuffix("#") for f in trees[:2]), marker)
        if self.discovery is not None:
            sweep_heads += (f"{cfg.discovery_prefix}/",)
        retained: dict[str, bytes] | None = {}
        sent: asyncio.Task[None] | None = None
        try:
            # one SUBSCRIBE (without No Local: the marker must come back): its SUBACK
            # comes before the retained messages, which may take seconds to arrive
            await client.subscribe([(f, 1) for f in trees])
            # QoS 1 like the retained messages, so that the broker queues it behind them
            # (a QoS 0 message overtakes queued QoS 1 ones); its acknowledgement comes
            # after them too, so it is not awaited here
            sent = asyncio.get_running_loop().create_task(
                client.publish(marker, b"sweep", qos=1, timeout=math.inf)
            )
            quiet = cfg.timing.sweep_timeout
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(quiet) as deadline:
                async for m in client.messages:
                    deadline.reschedule(loop.time() + quiet)  # a time limit on silence
                    topic = m.topic.value
                    if topic == marker:
                        break
                    if not topic.startswith(sweep_heads):
                        self._handle(m)  # a command or an import meanwhile
                        continue
                    payload = m.payload
                    if m.retain and isinstance(payload, bytes | bytearray) and payload:
                        retained[topic] = bytes(payload)  # type: ignore[index]
        except TimeoutError:
            log.warning(
                "MQTT: the broker's retained messages could not be read in time; "
                "republishing everything",
                extra={"bridge": cfg.name, "timeout_s": cfg.timing.sweep_timeout},
            )
            retained = None
        finally:
            if sent is not None:
                if sent.done():
                    if not sent.cancelled():
                        sent.exception()  # retrieved: a failure shows in the session
                else:
                    await cancel_and_wait(sent)  # never swallows our own cancellation
        await client.unsubscribe(trees)
        return retained

    def _plan_republish(self, retained: dict[str, bytes] | None) -> None:
        """After a (re)connection: dirty every exported key whose messages differ from
        what the broker retains, and clear what it retains for keys that are gone (or
        no longer exported). Without a sweep (None): everything is republished."""
        keys = self._exported_keys()
        if retained is None:
            self.outbox.mark_all(keys)
            # Home Assistant configs: sent again, and cleared for keys deleted while
            # away ("" never equals an entity's name)
            self.outbox.mark_all(self._announced)
            self._announced = dict.fromkeys(self._announced, "")
            return
        expected: set[str] = set()
        dirty: list[str] = []
        announced: dict[str, str] = {}
        for key in keys:
            same = True
            for topic, payload in self._messages_for(key, announce=False):
                expected.add(topic)
                if same and retained.get(topic) != payload:
                    same = False
            if not same:
                dirty.append(key)
            elif self.discovery is not None and key in self.discovery_names:
                announced[key] = self.discovery_names[key]
        self._announced = announced
        self.outbox.mark_all(dirty)
        orphans = [t for t in retained if t not in expected]
        for topic in orphans:
            self._direct.append((topic, b"", True, None))
        self.discovery_names.clear()
        log.info(
            "MQTT: retained state checked",
            extra={
                "bridge": self.config.name,
                "retained": len(retained),
                "republish": len(dirty),
                "cleared": len(orphans),
                "unchanged": len(keys) - len(dirty),
            },
        )

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        cfg = self.config
        v5 = cfg.version == "5"
        filters: list[str] = []
        if cfg.commands:
            filters.append(f"{self._command_head}#")
        for rule in cfg.imports:
            filters.append(rule.topic)
            if rule.availability:
                filters.append(rule.availability)
        for f in dict.fromkeys(filters):
            if v5:
                await client.subscribe(f, options=SubscribeOptions(qos=1, noLocal=True))
            else:
                await client.subscribe(f, qos=1)

    def _exported_keys(self) -> list[str]:
        keys: list[str] = []
        for ns in self.hub.store.namespaces():
            if ns.name == self.namespace:
                continue
            keys.extend(k for k in ns.entries if self.exportable(k))
        return keys

    def _broker_lost(self) -> None:
        """The broker is gone: what the bridge imported turns stale."""
        if self.writer is not None:
            n = self.writer.mark_stale()
            if n:
                log.warning(
                    "MQTT imports marked stale", extra={"bridge": self.config.name, "stale_keys": n}
                )

    # --- publishing ---------------------------------------------------------------------------

    async def _publisher(self, client: aiomqtt.Client) -> None:
        """Publish dirty keys (and command results) with a sliding window of at most
        ``max_in_flight`` unacknowledged messages: one task per key, started in the order
        the keys are read from the store, so that the client library writes them in
        that order and the newest state of a key is always the last on the wire.

        Not batches: waiting for a whole batch to be acknowledged stalls on the
        broker's delayed acknowledgements (see docs/adr/0007-mqtt-client-library.md)."""
        loop = asyncio.get_running_loop()
        window = asyncio.Semaphore(max(1, self.config.max_in_flight))
        tasks: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def done(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            window.release()
            if not t.cancelled() and t.exception() is not None and not failed:
                failed.append(t.exception())  # type: ignore[arg-type]
                self._wake.set()

        try:
            while True:
                if failed:
                    raise failed[0]
                if not self.outbox and not self._direct:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await window.acquire()
                if failed:
                    window.release()
                    raise failed[0]
                if self._direct:
                    topic, payload, retain, correlation = self._direct.popleft()
                    coro = self._publish_direct(client, topic, payload, retain, correlation)
                elif self.outbox:
                    key = self.outbox.take(1)[0]
                    coro = self._publish_key(client, key, self._messages_for(key))
                else:
                    window.release()
                    continue
                task = loop.create_task(coro)
                tasks.add(task)
                task.add_done_callback(done)
        finally:
            for t in list(tasks):
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish_key(self, client: aiomqtt.Client, key: str, messages: list[Message]) -> None:
        qos = self.config.qos
        try:
            if len(messages) == 1:
                topic, payload = messages[0]
                await client.publish(topic, payload, qos=qos, retain=True)
            else:  # handed to the client together, in order (state, value, discovery)
                await asyncio.gather(
                    *[client.publish(t, p, qos=qos, retain=True) for t, p in messages]
                )
        except BaseException:
            # not known to be on the broker: dirty again (a delete among them must
            # still clear its retained message after the reconnect)
            self.outbox.mark_all((key,))
            raise
        self.published += len(messages)

    async def _publish_direct(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        retain: bool,
        correlation: bytes | None,
    ) -> None:
        props = self._reply_properties(correlation)
        await client.publish(topic, payload, qos=1, retain=retain, properties=props)
        self.published += 1

    def _reply_properties(self, correlation: bytes | None) -> Properties | None:
        if correlation is None or self.config.version != "5":
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = correlation
        return props

    def _messages_for(self, key: str, *, announce: bool = True) -> list[Message]:
        """The messages that bring the broker up to date with ``key`` (now). With
        ``announce`` false: every message the key stands for, the Home Assistant config
        included, without recording it as announced (for the comparison with what the
        broker retains)."""
        entry = self.hub.store.get(key)
        out: list[Message] = []
        if entry is None:
            out.append((key_topic(self.prefix, STATE, key), b""))
            if self.config.plain:
                out.append((key_topic(self.prefix, VALUE, key), b""))
        else:
            out.append((key_topic(self.prefix, STATE, key), state_payload(entry)))
            if self.config.plain:
                out.append((key_topic(self.prefix, VALUE, key), plain_payload(entry)))
        disc = self.discovery
        if disc is not None and disc.wants(key):
            old = self._announced.get(key) if announce else None
            msgs = disc.messages(key, entry, old)
            if msgs and entry is not None:
                kind = "button" if ".buttons." in key else "sensor"
                name = disc.name(kind, key, entry)
                if announce:
                    self._announced[key] = name
                else:
                    self.discovery_names[key] = name
            elif msgs and announce:
                self._announced.pop(key, None)
            out.extend(msgs)
        return out

    # --- incoming messages ----------------------------------------------------------------------

    def _is_command(self, topic: str) -> bool:
        return topic.startswith(self._command_head)

    async def _reader(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self.hub.log_over_limit:  # back-pressure: the event log is behind
                await self.hub.wait_log_room()
            self._handle(message)

    def _handle(self, message: Any) -> None:
        """One incoming message: a command request or an imported state."""
        try:
            if isinstance(message, Refused):
                self._refuse_busy(message.message)
            elif self._is_command(message.topic.value):
                self._command(message)
            else:
                self._import(message)
        except Exception:  # one bad message never ends the session
            log.exception(
                "an MQTT message could not be handled",
                extra={"bridge": self.config.name, "topic": message.topic.value[:200]},
            )

    # commands

    def _reply_to(self, message: Any, cmd: CommandTopic | None) -> tuple[str, bytes | None] | None:
        """Where a request's result goes: its Response Topic (MQTT 5) with its
        Correlation Data, else ``<prefix>/reply/...``; None when nowhere."""
        props = message.properties
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if response:
            if "+" in response or "#" in response or response.startswith(self._own_tree):
                _throttled.warning(
                    "bad-response-topic",
                    "an MQTT command's Response Topic was refused (a wildcard, or inside the "
                    "bridge's own tree, where a result could become a command or a state)",
                    bridge=self.config.name,
                    response_topic=response[:200],
                )
                return None if cmd is None else (reply_topic(self.prefix, cmd), correlation)
            return response, correlation
        if cmd is None:
            return None
        return reply_topic(self.prefix, cmd), correlation

    def _reply(self, dest: tuple[str, bytes | None] | None, payload: bytes) -> None:
        if dest is None:
            return
        if self._client is None:
            self.replies_lost += 1
            return
        if len(self._direct) >= 10_000:
            self.replies_lost += 1
            return
        self._direct.append((dest[0], payload, False, dest[1]))
        self._wake.set()

    def _refuse_busy(self, message: Any) -> None:
        cmd = parse_command_topic(self.prefix, message.topic.value)
        dest = self._reply_to(message, cmd)
        err = HubError(
            ErrorCode.LIMIT_EXCEEDED, "too many MQTT command requests waiting; try again"
        )
        self.refused += 1
        self._reply(dest, error_payload(err, *_names(cmd)))

    def _command(self, message: Any) -> None:
        topic = message.topic.value
        cmd = parse_command_topic(self.prefix, topic)
        dest = self._reply_to(message, cmd)
        if cmd is None:
            self.refused += 1
            _throttled.warning(
                "bad-command-topic",
                "an MQTT command topic is not <prefix>/command/<target>/<name>[/<id>]",
                bridge=self.config.name,
                topic=topic[:200],
            )
            self._reply(
                dest,
                error_payload(
                    HubError(
                        ErrorCode.BAD_REQUEST,
                        "command topics are <prefix>/command/<target>/<name>[/<id>]",
                    ),
                    "",
                    "",
                ),
            )
            return
        self.commands += 1
        try:
            if not self.identity.may_call(cmd.target, cmd.name):
                raise HubError(
                    ErrorCode.FORBIDDEN,
                    f"the MQTT bridge may not call {cmd.name!r} on {cmd.target!r} "
                    "(its `call` setting)",
                    {"target": cmd.target, "name": cmd.name},
                )
            params = command_params(bytes(message.payload or b""), self.hub.limits.value_bytes)
            idem, timeout_ms = _user_properties(message.properties)

            def on_result(outcome: Outcome) -> None:
                self._reply(dest, result_payload(outcome, cmd.target, cmd.name, cmd.request_id))

            self.hub.dispatch_command(
                caller=self,
                source=self.actor,
                target=cmd.target,
                name=cmd.name,
                params=params,
                timeout_ms=timeout_ms,
                idempotency_key=idem,
                on_result=on_result,
            )
        except HubError as err:
            self._reply(dest, error_payload(err, cmd.target, cmd.name, cmd.request_id))

    # imports

    def _import(self, message: Any) -> None:
        writer = self.writer
        topic: str = message.topic.value
        if writer is None or topic.startswith(self._own_tree):
            return  # the bridge's own tree is never imported (no loops)
        payload = bytes(message.payload or b"")
        for idx, rule in enumerate(self.config.imports):
            caps = rule.match(topic)
            if caps is not None:
                self._import_value(idx, rule, caps, topic, payload)
                return
            device = rule.availability_match(topic)
            if device is not None:
                self._availability(idx, device, rule.availability_state(payload), topic)
                return

    def _import_value(
        self, idx: int, rule: Any, caps: list[str], topic: str, payload: bytes
    ) -> None:
        writer = self.writer
        assert writer is not None
        key = rule.key_for(caps)
        if key is None:
            self._refuse_import(topic, "a topic level is not a key segment ([A-Za-z0-9_-])")
            return
        device = (idx, rule.device(caps))
        if not payload:  # a cleared retained message: the key goes
            writer.discard(key)
            self._imported.discard(key)
            keys = self._device_keys.get(device)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._device_keys[device]
            return
        if key not in self._imported and len(self._imported) >= self.config.max_imported_keys:
            self._refuse_import(
                topic, f"more than max_imported_keys={self.config.max_imported_keys} keys"
            )
            return
        try:
            value = imported_value(payload, rule.format)
            writer.set(key, value)
        except HubError as exc:
            self._refuse_import(topic, exc.message)
            with contextlib.suppress(HubError):
                writer.touch(key)
            return
        self.imported += 1
        self._imported.add(key)
        if rule.availability:
            self._device_keys.setdefault(device, set()).add(key)
            if device in self._offline:  # a retained state replayed for an offline device
                writer.mark_stale(key)

    def _availability(
        self, idx: int, device: tuple[str, ...], online: bool | None, topic: str
    ) -> None:
        writer = self.writer
        assert writer is not None
        if online is None:
            self._refuse_import(topic, "availability payload is neither online nor offline")
            return
        dev = (idx, device)
        if online:
            self._offline.discard(dev)
        elif len(self._offline) < self.config.max_imported_keys:
            self._offline.add(dev)
        for key in self._device_keys.get(dev, ()):
            writer.mark_stale(key, stale=not online)

    def _refuse_import(self, topic: str, reason: str) -> None:
        self.refused += 1
        _throttled.warning(
            "import-refused",
            "an MQTT message was not imported",
            bridge=self.config.name,
            topic=topic[:200],
            reason=reason,
            refused_total=self.refused,
        )


def _names(cmd: CommandTopic | None) -> tuple[str, str, str | None]:
    return ("", "", None) if cmd is None else (cmd.target, cmd.name, cmd.request_id)


def _user_properties(props: Any) -> tuple[str | None, int | None]:
    """``idempotency_key`` and ``timeout_ms`` from an MQTT 5 request's user properties."""
    idem: str | None = None
    timeout_ms: int | None = None
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    for name, value in pairs or ():
        if name == "idempotency_key" and isinstance(value, str) and value:
            idem = value[:256]
        elif name == "timeout_ms":
            try:
                timeout_ms = int(value)
            except (TypeError, ValueError):
                raise HubError(ErrorCode.BAD_REQUEST, "timeout_ms must be an integer") from None
    return idem, timeout_ms


async def _first_failure(*coros: Any) -> None:
    """Run the coroutines until the first one ends; cancel the others; re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        exc = t.exception()
        if exc is not None:
            raise exc
    raise BrokerDown("the broker connection ended")
