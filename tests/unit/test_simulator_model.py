"""Unit tests of the simulator's model, scenario loading and value rules."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from companion_hub.adapters.companion.codec import b64_decode_lenient, parse_version
from companion_hub.simulator import UNDEFINED, CompanionSimulator, demo_scenario, load_scenario
from companion_hub.simulator.model import (
    Look,
    RenderStyle,
    parse_color,
    render_template,
    solid_png,
    style_args,
    template_refs,
    value_text,
)
from companion_hub.simulator.satellite.requests import rotation_delta
from companion_hub.simulator.scenario import ScenarioError


def test_solid_png_is_valid() -> None:
    data = solid_png(3, 2, 0x102030)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (3, 2)
    assert zlib.decompress(chunks[b"IDAT"]) == (b"\x00" + b"\x10\x20\x30" * 3) * 2


def test_colors_and_values() -> None:
    assert parse_color("#FF0000") == 0xFF0000
    assert parse_color("#0f0") == 0x00FF00
    assert parse_color("rgb(1, 2, 3)") == 0x010203
    assert parse_color("red") == 0xFF0000
    assert parse_color("nonsense") is None and parse_color(True) is None
    assert value_text(3.0) == "3" and value_text(1.5) == "1.5" and value_text(True) == "true"
    assert value_text({"a": 1}) == '{"a":1}' and value_text(UNDEFINED) is None


def test_templates() -> None:
    values = {("custom", "a"): "x", ("internal", "n"): 5}
    assert template_refs("$(custom:a) $(internal:n) $(x)") == {"custom:a", "internal:n"}
    out = render_template(
        "A=$(custom:a) N=$(internal:n) M=$(mod:nope)",
        lambda lbl, n: values.get((lbl, n), UNDEFINED),
    )
    assert out == "A=x N=5 M=$NA"


def test_style_args_order_and_empty_look() -> None:
    full = RenderStyle(bitmap=(1, 1), colors="hex", text=True, text_style=True)
    args = style_args(Look(True, "BUTTON", 0xFF0000, 0xFFFFFF, "R", 14), full)
    assert [k for k, _ in args] == [
        "PRESSED",
        "TYPE",
        "BITMAP",
        "COLOR",
        "TEXTCOLOR",
        "TEXT",
        "FONT_SIZE",
    ]
    assert dict(args)["BITMAP"] == "/wAA"
    empty = dict(style_args(Look(), RenderStyle(colors="rgb")))
    assert empty["COLOR"] == "rgb(0,0,0)" and empty["TEXTCOLOR"] == "rgb(0,0,0)"


def test_rotation_semantics_per_version() -> None:
    new, old = (1, 14, 0), (1, 13, 0)
    cases = {
        "1": (1, 1),
        "0": (-1, -1),
        "5": (5, 1),
        "-3": (-3, -1),
        "0.5": (0.5, -1),
        "true": (1, 1),
        "false": (1, 1),
    }
    for direction, (expect_new, expect_old) in cases.items():
        assert rotation_delta(direction, new) == expect_new, direction
        assert rotation_delta(direction, old) == expect_old, direction


def test_helpers() -> None:
    assert parse_version("1.14.0") == (1, 14, 0) and parse_version("5.0.3+9012-stable") == (5, 0, 3)
    assert parse_version("1.10") == (1, 10, 0) and parse_version("") == (0, 0, 0)
    assert parse_version("1.x.3") == (1, 0, 0) and parse_version("9" * 5000) == (0, 0, 0)
    assert b64_decode_lenient("aGk") == "hi" and b64_decode_lenient("a G k = !") == "hi"


def test_demo_scenario() -> None:
    sc = demo_scenario()
    assert sc.buttons[(1, 0, 0)].text == "CAM 1"
    assert sc.buttons[(2, 0, 0)].behaviour == "counter:cue" and sc.custom_variables["cue"] == 0
    assert any("$(internal:time_hms)" in b.text for b in sc.buttons.values())
    assert {c.id for c in sc.connections} == {"conn-atem", "conn-obs", "conn-http"}


def test_load_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
device_page = 2
[custom_variables]
cue = 3
[module_variables]
"obs:scene" = "Wide"
[[connections]]
id = "c1"
label = "obs"
moduleId = "obs-studio"
status = { category = "good", level = "ok", message = "" }
[[pages]]
number = 2
name = "Show"
[[pages.buttons]]
row = 0
column = 1
text = "CUE $(custom:cue)"
bgcolor = "#0000ff"
font_size = 14
behaviour = "counter:cue"
[surfaces."hub-1"]
inputs = { fader = "cue" }
outputs = { tally = "$(obs:scene)" }
""",
        encoding="utf-8",
    )
    sc = load_scenario(path)
    assert sc.device_page == 2 and sc.page_names == {2: "Show"}
    btn = sc.buttons[(2, 0, 1)]
    assert (btn.bgcolor, btn.font_size, btn.behaviour) == (0x0000FF, 14, "counter:cue")
    assert sc.module_variables == {"obs": {"scene": "Wide"}}
    assert sc.connections[0].status == {"category": "good", "level": "ok", "message": None}
    assert sc.surfaces["hub-1"].outputs == {"tally": "$(obs:scene)"}
    sim = CompanionSimulator(scenario=sc, clock=False)
    assert sim.button(2, 0, 1).rendered_text == "CUE 3"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "[[pages]]\n[[pages.buttons]]\nrow = 0\ncolumn = 0\nbehaviour = 'explode'\n",
        "[[pages]]\n[[pages.buttons]]\nrow = 0\ncolumn = 0\nbgcolor = 'nope'\n",
        "[[pages]]\n[[pages.buttons]]\nrow = -1\ncolumn = 0\n",
        "[module_variables]\nnocolon = 1\n",
        "unknown = 1\n",
        "not toml [",
    ],
)
def test_bad_scenarios(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError):
        load_scenario(path)


def test_set_button_validates() -> None:
    sim = CompanionSimulator(clock=False)
    with pytest.raises(ScenarioError):
        sim.set_button(1, 0, 0, behaviour="fly")
    btn = sim.set_button(9, 0, 0, text="$(custom:cue)!", behaviour="latch")
    assert btn.rendered_text == "0!" and sim.button(9, 0, 0) is btn
    sim.set_custom_variable("cue", 4)
    assert btn.rendered_text == "4!"
    sim.remove_button(9, 0, 0)
    assert sim.button(9, 0, 0) is None
