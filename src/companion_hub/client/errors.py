"""Errors raised by the SDK: one exception class per protocol error code (spec section 11).

Every request that fails raises a subclass of :class:`HubError` whose ``code`` is the
protocol's error code, so callers can catch exactly what they can handle::

    try:
        await hub.set("app.tally.status", "live", expect_version=3)
    except Conflict as exc:
        print("someone else wrote first; now at", exc.details["version"])
    except HubError as exc:           # any other protocol error
        print(exc.code, exc.message)

The codes themselves are defined once, in :mod:`companion_hub.core.errors` (a plain
enum with no I/O); the SDK imports only that enum from the hub's code base.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import ErrorCode

__all__ = [
    "BadRequest",
    "Conflict",
    "ErrorCode",
    "Failed",
    "Forbidden",
    "HubError",
    "Internal",
    "LimitExceeded",
    "NotFound",
    "NotOwner",
    "RateLimited",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "error_class",
    "error_from_wire",
]


class HubError(Exception):
    """A request failed with one of the protocol's error codes.

    ``code`` is an :class:`ErrorCode`, ``message`` the hub's explanation and
    ``details`` the optional structured details (e.g. the current version for a
    ``CONFLICT``).
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self, message: str = "", details: dict[str, Any] | None = None, *, code: str | None = None
    ) -> None:
        if code is not None:
            try:
                self.code = ErrorCode(code)
            except ValueError:
                self.code = ErrorCode.FAILED
        self.message = message or str(self.code)
        self.details = details
        super().__init__(f"{self.code}: {self.message}")

    def to_wire(self) -> dict[str, Any]:
        """The error object of the protocol: ``{"code", "message", "details"?}``."""
        err: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return err


class BadRequest(HubError):
    """``BAD_REQUEST``: the request was malformed (bad key, pattern, params...)."""

    code = ErrorCode.BAD_REQUEST


class Unauthorized(HubError):
    """``UNAUTHORIZED``: a missing or wrong token."""

    code = ErrorCode.UNAUTHORIZED


class Forbidden(HubError):
    """``FORBIDDEN``: the token's ACL does not allow this."""

    code = ErrorCode.FORBIDDEN


class NotOwner(HubError):
    """``NOT_OWNER``: the key is not under a namespace this client owns."""

    code = ErrorCode.NOT_OWNER


class NotFound(HubError):
    """``NOT_FOUND``: no such key, subscription or command name."""

    code = ErrorCode.NOT_FOUND


class Conflict(HubError):
    """``CONFLICT``: ``expect_version`` did not match; ``details["version"]`` is current."""

    code = ErrorCode.CONFLICT


class TooLarge(HubError):
    """``TOO_LARGE``: the value is larger than the hub's limit."""

    code = ErrorCode.TOO_LARGE


class RateLimited(HubError):
    """``RATE_LIMITED``: slow down."""

    code = ErrorCode.RATE_LIMITED


class LimitExceeded(HubError):
    """``LIMIT_EXCEEDED``: too many subscriptions, patterns or commands in flight."""

    code = ErrorCode.LIMIT_EXCEEDED


class Unavailable(HubError):
    """``UNAVAILABLE``: the target (or the hub itself) cannot be reached.

    The SDK also raises it for a request whose connection dropped before the reply:
    a write or command may then have been applied.
    """

    code = ErrorCode.UNAVAILABLE


class Timeout(HubError):
    """``TIMEOUT``: no answer in time; the command may have been executed."""

    code = ErrorCode.TIMEOUT


class Failed(HubError):
    """``FAILED``: the command's owner failed; ``message`` is its explanation."""

    code = ErrorCode.FAILED


class Internal(HubError):
    """``INTERNAL``: a bug in the hub."""

    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[HubError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotOwner,
        NotFound,
        Conflict,
        TooLarge,
        RateLimited,
        LimitExceeded,
        Unavailable,
        Timeout,
        Failed,
        Internal,
    )
}


def error_class(code: str) -> type[HubError]:
    """The exception class for a wire error code (unknown codes: :class:`HubError`)."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except ValueError:
        return HubError


def error_from_wire(err: Any) -> HubError:
    """Build the typed exception for a protocol error object (or an ``error`` message)."""
    if not isinstance(err, dict):
        return Internal(f"malformed error from the hub: {err!r}")
    code = err.get("code")
    message = err.get("message")
    details = err.get("details")
    text = message if isinstance(message, str) else ""
    det = details if isinstance(details, dict) else None
    if not isinstance(code, str):
        return Internal(text or f"malformed error from the hub: {err!r}", det)
    cls = error_class(code)
    if cls is HubError:
        return HubError(text, det, code=code)
    return cls(text, det)
