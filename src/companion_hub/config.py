"""Configuration: a TOML file, then environment variables, then command-line flags.

Each later source overrides the earlier one. Validation gives messages that name
the setting and where it came from. See README "Configuration" for every key.

```toml
host = "127.0.0.1"
port = 8420
heartbeat_ms = 10000
log_level = "info"      # debug, info, warning, error
log_format = "json"     # json or text

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
from typing import Any

import msgspec

from .core.keys import is_valid_client_name, is_valid_key
from .core.limits import Limits
from .server.hub import HubConfig

ENV_PREFIX = "COMPANION_HUB_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and why."""


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
    requests_per_second: int = _D.requests_per_second


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8420
    heartbeat_ms: int = 10_000
    log_level: str = "info"
    log_format: str = "json"
    limits: LimitsFile = msgspec.field(default_factory=LimitsFile)
    grants: dict[str, list[str]] = msgspec.field(default_factory=dict)

    def hub_config(self) -> HubConfig:
        return HubConfig(
            host=self.host,
            port=self.port,
            heartbeat_ms=self.heartbeat_ms,
            limits=Limits(**msgspec.structs.asdict(self.limits)),
            grants=self.grants,
        )


# setting -> environment variable (flat settings only)
ENV_VARS = {
    "host": "HOST",
    "port": "PORT",
    "heartbeat_ms": "HEARTBEAT_MS",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
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
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        where = f"config file {path}" if path else "configuration"
        raise ConfigError(f"{where}: {exc}") from None
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"port {s.port}: must be 0-65535")
    if s.heartbeat_ms < 50:
        raise ConfigError(f"heartbeat_ms {s.heartbeat_ms}: must be at least 50")
    if s.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level {s.log_level!r}: one of {', '.join(LOG_LEVELS)}")
    if s.log_format not in ("json", "text"):
        raise ConfigError(f"log_format {s.log_format!r}: 'json' or 'text'")
    for name, value in msgspec.structs.asdict(s.limits).items():
        if value < 1:
            raise ConfigError(f"limits.{name} = {value}: must be positive")
    for client, namespaces in s.grants.items():
        if not is_valid_client_name(client):
            raise ConfigError(f"grants: {client!r} is not a valid client name")
        for ns in namespaces:
            if not is_valid_key(ns) or ns == "hub" or ns.startswith("hub."):
                raise ConfigError(f"grants.{client}: {ns!r} is not a namespace a client may own")
