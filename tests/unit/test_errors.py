"""One exception tree on the hub side: everything raised on purpose derives from
``CompanionHubError``, so ``except CompanionHubError`` catches exactly the hub's own
failures and no bug."""

from __future__ import annotations

import pytest

from companion_hub.adapters.companion.codec import Base64Error, LineTooLong
from companion_hub.adapters.companion.http import BodyTooLarge, HttpError
from companion_hub.adapters.companion.link import LinkDown, ReplyTimeout
from companion_hub.auth.tokens import TokenError, TokenFileError
from companion_hub.config import ConfigError
from companion_hub.core.errors import CompanionHubError, ErrorCode, HubError, PortInUse
from companion_hub.eventlog.query import LogError, LogUnavailable, RetentionGap
from companion_hub.eventlog.tools import ReplayError
from companion_hub.hub import DataDirInUse
from companion_hub.protocol.messages import FrameError
from companion_hub.server.app import UnsafeListen
from companion_hub.server.tls import TlsError
from companion_hub.simulator.scenario import ScenarioError


@pytest.mark.parametrize(
    "exc",
    [
        HubError,
        ConfigError,
        DataDirInUse,
        FrameError,
        LogError,
        LogUnavailable,
        RetentionGap,
        ReplayError,
        ScenarioError,
        LinkDown,
        ReplyTimeout,
        LineTooLong,
        Base64Error,
        HttpError,
        BodyTooLarge,
        TokenError,
        TokenFileError,
        TlsError,
        UnsafeListen,
        PortInUse,
    ],
)
def test_every_hub_side_exception_is_in_the_tree(exc: type[Exception]) -> None:
    assert issubclass(exc, CompanionHubError)


def test_hub_error_constructor_and_wire_form() -> None:
    err = HubError(ErrorCode.CONFLICT, "busy", {"version": 3})
    assert (err.code, err.message, err.details) == (ErrorCode.CONFLICT, "busy", {"version": 3})
    assert err.to_wire() == {"code": "CONFLICT", "message": "busy", "details": {"version": 3}}
    assert HubError(ErrorCode.FAILED, "x").to_wire() == {"code": "FAILED", "message": "x"}


def test_port_in_use_names_the_flag_and_stays_an_os_error() -> None:
    import errno

    exc = PortInUse("127.0.0.1", 8000, "http_port")
    assert isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
    assert exc.flag == "--http-port"
    assert str(exc).startswith("127.0.0.1:8000 is already in use")
    assert str(exc).endswith("with --http-port") and "\n" not in str(exc)
