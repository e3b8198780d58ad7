"""Home Assistant MQTT discovery for Companion's buttons and variables. Pure.

Following Home Assistant's discovery convention, each entity is announced by a
retained JSON config at ``<discovery prefix>/<component>/<node id>/<object id>/config``
and removed by an empty retained message there:

- a Companion button (``<ns>.buttons.<page>.<row>.<column>``) is a ``button`` entity
  whose press publishes ``{"location": "page/row/column"}`` to the bridge's
  ``<prefix>/command/<ns>/press``;
- a variable (``<ns>.variables.<connection>.<name>``) is a ``sensor`` whose state is
  read from the bridge's state topic (``value_template: {{ value_json.value }}``).

Every entity is available only while both the bridge (``<prefix>/status``) and the
Companion adapter (``hub.adapters.<adapter>``'s state is ``connected``) are
(``availability_mode: all``). The entity's name is the button's text when it was
announced (re-announced when the text changes) or the variable's name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ...core.store import Entry
from ...protocol import encode as wire
from .topics import STATE, STATUS, key_topic

Message = tuple[str, bytes]

_NODE_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class Discovery:
    """The discovery messages for one bridge and one Companion namespace."""

    def __init__(self, *, prefix: str, discovery_prefix: str, namespace: str, adapter: str) -> None:
        self.prefix = prefix
        self.discovery_prefix = discovery_prefix
        self.namespace = namespace
        self.adapter = adapter
        self.node = _ident(f"{prefix}_{namespace}")
        self._buttons = f"{namespace}.buttons."
        self._variables = f"{namespace}.variables."
        self.adapter_key = f"hub.adapters.{adapter}"

    def wants(self, key: str) -> bool:
        """Is ``key`` announced (or needed by an announcement)?"""
        return (
            key.startswith(self._buttons) or key.startswith(self._variables)
        ) or key == self.adapter_key

    def messages(self, key: str, entry: Entry | None, old_name: str | None) -> list[Message]:
        """The config message for ``key`` in its new state (an empty payload removes
        the entity). ``old_name`` is the name announced last (None: not announced);
        nothing is sent when the name is unchanged."""
        kind = self._kind(key)
        if kind is None:
            return []
        topic = self.config_topic(kind, key)
        if entry is None:
            return [] if old_name is None else [(topic, b"")]
        name = self.name(kind, key, entry)
        if name == old_name:
            return []
        return [(topic, wire.encode(self.config(kind, key, name)))]

    def _kind(self, key: str) -> str | None:
        if key.startswith(self._buttons) and key.count(".") == self._buttons.count(".") + 2:
            return "button"
        if key.startswith(self._variables) and key.count(".") == self._variables.count(".") + 1:
            return "sensor"
        return None

    def config_topic(self, kind: str, key: str) -> str:
        object_id = _ident(key)
        return f"{self.discovery_prefix}/{kind}/{self.node}/{object_id}/config"

    def name(self, kind: str, key: str, entry: Entry) -> str:
        rest = key.split(".")
        if kind == "button":
            page, row, col = rest[-3:]
            text = ""
            value = wire.decode_value(entry.raw)
            if isinstance(value, dict) and isinstance(value.get("text"), str):
                text = " ".join(value["text"].split())[:60]
            return f"{page}/{row}/{col} {text}".strip()
        return f"{rest[-2]}:{rest[-1]}"

    def config(self, kind: str, key: str, name: str) -> dict[str, Any]:
        object_id = _ident(key)
        cfg: dict[str, Any] = {
            "name": name,
            "unique_id": f"{self.node}_{object_id}",
            "object_id": object_id,
            "availability": [
                {
                    "topic": f"{self.prefix}/{STATUS}",
                    "payload_available": "online",
                    "payload_not_available": "offline",
                },
                {
                    "topic": key_topic(self.prefix, STATE, self.adapter_key),
                    "value_template": (
                        "{{ 'online' if value_json.value.state == 'connected' "
                        "and not value_json.stale else 'offline' }}"
                    ),
                },
            ],
            "availability_mode": "all",
            "device": {
                "identifiers": [self.node],
                "name": f"Companion ({self.namespace})",
                "manufacturer": "Bitfocus",
                "model": "Companion via companion-hub",
            },
        }
        if kind == "button":
            page, row, col = key.split(".")[-3:]
            cfg["command_topic"] = f"{self.prefix}/command/{self.namespace}/press"
            cfg["payload_press"] = wire.encode({"location": f"{page}/{row}/{col}"}).decode()
            cfg["icon"] = "mdi:gesture-tap-button"
        else:
            cfg["state_topic"] = key_topic(self.prefix, STATE, key)
            cfg["value_template"] = "{{ value_json.value }}"
        return cfg


def _ident(text: str) -> str:
    """An id Home Assistant accepts (``[A-Za-z0-9_-]``) that is unique per ``text``:
    the readable part (dots and other characters as ``_``) plus a short hash, so that
    ``a.b_c`` and ``a_b.c`` stay two entities."""
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{_NODE_CHARS.sub('_', text)}_{digest}"
