"""Export: hub keys -> Companion custom variables, against the simulator over HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from companion_hub.adapters.companion.export import ExportRule
from companion_hub.client import connect_raw
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from companion_hub.simulator import CompanionSimulator, load_scenario

from .test_companion import companion_config, value, wait_until

SCENARIO = """
[[pages]]
number = 1
buttons = [
  { row = 0, column = 0, text = "CAM 1 $(custom:tally_cam1)" },
  { row = 0, column = 1, text = "Cue $(custom:cue)" },
]

[custom_variables]
cue = "1"
note = "hello"
tally_cam1 = ""
tally_cam2 = ""
timer = ""
counter = ""
state = ""
echo_app = ""
echo_companion = ""
"""

RULES = [
    ExportRule("app.tally.cams.*", "tally_cam<1>", field="live"),
    ExportRule("app.timer.left", "timer"),
    ExportRule("app.burst.n", "counter"),
    ExportRule("app.stage.state", "state", stale_text="--", deleted_text="gone"),
    ExportRule("app.cues.current", "cue"),
    ExportRule("app.tally.absent", "absent_var"),
    # would match the adapter's own companion.variables.custom.note: never exported
    ExportRule("*.variables.custom.note", "echo_<1>"),
]

LOGGER = "companion_hub.adapters.companion"


@pytest.fixture
async def sim(tmp_path: Any) -> AsyncIterator[CompanionSimulator]:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    s = CompanionSimulator(load_scenario(path), clock=False, connection_status_changes=False)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def hub(sim: CompanionSimulator) -> AsyncIterator[HubServer]:
    cfg = companion_config(sim, variables=["custom:note", "custom:cue"], exports=RULES)
    srv = HubServer(HubConfig(port=0), companions=[cfg])
    await srv.start()
    srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
    await wait_until(
        lambda: (value(srv, "hub.adapters.companion") or {}).get("state") == "connected",
        10,
        "adapter connected",
    )
    yield srv
    await srv.stop()


async def restart_companion(hub: HubServer, sim: CompanionSimulator) -> None:
    """``sim.restart()`` once the hub has seen an uptime of at least 1 s: Companion's
    ``internal:uptime`` is whole seconds, so only then can the hub see it go back."""
    adapter = hub.adapters[0]
    await wait_until(lambda: (adapter._uptime or 0) >= 1, 10, "uptime seen >= 1 s")
    await sim.restart()


def custom(sim: CompanionSimulator, name: str) -> Any:
    return sim.custom_variables.get(name)


def export_status(srv: HubServer) -> dict[str, Any]:
    return (value(srv, "hub.adapters.companion") or {}).get("export") or {}


async def test_changes_reach_companion_variables(hub: HubServer, sim: CompanionSimulator) -> None:
    c = await connect_raw(hub.url, "tally")  # type: ignore[attr-defined]
    await c.result({"op": "set", "key": "app.tally.cams.1", "value": {"live": True}})
    await c.result({"op": "set", "key": "app.tally.cams.2", "value": {"live": False}})
    await wait_until(lambda: custom(sim, "tally_cam1") == "true", 10, "cam 1 exported")
    await wait_until(lambda: custom(sim, "tally_cam2") == "false", 10, "cam 2 exported")
    t = await connect_raw(hub.url, "timer")  # type: ignore[attr-defined]
    await t.result({"op": "set", "key": "app.timer.left", "value": 90.0})
    await wait_until(lambda: custom(sim, "timer") == "90", 10, "number as text")
    await t.result({"op": "set", "key": "app.timer.left", "value": 89.5})
    await wait_until(lambda: custom(sim, "timer") == "89.5", 10, "new value")
    status = export_status(hub)
    assert status["variables"] >= 3 and "absent_var" in status["missing"]
    await c.close()
    await t.close()


async def test_a_burst_ends_with_the_last_value_in_far_fewer_writes(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    c = await connect_raw(hub.url, "burst")  # type: ignore[attr-defined]
    await c.result({"op": "set", "key": "app.burst.n", "value": -1})
    await wait_until(lambda: custom(sim, "counter") == "-1", 10, "first value")
    before = sim.custom_variable_posts.get("counter", 0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(1000):
        await c.send({"op": "set", "id": f"b{i}", "key": "app.burst.n", "value": i})
        if i % 10 == 9:
            # ~1,000 changes in about a second
            await asyncio.sleep(max(0.0, t0 + (i + 1) / 1000 - loop.time()))
    await wait_until(lambda: value(hub, "app.burst.n") == 999, 20, "all changes in the hub")
    await wait_until(lambda: custom(sim, "counter") == "999", 20, "the last value exported")
    await asyncio.sleep(0.5)  # nothing more arrives after it
    assert custom(sim, "counter") == "999"
    writes = sim.custom_variable_posts["counter"] - before
    assert 1 <= writes < 250, writes  # ~20 a second at most: far fewer than 1,000
    adapter = hub.adapters[0]
    assert adapter.export is not None and adapter.export.queue.in_flight == 0
    await c.close()


async def test_stale_and_deleted_text(hub: HubServer, sim: CompanionSimulator) -> None:
    c = await connect_raw(hub.url, "stage")  # type: ignore[attr-defined]
    await c.result({"op": "set", "key": "app.stage.state", "value": "running"})
    await wait_until(lambda: custom(sim, "state") == "running", 10)
    await c.result({"op": "delete", "key": "app.stage.state"})
    await wait_until(lambda: custom(sim, "state") == "gone", 10, "deleted text")
    await c.result({"op": "set", "key": "app.stage.state", "value": "paused"})
    await wait_until(lambda: custom(sim, "state") == "paused", 10)
    await c.close()  # the owner goes: its keys turn stale
    await wait_until(lambda: custom(sim, "state") == "--", 10, "stale text")
    back = await connect_raw(hub.url, "stage")  # type: ignore[attr-defined]
    await back.result({"op": "set", "key": "app.stage.state", "value": "paused"})
    await wait_until(lambda: custom(sim, "state") == "paused", 10, "fresh again")
    await back.close()


async def test_reexport_after_companion_restart(hub: HubServer, sim: CompanionSimulator) -> None:
    c = await connect_raw(hub.url, "timer")  # type: ignore[attr-defined]
    await c.result({"op": "set", "key": "app.timer.left", "value": 42})
    await wait_until(lambda: custom(sim, "timer") == "42", 10)
    sim.set_custom_variable("timer", "changed in Companion")
    await asyncio.sleep(0.6)  # several polls: the hub's value did not change, no write
    assert custom(sim, "timer") == "changed in Companion"
    await restart_companion(hub, sim)
    await wait_until(lambda: custom(sim, "timer") == "42", 10, "re-exported after the restart")
    # and after the HTTP link was down and came back
    sim.set_custom_variable("timer", "changed again")
    sim.http_enabled = False
    await wait_until(
        lambda: (value(hub, "hub.adapters.companion") or {})["http"]["state"] == "disconnected",
        10,
        "HTTP link down",
    )
    sim.http_enabled = True
    await wait_until(lambda: custom(sim, "timer") == "42", 10, "re-exported after reconnect")
    await c.close()


async def test_missing_variable_reported_once_then_exported_when_created(
    hub: HubServer, sim: CompanionSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    c = await connect_raw(hub.url, "tally")  # type: ignore[attr-defined]
    await c.result({"op": "set", "key": "app.tally.absent", "value": "on air"})
    await wait_until(lambda: "absent_var" in export_status(hub).get("missing", []), 10)
    status = export_status(hub)
    assert "create custom variable absent_var in Companion" in status["hint"]
    await c.result({"op": "set", "key": "app.tally.absent", "value": "off air"})
    n0 = sim.custom_variable_posts.get("absent_var", 0)
    await restart_companion(hub, sim)  # retried after a restart: still missing, not logged
    await wait_until(
        lambda: sim.custom_variable_posts.get("absent_var", 0) > n0, 10, "retried after restart"
    )
    await asyncio.sleep(0.3)
    records = caplog.get_records("setup") + caplog.get_records("call")
    logged = [r for r in records if "create custom variable absent_var" in r.getMessage()]
    assert len(logged) == 1, logged
    assert logged[0].levelno == logging.WARNING
    assert "absent_var" in export_status(hub)["missing"]
    # the user creates it; Companion restarts: the hub's value goes there
    sim.set_custom_variable("absent_var", "")
    await sim.restart(downtime=0.5)  # a restart that the HTTP link sees as a drop
    await wait_until(lambda: custom(sim, "absent_var") == "off air", 10, "exported once created")
    await wait_until(lambda: "absent_var" not in export_status(hub)["missing"], 10)
    assert "hint" not in export_status(hub)
    await c.close()


async def test_round_trip_key_to_variable_to_button(
    hub: HubServer, sim: CompanionSimulator
) -> None:
    watcher = await connect_raw(hub.url, "watcher")  # type: ignore[attr-defined]
    await watcher.subscribe("companion.buttons.1.**")
    cues = await connect_raw(hub.url, "cues")  # type: ignore[attr-defined]
    await cues.result({"op": "set", "key": "app.cues.current", "value": 7})
    d = await watcher.receive(
        lambda m: m.get("key") == "companion.buttons.1.0.1" and m["value"]["text"] == "Cue 7",
        timeout=10,
    )
    assert d["stale"] is False
    tally = await connect_raw(hub.url, "tally")  # type: ignore[attr-defined]
    await tally.result({"op": "set", "key": "app.tally.cams.1", "value": {"live": True}})
    await watcher.receive(
        lambda m: m.get("key") == "companion.buttons.1.0.0" and m["value"]["text"] == "CAM 1 true",
        timeout=10,
    )
    # the adapter polls custom:cue into its own namespace; that key is never exported
    await wait_until(lambda: value(hub, "companion.variables.custom.cue") == "7", 10)
    for c in (watcher, cues, tally):
        await c.close()


async def test_own_namespace_is_never_exported(hub: HubServer, sim: CompanionSimulator) -> None:
    # companion.variables.custom.note matches "*.variables.custom.note", but it is the
    # adapter's own namespace; a client's key of the same shape is exported
    assert value(hub, "companion.variables.custom.note") is not None
    c = await connect_raw(hub.url, "variables")  # type: ignore[attr-defined]
    await c.result({"op": "set", "key": "app.variables.custom.note", "value": "x"})
    await wait_until(lambda: custom(sim, "echo_app") == "x", 10)
    sim.set_custom_variable("note", "changed")
    await wait_until(lambda: value(hub, "companion.variables.custom.note") == "changed", 10)
    await asyncio.sleep(0.3)
    assert sim.custom_variable_posts.get("echo_companion", 0) == 0
    await c.close()


async def test_stop_removes_the_store_listener(sim: CompanionSimulator) -> None:
    cfg = companion_config(sim, variables=[], exports=RULES)
    srv = HubServer(HubConfig(port=0), companions=[cfg])
    await srv.start()
    adapter = srv.adapters[0]
    assert adapter.export is not None
    listener = adapter.export._on_change
    assert listener in srv.hub.store._listeners
    await srv.stop()
    assert listener not in srv.hub.store._listeners
