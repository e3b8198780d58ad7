"""MQTT topics: the bridge's topic tree, topic filters and import rules (pure)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion_hub.adapters.mqtt.topics import (
    COMMAND,
    STATE,
    VALUE,
    CommandTopic,
    ImportRule,
    TopicError,
    check_filter,
    check_prefix,
    filter_matches,
    filters_overlap,
    key_topic,
    parse_command_topic,
    reply_topic,
    topic_key,
)
from companion_hub.core.keys import is_valid_key

PREFIX = "companion-hub"

segments = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
keys = st.lists(segments, min_size=1, max_size=6).map(".".join)
prefixes = st.lists(
    st.from_regex(r"[A-Za-z0-9_ -]{1,8}", fullmatch=True), min_size=1, max_size=3
).map("/".join)


# --- key <-> topic ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes, kind=st.sampled_from([STATE, VALUE]), key=keys)
def test_key_topic_round_trips(prefix: str, kind: str, key: str) -> None:
    topic = key_topic(prefix, kind, key)
    assert topic == f"{prefix}/{kind}/{key.replace('.', '/')}"
    assert topic_key(prefix, kind, topic) == key


@settings(max_examples=200, deadline=None)
@given(key=keys)
def test_topic_key_rejects_other_kinds_and_prefixes(key: str) -> None:
    topic = key_topic(PREFIX, STATE, key)
    assert topic_key(PREFIX, VALUE, topic) is None
    assert topic_key(PREFIX, COMMAND, topic) is None
    assert topic_key("other", STATE, topic) is None
    assert topic_key(PREFIX + "x", STATE, topic) is None
    assert topic_key("companion", STATE, topic) is None  # a string prefix, not a level


def test_key_topic_examples() -> None:
    assert key_topic("ch", STATE, "app.tally.cam1") == "ch/state/app/tally/cam1"
    assert topic_key("ch", STATE, "ch/state/app/tally/cam1") == "app.tally.cam1"
    assert topic_key("a/b", VALUE, "a/b/value/x") == "x"


@pytest.mark.parametrize(
    "topic",
    [
        "ch/state/",  # no key
        "ch/state/a//b",  # empty level
        "ch/state/a/",  # trailing slash
        "ch/state/a b",  # not a segment
        "ch/state/a/+",
        "ch/state/" + "x" * 65,  # segment too long
        "ch/state/" + "/".join(["abcdefgh"] * 40),  # key longer than 256
        "ch/stateX/a",
        "ch/value/a",
    ],
)
def test_topic_key_rejects_non_keys(topic: str) -> None:
    assert topic_key("ch", STATE, topic) is None


# --- commands ------------------------------------------------------------------------------


def test_parse_command_topic_target_with_dots() -> None:
    cmd = parse_command_topic("ch", "ch/command/app.tally/set")
    assert cmd == CommandTopic("app.tally", "set", None)


def test_parse_command_topic_with_request_id() -> None:
    cmd = parse_command_topic("ch", "ch/command/companion/press/req-1")
    assert cmd == CommandTopic("companion", "press", "req-1")
    assert parse_command_topic("a/b", "a/b/command/x.y.z/do/42") == CommandTopic(
        "x.y.z", "do", "42"
    )


def test_parse_command_topic_request_id_length() -> None:
    ok = "r" * 128
    assert parse_command_topic("ch", f"ch/command/app.x/go/{ok}") == CommandTopic("app.x", "go", ok)
    assert parse_command_topic("ch", f"ch/command/app.x/go/{ok}r") is None
    assert parse_command_topic("ch", "ch/command/app.x/go/") is None  # empty id


@pytest.mark.parametrize(
    "topic",
    [
        "ch/command/app.x",  # no name
        "ch/command/app.x/go/id/extra",  # extra level
        "ch/command/app.x/go/id/extra/more",
        "ch/command/app..x/go",  # invalid target
        "ch/command/app x/go",
        "ch/command//go",
        "ch/command/app.x/g o",  # invalid name
        "ch/command/app.x/",
        "ch/command/app.x/" + "n" * 65,
        "ch/reply/app.x/go",  # another kind
        "other/command/app.x/go",  # another prefix
        "chx/command/app.x/go",
    ],
)
def test_parse_command_topic_rejects(topic: str) -> None:
    assert parse_command_topic("ch", topic) is None


def test_reply_topic() -> None:
    assert reply_topic("ch", CommandTopic("app.tally", "set", None)) == "ch/reply/app.tally/set"
    assert reply_topic("a/b", CommandTopic("companion", "press", "r1")) == (
        "a/b/reply/companion/press/r1"
    )
    cmd = parse_command_topic("ch", "ch/command/app.tally/set/abc")
    assert cmd is not None
    assert reply_topic("ch", cmd) == "ch/reply/app.tally/set/abc"


# --- prefixes and filters --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["companion-hub", "a/b/c", "studio hub", "x"])
def test_check_prefix_accepts(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    ["", "/a", "$SYS", "$x/y", "a/", "a/+", "+", "a/#", "#", "a+b", "a#", "a//b", "x" * 1025],
)
def test_check_prefix_rejects(prefix: str) -> None:
    with pytest.raises(TopicError):
        check_prefix(prefix)


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("a/+/b", ["a", "+", "b"]),
        ("#", ["#"]),
        ("+", ["+"]),
        ("a/#", ["a", "#"]),
        ("+/+/#", ["+", "+", "#"]),
        ("a//b", ["a", "", "b"]),
    ],
)
def test_check_filter_accepts(text: str, levels: list[str]) -> None:
    assert check_filter(text) == levels


@pytest.mark.parametrize("text", ["", "a/#/b", "#/a", "a+", "a/b#", "+a/b", "a/++", "x" * 65536])
def test_check_filter_rejects(text: str) -> None:
    with pytest.raises(TopicError):
        check_filter(text)


def test_filter_matches_plus_captures_in_order() -> None:
    assert filter_matches(["a", "+", "b", "+"], "a/x/b/y") == ["x", "y"]
    assert filter_matches(["+", "+"], "p/q") == ["p", "q"]
    assert filter_matches(["a", "+", "b"], "a//b") == [""]  # an empty level is a level
    assert filter_matches(["a", "b"], "a/b") == []


def test_filter_matches_hash_remainder() -> None:
    assert filter_matches(["a", "#"], "a/b/c/d") == ["b/c/d"]
    assert filter_matches(["+", "#"], "x/y/z") == ["x", "y/z"]
    assert filter_matches(["#"], "a/b") == ["a/b"]


def test_filter_matches_hash_matches_the_parent_level() -> None:
    # MQTT 3.1.1 section 4.7.1.2: "sport/#" also matches "sport"
    assert filter_matches(["sport", "#"], "sport") is not None
    assert filter_matches(["sport", "#"], "sport") == [""]
    assert filter_matches(["sport", "+", "#"], "sport/x") == ["x", ""]


@pytest.mark.parametrize(
    ("levels", "topic"),
    [
        (["a", "+"], "a"),  # '+' needs a level
        (["a", "+"], "a/b/c"),  # too many levels
        (["a", "b"], "a/c"),
        (["a", "b"], "a/b/c"),
        (["a", "b", "#"], "a"),
        (["a", "#"], "b/a"),
        (["a"], "A"),
    ],
)
def test_filter_matches_no_match(levels: list[str], topic: str) -> None:
    assert filter_matches(levels, topic) is None


def test_filter_matches_dollar_topics() -> None:
    assert filter_matches(["+", "x"], "$SYS/x") is None
    assert filter_matches(["#"], "$SYS/x") is None
    assert filter_matches(["+", "#"], "$SYS/x") is None
    assert filter_matches(["$SYS", "#"], "$SYS/x") == ["x"]
    assert filter_matches(["$SYS", "+"], "$SYS/x") == ["x"]
    assert filter_matches(["a", "+"], "a/$x") == ["$x"]  # only the first level is special


# --- filters_overlap -----------------------------------------------------------------------

FILTER_LEVELS = ["a", "b", "$s", "+"]
TOPIC_LEVELS = ["a", "b", "c", "$s", ""]


@st.composite
def small_filters(draw: st.DrawFn) -> list[str]:
    levels = draw(st.lists(st.sampled_from(FILTER_LEVELS), min_size=0, max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return levels


small_topics = st.lists(st.sampled_from(TOPIC_LEVELS), min_size=1, max_size=6).map("/".join)


@settings(max_examples=200, deadline=None)
@given(a=small_filters(), b=small_filters(), t=small_topics)
def test_filters_overlap_is_sound(a: list[str], b: list[str], t: str) -> None:
    if filter_matches(a, t) is not None and filter_matches(b, t) is not None:
        assert filters_overlap(a, b), (a, b, t)


@settings(max_examples=200, deadline=None)
@given(a=small_filters(), b=small_filters())
def test_filters_overlap_sound_exhaustively_and_symmetric(a: list[str], b: list[str]) -> None:
    assert filters_overlap(a, b) == filters_overlap(b, a)
    if filters_overlap(a, b):
        return
    n = max(len(a), len(b)) + 1
    for size in range(1, n + 1):
        for levels in itertools.product(TOPIC_LEVELS, repeat=size):
            t = "/".join(levels)
            both = filter_matches(a, t) is not None and filter_matches(b, t) is not None
            assert not both, (a, b, t)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a/#", "a", True),
        ("#", "x/y", True),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/b", "a/c", False),
        ("+/+", "+", False),
        ("companion-hub/#", "+/state/#", True),
        ("companion-hub/#", "tasmota/+/STATE", False),
        ("companion-hub/#", "companion-hubx/#", False),
    ],
)
def test_filters_overlap_examples(a: str, b: str, expected: bool) -> None:
    assert filters_overlap(a.split("/"), b.split("/")) is expected
    assert filters_overlap(b.split("/"), a.split("/")) is expected


# --- import rules ----------------------------------------------------------------------------


def test_import_rule_plus_in_order() -> None:
    rule = ImportRule("tasmota/+/STATE", "mqtt.tasmota.<+>.state")
    caps = rule.match("tasmota/plug1/STATE")
    assert caps == ["plug1"]
    assert rule.key_for(caps) == "mqtt.tasmota.plug1.state"
    assert rule.match("tasmota/plug1/SENSOR") is None

    two = ImportRule("a/+/b/+", "mqtt.<+>.<+>")
    assert two.key_for(two.match("a/x/b/y") or []) == "mqtt.x.y"


def test_import_rule_numbered_placeholders() -> None:
    rule = ImportRule("a/+/b/+", "mqtt.<2>.<1>.<2>")
    assert rule.key_for(["x", "y"]) == "mqtt.y.x.y"
    mixed = ImportRule("a/+/+", "mqtt.<+>.n.<1>")
    assert mixed.key_for(["p", "q"]) == "mqtt.p.n.p"


def test_import_rule_hash_levels_joined_by_dots() -> None:
    rule = ImportRule("zigbee2mqtt/#", "mqtt.z2m.<#>")
    caps = rule.match("zigbee2mqtt/living/lamp")
    assert caps == ["living/lamp"]
    assert rule.key_for(caps) == "mqtt.z2m.living.lamp"
    both = ImportRule("home/+/#", "mqtt.<+>.<#>")
    assert both.key_for(both.match("home/r1/a/b/c") or []) == "mqtt.r1.a.b.c"
    # the parent level: '#' matched nothing, so there is no segment for <#>
    assert rule.key_for(rule.match("zigbee2mqtt") or []) is None
    # an empty level in the remainder is not a segment
    assert rule.key_for(["a//b"]) is None
    assert rule.key_for(["a/"]) is None


def test_import_rule_device_and_availability_match() -> None:
    rule = ImportRule("tasmota/+/STATE", "mqtt.t.<+>", availability="tasmota/+/LWT")
    assert rule.availability_levels == ("tasmota", "+", "LWT")
    assert rule.device(["plug1"]) == ("plug1",)
    assert rule.availability_match("tasmota/plug1/LWT") == ("plug1",)
    assert rule.availability_match("tasmota/plug1/STATE") is None
    assert ImportRule("a/+", "mqtt.<+>").availability_match("a/x") is None


@pytest.mark.parametrize(
    ("topic", "key", "kwargs"),
    [
        ("a/+", "mqtt.<+>.<+>", {}),  # more <+> than '+'
        ("a/b", "mqtt.<+>", {}),
        ("a/+", "mqtt.<#>", {}),  # <#> without a trailing '#'
        ("a/+/+", "mqtt.<3>", {}),  # beyond the '+' count
        ("a/b", "mqtt.<1>", {}),
        ("a/+", "mqtt.a b.<+>", {}),  # invalid literal characters
        ("a/+", "mqtt.<+>/x", {}),
        ("a/+", "mqtt..<+>", {}),  # empty segment
        ("a/+", "mqtt.<+>.", {}),
        ("a/+", "mqtt.<0>", {}),  # not a placeholder
        ("a/+", "mqtt.<x>", {}),
        ("a/+", "mqtt.*", {}),
        ("a/#/b", "mqtt.x", {}),  # invalid filter
        ("", "mqtt.x", {}),
        ("a/+", "mqtt.<+>", {"availability": "a/+/+/lwt"}),  # different '+' count
        ("a/+", "mqtt.<+>", {"availability": "a/lwt"}),
        ("a/+", "mqtt.<+>", {"availability": "a/+/#"}),  # '#' in availability
        ("a/+", "mqtt.<+>", {"availability": "a/+/x#"}),
        ("a/+", "mqtt.<+>", {"format": "xml"}),  # bad format
        ("a/+", "mqtt.<+>", {"format": "JSON"}),
    ],
)
def test_import_rule_validation(topic: str, key: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(TopicError):
        ImportRule(topic, key, **kwargs)


def test_import_rule_valid_variants() -> None:
    ImportRule("a/+", "mqtt.x<+>y", format="text")  # a placeholder inside a segment
    ImportRule("+/+/#", "mqtt.<2>.<#>", availability="+/+/status")
    ImportRule("a/b", "mqtt.ab")


@pytest.mark.parametrize("level", ["a b", "x.y", "", "x" * 65, "a+b", "ü", "a\x00", "."])
def test_import_rule_key_for_refuses_non_segments(level: str) -> None:
    rule = ImportRule("dev/+/state", "mqtt.dev.<+>.state")
    assert rule.key_for([level]) is None


def test_import_rule_key_for_too_long_key() -> None:
    rule = ImportRule("dev/+/+/+/+/+", "mqtt.<+>.<+>.<+>.<+>.<+>")
    assert rule.key_for(["x" * 60] * 5) is None  # each a segment, the key > 256


level_text = st.text(alphabet="ab.-_ $/", min_size=0, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    level=level_text.filter(lambda s: "/" not in s), other=level_text.filter(lambda s: "/" not in s)
)
def test_import_rule_levels_never_inject_segments(level: str, other: str) -> None:
    rule = ImportRule("dev/+/+/state", "mqtt.dev.<+>.<2>.state")
    key = rule.key_for([level, other])
    if key is not None:
        assert is_valid_key(key)
        assert key.split(".") == ["mqtt", "dev", level, other, "state"]


@settings(max_examples=200, deadline=None)
@given(rest=level_text)
def test_import_rule_hash_never_injects_segments(rest: str) -> None:
    rule = ImportRule("dev/#", "mqtt.d.<#>")
    key = rule.key_for([rest])
    if key is not None:
        assert is_valid_key(key)
        assert key.split(".")[2:] == rest.split("/")


@pytest.mark.parametrize(
    ("payload", "state"),
    [
        (b"Online", True),
        (b"online", True),
        (b"ONLINE", True),
        (b"  Online \n", True),
        (b'"Online"', True),
        (b'{"state":"online"}', True),
        (b'{"state": "ONLINE", "x": 1}', True),
        (b"Offline", False),
        (b"  offline  ", False),
        (b'"offline"', False),
        (b'{"state":"offline"}', False),
        (b'{ "other": 1, "state" : "Offline" }', False),
        (b"", None),
        (b"maybe", None),
        (b"online now", None),
        (b'{"status":"online"}', None),
        (b"1", None),
        (b"\xff\xfe", None),
    ],
)
def test_availability_state(payload: bytes, state: bool | None) -> None:
    rule = ImportRule(
        "tasmota/+/STATE",
        "mqtt.t.<+>",
        availability="tasmota/+/LWT",
        online="Online",
        offline="Offline",
    )
    assert rule.availability_state(payload) is state


def test_availability_state_custom_words() -> None:
    rule = ImportRule("d/+", "mqtt.<+>", availability="d/+/a", online="1", offline="0")
    assert rule.availability_state(b"1") is True
    assert rule.availability_state(b"0") is False
    assert rule.availability_state(b"online") is None


def test_namespace_ok() -> None:
    assert ImportRule("a/+", "mqtt.<+>").namespace_ok("mqtt")
    assert ImportRule("a/+", "mqtt.sub.<+>").namespace_ok("mqtt.sub")
    assert ImportRule("a/+", "mqtt.sub.<+>").namespace_ok("mqtt")
    assert not ImportRule("a/+", "mqtt.<+>").namespace_ok("mqtt2")
    assert not ImportRule("a/+", "mqtt2.<+>").namespace_ok("mqtt")
    assert not ImportRule("a/+", "mqtt.<+>").namespace_ok("mq")
    assert not ImportRule("a/+", "<+>.x").namespace_ok("mqtt")
    assert not ImportRule("a/b", "mqtt").namespace_ok("mqtt")  # the namespace itself
