"""What a Satellite connection registers: devices (surfaces) and button subscriptions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model import Location, RenderStyle

if TYPE_CHECKING:
    from .session import SatelliteSession

# How KEY-STATE names a control: ("KEY", index) in grid mode, ("CONTROLID", id) with a
# layout manifest.
ControlRef = tuple[str, Any]


@dataclass
class Control:
    """One control of a layout manifest: where it is and what it wants to receive."""

    row: int
    column: int
    style: RenderStyle


@dataclass(eq=False)
class Device:
    """A registered Satellite device (a surface).

    Grid mode: ``keys_total`` keys in rows of ``cols``, all with one ``style``.
    Manifest mode: named ``controls``, each with its own position and style.
    """

    device_id: str
    product_name: str
    surface_id: str
    session: SatelliteSession  # the connection that registered it
    page: int
    cols: int
    rows: int
    keys_total: int = 0  # grid mode
    style: RenderStyle = field(default_factory=RenderStyle)  # grid mode
    controls: dict[str, Control] | None = None  # manifest mode
    inputs: list[str] = field(default_factory=list)  # declared transferable inputs
    outputs: list[str] = field(default_factory=list)  # declared transferable outputs
    config_defaults: dict[str, Any] | None = None
    can_change_page: bool = False
    pincode_lock: str | None = None
    brightness_slider: bool = True
    firmware_update_url: str = ""
    held: dict[str, Location] = field(default_factory=dict)  # control -> location pressed
    output_last: dict[str, str] = field(default_factory=dict)  # output -> last text sent
    output_refs: dict[str, frozenset[str]] = field(default_factory=dict)  # output -> variables

    def cells(self) -> Iterator[tuple[ControlRef, int, int, RenderStyle]]:
        """Every control: (ref, row, column, style)."""
        if self.controls is not None:
            for cid, ctl in self.controls.items():
                yield ("CONTROLID", cid), ctl.row, ctl.column, ctl.style
        else:
            for i in range(self.keys_total):
                yield ("KEY", i), i // self.cols, i % self.cols, self.style

    def cells_at(self, row: int, column: int) -> Iterator[tuple[ControlRef, RenderStyle]]:
        """The controls at one position (a manifest may put several there)."""
        if self.controls is not None:
            for cid, ctl in self.controls.items():
                if ctl.row == row and ctl.column == column:
                    yield ("CONTROLID", cid), ctl.style
        elif 0 <= row < self.rows and 0 <= column < self.cols:
            index = row * self.cols + column
            if index < self.keys_total:
                yield ("KEY", index), self.style

    def position(self, control: str) -> tuple[int, int]:
        """(row, column) of a control named as :func:`.requests.key_target` returns it."""
        if self.controls is not None:
            ctl = self.controls[control]
            return ctl.row, ctl.column
        index = int(control)
        return index // self.cols, index % self.cols


@dataclass(eq=False)
class Subscription:
    """A button subscription (``ADD-SUB``): one location, seen with one style."""

    sub_id: str
    location: Location
    style: RenderStyle
