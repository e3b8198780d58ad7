"""The configuration of one Companion instance (a ``[[companion]]`` table)."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass, field

from .ember_link import EMBER_PORT, EmberTiming
from .export import ExportRule
from .link import LinkTiming
from .satellite import Transferable


@dataclass
class CompanionConfig:
    """One Companion instance (a ``[[companion]]`` table in the configuration)."""

    host: str = "127.0.0.1"
    name: str = "companion"  # the adapter's name in hub.adapters.<name>
    namespace: str = "companion"
    transport: str = "tcp"  # "tcp" (16622) or "ws" (16623)
    satellite_port: int | None = None  # default by transport
    http_port: int = 8000
    http: bool = True
    pages: list[int] = field(default_factory=lambda: list(range(1, 9)))
    rows: int = 4
    columns: int = 8
    variables: list[str] = field(default_factory=list)  # "custom:cue", "internal:time_hms", ...
    poll_interval: float = 1.0
    bitmaps: bool = False
    bitmap_size: int = 72
    transferable: list[Transferable] = field(default_factory=list)
    device_id: str | None = None  # default: stable per host and hub port
    timing: LinkTiming = field(default_factory=LinkTiming)
    # Ember+ (Settings > Protocols > Ember+ in Companion): every internal and custom
    # variable, pushed; without it, HTTP polling of `variables`
    ember: bool = True
    ember_port: int = EMBER_PORT
    ember_timing: EmberTiming = field(default_factory=EmberTiming)
    # hub keys -> Companion custom variables ([[companion.export]], see export.py)
    exports: list[ExportRule] = field(default_factory=list)

    @property
    def port(self) -> int:
        if self.satellite_port is not None:
            return self.satellite_port
        return 16623 if self.transport == "ws" else 16622


def default_device_id(hub_port: int, name: str) -> str:
    """The hub's surface id at Companion: stable per host, hub port and adapter name."""
    digest = hashlib.sha1(f"{socket.gethostname()}:{hub_port}:{name}".encode()).hexdigest()
    return f"companion-hub-{digest[:10]}"
