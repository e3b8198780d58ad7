"""Scenario files (TOML) and the built-in demo scenario.

A scenario is the Companion configuration the simulator starts from: pages of
buttons, custom and module variables, connections, the page shown to Satellite
devices and per-surface settings (variable bindings, brightness, page). The
format is documented with an example in docs/simulator.md.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import (
    BUTTON_TYPES,
    Button,
    Connection,
    Location,
    check_behaviour,
    module_status,
    parse_color,
    template_refs,
)


class ScenarioError(ValueError):
    """The scenario file is not valid; the message says where."""


@dataclass
class SurfaceSettings:
    """What a Companion user configured for one surface id (kept across reconnects)."""

    inputs: dict[str, str] = field(default_factory=dict)  # input id -> custom variable
    outputs: dict[str, str] = field(default_factory=dict)  # output id -> expression
    brightness: int = 100
    page: int | None = None
    can_change_page: bool = False  # the CAN_CHANGE_PAGE checkbox


@dataclass
class Scenario:
    buttons: dict[Location, Button] = field(default_factory=dict)
    page_names: dict[int, str] = field(default_factory=dict)
    custom_variables: dict[str, Any] = field(default_factory=dict)
    module_variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    device_page: int = 1
    surfaces: dict[str, SurfaceSettings] = field(default_factory=dict)

    def copy(self) -> Scenario:
        return copy.deepcopy(self)


_BUTTON_KEYS = {"row", "column", "text", "bgcolor", "color", "font_size", "behaviour", "type"}


def make_button(where: str, spec: dict[str, Any]) -> Button:
    """Build a Button from scenario/API fields (text, colours, font_size, type, behaviour)."""
    btn = Button()
    apply_button_fields(btn, spec, where)
    return btn


def apply_button_fields(btn: Button, fields: dict[str, Any], where: str = "button") -> None:
    """Validate and apply button fields in place (the rendered text is updated by the caller)."""
    for key, value in fields.items():
        if key == "text":
            if not isinstance(value, str):
                raise ScenarioError(f"{where}: text must be a string")
            btn.text = value
            btn.refs = template_refs(value)
        elif key in ("bgcolor", "color"):
            color = parse_color(value)
            if color is None:
                raise ScenarioError(f"{where}: {key} {value!r} is not a colour")
            setattr(btn, key, color)
        elif key == "font_size":
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ScenarioError(f"{where}: font_size must be 'auto' or an integer")
            btn.font_size = value
        elif key == "type":
            if value not in BUTTON_TYPES:
                raise ScenarioError(f"{where}: type must be one of {', '.join(BUTTON_TYPES)}")
            btn.type = value
        elif key == "behaviour":
            try:
                btn.behaviour = check_behaviour(str(value))
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from None
        elif key in ("row", "column"):
            continue
        else:
            raise ScenarioError(f"{where}: unknown button field {key!r}")


def _int(where: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{where} must be an integer >= {minimum}")
    return value


def scenario_from_dict(doc: dict[str, Any]) -> Scenario:
    """Build a Scenario from a parsed TOML document (raises ScenarioError)."""
    known = {
        "device_page",
        "pages",
        "custom_variables",
        "module_variables",
        "connections",
        "surfaces",
    }
    unknown = set(doc) - known
    if unknown:
        raise ScenarioError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    sc = Scenario()
    sc.device_page = _int("device_page", doc.get("device_page", 1), 1)
    for i, page in enumerate(doc.get("pages", [])):
        where = f"pages[{i}]"
        if not isinstance(page, dict):
            raise ScenarioError(f"{where} must be a table")
        number = _int(f"{where}.number", page.get("number", i + 1), 1)
        sc.page_names[number] = str(page.get("name", f"Page {number}"))
        for j, spec in enumerate(page.get("buttons", [])):
            bwhere = f"{where}.buttons[{j}]"
            if not isinstance(spec, dict):
                raise ScenarioError(f"{bwhere} must be a table")
            row = _int(f"{bwhere}.row", spec.get("row"))
            col = _int(f"{bwhere}.column", spec.get("column"))
            sc.buttons[(number, row, col)] = make_button(bwhere, spec)
    customs = doc.get("custom_variables", {})
    if not isinstance(customs, dict):
        raise ScenarioError("custom_variables must be a table")
    sc.custom_variables = dict(customs)
    modules = doc.get("module_variables", {})
    if not isinstance(modules, dict):
        raise ScenarioError("module_variables must be a table")
    for key, value in modules.items():
        label, sep, name = key.partition(":")
        if not sep or not label or not name:
            raise ScenarioError(f"module_variables: {key!r} is not '<connection>:<name>'")
        sc.module_variables.setdefault(label, {})[name] = value
    for i, spec in enumerate(doc.get("connections", [])):
        where = f"connections[{i}]"
        try:
            conn = Connection(
                id=str(spec["id"]),
                label=str(spec.get("label", spec["id"])),
                module_id=str(spec.get("moduleId", "generic-module")),
                enabled=bool(spec.get("enabled", True)),
            )
        except (KeyError, TypeError):
            raise ScenarioError(f"{where}: needs at least an id") from None
        status = spec.get("status")
        if isinstance(status, dict):
            conn.status = {
                k: (None if status.get(k) in (None, "") else str(status.get(k)))
                for k in ("category", "level", "message")
            }
        elif not conn.enabled:
            conn.status = module_status(None, "Disabled")
        sc.connections.append(conn)
    for surface_id, spec in doc.get("surfaces", {}).items():
        where = f"surfaces.{surface_id}"
        if not isinstance(spec, dict):
            raise ScenarioError(f"{where} must be a table")
        page = spec.get("page")
        sc.surfaces[surface_id] = SurfaceSettings(
            inputs={str(k): str(v) for k, v in spec.get("inputs", {}).items()},
            outputs={str(k): str(v) for k, v in spec.get("outputs", {}).items()},
            brightness=_int(f"{where}.brightness", spec.get("brightness", 100)),
            page=None if page is None else _int(f"{where}.page", page, 1),
            can_change_page=bool(spec.get("can_change_page", False)),
        )
    # a counter button needs its variable to exist (Companion: the user creates it first)
    for btn in sc.buttons.values():
        if btn.behaviour.startswith("counter:"):
            sc.custom_variables.setdefault(btn.behaviour.partition(":")[2], 0)
        elif btn.behaviour.startswith("set:"):
            name = btn.behaviour[4:].partition("=")[0]
            sc.custom_variables.setdefault(name, "")
    return sc


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file (raises ScenarioError or OSError)."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    try:
        return scenario_from_dict(doc)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _demo_doc() -> dict[str, Any]:
    cams: list[dict[str, Any]] = []
    tally = ["#cc0000", "#00aa00", "#333333", "#333333"]
    for i in range(4):
        cams.append(
            {
                "row": 0,
                "column": i,
                "text": f"CAM {i + 1}",
                "bgcolor": tally[i],
                "behaviour": f"set:program=CAM {i + 1}",
            }
        )
    nav = [
        {"row": 0, "column": 7, "type": "PAGEUP"},
        {"row": 1, "column": 7, "type": "PAGENUM"},
        {"row": 2, "column": 7, "type": "PAGEDOWN"},
    ]
    return {
        "device_page": 1,
        "custom_variables": {"cue": 0, "program": "CAM 1", "preview": "CAM 2", "fader": ""},
        "module_variables": {
            "atem:program_input": 1,
            "atem:preview_input": 2,
            "obs:current_scene": "Wide",
            "obs:stream_status": "off air",
        },
        "connections": [
            {"id": "conn-atem", "label": "atem", "moduleId": "bmd-atem"},
            {"id": "conn-obs", "label": "obs", "moduleId": "obs-studio"},
            {"id": "conn-http", "label": "http", "moduleId": "generic-http", "enabled": False},
        ],
        "pages": [
            {
                "number": 1,
                "name": "Cameras",
                "buttons": [
                    *cams,
                    {"row": 1, "column": 0, "text": "PGM\n$(custom:program)", "bgcolor": "#550000"},
                    {"row": 1, "column": 1, "text": "PVW\n$(custom:preview)", "bgcolor": "#005500"},
                    {"row": 1, "column": 2, "text": "ATEM\nin $(atem:program_input)"},
                    {"row": 2, "column": 0, "text": "$(internal:time_hms)", "font_size": 14},
                    *nav,
                ],
            },
            {
                "number": 2,
                "name": "Show",
                "buttons": [
                    {
                        "row": 0,
                        "column": 0,
                        "text": "CUE\n$(custom:cue)",
                        "bgcolor": "#0000aa",
                        "behaviour": "counter:cue",
                    },
                    {
                        "row": 0,
                        "column": 1,
                        "text": "REC",
                        "bgcolor": "#aa0000",
                        "behaviour": "latch",
                    },
                    {"row": 0, "column": 2, "text": "RESET", "behaviour": "set:cue=0"},
                    {"row": 1, "column": 0, "text": "$(internal:time_hms)", "font_size": 18},
                    {"row": 1, "column": 1, "text": "UP $(internal:uptime)s", "font_size": 14},
                    *nav,
                ],
            },
            {
                "number": 3,
                "name": "Status",
                "buttons": [
                    {"row": 0, "column": 0, "text": "OBS\n$(obs:current_scene)"},
                    {"row": 0, "column": 1, "text": "$(obs:stream_status)", "color": "#ffff00"},
                    {"row": 0, "column": 2, "text": "HOME", "behaviour": "page:1"},
                    *nav,
                ],
            },
        ],
    }


def demo_scenario() -> Scenario:
    """The built-in demo: cameras with tally colours, a cue counter, a clock, status page."""
    return scenario_from_dict(_demo_doc())
