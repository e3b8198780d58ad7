"""The hub's protocol session without sockets (``protocol.session.HubSession``): every
request rule and error code, driven the way the asyncio driver drives it (frames and
time in, frames and close decisions out), in the style of websockets' protocol tests.
The hub behind it is a real :class:`Hub` without an event log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from companion_hub.core.limits import Limits
from companion_hub.hub import Hub, HubConfig
from companion_hub.protocol import session as session_mod
from companion_hub.protocol.session import (
    CloseRequest,
    Hold,
    HubSession,
    SessionSettings,
    SessionState,
)

SETTINGS = SessionSettings(
    heartbeat_ms=1000, window_bytes=4096, frame_target_bytes=64 * 1024, snapshot_chunk_bytes=512
)


class Peer:
    """One connection: sends messages into a session, reads what it would send."""

    def __init__(self, hub: Hub, *, settings: SessionSettings = SETTINGS) -> None:
        self.hub = hub
        self.now = 1000.0
        self.s = HubSession(hub, settings, "127.0.0.1:5000", now=self.now, now_ms=0)
        self._ids = 0

    def send(self, *msgs: dict[str, Any] | str) -> Hold | None:
        for msg in msgs:
            data = msg if isinstance(msg, str) else msgspec.json.encode(msg).decode()
            self.s.receive_text(data)
        return self.s.process(self.now)

    def out(self) -> list[dict[str, Any]]:
        """Every message the session would send now (frames split into messages)."""
        got: list[dict[str, Any]] = []
        while (frame := self.s.next_frame()) is not None:
            obj = msgspec.json.decode(frame)
            got.extend(obj if isinstance(obj, list) else [obj])
            self.s.frame_sent(len(frame), 0)
        return got

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply (other messages are dropped)."""
        self._ids += 1
        rid = msg.setdefault("id", f"r{self._ids}")
        self.send(msg)
        replies = [m for m in self.out() if m.get("id") == rid]
        assert len(replies) == 1, replies
        return replies[0]

    def ok(self, msg: dict[str, Any]) -> Any:
        r = self.request(msg)
        assert r["op"] == "result" and r["ok"], r
        return r["result"]

    def error(self, msg: dict[str, Any]) -> dict[str, Any]:
        r = self.request(msg)
        assert r["op"] == "result" and not r["ok"], r
        return dict(r["error"])


@pytest.fixture
def hub() -> Hub:
    return Hub(HubConfig())


def connect(hub: Hub, client: str, settings: SessionSettings = SETTINGS, **hello: Any) -> Peer:
    p = Peer(hub, settings=settings)
    p.send({"op": "hello", "id": "h", "client": client, **hello})
    welcome = p.out()[0]
    assert welcome["op"] == "welcome" and p.s.state is SessionState.OPEN
    p.welcome = welcome  # type: ignore[attr-defined]
    return p


# --- hello ---------------------------------------------------------------------------


def test_welcome(hub: Hub) -> None:
    p = connect(hub, "tally")
    w = p.welcome  # type: ignore[attr-defined]
    assert (w["id"], w["hub"], w["namespaces"], w["heartbeat_ms"]) == (
        "h",
        hub.hub_id,
        ["app.tally"],
        1000,
    )
    assert w["session"] == p.s.session_id and w["rev"] == hub.store.rev
    assert w["limits"]["frame_bytes"] == Limits().frame_bytes and "oldest_rev" in w["limits"]
    assert hub.sessions["tally"] is p.s
    entry = hub.store.get("hub.clients.tally")
    assert entry is not None and msgspec.json.decode(entry.raw)["connected"] is True


@pytest.mark.parametrize(
    ("first", "rid", "says"),
    [
        ({"op": "get", "id": "7", "patterns": ["**"]}, "7", "first message must be 'hello'"),
        ({"op": "hello", "id": "8", "client": "Bad Name"}, "8", "invalid client name"),
        ({"op": "hello", "id": "9", "client": "ok", "protocol": 2}, "9", "unsupported protocol"),
        ("{not json", None, ""),
        ("[]", None, "first message must be 'hello'"),
    ],
)
def test_a_bad_first_message_is_refused_with_1008(
    hub: Hub, first: dict[str, Any] | str, rid: str | None, says: str
) -> None:
    p = Peer(hub)
    p.send(first)
    assert p.s.state is SessionState.CLOSING and p.s.close_request is not None
    assert p.s.close_request.code == 1008
    (err,) = [msgspec.json.decode(f) for f in p.s.final_frames]
    assert err["op"] == "error" and err["code"] == "BAD_REQUEST" and says in err["message"]
    assert err.get("id") == rid
    assert not hub.sessions and p.out() == []


def test_binary_first_frame_and_hello_timeout_are_refused(hub: Hub) -> None:
    p = Peer(hub)
    p.s.receive_binary()
    assert p.s.close_request is not None and p.s.close_request.code == 1008
    assert b"binary" in p.s.final_frames[0]
    q = Peer(hub)
    q.s.hello_timed_out()
    assert q.s.close_request == CloseRequest(1008, "no hello within 10 s")


def test_messages_after_hello_in_the_same_frame_are_handled(hub: Hub) -> None:
    p = Peer(hub)
    p.send('[{"op":"hello","id":"h","client":"w"},{"op":"set","id":"s","key":"app.w.a","value":1}]')
    ops = [(m["op"], m.get("id")) for m in p.out()]
    assert ops == [("welcome", "h"), ("result", "s")]


def test_hello_after_hello(hub: Hub) -> None:
    p = connect(hub, "w")
    assert "already said hello" in p.error({"op": "hello", "client": "w"})["message"]


def test_takeover_closes_the_older_session_with_4000_and_keeps_keys_fresh(hub: Hub) -> None:
    a = connect(hub, "tally")
    a.ok({"op": "set", "key": "app.tally.x", "value": 1})
    b = connect(hub, "tally")
    assert a.s.close_request == CloseRequest(4000, "replaced")
    assert hub.sessions["tally"] is b.s
    a.s.connection_lost(4000)  # the old connection ends: nothing goes stale
    e = hub.store.get("app.tally.x")
    assert e is not None and not e.stale
    assert b.ok({"op": "set", "key": "app.tally.x", "value": 2})["version"] == 2
    assert a.s.writer.owned == frozenset()


async def test_disconnect_marks_owned_keys_stale_and_the_client_record(hub: Hub) -> None:
    a = connect(hub, "tally")
    a.ok({"op": "set", "key": "app.tally.x", "value": 1})
    a.s.connection_lost(1000)
    e = hub.store.get("app.tally.x")
    assert e is not None and e.stale and e.stale_since > 0
    rec = hub.store.get("hub.clients.tally")
    assert rec is not None and msgspec.json.decode(rec.raw)["connected"] is False
    assert "tally" not in hub.sessions and a.s.state is SessionState.CLOSED


# --- malformed input -------------------------------------------------------------------


def test_a_malformed_frame_is_answered_and_the_connection_kept(hub: Hub) -> None:
    p = connect(hub, "w")
    p.send("{nope")
    p.send('"a string"')
    p.send('{"op":"frobnicate","id":"x"}')
    p.send('{"id":"y"}')
    out = p.out()
    assert [m["op"] for m in out[:2]] == ["error", "error"]
    assert all(m["code"] == "BAD_REQUEST" for m in out[:2])
    assert [(m["id"], m["error"]["code"]) for m in out[2:]] == [
        ("x", "BAD_REQUEST"),
        ("y", "BAD_REQUEST"),
    ]
    p.s.receive_binary()
    assert p.out()[0]["code"] == "BAD_REQUEST"
    assert p.s.state is SessionState.OPEN and p.s.bad_frames == 2


def test_rate_limit(hub: Hub) -> None:
    hub.limits = replace(hub.limits, requests_per_second=3)
    p = Peer(hub)
    p.send({"op": "hello", "id": "h", "client": "w"})
    p.out()
    p.send(*({"op": "get", "id": str(i), "patterns": ["hub.info"]} for i in range(5)))
    codes = [m.get("error", {}).get("code") for m in p.out()]
    assert codes == [None, None, None, "RATE_LIMITED", "RATE_LIMITED"]
    p.now += 1.0  # a second later the bucket has refilled
    assert p.ok({"op": "get", "patterns": ["hub.info"]})["entries"]


# --- reading ----------------------------------------------------------------------------


def test_subscribe_rules(hub: Hub) -> None:
    hub.limits = replace(hub.limits, subscriptions=2, patterns_per_subscription=2)
    p = connect(hub, "r")
    assert p.error({"op": "subscribe", "sub": "", "patterns": ["a"]})["code"] == "BAD_REQUEST"
    assert p.error({"op": "subscribe", "sub": "s", "patterns": []})["code"] == "BAD_REQUEST"
    assert p.error({"op": "subscribe", "sub": "s", "patterns": ["a*"]})["code"] == "BAD_REQUEST"
    err = p.error({"op": "subscribe", "sub": "s", "patterns": ["a", "b", "c"]})
    assert err["code"] == "LIMIT_EXCEEDED"
    assert p.request({"op": "subscribe", "sub": "s1", "patterns": ["a"]})["op"] == "snapshot"
    dup = p.error({"op": "subscribe", "sub": "s1", "patterns": ["a"]})
    assert dup["code"] == "BAD_REQUEST" and "already exists" in dup["message"]
    p.request({"op": "subscribe", "sub": "s2", "patterns": ["a"]})
    assert p.error({"op": "subscribe", "sub": "s3", "patterns": ["a"]})["code"] == "LIMIT_EXCEEDED"
    assert p.error({"op": "unsubscribe", "sub": "nope"})["code"] == "NOT_FOUND"
    assert p.ok({"op": "unsubscribe", "sub": "s1"}) == {}


def snapshot(p: Peer, **sub: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe; (the last snapshot message, every entry of all chunks)."""
    rid = "snap"
    p.send({"op": "subscribe", "id": rid, "sub": sub.pop("sub", "s"), **sub})
    chunks = [m for m in p.out() if m.get("id") == rid]
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert len({c["rev"] for c in chunks}) == 1
    return chunks[-1], [e for c in chunks for e in c["entries"]]


def test_snapshot_full_chunked_then_deltas_with_owner(hub: Hub) -> None:
    w = connect(hub, "w")
    w.ok({"op": "set", "entries": [{"key": f"app.w.k{i:02}", "value": i} for i in range(20)]})
    r = connect(hub, "r")
    last, entries = snapshot(r, patterns=["app.w.**"])
    assert last["mode"] == "full" and len(entries) == 20  # in several 512-byte chunks
    assert all(e["owner"] == "app.w" and e["stale"] is False for e in entries)
    w.ok({"op": "set", "key": "app.w.k00", "value": "x"})
    w.ok({"op": "delete", "key": "app.w.k01"})
    deltas = [m for m in r.out() if m["op"] == "delta"]
    assert [(d["key"], d.get("deleted", False), d["owner"]) for d in deltas] == [
        ("app.w.k00", False, "app.w"),
        ("app.w.k01", True, "app.w"),
    ]
    assert deltas[0]["rev"] > last["rev"]


def test_subscribe_without_snapshot_answers_the_rev(hub: Hub) -> None:
    r = connect(hub, "r")
    res = r.ok({"op": "subscribe", "sub": "s", "patterns": ["**"], "snapshot": False})
    assert res == {"rev": hub.store.rev}


def test_incremental_resume_needs_the_same_hub(hub: Hub) -> None:
    w = connect(hub, "w")
    for k in "abc":
        w.ok({"op": "set", "key": f"app.w.{k}", "value": k})
    since = hub.store.rev
    w.ok({"op": "set", "key": "app.w.a", "value": "A"})
    w.ok({"op": "delete", "key": "app.w.b"})
    r = connect(hub, "r", resume={"hub": hub.hub_id, "rev": since})
    last, entries = snapshot(r, patterns=["app.w.*"], since=since)
    assert last["mode"] == "incremental"
    assert [(e["key"], e["value"]) for e in entries] == [("app.w.a", "A")]
    assert last["removed"] == [{"key": "app.w.b", "version": 2, "rev": since + 2}]
    o = connect(hub, "o", resume={"hub": "another", "rev": since})
    last, entries = snapshot(o, patterns=["app.w.*"], since=since)
    assert last["mode"] == "full" and {e["key"] for e in entries} == {"app.w.a", "app.w.c"}
    ahead = connect(hub, "x", resume={"hub": hub.hub_id, "rev": since})
    last, _ = snapshot(ahead, patterns=["app.w.*"], since=hub.store.rev + 5)
    assert last["mode"] == "full"


def test_get(hub: Hub) -> None:
    w = connect(hub, "w")
    w.ok({"op": "set", "key": "app.w.b", "value": 2})
    w.ok({"op": "set", "key": "app.w.a", "value": 1})
    res = w.ok({"op": "get", "patterns": ["app.w.*"]})
    assert [e["key"] for e in res["entries"]] == ["app.w.a", "app.w.b"]
    assert res["rev"] == hub.store.rev
    assert w.error({"op": "get", "patterns": ["**.a"]})["code"] == "BAD_REQUEST"


def test_progress_for_an_idle_subscriber(hub: Hub) -> None:
    r = connect(hub, "r")
    snapshot(r, patterns=["app.r.**"])
    w = connect(hub, "w")
    w.ok({"op": "set", "key": "app.w.a", "value": 1})  # not what r subscribed to
    r.s.tick(hub.store.rev, now_ms=500)  # quiet for less than a heartbeat: nothing
    assert r.out() == []
    r.s.tick(hub.store.rev, now_ms=2000)
    assert r.out() == [{"op": "progress", "rev": hub.store.rev}]
    r.s.tick(hub.store.rev, now_ms=4000)  # nothing new since: no second progress
    assert r.out() == []


# --- writing -----------------------------------------------------------------------------


def test_write_rules(hub: Hub) -> None:
    hub.limits = hub.store.limits = replace(hub.limits, value_bytes=64)
    w = connect(hub, "w")
    r1 = w.ok({"op": "set", "key": "app.w.a", "value": 1})
    assert w.ok({"op": "set", "key": "app.w.a", "value": 1.0}) == r1  # equal: no change
    assert w.error({"op": "set", "key": "app.x.a", "value": 1})["code"] == "NOT_OWNER"
    c = w.error({"op": "set", "key": "app.w.a", "value": 2, "expect_version": 5})
    assert c["code"] == "CONFLICT" and c["details"] == {"key": "app.w.a", "version": 1}
    assert w.error({"op": "set", "key": "app.w.a", "value": "x" * 100})["code"] == "TOO_LARGE"
    assert w.error({"op": "set", "key": "app.w.a"})["code"] == "BAD_REQUEST"
    assert w.error({"op": "set", "value": 1})["code"] == "BAD_REQUEST"
    both = {"op": "set", "key": "app.w.a", "value": 1, "entries": [{"key": "app.w.b", "value": 1}]}
    assert w.error(both)["code"] == "BAD_REQUEST"
    assert w.error({"op": "set", "key": "app..w", "value": 1})["code"] == "BAD_REQUEST"
    assert w.error({"op": "delete", "key": "app.w.none"})["code"] == "NOT_FOUND"
    assert (
        w.error({"op": "set", "key": "app.w.new", "value": 1, "expect_version": 1})["code"]
        == "CONFLICT"
    )


def test_batch_is_atomic_and_names_the_bad_entry(hub: Hub) -> None:
    w = connect(hub, "w")
    rev = hub.store.rev
    err = w.error(
        {
            "op": "set",
            "entries": [{"key": "app.w.a", "value": 1}, {"key": "app.other.b", "value": 2}],
        }
    )
    assert err["code"] == "NOT_OWNER" and err["details"]["index"] == 1
    assert hub.store.rev == rev and hub.store.get("app.w.a") is None
    missing = w.error({"op": "set", "entries": [{"key": "app.w.a"}]})
    assert missing["details"] == {"index": 0, "key": "app.w.a"}
    res = w.ok(
        {"op": "set", "entries": [{"key": "app.w.a", "value": 1}, {"key": "app.w.b", "value": 2}]}
    )
    assert [r["rev"] for r in res["results"]] == [rev + 1, rev + 2]


def test_durable_without_a_log_is_answered_at_once(hub: Hub) -> None:
    w = connect(hub, "w")
    assert w.ok({"op": "set", "key": "app.w.a", "value": 1, "durable": True})["version"] == 1
    assert w.ok({"op": "delete", "key": "app.w.a", "durable": True})["version"] == 2


async def test_sync_deletes_what_this_connection_did_not_write(hub: Hub) -> None:
    a = connect(hub, "w")
    a.ok({"op": "set", "entries": [{"key": "app.w.a", "value": 1}, {"key": "app.w.b", "value": 2}]})
    a.s.connection_lost(1000)
    b = connect(hub, "w")
    b.ok({"op": "set", "key": "app.w.a", "value": 1})  # equal: counts as written
    res = b.ok({"op": "sync"})
    assert res == {"deleted": 1, "rev": hub.store.rev}
    assert hub.store.get("app.w.b") is None and hub.store.get("app.w.a") is not None


def test_publish(hub: Hub) -> None:
    w = connect(hub, "w")
    r = connect(hub, "r")
    snapshot(r, patterns=["app.w.**"], events=True)
    assert w.ok({"op": "publish", "key": "app.w.ev", "data": {"n": 1}}) == {"delivered": 1}
    (ev,) = r.out()
    assert (ev["op"], ev["key"], ev["data"], ev["source"]) == ("event", "app.w.ev", {"n": 1}, "w")
    assert w.error({"op": "publish", "key": "app.r.ev", "data": 1})["code"] == "NOT_OWNER"


# --- commands -----------------------------------------------------------------------------


async def test_command_rules_and_a_round_trip(hub: Hub) -> None:
    caller = connect(hub, "panel")
    owner = connect(hub, "mixer")
    for bad in (
        {"op": "command", "target": "app.mixer", "name": ""},
        {"op": "command", "target": "app.mixer", "name": "x", "timeout_ms": 0},
    ):
        assert caller.error(bad)["code"] == "BAD_REQUEST"
    caller.send({"op": "command", "target": "app.mixer", "name": "x"})  # no id
    assert caller.out()[0]["code"] == "BAD_REQUEST"
    assert caller.error({"op": "command", "target": "app.none", "name": "x"})["code"] == (
        "UNAVAILABLE"
    )
    caller.send({"op": "command", "id": "c1", "target": "app.mixer", "name": "cut", "params": {}})
    (cmd,) = owner.out()
    assert (cmd["op"], cmd["source"], cmd["name"]) == ("command", "panel", "cut")
    owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": {"done": 1}})
    (res,) = caller.out()
    assert res == {"op": "result", "id": "c1", "ok": True, "result": {"done": 1}}
    owner.send({"op": "reply", "id": cmd["id"], "ok": True})  # a second reply: no command
    (err,) = owner.out()
    assert err["op"] == "error" and err["code"] == "NOT_FOUND"


async def test_a_reply_too_large_fails_for_both_sides(hub: Hub) -> None:
    hub.router.max_result_bytes = 100
    caller = connect(hub, "panel")
    owner = connect(hub, "mixer")
    caller.send({"op": "command", "id": "c1", "target": "app.mixer", "name": "dump"})
    (cmd,) = owner.out()
    owner.send({"op": "reply", "id": cmd["id"], "ok": True, "result": "x" * 500})
    assert owner.out()[0]["code"] == "TOO_LARGE"
    assert caller.out()[0]["error"]["code"] == "TOO_LARGE"


async def test_an_owner_that_leaves_fails_its_commands(hub: Hub) -> None:
    caller = connect(hub, "panel")
    owner = connect(hub, "mixer")
    caller.send({"op": "command", "id": "c1", "target": "app.mixer", "name": "cut"})
    owner.out()
    owner.s.connection_lost(1006)
    (res,) = caller.out()
    assert (
        res["error"]["code"] == "UNAVAILABLE"
        and "may have been executed" in res["error"]["message"]
    )


# --- holding a client, the delivery window -------------------------------------------------


def test_replies_unread_hold_the_reader_until_it_reads(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod, "CONTROL_BACKLOG_BYTES", 2000)
    p = connect(hub, "w")
    reqs = [{"op": "get", "id": str(i), "patterns": ["hub.**"]} for i in range(100)]
    hold = p.send(*reqs)
    assert hold is Hold.REPLIES_UNREAD and not p.s.has_room()
    handled = len(p.out())  # the client reads: room again
    assert p.s.has_room() and 0 < handled < 100
    while p.s.process(p.now) is not None:
        handled += len(p.out())
    handled += len(p.out())
    assert handled == 100


def test_the_log_behind_holds_the_reader(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    p = connect(hub, "w")
    monkeypatch.setattr(Hub, "log_over_limit", property(lambda self: True))
    assert p.send({"op": "set", "id": "1", "key": "app.w.a", "value": 1}) is Hold.LOG_BEHIND
    assert p.out() == []
    monkeypatch.setattr(Hub, "log_over_limit", property(lambda self: False))
    assert p.s.process(p.now) is None
    assert p.out()[0]["id"] == "1"


def pings(p: Peer) -> Iterator[bytes]:
    return p.s.pings()


def test_the_delivery_window_holds_deltas_until_a_pong(hub: Hub) -> None:
    w = connect(hub, "w")
    r = connect(hub, "r", replace(SETTINGS, frame_target_bytes=512))
    snapshot(r, patterns=["app.w.**"])
    sent: list[bytes] = []
    for i in range(200):
        w.ok({"op": "set", "key": f"app.w.k{i}", "value": "v" * 40})
    window_pings: list[bytes] = []
    while (frame := r.s.next_frame()) is not None:
        sent.append(frame)
        ping = r.s.frame_sent(len(frame), 0)
        if ping is not None:
            window_pings.append(ping)
    assert window_pings and sum(map(len, sent)) < 4096 + 1024  # the window is full
    assert len(r.s.queue) > 0  # the rest waits (and would coalesce) in the hub
    # an empty pong (RFC 6455 lets a client answer only the latest ping, and a
    # heartbeat's ping is empty) cannot be matched: it asks for a probe ping
    r.s.receive_pong(b"")
    probes = list(pings(r))
    assert probes and r.s.next_frame() is None  # still full until the probe's pong
    r.s.receive_pong(probes[-1])
    assert r.s.next_frame() is not None  # confirmed: deltas flow again


async def test_closed_session_ignores_input_and_answers_no_durable_reply(hub: Hub) -> None:
    p = connect(hub, "w")
    p.s.connection_lost(1000)
    p.send({"op": "set", "id": "1", "key": "app.w.a", "value": 1})
    assert p.out() == [] and hub.store.get("app.w.a") is None


def test_an_unexpected_failure_is_internal_and_the_session_goes_on(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = connect(hub, "w")

    def broken(patterns: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(hub.store, "matching", broken)
    err = p.error({"op": "get", "patterns": ["hub.**"]})
    assert err == {"code": "INTERNAL", "message": "internal error"}  # no details leak
    monkeypatch.undo()
    assert p.ok({"op": "get", "patterns": ["hub.info"]})["entries"]


# --- authentication (the driver checks the token; the session holds meanwhile) -------------


def test_with_tokens_hello_waits_for_the_driver(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    from companion_hub.core.acl import BUILTIN_ROLES, Identity
    from companion_hub.core.errors import ErrorCode, HubError

    monkeypatch.setattr(Hub, "auth_required", property(lambda self: True))
    p = Peer(hub)
    hold = p.send(
        '[{"op":"hello","id":"h","client":"w","token":"T"},'
        '{"op":"set","id":"s","key":"app.w.a","value":1}]'
    )
    assert hold is Hold.AUTHENTICATING and p.s.auth_request == ("w", "T")
    assert p.out() == [] and "w" not in hub.sessions
    p.s.authenticated(Identity("w", BUILTIN_ROLES["viewer"], token="t1", enforced=True))
    assert p.s.process(p.now) is None
    out = p.out()
    assert out[0]["op"] == "welcome" and out[0]["namespaces"] == []
    assert out[1]["error"]["code"] == "FORBIDDEN"  # a viewer owns nothing

    # another token for the same client name may not take over
    q = Peer(hub)
    q.send({"op": "hello", "id": "h2", "client": "w", "token": "U"})
    q.s.authenticated(Identity("w", BUILTIN_ROLES["app"], token="t2", enforced=True))
    assert q.s.close_request is not None and q.s.close_request.code == 1008
    assert b"FORBIDDEN" in q.s.final_frames[0] and hub.sessions["w"] is p.s

    r = Peer(hub)
    r.send({"op": "hello", "id": "h3", "client": "x"})
    r.s.auth_failed(HubError(ErrorCode.UNAUTHORIZED, "a token is required"))
    assert r.s.close_request is not None and r.s.close_request.code == 1008
    assert b"UNAUTHORIZED" in r.s.final_frames[0] and b'"h3"' in r.s.final_frames[0]
