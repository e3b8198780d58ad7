"""A fake Bitfocus Companion for tests and demos (docs/simulator.md).

Satellite protocol over TCP and WebSocket, the HTTP remote-control API, pages of
buttons with live variable references, custom/module/internal variables and
connections, plus fault injection for client tests.
"""

from .core import CompanionSimulator
from .model import UNDEFINED, Button, Connection, Look, RenderStyle
from .scenario import Scenario, ScenarioError, SurfaceSettings, demo_scenario, load_scenario
from .state import PressRecord

__all__ = [
    "UNDEFINED",
    "Button",
    "CompanionSimulator",
    "Connection",
    "Look",
    "PressRecord",
    "RenderStyle",
    "Scenario",
    "ScenarioError",
    "SurfaceSettings",
    "demo_scenario",
    "load_scenario",
]
