"""The ``[[mqtt]]`` configuration: TOML, flags, the resolved bridge config, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion_hub.adapters.mqtt.config import MqttConfig
from companion_hub.adapters.mqtt.topics import ImportRule
from companion_hub.config import ConfigError, Settings, load_settings

FULL = """
[[mqtt]]
name = "studio"
host = "broker.local"
username = "hub"
password_env = "STUDIO_MQTT_PW"
prefix = "studio/hub"
publish = ["app.**", "companion.**"]
plain = true
version = "3.1.1"
qos = 0
keepalive = 60
namespace = "devices"

[[mqtt.import]]
topic = "tasmota/+/STATE"
key = "devices.tasmota.<+>.state"
availability = "tasmota/+/LWT"
online = "Online"
offline = "Offline"

[[mqtt.import]]
topic = "zigbee2mqtt/#"
key = "devices.z2m.<#>"
format = "text"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hub.toml"
    p.write_text(text)
    return p


def load(tmp_path: Path, text: str, **overrides: object) -> Settings:
    return load_settings(write(tmp_path, text), env={}, overrides=overrides or None)


def bridge(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> MqttConfig:
    s = load(tmp_path, text)
    assert len(s.mqtt) == 1
    return s.mqtt[0].bridge_config(env or {})


def test_full_table(tmp_path: Path) -> None:
    cfg = bridge(tmp_path, FULL, {"STUDIO_MQTT_PW": "s3cret-pw"})
    assert cfg.name == "studio"
    assert cfg.actor == "bridge:studio"
    assert (cfg.host, cfg.port, cfg.tls) == ("broker.local", 1883, False)
    assert cfg.url == "mqtt://broker.local:1883"
    assert cfg.username == "hub"
    assert cfg.password == "s3cret-pw"
    assert cfg.prefix == "studio/hub"
    assert cfg.publish == ["app.**", "companion.**"]
    assert cfg.plain is True
    assert (cfg.version, cfg.qos, cfg.keepalive) == ("3.1.1", 0, 60)
    assert cfg.namespace == "devices"
    assert cfg.imports == [
        ImportRule(
            "tasmota/+/STATE", "devices.tasmota.<+>.state", "tasmota/+/LWT", "Online", "Offline"
        ),
        ImportRule("zigbee2mqtt/#", "devices.z2m.<#>", None, format="text"),
    ]
    rule = cfg.imports[0]
    assert rule.key_for(rule.match("tasmota/plug/STATE") or []) == "devices.tasmota.plug.state"
    assert rule.availability_state(b"Offline") is False


def test_defaults(tmp_path: Path) -> None:
    cfg = bridge(tmp_path, "[[mqtt]]\n")
    assert (cfg.name, cfg.host, cfg.port) == ("mqtt", "127.0.0.1", 1883)
    assert cfg.prefix == "companion-hub"
    assert (cfg.username, cfg.password, cfg.tls_ca) == (None, None, None)
    assert cfg.namespace == "mqtt" and cfg.imports == []
    assert (cfg.version, cfg.qos) == ("5", 1)
    assert load_settings(env={}).mqtt == []


def test_tls_default_port(tmp_path: Path) -> None:
    cfg = bridge(tmp_path, '[[mqtt]]\ntls = true\ntls_ca = "/etc/ca.pem"\n')
    assert (cfg.port, cfg.tls, cfg.tls_ca) == (8883, True, "/etc/ca.pem")
    assert cfg.url.startswith("mqtts://")
    assert bridge(tmp_path, "[[mqtt]]\ntls = true\nport = 9999\n").port == 9999
    assert bridge(tmp_path, "[[mqtt]]\nport = 1884\n").port == 1884


def test_password_from_default_env_variable(tmp_path: Path) -> None:
    cfg = bridge(tmp_path, "[[mqtt]]\n", {"COMPANION_HUB_MQTT_PASSWORD": "pw1"})
    assert cfg.password == "pw1"
    assert bridge(tmp_path, "[[mqtt]]\n", {"OTHER": "x"}).password is None


def test_password_from_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw.txt"
    pw.write_text("  file-secret\n")
    cfg = bridge(tmp_path, f'[[mqtt]]\npassword_file = "{pw}"\n')
    assert cfg.password == "file-secret"


def test_password_file_missing(tmp_path: Path) -> None:
    s = load(tmp_path, f'[[mqtt]]\npassword_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match="password_file"):
        s.mqtt[0].bridge_config({})


def test_password_never_in_repr(tmp_path: Path) -> None:
    cfg = bridge(tmp_path, FULL, {"STUDIO_MQTT_PW": "s3cret-pw"})
    assert cfg.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(cfg)
    assert "s3cret-pw" not in str(cfg)
    s = load(tmp_path, FULL)
    assert "s3cret-pw" not in repr(s)


def test_overrides_create_the_first_bridge() -> None:
    s = load_settings(env={}, overrides={"mqtt_broker": "10.0.0.5:1884", "mqtt_prefix": "studio"})
    assert len(s.mqtt) == 1
    cfg = s.mqtt[0].bridge_config({})
    assert (cfg.host, cfg.port, cfg.prefix) == ("10.0.0.5", 1884, "studio")


def test_overrides_patch_only_the_first_bridge(tmp_path: Path) -> None:
    text = (
        '[[mqtt]]\nname = "one"\nhost = "a.local"\nusername = "u1"\n'
        '[[mqtt]]\nname = "two"\nhost = "b.local"\n'
    )
    s = load(tmp_path, text, mqtt_broker="c.local", mqtt_prefix="p", mqtt_version=None)
    first, second = (m.bridge_config({}) for m in s.mqtt)
    assert (first.name, first.host, first.port, first.prefix) == ("one", "c.local", 1883, "p")
    assert first.username == "u1"  # kept from the file
    assert (second.name, second.host, second.prefix) == ("two", "b.local", "companion-hub")


def test_override_none_values_are_ignored(tmp_path: Path) -> None:
    s = load_settings(env={}, overrides={"mqtt_broker": None, "mqtt_prefix": None})
    assert s.mqtt == []


@pytest.mark.parametrize(
    ("broker", "host", "port"),
    [
        ("10.0.0.5:1884", "10.0.0.5", 1884),
        ("broker.local", "broker.local", 1883),
        ("broker.local:8883", "broker.local", 8883),
        ("[::1]:1883", "::1", 1883),
        ("[fe80::1]:1884", "fe80::1", 1884),
    ],
)
def test_broker_flag(broker: str, host: str, port: int) -> None:
    cfg = load_settings(env={}, overrides={"mqtt_broker": broker}).mqtt[0].bridge_config({})
    assert (cfg.host, cfg.port) == (host, port)


@pytest.mark.parametrize(
    ("broker", "host"), [("::1", "::1"), ("fe80::1", "fe80::1"), ("[::1]", "::1")]
)
def test_broker_flag_ipv6_without_port(broker: str, host: str) -> None:
    cfg = load_settings(env={}, overrides={"mqtt_broker": broker}).mqtt[0].bridge_config({})
    assert (cfg.host, cfg.port) == (host, 1883)


def test_broker_flag_port_out_of_range() -> None:
    s = load_settings(env={}, overrides={"mqtt_broker": "h:70000"})
    with pytest.raises(ConfigError, match="port"):
        s.mqtt[0].bridge_config({})


# --- validation -----------------------------------------------------------------------------


def import_table(topic: str, key: str = "mqtt.<#>", extra: str = "", prefix: str = "") -> str:
    head = f"[[mqtt]]\n{f'prefix = {prefix!r}' if prefix else ''}\n"
    return head + f'[[mqtt.import]]\ntopic = "{topic}"\nkey = "{key}"\n{extra}\n'


@pytest.mark.parametrize(
    ("topic", "key", "extra", "prefix"),
    [
        ("companion-hub/#", "mqtt.<#>", "", ""),
        ("+/state/#", "mqtt.<+>.<#>", "", ""),
        ("#", "mqtt.<#>", "", ""),
        ("+/#", "mqtt.<+>", "", ""),
        ("companion-hub/state/+", "mqtt.<+>", "", ""),
        ("studio/+/status", "mqtt.<+>", "", "studio/hub"),
        ("dev/+/state", "mqtt.<+>", 'availability = "+/status"', ""),  # the availability
    ],
)
def test_import_overlapping_own_topics(
    tmp_path: Path, topic: str, key: str, extra: str, prefix: str
) -> None:
    s = load(tmp_path, import_table(topic, key, extra, prefix))
    with pytest.raises(ConfigError, match="overlaps"):
        s.mqtt[0].bridge_config({})


@pytest.mark.parametrize(
    ("topic", "key"),
    [("companion-hubx/#", "mqtt.<#>"), ("tasmota/+/STATE", "mqtt.<+>"), ("state/#", "mqtt.<#>")],
)
def test_import_not_overlapping(tmp_path: Path, topic: str, key: str) -> None:
    cfg = bridge(tmp_path, import_table(topic, key))
    assert [r.topic for r in cfg.imports] == [topic]


@pytest.mark.parametrize("key", ["other.<+>", "mqttx.<+>", "<+>.mqtt", "mqtt"])
def test_import_key_outside_namespace(tmp_path: Path, key: str) -> None:
    s = load(tmp_path, import_table("dev/+", key))
    with pytest.raises(ConfigError, match="namespace"):
        s.mqtt[0].bridge_config({})


@pytest.mark.parametrize(
    ("topic", "key", "extra"),
    [
        ("dev/+", "mqtt.<+>.<+>", ""),
        ("dev/+", "mqtt.<#>", ""),
        ("dev/#/x", "mqtt.x", ""),
        ("dev/+", "mqtt.<+>", 'format = "xml"'),
        ("dev/+", "mqtt.<+>", 'availability = "dev/#"'),
    ],
)
def test_bad_import_rule(tmp_path: Path, topic: str, key: str, extra: str) -> None:
    s = load(tmp_path, import_table(topic, key, extra))
    with pytest.raises(ConfigError, match="mqtt 'mqtt'"):
        s.mqtt[0].bridge_config({})


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('version = "4"', "version"),
        ('version = "3"', "version"),
        ("qos = 2", "qos"),
        ("qos = -1", "qos"),
        ('prefix = ""', "prefix"),
        ('prefix = "/x"', "prefix"),
        ('prefix = "a/#"', "prefix"),
        ('prefix = "$SYS"', "prefix"),
        ('prefix = "a/"', "prefix"),
        ("keepalive = 1", "keepalive"),
        ('namespace = "hub"', "namespace"),
        ('namespace = "hub.x"', "namespace"),
        ('namespace = "app.x"', "namespace"),
        ('namespace = "a b"', "namespace"),
        ('publish = ["a..b"]', "pattern"),
        ('discovery = true\ndiscovery_prefix = "/ha"', "prefix"),
    ],
)
def test_bad_bridge_settings(tmp_path: Path, line: str, match: str) -> None:
    s = load(tmp_path, f"[[mqtt]]\n{line}\n")
    with pytest.raises(ConfigError, match=match):
        s.mqtt[0].bridge_config({})


@pytest.mark.parametrize("line", ["version = 5", 'qos = "1"', 'unknown = "x"', 'port = "x"'])
def test_bad_types_refused_at_load(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, f"[[mqtt]]\n{line}\n")


def test_unknown_import_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, import_table("dev/+", "mqtt.<+>", "qos = 1"))


def test_duplicate_bridge_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="own name"):
        load(tmp_path, '[[mqtt]]\nhost = "a"\n[[mqtt]]\nhost = "b"\n')
    s = load(tmp_path, '[[mqtt]]\nname = "a"\n[[mqtt]]\nname = "b"\n')
    assert [m.name for m in s.mqtt] == ["a", "b"]


def test_bridge_name_equal_to_companion_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="differ"):
        load(tmp_path, '[[companion]]\nname = "x"\n[[mqtt]]\nname = "x"\n')


@pytest.mark.parametrize("name", ["Studio", "-x", "a b", ""])
def test_bad_bridge_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        load(tmp_path, f'[[mqtt]]\nname = "{name}"\n')


def test_bridge_namespace_equal_to_companion_namespace(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Companion"):
        load(tmp_path, '[[companion]]\n[[mqtt]]\nnamespace = "companion"\n')


def test_importing_bridges_need_their_own_namespaces(tmp_path: Path) -> None:
    one = import_table("a/+", "mqtt.<+>").replace("[[mqtt]]", '[[mqtt]]\nname = "one"')
    two = import_table("b/+", "mqtt.<+>").replace("[[mqtt]]", '[[mqtt]]\nname = "two"')
    with pytest.raises(ConfigError, match="namespaces"):
        load(tmp_path, one + two)


@pytest.mark.parametrize(
    "text",
    [
        '[[companion]]\n[[mqtt]]\nnamespace = "companion.mqtt"\n'
        '[[mqtt.import]]\ntopic = "a/+"\nkey = "companion.mqtt.<+>"\n',
        '[[mqtt]]\nname = "a"\n[[mqtt.import]]\ntopic = "a/+"\nkey = "mqtt.<+>"\n'
        '[[mqtt]]\nname = "b"\nnamespace = "mqtt.sub"\n'
        '[[mqtt.import]]\ntopic = "b/+"\nkey = "mqtt.sub.<+>"\n',
    ],
)
def test_nested_namespaces_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        s = load(tmp_path, text)
        for m in s.mqtt:
            m.bridge_config({})
