"""The MQTT bridge against a real Mosquitto (started per test on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from companion_hub.adapters.mqtt.config import MqttConfig, MqttTiming
from companion_hub.adapters.mqtt.topics import ImportRule
from companion_hub.client import connect_raw
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from companion_hub.simulator import CompanionSimulator
from tests.integration import test_companion
from tests.integration.test_companion import companion_config, value, wait_until
from tests.mosquitto import Mosquitto, free_port, need_mosquitto

sim = test_companion.sim  # the simulator fixture, with the same scenario

FAST = MqttTiming(backoff_base=0.1, backoff_max=0.5, connect_timeout=3.0)
T = 10.0  # generous deadlines: CI shares two cores


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto(need_mosquitto()) as m:
        yield m


def mqtt_config(broker: Mosquitto, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = {"host": broker.host, "port": broker.port, "timing": FAST}
    base.update(kw)
    return MqttConfig(**base)


def bridge_state(srv: HubServer, name: str = "mqtt") -> str | None:
    v = value(srv, f"hub.adapters.{name}")
    return None if v is None else v["state"]


class Watcher:
    """An MQTT client that records every message it receives (the latest per topic)."""

    def __init__(self, broker: Mosquitto, *, v5: bool = True, **kw: Any) -> None:
        self.client = aiomqtt.Client(
            broker.host,
            broker.port,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            **kw,
        )
        self.latest: dict[str, bytes] = {}
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        self._task = asyncio.get_running_loop().create_task(self._collect())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for m in self.client.messages:
            payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
            self.latest[m.topic.value] = payload
            self.messages.append(m)

    async def subscribe(self, *filters: str) -> None:
        for f in filters:
            await self.client.subscribe(f, qos=1)

    async def json(self, topic: str, pred: Callable[[Any], bool] = bool) -> Any:
        def ready() -> Any:
            raw = self.latest.get(topic)
            if not raw:
                return None
            doc = json.loads(raw)
            return doc if pred(doc) else None

        return await wait_until(ready, T, f"{topic} matching")

    async def payload(self, topic: str, pred: Callable[[bytes], bool]) -> bytes:
        def ready() -> bool:
            p = self.latest.get(topic)
            return p is not None and pred(p)

        await wait_until(ready, T, f"{topic} matching")
        return self.latest[topic]


async def start_hub(**kw: Any) -> HubServer:
    srv = HubServer(HubConfig(port=0), **kw)
    await srv.start()
    srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
    return srv


# --- state out ------------------------------------------------------------------------------


async def test_state_out_retained_stale_and_deleted(broker: Mosquitto) -> None:
    srv = await start_hub(mqtt=[mqtt_config(broker, plain=True)])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        app = await connect_raw(srv.url, "tally")  # type: ignore[attr-defined]
        await app.result({"op": "set", "key": "app.tally.live", "value": "CAM 2"})
        await app.result({"op": "set", "key": "app.tally.count", "value": 7})
        async with Watcher(broker) as w:  # subscribes after the fact: retained
            await w.subscribe("companion-hub/#")
            doc = await w.json("companion-hub/state/app/tally/live")
            assert doc["value"] == "CAM 2" and doc["stale"] is False
            assert doc["owner"] == "app.tally" and doc["version"] >= 1 and doc["rev"] >= 1
            assert set(doc) == {"value", "version", "rev", "stale", "ts", "owner"}
            await w.payload("companion-hub/value/app/tally/live", lambda p: p == b"CAM 2")
            await w.payload("companion-hub/value/app/tally/count", lambda p: p == b"7")
            assert w.latest["companion-hub/status"] == b"online"
            # the owner leaves: the keys turn stale, and MQTT says so
            await app.close()
            doc = await w.json("companion-hub/state/app/tally/live", lambda d: d["stale"])
            assert doc["value"] == "CAM 2" and doc["stale_since"] > 0
            # the owner comes back and deletes: the retained message is cleared
            app = await connect_raw(srv.url, "tally")  # type: ignore[attr-defined]
            await app.result({"op": "delete", "key": "app.tally.count"})
            await w.payload("companion-hub/state/app/tally/count", lambda p: p == b"")
            await w.payload("companion-hub/value/app/tally/count", lambda p: p == b"")
            await app.close()
        async with Watcher(broker) as w2:  # a new subscriber: no retained message left
            await w2.subscribe("companion-hub/state/app/tally/#")
            await w2.json("companion-hub/state/app/tally/live")
            await asyncio.sleep(0.3)
            assert "companion-hub/state/app/tally/count" not in w2.latest
    finally:
        await srv.stop()


async def test_publishing_coalesces_and_the_last_value_wins(broker: Mosquitto) -> None:
    srv = await start_hub(mqtt=[mqtt_config(broker, publish=["app.**"])])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        bridge = srv.adapters[0]
        srv.hub.register_namespace("app.load", "load")
        writer = srv.hub.writer("load", {"app.load"})
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/state/app/load/#")
            before = bridge.published  # type: ignore[union-attr]
            for i in range(5000):  # one synchronous burst: 500 changes per key
                writer.set(f"app.load.k{i % 10}", i)
            for k in range(10):
                await w.json(
                    f"companion-hub/state/app/load/k{k}", lambda d, k=k: d["value"] == 4990 + k
                )
            sent = bridge.published - before  # type: ignore[union-attr]
            assert sent <= 50, sent  # coalesced per key, not one message per change
            assert bridge.outbox.coalesced >= 4900  # type: ignore[union-attr]
    finally:
        await srv.stop()


async def test_companion_button_reaches_mqtt_and_mqtt5_command_presses_it(
    broker: Mosquitto, sim: CompanionSimulator
) -> None:
    srv = await start_hub(companions=[companion_config(sim)], mqtt=[mqtt_config(broker)])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/state/companion/buttons/#", "studio/replies/#")
            doc = await w.json("companion-hub/state/companion/buttons/1/0/1")
            assert doc["value"]["text"] == "Cue 1" and doc["owner"] == "companion"
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "studio/replies/panel"
            props.CorrelationData = b"req-42"
            await w.client.publish(
                "companion-hub/command/companion/press",
                json.dumps({"location": "1/0/1"}),
                qos=1,
                properties=props,
            )
            # the press reaches Companion (once), the button changes, MQTT sees it
            doc = await w.json(
                "companion-hub/state/companion/buttons/1/0/1",
                lambda d: d["value"]["text"] == "Cue 2",
            )
            reply = await w.json("studio/replies/panel")
            assert reply["ok"] is True and reply["result"]["location"] == "1/0/1"
            assert reply["target"] == "companion" and reply["name"] == "press"
            replies = [m for m in w.messages if m.topic.value == "studio/replies/panel"]
            assert len(replies) == 1
            assert replies[0].properties.CorrelationData == b"req-42"  # type: ignore[union-attr]
            downs = [p for p in sim.presses if p.location == "1/0/1" and p.action == "down"]
            assert len(downs) == 1
    finally:
        await srv.stop()


async def test_command_errors_permissions_and_the_311_reply_topic(
    broker: Mosquitto, sim: CompanionSimulator
) -> None:
    cfg = mqtt_config(broker, call=["companion:press", "app.*:*"])
    srv = await start_hub(companions=[companion_config(sim)], mqtt=[cfg])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        async with Watcher(broker, v5=False) as w:
            await w.subscribe("companion-hub/reply/#")
            # MQTT 3.1.1: the result goes to <prefix>/reply/<target>/<name>/<id>
            await w.client.publish(
                "companion-hub/command/companion/press/r1", b'{"location":"1/0/0"}', qos=1
            )
            r = await w.json("companion-hub/reply/companion/press/r1")
            assert r["ok"] is True and r["id"] == "r1"
            # not in the bridge's `call` setting
            await w.client.publish(
                "companion-hub/command/companion/set_variable/r2", b'{"name":"x","value":"1"}'
            )
            r = await w.json("companion-hub/reply/companion/set_variable/r2")
            assert r["ok"] is False and r["error"]["code"] == "FORBIDDEN"
            # params that are not JSON
            await w.client.publish("companion-hub/command/companion/press/r3", b"{nope")
            r = await w.json("companion-hub/reply/companion/press/r3")
            assert r["error"]["code"] == "BAD_REQUEST"
            # a command Companion refuses: its error comes back as the result
            await w.client.publish("companion-hub/command/companion/press/r4", b'{"location":"x"}')
            r = await w.json("companion-hub/reply/companion/press/r4")
            assert r["ok"] is False and r["error"]["code"] == "BAD_REQUEST"
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/reply/#", "elsewhere/#")
            # a target nobody serves: UNAVAILABLE, exactly one result
            await w.client.publish("companion-hub/command/app.nobody/ping/r5", b"{}", qos=1)
            r = await w.json("companion-hub/reply/app.nobody/ping/r5")
            assert r["error"]["code"] == "UNAVAILABLE"
            # a Response Topic inside the command tree would turn a result into a command:
            # refused, the result goes to the documented reply topic instead
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "companion-hub/command/companion/press"
            await w.client.publish(
                "companion-hub/command/app.nobody/ping/r6", b"{}", qos=1, properties=props
            )
            r = await w.json("companion-hub/reply/app.nobody/ping/r6")
            assert r["error"]["code"] == "UNAVAILABLE"
            await asyncio.sleep(0.3)
            assert len([p for p in sim.presses if p.action == "down"]) == 1  # only r1's
    finally:
        await srv.stop()


async def test_commands_to_a_client_timeout_and_idempotency(broker: Mosquitto) -> None:
    srv = await start_hub(mqtt=[mqtt_config(broker)])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        app = await connect_raw(srv.url, "tally")  # type: ignore[attr-defined]
        await app.result({"op": "set", "key": "app.tally.x", "value": 1})  # owns app.tally
        seen: list[dict[str, Any]] = []

        async def serve() -> None:
            while True:
                m = await app.receive(lambda m: m.get("op") == "command", timeout=60)
                seen.append(m)
                if m["name"] == "ping":
                    await app.send(
                        {"op": "reply", "id": m["id"], "ok": True, "result": m["params"]}
                    )

        task = asyncio.get_running_loop().create_task(serve())
        async with Watcher(broker) as w:
            await w.subscribe("r/#")

            async def call(name: str, corr: bytes, idem: str | None = None, **up: str) -> Any:
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = f"r/{corr.decode()}"
                props.CorrelationData = corr
                pairs = [*up.items(), *([("idempotency_key", idem)] if idem else [])]
                if pairs:
                    props.UserProperty = pairs
                await w.client.publish(
                    f"companion-hub/command/app.tally/{name}", b'{"n":1}', qos=1, properties=props
                )
                return await w.json(f"r/{corr.decode()}")

            r = await call("ping", b"a", idem="once")
            assert r == {"ok": True, "target": "app.tally", "name": "ping", "result": {"n": 1}}
            r = await call("ping", b"b", idem="once")  # the same key: the cached outcome
            assert r["ok"] is True
            assert len([m for m in seen if m["name"] == "ping"]) == 1
            r = await call("ignore", b"c", timeout_ms="300")  # the client never answers
            assert r["ok"] is False and r["error"]["code"] == "TIMEOUT"
        task.cancel()
        await app.close()
    finally:
        await srv.stop()


# --- state in -------------------------------------------------------------------------------


def tasmota_rule() -> ImportRule:
    return ImportRule(
        "tasmota/+/STATE", "mqtt.tasmota.<+>.state", "tasmota/+/LWT", "Online", "Offline"
    )


async def test_imports_versions_availability_and_broker_loss(broker: Mosquitto) -> None:
    cfg = mqtt_config(
        broker,
        imports=[tasmota_rule(), ImportRule("plc/#", "mqtt.plc.<#>", format="text")],
        max_imported_keys=5,
    )
    srv = await start_hub(mqtt=[cfg])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        async with Watcher(broker) as dev:
            await dev.client.publish("tasmota/relay1/LWT", b"Online", retain=True, qos=1)
            await dev.client.publish("tasmota/relay1/STATE", b'{"POWER":"ON"}', retain=True, qos=1)
            await wait_until(
                lambda: value(srv, "mqtt.tasmota.relay1.state") == {"POWER": "ON"}, T, "import"
            )
            e1 = srv.hub.store.get("mqtt.tasmota.relay1.state")
            assert e1 is not None and e1.owner == "mqtt" and not e1.stale
            await dev.client.publish("tasmota/relay1/STATE", b'{"POWER":"OFF"}', retain=True)
            await wait_until(
                lambda: value(srv, "mqtt.tasmota.relay1.state") == {"POWER": "OFF"}, T, "update"
            )
            e2 = srv.hub.store.get("mqtt.tasmota.relay1.state")
            assert e2 is not None and e2.version > e1.version
            # the device's Last Will: its keys turn stale; back online: fresh
            await dev.client.publish("tasmota/relay1/LWT", b"Offline", retain=True, qos=1)
            await wait_until(
                lambda: srv.hub.store.get("mqtt.tasmota.relay1.state").stale, T, "stale"
            )  # type: ignore[union-attr]
            await dev.client.publish("tasmota/relay1/LWT", b"Online", retain=True, qos=1)
            await wait_until(
                lambda: not srv.hub.store.get("mqtt.tasmota.relay1.state").stale,
                T,
                "fresh",  # type: ignore[union-attr]
            )
            # text format, '#' levels as key segments
            await dev.client.publish("plc/line1/speed", b"42", qos=1)
            await wait_until(lambda: value(srv, "mqtt.plc.line1.speed") == "42", T, "plc")
            # a level that cannot be a key segment: refused, nothing written
            await dev.client.publish("tasmota/bad level/STATE", b"1", qos=1)
            # the cap on imported keys
            for i in range(6):
                await dev.client.publish(f"plc/m{i}", b"1", qos=1)
            await wait_until(lambda: srv.adapters[0].refused >= 2, T, "refusals")  # type: ignore[union-attr]
            ns = srv.hub.store.namespace("mqtt")
            assert ns is not None and len(ns.entries) == 5
            # imported keys are never exported back to MQTT (no loops)
            await dev.subscribe("companion-hub/state/#")
            await dev.json("companion-hub/state/hub/adapters/mqtt")
            assert not [t for t in dev.latest if t.startswith("companion-hub/state/mqtt/")]
            # an empty retained message deletes the key
            await dev.client.publish("tasmota/relay1/STATE", b"", retain=True, qos=1)
            await wait_until(
                lambda: srv.hub.store.get("mqtt.tasmota.relay1.state") is None, T, "del"
            )
        # the broker goes away: every imported key turns stale, the status says so
        broker.stop()
        await wait_until(lambda: bridge_state(srv) == "disconnected", T, "bridge disconnected")
        e = srv.hub.store.get("mqtt.plc.line1.speed")
        assert e is not None and e.stale
        status = value(srv, "hub.adapters.mqtt")
        assert status["broker"] == f"mqtt://127.0.0.1:{broker.port}" and status["next_retry"]
    finally:
        await srv.stop()


# --- availability, restarts -------------------------------------------------------------------


@pytest.mark.parametrize("persistence", [False, True], ids=["memory", "persistent"])
async def test_broker_restart_loses_no_final_value(persistence: bool) -> None:
    """Mosquitto without persistence forgets every retained message when it restarts:
    the bridge republishes everything, including the changes made while it was away;
    with persistence, a key deleted meanwhile has its retained message cleared."""
    broker = Mosquitto(need_mosquitto(), persistence=persistence)
    broker.start()
    srv = await start_hub(mqtt=[mqtt_config(broker, publish=["app.**"])])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        srv.hub.register_namespace("app.show", "show")
        writer = srv.hub.writer("show", {"app.show"})
        for i in range(200):
            writer.set(f"app.show.k{i}", i)
        writer.set("app.show.gone", "soon")
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/state/app/show/#")
            await w.json("companion-hub/state/app/show/k199")
        broker.stop()
        await wait_until(lambda: bridge_state(srv) == "disconnected", T, "bridge disconnected")
        bridge = srv.adapters[0]
        before = bridge.published  # type: ignore[union-attr]
        for i in range(100):  # changed while the broker is away
            writer.set(f"app.show.k{i}", i + 1000)
        writer.set("app.show.new", "while away")
        writer.delete("app.show.gone")
        broker.start()
        await wait_until(lambda: bridge_state(srv) == "connected", 20, "bridge reconnected")
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/state/app/show/#", "companion-hub/status")
            await w.json("companion-hub/state/app/show/new", lambda d: d["value"] == "while away")
            for i in range(200):
                want = i + 1000 if i < 100 else i
                await w.json(
                    f"companion-hub/state/app/show/k{i}", lambda d, v=want: d["value"] == v
                )
            # deleted while away: cleared (a live clear may still reach this subscriber)
            await wait_until(
                lambda: w.latest.get("companion-hub/state/app/show/gone", b"") == b"", T, "gone"
            )
            await w.payload("companion-hub/status", lambda p: p == b"online")
        await wait_until(lambda: not bridge.outbox, T, "everything published")  # type: ignore[union-attr]
        if persistence:  # the broker kept k100..k199 as they are: not sent again
            await asyncio.sleep(0.5)  # the last acknowledgements
            sent = bridge.published - before  # type: ignore[union-attr]
            assert 102 <= sent <= 110, sent
        else:  # the broker lost everything: all of it again
            await wait_until(lambda: bridge.published - before >= 201, T, "all again")  # type: ignore[union-attr]
        async with Watcher(broker) as w:  # what the broker retains now
            await w.subscribe("companion-hub/state/app/show/#")
            await w.json("companion-hub/state/app/show/k199")
            await asyncio.sleep(0.3)
            assert "companion-hub/state/app/show/gone" not in w.latest
            assert len(w.latest) == 201
    finally:
        await srv.stop()
        broker.close()


async def test_retained_state_of_keys_the_hub_does_not_have_is_cleared(
    broker: Mosquitto,
) -> None:
    """Retained messages left by an earlier run (a key deleted while the hub was down,
    a hub with a fresh data directory) would claim a value nobody has: cleared when
    the bridge connects."""
    async with Watcher(broker) as w:
        ghost = b'{"value":1,"version":1,"rev":1,"stale":false,"ts":1,"owner":"app.ghost"}'
        await w.client.publish("companion-hub/state/app/ghost/x", ghost, qos=1, retain=True)
        await w.client.publish("companion-hub/value/app/ghost/x", b"1", qos=1, retain=True)
        await w.client.publish("unrelated/topic", b"keep", qos=1, retain=True)
    srv = await start_hub(mqtt=[mqtt_config(broker)])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        bridge = srv.adapters[0]
        await wait_until(lambda: not bridge.outbox and not bridge._direct, T, "published")  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/#", "unrelated/#")
            await w.json("companion-hub/state/hub/info")
            await w.payload("unrelated/topic", lambda p: p == b"keep")
            await asyncio.sleep(0.3)
            assert not [t for t in w.latest if "ghost" in t]
    finally:
        await srv.stop()


async def test_clean_stop_publishes_offline(broker: Mosquitto) -> None:
    srv = await start_hub(mqtt=[mqtt_config(broker)])
    await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
    async with Watcher(broker) as w:
        await w.subscribe("companion-hub/status")
        await w.payload("companion-hub/status", lambda p: p == b"online")
        await srv.stop()
        await w.payload("companion-hub/status", lambda p: p == b"offline")


def _hub_process(broker: Mosquitto, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, COMPANION_HUB_LOG_FORMAT="json")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "companion_hub",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            "memory",
            "--mqtt",
            f"127.0.0.1:{broker.port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_killed_hub_reads_offline_through_the_last_will(broker: Mosquitto) -> None:
    proc = _hub_process(broker, free_port())
    try:
        async with Watcher(broker) as w:
            await w.subscribe("companion-hub/status")
            await w.payload("companion-hub/status", lambda p: p == b"online")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            await w.payload("companion-hub/status", lambda p: p == b"offline")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_password_broker_and_the_secret_never_logged(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    with Mosquitto(need_mosquitto(), users={"hub": "s3cret-pw"}) as m:
        bad = await start_hub(mqtt=[mqtt_config(m, username="hub", password="wrong-pw")])
        try:
            await wait_until(lambda: bridge_state(bad) == "disconnected", T, "refused")
            detail = value(bad, "hub.adapters.mqtt")["detail"].lower()
            assert "not authorized" in detail or "bad user name or password" in detail, detail
        finally:
            await bad.stop()
        good = await start_hub(mqtt=[mqtt_config(m, username="hub", password="s3cret-pw")])
        try:
            await wait_until(lambda: bridge_state(good) == "connected", T, "connected")
        finally:
            await good.stop()
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "s3cret-pw" not in text and "wrong-pw" not in text


async def test_home_assistant_discovery(broker: Mosquitto, sim: CompanionSimulator) -> None:
    cfg = mqtt_config(broker, discovery=True, publish=[])
    srv = await start_hub(companions=[companion_config(sim)], mqtt=[cfg])
    try:
        await wait_until(lambda: bridge_state(srv) == "connected", T, "bridge connected")
        async with Watcher(broker) as w:
            await w.subscribe("homeassistant/#", "companion-hub/state/#")

            def topic_like(start: str) -> str | None:
                return next((t for t in w.latest if t.startswith(start)), None)

            b_topic = await wait_until(
                lambda: topic_like("homeassistant/button/companion-hub_companion_"), T, "button"
            )
            # <discovery prefix>/button/<node id>/<object id>/config, ids with a short hash
            node, object_id = b_topic.split("/")[2:4]
            assert object_id.startswith("companion_buttons_") and b_topic.endswith("/config")
            b_topic = await wait_until(
                lambda: topic_like(f"homeassistant/button/{node}/companion_buttons_1_0_1_"),
                T,
                "button 1/0/1",
            )
            button = await w.json(b_topic)
            assert button["command_topic"] == "companion-hub/command/companion/press"
            assert json.loads(button["payload_press"]) == {"location": "1/0/1"}
            assert button["name"].startswith("1/0/1 Cue")
            assert button["availability_mode"] == "all"
            topics = [a["topic"] for a in button["availability"]]
            assert topics == ["companion-hub/status", "companion-hub/state/hub/adapters/companion"]
            s_topic = await wait_until(
                lambda: topic_like(f"homeassistant/sensor/{node}/companion_variables_custom_cue_"),
                T,
                "sensor",
            )
            sensor = await w.json(s_topic)
            assert sensor["state_topic"] == "companion-hub/state/companion/variables/custom/cue"
            state = await w.json(sensor["state_topic"])
            assert state["value"] == "1"
            adapter = await w.json("companion-hub/state/hub/adapters/companion")
            assert adapter["value"]["state"] == "connected"
            # what Home Assistant does on a press: publish payload_press, MQTT 3.1.1 style
            await w.client.publish(button["command_topic"], button["payload_press"].encode())
            await w.json(
                "companion-hub/state/companion/buttons/1/0/1",
                lambda d: d["value"]["text"] == "Cue 2",
            )
            # publish=[]: nothing but what discovery needs is exported
            assert not [t for t in w.latest if t.startswith("companion-hub/state/app/")]
    finally:
        await srv.stop()


async def test_tls_to_the_broker_and_mqtt_311(tmp_path: Any) -> None:
    """A broker that speaks only TLS, verified against a private CA; the bridge on MQTT
    3.1.1 (no properties: results go to the documented reply topic)."""
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(cert, append=i > 0)
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_pem)
    with Mosquitto(need_mosquitto(), tls=(str(cert), str(key))) as m:
        # a bridge that does not trust the broker's CA never connects
        untrusting = await start_hub(mqtt=[mqtt_config(m, tls=True)])
        try:
            await wait_until(lambda: bridge_state(untrusting) == "disconnected", T, "refused")
            assert "certificate" in value(untrusting, "hub.adapters.mqtt")["detail"].lower()
        finally:
            await untrusting.stop()
        cfg = mqtt_config(m, tls=True, tls_ca=str(ca_pem), version="3.1.1")
        srv = await start_hub(mqtt=[cfg])
        try:
            await wait_until(lambda: bridge_state(srv) == "connected", T, "connected over TLS")
            app = await connect_raw(srv.url, "tally")  # type: ignore[attr-defined]
            await app.result({"op": "set", "key": "app.tally.live", "value": True})
            ctx = ssl.create_default_context(cafile=str(ca_pem))
            async with Watcher(m, v5=False, tls_context=ctx) as w:
                await w.subscribe("companion-hub/state/app/#", "companion-hub/reply/#")
                doc = await w.json("companion-hub/state/app/tally/live")
                assert doc["value"] is True
                await w.client.publish("companion-hub/command/app.none/x/q1", b"{}", qos=1)
                r = await w.json("companion-hub/reply/app.none/x/q1")
                assert r["error"]["code"] == "UNAVAILABLE" and r["id"] == "q1"
            await app.close()
        finally:
            await srv.stop()
