"""The state key layout of a Companion namespace, defined once.

| key | value |
| --- | --- |
| ``<ns>.info`` | ``{"companion_version", "api_version", "capabilities", "subscriptions", "mode"}`` |
| ``<ns>.buttons.<page>.<row>.<column>`` | ``{"text", "bgcolor", "color", "pressed", "type", "font_size"[, "image"]}`` |
| ``<ns>.variables.custom.<name>`` | the custom variable's value |
| ``<ns>.variables.<connection>.<name>`` | a module (or ``internal``) variable's value |
| ``<ns>.connections.<label>`` | ``{"id", "module", "enabled", "status": {"category", "level", "message"}}`` |
| ``<ns>.surfaces.<device id>`` | ``{"page", "brightness", "mode"}`` of the hub's virtual surface |
| ``<ns>.surfaces.<device id>.outputs.<id>`` | a transferable output value (text) |
| ``<ns>.surfaces.<device id>.inputs.<id>`` | the last value the hub set for a transferable input |

Names that cannot be key segments (anything outside ``[A-Za-z0-9_-]``) are skipped
with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.keys import is_valid_segment


def valid_segment(name: str) -> bool:
    return is_valid_segment(name)


@dataclass(frozen=True)
class Layout:
    namespace: str = "companion"

    @property
    def info(self) -> str:
        return f"{self.namespace}.info"

    @property
    def buttons(self) -> str:
        return f"{self.namespace}.buttons"

    @property
    def variables(self) -> str:
        return f"{self.namespace}.variables"

    @property
    def connections(self) -> str:
        return f"{self.namespace}.connections"

    @property
    def surfaces(self) -> str:
        return f"{self.namespace}.surfaces"

    def button(self, page: int, row: int, column: int) -> str:
        return f"{self.buttons}.{page}.{row}.{column}"

    def button_page(self, page: int) -> str:
        return f"{self.buttons}.{page}"

    def variable(self, connection: str, name: str) -> str | None:
        if not (valid_segment(connection) and valid_segment(name)):
            return None
        return f"{self.variables}.{connection}.{name}"

    def connection(self, label: str) -> str | None:
        return f"{self.connections}.{label}" if valid_segment(label) else None

    def surface(self, device_id: str) -> str:
        return f"{self.surfaces}.{device_id}"

    def surface_output(self, device_id: str, var: str) -> str | None:
        return f"{self.surfaces}.{device_id}.outputs.{var}" if valid_segment(var) else None

    def surface_input(self, device_id: str, var: str) -> str | None:
        return f"{self.surfaces}.{device_id}.inputs.{var}" if valid_segment(var) else None
