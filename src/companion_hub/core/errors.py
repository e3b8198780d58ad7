"""Error codes of protocol v1 (section 11), defined once; the exception that carries
them; and the root of every exception the hub side raises on purpose.

The tree (the SDK has its own, rooted at ``companion_hub.client.HubError``)::

    CompanionHubError
      HubError                 a request failed with a protocol error code
      ConfigError              config.py: a bad configuration
      DataDirInUse             hub.py: another hub holds the data directory
      FrameError               protocol/messages.py: a frame that is not messages
      LogError                 eventlog/query.py: the log cannot answer
        LogUnavailable, RetentionGap
      ReplayError              eventlog/tools.py: log replay failed
      ScenarioError            simulator/scenario.py: a bad scenario file
      LinkDown, ReplyTimeout   adapters/companion/link.py: the Satellite link
      LineTooLong, Base64Error adapters/companion/codec.py: a hostile line
      HttpError                adapters/companion/http.py: Companion's HTTP API
        BodyTooLarge
      TokenError               auth/tokens.py: a refused token operation
        TokenFileError         the token file cannot be read or written
      TlsError                 server/tls.py: the certificate or key cannot be used
      UnsafeListen             server/app.py: beyond loopback without tokens
      PortInUse                a listener's port is taken (also an OSError)
"""

from __future__ import annotations

import errno
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_OWNER = "NOT_OWNER"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    TOO_LARGE = "TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    FAILED = "FAILED"
    INTERNAL = "INTERNAL"


class CompanionHubError(Exception):
    """The root of the hub side's exceptions (the docstring above lists the tree)."""


class HubError(CompanionHubError):
    """A request failed with one of the protocol's error codes."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return err


class PortInUse(CompanionHubError, OSError):
    """A listener could not bind: another process listens on the port.

    ``setting`` names the setting that chose the port (``port``, ``http_port``, ...);
    ``flag`` is the command-line flag that changes it, which the message names. An
    ``OSError`` too (``errno`` EADDRINUSE), so code that catches the bind error keeps
    working.
    """

    def __init__(self, host: str | None, port: int, setting: str) -> None:
        self.host = host or "*"
        self.port = port
        self.setting = setting
        self.flag = "--" + setting.replace("_", "-")
        super().__init__(
            errno.EADDRINUSE,
            f"{self.host}:{port} is already in use (another program listens there): "
            f"choose another port with {self.flag}",
        )

    def __str__(self) -> str:
        return str(self.strerror)
