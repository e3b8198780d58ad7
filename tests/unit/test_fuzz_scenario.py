"""The simulator's scenario loader treats every field as hostile.

Whatever the document (random JSON, scenario-shaped documents with hostile values,
random TOML-ish text or bytes), loading either raises ScenarioError naming the field
or gives a scenario the simulator can run: every button renders and every value can
be written on the Satellite line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.codec import format_line
from companion_hub.simulator import CompanionSimulator
from companion_hub.simulator.model import RenderStyle, style_args
from companion_hub.simulator.scenario import (
    Scenario,
    ScenarioError,
    demo_scenario,
    load_scenario,
    scenario_from_dict,
)
from tests.fuzzing import fuzz_settings

HOSTILE_NUMBERS = st.sampled_from(
    [0, -1, 1, 2, 100, 101, 9999, 10_000, 2**63, -(2**63) - 1, 10**400, 1e999, -0.0, 1.5]
)
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | HOSTILE_NUMBERS | st.floats() | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
SMALL_INT = st.integers(1, 3) | st.integers(0, 3)
TEXT = st.sampled_from(["", "A", "$(custom:cue)", "CAM 1", "\x00", "é"]) | st.text(max_size=8)
NAME = st.sampled_from(["cue", "x", "a.b-c_d", "hub-1"])
COLOR = st.sampled_from(["#ff0000", "#fff", "red", "rgb(1,2,3)", 0xFFFFFF])
FONT_SIZE = st.sampled_from(["auto", 14, 44, 1000])
BEHAVIOUR = st.sampled_from(["none", "latch", "counter:cue", "set:x=1", "page:+1", "page:9999"])
BEHAVIOUR |= st.sampled_from(["swap:a,b", "timer-start:t", "timer-stop:t", "timer-reset:t=05:00"])
FEEDBACK_RULE = st.fixed_dictionaries(
    {
        "variable": st.sampled_from(["cue", "custom:x", "obs:scene", "internal:time_s", "t"]),
        "equals": st.sampled_from(["1", "", "CAM 1", 0, True, 1.5]),
    },
    optional={"bgcolor": COLOR, "color": COLOR},
)
FEEDBACK = FEEDBACK_RULE | st.lists(FEEDBACK_RULE, max_size=3)
# values that are wrong only in their field (a type or range the field does not take)
WRONG = (
    st.sampled_from(
        ["nope", 16777216, -1, 0, 1001, 10**400, "14", 1.5, True, "pageup", "page:0", "page:10000"]
    )
    | st.sampled_from(["page:" + "9" * 5000, "page:٣", "explode", "counter:", "bad name", "", "é/"])
    | st.sampled_from(["swap:a", "timer-reset:t=x", "timer-go:t", "a:b:c", "$(x)", [{}]])
)


@st.composite
def document(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario-shaped document; each field is replaced by hostile JSON at a rate
    drawn per example (0 % gives valid scenarios, 60 % mostly garbage)."""
    rate = draw(st.sampled_from([0, 3, 10, 30, 60]))

    def pick(strategy: st.SearchStrategy[Any]) -> Any:
        if draw(st.integers(0, 99)) < rate:
            return draw(WRONG | HOSTILE_NUMBERS | JSON)
        return draw(strategy)

    def fields(
        spec: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = (), top: bool = False
    ) -> Any:
        out = {k: pick(v) for k, v in spec.items() if k in required or draw(st.booleans())}
        return out if top else pick(st.just(out))

    def items(make: Any, max_size: int) -> Any:
        return pick(st.just([make() for _ in range(draw(st.integers(1, max_size)))]))

    def button() -> Any:
        return fields(
            {
                "row": SMALL_INT,
                "column": SMALL_INT,
                "text": TEXT,
                "bgcolor": COLOR,
                "color": COLOR,
                "font_size": FONT_SIZE,
                "type": st.sampled_from(["BUTTON", "PAGEUP", "PAGEDOWN", "PAGENUM"]),
                "behaviour": BEHAVIOUR,
                "feedback": FEEDBACK,
            },
            required=("row", "column"),
        )

    def page() -> Any:
        return fields(
            {"number": SMALL_INT, "name": TEXT, "buttons": st.just(items(button, 3))},
            required=("buttons",),
        )

    def connection() -> Any:
        status = {k: TEXT for k in ("category", "level", "message")}
        return fields(
            {
                "id": TEXT,
                "label": TEXT,
                "moduleId": TEXT,
                "enabled": st.booleans(),
                "status": st.just(fields(status)),
            },
            required=("id",),
        )

    def surface() -> Any:
        return fields(
            {
                "inputs": st.dictionaries(NAME, NAME, max_size=2),
                "outputs": st.dictionaries(NAME, TEXT, max_size=2),
                "brightness": st.integers(0, 100),
                "page": SMALL_INT,
                "can_change_page": st.booleans(),
            }
        )

    values = st.dictionaries(NAME, JSON | TEXT, max_size=3)
    module_names = st.sampled_from(["obs:scene", "a:b:c", "atem:in"])
    return fields(
        {
            "device_page": SMALL_INT,
            "pages": st.just(items(page, 3)),
            "custom_variables": values,
            "module_variables": st.dictionaries(module_names, JSON, max_size=3),
            "connections": st.just(items(connection, 2)),
            "surfaces": st.just({draw(NAME): surface() for _ in range(draw(st.integers(0, 2)))}),
        },
        required=("pages",),
        top=True,
    )


def check_usable(sc: Scenario) -> None:
    """What the simulator does with a scenario must work: build, render, write lines."""
    sim = CompanionSimulator(scenario=sc, clock=False)
    style = RenderStyle(colors="hex", text=True, text_style=True)
    for loc, btn in sim.buttons.items():
        assert isinstance(btn.rendered_text, str)
        format_line("KEY-STATE", None, "dev", [("LOCATION", "/".join(map(str, loc)))])
        format_line("KEY-STATE", None, "dev", style_args(btn.look(), style))
    for name in sc.custom_variables:
        sim.variable_value("custom", name)
    for s in sc.surfaces.values():
        assert 0 <= s.brightness <= 100
        format_line("BRIGHTNESS", None, "dev", [("VALUE", s.brightness)])


def load_dict(doc: Any) -> None:
    try:
        sc = scenario_from_dict(doc)
    except ScenarioError as exc:
        assert str(exc)
        return
    check_usable(sc)


# --- fuzz -------------------------------------------------------------------------------------


@pytest.mark.fuzz
@fuzz_settings
@given(doc=document())
def test_fuzz_scenario_shaped_documents(doc: dict[str, Any]) -> None:
    load_dict(doc)


@pytest.mark.fuzz
@fuzz_settings
@given(doc=JSON)
def test_fuzz_any_json_document(doc: Any) -> None:
    load_dict(doc)


TOML_PIECES = [
    "[[pages]]",
    "[[pages.buttons]]",
    "number = 1",
    "number = 99999999999999999999",
    "row = 0",
    "column = 0",
    "row = -1",
    "column = 1e999",
    'text = "A $(custom:cue)"',
    "font_size = 1979-05-27",
    'font_size = "auto"',
    "font_size = inf",
    "behaviour = 'latch'",
    "behaviour = 'page:" + "9" * 50 + "'",
    "[custom_variables]",
    "cue = 0",
    "when = 1979-05-27T07:32:00Z",
    "x = nan",
    "big = " + "9" * 5000,
    "deep = " + "[" * 2000 + "]" * 2000,
    "[module_variables]",
    '"obs:scene" = "Wide"',
    "[[connections]]",
    'id = "c1"',
    "id = 3",
    "enabled = 'yes'",
    "status = { category = 1 }",
    '[surfaces."hub-1"]',
    "brightness = 1000",
    "page = 0",
    "inputs = { fader = 1 }",
    "device_page = 2",
    "pages = 3",
    "surfaces = []",
]


def load_text(data: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            sc = load_scenario(name)
        except ScenarioError as exc:
            assert str(exc).startswith(name)
            return
        check_usable(sc)
    finally:
        os.unlink(name)


@pytest.mark.fuzz
@fuzz_settings
@given(lines=st.lists(st.sampled_from(TOML_PIECES) | st.text(max_size=20), max_size=10))
def test_fuzz_toml_text(lines: list[str]) -> None:
    load_text("\n".join(lines).encode("utf-8", errors="surrogatepass"))


@pytest.mark.fuzz
@fuzz_settings
@given(data=st.binary(max_size=200))
def test_fuzz_toml_bytes(data: bytes) -> None:
    load_text(data)


# --- regressions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "a scenario must be a table"),
        ({"pages": 3}, "pages must be an array"),
        ({"pages": [{"buttons": 1}]}, "pages[0].buttons must be an array"),
        ({"pages": [{"buttons": [{"row": 0}]}]}, "pages[0].buttons[0].column"),
        ({"pages": [{"number": 10**400}]}, "pages[0].number"),
        ({"pages": [{"bogus": 1}]}, "pages[0]: unknown key 'bogus'"),
        ({"pages": [{"name": 5}]}, "pages[0].name"),
        ({"pages": [{"buttons": [{"row": 0, "column": 0, "font_size": 10**400}]}]}, "font_size"),
        ({"pages": [{"buttons": [{"row": 0, "column": 0, "behaviour": 5}]}]}, "behaviour"),
        ({"pages": [{"buttons": [{"row": 0, "column": 0, "behaviour": "page:0"}]}]}, "page 1.."),
        ({"pages": [{"buttons": [{"row": 0, "column": 0, "type": ["x"]}]}]}, "type"),
        ({"surfaces": []}, "surfaces must be a table"),
        ({"surfaces": {"hub": {"inputs": []}}}, "surfaces.'hub'.inputs must be a table"),
        ({"surfaces": {"hub": {"inputs": {"a": 1}}}}, "surfaces.'hub'.inputs.a"),
        ({"surfaces": {"hub": {"brightness": 101}}}, "brightness"),
        ({"surfaces": {"hub": {"page": 1e999}}}, "surfaces.'hub'.page"),
        ({"connections": [1]}, "connections[0] must be a table"),
        ({"connections": [{"label": "x"}]}, "needs at least an id"),
        ({"connections": [{"id": ["x"]}]}, "connections[0].id"),
        ({"connections": [{"id": "c", "enabled": "no"}]}, "connections[0].enabled"),
        ({"connections": [{"id": "c", "status": "ok"}]}, "connections[0].status"),
        ({"custom_variables": {"cue": 10**400}}, "custom_variables.'cue'"),
        ({"custom_variables": {"a b": 1}}, "custom_variables.'a b'"),
        ({"custom_variables": {"x": {1: 2}}}, "key 1 is not a string"),
        ({"module_variables": []}, "module_variables must be a table"),
        ({"device_page": "1"}, "device_page"),
        ({"pages": [{"buttons": [{"row": 0, "column": 0, "feedback": 1}]}]}, "feedback must be"),
        (
            {"pages": [{"buttons": [{"row": 0, "column": 0, "feedback": [{"equals": "x"}]}]}]},
            "pages[0].buttons[0].feedback[0].variable",
        ),
        (
            {"pages": [{"buttons": [{"row": 0, "column": 0, "feedback": {"variable": "a:b:c"}}]}]},
            "is not '<name>'",
        ),
        (
            {"pages": [{"buttons": [{"row": 0, "column": 0, "feedback": {"variable": "p"}}]}]},
            "needs equals",
        ),
        (
            {
                "pages": [
                    {
                        "buttons": [
                            {"row": 0, "column": 0, "feedback": {"variable": "p", "equals": 1}}
                        ]
                    }
                ]
            },
            "needs bgcolor or color",
        ),
        (
            {
                "pages": [
                    {
                        "buttons": [
                            {
                                "row": 0,
                                "column": 0,
                                "feedback": {"variable": "p", "equals": [], "bgcolor": "red"},
                            }
                        ]
                    }
                ]
            },
            "equals must be",
        ),
        (
            {
                "pages": [
                    {
                        "buttons": [
                            {
                                "row": 0,
                                "column": 0,
                                "feedback": {"variable": "p", "equals": 1, "bgcolor": "nope"},
                            }
                        ]
                    }
                ]
            },
            "bgcolor 'nope' is not a colour",
        ),
        (
            {"pages": [{"buttons": [{"row": 0, "column": 0, "feedback": [{}] * 65}]}]},
            "at most 64 rules",
        ),
        ({"pages": [{"buttons": [{"row": 0, "column": 0, "behaviour": "swap:a"}]}]}, "swap"),
        (
            {"pages": [{"buttons": [{"row": 0, "column": 0, "behaviour": "timer-reset:t=x"}]}]},
            "timer-reset",
        ),
        ({1: 2}, "unknown top-level keys: 1"),
    ],
)
def test_bad_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(doc)
    assert field in str(err.value)


def test_a_deeply_nested_value_is_refused() -> None:
    value: Any = 1
    for _ in range(100):
        value = [value]
    with pytest.raises(ScenarioError, match="nested more than"):
        scenario_from_dict({"custom_variables": {"deep": value}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"\xff\xfe = 1", "not UTF-8"),
        (b"x = " + b"9" * 5000, "s.toml"),
        (b"x = " + b"[" * 5000 + b"]" * 5000, "s.toml"),
        (b"[custom_variables]\nwhen = 1979-05-27T07:32:00Z\n", "datetime is not a variable value"),
    ],
)
def test_bad_files_raise_scenario_error(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


def test_the_demo_and_valid_documents_still_load() -> None:
    check_usable(demo_scenario())
    sc = scenario_from_dict(
        {
            "device_page": 2,
            "pages": [{"number": 2, "buttons": [{"row": 0, "column": 1, "font_size": 14}]}],
            "custom_variables": {"cue": 3, "list": [1, {"a": None}], "f": float("nan")},
            "connections": [{"id": "c1", "status": {"category": "good", "message": ""}}],
            "surfaces": {"hub-1": {"brightness": 0, "page": 2, "can_change_page": True}},
        }
    )
    assert sc.buttons[(2, 0, 1)].font_size == 14
    assert sc.connections[0].label == "c1"
    assert sc.connections[0].status == {"category": "good", "level": None, "message": None}
    check_usable(sc)
