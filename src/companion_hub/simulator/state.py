"""The simulated Companion's live state and how it reacts, without I/O.

:class:`CompanionState` holds what a Companion user configures and what changes while
it runs: buttons and their presses, custom, module and internal variables, module
connections, and surfaces (Satellite devices, their stored settings and pages). Every
change a Satellite client can see goes to the live sessions (``_sessions()``): a
re-rendered location, changed variables, a device's new page. The listeners, the
connections themselves and fault injection are :class:`~.core.CompanionSimulator`'s.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from companion_hub.adapters.companion.codec import parse_version

from .model import (
    UNDEFINED,
    Button,
    Connection,
    Location,
    Look,
    format_duration,
    format_location,
    js_number,
    module_status,
    parse_duration,
    render_template,
    template_refs,
    value_text,
)
from .scenario import Scenario, SurfaceSettings, apply_button_fields, demo_scenario

if TYPE_CHECKING:
    from .satellite import Device, SatelliteSession

log = logging.getLogger("companion_hub.simulator")

MAX_PRESS_RECORDS = 10_000
# the internal variables that change with time (the clock re-checks them every second)
_TICKING = ("time_hms", "time_hm", "time_h", "time_m", "time_s", "time_unix", "uptime")
_SINGLE_REF = re.compile(r"^\$\(([^:$()\s]+):([^)$\s]+)\)$")


@dataclass(frozen=True)
class PressRecord:
    """One press, release or rotation that reached the simulator."""

    location: str  # "page/row/column"
    action: str  # "down" | "up" | "rotate"
    amount: float | None  # rotation steps (signed), None for down/up
    source: str  # "http", "satellite-device:<id>", "satellite-sub:<conn>:<subid>"
    t: float  # time.monotonic()


class CompanionState:
    """Buttons, variables, connections and surfaces of one simulated Companion."""

    def __init__(
        self,
        scenario: Scenario | None,
        *,
        subscriptions: bool,
        api_version: str,
        companion_version: str,
    ) -> None:
        sc = (scenario if scenario is not None else demo_scenario()).copy()
        self.subscriptions = subscriptions  # the "Button Subscriptions API" setting
        self.api_version = api_version
        self.api = parse_version(api_version)
        self.companion_version = companion_version
        self.buttons: dict[Location, Button] = sc.buttons
        self.page_names: dict[int, str] = sc.page_names
        self.custom_variables: dict[str, Any] = sc.custom_variables
        self.module_variables: dict[str, dict[str, Any]] = sc.module_variables
        self.connections: dict[str, Connection] = {c.id: c for c in sc.connections}
        self.device_page = sc.device_page
        self.surfaces: dict[str, SurfaceSettings] = sc.surfaces
        self.presses: list[PressRecord] = []
        self._devices_by_id: dict[str, Device] = {}
        self._surface_ids: set[str] = set()
        self._started_at = time.monotonic()
        self._internal_last: dict[str, str | None] = {}  # last text of each _TICKING variable
        self._variable_listeners: list[Callable[[frozenset[str]], None]] = []
        # running countdown timers: custom variable -> (monotonic end, the text last set)
        self.timers: dict[str, tuple[float, str]] = {}
        for loc, btn in self.buttons.items():
            self._render(loc, btn)

    def _sessions(self) -> list[SatelliteSession]:
        """The live Satellite sessions: they see every change. None without I/O."""
        return []

    def _restarted(self) -> None:
        """After a restart: press and latch state reset, timers stopped, uptime from 0
        (variables stay)."""
        self._started_at = time.monotonic()
        self.timers.clear()
        for loc, btn in self.buttons.items():
            if btn.held_by or btn.latched:
                btn.held_by.clear()
                btn.latched = False
                self._emit(loc)
        self._tick()

    # --- surfaces and devices (called by the Satellite sessions) ------------------

    def _device_owner(self, device_id: str) -> SatelliteSession | None:
        dev = self._devices_by_id.get(device_id)
        return dev.session if dev is not None else None

    def _allocate_surface_id(self, base: str, unique: bool) -> str:
        if unique and base not in self._surface_ids:
            return base
        n = 1
        while f"{base}-dev{n}" in self._surface_ids:
            n += 1
        return f"{base}-dev{n}"

    def _register_device(self, dev: Device) -> None:
        self._devices_by_id[dev.device_id] = dev
        self._surface_ids.add(dev.surface_id)

    def _unregister_device(self, dev: Device) -> None:
        if self._devices_by_id.get(dev.device_id) is dev:
            del self._devices_by_id[dev.device_id]
        self._surface_ids.discard(dev.surface_id)

    def devices(self) -> list[Device]:
        """Every registered Satellite device."""
        return list(self._devices_by_id.values())

    def surface_settings(self, surface_id: str) -> SurfaceSettings:
        """The stored settings of a surface id (created with defaults on first use)."""
        settings = self.surfaces.get(surface_id)
        if settings is None:
            settings = self.surfaces[surface_id] = SurfaceSettings()
        return settings

    def bind_input(self, surface_id: str, input_id: str, custom_variable: str | None) -> None:
        """Bind a device's declared input to a custom variable (as the user would)."""
        inputs = self.surface_settings(surface_id).inputs
        if custom_variable is None:
            inputs.pop(input_id, None)
        else:
            inputs[input_id] = custom_variable

    def bind_output(self, surface_id: str, output_id: str, expression: str | None) -> None:
        """Set an output's expression. Like Companion, this does not re-evaluate it."""
        outputs = self.surface_settings(surface_id).outputs
        if expression is None:
            outputs.pop(output_id, None)
        else:
            outputs[output_id] = expression

    def set_device_page(self, device_id: str, page: int) -> None:
        """Show another page on a device (full redraw)."""
        dev = self._devices_by_id.get(device_id)
        if dev is None:
            raise KeyError(device_id)
        self._set_page(dev, page)

    def change_device_page(self, dev: Device, spec: str) -> None:
        """``+1`` / ``-1`` (wrapping over the pages that exist) or an absolute page."""
        last = max([*self.page_names, *(loc[0] for loc in self.buttons), 1])
        if spec == "+1":
            page = dev.page % last + 1
        elif spec == "-1":
            page = (dev.page - 2) % last + 1
        else:
            page = int(spec)
        self._set_page(dev, page)

    def _set_page(self, dev: Device, page: int) -> None:
        if page == dev.page:
            return
        dev.page = page
        self.surface_settings(dev.surface_id).page = page
        log.info("device page changed", extra={"device_id": dev.device_id, "page": page})
        dev.session.redraw(dev)
        dev.session.variables_changed(frozenset({"this:page", "this:page_name"}), only=dev)

    # --- buttons ------------------------------------------------------------------

    def button(self, page: int, row: int, col: int) -> Button | None:
        return self.buttons.get((page, row, col))

    def set_button(self, page: int, row: int, col: int, **fields: Any) -> Button:
        """Change (or create) a button; whoever shows it gets a new SUB-STATE/KEY-STATE.

        Fields: text, bgcolor, color, font_size, type, behaviour (as in a scenario).
        """
        loc = (page, row, col)
        btn = self.buttons.get(loc)
        if btn is None:
            btn = Button()
        apply_button_fields(btn, fields, f"button {format_location(loc)}")
        self.buttons[loc] = btn
        self._render(loc, btn)
        self._emit(loc)
        return btn

    def remove_button(self, page: int, row: int, col: int) -> None:
        """Delete a button: subscribers and devices then see an empty render."""
        if self.buttons.pop((page, row, col), None) is not None:
            self._emit((page, row, col))

    def look_at(self, loc: Location) -> Look:
        btn = self.buttons.get(loc)
        return btn.look() if btn is not None else Look()

    def _emit(self, loc: Location) -> None:
        for session in self._sessions():
            session.location_changed(loc)

    def _render(self, loc: Location, btn: Button) -> None:
        """Render the text and pick the active feedback (the caller emits the change)."""
        btn.rendered_text = self._render_text(loc, btn)
        btn.apply_feedbacks(self.variable_value)

    def _render_text(self, loc: Location, btn: Button) -> str:
        def lookup(label: str, name: str) -> Any:
            if label == "this":
                return {
                    "page": loc[0],
                    "row": loc[1],
                    "column": loc[2],
                    "page_name": self.page_names.get(loc[0], f"Page {loc[0]}"),
                }.get(name, UNDEFINED)
            return self.variable_value(label, name)

        return render_template(btn.text, lookup)

    # --- presses ------------------------------------------------------------------

    def _record(self, loc: Location, action: str, amount: float | None, source: str) -> None:
        self.presses.append(
            PressRecord(format_location(loc), action, amount, source, time.monotonic())
        )
        if len(self.presses) > MAX_PRESS_RECORDS:
            del self.presses[: len(self.presses) - MAX_PRESS_RECORDS]
        log.debug(
            "press",
            extra={"location": format_location(loc), "action": action, "source": source},
        )

    def has_control(self, loc: Location) -> bool:
        return loc in self.buttons

    def press(self, loc: Location, down: bool, source: str = "api") -> bool:
        """Press or release a location as ``source``; False if no control is there."""
        return self._press(loc, down, source, None)

    def _press(self, loc: Location, down: bool, source: str, dev: Device | None) -> bool:
        self._record(loc, "down" if down else "up", None, source)
        btn = self.buttons.get(loc)
        if btn is None:
            return False
        if btn.type != "BUTTON":
            if down and dev is not None:
                if btn.type == "PAGEUP":
                    self.change_device_page(dev, "+1")
                elif btn.type == "PAGEDOWN":
                    self.change_device_page(dev, "-1")
                else:
                    self._set_page(dev, self.device_page)
            return True
        before = btn.look()
        behaviour = btn.behaviour
        if down:
            btn.held_by.add(source)
            if behaviour == "latch":
                btn.latched = not btn.latched
            elif behaviour.startswith("counter:"):
                self._add_to_variable(behaviour[8:], 1)
            elif behaviour.startswith("set:"):
                name, _, value = behaviour[4:].partition("=")
                self.set_custom_variable(name, value)
            elif behaviour.startswith("swap:"):
                a, _, b = behaviour[5:].partition(",")
                va, vb = self.custom_variables.get(a, ""), self.custom_variables.get(b, "")
                self.set_custom_variable(a, vb)
                self.set_custom_variable(b, va)
            elif behaviour.startswith("timer-"):
                self._timer_press(behaviour)
            elif behaviour.startswith("page:") and dev is not None:
                self.change_device_page(dev, behaviour[5:])
        else:
            btn.held_by.discard(source)
        if btn.look() != before:
            self._emit(loc)
        return True

    def rotate(self, loc: Location, amount: float, source: str = "api") -> bool:
        """Rotate a location by ``amount`` steps as ``source``; False if no control is there."""
        self._record(loc, "rotate", amount, source)
        btn = self.buttons.get(loc)
        if btn is None:
            return False
        if btn.behaviour.startswith("counter:"):
            self._add_to_variable(btn.behaviour[8:], amount)
        return True

    def set_step(self, loc: Location, step: float) -> bool | None:
        """HTTP ``step``: None when the control has no steps, False for a bad step."""
        btn = self.buttons.get(loc)
        if btn is None or btn.steps == 0:
            return None
        if not step.is_integer() or not 1 <= step <= btn.steps:
            return False
        if btn.behaviour == "latch":
            latched = step == 2
            if latched != btn.latched:
                btn.latched = latched
                self._emit(loc)
        return True

    def _add_to_variable(self, name: str, amount: float) -> None:
        current = self.custom_variables.get(name, 0)
        if isinstance(current, str):
            parsed = js_number(current)
            current = parsed if parsed is not None else 0
        if isinstance(current, bool) or not isinstance(current, int | float):
            current = 0
        total = current + amount
        if isinstance(total, float) and total.is_integer():
            total = int(total)
        self.set_custom_variable(name, total)

    # --- variables ----------------------------------------------------------------

    def set_custom_variable(self, name: str, value: Any) -> None:
        """Set (or create) a custom variable; buttons and outputs referencing it update."""
        old = self.custom_variables.get(name, UNDEFINED)
        exists = name in self.custom_variables
        self.custom_variables[name] = value
        if exists and type(old) is type(value) and old == value:
            return
        self._variables_changed({f"custom:{name}", f"internal:custom_{name}"})

    def set_module_variable(self, label: str, name: str, value: Any) -> None:
        """Set a module (connection) variable ``$(label:name)``."""
        values = self.module_variables.setdefault(label, {})
        old = values.get(name, UNDEFINED)
        values[name] = value
        if type(old) is type(value) and old == value:
            return
        self._variables_changed({f"{label}:{name}"})

    def variable_value(self, label: str, name: str) -> Any:
        """The value of ``$(label:name)`` or UNDEFINED (the HTTP ``/api/variable`` lookup)."""
        if label == "custom":
            return self.custom_variables.get(name, UNDEFINED)
        if label == "internal":
            if name.startswith("custom_"):
                return self.custom_variables.get(name[7:], UNDEFINED)
            return self._internal(name)
        return self.module_variables.get(label, {}).get(name, UNDEFINED)

    def _internal(self, name: str) -> Any:
        now = time.localtime()
        if name == "time_hms":
            return time.strftime("%H:%M:%S", now)
        if name == "time_hm":
            return time.strftime("%H:%M", now)
        if name == "time_h":
            return time.strftime("%H", now)
        if name == "time_m":
            return time.strftime("%M", now)
        if name == "time_s":
            return time.strftime("%S", now)
        if name == "time_unix":
            return int(time.time())
        if name == "date_iso":
            return time.strftime("%Y-%m-%d", now)
        if name == "uptime":
            return int(time.monotonic() - self._started_at)
        if name in ("instance_errors", "instance_warns", "instance_oks", "instance_disabled"):
            want = {
                "instance_errors": "error",
                "instance_warns": "warning",
                "instance_oks": "good",
            }.get(name)
            count = 0
            for conn in self.connections.values():
                if name == "instance_disabled":
                    count += not conn.enabled
                elif conn.enabled and conn.status and conn.status.get("category") == want:
                    count += 1
            return count
        return UNDEFINED

    def _variables_changed(self, names: set[str]) -> None:
        frozen = frozenset(names)
        for loc, btn in list(self.buttons.items()):
            if btn.refs & frozen:
                before = btn.look()
                self._render(loc, btn)
                if btn.look() != before:
                    self._emit(loc)
        for session in self._sessions():
            session.variables_changed(frozen)
        for listener in list(self._variable_listeners):
            listener(frozen)

    def add_variable_listener(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call ``listener`` with the names (``label:name``) of every variable change."""
        self._variable_listeners.append(listener)

    def remove_variable_listener(self, listener: Callable[[frozenset[str]], None]) -> None:
        if listener in self._variable_listeners:
            self._variable_listeners.remove(listener)

    def evaluate_expression(
        self, expr: str, dev: Device | None
    ) -> tuple[str | None, frozenset[str]]:
        """An output binding's value text (None = no value) and the variables it uses."""
        refs = template_refs(expr)

        def lookup(label: str, name: str) -> Any:
            if label == "this" and dev is not None:
                return {
                    "page": dev.page,
                    "page_name": self.page_names.get(dev.page, f"Page {dev.page}"),
                    "surface_id": dev.surface_id,
                }.get(name, UNDEFINED)
            return self.variable_value(label, name)

        if not expr.strip():
            return None, refs
        m = _SINGLE_REF.match(expr.strip())
        if m:
            return value_text(lookup(m.group(1), m.group(2))), refs
        return render_template(expr, lookup), refs

    def _remember_ticking(self) -> None:
        """Take the clock variables' texts as they are: the next tick reports changes."""
        self._internal_last = {n: value_text(self._internal(n)) for n in _TICKING}

    def _tick(self) -> None:
        changed: set[str] = set()
        for name in _TICKING:
            text = value_text(self._internal(name))
            if self._internal_last.get(name) != text:
                self._internal_last[name] = text
                changed.add(f"internal:{name}")
        if changed:
            self._variables_changed(changed)
        self._tick_timers()

    # --- countdown timers (behaviours timer-start/-stop/-reset) -------------------

    def _timer_press(self, behaviour: str) -> None:
        action, _, rest = behaviour[6:].partition(":")
        name, _, start = rest.partition("=")
        if action == "start":
            self.start_timer(name)
        elif action == "stop":
            self.timers.pop(name, None)
        else:  # reset: stop and set the start value
            self.timers.pop(name, None)
            self.set_custom_variable(name, format_duration(parse_duration(start) or 0))

    def start_timer(self, name: str) -> None:
        """Count custom variable ``name`` (``mm:ss``) down once a second (with the clock)
        until ``00:00``; a value set meanwhile is counted down from. No-op when running
        or when the value is not a duration."""
        if name in self.timers:
            return
        seconds = parse_duration(self.custom_variables.get(name))
        if seconds is None or seconds <= 0:
            return
        text = format_duration(seconds)
        self.timers[name] = (time.monotonic() + seconds, text)
        self.set_custom_variable(name, text)

    def _tick_timers(self) -> None:
        now = time.monotonic()
        for name, (timer_end, last) in list(self.timers.items()):
            end = timer_end
            current = self.custom_variables.get(name)
            if current != last:  # someone set it: count down from there
                seconds = parse_duration(current)
                if seconds is None:
                    del self.timers[name]
                    continue
                end = now + seconds
            remaining = max(0, math.ceil(end - now - 1e-6))
            text = format_duration(remaining)
            if remaining == 0:
                del self.timers[name]
            else:
                self.timers[name] = (end, text)
            self.set_custom_variable(name, text)

    # --- connections --------------------------------------------------------------

    def set_connection_status(
        self, conn_id: str, category: str | None, level: str | None, message: str | None = None
    ) -> None:
        conn = self.connections[conn_id]
        conn.status = {"category": category, "level": level, "message": message}
        log.info(
            "connection status",
            extra={"connection": conn_id, "category": category, "level": level},
        )
        self._variables_changed(
            {"internal:instance_errors", "internal:instance_warns", "internal:instance_oks"}
        )

    def set_connection_enabled(self, conn_id: str, enabled: bool) -> None:
        conn = self.connections[conn_id]
        if conn.enabled == enabled:
            return
        conn.enabled = enabled
        conn.status = module_status("ok" if enabled else None, None if enabled else "Disabled")
        self._variables_changed(
            {
                "internal:instance_errors",
                "internal:instance_warns",
                "internal:instance_oks",
                "internal:instance_disabled",
            }
        )
