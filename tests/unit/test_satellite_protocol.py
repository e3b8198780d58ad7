"""The Satellite client state machine, fed lines as Companion writes them."""

from __future__ import annotations

from companion_hub.adapters.companion.codec import b64_text, parse_line
from companion_hub.adapters.companion.events import (
    Began,
    ButtonRendered,
    Capabilities,
    DevicePage,
    OutputValue,
    ProtocolError,
    Registering,
    Reply,
    Synced,
)
from companion_hub.adapters.companion.satellite import (
    SatelliteOptions,
    SatelliteProtocol,
    Transferable,
)

BEGIN = 'BEGIN CompanionVersion="5.1.0+9100-main-3d76cba000" ApiVersion="1.14.0" \n'


def sent(p: SatelliteProtocol) -> list[tuple[str, dict]]:
    return [parse_line(line) for line in p.data_to_send().splitlines()]


def test_subscription_mode_registers_every_location_and_syncs() -> None:
    p = SatelliteProtocol(SatelliteOptions("hub-x", pages=[1], rows=1, columns=2))
    p.receive_data(BEGIN)
    assert p.data_to_send() == ""  # waits for CAPS (API >= 1.10)
    p.receive_data("CAPS SUBSCRIPTIONS=1 NONSQUARE=1 \n")
    out = sent(p)
    assert [c for c, _ in out] == ["ADD-SUB", "ADD-SUB"]
    assert out[0][1]["SUBID"] == "1/0/0" and out[0][1]["LOCATION"] == "1/0/0"
    assert out[0][1]["TEXT"] == "1" and out[0][1]["COLORS"] == "hex"
    ev = p.events()
    assert isinstance(ev[0], Began) and ev[0].api_version == "1.14.0"
    assert isinstance(ev[1], Capabilities) and ev[1].subscriptions
    assert isinstance(ev[2], Registering) and ev[2].mode == "subscriptions"
    p.receive_data('ADD-SUB OK SUBID="1/0/0" \nADD-SUB OK SUBID="1/0/1" \n')
    p.receive_data(
        f'SUB-STATE SUBID="1/0/0" PRESSED=1 TYPE="BUTTON" COLOR="#ff0000" TEXTCOLOR="#ffffff" TEXT="{b64_text("CAM 1")}" FONT_SIZE="auto" \n'
    )
    ev = p.events()
    assert ev == [
        ButtonRendered(
            1,
            0,
            0,
            {
                "text": "CAM 1",
                "bgcolor": "#ff0000",
                "color": "#ffffff",
                "pressed": True,
                "type": "BUTTON",
                "font_size": "auto",
            },
        )
    ]
    p.receive_data(
        'SUB-STATE SUBID="1/0/1" PRESSED=0 TYPE="BUTTON" COLOR="#000000" TEXTCOLOR="#ffffff" TEXT="" FONT_SIZE=14 \n'
    )
    assert p.events() == [ButtonRendered(1, 0, 1, None), Synced("subscriptions")]


def test_subscriptions_off_falls_back_to_a_device_and_says_how_to_enable() -> None:
    p = SatelliteProtocol(SatelliteOptions("hub-x", rows=1, columns=2))
    p.receive_data(BEGIN + "CAPS SUBSCRIPTIONS=0 \n")
    out = sent(p)
    assert [c for c, _ in out] == ["ADD-DEVICE"]
    args = out[0][1]
    assert args["DEVICEID"] == "hub-x" and args["KEYS_TOTAL"] == "2" and args["KEYS_PER_ROW"] == "2"
    reg = next(e for e in p.events() if isinstance(e, Registering))
    assert reg.mode == "device" and "Button Subscriptions API" in reg.detail
    p.receive_data('ADD-DEVICE OK DEVICEID="hub-x" \nBRIGHTNESS DEVICEID="hub-x" VALUE=100 \n')
    p.receive_data(
        f'KEY-STATE DEVICEID="hub-x" KEY=0 LOCATION="3/0/0" PRESSED=0 TYPE="BUTTON" COLOR="#00ff00" TEXTCOLOR="#000000" TEXT="{b64_text("GO")}" \n'
    )
    p.receive_data(
        'KEY-STATE DEVICEID="hub-x" KEY=1 LOCATION="3/0/1" PRESSED=0 TYPE="PAGEUP" COLOR="#000000" TEXTCOLOR="#ffffff" TEXT="" \n'
    )
    ev = p.events()
    assert DevicePage(3) in ev
    rendered = [e for e in ev if isinstance(e, ButtonRendered)]
    assert rendered[0].state is not None and rendered[0].state["text"] == "GO"
    assert rendered[1].state is not None and rendered[1].state["type"] == "PAGEUP"
    assert ev[-1] == Synced("device")


def test_transferable_values() -> None:
    opts = SatelliteOptions(
        "hub-x",
        pages=[1],
        rows=1,
        columns=1,
        variables=[
            Transferable("tally", "output", "Tally"),
            Transferable("fader", "input", "Fader"),
        ],
    )
    p = SatelliteProtocol(opts, inputs={"fader": "0.5"})
    p.receive_data(BEGIN + "CAPS SUBSCRIPTIONS=1 \n")
    cmds = sent(p)
    add = next(a for c, a in cmds if c == "ADD-DEVICE")
    assert "VARIABLES" in add
    p.receive_data('ADD-DEVICE OK DEVICEID="hub-x" \n')
    again = sent(p)
    assert again == [
        ("SET-VARIABLE-VALUE", {"DEVICEID": "hub-x", "VARIABLE": "fader", "VALUE": b64_text("0.5")})
    ]
    p.receive_data(
        f'VARIABLE-VALUE DEVICEID="hub-x" VARIABLE="tally" VALUE="{b64_text("PROGRAM")}" \n'
    )
    assert OutputValue("tally", "PROGRAM") in p.events()


def test_bad_input_is_reported_not_raised() -> None:
    p = SatelliteProtocol(SatelliteOptions("hub-x", pages=[1], rows=1, columns=1))
    p.receive_data(BEGIN + "CAPS SUBSCRIPTIONS=1 \n")
    p.events()
    p.receive_data("\x00\xff garbage ### \nWHATEVER A=1 \n")
    p.receive_data('SUB-STATE SUBID="1/0/0" TEXT="!!!notbase64" \n')
    p.receive_data('SUB-STATE TEXT="" \n')
    ev = p.events()
    assert len(ev) == 4 and all(isinstance(e, ProtocolError) and not e.fatal for e in ev)
    p.receive_data('ERROR ERROR MESSAGE="Line too long" \n')
    (fatal,) = p.events()
    assert isinstance(fatal, ProtocolError) and fatal.fatal


def test_replies_and_ping() -> None:
    p = SatelliteProtocol(SatelliteOptions("hub-x", pages=[1], rows=1, columns=1))
    p.receive_data(BEGIN + "CAPS SUBSCRIPTIONS=1 \n")
    p.data_to_send()
    p.events()
    p.sub_press("1/0/0", True)
    p.sub_press("1/0/0", False)
    assert (
        p.data_to_send()
        == 'SUB-PRESS SUBID="1/0/0" PRESSED=1 \nSUB-PRESS SUBID="1/0/0" PRESSED=0 \n'
    )
    p.receive_data('SUB-PRESS OK SUBID="1/0/0" \nSUB-PRESS ERROR MESSAGE="Unknown SUBID" \n')
    ok, err = p.events()
    assert isinstance(ok, Reply) and ok.ok and ok.params["SUBID"] == "1/0/0"
    assert isinstance(err, Reply) and not err.ok and err.message == "Unknown SUBID"
    p.receive_data("PING 42 \n")
    assert p.data_to_send() == "PONG\n"


def test_too_old_api_is_fatal() -> None:
    p = SatelliteProtocol(SatelliteOptions("hub-x"))
    p.receive_data('BEGIN CompanionVersion="3.2.0" ApiVersion="1.5.0" \n')
    ev = p.events()
    assert isinstance(ev[-1], ProtocolError) and ev[-1].fatal


def test_messages_the_hub_does_not_use_are_accepted_quietly() -> None:
    p = SatelliteProtocol(SatelliteOptions("hub-x", pages=[1], rows=1, columns=1))
    p.receive_data(BEGIN + "CAPS SUBSCRIPTIONS=0 \n")
    p.events()
    p.receive_data(
        'KEYS-CLEAR DEVICEID="hub-x" \n'
        'LOCKED-STATE DEVICEID="hub-x" LOCKED=1 CHARACTER_COUNT=0 ROTATION=0 \n'
        'DEVICE-CONFIG DEVICEID="hub-x" CONFIG="e30=" \n'
        'REMOVE-DEVICE OK DEVICEID="hub-x" \n'
        "PONG 7 \n"
    )
    ev = p.events()
    assert not [e for e in ev if isinstance(e, ProtocolError)]
    assert len(ev) == 1  # only the Pong
