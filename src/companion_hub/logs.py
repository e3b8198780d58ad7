"""Structured logging: one JSON object per line (or key=value text for a terminal).

Fields passed with ``extra=`` become top-level keys. Nothing that looks like a
secret (``token``, ``password``, ``secret``, ``authorization``) is ever written.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

_STD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SECRET_WORDS = ("token", "password", "secret", "authorization")
_enc = msgspec.json.Encoder(enc_hook=repr)  # anything unusual is logged as its repr


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.__dict__.items():
        if k in _STD or k.startswith("_"):
            continue
        out[k] = "[redacted]" if any(w in k.lower() for w in _SECRET_WORDS) else v
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _enc.encode(doc).decode("utf-8", "replace")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname.lower():7} {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Throttle:
    """At most one log line per ``interval`` seconds per kind; the lines in between
    are counted and the next line that does get out says how many were suppressed.

    For reactions to hostile or broken input (a flood of bad lines from an upstream,
    a client sending garbage): the reaction is logged, but the log stays bounded.
    """

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, **fields: Any) -> bool:
        """Log ``msg`` unless ``kind`` was logged less than ``interval`` ago; returns
        whether it was logged."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        if len(self._last) > 1024:  # bounded, whatever the kinds
            self._last.clear()
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        self.logger.log(level, msg, extra=fields)
        return True

    def warning(self, kind: str, msg: str, **fields: Any) -> bool:
        return self.log(logging.WARNING, kind, msg, **fields)
