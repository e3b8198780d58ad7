"""Configuration: file < environment < flags, and clear validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion_hub.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hub.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    s = load_settings(env={})
    assert (s.host, s.port, s.heartbeat_ms, s.log_level) == ("127.0.0.1", 8420, 10_000, "info")
    cfg = s.hub_config()
    assert cfg.limits.frame_bytes == 1 << 20 and cfg.limits.value_bytes == 256 * 1024


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        'port = 9000\nhost = "0.0.0.0"\nheartbeat_ms = 2000\n[limits]\nvalue_bytes = 1000\n',
    )
    s = load_settings(p, env={})
    assert (s.port, s.host, s.limits.value_bytes) == (9000, "0.0.0.0", 1000)
    s = load_settings(p, env={"COMPANION_HUB_PORT": "9100"})
    assert s.port == 9100 and s.host == "0.0.0.0"
    s = load_settings(p, env={"COMPANION_HUB_PORT": "9100"}, overrides={"port": 9200, "host": None})
    assert s.port == 9200 and s.host == "0.0.0.0"
    assert s.hub_config().limits.value_bytes == 1000


def test_config_file_from_environment(tmp_path: Path) -> None:
    p = write(tmp_path, "port = 9300\n")
    assert load_settings(env={"COMPANION_HUB_CONFIG": str(p)}).port == 9300


def test_grants(tmp_path: Path) -> None:
    p = write(tmp_path, '[grants]\nstagedisplay = ["stage", "app.shared"]\n')
    assert load_settings(p, env={}).hub_config().grants == {"stagedisplay": ["stage", "app.shared"]}


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("port = 'x'\n", {}, "Expected `int`, got `str` - at `$.port`"),
        ("prot = 1\n", {}, "unknown field `prot`"),
        ("port = 70000\n", {}, "port 70000: must be 0-65535"),
        ("[limits]\nframe_bytes = 0\n", {}, "limits.frame_bytes = 0: must be positive"),
        ("log_level = 'loud'\n", {}, "log_level 'loud'"),
        ("[grants]\nx = ['hub.mine']\n", {}, "not a namespace a client may own"),
        ("port = \n", {}, "invalid TOML"),
        ("", {"COMPANION_HUB_PORT": "eighty"}, "COMPANION_HUB_PORT='eighty': expected an integer"),
    ],
)
def test_validation_messages(tmp_path: Path, text: str, env: dict, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_settings(p, env=env)
    assert message in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("/nonexistent/hub.toml", env={})


def test_companion_tables_and_flags(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
[[companion]]
host = "10.0.0.5"
variables = ["custom:cue", "internal:time_hms"]
pages = [1, 2]

[[companion.transferable]]
id = "tally"
type = "output"

[[companion]]
name = "backup"
namespace = "backup"
host = "10.0.0.6"
transport = "ws"
""",
    )
    s = load_settings(p, env={})
    first, second = (c.adapter_config() for c in s.companion)
    assert (first.host, first.port, first.http_port, first.pages) == (
        "10.0.0.5",
        16622,
        8000,
        [1, 2],
    )
    assert first.transferable[0].id == "tally" and first.transferable[0].type == "output"
    assert (second.namespace, second.port) == ("backup", 16623)
    # flags configure the first instance
    s = load_settings(
        p, env={}, overrides={"companion_host": "10.9.9.9", "companion_http_port": 8888}
    )
    assert s.companion[0].host == "10.9.9.9" and s.companion[0].http_port == 8888
    assert s.companion[1].host == "10.0.0.6"
    # and create one when the file has none
    s = load_settings(env={}, overrides={"companion_host": "studio", "companion_transport": "ws"})
    assert [(c.host, c.transport) for c in s.companion] == [("studio", "ws")]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('transport = "udp"', "transport 'udp'"),
        ('namespace = "app.x"', "namespace 'app.x' is not allowed"),
        ('variables = ["cue"]', "expected 'connection:name'"),
        ("poll_interval = 0", "at least 0.05 s"),
        ('transferable = [{ id = "x", type = "both" }]', "type is 'input' or 'output'"),
    ],
)
def test_companion_validation(tmp_path: Path, table: str, message: str) -> None:
    p = write(tmp_path, f"[[companion]]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(p, env={})


def test_companion_variable_flags_add_to_the_file_and_ember_can_be_turned_off(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[[companion]]\nhost = "10.0.0.5"\nvariables = ["obs:scene"]\n')
    s = load_settings(
        path,
        env={},
        overrides={
            "companion_variables": ["custom:cue", "obs:scene"],
            "companion_ember": False,
            "companion_ember_port": 9993,
        },
    )
    c = s.companion[0].adapter_config()
    assert c.host == "10.0.0.5"
    assert c.variables == ["obs:scene", "custom:cue"]  # added, not duplicated
    assert c.ember is False and c.ember_port == 9993
    default = load_settings(env={}, overrides={"companion_host": "h"}).companion[0]
    assert default.adapter_config().ember is True and default.ember_port == 9092


def test_flush_delay_is_bounded() -> None:
    assert load_settings(env={}).hub_config().flush_delay_ms == 5.0
    assert load_settings(env={}, overrides={"flush_delay_ms": 0}).hub_config().flush_delay_ms == 0
    with pytest.raises(ConfigError, match="flush_delay_ms"):
        load_settings(env={}, overrides={"flush_delay_ms": 50})
