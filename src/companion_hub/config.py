"""Configuration: a TOML file, then environment variables, then command-line flags.

Each later source overrides the earlier one. Validation gives messages that name
the setting and where it came from. See README "Configuration" for every key.

```toml
host = "127.0.0.1"
port = 8420
heartbeat_ms = 10000
log_level = "info"      # debug, info, warning, error
log_format = "json"     # json or text
max_connections = 4096              # overall (kept below the open-files limit)
max_connections_per_address = 512   # from one IP address
request_header_timeout = 10.0       # seconds to complete a request's headers

[limits]
frame_bytes = 1048576
value_bytes = 262144
history_changes = 1000000

[grants]                # extra namespaces per client name
stagedisplay = ["stage"]
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .core.acl import Role
from .core.errors import CompanionHubError, HubError
from .core.keys import is_valid_client_name, is_valid_key
from .core.limits import Limits
from .eventlog.store import default_data_dir
from .hub import HubConfig

if TYPE_CHECKING:
    from .adapters.companion.adapter import CompanionConfig
    from .adapters.companion.export import ExportRule
    from .adapters.mqtt.config import MqttConfig

ENV_PREFIX = "COMPANION_HUB_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(CompanionHubError):
    """The configuration is invalid; the message says which setting and why."""


def demo_data_dir() -> Path:
    """Where ``companion-hub demo`` keeps its event log unless told otherwise:
    ``<default data dir>/demo``. Its own directory, so a demo never mixes its history
    into (or holds the lock of) the production hub's; on disk, so the demo shows what
    the event log does (history, ``companion-hub log``, recovery after a restart)."""
    return default_data_dir() / "demo"


_D = Limits()


class LimitsFile(msgspec.Struct, forbid_unknown_fields=True):
    frame_bytes: int = _D.frame_bytes
    value_bytes: int = _D.value_bytes
    key_bytes: int = _D.key_bytes
    subscriptions: int = _D.subscriptions
    patterns_per_subscription: int = _D.patterns_per_subscription
    commands_in_flight: int = _D.commands_in_flight
    event_queue: int = _D.event_queue
    history_changes: int = _D.history_changes
    idempotency_keys_per_client: int = _D.idempotency_keys_per_client
    idempotency_bytes: int = _D.idempotency_bytes
    requests_per_second: int = _D.requests_per_second


class TransferableFile(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    type: str  # "input" or "output"
    name: str = ""
    description: str = ""


class ExportFile(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[companion.export]]``: a hub key (or pattern) -> a Companion custom
    variable (docs/companion.md, "Export")."""

    key: str
    variable: str
    field: str | None = None
    stale_text: str = "?"
    deleted_text: str | None = None  # default: stale_text


class CompanionFile(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[companion]]`` table: a Companion instance and how to mirror it."""

    host: str = "127.0.0.1"
    name: str = "companion"
    namespace: str = "companion"
    transport: str = "tcp"
    satellite_port: int | None = None
    http_port: int = 8000
    http: bool = True
    pages: list[int] = msgspec.field(default_factory=lambda: list(range(1, 9)))
    rows: int = 4
    columns: int = 8
    variables: list[str] = msgspec.field(default_factory=list)
    poll_interval: float = 1.0
    bitmaps: bool = False
    bitmap_size: int = 72
    transferable: list[TransferableFile] = msgspec.field(default_factory=list)
    device_id: str | None = None
    # Ember+ (enable it in Companion: Settings > Protocols > Ember+): every internal and
    # custom variable without listing them, pushed; off or unreachable: HTTP polling
    ember: bool = True
    ember_port: int = 9092
    export: list[ExportFile] = msgspec.field(default_factory=list)

    def export_rules(self) -> list[ExportRule]:
        """The ``[[companion.export]]`` tables as checked rules; ConfigError names the
        table and the setting."""
        from .adapters.companion.export import ExportRule, check_rules

        where = f"companion {self.name!r}"
        if self.export and not self.http:
            raise ConfigError(f"{where}: export needs the HTTP link (http = true)")
        rules = []
        for i, e in enumerate(self.export):
            try:
                rules.append(ExportRule(e.key, e.variable, e.field, e.stale_text, e.deleted_text))
            except ValueError as exc:
                raise ConfigError(f"{where}: export {i + 1} (key {e.key!r}): {exc}") from None
        try:
            check_rules(rules, self.namespace, self.name)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return rules

    def adapter_config(self) -> CompanionConfig:
        from .adapters.companion.adapter import CompanionConfig
        from .adapters.companion.satellite import Transferable

        return CompanionConfig(
            host=self.host,
            name=self.name,
            namespace=self.namespace,
            transport=self.transport,
            satellite_port=self.satellite_port,
            http_port=self.http_port,
            http=self.http,
            pages=list(self.pages),
            rows=self.rows,
            columns=self.columns,
            variables=list(self.variables),
            poll_interval=self.poll_interval,
            bitmaps=self.bitmaps,
            bitmap_size=self.bitmap_size,
            transferable=[
                Transferable(t.id, t.type, t.name or t.id, t.description) for t in self.transferable
            ],
            device_id=self.device_id,
            ember=self.ember,
            ember_port=self.ember_port,
            exports=self.export_rules(),
        )


class MqttImportFile(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[mqtt.import]]``: MQTT topic filter -> key template (docs/mqtt.md)."""

    topic: str
    key: str
    availability: str = ""
    online: str = "online"
    offline: str = "offline"
    format: str = "json"


class MqttFile(msgspec.Struct, forbid_unknown_fields=True, rename={"imports": "import"}):
    """One ``[[mqtt]]`` table: a broker and what the bridge does on it (docs/mqtt.md)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = 1883, or 8883 with tls
    name: str = "mqtt"
    client_id: str = ""
    username: str = ""
    # the password: from this environment variable, or from this file (never inline,
    # never logged)
    password_env: str = "COMPANION_HUB_MQTT_PASSWORD"
    password_file: str = ""
    tls: bool = False
    tls_ca: str = ""
    prefix: str = "companion-hub"
    publish: list[str] = msgspec.field(default_factory=lambda: ["**"])
    plain: bool = False
    version: str = "5"
    qos: int = 1
    keepalive: int = 30
    commands: bool = True
    call: list[str] = msgspec.field(default_factory=lambda: ["companion:*", "app.*:*"])
    namespace: str = "mqtt"
    imports: list[MqttImportFile] = msgspec.field(default_factory=list)
    max_imported_keys: int = 10_000
    max_in_flight: int = 100
    discovery: bool = False
    discovery_prefix: str = "homeassistant"
    discovery_companion: str = "companion"

    def bridge_config(self, env: Mapping[str, str] | None = None) -> MqttConfig:
        """The bridge's configuration; the password is read here (ConfigError if its
        file cannot be read). Raises ConfigError for an invalid table."""
        from .adapters.mqtt.config import MqttConfig, validate
        from .adapters.mqtt.topics import ImportRule, TopicError

        env = os.environ if env is None else env
        where = f"mqtt {self.name!r}"
        password: str | None = None
        if self.password_file:
            try:
                password = Path(self.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{where}: password_file: {exc.strerror}") from None
        elif self.password_env and env.get(self.password_env):
            password = env[self.password_env]
        try:
            imports = [
                ImportRule(i.topic, i.key, i.availability or None, i.online, i.offline, i.format)
                for i in self.imports
            ]
            cfg = MqttConfig(
                name=self.name,
                host=self.host,
                port=self.port or (8883 if self.tls else 1883),
                client_id=self.client_id,
                username=self.username or None,
                password=password,
                tls=self.tls,
                tls_ca=self.tls_ca or None,
                prefix=self.prefix,
                publish=list(self.publish),
                plain=self.plain,
                version=self.version,
                qos=self.qos,
                keepalive=self.keepalive,
                commands=self.commands,
                call=list(self.call),
                namespace=self.namespace,
                imports=imports,
                max_imported_keys=self.max_imported_keys,
                max_in_flight=self.max_in_flight,
                discovery=self.discovery,
                discovery_prefix=self.discovery_prefix,
                discovery_companion=self.discovery_companion,
            )
            validate(cfg)
        except (TopicError, ValueError, HubError) as exc:
            raise ConfigError(f"{where}: {getattr(exc, 'message', exc)}") from None
        return cfg


class LogFile(msgspec.Struct, forbid_unknown_fields=True):
    """``[log]``: the event log's batching, back-pressure, snapshots and retention."""

    flush_interval: float = 0.02
    max_pending: int = 200_000
    snapshot_every: int = 200_000
    retention_changes: int = 5_000_000
    retention_days: float = 30.0


class RoleFile(msgspec.Struct, forbid_unknown_fields=True):
    """``[roles.NAME]``: a role (docs/security.md); a built-in name overrides it."""

    read: list[str] = msgspec.field(default_factory=lambda: ["**"])
    own: list[str] = msgspec.field(default_factory=lambda: ["app.{client}"])
    call: list[str] = msgspec.field(default_factory=list)
    log: bool = False
    publish: bool = True

    def role(self, name: str) -> Role:
        return Role(
            name, tuple(self.read), tuple(self.own), tuple(self.call), self.log, self.publish
        )


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8420
    heartbeat_ms: int = 10_000
    log_level: str = "info"
    log_format: str = "json"
    # connections: caps overall and per IP address (over a cap: 503 and close), and
    # the time a connection has to complete a request's headers
    max_connections: int = 4096
    max_connections_per_address: int = 512
    request_header_timeout: float = 10.0
    # hub.clients.<name> of a client that left and owns no keys goes after this
    client_record_ttl: float = 3600.0
    # a connection's writer woken from idle waits this long (ms) so that changes that
    # arrive together leave in one frame; 0 = at once (at most 10)
    flush_delay_ms: float = 5.0
    limits: LimitsFile = msgspec.field(default_factory=LimitsFile)
    grants: dict[str, list[str]] = msgspec.field(default_factory=dict)
    companion: list[CompanionFile] = msgspec.field(default_factory=list)
    mqtt: list[MqttFile] = msgspec.field(default_factory=list)
    # where the event log lives: a directory, "memory" (no file: gone at exit),
    # or "" for the default (the user's data directory)
    data_dir: str = ""
    log: LogFile = msgspec.field(default_factory=LogFile)
    # security (docs/security.md)
    tokens_file: str = ""  # "" = <data dir>/tokens.json when that file exists
    allow_anonymous: bool = False
    roles: dict[str, RoleFile] = msgspec.field(default_factory=dict)
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    tls_cert: str = ""
    tls_key: str = ""
    auth_failures: int = 5
    auth_failure_window: float = 60.0
    auth_lockout: float = 60.0

    def resolved_tokens_file(self) -> str | None:
        if self.tokens_file:
            return self.tokens_file
        data_dir = self.resolved_data_dir()
        if data_dir == ":memory:":
            return None
        default = Path(data_dir) / "tokens.json"
        return str(default) if default.exists() else None

    def resolved_data_dir(self) -> str:
        if self.data_dir == "memory":
            return ":memory:"
        return self.data_dir or str(default_data_dir())

    def hub_config(self) -> HubConfig:
        return HubConfig(
            host=self.host,
            port=self.port,
            heartbeat_ms=self.heartbeat_ms,
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            request_header_timeout=self.request_header_timeout,
            client_record_ttl=self.client_record_ttl,
            flush_delay_ms=self.flush_delay_ms,
            limits=Limits(**msgspec.structs.asdict(self.limits)),
            grants=self.grants,
            data_dir=self.resolved_data_dir(),
            log_flush_interval=self.log.flush_interval,
            log_max_pending=self.log.max_pending,
            log_snapshot_every=self.log.snapshot_every,
            log_retention_changes=self.log.retention_changes,
            log_retention_days=self.log.retention_days,
            tokens_file=self.resolved_tokens_file(),
            allow_anonymous=self.allow_anonymous,
            roles={name: r.role(name) for name, r in self.roles.items()},
            allowed_origins=list(self.allowed_origins),
            tls_cert=self.tls_cert or None,
            tls_key=self.tls_key or None,
            auth_failures=self.auth_failures,
            auth_failure_window=self.auth_failure_window,
            auth_lockout=self.auth_lockout,
        )


# setting -> environment variable (flat settings only)
ENV_VARS = {
    "host": "HOST",
    "port": "PORT",
    "heartbeat_ms": "HEARTBEAT_MS",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
    "data_dir": "DATA_DIR",
    "tokens_file": "TOKENS_FILE",
}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting, var in ENV_VARS.items():
        value = env.get(ENV_PREFIX + var)
        if value is None or value == "":
            continue
        if setting in ("port", "heartbeat_ms"):
            try:
                out[setting] = int(value)
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{var}={value!r}: expected an integer") from None
        else:
            out[setting] = value
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """File, then ``COMPANION_HUB_*`` environment variables, then ``overrides`` (flags)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    data.update(_from_env(env))
    overrides = dict(overrides or {})
    companion_flags = {
        k.removeprefix("companion_"): overrides.pop(k)
        for k in list(overrides)
        if k.startswith("companion_") and overrides[k] is not None
    }
    overrides.pop("companion_host", None)
    more_variables = companion_flags.pop("variables", None)
    mqtt_flags = {
        k.removeprefix("mqtt_"): overrides.pop(k)
        for k in list(overrides)
        if k.startswith("mqtt_") and overrides[k] is not None
    }
    for k in [k for k in overrides if k.startswith("mqtt_")]:
        overrides.pop(k)
    if mqtt_flags:
        # --mqtt HOST[:PORT] and friends: the first bridge (created if none)
        if "broker" in mqtt_flags:
            mqtt_flags["host"], port = _host_port(str(mqtt_flags.pop("broker")))
            if port is not None:
                mqtt_flags["port"] = port
        tables = list(data.get("mqtt") or [{}])
        first = dict(tables[0])
        first.update(mqtt_flags)
        data["mqtt"] = [first, *tables[1:]]
    if companion_flags or more_variables:
        # --companion HOST and friends: the first Companion instance (created if none)
        tables = list(data.get("companion") or [{}])
        first = dict(tables[0])
        first.update(companion_flags)
        if more_variables:  # --companion-variable NAME (repeatable): added to the file's
            first["variables"] = list(
                dict.fromkeys([*(first.get("variables") or []), *more_variables])
            )
        data["companion"] = [first, *tables[1:]]
    data.update(
        {k: v for k, v in overrides.items() if v is not None and k not in ("companion", "mqtt")}
    )
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        where = f"config file {path}" if path else "configuration"
        raise ConfigError(f"{where}: {exc}") from None
    _validate(settings)
    return settings


def _host_port(text: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        return host, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host, int(port)
    return text, None


def _nests(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _validate(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"port {s.port}: must be 0-65535")
    if s.heartbeat_ms < 50:
        raise ConfigError(f"heartbeat_ms {s.heartbeat_ms}: must be at least 50")
    if s.max_connections < 1 or s.max_connections_per_address < 1:
        raise ConfigError("max_connections and max_connections_per_address: must be at least 1")
    if not 0 <= s.flush_delay_ms <= 10:
        raise ConfigError(f"flush_delay_ms {s.flush_delay_ms}: 0-10 ms")
    if s.client_record_ttl < 0:
        raise ConfigError(f"client_record_ttl {s.client_record_ttl}: must be >= 0 seconds")
    if not 0.5 <= s.request_header_timeout <= 3600:
        raise ConfigError(
            f"request_header_timeout {s.request_header_timeout}: must be 0.5-3600 seconds"
        )
    if s.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level {s.log_level!r}: one of {', '.join(LOG_LEVELS)}")
    if s.log_format not in ("json", "text"):
        raise ConfigError(f"log_format {s.log_format!r}: 'json' or 'text'")
    for name, value in msgspec.structs.asdict(s.limits).items():
        if value < 1:
            raise ConfigError(f"limits.{name} = {value}: must be positive")
    lg = s.log
    if lg.flush_interval <= 0 or lg.max_pending < 1000 or lg.snapshot_every < 1:
        raise ConfigError("log: flush_interval > 0, max_pending >= 1000, snapshot_every >= 1")
    if lg.retention_changes < 1 or lg.retention_days <= 0:
        raise ConfigError("log: retention_changes and retention_days must be positive")
    names = [c.name for c in s.companion]
    if len(set(names)) != len(names):
        raise ConfigError("companion: each [[companion]] needs its own name")
    for c in s.companion:
        where = f"companion {c.name!r}"
        if c.transport not in ("tcp", "ws"):
            raise ConfigError(f"{where}: transport {c.transport!r}: 'tcp' or 'ws'")
        if (
            not is_valid_key(c.namespace)
            or c.namespace == "hub"
            or c.namespace.startswith(("hub.", "app."))
        ):
            raise ConfigError(f"{where}: namespace {c.namespace!r} is not allowed")
        if not is_valid_client_name(c.name):
            raise ConfigError(f"{where}: name must match [a-z0-9][a-z0-9_-]*")
        if not 0 < c.ember_port < 65536:
            raise ConfigError(f"{where}: ember_port {c.ember_port}: 1-65535")
        if c.poll_interval < 0.05:
            raise ConfigError(f"{where}: poll_interval {c.poll_interval}: at least 0.05 s")
        if c.rows < 1 or c.columns < 1 or not c.pages or min(c.pages) < 1:
            raise ConfigError(f"{where}: rows, columns and pages must be positive")
        for v in c.variables:
            conn, sep, var = v.partition(":")
            if not (sep and conn and var):
                raise ConfigError(f"{where}: variable {v!r}: expected 'connection:name'")
        for t in c.transferable:
            if t.type not in ("input", "output"):
                raise ConfigError(f"{where}: transferable {t.id!r}: type is 'input' or 'output'")
        c.export_rules()
    bridges = [m.name for m in s.mqtt]
    if len(set(bridges)) != len(bridges):
        raise ConfigError("mqtt: each [[mqtt]] needs its own name")
    if set(bridges) & set(names):
        raise ConfigError("mqtt: a bridge's name must differ from every [[companion]] name")
    for m in s.mqtt:
        if not is_valid_client_name(m.name):
            raise ConfigError(f"mqtt {m.name!r}: name must match [a-z0-9][a-z0-9_-]*")
        if any(_nests(m.namespace, c.namespace) for c in s.companion):
            raise ConfigError(
                f"mqtt {m.name!r}: namespace {m.namespace!r} nests with a Companion's namespace"
            )
    importing = [m.namespace for m in s.mqtt if m.imports]
    for i, a in enumerate(importing):
        if any(_nests(a, b) for b in importing[i + 1 :]):
            raise ConfigError("mqtt: bridges that import need namespaces of their own (not nested)")
    for name, rf in s.roles.items():
        try:
            rf.role(name).check()
        except (ValueError, HubError) as exc:
            raise ConfigError(f"roles.{name}: {getattr(exc, 'message', exc)}") from None
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("tls_cert and tls_key: give both (PEM files) or neither")
    if s.auth_failures < 1 or s.auth_failure_window <= 0 or s.auth_lockout < 0:
        raise ConfigError("auth_failures >= 1, auth_failure_window > 0, auth_lockout >= 0")
    for client, namespaces in s.grants.items():
        if not is_valid_client_name(client):
            raise ConfigError(f"grants: {client!r} is not a valid client name")
        for ns in namespaces:
            if not is_valid_key(ns) or ns == "hub" or ns.startswith("hub."):
                raise ConfigError(f"grants.{client}: {ns!r} is not a namespace a client may own")
