"""The adapter's variables over Ember+ against the simulator's provider, real sockets:
listed without configuration, pushed, a variable created while the hub runs (after
the provider's rebuild, which abandons the open connection), staleness, and the
fallback to HTTP polling when Ember+ is not there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from companion_hub.adapters.companion.ember_link import EmberTiming
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from companion_hub.simulator import CompanionSimulator, load_scenario
from tests.integration.test_companion import (
    SCENARIO,
    adapter_state,
    companion_config,
    stale,
    value,
    wait_until,
)
from tests.mosquitto import free_port

T = 10.0  # generous: CI shares two cores
FAST = EmberTiming(probe_interval=0.3, request_timeout=0.5, backoff_base=0.1, backoff_max=0.5)


def ember(srv: HubServer) -> dict[str, Any]:
    return dict(value(srv, "hub.adapters.companion")["ember"])


@pytest.fixture
async def sim(tmp_path: Any) -> AsyncIterator[CompanionSimulator]:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    s = CompanionSimulator(
        load_scenario(path), clock=False, connection_status_changes=False, ember_port=0
    )
    s.ember_rebuild_delay = 0.5
    await s.start()
    yield s
    await s.stop()


async def start(sim: CompanionSimulator, **kw: Any) -> HubServer:
    cfg = companion_config(sim, variables=[], ember_port=sim.ember_port, ember_timing=FAST, **kw)
    srv = HubServer(HubConfig(port=0), companions=[cfg])
    await srv.start()
    await wait_until(lambda: adapter_state(srv) == "connected", T, "adapter connected")
    return srv


async def test_every_variable_without_configuration_pushed(sim: CompanionSimulator) -> None:
    srv = await start(sim)
    try:
        await wait_until(lambda: ember(srv)["state"] == "connected", T, "Ember+ connected")
        # nothing listed: Ember+ brings every custom and internal variable
        await wait_until(lambda: value(srv, "companion.variables.custom.cue") == "1", T, "cue")
        assert value(srv, "companion.variables.custom.note") == "hello"
        assert srv.hub.store.get("companion.variables.internal.time_hms") is not None
        status = value(srv, "hub.adapters.companion")
        assert status["state"] == "connected"
        assert "by Ember+" in status["http"]["detail"]
        # a change made over Companion's HTTP API arrives pushed, not polled
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{sim.http_port}/api/custom-variable/cue/value"
            async with http.post(url, data="42") as resp:
                assert resp.status < 300
        await wait_until(lambda: value(srv, "companion.variables.custom.cue") == "42", T, "push")
        # a custom variable created while the hub runs: Companion's provider rebuilds
        # its tree and abandons the open connection; the adapter notices and reconnects
        ember_server = sim.ember
        assert ember_server is not None
        rebuilds = ember_server.rebuilds
        sim.create_custom_variable("late", "new one")
        await wait_until(lambda: ember_server.rebuilds > rebuilds, T, "the provider's rebuild")
        rebuilt = time.monotonic()
        await wait_until(
            lambda: value(srv, "companion.variables.custom.late") == "new one", T, "new variable"
        )
        took = time.monotonic() - rebuilt
        assert srv.adapters[0].ember is not None and srv.adapters[0].ember.stalls >= 1  # type: ignore[union-attr]
        print(f"new custom variable in the hub {took:.2f} s after the provider's rebuild")
        # the variables were not marked stale across the rebuild's reconnect
        assert stale(srv, "companion.variables.custom.cue") is False
    finally:
        await srv.stop()


async def test_ember_gone_marks_its_variables_stale_then_fresh(sim: CompanionSimulator) -> None:
    srv = await start(sim)
    try:
        await wait_until(lambda: value(srv, "companion.variables.custom.cue") == "1", T, "cue")
        ember_server = sim.ember
        assert ember_server is not None
        port = sim.ember_port
        await ember_server.stop()  # Ember+ switched off in Companion: connections close
        await wait_until(lambda: stale(srv, "companion.variables.custom.cue"), T, "stale")
        state = value(srv, "hub.adapters.companion")
        assert state["state"] == "connected"  # a fallback, not a failure
        assert state["ember"]["state"] == "disconnected"
        # back on the same port
        ember_server.port = port  # type: ignore[misc]
        await ember_server.start()
        await wait_until(lambda: stale(srv, "companion.variables.custom.cue") is False, T, "fresh")
    finally:
        await srv.stop()


async def test_without_ember_the_adapter_polls_and_says_how_to_get_variables(
    tmp_path: Any,
) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    sim = CompanionSimulator(load_scenario(path), clock=False, connection_status_changes=False)
    await sim.start()
    closed = free_port()  # nothing listens: Ember+ is off in this Companion
    try:
        cfg = companion_config(sim, variables=[], ember_port=closed, ember_timing=FAST)
        srv = HubServer(HubConfig(port=0), companions=[cfg])
        await srv.start()
        try:
            await wait_until(lambda: adapter_state(srv) == "connected", T, "adapter connected")
            await wait_until(lambda: ember(srv)["state"] == "disconnected", T, "no Ember+")
            await wait_until(
                lambda: (
                    "0 variables configured"
                    in value(srv, "hub.adapters.companion")["http"]["detail"]
                ),
                T,
                "the hint",
            )
            detail = value(srv, "hub.adapters.companion")["http"]["detail"]
            assert "--companion-variable" in detail and "enable Ember+" in detail
            assert "enable Ember+ in Companion" in ember(srv)["detail"]
            assert value(srv, "hub.adapters.companion")["state"] == "connected"
            assert srv.hub.store.get("companion.variables.custom.cue") is None
        finally:
            await srv.stop()
        # listed variables are polled over HTTP instead
        cfg = companion_config(sim, variables=["custom:cue"], ember_port=closed, ember_timing=FAST)
        srv = HubServer(HubConfig(port=0), companions=[cfg])
        await srv.start()
        try:
            await wait_until(lambda: value(srv, "companion.variables.custom.cue") == "1", T, "poll")
            assert "polling 1 variables" in value(srv, "hub.adapters.companion")["http"]["detail"]
        finally:
            await srv.stop()
    finally:
        await sim.stop()


async def test_module_variables_stay_on_http_polling(sim: CompanionSimulator) -> None:
    srv = await start(sim, **{})
    srv2: HubServer | None = None
    try:
        await wait_until(lambda: ember(srv)["state"] == "connected", T, "Ember+")
        assert srv.hub.store.get("companion.variables.obs.scene") is None  # not listed
    finally:
        await srv.stop()
    cfg = companion_config(
        sim, variables=["obs:scene", "custom:cue"], ember_port=sim.ember_port, ember_timing=FAST
    )
    srv2 = HubServer(HubConfig(port=0), companions=[cfg])
    await srv2.start()
    try:
        await wait_until(lambda: ember(srv2)["state"] == "connected", T, "Ember+")
        await wait_until(lambda: value(srv2, "companion.variables.obs.scene") == "Wide", T, "obs")
        assert value(srv2, "companion.variables.custom.note") == "hello"  # by Ember+
        adapter = srv2.adapters[0]
        assert [str(r) for r in adapter._http_refs()] == ["obs:scene"]  # type: ignore[union-attr]
        await asyncio.sleep(0.5)  # several polls: the HTTP sync leaves Ember+'s keys alone
        assert value(srv2, "companion.variables.custom.note") == "hello"
    finally:
        await srv2.stop()
