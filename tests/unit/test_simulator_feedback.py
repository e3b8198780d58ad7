"""Feedback rules, CUT (swap) and countdown timers in the simulator's model, without I/O."""

from __future__ import annotations

import time

import pytest

from companion_hub.simulator import CompanionSimulator, ScenarioError
from companion_hub.simulator.model import Feedback, format_duration, parse_duration
from companion_hub.simulator.scenario import scenario_from_dict

RED, GREEN = 0xCC0000, 0x00AA00


def make(buttons: list[dict], **custom: object) -> CompanionSimulator:
    doc = {"custom_variables": custom, "pages": [{"number": 1, "buttons": buttons}]}
    return CompanionSimulator(scenario_from_dict(doc), clock=False)


def test_first_matching_feedback_wins_and_follows_the_variable() -> None:
    sim = make(
        [
            {
                "row": 0,
                "column": 0,
                "text": "CAM 3",
                "bgcolor": "#333333",
                "feedback": [
                    {"variable": "program", "equals": "CAM 3", "bgcolor": "#cc0000"},
                    {"variable": "custom:preview", "equals": "CAM 3", "bgcolor": "#00aa00"},
                ],
            }
        ],
        program="CAM 1",
        preview="CAM 3",
    )
    btn = sim.button(1, 0, 0)
    assert btn is not None
    assert btn.feedbacks[0] == Feedback("custom:program", "CAM 3", RED, None)
    assert btn.look().bgcolor == GREEN and btn.bgcolor == 0x333333  # its own colour stays
    sim.set_custom_variable("program", "CAM 3")
    assert btn.look().bgcolor == RED  # on program and on preview: the first rule wins
    sim.set_custom_variable("program", "CAM 1")
    sim.set_custom_variable("preview", "CAM 2")
    assert btn.look().bgcolor == 0x333333 and btn.active_feedback is None


def test_feedback_on_text_colour_numbers_and_module_variables() -> None:
    sim = make(
        [
            {
                "row": 0,
                "column": 0,
                "feedback": [
                    {"variable": "atem:input", "equals": 3, "color": "yellow"},
                    {"variable": "cue", "equals": True, "bgcolor": "red"},
                ],
            }
        ],
        cue=False,
    )
    btn = sim.button(1, 0, 0)
    assert btn is not None and btn.look().color == 0xFFFFFF
    sim.set_module_variable("atem", "input", 3)
    assert btn.look().color == 0xFFFF00 and btn.look().bgcolor == 0  # the rule sets one colour
    sim.set_module_variable("atem", "input", "3")  # compared as text, like Companion shows it
    assert btn.look().color == 0xFFFF00
    sim.set_module_variable("atem", "input", 4)
    sim.set_custom_variable("cue", True)
    assert btn.look().bgcolor == 0xFF0000


def test_set_button_takes_feedback_and_refreshes_it() -> None:
    sim = make([], program="CAM 2")
    btn = sim.set_button(
        1, 0, 1, text="CAM 2", feedback={"variable": "program", "equals": "CAM 2", "bgcolor": "red"}
    )
    assert btn.look().bgcolor == 0xFF0000 and "custom:program" in btn.refs
    with pytest.raises(ScenarioError, match="needs bgcolor or color"):
        sim.set_button(1, 0, 1, feedback={"variable": "program", "equals": "x"})


def test_swap_exchanges_two_custom_variables() -> None:
    sim = make([{"row": 0, "column": 0, "behaviour": "swap:program,preview"}])
    assert sim.custom_variables == {"program": "", "preview": ""}  # created like set:
    sim.set_custom_variable("program", "CAM 1")
    sim.set_custom_variable("preview", "CAM 2")
    sim.press((1, 0, 0), True)
    sim.press((1, 0, 0), False)
    assert (sim.custom_variables["program"], sim.custom_variables["preview"]) == ("CAM 2", "CAM 1")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("05:00", 300), ("5:00", 300), ("90", 90), ("1:00:00", 3600), (" 00:07 ", 7), (42, 42)],
)
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "x", "5:", "-1", "1:2:3:4", None, True, -5, float("nan")])
def test_parse_duration_refuses(bad: object) -> None:
    assert parse_duration(bad) is None


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 7, 300, 3599, 3600, -3)] == [
        "00:00",
        "00:07",
        "05:00",
        "59:59",
        "1:00:00",
        "00:00",
    ]


def test_timer_behaviours() -> None:
    sim = make(
        [
            {"row": 0, "column": 0, "behaviour": "timer-start:t"},
            {"row": 0, "column": 1, "behaviour": "timer-stop:t"},
            {"row": 0, "column": 2, "behaviour": "timer-reset:t=2:00"},
            {"row": 0, "column": 3, "text": "$(custom:t)"},
        ]
    )
    assert sim.custom_variables["t"] == "02:00"  # created with the reset value

    def tap(col: int) -> None:
        sim.press((1, 0, col), True)
        sim.press((1, 0, col), False)

    tap(0)
    assert "t" in sim.timers
    end, _ = sim.timers["t"]
    sim.timers["t"] = (end - 30.2, "02:00")  # as if 30.2 s went by
    sim._tick()
    assert sim.custom_variables["t"] == "01:30"
    button = sim.button(1, 0, 3)
    assert button is not None and button.rendered_text == "01:30"
    tap(1)
    assert "t" not in sim.timers
    sim._tick()
    assert sim.custom_variables["t"] == "01:30"
    tap(2)
    assert sim.custom_variables["t"] == "02:00" and "t" not in sim.timers
    # running out: 00:00 and stopped
    tap(0)
    sim.timers["t"] = (time.monotonic() - 1, "02:00")
    sim._tick()
    assert sim.custom_variables["t"] == "00:00" and "t" not in sim.timers
    tap(0)  # nothing left to count down
    assert "t" not in sim.timers
