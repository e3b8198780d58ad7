"""The hub's core: state, patterns, delivery and command routing, with no I/O and no asyncio.

Everything here is deterministic and synchronous so that it can be tested without
sockets. The server layer (``companion_hub.server``) drives it from one event loop.
"""
