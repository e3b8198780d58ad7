"""Scenario files (TOML) and the built-in demo scenario.

A scenario is the Companion configuration the simulator starts from: pages of
buttons, custom and module variables, connections, the page shown to Satellite
devices and per-surface settings (variable bindings, brightness, page). The
format is documented with an example in docs/simulator.md.

A scenario file is input like any other: every field is checked for its type and
range before use, and anything wrong raises :class:`ScenarioError` naming the field,
never a TypeError, KeyError or the like (and nothing that would only fail later,
inside the running simulator, is let through).
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion_hub.adapters.companion.codec import FONT_SIZE_RANGE

from ..core.errors import CompanionHubError
from .model import (
    BUTTON_TYPES,
    Button,
    Connection,
    Feedback,
    Location,
    check_behaviour,
    format_duration,
    module_status,
    parse_color,
    parse_duration,
    value_text,
)


class ScenarioError(CompanionHubError, ValueError):
    """The scenario file is not valid; the message says where."""


# Bounds that keep every value usable by the simulator (and by the hub reading it).
MAX_PAGE = 9999
MAX_ROW_COLUMN = 999
_INT_RANGE = (-(2**63), 2**63 - 1)  # TOML's integers; a JSON document may hold more
_MAX_VALUE_DEPTH = 32
_VARIABLE_NAME = re.compile(r"[\w.-]{1,256}")
_PAGE_BEHAVIOUR = re.compile(r"page:([0-9]{1,4})")
_FEEDBACK_VARIABLE = re.compile(r"(?:([^:$()\s]+):)?([^:)$\s]+)")
MAX_FEEDBACKS = 64  # per button

_TOP_KEYS = frozenset(
    {"device_page", "pages", "custom_variables", "module_variables", "connections", "surfaces"}
)
_PAGE_KEYS = frozenset({"number", "name", "buttons"})
_CONNECTION_KEYS = frozenset({"id", "label", "moduleId", "enabled", "status"})
_STATUS_KEYS = ("category", "level", "message")
_SURFACE_KEYS = frozenset({"inputs", "outputs", "brightness", "page", "can_change_page"})
_FEEDBACK_KEYS = frozenset({"variable", "equals", "bgcolor", "color"})


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


def make_button(where: str, spec: Mapping[str, Any]) -> Button:
    """Build a Button from scenario/API fields (text, colours, font_size, type, behaviour)."""
    btn = Button()
    apply_button_fields(btn, spec, where)
    return btn


def apply_button_fields(btn: Button, fields: Mapping[str, Any], where: str = "button") -> None:
    """Validate and apply button fields in place (the rendered text and the active
    feedback are updated by the caller).

    Raises ScenarioError for an unknown field or a bad value; ``row`` and ``column``
    are accepted and ignored (the caller places the button).
    """
    for key, value in fields.items():
        if key == "text":
            if not isinstance(value, str):
                raise ScenarioError(f"{where}: text must be a string")
            btn.text = value
        elif key == "feedback":
            btn.feedbacks = _feedbacks(f"{where}.feedback", value)
        elif key in ("bgcolor", "color"):
            color = parse_color(value)
            if color is None:
                raise ScenarioError(f"{where}: {key} {_show(value)} is not a colour")
            setattr(btn, key, color)
        elif key == "font_size":
            lo, hi = FONT_SIZE_RANGE
            if value != "auto" and not (_is_int(value) and lo <= value <= hi):
                raise ScenarioError(f"{where}: font_size must be 'auto' or an integer {lo}..{hi}")
            btn.font_size = value
        elif key == "type":
            if not isinstance(value, str) or value not in BUTTON_TYPES:
                raise ScenarioError(f"{where}: type must be one of {', '.join(BUTTON_TYPES)}")
            btn.type = value
        elif key == "behaviour":
            btn.behaviour = _behaviour(where, value)
        elif key in ("row", "column"):
            continue
        else:
            raise ScenarioError(f"{where}: unknown button field {_show(key)}")
    btn.update_refs()


def _feedbacks(where: str, value: Any) -> tuple[Feedback, ...]:
    """``feedback``: one rule (a table) or a list of them, the first match winning."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_FEEDBACKS:
        raise ScenarioError(f"{where}: at most {MAX_FEEDBACKS} rules")
    out = []
    for i, item in enumerate(items):
        iwhere = f"{where}[{i}]" if isinstance(value, list) else where
        spec = _table(iwhere, item, _FEEDBACK_KEYS)
        variable = _str(f"{iwhere}.variable", spec.get("variable"), empty=False)
        m = _FEEDBACK_VARIABLE.fullmatch(variable) if len(variable) <= 512 else None
        if m is None:
            raise ScenarioError(
                f"{iwhere}.variable {_show(variable)} is not '<name>' (a custom variable) "
                "or '<label>:<name>'"
            )
        if "equals" not in spec:
            raise ScenarioError(f"{iwhere}: needs equals (the value that turns it on)")
        equals = spec["equals"]
        if not isinstance(equals, str | int | float | bool):
            raise ScenarioError(f"{iwhere}.equals must be a string, number or boolean")
        if _is_int(equals):
            _int(f"{iwhere}.equals", equals, *_INT_RANGE)
        colors: dict[str, int] = {}
        for key in ("bgcolor", "color"):
            if key in spec:
                color = parse_color(spec[key])
                if color is None:
                    raise ScenarioError(f"{iwhere}.{key} {_show(spec[key])} is not a colour")
                colors[key] = color
        if not colors:
            raise ScenarioError(f"{iwhere}: needs bgcolor or color")
        out.append(
            Feedback(
                variable=f"{m[1] or 'custom'}:{m[2]}",
                equals=value_text(equals) or "",
                bgcolor=colors.get("bgcolor"),
                color=colors.get("color"),
            )
        )
    return tuple(out)


def _behaviour(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: behaviour must be a string")
    try:
        behaviour = check_behaviour(value)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    m = _PAGE_BEHAVIOUR.fullmatch(behaviour)
    relative = behaviour in ("page:+1", "page:-1")
    if (
        behaviour.startswith("page:")
        and not relative
        and (m is None or not 1 <= int(m[1]) <= MAX_PAGE)
    ):
        raise ScenarioError(f"{where}: behaviour page:<n> needs a page 1..{MAX_PAGE}")
    return behaviour


# --- field checks ------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value for an error message, bounded."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(where: str, value: Any, minimum: int = 0, maximum: int = _INT_RANGE[1]) -> int:
    if not _is_int(value) or not minimum <= value <= maximum:
        raise ScenarioError(f"{where} must be an integer {minimum}..{maximum}")
    return int(value)


def _str(where: str, value: Any, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ScenarioError(f"{where} must be a {'' if empty else 'non-empty '}string")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where} must be true or false")
    return value


def _table(where: str, value: Any, keys: frozenset[str] | None = None) -> Mapping[str, Any]:
    """A table (dict with string keys), optionally only with the given keys."""
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where} must be a table")
    for key in value:
        if not isinstance(key, str):
            raise ScenarioError(f"{where}: key {_show(key)} is not a string")
        if keys is not None and key not in keys:
            raise ScenarioError(f"{where}: unknown key {_show(key)}")
    return value


def _array(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where} must be an array")
    return value


def _strings(where: str, value: Any) -> dict[str, str]:
    """A table of string values."""
    return {k: _str(f"{where}.{k}", v) for k, v in _table(where, value).items()}


def _variable_value(where: str, value: Any, depth: int = 0) -> Any:
    """A value a Companion variable can hold: what JSON can write (TOML dates are not)."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return _int(where, value, *_INT_RANGE)
    if depth >= _MAX_VALUE_DEPTH and isinstance(value, list | Mapping):
        raise ScenarioError(f"{where}: nested more than {_MAX_VALUE_DEPTH} levels deep")
    if isinstance(value, list):
        return [_variable_value(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {
            k: _variable_value(f"{where}.{k}", v, depth + 1)
            for k, v in _table(where, value).items()
        }
    raise ScenarioError(
        f"{where}: a {type(value).__name__} is not a variable value "
        "(use a string, number, boolean, array or table)"
    )


# --- sections -------------------------------------------------------------------------------


def scenario_from_dict(doc: Any) -> Scenario:
    """Build a Scenario from a parsed TOML (or JSON) document; raises ScenarioError only."""
    if not isinstance(doc, Mapping):
        raise ScenarioError("a scenario must be a table")
    unknown = [k for k in doc if k not in _TOP_KEYS]
    if unknown:
        raise ScenarioError(f"unknown top-level keys: {', '.join(sorted(map(_show, unknown)))}")
    sc = Scenario()
    sc.device_page = _int("device_page", doc.get("device_page", 1), 1, MAX_PAGE)
    for i, page in enumerate(_array("pages", doc.get("pages", []))):
        _load_page(sc, f"pages[{i}]", i, page)
    for name, value in _table("custom_variables", doc.get("custom_variables", {})).items():
        where = f"custom_variables.{_show(name)}"
        if not _VARIABLE_NAME.fullmatch(name):
            raise ScenarioError(f"{where}: a name is letters, digits, '_', '-' and '.'")
        sc.custom_variables[name] = _variable_value(where, value)
    for key, value in _table("module_variables", doc.get("module_variables", {})).items():
        label, sep, name = key.partition(":")
        if not sep or not label or not name:
            raise ScenarioError(f"module_variables: {_show(key)} is not '<connection>:<name>'")
        checked = _variable_value(f"module_variables.{_show(key)}", value)
        sc.module_variables.setdefault(label, {})[name] = checked
    for i, spec in enumerate(_array("connections", doc.get("connections", []))):
        sc.connections.append(_connection(f"connections[{i}]", spec))
    for surface_id, spec in _table("surfaces", doc.get("surfaces", {})).items():
        where = f"surfaces.{_show(surface_id)}"
        sc.surfaces[_str(where, surface_id, empty=False)] = _surface(where, spec)
    # a counter button needs its variable to exist (Companion: the user creates it first)
    for btn in sc.buttons.values():
        if btn.behaviour.startswith("counter:"):
            sc.custom_variables.setdefault(btn.behaviour.partition(":")[2], 0)
        elif btn.behaviour.startswith("set:"):
            name = btn.behaviour[4:].partition("=")[0]
            sc.custom_variables.setdefault(name, "")
        elif btn.behaviour.startswith("swap:"):
            for name in btn.behaviour[5:].split(","):
                sc.custom_variables.setdefault(name, "")
        elif btn.behaviour.startswith("timer-reset:"):
            name, _, start = btn.behaviour[12:].partition("=")
            sc.custom_variables.setdefault(name, format_duration(parse_duration(start) or 0))
    for btn in sc.buttons.values():  # after the resets, which say where a timer starts
        if btn.behaviour.startswith(("timer-start:", "timer-stop:")):
            sc.custom_variables.setdefault(btn.behaviour.partition(":")[2], "00:00")
    return sc


def _load_page(sc: Scenario, where: str, index: int, page: Any) -> None:
    page = _table(where, page, _PAGE_KEYS)
    number = _int(f"{where}.number", page.get("number", index + 1), 1, MAX_PAGE)
    sc.page_names[number] = _str(f"{where}.name", page.get("name", f"Page {number}"))
    for j, item in enumerate(_array(f"{where}.buttons", page.get("buttons", []))):
        bwhere = f"{where}.buttons[{j}]"
        spec = _table(bwhere, item)
        row = _int(f"{bwhere}.row", spec.get("row"), 0, MAX_ROW_COLUMN)
        col = _int(f"{bwhere}.column", spec.get("column"), 0, MAX_ROW_COLUMN)
        sc.buttons[(number, row, col)] = make_button(bwhere, spec)


def _connection(where: str, spec: Any) -> Connection:
    spec = _table(where, spec, _CONNECTION_KEYS)
    if "id" not in spec:
        raise ScenarioError(f"{where}: needs at least an id")
    conn_id = _str(f"{where}.id", spec["id"], empty=False)
    conn = Connection(
        id=conn_id,
        label=_str(f"{where}.label", spec.get("label", conn_id), empty=False),
        module_id=_str(f"{where}.moduleId", spec.get("moduleId", "generic-module")),
        enabled=_bool(f"{where}.enabled", spec.get("enabled", True)),
    )
    if "status" in spec:
        status = _table(f"{where}.status", spec["status"], frozenset(_STATUS_KEYS))
        texts = {k: _str(f"{where}.status.{k}", status.get(k, "")) for k in _STATUS_KEYS}
        conn.status = {k: (v or None) for k, v in texts.items()}
    elif not conn.enabled:
        conn.status = module_status(None, "Disabled")
    return conn


def _surface(where: str, spec: Any) -> SurfaceSettings:
    spec = _table(where, spec, _SURFACE_KEYS)
    page = spec.get("page")
    return SurfaceSettings(
        inputs=_strings(f"{where}.inputs", spec.get("inputs", {})),
        outputs=_strings(f"{where}.outputs", spec.get("outputs", {})),
        brightness=_int(f"{where}.brightness", spec.get("brightness", 100), 0, 100),
        page=None if page is None else _int(f"{where}.page", page, 1, MAX_PAGE),
        can_change_page=_bool(f"{where}.can_change_page", spec.get("can_change_page", False)),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario TOML file (raises ScenarioError, or OSError if it cannot be read)."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, or a value tomllib refuses
        raise ScenarioError(f"{path}: {exc}") from None
    try:
        return scenario_from_dict(doc)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


# the demo's tally colours: on program, on preview, neither
TALLY_PROGRAM = "#cc0000"
TALLY_PREVIEW = "#00aa00"
TALLY_OFF = "#333333"


def _tally(camera: str) -> list[dict[str, Any]]:
    """A camera button's feedback: red on program, else green on preview (else grey)."""
    return [
        {"variable": "program", "equals": camera, "bgcolor": TALLY_PROGRAM},
        {"variable": "preview", "equals": camera, "bgcolor": TALLY_PREVIEW},
    ]


def _demo_doc() -> dict[str, Any]:
    show: list[dict[str, Any]] = []
    for i in range(4):
        cam = f"CAM {i + 1}"
        # row 0 is the program bus (a press cuts the camera to program), row 1 the preview
        for row, variable in ((0, "program"), (1, "preview")):
            show.append(
                {
                    "row": row,
                    "column": i,
                    "text": cam,
                    "bgcolor": TALLY_OFF,
                    "behaviour": f"set:{variable}={cam}",
                    "feedback": _tally(cam),
                }
            )
    show += [
        {"row": 0, "column": 4, "text": "PGM\n$(custom:program)", "bgcolor": "#550000"},
        {"row": 0, "column": 5, "text": "ATEM\nin $(atem:program_input)"},
        {"row": 1, "column": 4, "text": "PVW\n$(custom:preview)", "bgcolor": "#005500"},
        {"row": 1, "column": 5, "text": "CUT", "behaviour": "swap:program,preview"},
        # a stage timer: counts down from 5:00 while running, red at 00:00
        {
            "row": 2,
            "column": 0,
            "text": "TIMER\n$(custom:timer)",
            "bgcolor": "#222222",
            "feedback": {"variable": "timer", "equals": "00:00", "bgcolor": TALLY_PROGRAM},
        },
        {
            "row": 2,
            "column": 1,
            "text": "START",
            "bgcolor": "#005500",
            "behaviour": "timer-start:timer",
        },
        {
            "row": 2,
            "column": 2,
            "text": "STOP",
            "bgcolor": "#550000",
            "behaviour": "timer-stop:timer",
        },
        {"row": 2, "column": 3, "text": "RESET\n05:00", "behaviour": "timer-reset:timer=05:00"},
        # a hub client's message (set_variable name=hub_message value=...)
        {"row": 2, "column": 4, "text": "MSG\n$(custom:hub_message)", "bgcolor": "#000066"},
        {"row": 2, "column": 5, "text": "$(internal:time_hms)", "font_size": 14},
    ]
    nav = [
        {"row": 0, "column": 7, "type": "PAGEUP"},
        {"row": 1, "column": 7, "type": "PAGENUM"},
        {"row": 2, "column": 7, "type": "PAGEDOWN"},
    ]
    return {
        "device_page": 1,
        "custom_variables": {
            "cue": 0,
            "program": "CAM 1",
            "preview": "CAM 2",
            "fader": "",
            "timer": "05:00",
            "hub_message": "",
        },
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
                    *show,
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
    """The built-in demo: a small show (program and preview buses with tally feedback, a
    CUT, a stage timer, a message from a hub client), a cue counter, a clock, a status
    page."""
    return scenario_from_dict(_demo_doc())
