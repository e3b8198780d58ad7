"""What each command of a Satellite client does, with Companion's replies.

One function per command, ``(session, params) -> None``: it validates (see
:mod:`.requests`), answers ``OK`` or ``ERROR`` first, then acts on the simulator.
:data:`COMMANDS` maps a command word to the API version that introduced it and its
function; ``PING``, ``PONG`` and ``QUIT`` are the session's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from companion_hub.adapters.companion.codec import (
    Params,
    b64_json,
    format_line,
    is_truthy,
)

from .requests import (
    Refusal,
    Version,
    device_declaration,
    device_identity,
    key_target,
    nonempty,
    pincode_refusal,
    present,
    pressed,
    rotation_delta,
    subscription_request,
    variable_value,
)
from .surfaces import Device, Subscription

if TYPE_CHECKING:
    from .session import SatelliteSession

log = logging.getLogger("companion_hub.simulator")

# --- devices -------------------------------------------------------------------------------


def _device(session: SatelliteSession, cmd: str, params: Params) -> Device | None:
    device_id = present(params, "DEVICEID")
    if device_id is None:
        session.error(cmd, "Missing DEVICEID")
        return None
    dev = session.devices.get(device_id)
    if dev is None:
        session.error(cmd, "Device not found", device_id)
    return dev


def add_device(session: SatelliteSession, params: Params) -> None:
    cmd = "ADD-DEVICE"
    sim = session.sim
    identity = device_identity(params, sim.api)
    if isinstance(identity, Refusal):
        session.refuse(cmd, identity)
        return
    device_id = identity.device_id
    if device_id in session.devices:
        session.error(cmd, "Device already added", device_id)
        return
    other = sim._device_owner(device_id)
    if other is not None and other is not session:
        log.info(
            "device exists elsewhere",
            extra=session.log_extra(device_id=device_id, other=other.id),
        )
        other.error(cmd, "Device exists elsewhere", device_id)
        return  # the requester gets no reply at all
    declared = device_declaration(params, sim.api, device_id)
    if isinstance(declared, Refusal):
        session.refuse(cmd, declared)
        return
    surface_id = sim._allocate_surface_id(identity.base_surface_id, declared.serial_is_unique)
    dev = Device(
        device_id=device_id,
        product_name=identity.product_name,
        surface_id=surface_id,
        session=session,
        page=sim.surface_settings(surface_id).page or sim.device_page,
        cols=declared.columns,
        rows=declared.rows,
        keys_total=declared.keys_total,
        style=declared.style,
        controls=declared.controls,
        inputs=declared.inputs,
        outputs=declared.outputs,
        config_defaults=declared.config_defaults,
        can_change_page=declared.can_change_page,
        pincode_lock=declared.pincode_lock,
        brightness_slider=declared.brightness_slider,
    )
    session.devices[device_id] = dev
    sim._register_device(dev)
    log.info(
        "satellite device added",
        extra=session.log_extra(
            device_id=device_id,
            surface_id=surface_id,
            mode="manifest" if dev.controls is not None else "grid",
            page=dev.page,
        ),
    )
    session.ok(cmd, device_id)
    session.later(0, _after_add, session, dev)


def _after_add(session: SatelliteSession, dev: Device) -> None:
    """The next loop turn after ADD-DEVICE OK: brightness, input resets, config,
    a full redraw; the outputs about 10 ms later."""
    if session.devices.get(dev.device_id) is not dev:
        return
    sim = session.sim
    settings = sim.surface_settings(dev.surface_id)
    session.send(format_line("BRIGHTNESS", None, dev.device_id, [("VALUE", settings.brightness)]))
    for input_id in dev.inputs:
        target = settings.inputs.get(input_id)
        if target and target in sim.custom_variables:
            sim.set_custom_variable(target, "")
    if dev.config_defaults:
        config = b64_json(dev.config_defaults)
        session.send(format_line("DEVICE-CONFIG", None, dev.device_id, [("CONFIG", config)]))
    session.redraw(dev)
    session.later(0.01, _initial_outputs, session, dev)


def _initial_outputs(session: SatelliteSession, dev: Device) -> None:
    if session.devices.get(dev.device_id) is not dev:
        return
    for out_id in dev.outputs:
        session.evaluate_output(dev, out_id, initial=True)


def remove_device(session: SatelliteSession, params: Params) -> None:
    dev = _device(session, "REMOVE-DEVICE", params)
    if dev is None:
        return
    session.remove_device(dev)
    session.ok("REMOVE-DEVICE", dev.device_id)


def key_press(session: SatelliteSession, params: Params) -> None:
    cmd = "KEY-PRESS"
    dev = _device(session, cmd, params)
    if dev is None:
        return
    control = key_target(params, dev, "PRESSED")
    if isinstance(control, Refusal):
        session.refuse(cmd, control)
        return
    down = pressed(params)
    session.ok(cmd, dev.device_id)
    source = f"satellite-device:{dev.device_id}"
    if down:
        loc = (dev.page, *dev.position(control))
        dev.held[control] = loc
        session.sim._press(loc, True, source, dev)
    else:
        # a release goes to the location that was pressed, whatever the page now
        held = dev.held.pop(control, None)
        if held is None:
            held = (dev.page, *dev.position(control))
        session.sim._press(held, False, source, dev)


def key_rotate(session: SatelliteSession, params: Params) -> None:
    cmd = "KEY-ROTATE"
    dev = _device(session, cmd, params)
    if dev is None:
        return
    control = key_target(params, dev, "DIRECTION")
    if isinstance(control, Refusal):
        session.refuse(cmd, control)
        return
    amount = rotation_delta(params["DIRECTION"], session.sim.api)
    session.ok(cmd, dev.device_id)
    loc = (dev.page, *dev.position(control))
    session.sim.rotate(loc, amount, f"satellite-device:{dev.device_id}")


def pincode_key(session: SatelliteSession, params: Params) -> None:
    cmd = "PINCODE-KEY"
    dev = _device(session, cmd, params)
    if dev is None:
        return
    refusal = pincode_refusal(params, dev.device_id)
    if refusal is not None:
        session.refuse(cmd, refusal)
        return
    session.ok(cmd, dev.device_id)  # the simulator has no pin lock: digits are ignored


def set_variable_value(session: SatelliteSession, params: Params) -> None:
    cmd = "SET-VARIABLE-VALUE"
    dev = _device(session, cmd, params)
    if dev is None:
        return
    request = variable_value(params, dev.device_id)
    if isinstance(request, Refusal):
        session.refuse(cmd, request)
        return
    variable, value = request
    session.ok(cmd, dev.device_id, VARIABLE=variable)
    target = session.sim.surface_settings(dev.surface_id).inputs.get(variable)
    if variable in dev.inputs and target and target in session.sim.custom_variables:
        session.sim.set_custom_variable(target, value)
    else:
        log.debug(
            "satellite input dropped (not declared or not bound)",
            extra=session.log_extra(device_id=dev.device_id, variable=variable),
        )


def firmware_update_info(session: SatelliteSession, params: Params) -> None:
    cmd = "FIRMWARE-UPDATE-INFO"
    dev = _device(session, cmd, params)
    if dev is None:
        return
    url = params.get("UPDATE_URL")
    if not isinstance(url, str):
        session.error(cmd, "Missing UPDATE_URL", dev.device_id)
        return
    dev.firmware_update_url = url
    session.ok(cmd, dev.device_id)


def change_page(session: SatelliteSession, params: Params) -> None:
    cmd = "CHANGE-PAGE"
    dev = _device(session, cmd, params)
    if dev is None:
        return
    if "DIRECTION" not in params:
        session.error(cmd, "Missing DIRECTION", dev.device_id)
        return
    forward = is_truthy(params["DIRECTION"])
    session.ok(cmd, dev.device_id)
    settings = session.sim.surface_settings(dev.surface_id)
    if dev.can_change_page and settings.can_change_page:
        session.sim.change_device_page(dev, "+1" if forward else "-1")


# --- subscriptions -----------------------------------------------------------------------


def _subs_enabled(session: SatelliteSession, cmd: str) -> bool:
    if not session.sim.subscriptions:
        session.error(cmd, "Subscriptions not enabled")
        return False
    return True


def _sub(session: SatelliteSession, cmd: str, params: Params) -> Subscription | None:
    if not _subs_enabled(session, cmd):
        return None
    sub_id = present(params, "SUBID")
    if sub_id is None:
        session.error(cmd, "Missing SUBID")
        return None
    sub = session.subs.get(sub_id)
    if sub is None:
        session.error(cmd, "Unknown SUBID")
    return sub


def add_sub(session: SatelliteSession, params: Params) -> None:
    cmd = "ADD-SUB"
    if not _subs_enabled(session, cmd):
        return
    request = subscription_request(params, session.sim.api, session.subs)
    if isinstance(request, Refusal):
        session.refuse(cmd, request)
        return
    sub = Subscription(request.sub_id, request.location, request.style)
    session.subs[sub.sub_id] = sub
    log.info(
        "satellite subscription added",
        extra=session.log_extra(sub_id=sub.sub_id, location=params["LOCATION"]),
    )
    session.ok(cmd, SUBID=sub.sub_id)
    session.later(0, session.queue_sub_state, sub)


def remove_sub(session: SatelliteSession, params: Params) -> None:
    sub = _sub(session, "REMOVE-SUB", params)
    if sub is None:
        return
    del session.subs[sub.sub_id]
    session.ok("REMOVE-SUB", SUBID=sub.sub_id)


def sub_press(session: SatelliteSession, params: Params) -> None:
    cmd = "SUB-PRESS"
    sub = _sub(session, cmd, params)
    if sub is None:
        return
    if nonempty(params, "PRESSED") is None:
        session.error(cmd, "Missing PRESSED")
        return
    down = pressed(params)
    session.ok(cmd, SUBID=sub.sub_id)
    session.sim._press(sub.location, down, f"satellite-sub:{session.id}:{sub.sub_id}", None)


def sub_rotate(session: SatelliteSession, params: Params) -> None:
    cmd = "SUB-ROTATE"
    sub = _sub(session, cmd, params)
    if sub is None:
        return
    if nonempty(params, "DIRECTION") is None:
        session.error(cmd, "Missing DIRECTION")
        return
    amount = rotation_delta(params["DIRECTION"], session.sim.api)
    session.ok(cmd, SUBID=sub.sub_id)
    session.sim.rotate(sub.location, amount, f"satellite-sub:{session.id}:{sub.sub_id}")


Command = Callable[["SatelliteSession", Params], None]

# Command word -> (the API version that introduced it, what it does).
COMMANDS: dict[str, tuple[Version, Command]] = {
    "ADD-DEVICE": ((1, 0, 0), add_device),
    "REMOVE-DEVICE": ((1, 0, 0), remove_device),
    "KEY-PRESS": ((1, 0, 0), key_press),
    "KEY-ROTATE": ((1, 3, 0), key_rotate),
    "PINCODE-KEY": ((1, 8, 0), pincode_key),
    "SET-VARIABLE-VALUE": ((1, 7, 0), set_variable_value),
    "FIRMWARE-UPDATE-INFO": ((1, 10, 0), firmware_update_info),
    "CHANGE-PAGE": ((1, 10, 0), change_page),
    "ADD-SUB": ((1, 10, 0), add_sub),
    "REMOVE-SUB": ((1, 10, 0), remove_sub),
    "SUB-PRESS": ((1, 10, 0), sub_press),
    "SUB-ROTATE": ((1, 10, 0), sub_rotate),
}
