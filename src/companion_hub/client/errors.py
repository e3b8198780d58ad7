"""The SDK's exceptions: one tree, one class per protocol error code (spec section 11).

Every exception the SDK raises for a failed request, a refused ``hello``, a lost
connection or a bad argument is a :class:`HubError`, with ``code`` (an
:class:`ErrorCode`), ``message`` and ``details``, so callers can catch exactly what
they can handle::

    try:
        await hub.set("app.tally.status", "live", expect_version=3)
    except Conflict as exc:
        print("someone else wrote first; now at", exc.details["version"])
    except HubError as exc:           # any other protocol error
        print(exc.code, exc.message)

Constructors follow the hub's own :class:`companion_hub.core.errors.HubError`:
``HubError(code, message, details=None)``. A subclass fixes the code, so it takes the
rest of the same signature: ``Conflict(message, details=None)`` is
``HubError(ErrorCode.CONFLICT, message, details)`` as the right class.

Two subclasses also derive from the built-in exception a Python programmer would
catch for them: :class:`BadRequest` is a :class:`ValueError` (an argument the hub
would refuse, such as an invalid pattern or client name, is refused locally with
it), and :class:`ConnectionClosed` (a :class:`Unavailable`) carries the WebSocket
close code of a :class:`~companion_hub.client.RawConnection`.

The codes themselves are defined once, in :mod:`companion_hub.core.errors` (a plain
enum with no I/O).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import ErrorCode

__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionClosed",
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


def _as_code(code: ErrorCode | str) -> ErrorCode:
    """An :class:`ErrorCode`; a code this SDK does not know becomes ``FAILED``."""
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.FAILED


class HubError(Exception):
    """A request failed with one of the protocol's error codes.

    ``code`` is an :class:`ErrorCode` (an unknown wire code becomes ``FAILED``),
    ``message`` the explanation (the code itself when empty) and ``details`` the
    optional structured details (e.g. the current version for a ``CONFLICT``).
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self, code: ErrorCode | str, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        self.code = _as_code(code)
        self.message = message or str(self.code)
        self.details = details
        super().__init__(f"{self.code}: {self.message}")

    def to_wire(self) -> dict[str, Any]:
        """The error object of the protocol: ``{"code", "message", "details"?}``."""
        err: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return err


class _FixedCode(HubError):
    """A :class:`HubError` whose class fixes the code: ``(message, details=None)``."""

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(type(self).code, message, details)


class BadRequest(_FixedCode, ValueError):
    """``BAD_REQUEST``: the request was malformed (bad key, pattern, params...).

    Also raised locally, before anything is sent, for arguments the hub would refuse
    (an invalid pattern, an invalid client name); hence also a :class:`ValueError`.
    """

    code = ErrorCode.BAD_REQUEST


class Unauthorized(_FixedCode):
    """``UNAUTHORIZED``: a missing or wrong token."""

    code = ErrorCode.UNAUTHORIZED


class Forbidden(_FixedCode):
    """``FORBIDDEN``: the token's ACL does not allow this."""

    code = ErrorCode.FORBIDDEN


class NotOwner(_FixedCode):
    """``NOT_OWNER``: the key is not under a namespace this client owns."""

    code = ErrorCode.NOT_OWNER


class NotFound(_FixedCode):
    """``NOT_FOUND``: no such key, subscription or command name."""

    code = ErrorCode.NOT_FOUND


class Conflict(_FixedCode):
    """``CONFLICT``: ``expect_version`` did not match; ``details["version"]`` is current."""

    code = ErrorCode.CONFLICT


class TooLarge(_FixedCode):
    """``TOO_LARGE``: the value is larger than the hub's limit."""

    code = ErrorCode.TOO_LARGE


class RateLimited(_FixedCode):
    """``RATE_LIMITED``: slow down."""

    code = ErrorCode.RATE_LIMITED


class LimitExceeded(_FixedCode):
    """``LIMIT_EXCEEDED``: too many subscriptions, patterns or commands in flight."""

    code = ErrorCode.LIMIT_EXCEEDED


class Unavailable(_FixedCode):
    """``UNAVAILABLE``: the target (or the hub itself) cannot be reached.

    The SDK also raises it for a request whose connection dropped before the reply:
    a write or command may then have been applied.
    """

    code = ErrorCode.UNAVAILABLE


class ConnectionClosed(Unavailable):
    """The WebSocket closed (raised by :class:`~companion_hub.client.RawConnection`).

    ``close_code`` is the WebSocket close code when one was received (1008 after a
    refused first message, 1009 for an oversize message, 4000 after a takeover).
    """

    @property
    def close_code(self) -> int | None:
        code = (self.details or {}).get("close_code")
        return code if isinstance(code, int) else None


class Timeout(_FixedCode):
    """``TIMEOUT``: no answer in time; the command may have been executed."""

    code = ErrorCode.TIMEOUT


class Failed(_FixedCode):
    """``FAILED``: the command's owner failed; ``message`` is its explanation."""

    code = ErrorCode.FAILED


class Internal(_FixedCode):
    """``INTERNAL``: a bug in the hub (or a message from it that the SDK cannot read)."""

    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[_FixedCode]] = {
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
    """The typed exception for a protocol error object (or an ``error`` message).

    A code this SDK does not know gives a plain :class:`HubError` with code ``FAILED``;
    something that is not an error object gives :class:`Internal`.
    """
    if not isinstance(err, dict):
        return Internal(f"malformed error from the hub: {err!r}")
    code = err.get("code")
    message = err.get("message")
    details = err.get("details")
    text = message if isinstance(message, str) else ""
    det = details if isinstance(details, dict) else None
    if not isinstance(code, str):
        return Internal(text or f"malformed error from the hub: {err!r}", det)
    try:
        cls = _BY_CODE[ErrorCode(code)]
    except ValueError:
        return HubError(code, text, det)
    return cls(text, det)
