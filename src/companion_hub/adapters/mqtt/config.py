"""An MQTT bridge's configuration (one ``[[mqtt]]`` table), as the bridge uses it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .topics import ImportRule

DEFAULT_PREFIX = "companion-hub"
DEFAULT_CALL = ("companion:*", "app.*:*")  # what the built-in operator role may call


@dataclass
class MqttTiming:
    """Back-off between broker connection attempts and the connect timeout (seconds)."""

    backoff_base: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    stable_after: float = 30.0
    # reading what the broker retains after a connection: given up after this long
    # without a message
    sweep_timeout: float = 10.0


@dataclass
class MqttConfig:
    """One bridge. ``password`` is the resolved secret: never logged, never in repr."""

    name: str = "mqtt"
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""  # "" = companion-hub-<name>-<random>
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca: str | None = None  # a CA bundle (PEM) instead of the system's
    prefix: str = "companion-hub"
    publish: list[str] = field(default_factory=lambda: ["**"])
    plain: bool = False  # also <prefix>/value/... with the bare value
    version: str = "5"  # "5" or "3.1.1"
    qos: int = 1
    keepalive: int = 30
    commands: bool = True
    call: list[str] = field(default_factory=lambda: list(DEFAULT_CALL))
    namespace: str = "mqtt"  # the namespace the imports write (owned by the bridge)
    imports: list[ImportRule] = field(default_factory=list)
    max_imported_keys: int = 10_000
    max_in_flight: int = 100  # QoS 1 publishes not yet acknowledged
    discovery: bool = False  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    discovery_companion: str = "companion"  # the Companion namespace to announce
    timing: MqttTiming = field(default_factory=MqttTiming)

    @property
    def actor(self) -> str:
        return f"bridge:{self.name}"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def validate(cfg: MqttConfig) -> None:
    """Raise ValueError (or TopicError) naming what is wrong with ``cfg``."""
    from ...core.acl import Role
    from ...core.keys import is_valid_key, parse_pattern
    from .topics import check_prefix, filters_overlap

    check_prefix(cfg.prefix)
    if not 0 < cfg.port < 65536:
        raise ValueError(f"port {cfg.port}: 1-65535")
    if cfg.version not in ("5", "3.1.1"):
        raise ValueError(f"version {cfg.version!r}: '5' or '3.1.1'")
    if cfg.qos not in (0, 1):
        raise ValueError(f"qos {cfg.qos}: 0 or 1 (retained state needs no more)")
    if not 5 <= cfg.keepalive <= 3600:
        raise ValueError(f"keepalive {cfg.keepalive}: 5-3600 seconds")
    if not 1 <= cfg.max_in_flight <= 65535 or cfg.max_imported_keys < 1:
        raise ValueError("max_in_flight: 1-65535; max_imported_keys: at least 1")
    for p in cfg.publish:
        parse_pattern(p)
    Role("mqtt", own=(), call=tuple(cfg.call)).check()
    ns = cfg.namespace
    if not is_valid_key(ns) or ns == "hub" or ns.startswith(("hub.", "app.")):
        raise ValueError(f"namespace {ns!r} is not allowed")
    if cfg.discovery:
        check_prefix(cfg.discovery_prefix)
    own = [[*cfg.prefix.split("/"), "#"]]
    if cfg.discovery:
        own.append([*cfg.discovery_prefix.split("/"), "#"])
    for rule in cfg.imports:
        for f in (rule.topic, rule.availability):
            for tree in own:
                if f and filters_overlap(f.split("/"), tree):
                    raise ValueError(
                        f"import filter {f!r} overlaps the bridge's own topics "
                        f"{'/'.join(tree)} (it would import what the bridge publishes)"
                    )
        if not rule.namespace_ok(ns):
            raise ValueError(f"import key {rule.key!r} must be under the namespace {ns!r}")
