"""The state enums keep the strings users and logs see, and the adapter's status."""

from __future__ import annotations

import json

from companion_hub.adapters.companion.events import MirrorMode
from companion_hub.adapters.companion.satellite import ProtocolState
from companion_hub.adapters.companion.status import (
    LinkState,
    LinkStatus,
    adapter_state,
    adapter_status,
)


def test_wire_values() -> None:
    assert [s.value for s in ProtocolState] == [
        "awaiting-begin",
        "awaiting-caps",
        "registering",
        "synced",
    ]
    assert [s.value for s in LinkState] == [
        "connecting",
        "connected",
        "disconnected",
        "error",
        "off",
    ]
    assert [m.value for m in MirrorMode] == ["subscriptions", "device"]
    assert ProtocolState.SYNCED == "synced" and f"{LinkState.ERROR}" == "error"
    assert ProtocolState.AWAITING_CAPS.handshaking and not ProtocolState.REGISTERING.handshaking


def test_adapter_state_from_both_links() -> None:
    s = LinkState
    assert adapter_state(s.CONNECTED, s.CONNECTED) is s.CONNECTED
    assert adapter_state(s.CONNECTED, s.OFF) is s.CONNECTED
    assert adapter_state(s.CONNECTED, s.ERROR) is s.ERROR
    assert adapter_state(s.DISCONNECTED, s.ERROR) is s.ERROR
    assert adapter_state(s.CONNECTED, s.DISCONNECTED) is s.DISCONNECTED
    assert adapter_state(s.CONNECTING, s.CONNECTED) is s.CONNECTING
    assert adapter_state(s.CONNECTING, s.OFF) is s.CONNECTING


def test_adapter_status_is_plain_json() -> None:
    sat = LinkStatus(LinkState.DISCONNECTED, "closed", retry_at=12.5)
    http = LinkStatus(LinkState.CONNECTED, "polling 2 variables")
    state, detail, extra = adapter_status(sat, http, refused=2, last_refused="k: too large")
    assert (state, detail) == ("disconnected", "closed")
    assert extra == {
        "satellite": {"state": "disconnected", "detail": "closed"},
        "http": {"state": "connected", "detail": "polling 2 variables"},
        "ember": {"state": "off", "detail": ""},
        "next_retry": 12500,
        "refused": {"count": 2, "last": "k: too large"},
    }
    # plain strings, not enum members: the store compares values by exact type
    assert type(state) is str and type(extra["satellite"]["state"]) is str
    json.dumps(extra)
    connected = LinkStatus(LinkState.CONNECTED, "subscriptions")
    assert adapter_status(connected, http)[:2] == ("connected", "polling 2 variables")
    assert adapter_status(connected, LinkStatus(LinkState.OFF))[:2] == (
        "connected",
        "subscriptions",
    )
    failed = LinkStatus(LinkState.ERROR, "internal error: boom")
    assert adapter_status(connected, failed)[:2] == ("error", "internal error: boom")
    assert "refused" not in adapter_status(connected, http)[2]
    # Ember+ unreachable is a fallback (HTTP polling), not a failure of the adapter;
    # its task failing is
    gone = LinkStatus(LinkState.DISCONNECTED, "nothing listens on tcp://h:9092")
    state, detail, extra = adapter_status(connected, http, ember=gone)
    assert (state, detail) == ("connected", "polling 2 variables")
    assert extra["ember"] == {"state": "disconnected", "detail": "nothing listens on tcp://h:9092"}
    crashed = LinkStatus(LinkState.ERROR, "internal error: ember")
    assert adapter_status(connected, http, ember=crashed)[:2] == ("error", "internal error: ember")
