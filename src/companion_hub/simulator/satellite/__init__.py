"""The Satellite protocol, server side: what Companion does on ports 16622 and 16623.

One concept per module:

- :mod:`.requests`: how Companion reads a client's commands, field by field, and each
  command's validation order and error texts (pure functions);
- :mod:`.documents`: the base64 JSON documents of ``ADD-DEVICE`` and ``ADD-SUB``
  (layout manifest, style presets, transferable values, config fields; pure);
- :mod:`.surfaces`: what a connection registers, devices and subscriptions;
- :mod:`.commands`: what each command does once checked, and since which API version;
- :mod:`.outbox`: the queue of outgoing messages, with state messages coalesced;
- :mod:`.session`: one connection's server logic, a sans-I/O protocol object;
- :mod:`.transport`: the thin asyncio drivers, TCP and WebSocket.

The line format itself (parsing, formatting, value encodings) is shared with the
adapter's client: :mod:`companion_hub.adapters.companion.codec`.
"""

from .session import SatelliteSession
from .surfaces import Device, Subscription
from .transport import SatelliteConnection, TcpSatelliteConnection, WsSatelliteConnection

__all__ = [
    "Device",
    "SatelliteConnection",
    "SatelliteSession",
    "Subscription",
    "TcpSatelliteConnection",
    "WsSatelliteConnection",
]
