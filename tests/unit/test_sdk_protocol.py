"""The SDK's sans-I/O protocol object: frames in, events and frames out, no sockets.

In the style of the ``websockets`` library's protocol tests: each test drives a
:class:`ClientProtocol` by hand (``connect``, ``receive_frame``, ``connection_lost``)
and checks what it asks to send (``data_to_send``) and what it reports (events).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from companion_hub.client import errors
from companion_hub.client.events import (
    CommandReceived,
    ErrorReceived,
    EventReceived,
    EventsDropped,
    HelloRefused,
    MalformedMessage,
    RequestDone,
    RequestFailed,
    SubscriptionLost,
    Welcomed,
)
from companion_hub.client.messages import Event
from companion_hub.client.protocol import (
    ClientProtocol,
    ProtocolState,
    RequestKind,
    hello_message,
)


def frame(*messages: dict[str, Any]) -> bytes:
    """One text frame: a message, or a batch (JSON array) of several."""
    obj: Any = messages[0] if len(messages) == 1 else list(messages)
    return json.dumps(obj).encode()


def sent(p: ClientProtocol) -> list[Any]:
    """What the protocol asks to write, decoded (a batch stays a list)."""
    return [json.loads(f) for f in p.data_to_send()]


def welcome(hub: str = "h1", **extra: Any) -> dict[str, Any]:
    msg = {
        "op": "welcome",
        "id": "hello",
        "session": "sess",
        "hub": hub,
        "rev": 10,
        "namespaces": ["app.tally"],
        "heartbeat_ms": 500,
        "server": "companion-hub test",
        "limits": {"frame_bytes": 1048576, "value_bytes": 262144, "oldest_rev": 3},
    }
    msg.update(extra)
    return msg


def entry(key: str, value: Any, version: int, rev: int, **extra: Any) -> dict[str, Any]:
    return {"key": key, "value": value, "version": version, "rev": rev, "owner": "app.x", **extra}


def opened(hub: str = "h1", client: str = "tally", **kw: Any) -> ClientProtocol:
    """A protocol whose first connection has been welcomed (output drained)."""
    p = ClientProtocol(client, **kw)
    p.connect()
    p.data_to_send()
    [ev] = p.receive_frame(frame(welcome(hub)))
    assert isinstance(ev, Welcomed)
    p.data_to_send()
    return p


def subscribed(p: ClientProtocol, *patterns: str, rev: int = 20, events: bool = False) -> str:
    spec, rid = p.subscribe(list(patterns), events=events)
    p.data_to_send()
    done = p.receive_frame(
        frame(
            {
                "op": "snapshot",
                "id": rid,
                "sub": spec.id,
                "rev": rev,
                "mode": "full",
                "entries": [],
                "removed": [],
                "done": True,
            }
        )
    )
    assert done == [RequestDone(rid, rev)]
    return spec.id


# --- the handshake --------------------------------------------------------------------


def test_connect_sends_hello_without_resume_at_first() -> None:
    p = ClientProtocol("tally", token="s3cret")
    assert p.state is ProtocolState.DISCONNECTED and p.data_to_send() == []
    p.connect()
    assert p.state is ProtocolState.HANDSHAKE
    assert sent(p) == [
        {"op": "hello", "id": "hello", "client": "tally", "protocol": 1, "token": "s3cret"}
    ]
    assert sent(p) == []  # taken once
    with pytest.raises(RuntimeError):
        p.connect()  # one connection at a time


def test_invalid_client_name_is_refused_locally() -> None:
    with pytest.raises(errors.BadRequest, match="invalid client name"):
        ClientProtocol("Bad Name")
    with pytest.raises(ValueError):  # BadRequest is a ValueError too
        ClientProtocol("")


def test_welcome_opens_the_connection_and_is_parsed() -> None:
    p = ClientProtocol("tally")
    p.connect()
    p.data_to_send()
    [ev] = p.receive_frame(frame(welcome()))
    assert isinstance(ev, Welcomed) and ev.resumed is False
    w = ev.welcome
    assert (w.hub, w.session, w.rev, w.namespaces, w.heartbeat_ms) == (
        "h1",
        "sess",
        10,
        ("app.tally",),
        500,
    )
    assert w.limits.oldest_rev == 3 and w.limits.frame_bytes == 1048576
    assert w.limits.key_bytes is None and w.limits.raw["value_bytes"] == 262144
    assert p.state is ProtocolState.OPEN and p.welcome == w
    assert sent(p) == []  # no subscription to send again


def test_a_welcome_without_the_optional_fields_still_opens() -> None:
    """A hub before revision 2 (no limits.oldest_rev) or a minimal one."""
    p = ClientProtocol("tally")
    p.connect()
    [ev] = p.receive_frame(b'{"op":"welcome","hub":"h1"}')
    assert isinstance(ev, Welcomed)
    assert ev.welcome.heartbeat_ms == 10_000 and ev.welcome.limits.oldest_rev is None
    assert ev.welcome.namespaces == () and ev.welcome.rev == 0


@pytest.mark.parametrize(
    "reply",
    [
        {"op": "error", "id": "hello", "code": "UNAUTHORIZED", "message": "bad token"},
        {"op": "result", "id": "hello", "ok": False, "error": {"code": "UNAUTHORIZED"}},
    ],
)
def test_refused_hello(reply: dict[str, Any]) -> None:
    p = ClientProtocol("tally")
    p.connect()
    [ev] = p.receive_frame(frame(reply))
    assert isinstance(ev, HelloRefused) and isinstance(ev.error, errors.Unauthorized)
    assert p.state is ProtocolState.DISCONNECTED


def test_messages_before_the_welcome_are_ignored_and_after_it_processed() -> None:
    p = ClientProtocol("tally")
    p.connect()
    assert p.receive_frame(frame({"op": "progress", "rev": 99})) == []
    assert p.mirror.rev == 0
    events = p.receive_frame(
        frame(welcome(), {"op": "progress", "rev": 12}, {"op": "dropped", "events": 2})
    )
    assert [type(e) for e in events] == [Welcomed, EventsDropped]
    assert p.mirror.rev == 12


# --- requests -------------------------------------------------------------------------


def test_requests_get_ids_and_their_results() -> None:
    p = opened()
    r1 = p.send_request({"op": "get", "patterns": ["hub.**"]}, RequestKind.READ)
    r2 = p.send_request({"op": "set", "key": "app.tally.x", "value": 1}, RequestKind.WRITE)
    assert r1 != r2
    assert sent(p) == [
        {"op": "get", "patterns": ["hub.**"], "id": r1},
        {"op": "set", "key": "app.tally.x", "value": 1, "id": r2},
    ]
    assert p.pending_requests == 2
    events = p.receive_frame(
        frame(
            {
                "op": "result",
                "id": r2,
                "ok": False,
                "error": {"code": "NOT_OWNER", "message": "no"},
            },
            {"op": "result", "id": r1, "ok": True, "result": {"rev": 3, "entries": []}},
        )
    )
    assert isinstance(events[0], RequestFailed) and events[0].request_id == r2
    assert isinstance(events[0].error, errors.NotOwner) and events[0].error.message == "no"
    assert events[1] == RequestDone(r1, {"rev": 3, "entries": []})
    assert p.pending_requests == 0
    # a duplicate or unknown reply is ignored
    assert p.receive_frame(frame({"op": "result", "id": r1, "ok": True})) == []


def test_an_error_message_with_a_request_id_fails_that_request() -> None:
    p = opened()
    rid = p.send_request({"op": "get", "patterns": ["x"]}, RequestKind.READ)
    [ev] = p.receive_frame(frame({"op": "error", "id": rid, "code": "BAD_REQUEST", "message": "m"}))
    assert isinstance(ev, RequestFailed) and isinstance(ev.error, errors.BadRequest)
    [stray] = p.receive_frame(frame({"op": "error", "code": "BAD_REQUEST", "message": "frame"}))
    assert isinstance(stray, ErrorReceived) and stray.error.message == "frame"


def test_requests_need_an_open_connection_and_json() -> None:
    p = ClientProtocol("tally")
    with pytest.raises(errors.Unavailable):
        p.send_request({"op": "get", "patterns": ["x"]}, RequestKind.READ)
    p = opened()
    with pytest.raises(errors.BadRequest, match="not JSON"):
        p.send_request({"op": "set", "key": "app.tally.x", "value": object()}, RequestKind.WRITE)
    assert p.data_to_send() == [] and p.pending_requests == 0


def test_a_forgotten_request_ignores_its_late_reply() -> None:
    p = opened()
    rid = p.send_request({"op": "command", "target": "t", "name": "n"}, RequestKind.COMMAND)
    p.forget_request(rid)
    assert p.receive_frame(frame({"op": "result", "id": rid, "ok": True, "result": 1})) == []


def test_connection_lost_fails_requests_with_what_may_have_happened() -> None:
    p = opened()
    read = p.send_request({"op": "get", "patterns": ["x"]}, RequestKind.READ)
    write = p.send_request({"op": "set", "key": "app.tally.x", "value": 1}, RequestKind.WRITE)
    cmd = p.send_request({"op": "command", "target": "t", "name": "n"}, RequestKind.COMMAND)
    spec, sub_req = p.subscribe(["app.**"])
    events = p.connection_lost("gone")
    assert p.state is ProtocolState.DISCONNECTED and p.data_to_send() == []
    by_id = {e.request_id: e.error for e in events if isinstance(e, RequestFailed)}
    assert set(by_id) == {read, write, cmd, sub_req}
    assert all(isinstance(e, errors.Unavailable) for e in by_id.values())
    assert "write may have been applied" in by_id[write].message
    assert "command may have been executed" in by_id[cmd].message
    assert by_id[read].message == "connection lost (gone)"
    # a subscription whose snapshot never came is forgotten, not re-sent
    assert spec.id not in p.subscriptions and not p.mirror.has_sub(spec.id)


# --- subscriptions and resume ---------------------------------------------------------


def test_subscribe_is_done_when_the_last_chunk_is_in_the_mirror() -> None:
    p = opened()
    spec, rid = p.subscribe(["app.x.**"], events=True)
    assert sent(p) == [
        {
            "op": "subscribe",
            "sub": spec.id,
            "patterns": ["app.x.**"],
            "snapshot": True,
            "events": True,
            "id": rid,
        }
    ]
    chunk = {"op": "snapshot", "id": rid, "sub": spec.id, "rev": 30, "mode": "full"}
    first = {**chunk, "entries": [entry("app.x.a", 1, 1, 5)], "removed": [], "done": False}
    last = {**chunk, "entries": [entry("app.x.b", 2, 1, 6)], "removed": [], "done": True}
    assert p.receive_frame(frame(first)) == []
    assert p.mirror.get("app.x.a") is None
    assert p.receive_frame(frame(last)) == [RequestDone(rid, 30)]
    assert set(p.mirror.entries) == {"app.x.a", "app.x.b"} and p.mirror.rev == 30


def test_bad_patterns_are_refused_before_anything_is_sent() -> None:
    p = opened()
    with pytest.raises(errors.BadRequest, match=r"'\*\*' is allowed only as the last segment"):
        p.subscribe(["app.**.x"])
    with pytest.raises(errors.BadRequest):
        p.subscribe([])
    assert p.data_to_send() == [] and p.subscriptions == {}


def test_reconnection_to_the_same_hub_resubscribes_with_since() -> None:
    p = opened()
    sub = subscribed(p, "app.x.**", rev=20)
    p.receive_frame(
        frame({"op": "delta", **entry("app.x.a", 1, 1, 21)}, {"op": "progress", "rev": 25})
    )
    assert p.mirror.rev == 25
    p.connection_lost("network")
    p.connect()
    [hello] = sent(p)
    assert hello["resume"] == {"hub": "h1", "rev": 25}
    [ev] = p.receive_frame(frame(welcome("h1")))
    assert isinstance(ev, Welcomed) and ev.resumed
    [batch] = sent(p)  # every subscription again, in one frame
    assert isinstance(batch, list) and len(batch) == 1
    assert batch[0]["sub"] == sub and batch[0]["since"] == 25 and batch[0]["op"] == "subscribe"
    # its snapshot completes silently (nobody waits for a re-subscription)
    snap = {"op": "snapshot", "id": batch[0]["id"], "sub": sub, "rev": 40, "mode": "incremental"}
    assert p.receive_frame(frame({**snap, "entries": [], "removed": [], "done": True})) == []
    assert p.mirror.rev == 40


def test_reconnection_to_another_hub_resubscribes_without_since() -> None:
    p = opened("h1")
    subscribed(p, "app.**", rev=20)
    p.connection_lost("restart")
    p.connect()
    p.data_to_send()
    [ev] = p.receive_frame(frame(welcome("h2")))
    assert isinstance(ev, Welcomed) and not ev.resumed
    [batch] = sent(p)
    assert "since" not in batch[0]


def test_a_refused_resubscription_drops_the_subscription() -> None:
    p = opened()
    sub = subscribed(p, "app.x.**")
    p.connection_lost("network")
    p.connect()
    p.receive_frame(frame(welcome()))
    [_hello, batch] = sent(p)
    err = {"code": "FORBIDDEN", "message": "acl changed"}
    [ev] = p.receive_frame(frame({"op": "result", "id": batch[0]["id"], "ok": False, "error": err}))
    assert isinstance(ev, SubscriptionLost) and ev.sub_id == sub
    assert isinstance(ev.error, errors.Forbidden) and sub not in p.subscriptions


def test_unsubscribe() -> None:
    p = opened()
    sub = subscribed(p, "app.x.**")
    rid = p.unsubscribe(sub)
    assert rid is not None and sent(p) == [{"op": "unsubscribe", "sub": sub, "id": rid}]
    assert p.unsubscribe(sub) is None  # already gone
    sub2 = subscribed(p, "app.y.**")
    p.connection_lost("x")
    assert p.unsubscribe(sub2) is None and sub2 not in p.subscriptions  # nothing to send


# --- what the hub pushes --------------------------------------------------------------


def test_events_drops_and_inbound_commands() -> None:
    p = opened()
    events = p.receive_frame(
        frame(
            {"op": "event", "key": "app.x.b", "data": {"n": 3}, "source": "x", "ts": 7},
            {"op": "dropped", "events": 4},
            {
                "op": "command",
                "id": "h-1",
                "source": "panel",
                "name": "reset",
                "params": {"a": 1},
                "deadline": 99,
            },
        )
    )
    assert events[0] == EventReceived(Event("app.x.b", {"n": 3}, "x", 7))
    assert events[1] == EventsDropped(4)
    cmd = events[2]
    assert isinstance(cmd, CommandReceived)
    assert (cmd.id, cmd.name, cmd.params, cmd.source, cmd.deadline) == (
        "h-1",
        "reset",
        {"a": 1},
        "panel",
        99,
    )
    assert p.send_reply(cmd, {"ok": True, "result": {"done": 1}})
    assert sent(p) == [{"op": "reply", "id": "h-1", "ok": True, "result": {"done": 1}}]
    # a result that is not JSON is answered FAILED
    assert p.send_reply(cmd, {"ok": True, "result": object()})
    [reply] = sent(p)
    assert reply["ok"] is False and reply["error"]["code"] == "FAILED"
    # a command of an earlier connection is not answered on a later one
    p.connection_lost("x")
    p.connect()
    p.receive_frame(frame(welcome()))
    p.data_to_send()
    assert not p.send_reply(cmd, {"ok": True, "result": 1}) and p.data_to_send() == []


def test_malformed_frames_and_messages_are_reported_and_skipped() -> None:
    p = opened()
    subscribed(p, "app.**")
    [bad] = p.receive_frame(b"{not json")
    assert isinstance(bad, MalformedMessage)
    events = p.receive_frame(
        frame({"op": "delta", "key": "app.x.a"}, {"op": "delta", **entry("app.x.b", 1, 1, 30)})
    )
    assert [type(e) for e in events] == [MalformedMessage]
    assert p.mirror.get("app.x.b") is not None  # the next message of the batch was used
    assert p.receive_frame(frame({"op": "from-the-future", "x": 1})) == []  # ignored


def test_hello_message_fields() -> None:
    assert hello_message("a") == {"op": "hello", "id": "hello", "client": "a", "protocol": 1}
    assert hello_message("a", protocol=None, resume={"hub": "h", "rev": 2}, id="x") == {
        "op": "hello",
        "id": "x",
        "client": "a",
        "resume": {"hub": "h", "rev": 2},
    }
