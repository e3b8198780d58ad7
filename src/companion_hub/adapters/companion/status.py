"""The adapter's status, as published in ``hub.adapters.<name>``: pure functions.

The Satellite link and the HTTP link each have a :class:`LinkState`; the adapter's own
``state`` is derived from both, and its ``detail`` from the link that matters most.
"""

from __future__ import annotations

from typing import Any

from ..linkstate import LinkState, LinkStatus

__all__ = ["LinkState", "LinkStatus", "adapter_state", "adapter_status"]


def adapter_state(satellite: LinkState, http: LinkState) -> LinkState:
    """The adapter's state: an error anywhere, else connected only when both links are
    (or HTTP is off), else disconnected if one is, else connecting."""
    both = (satellite, http)
    if LinkState.ERROR in both:
        return LinkState.ERROR
    if satellite is LinkState.CONNECTED and http in (LinkState.CONNECTED, LinkState.OFF):
        return LinkState.CONNECTED
    if LinkState.DISCONNECTED in both:
        return LinkState.DISCONNECTED
    return LinkState.CONNECTING


def adapter_status(
    satellite: LinkStatus,
    http: LinkStatus,
    refused: int = 0,
    last_refused: str = "",
    *,
    ember: LinkStatus | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """``(state, detail, extra fields)`` of ``hub.adapters.<name>``, as plain JSON values.

    Ember+ is an improvement, not a requirement: unreachable, it changes the detail
    (variables come by HTTP polling instead), not the adapter's state; only its task
    failing (``error``) does."""
    state = adapter_state(satellite.state, http.state)
    if ember is not None and ember.state is LinkState.ERROR:
        state = LinkState.ERROR
    extra: dict[str, Any] = {
        "satellite": {"state": satellite.state.value, "detail": satellite.detail},
        "http": {"state": http.state.value, "detail": http.detail},
        "ember": {
            "state": (ember or LinkStatus(LinkState.OFF)).state.value,
            "detail": (ember or LinkStatus(LinkState.OFF)).detail,
        },
        "next_retry": None if satellite.retry_at is None else int(satellite.retry_at * 1000),
    }
    if refused:
        extra["refused"] = {"count": refused, "last": last_refused}
    if state is LinkState.ERROR:
        if satellite.state is LinkState.ERROR:
            detail = satellite.detail
        elif http.state is LinkState.ERROR or ember is None:
            detail = http.detail
        else:
            detail = ember.detail
    elif satellite.state is not LinkState.CONNECTED:
        detail = satellite.detail
    else:
        detail = http.detail or satellite.detail
    return state.value, detail, extra
