"""Home Assistant MQTT discovery for Companion's buttons and variables (pure)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from companion_hub.adapters.mqtt.discovery import Discovery, _ident
from companion_hub.core.store import Entry

BUTTON = "companion.buttons.1.0.2"
VARIABLE = "companion.variables.internal.time_hms"
NODE = _ident("companion-hub_companion")


def disc(prefix: str = "companion-hub", namespace: str = "companion") -> Discovery:
    return Discovery(
        prefix=prefix, discovery_prefix="homeassistant", namespace=namespace, adapter="companion"
    )


def entry(key: str, value: Any) -> Entry:
    return Entry(
        key=key,
        raw=msgspec.json.encode(value),
        version=1,
        rev=1,
        owner="companion",
        stale=False,
        ts=1,
    )


def one(messages: list[tuple[str, bytes]]) -> tuple[str, dict[str, Any]]:
    assert len(messages) == 1
    topic, payload = messages[0]
    return topic, json.loads(payload)


def test_button_config() -> None:
    d = disc()
    topic, cfg = one(d.messages(BUTTON, entry(BUTTON, {"text": "Cam 1"}), None))
    assert topic == f"homeassistant/button/{NODE}/{_ident('companion.buttons.1.0.2')}/config"
    assert cfg["name"] == "1/0/2 Cam 1"
    assert cfg["command_topic"] == "companion-hub/command/companion/press"
    assert json.loads(cfg["payload_press"]) == {"location": "1/0/2"}
    assert cfg["unique_id"] == f"{NODE}_{_ident('companion.buttons.1.0.2')}"
    assert "state_topic" not in cfg
    assert cfg["availability_mode"] == "all"
    avail = cfg["availability"]
    assert [a["topic"] for a in avail] == [
        "companion-hub/status",
        "companion-hub/state/hub/adapters/companion",
    ]
    assert avail[0]["payload_available"] == "online"
    assert avail[0]["payload_not_available"] == "offline"
    assert "connected" in avail[1]["value_template"]
    assert cfg["device"]["identifiers"] == [NODE]


def test_variable_config() -> None:
    d = disc()
    topic, cfg = one(d.messages(VARIABLE, entry(VARIABLE, "12:00:00"), None))
    assert (
        topic
        == f"homeassistant/sensor/{NODE}/{_ident('companion.variables.internal.time_hms')}/config"
    )
    assert cfg["name"] == "internal:time_hms"
    assert cfg["state_topic"] == "companion-hub/state/companion/variables/internal/time_hms"
    assert cfg["value_template"] == "{{ value_json.value }}"
    assert "command_topic" not in cfg and "payload_press" not in cfg
    assert cfg["availability_mode"] == "all"
    assert {a["topic"] for a in cfg["availability"]} == {
        "companion-hub/status",
        "companion-hub/state/hub/adapters/companion",
    }


def test_prefix_with_levels() -> None:
    d = disc(prefix="studio/hub")
    topic, cfg = one(d.messages(BUTTON, entry(BUTTON, {}), None))
    assert (
        topic
        == f"homeassistant/button/{_ident('studio/hub_companion')}/{_ident('companion.buttons.1.0.2')}/config"
    )
    assert cfg["command_topic"] == "studio/hub/command/companion/press"
    assert cfg["availability"][0]["topic"] == "studio/hub/status"
    assert cfg["availability"][1]["topic"] == "studio/hub/state/hub/adapters/companion"


def test_deleted_announced_key_gets_empty_payload() -> None:
    d = disc()
    topic, _ = one(d.messages(BUTTON, entry(BUTTON, {"text": "x"}), None))
    assert d.messages(BUTTON, None, "1/0/2 x") == [(topic, b"")]
    vtopic, _ = one(d.messages(VARIABLE, entry(VARIABLE, 1), None))
    assert d.messages(VARIABLE, None, "internal:time_hms") == [(vtopic, b"")]


def test_deleted_unannounced_key_sends_nothing() -> None:
    assert disc().messages(BUTTON, None, None) == []


def test_unchanged_name_sends_nothing() -> None:
    d = disc()
    e = entry(BUTTON, {"text": "Cam 1", "color": 1})
    assert d.messages(BUTTON, e, "1/0/2 Cam 1") == []
    e2 = entry(BUTTON, {"text": "Cam 1", "color": 2})  # a change that is not the name
    assert d.messages(BUTTON, e2, "1/0/2 Cam 1") == []
    assert d.messages(VARIABLE, entry(VARIABLE, "new value"), "internal:time_hms") == []


def test_changed_button_text_announces_again() -> None:
    d = disc()
    _, cfg = one(d.messages(BUTTON, entry(BUTTON, {"text": "Cam 2"}), "1/0/2 Cam 1"))
    assert cfg["name"] == "1/0/2 Cam 2"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ({"text": "  two\n words  "}, "1/0/2 two words"),
        ({"text": "x" * 100}, "1/0/2 " + "x" * 60),
        ({"text": ""}, "1/0/2"),
        ({"text": 5}, "1/0/2"),
        ({}, "1/0/2"),
        ("not an object", "1/0/2"),
        (None, "1/0/2"),
    ],
)
def test_button_names(value: Any, name: str) -> None:
    _, cfg = one(disc().messages(BUTTON, entry(BUTTON, value), None))
    assert cfg["name"] == name


@pytest.mark.parametrize(
    "key",
    [
        "companion.info",
        "companion.buttons.1.0",  # too short
        "companion.buttons.1.0.2.x",  # too long
        "companion.buttons",
        "companion.variables.internal",
        "companion.variables.internal.time.x",
        "other.buttons.1.0.2",
        "other.variables.internal.time",
        "hub.adapters.companion",  # needed for availability, not announced
    ],
)
def test_other_keys_announce_nothing(key: str) -> None:
    d = disc()
    assert d.messages(key, entry(key, {"text": "x", "state": "connected"}), None) == []
    assert d.messages(key, None, "old") == []


def test_wants() -> None:
    d = disc()
    assert d.wants(BUTTON)
    assert d.wants(VARIABLE)
    assert d.wants("hub.adapters.companion")
    assert not d.wants("hub.adapters.other")
    assert not d.wants("hub.adapters")
    assert not d.wants("companion.info")
    assert not d.wants("companion.buttonsX.1.0.2")
    assert not d.wants("other.buttons.1.0.2")


def test_other_namespace() -> None:
    d = disc(namespace="cmp2")
    assert d.wants("cmp2.buttons.1.0.0") and not d.wants(BUTTON)
    topic, cfg = one(d.messages("cmp2.buttons.3.1.4", entry("cmp2.buttons.3.1.4", {}), None))
    assert (
        topic
        == f"homeassistant/button/{_ident('companion-hub_cmp2')}/{_ident('cmp2.buttons.3.1.4')}/config"
    )
    assert cfg["command_topic"] == "companion-hub/command/cmp2/press"
    assert json.loads(cfg["payload_press"]) == {"location": "3/1/4"}


def test_distinct_variables_get_distinct_entities() -> None:
    d = disc()
    k1, k2 = "companion.variables.a_b.c", "companion.variables.a.b_c"
    t1, c1 = one(d.messages(k1, entry(k1, 1), None))
    t2, c2 = one(d.messages(k2, entry(k2, 2), None))
    assert t1 != t2
    assert c1["unique_id"] != c2["unique_id"]
