"""The simulator's pure Satellite pieces: command checks in Companion's order, the outbox."""

from __future__ import annotations

import base64
import json

from companion_hub.adapters.companion.codec import parse_line
from companion_hub.simulator.model import RenderStyle
from companion_hub.simulator.satellite.outbox import CLOSE, Outbox
from companion_hub.simulator.satellite.requests import (
    DeviceDeclaration,
    DeviceIdentity,
    Refusal,
    SubscriptionRequest,
    device_declaration,
    device_identity,
    key_index,
    subscription_request,
)

API = (1, 14, 0)


def params(line: str) -> dict:
    return parse_line("CMD " + line)[1]


def b64j(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_device_identity_order() -> None:
    assert device_identity(params("PRODUCT_NAME=x"), API) == Refusal("Missing DEVICEID")
    assert device_identity(params("DEVICEID PRODUCT_NAME=x"), API) == Refusal("Missing DEVICEID")
    assert device_identity(params("DEVICEID=d"), API) == Refusal("Missing PRODUCT_NAME", "d")
    assert device_identity(params('DEVICEID=d PRODUCT_NAME=x SERIAL="group:1"'), API) == (
        Refusal("Reserved SERIAL", "d")
    )
    assert device_identity(params("DEVICEID=emulator:1 PRODUCT_NAME=x"), API) == (
        Refusal("Reserved DEVICEID", "emulator:1")
    )
    # SERIAL is only read from API 1.10 on
    assert device_identity(params("DEVICEID=d PRODUCT_NAME=x SERIAL=s"), (1, 9, 0)) == (
        DeviceIdentity("d", "x", "d")
    )
    assert device_identity(params("DEVICEID=d PRODUCT_NAME=x SERIAL=s"), API) == (
        DeviceIdentity("d", "x", "s")
    )


def test_device_declaration() -> None:
    grid = device_declaration(params("KEYS_TOTAL=10 KEYS_PER_ROW=4 BITMAPS=1 TEXT=1"), API, "d")
    assert isinstance(grid, DeviceDeclaration)
    assert (grid.keys_total, grid.columns, grid.rows) == (10, 4, 3)
    assert grid.style == RenderStyle(bitmap=(72, 72), text=True)
    assert grid.serial_is_unique and grid.brightness_slider and grid.controls is None
    assert device_declaration(params("KEYS_TOTAL=0"), API, "d") == (
        Refusal("Invalid KEYS_TOTAL", "d")
    )
    assert device_declaration(params("KEYS_PER_ROW=1001"), API, "d") == (
        Refusal("Invalid KEYS_PER_ROW", "d")
    )
    # the layout is checked before VARIABLES
    assert device_declaration(params("KEYS_TOTAL=x VARIABLES=!"), API, "d") == (
        Refusal("Invalid KEYS_TOTAL", "d")
    )
    assert device_declaration(params("VARIABLES=!"), API, "d") == (
        Refusal("Invalid VARIABLES", "d")
    )
    manifest = {
        "stylePresets": {"default": {"text": True}},
        "controls": {"a": {"row": 1, "column": 2}},
    }
    m = device_declaration(params(f"LAYOUT_MANIFEST={b64j(manifest)}"), API, "d")
    assert isinstance(m, DeviceDeclaration) and m.controls is not None
    assert (m.columns, m.rows) == (3, 2) and m.controls["a"].style.text
    bad = {"stylePresets": {}, "controls": {}}
    assert device_declaration(params(f"LAYOUT_MANIFEST={b64j(bad)}"), API, "d") == (
        Refusal("Invalid LAYOUT_MANIFEST", "d")
    )


def test_key_index() -> None:
    assert key_index("5", 4, 2) == 5 and key_index("+1/+3", 4, 2) == 7
    assert key_index("8", 4, 2) is None and key_index("2/0", 4, 2) is None
    assert key_index(True, 4, 2) is None and key_index("-1", 4, 2) is None


def test_subscription_request_order() -> None:
    assert subscription_request(params("LOCATION=1/0/0"), API, set()) == (Refusal("Missing SUBID"))
    assert subscription_request(params("SUBID=a_b"), API, set()) == Refusal("Invalid SUBID")
    assert subscription_request(params("SUBID=s LOCATION=x"), API, {"s"}) == (
        Refusal("SUBID already in use")
    )
    assert subscription_request(params("SUBID=s"), API, set()) == Refusal("Missing LOCATION")
    assert subscription_request(params("SUBID=s LOCATION=1/-1/0"), API, set()) == (
        Refusal("Invalid LOCATION")
    )
    assert subscription_request(params("SUBID=s LOCATION=1/0/0 STYLE=!"), API, set()) == (
        Refusal("Invalid STYLE")
    )
    ok = subscription_request(params("SUBID=s LOCATION=2/1/0 COLORS=rgb"), API, set())
    assert ok == SubscriptionRequest("s", (2, 1, 0), RenderStyle(colors="rgb"))


def test_outbox_keeps_order_and_coalesces_states() -> None:
    box = Outbox()
    box.put("a")
    box.put_state("k", "k1")
    box.put(b"raw")
    assert box.replace_state("k", "k2") and not box.replace_state("other", "x")
    box.put_close()
    assert len(box) == 4
    assert [box.take() for _ in range(5)] == ["a", "k2", b"raw", CLOSE, None]
    box.put_state("k", "k3")  # written before: queued again
    assert box.take() == "k3"
