"""Export rules, value -> text, the coalescing queue and the config tables (pure)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from companion_hub.adapters.companion.export import (
    ExportQueue,
    ExportRule,
    WriteResult,
    check_rules,
    value_text,
)
from companion_hub.config import ConfigError, load_settings
from companion_hub.core.store import Entry

# --- rules ------------------------------------------------------------------------------


def test_exact_key_rule() -> None:
    r = ExportRule("app.tally.live", "tally_live")
    assert r.exact
    assert r.variable_for("app.tally.live") == "tally_live"
    assert r.variable_for("app.tally.live.x") is None
    assert r.variable_for("app.tally.other") is None


def test_pattern_rule_names_variables_from_star_segments() -> None:
    r = ExportRule("app.*.cams.*", "<1>-cam_<2>")
    assert not r.exact
    assert r.variable_for("app.tally.cams.3") == "tally-cam_3"
    assert r.variable_for("app.tally.cams") is None
    assert r.variable_for("app.tally.cams.3.x") is None
    swapped = ExportRule("app.*.cams.*", "<2><1>")
    assert swapped.variable_for("app.t.cams.9") == "9t"


@pytest.mark.parametrize(
    ("key", "variable", "message"),
    [
        ("app..x", "v", "key"),
        ("app.**", "v", "'**' is not allowed"),
        ("app.x", "", "empty"),
        ("app.x", "a b", "letters, digits"),
        ("app.x", "a.b", "letters, digits"),
        ("app.x", "cue_<1>", "has no '*'"),
        ("app.*.x", "v_<2>", "only 1 '*'"),
        ("app.*.x", "v_<0>", "<0>"),
        ("app.*.x.*", "v_<1>", "must use each"),
        ("app.*.x", "v", "must use each"),
        ("app.*.x", "v_<1", "letters, digits"),
    ],
)
def test_invalid_rules(key: str, variable: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ExportRule(key, variable)


def test_field_must_be_a_name_or_a_path() -> None:
    ExportRule("app.x", "v", field="a.b")
    for bad in ("", "a..b", ".a"):
        with pytest.raises(ValueError, match="field"):
            ExportRule("app.x", "v", field=bad)


def test_check_rules_refuses_loops_and_shared_variables() -> None:
    check_rules([ExportRule("app.x", "a"), ExportRule("*.live", "live_<1>")], "companion", "c")
    with pytest.raises(ValueError, match="own namespace"):
        check_rules([ExportRule("companion.variables.custom.x", "x")], "companion", "c")
    with pytest.raises(ValueError, match="own namespace"):
        check_rules([ExportRule("companion.*", "x_<1>")], "companion", "c")
    with pytest.raises(ValueError, match="own status"):
        check_rules([ExportRule("hub.adapters.c", "x")], "companion", "c")
    check_rules([ExportRule("hub.adapters.other", "x")], "companion", "c")
    check_rules([ExportRule("companionx.y", "x")], "companion", "c")  # not nested
    with pytest.raises(ValueError, match="also written by export 1"):
        check_rules([ExportRule("app.x", "a"), ExportRule("app.y", "a")], "companion", "c")


# --- values as text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Wide", "Wide"),
        ("", ""),
        (12, "12"),
        (12.0, "12"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1.5e-7, "1.5e-7"),
        (1e300, "1e+300"),
        (2**60, str(2**60)),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ({"a": 1, "b": [1, "x"]}, '{"a":1,"b":[1,"x"]}'),
        ([], "[]"),
        ("ünïcode ✓", "ünïcode ✓"),
    ],
)
def test_value_text(value: object, text: str) -> None:
    assert value_text(value) == text


def test_value_text_field() -> None:
    v = {"live": True, "time": {"left": 90.0}, "n": None}
    assert value_text(v, "live") == "true"
    assert value_text(v, "time.left") == "90"
    assert value_text(v, "time") == '{"left":90.0}'  # inside JSON, numbers stay JSON
    assert value_text(v, "n") == ""
    assert value_text(v, "absent") == ""
    assert value_text(v, "live.x") == ""
    assert value_text("not an object", "live") == ""


def _entry(value: object, stale: bool = False) -> Entry:
    return Entry("app.x", msgspec.json.encode(value), 1, 1, "app.x", stale, 0)


def test_rule_text_for_fresh_stale_and_deleted() -> None:
    r = ExportRule("app.x", "v", field="t", stale_text="--", deleted_text="gone")
    assert r.text(_entry({"t": 5})) == "5"
    assert r.text(_entry({"t": 5}, stale=True)) == "--"
    assert r.text(None) == "gone"
    default = ExportRule("app.x", "v")
    assert default.text(_entry(1, stale=True)) == "?" and default.text(None) == "?"
    same = ExportRule("app.x", "v", stale_text="")
    assert same.text(None) == ""


# --- the queue ---------------------------------------------------------------------------


def test_newest_value_wins_and_one_write_in_flight_per_variable() -> None:
    q = ExportQueue(min_interval=0.05)
    for i in range(1000):
        q.set("v", str(i))
    writes, due = q.take(0.0, 8)
    assert writes == [("v", "999")] and due is None
    for i in range(1000, 2000):
        q.set("v", str(i))
    assert q.take(1.0, 8) == ([], None)  # in flight: nothing more for "v"
    q.done("v", WriteResult.OK, 0.01)
    # written 10 ms ago: due after the interval, with the newest text
    writes, due = q.take(0.02, 8)
    assert writes == [] and due == pytest.approx(0.05)
    assert q.take(0.05, 8)[0] == [("v", "1999")]
    q.done("v", WriteResult.OK, 0.06)
    assert q.take(10.0, 8) == ([], None)  # Companion has the last value
    assert q.writes == 2 and q.changes == 2000


def test_equal_value_is_not_written_again() -> None:
    q = ExportQueue(min_interval=0)
    q.set("v", "a")
    q.take(0, 8)
    q.done("v", WriteResult.OK, 0)
    q.set("v", "b")
    q.set("v", "a")  # back to what Companion has: nothing to do
    assert q.take(1, 8) == ([], None)


def test_take_is_bounded_and_oldest_first() -> None:
    q = ExportQueue(min_interval=0)
    for i in range(20):
        q.set(f"v{i}", "x")
    first, _ = q.take(0, 8)
    assert [v for v, _ in first] == [f"v{i}" for i in range(8)]
    assert q.in_flight == 8 and q.pending == 12
    assert q.take(0, 0) == ([], None)


def test_failed_write_is_retried_later() -> None:
    q = ExportQueue(min_interval=0.05, retry_after=2.0)
    q.set("v", "a")
    q.take(0, 8)
    q.done("v", WriteResult.FAILED, 0.1)
    writes, due = q.take(0.2, 8)
    assert writes == [] and due == pytest.approx(2.1)
    assert q.take(2.1, 8)[0] == [("v", "a")]


def test_missing_variable_is_parked_until_a_retry() -> None:
    q = ExportQueue(min_interval=0)
    q.set("v", "a")
    q.take(0, 8)
    q.done("v", WriteResult.MISSING, 0)
    assert list(q.missing) == ["v"]
    q.set("v", "b")  # not tried again on every change
    assert q.take(1, 8) == ([], None)
    q.retry_missing()
    assert q.take(2, 8)[0] == [("v", "b")]
    q.done("v", WriteResult.MISSING, 2)
    assert list(q.missing) == ["v"]
    q.resend_all()  # a reconnect retries it too
    assert q.take(3, 8)[0] == [("v", "b")]
    q.done("v", WriteResult.OK, 3)
    assert not q.missing


def test_resend_all_rewrites_everything_and_distrusts_writes_in_flight() -> None:
    q = ExportQueue(min_interval=10)
    q.set("a", "1")
    q.set("b", "2")
    q.take(0, 8)
    q.done("a", WriteResult.OK, 0)
    q.resend_all()  # "b" is still in flight: its answer predates the restart
    assert q.take(0.01, 8)[0] == [("a", "1")]  # the interval does not hold it back
    q.done("b", WriteResult.OK, 0.02)
    assert q.take(0.03, 8)[0] == [("b", "2")]


def test_drop_forgets_a_variable() -> None:
    q = ExportQueue(min_interval=0)
    q.set("v", "a")
    q.take(0, 8)
    q.done("v", WriteResult.MISSING, 0)
    q.drop("v")
    assert len(q) == 0 and not q.missing
    q.resend_all()
    assert q.take(1, 8) == ([], None)


# --- configuration ------------------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return load_settings(path, env={})


def test_export_tables_become_rules(tmp_path: Path) -> None:
    s = _load(
        tmp_path,
        """
[[companion]]
name = "companion"

[[companion.export]]
key = "app.tally.live"
variable = "tally_live"

[[companion.export]]
key = "app.timer.*"
variable = "timer_<1>"
field = "remaining"
stale_text = "--"
deleted_text = ""
""",
    )
    cfg = s.companion[0].adapter_config()  # type: ignore[attr-defined]
    a, b = cfg.exports
    assert (a.key, a.variable, a.field, a.stale_text, a.deleted) == (
        "app.tally.live",
        "tally_live",
        None,
        "?",
        "?",
    )
    assert (b.variable_for("app.timer.stage"), b.field, b.stale_text, b.deleted) == (
        "timer_stage",
        "remaining",
        "--",
        "",
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('key = "app.x"\nvariable = "a b"', "export 1 (key 'app.x'): variable 'a b'"),
        ('key = "app.*"\nvariable = "x_<2>"', "<2> but the key has only 1"),
        ('key = "app..x"\nvariable = "x"', "export 1 (key 'app..x')"),
        ('key = "companion.variables.x"\nvariable = "x"', "own namespace"),
        ('key = "app.x"\nvariable = "x"\nunknown = 1', "unknown"),
        ('variable = "x"', "key"),
    ],
)
def test_export_config_errors_name_the_setting(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, f'[[companion]]\nname = "companion"\n\n[[companion.export]]\n{table}\n')


def test_export_needs_http(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="export needs the HTTP link"):
        _load(
            tmp_path,
            '[[companion]]\nhttp = false\n[[companion.export]]\nkey = "app.x"\nvariable = "x"\n',
        )
