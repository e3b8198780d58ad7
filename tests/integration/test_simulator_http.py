"""The simulator's HTTP remote-control API (reference 2.1, checklist item 27)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from companion_hub.adapters.companion.codec import parse_line
from companion_hub.simulator import CompanionSimulator
from companion_hub.simulator.scenario import scenario_from_dict

SCENARIO: dict[str, Any] = {
    "custom_variables": {"cue": 0, "name": "hello", "obj": ""},
    "module_variables": {"mod:val": "m1", "mod:num": 2.5},
    "connections": [
        {"id": "c1", "label": "mod", "moduleId": "generic-a"},
        {"id": "c2", "label": "off", "moduleId": "generic-b", "enabled": False},
    ],
    "pages": [
        {
            "number": 1,
            "buttons": [
                {"row": 0, "column": 0, "text": "$(custom:name)", "bgcolor": "#ff0000"},
                {"row": 0, "column": 1, "text": "L", "behaviour": "latch"},
                {"row": 0, "column": 2, "type": "PAGEUP"},
            ],
        }
    ],
}


@pytest.fixture
async def sim() -> AsyncIterator[CompanionSimulator]:
    s = CompanionSimulator(
        scenario=scenario_from_dict(json.loads(json.dumps(SCENARIO))), clock=False
    )
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http(sim: CompanionSimulator) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.http_port}") as session:
        yield session


async def call(http: Any, method: str, path: str, **kw: Any) -> tuple[int, str, Any]:
    async with http.request(method, path, **kw) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_headers_disabled_and_unknown_routes(http: Any, sim: CompanionSimulator) -> None:
    status, body, headers = await call(http, "POST", "/api/location/1/0/0/down")
    assert (status, body) == (200, "ok")
    assert headers["X-App"] == "Bitfocus Companion"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, body, _ = await call(http, "GET", "/api/nothing/here")
    assert (status, body) == (404, "")
    status, body, _ = await call(http, "GET", "/api/location/1/0/0/press")  # POST only
    assert (status, body) == (404, "")
    sim.http_enabled = False
    for method, path in [
        ("GET", "/api/connections"),
        ("POST", "/api/custom-variable/cue/value?value=1"),
    ]:
        status, body, headers = await call(http, method, path)
        assert (status, body) == (403, "") and headers["X-App"] == "Bitfocus Companion"
    assert sim.custom_variables["cue"] == 0


async def test_location_actions(http: Any, sim: CompanionSimulator) -> None:
    assert (await call(http, "POST", "/api/location/1/0/1/press"))[:2] == (200, "ok")
    assert sim.button(1, 0, 1).pressed  # type: ignore[union-attr]  # a latch stays on
    await asyncio.sleep(0.06)
    assert [(p.action, p.source) for p in sim.presses] == [("down", "http"), ("up", "http")]
    assert sim.presses[1].t - sim.presses[0].t >= 0.015  # released ~20 ms later
    for action in ("press", "down", "up", "rotate-left", "rotate-right", "step", "style"):
        status, body, _ = await call(http, "POST", f"/api/location/1/5/5/{action}")
        assert (status, body) == (204, ""), action
    assert (await call(http, "POST", "/api/location/x/0/0/down"))[0] == 204  # NaN: no control
    await call(http, "POST", "/api/location/1/0/0/rotate-left")
    await call(http, "POST", "/api/location/1/0/0/rotate-right")
    assert [(p.action, p.amount) for p in sim.presses[-2:]] == [("rotate", -1), ("rotate", 1)]
    # steps: a latch button has 2
    assert (await call(http, "POST", "/api/location/1/0/1/step"))[:2] == (400, "Bad step")
    assert (await call(http, "POST", "/api/location/1/0/1/step?step=3"))[:2] == (400, "Bad step")
    assert (await call(http, "POST", "/api/location/1/0/1/step?step=1"))[:2] == (200, "ok")
    assert not sim.button(1, 0, 1).pressed  # type: ignore[union-attr]
    assert (await call(http, "POST", "/api/location/1/0/2/step?step=1"))[0] == 204  # page button


async def test_style_is_accepted_but_changes_nothing(http: Any, sim: CompanionSimulator) -> None:
    status, body, _ = await call(
        http, "POST", "/api/location/1/0/0/style?bgcolor=%2300ff00&text=new", json={"size": 30}
    )
    assert (status, body) == (200, "ok")
    btn = sim.button(1, 0, 0)
    assert btn is not None and btn.bgcolor == 0xFF0000 and btn.text == "$(custom:name)"
    assert (await call(http, "POST", "/api/location/1/0/2/style?text=x"))[0] == 204
    sim.http_style_applies = True  # opt-in: apply like the Companion source would
    await call(
        http, "POST", "/api/location/1/0/0/style?bgcolor=%2300ff00&text=new", json={"size": "30"}
    )
    assert btn.bgcolor == 0x00FF00 and btn.rendered_text == "new" and btn.font_size == 30


async def test_custom_variable_value_rules(http: Any, sim: CompanionSimulator) -> None:
    path = "/api/custom-variable/cue/value"
    assert (await call(http, "POST", path + "?value=7"))[:2] == (200, "ok")
    assert sim.custom_variables["cue"] == "7"  # query: a string
    assert (await call(http, "POST", path + "?value="))[:2] == (200, "ok")
    assert sim.custom_variables["cue"] == ""
    await call(http, "POST", path, data=b"42", headers={"Content-Type": "application/json"})
    assert sim.custom_variables["cue"] == 42  # exact application/json: typed
    await call(http, "POST", path, data=b'{"a":[1]}', headers={"Content-Type": "application/json"})
    assert sim.custom_variables["cue"] == {"a": [1]}
    status, body, headers = await call(http, "GET", path)
    assert (status, json.loads(body)) == (200, {"a": [1]}) and headers["Content-Type"].startswith(
        "application/json"
    )
    await call(http, "POST", path, data=b"  spaced  ", headers={"Content-Type": "text/plain"})
    assert sim.custom_variables["cue"] == "spaced"  # text: trimmed
    await call(
        http, "POST", path, data=b"5", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert sim.custom_variables["cue"] == "5"  # not the exact type: converted to a string
    assert (await call(http, "POST", path))[:2] == (400, "No value")
    assert (await call(http, "POST", path, data=b"", headers={"Content-Type": "text/plain"}))[
        :2
    ] == (400, "No value")
    assert (await call(http, "POST", "/api/custom-variable/nope/value?value=1"))[:2] == (
        404,
        "Not found",
    )
    assert "nope" not in sim.custom_variables  # the API cannot create variables
    await call(http, "POST", path, data=b"{}", headers={"Content-Type": "application/json"})
    assert (await call(http, "GET", path))[:2] == (404, "Not found")  # undefined
    await call(http, "POST", path, data=b"12.5", headers={"Content-Type": "application/json"})
    status, body, headers = await call(http, "GET", path)
    assert (status, body) == (200, "12.5") and headers["Content-Type"] == "text/html; charset=utf-8"
    await call(http, "POST", path + "?value=")
    assert (await call(http, "GET", path))[:2] == (200, "")
    assert (await call(http, "GET", "/api/custom-variable/nope/value"))[:2] == (404, "Not found")


async def test_custom_variable_change_reaches_subscribers(
    http: Any, sim: CompanionSimulator
) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", sim.satellite_port)
    await r.readline()
    await r.readline()
    w.write(b"ADD-SUB SUBID=n LOCATION=1/0/0 TEXT=1\n")
    assert await r.readline() == b'ADD-SUB OK SUBID="n" \n'
    await r.readline()
    await call(http, "POST", "/api/custom-variable/name/value?value=world")
    _, params = parse_line((await asyncio.wait_for(r.readline(), 2)).decode()[:-1])
    assert base64.b64decode(params["TEXT"]) == b"world"  # type: ignore[arg-type]
    w.close()


async def test_variable_endpoint(http: Any, sim: CompanionSimulator) -> None:
    status, body, _ = await call(http, "GET", "/api/variable/internal/time_hms/value")
    assert status == 200 and len(body) == 8 and body[2] == ":"
    sim._started_at -= 42
    status, body, _ = await call(http, "GET", "/api/variable/internal/uptime/value")
    assert status == 200 and int(body) >= 42
    assert (await call(http, "GET", "/api/variable/custom/name/value"))[:2] == (200, "hello")
    assert (await call(http, "GET", "/api/variable/internal/custom_name/value"))[:2] == (
        200,
        "hello",
    )
    assert (await call(http, "GET", "/api/variable/mod/val/value"))[:2] == (200, "m1")
    assert (await call(http, "GET", "/api/variable/mod/num/value"))[:2] == (200, "2.5")
    assert (await call(http, "GET", "/api/variable/mod/none/value"))[:2] == (404, "Not found")
    assert (await call(http, "GET", "/api/variable/internal/instance_disabled/value"))[:2] == (
        200,
        "1",
    )


async def test_connections(http: Any, sim: CompanionSimulator) -> None:
    status, body, headers = await call(http, "GET", "/api/connections")
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == [
        {
            "id": "c1",
            "label": "mod",
            "moduleId": "generic-a",
            "enabled": True,
            "status": {"category": "good", "level": "ok", "message": None},
        },
        {
            "id": "c2",
            "label": "off",
            "moduleId": "generic-b",
            "enabled": False,
            "status": {"category": None, "level": None, "message": "Disabled"},
        },
    ]
    sim.set_connection_status("c1", "error", "Disconnected", "cable")
    status, body, _ = await call(http, "GET", "/api/connections/c1/status")
    assert json.loads(body) == {
        "id": "c1",
        "label": "mod",
        "enabled": True,
        "status": {"category": "error", "level": "Disconnected", "message": "cable"},
    }
    status, body, _ = await call(http, "GET", "/api/connections/zz/status")
    assert (status, json.loads(body)) == (404, {"status": 404, "message": "Connection not found"})
    status, body, _ = await call(http, "POST", "/api/connections/c2/restart")
    assert (status, json.loads(body)) == (
        409,
        {"status": 409, "message": "Connection is inactive and cannot be restarted"},
    )
    status, body, _ = await call(http, "POST", "/api/connections/c1/restart")
    assert (status, json.loads(body)) == (200, {"id": "c1", "message": "Restart triggered"})
    assert sim.connections["c1"].status == {
        "category": "warning",
        "level": "Initializing",
        "message": None,
    }
    for _ in range(2):  # idempotent
        status, body, _ = await call(http, "POST", "/api/connections/c2/enable")
        assert (status, json.loads(body)) == (200, {"id": "c2", "enabled": True})
    assert sim.connections["c2"].enabled
    status, body, _ = await call(http, "POST", "/api/connections/c2/disable")
    assert (status, json.loads(body)) == (200, {"id": "c2", "enabled": False})
    assert (await call(http, "POST", "/api/connections/zz/enable"))[0] == 404
    assert (await call(http, "POST", "/api/surfaces/rescan"))[:2] == (200, "ok")


async def test_http_delay(http: Any, sim: CompanionSimulator) -> None:
    sim.http_delay = 0.2
    t0 = asyncio.get_running_loop().time()
    await call(http, "GET", "/api/connections")
    assert asyncio.get_running_loop().time() - t0 >= 0.18
