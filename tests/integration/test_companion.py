"""The Companion adapter against the simulator, over real sockets (Satellite + HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from companion_hub.adapters.companion.adapter import CompanionConfig
from companion_hub.adapters.companion.link import LinkTiming
from companion_hub.client import connect_raw
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from companion_hub.simulator import CompanionSimulator, load_scenario

SCENARIO = """
[[pages]]
number = 1
buttons = [
  { row = 0, column = 0, text = "CAM 1", bgcolor = "#ff0000", behaviour = "latch" },
  { row = 0, column = 1, text = "Cue $(custom:cue)", behaviour = "counter:cue" },
]

[[pages]]
number = 2
buttons = [{ row = 1, column = 3, text = "PAGE 2", bgcolor = "#0000ff" }]

[custom_variables]
cue = "1"
note = "hello"

[module_variables]
"obs:scene" = "Wide"

[[connections]]
id = "c1"
label = "obs"
moduleId = "obs-studio"
enabled = true
status = { category = "good", level = "ok", message = "" }
"""

FAST = LinkTiming(
    ping_interval=0.2,
    dead_after=1.0,
    begin_timeout=1.0,
    reply_timeout=1.0,
    backoff_base=0.1,
    backoff_max=0.4,
    connect_timeout=1.0,
)


async def wait_until(pred: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


def value(srv: HubServer, key: str) -> Any:
    e = srv.hub.store.get(key)
    return None if e is None else msgspec.json.decode(e.raw)


def stale(srv: HubServer, key: str) -> bool | None:
    e = srv.hub.store.get(key)
    return None if e is None else e.stale


def adapter_state(srv: HubServer) -> str | None:
    v = value(srv, "hub.adapters.companion")
    return None if v is None else v["state"]


@pytest.fixture
async def sim(tmp_path: Any) -> AsyncIterator[CompanionSimulator]:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    s = CompanionSimulator(load_scenario(path), clock=False, connection_status_changes=False)
    await s.start()
    yield s
    await s.stop()


def companion_config(sim: CompanionSimulator, **kw: Any) -> CompanionConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "satellite_port": sim.satellite_port,
        "http_port": sim.http_port,
        "pages": [1, 2],
        "rows": 2,
        "columns": 4,
        "variables": ["custom:cue", "custom:note", "obs:scene", "custom:missing"],
        "poll_interval": 0.2,
        "timing": FAST,
    }
    base.update(kw)
    return CompanionConfig(**base)


@pytest.fixture
async def hub(sim: CompanionSimulator) -> AsyncIterator[HubServer]:
    srv = HubServer(HubConfig(port=0), companions=[companion_config(sim)])
    await srv.start()
    srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
    await wait_until(lambda: adapter_state(srv) == "connected", 8, "adapter connected")
    yield srv
    await srv.stop()


async def test_initial_sync(hub: HubServer, sim: CompanionSimulator) -> None:
    info = value(hub, "companion.info")
    assert info["api_version"] == "1.14.0" and info["mode"] == "subscriptions"
    assert info["companion_version"].startswith("5.")
    cam = value(hub, "companion.buttons.1.0.0")
    assert cam["text"] == "CAM 1" and cam["bgcolor"] == "#ff0000" and cam["pressed"] is False
    assert value(hub, "companion.buttons.1.0.1")["text"] == "Cue 1"
    assert value(hub, "companion.buttons.2.1.3")["text"] == "PAGE 2"
    assert hub.hub.store.get("companion.buttons.1.1.1") is None  # empty location: no key
    assert value(hub, "companion.variables.custom.cue") == "1"
    assert value(hub, "companion.variables.obs.scene") == "Wide"
    assert hub.hub.store.get("companion.variables.custom.missing") is None  # 404
    conn = value(hub, "companion.connections.obs")
    assert conn["module"] == "obs-studio" and conn["status"]["category"] == "good"
    assert not stale(hub, "companion.buttons.1.0.0")


async def test_press_end_to_end(hub: HubServer, sim: CompanionSimulator) -> None:
    watcher = await connect_raw(hub.url, "watcher")  # type: ignore[attr-defined]
    await watcher.subscribe("companion.buttons.1.**", "companion.variables.**")
    caller = await connect_raw(hub.url, "panel")  # type: ignore[attr-defined]
    r = await caller.request(
        {"op": "command", "target": "companion", "name": "press", "params": {"location": "1/0/1"}}
    )
    assert r["ok"], r
    # the counter button increments $(custom:cue): its text and the variable change
    d = await watcher.receive(
        lambda m: m.get("key") == "companion.buttons.1.0.1" and m["value"]["text"] == "Cue 2"
    )
    assert d["stale"] is False
    await watcher.receive(
        lambda m: m.get("key") == "companion.variables.custom.cue" and m["value"] == "2"
    )
    presses = [p for p in sim.presses if p.location == "1/0/1" and p.action == "down"]
    assert len(presses) == 1
    # a latch shows pressed after a press
    await caller.result(
        {"op": "command", "target": "companion", "name": "press", "params": {"location": "1/0/0"}}
    )
    await watcher.receive(
        lambda m: m.get("key") == "companion.buttons.1.0.0" and m["value"]["pressed"] is True
    )
    await watcher.close()
    await caller.close()


async def test_commands_and_their_errors(hub: HubServer, sim: CompanionSimulator) -> None:
    c = await connect_raw(hub.url, "panel")  # type: ignore[attr-defined]

    async def call(command: str, **params: Any) -> dict:
        return await c.request(
            {"op": "command", "target": "companion", "name": command, "params": params}
        )

    assert (await call("press", location="nowhere"))["error"]["code"] == "BAD_REQUEST"
    assert (await call("explode"))["error"]["code"] == "NOT_FOUND"
    empty = await call("press", location="1/1/1")
    assert empty["error"]["code"] == "FAILED" and "no button" in empty["error"]["message"]
    missing = await call("set_variable", name="nope", value=1)
    assert missing["error"]["code"] == "FAILED"
    assert "does not exist in Companion" in missing["error"]["message"]
    ok = await call("set_variable", name="note", value="changed")
    assert ok["ok"]
    await wait_until(lambda: value(hub, "companion.variables.custom.note") == "changed")
    style = await call("set_style", location="1/0/0", text="X")
    assert style["ok"] and "does not apply" in style["result"]["note"]
    assert (await call("set_style", location="1/0/0"))["error"]["code"] == "BAD_REQUEST"
    rot = await call("rotate", location="1/0/0", amount=-2)
    assert rot["ok"], rot
    assert [p.amount for p in sim.presses if p.action == "rotate"][-1:] in ([-2], [-1])
    assert (await call("rotate", location="1/0/0", amount=0))["error"]["code"] == "BAD_REQUEST"
    down = await call("down", location="1/0/0")
    up = await call("up", location="1/0/0")
    assert down["ok"] and up["ok"]
    assert (await call("set_input", name="x", value="1"))["error"]["code"] == "BAD_REQUEST"
    refresh = await call("refresh")
    assert refresh["ok"] and refresh["result"] == {"synced": True}
    await c.close()


async def test_link_drop_goes_stale_then_fresh_and_vanished_keys_are_deleted(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    loop = asyncio.get_running_loop()
    sim.stall(True)  # no PONG, socket stays open: only the dead-link timeout can tell
    t0 = loop.time()
    await wait_until(lambda: stale(hub, "companion.buttons.1.0.0"), 4, "stale after stall")
    assert loop.time() - t0 >= FAST.dead_after - FAST.ping_interval  # the timeout, not sooner
    assert stale(hub, "companion.info") and not stale(hub, "companion.variables.custom.cue")
    assert adapter_state(hub) in ("disconnected", "connecting")
    assert not stale(hub, "hub.adapters.companion")  # the adapter's own status stays fresh
    sim.remove_button(2, 1, 3)  # vanishes while the hub cannot see
    sim.stall(False)
    await sim.drop_connections()
    await wait_until(lambda: adapter_state(hub) == "connected", 8, "reconnected")
    await wait_until(lambda: stale(hub, "companion.buttons.1.0.0") is False, 3, "fresh again")
    await wait_until(lambda: hub.hub.store.get("companion.buttons.2.1.3") is None, 3, "deleted")


async def test_companion_restart(hub: HubServer, sim: CompanionSimulator) -> None:
    before = hub.hub.store.get("companion.buttons.1.0.0")
    assert before is not None
    await sim.restart(companion_version="5.1.1+9200-main-ffffffffff")
    await wait_until(
        lambda: (
            (value(hub, "companion.info") or {}).get("companion_version", "").startswith("5.1.1")
        ),
        8,
        "new version seen",
    )
    await wait_until(lambda: stale(hub, "companion.buttons.1.0.0") is False, 5)
    after = hub.hub.store.get("companion.buttons.1.0.0")
    assert after is not None and after.version == before.version  # same value: no new version


async def test_subscriptions_switched_off_falls_back_to_the_surface(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    await sim.set_subscriptions(False)
    await wait_until(lambda: (value(hub, "companion.info") or {}).get("mode") == "device", 8)
    info = value(hub, "companion.info")
    assert info["subscriptions"] is False
    assert "Button Subscriptions API" in info["detail"]
    await wait_until(lambda: adapter_state(hub) == "connected", 8)
    state = value(hub, "hub.adapters.companion")
    assert "Button Subscriptions API" in state["satellite"]["detail"]
    surface = next(
        e
        for ns in hub.hub.store.namespaces()
        for e in ns.entries.values()
        if e.key.startswith("companion.surfaces.") and e.key.count(".") == 2
    )
    assert msgspec.json.decode(surface.raw)["page"] == 1
    # the page shown on the surface is mirrored and fresh; others keep their last value
    assert stale(hub, "companion.buttons.1.0.0") is False
    await sim.set_subscriptions(True)
    await wait_until(lambda: (value(hub, "companion.info") or {}).get("mode") == "subscriptions", 8)


async def test_no_duplicate_press_across_a_reconnect(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    c = await connect_raw(hub.url, "panel")  # type: ignore[attr-defined]
    n0 = len([p for p in sim.presses if p.location == "1/0/0" and p.action == "down"])
    await sim.drop_connections()
    r = await c.request(
        {
            "op": "command",
            "target": "companion",
            "name": "press",
            "params": {"location": "1/0/0"},
            "idempotency_key": "once",
        }
    )
    await wait_until(lambda: adapter_state(hub) == "connected", 8)
    again = await c.request(
        {
            "op": "command",
            "target": "companion",
            "name": "press",
            "params": {"location": "1/0/0"},
            "idempotency_key": "once",
        }
    )
    assert r["ok"] and again == {**r, "id": again["id"]}
    await asyncio.sleep(0.3)
    n1 = len([p for p in sim.presses if p.location == "1/0/0" and p.action == "down"])
    assert n1 - n0 == 1
    await c.close()


async def test_http_link_down_marks_variables_stale(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    c = await connect_raw(hub.url, "panel")  # type: ignore[attr-defined]
    sim.http_enabled = False  # every /api request answers 403
    await wait_until(lambda: stale(hub, "companion.variables.custom.cue"), 3, "variables stale")
    assert stale(hub, "companion.connections.obs")
    assert not stale(hub, "companion.buttons.1.0.0")  # the Satellite side is fine
    r = await c.request(
        {"op": "command", "target": "companion", "name": "press", "params": {"location": "1/0/0"}}
    )
    assert r["error"]["code"] == "UNAVAILABLE"
    sim.http_enabled = True
    await wait_until(lambda: stale(hub, "companion.variables.custom.cue") is False, 3, "fresh")
    await c.close()


async def test_bad_input_from_companion(hub: HubServer, sim: CompanionSimulator) -> None:
    connects = hub.adapters[0].satellite.connects
    await sim.send_raw(
        b'\x00\xff\xfe garbage\nNOT-A-COMMAND X=1\nSUB-STATE SUBID="1/0/0" TEXT="!!!" \n'
    )
    await asyncio.sleep(0.3)
    assert adapter_state(hub) == "connected"
    assert hub.adapters[0].satellite.connects == connects  # ignored, not reset
    assert value(hub, "companion.buttons.1.0.0")["text"] == "CAM 1"
    # a line over the length limit resets the link, which then recovers
    await sim.send_raw(b"x" * (2 * 1024 * 1024 + 10))
    await wait_until(lambda: hub.adapters[0].satellite.connects > connects, 8, "reconnect")
    await wait_until(lambda: adapter_state(hub) == "connected", 8)


async def test_server_that_never_says_begin(sim: CompanionSimulator) -> None:
    sim.silent_accept(True)
    srv = HubServer(HubConfig(port=0), companions=[companion_config(sim)])
    await srv.start()
    try:
        await wait_until(
            lambda: (
                (value(srv, "hub.adapters.companion") or {}).get("satellite", {}).get("state")
                == "disconnected"
            ),
            5,
        )
        detail = value(srv, "hub.adapters.companion")["satellite"]["detail"]
        assert "BEGIN" in detail or "dead link" in detail
        assert value(srv, "hub.adapters.companion")["next_retry"] is not None
        sim.silent_accept(False)
        await wait_until(lambda: adapter_state(srv) == "connected", 8)
    finally:
        await srv.stop()


# --- more configurations -------------------------------------------------------------


async def started(sim: CompanionSimulator, *configs: CompanionConfig) -> HubServer:
    srv = HubServer(HubConfig(port=0), companions=list(configs))
    await srv.start()
    srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
    return srv


async def test_transferable_values_and_websocket_transport(sim: CompanionSimulator) -> None:
    from companion_hub.adapters.companion.satellite import Transferable

    cfg = companion_config(
        sim,
        transport="ws",
        satellite_port=sim.ws_port,
        device_id="hub-stage",
        transferable=[
            Transferable("tally", "output", "Tally"),
            Transferable("fader", "input", "Fader"),
        ],
    )
    sim.bind_output("hub-stage", "tally", "$(custom:note)")
    sim.bind_input("hub-stage", "fader", "cue")
    srv = await started(sim, cfg)
    try:
        await wait_until(lambda: adapter_state(srv) == "connected", 8)
        assert srv.adapters[0].satellite.transport_kind == "ws"
        await wait_until(
            lambda: value(srv, "companion.surfaces.hub-stage.outputs.tally") == "hello", 5
        )
        c = await connect_raw(srv.url, "panel")  # type: ignore[attr-defined]
        r = await c.request(
            {
                "op": "command",
                "target": "companion",
                "name": "set_input",
                "params": {"name": "fader", "value": "0.75"},
            }
        )
        assert r["ok"], r
        await wait_until(
            lambda: sim.custom_variables.get("cue") == "0.75", 3, "input reached Companion"
        )
        assert value(srv, "companion.surfaces.hub-stage.inputs.fader") == "0.75"
        # an output follows its expression
        sim.set_custom_variable("note", "PROGRAM")
        await wait_until(
            lambda: value(srv, "companion.surfaces.hub-stage.outputs.tally") == "PROGRAM", 5
        )
        await c.close()
    finally:
        await srv.stop()


async def test_two_companions_each_in_its_own_namespace(
    sim: CompanionSimulator, tmp_path: Any
) -> None:
    other = CompanionSimulator(None, clock=False, connection_status_changes=False)
    await other.start()
    try:
        srv = await started(
            sim,
            companion_config(sim),
            companion_config(other, name="backup", namespace="backup", variables=[]),
        )
        try:
            await wait_until(lambda: adapter_state(srv) == "connected", 8)
            await wait_until(
                lambda: (value(srv, "hub.adapters.backup") or {}).get("state") == "connected", 8
            )
            assert value(srv, "companion.buttons.1.0.0")["text"] == "CAM 1"
            assert any(
                e.key.startswith("backup.buttons.")
                for e in srv.hub.store.namespace("backup").entries.values()
            )  # type: ignore[union-attr]
            devices = {a.device_id for a in srv.adapters}
            assert len(devices) == 2  # a device id per instance
        finally:
            await srv.stop()
    finally:
        await other.stop()


async def test_bitmaps_as_data_urls(sim: CompanionSimulator) -> None:
    srv = await started(sim, companion_config(sim, bitmaps=True, bitmap_size=36, variables=[]))
    try:
        await wait_until(lambda: adapter_state(srv) == "connected", 8)
        cam = value(srv, "companion.buttons.1.0.0")
        assert cam["image"].startswith("data:image/png;base64,")
    finally:
        await srv.stop()


async def test_device_id_held_by_a_half_open_connection_is_retried(sim: CompanionSimulator) -> None:
    """Companion sends 'Device exists elsewhere' to the old connection and nothing to the
    new one: the adapter must time out, retry, and get the device once it is free."""
    await sim.set_subscriptions(False)
    _reader, writer = await asyncio.open_connection("127.0.0.1", sim.satellite_port)
    writer.write(
        b'ADD-DEVICE DEVICEID="hub-held" PRODUCT_NAME="old" KEYS_TOTAL=8 KEYS_PER_ROW=4 \n'
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    srv = await started(sim, companion_config(sim, device_id="hub-held", variables=[]))
    try:
        await asyncio.sleep(1.5)
        assert adapter_state(srv) != "connected"  # waiting for a reply that never comes
        writer.close()  # the old connection goes away: the id is free again
        await wait_until(lambda: adapter_state(srv) == "connected", 10, "registered after retry")
        assert any(d.device_id == "hub-held" for d in sim.devices())
    finally:
        await srv.stop()


async def test_held_button_is_released_when_the_link_comes_back(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    c = await connect_raw(hub.url, "panel")  # type: ignore[attr-defined]
    r = await c.request(
        {"op": "command", "target": "companion", "name": "down", "params": {"location": "1/0/1"}}
    )
    assert r["ok"]
    sim.http_enabled = False  # the link drops between down and up
    await wait_until(lambda: stale(hub, "companion.variables.custom.cue"), 3)
    sim.http_enabled = True
    await wait_until(
        lambda: [p.action for p in sim.presses if p.location == "1/0/1"][-1:] == ["up"],
        5,
        "released",
    )
    # the simulator records the press before the adapter has read its answer
    await wait_until(lambda: hub.adapters[0]._held == set(), 5, "no longer held")
    await c.close()


async def test_unchanged_values_make_no_deltas(hub: HubServer, sim: CompanionSimulator) -> None:
    before = hub.hub.store.get("companion.variables.custom.note")
    cam = hub.hub.store.get("companion.buttons.1.0.0")
    await asyncio.sleep(1.0)  # several polls and pings
    after = hub.hub.store.get("companion.variables.custom.note")
    assert before is not None and after is not None and after.rev == before.rev
    assert hub.hub.store.get("companion.buttons.1.0.0").rev == cam.rev  # type: ignore[union-attr]
    status = hub.hub.store.get("hub.adapters.companion")
    await asyncio.sleep(0.5)
    assert hub.hub.store.get("hub.adapters.companion").rev == status.rev  # type: ignore[union-attr]
