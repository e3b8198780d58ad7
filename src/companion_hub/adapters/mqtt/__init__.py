"""The MQTT bridge: hub state out as retained messages, commands in, device state in.

Modules, one concept each: :mod:`.topics` (the topic tree and import rules),
:mod:`.payloads` (what messages carry), :mod:`.outbox` (coalesced publishing),
:mod:`.inbox` (coalesced, bounded receiving), :mod:`.discovery` (Home Assistant),
:mod:`.config`, and :mod:`.bridge` (the runtime, the only module that does I/O).
"""
