"""The SDK's mirror (sans I/O): the spec's three guarantees on the client side."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion_hub.client import errors
from companion_hub.client.mirror import Change, Mirror, covers
from companion_hub.client.protocol import is_key, parse_patterns
from companion_hub.client.wire import decode_frame
from companion_hub.core.keys import match, parse_pattern


def parse(text: str) -> tuple[str, ...]:
    """A pattern through the SDK's parser (the hub's grammar, the SDK's error type)."""
    (pattern,) = parse_patterns([text])
    return pattern


def ent(key: str, value: Any, version: int, rev: int, stale: bool = False) -> dict[str, Any]:
    return {
        "key": key,
        "value": value,
        "version": version,
        "rev": rev,
        "owner": "app.x",
        "stale": stale,
        "ts": 1000 + rev,
    }


def delta(key: str, value: Any, version: int, rev: int, stale: bool = False) -> dict[str, Any]:
    return {"op": "delta", **ent(key, value, version, rev, stale)}


def deleted(key: str, version: int, rev: int) -> dict[str, Any]:
    return {"op": "delta", "key": key, "deleted": True, "version": version, "rev": rev}


def snap(
    sub: str,
    rev: int,
    entries: list[dict[str, Any]],
    *,
    mode: str = "full",
    removed: list[str] | None = None,
    done: bool = True,
) -> dict[str, Any]:
    return {
        "op": "snapshot",
        "id": "1",
        "sub": sub,
        "rev": rev,
        "mode": mode,
        "entries": entries,
        "removed": removed or [],
        "done": done,
    }


def mirror_with(*patterns: str, hub: str = "h1") -> tuple[Mirror, list[Change]]:
    m = Mirror()
    seen: list[Change] = []
    m.add_listener(seen.append)
    m.on_welcome(hub)
    m.add_sub("s1", [parse(p) for p in patterns])
    return m, seen


def view(m: Mirror) -> dict[str, tuple[Any, int, bool]]:
    return {k: (e.value, e.version, e.stale) for k, e in m.entries.items()}


# --- patterns -------------------------------------------------------------------------


def test_match_and_covers() -> None:
    assert match(parse("a.**"), "a")
    assert match(parse("a.**"), "a.b.c")
    assert not match(parse("a.*"), "a")
    assert match(parse("a.*.c"), "a.b.c")
    assert covers(parse("a.**"), parse("a.*.c"))
    assert covers(parse("a.*"), parse("a.b"))
    assert not covers(parse("a.b.**"), parse("a.**"))
    assert not covers(parse("a.b"), parse("a.*"))
    assert not covers(parse("a.*"), parse("a.**"))
    assert covers(parse("**"), parse("x.y"))
    assert is_key("a.b") and not is_key("a.*")
    with pytest.raises(errors.BadRequest):
        parse("a.**.b")
    with pytest.raises(errors.BadRequest):
        parse("a.b*")


def test_the_sdk_parses_with_the_hubs_grammar() -> None:
    for text in ["a", "a.*", "a.**", "*.b.*", "**", "A-b_9.x"]:
        assert parse(text) == parse_pattern(text)
    for bad in ["", "a..b", "a.**.b", "a.b*", "a b", "x." * 3]:
        with pytest.raises(errors.BadRequest):  # also a ValueError, like before
            parse(bad)
        with pytest.raises(ValueError):
            parse(bad)


def test_frames_are_objects_or_arrays() -> None:
    assert decode_frame('{"op":"progress","rev":3}') == [{"op": "progress", "rev": 3}]
    assert decode_frame(b'[{"op":"a"},{"op":"b"},3]') == [{"op": "a"}, {"op": "b"}]
    with pytest.raises(errors.Internal):
        decode_frame("not json")
    with pytest.raises(errors.Internal):
        decode_frame("3")


def test_error_hierarchy_maps_every_code() -> None:
    for code in errors.ErrorCode:
        exc = errors.error_from_wire({"code": str(code), "message": "m", "details": {"x": 1}})
        assert type(exc) is not errors.HubError
        assert isinstance(exc, errors.HubError)
        assert exc.code == code and exc.message == "m" and exc.details == {"x": 1}
    odd = errors.error_from_wire({"code": "WHAT", "message": "m"})
    assert type(odd) is errors.HubError and odd.code == errors.ErrorCode.FAILED


# --- versions only increase -----------------------------------------------------------


def test_delta_rules() -> None:
    m, seen = mirror_with("app.**")
    m.on_snapshot(snap("s1", 10, [ent("app.x.a", 1, 3, 9)]))
    assert view(m) == {"app.x.a": (1, 3, False)}
    assert m.on_delta(delta("app.x.a", 0, 2, 11)) is None  # older version
    assert m.on_delta(delta("app.x.a", 1, 3, 9)) is None  # duplicate
    assert m.on_delta(delta("app.x.a", 5, 3, 8)) is None  # equal version, lower rev
    ch = m.on_delta(delta("app.x.a", 1, 3, 12, stale=True))  # stale flip
    assert ch is not None and ch.stale and ch.version == 3
    ch = m.on_delta(delta("app.x.a", 2, 4, 13))
    assert ch is not None and ch.value == 2 and not ch.stale
    assert [c.version for c in seen] == [3, 3, 4]
    assert m.rev == 13


def test_delete_leaves_a_tombstone() -> None:
    m, _ = mirror_with("app.**")
    m.on_snapshot(snap("s1", 5, [ent("app.x.a", 1, 1, 5)]))
    ch = m.on_delta(deleted("app.x.a", 2, 6))
    assert ch is not None and ch.deleted and m.get("app.x.a") is None
    assert m.on_delta(delta("app.x.a", 1, 1, 5)) is None  # an old value can't resurrect it
    assert m.get("app.x.a") is None
    ch = m.on_delta(delta("app.x.a", "again", 3, 7))  # re-created: next version
    assert ch is not None and m.get("app.x.a").value == "again"  # type: ignore[union-attr]


def test_deltas_outside_the_subscriptions_are_ignored() -> None:
    m, _ = mirror_with("app.x.*")
    m.on_snapshot(snap("s1", 1, []))
    assert m.on_delta(delta("app.y.a", 1, 1, 2)) is None
    assert m.get("app.y.a") is None
    assert m.rev == 2  # still a resume point


# --- snapshots ------------------------------------------------------------------------


def test_chunked_snapshot_is_applied_on_the_last_chunk() -> None:
    m, seen = mirror_with("app.**")
    assert not m.on_snapshot(snap("s1", 20, [ent("app.x.a", 1, 1, 3)], done=False))
    assert m.get("app.x.a") is None and not m.is_synced("s1") and m.rev == 0
    assert not m.on_snapshot(snap("s1", 20, [ent("app.x.b", 2, 1, 4)], done=False))
    assert m.on_snapshot(snap("s1", 20, [ent("app.x.c", 3, 1, 5)]))
    assert view(m) == {"app.x.a": (1, 1, False), "app.x.b": (2, 1, False), "app.x.c": (3, 1, False)}
    assert m.is_synced("s1") and m.rev == 20 and len(seen) == 3


def test_full_snapshot_replaces_what_the_patterns_cover() -> None:
    m, seen = mirror_with("app.x.**")
    m.add_sub("s2", [parse("app.y.**")])
    m.on_snapshot(snap("s1", 5, [ent("app.x.a", 1, 1, 2), ent("app.x.b", 1, 1, 3)]))
    m.on_snapshot(snap("s2", 5, [ent("app.y.a", 1, 1, 4)]))
    # a new full snapshot of s1: b is gone, a changed; s2's key is untouched
    m.on_snapshot(snap("s1", 9, [ent("app.x.a", 7, 2, 8)]))
    assert view(m) == {"app.x.a": (7, 2, False), "app.y.a": (1, 1, False)}
    gone = [c for c in seen if c.deleted]
    assert [c.key for c in gone] == ["app.x.b"]
    # a stale value (version 1) after the removal is refused
    assert m.on_delta(delta("app.x.b", 1, 1, 3)) is None


def test_incremental_snapshot_applies_entries_and_removed() -> None:
    m, _ = mirror_with("app.**")
    m.on_snapshot(snap("s1", 5, [ent("app.x.a", 1, 1, 2), ent("app.x.b", 1, 1, 3)]))
    assert m.since("s1") == 5
    m.on_snapshot(snap("s1", 9, [ent("app.x.c", 1, 1, 8)], mode="incremental", removed=["app.x.b"]))
    assert view(m) == {"app.x.a": (1, 1, False), "app.x.c": (1, 1, False)}
    assert m.rev == 9


def test_new_hub_id_replaces_the_mirror_whatever_the_versions() -> None:
    m, _ = mirror_with("app.**")
    m.on_snapshot(snap("s1", 50, [ent("app.x.a", "old", 9, 40), ent("app.x.b", 1, 4, 41)]))
    assert m.on_welcome("h1") is True and m.since("s1") == 50
    assert m.on_welcome("h2") is False
    assert m.resume() == {"hub": "h2", "rev": 0}
    assert m.since("s1") is None  # must be a full snapshot
    m.on_snapshot(snap("s1", 3, [ent("app.x.a", "new", 1, 2)]))
    assert view(m) == {"app.x.a": ("new", 1, False)}
    # versions of the new hub count from here on: b may be re-created at version 1
    assert m.on_delta(delta("app.x.b", 1, 1, 4)) is not None
    assert m.rev == 4


def test_remove_sub_prunes_uncovered_keys() -> None:
    m, _ = mirror_with("app.x.**")
    m.add_sub("s2", [parse("app.**")])
    m.on_snapshot(snap("s1", 2, [ent("app.x.a", 1, 1, 1)]))
    m.on_snapshot(snap("s2", 3, [ent("app.x.a", 1, 1, 1), ent("app.y.a", 1, 1, 2)]))
    assert m.covered(parse("app.y.*"))
    m.remove_sub("s2")
    assert view(m) == {"app.x.a": (1, 1, False)}
    assert not m.covered(parse("app.y.*")) and m.covered(parse("app.x.a"))


def test_progress_moves_the_resume_point() -> None:
    m, _ = mirror_with("app.**")
    m.on_snapshot(snap("s1", 5, []))
    m.on_progress(42)
    m.on_progress(7)
    assert m.rev == 42 and m.since("s1") == 42


# --- property-based: random deliveries ------------------------------------------------


@dataclass
class _Change:
    key: str
    version: int
    rev: int
    value: Any
    stale: bool
    deleted: bool

    def wire(self) -> dict[str, Any]:
        if self.deleted:
            return deleted(self.key, self.version, self.rev)
        return delta(self.key, self.value, self.version, self.rev, self.stale)


class _Model:
    """A naive hub store for one namespace: versions, revisions, staleness."""

    def __init__(self) -> None:
        self.rev = 0
        self.state: dict[str, tuple[Any, int, bool]] = {}
        self.tombs: dict[str, int] = {}
        self.changes: list[_Change] = []

    def _commit(self, key: str, value: Any, version: int, stale: bool, dead: bool) -> None:
        self.rev += 1
        if dead:
            self.state.pop(key, None)
            self.tombs[key] = version
        else:
            self.state[key] = (value, version, stale)
        self.changes.append(_Change(key, version, self.rev, value, stale, dead))

    def apply(self, op: tuple[str, str, int]) -> None:
        kind, key, value = op
        cur = self.state.get(key)
        if kind == "set":
            if cur is not None and cur[0] == value:
                if cur[2]:
                    self._commit(key, value, cur[1], False, False)
                return
            version = cur[1] + 1 if cur else self.tombs.get(key, 0) + 1
            self._commit(key, value, version, False, False)
        elif kind == "delete" and cur is not None:
            self._commit(key, None, cur[1] + 1, False, True)
        elif kind == "stale":
            for k, (v, ver, st) in sorted(self.state.items()):
                if not st:
                    self._commit(k, v, ver, True, False)

    def snapshot(self, upto: int) -> list[dict[str, Any]]:
        """A full snapshot of the state after revision ``upto``."""
        state: dict[str, _Change] = {}
        for c in self.changes:
            if c.rev > upto:
                break
            if c.deleted:
                state.pop(c.key, None)
            else:
                state[c.key] = c
        return [ent(c.key, c.value, c.version, c.rev, c.stale) for c in state.values()]


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "set", "delete", "stale"]),
        st.sampled_from(["app.x.a", "app.x.b", "app.x.c", "app.x.d"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=60,
)


def _check_monotonic(seen: list[Change]) -> None:
    last: dict[str, tuple[int, int]] = {}
    for c in seen:
        if c.key in last:
            assert (c.version, c.rev) > last[c.key], (c, last[c.key])
            assert c.version >= last[c.key][0]
        last[c.key] = (c.version, c.rev)


@settings(max_examples=300, deadline=None)
@given(ops=ops, seed=st.integers(0, 2**32 - 1), cut=st.floats(0, 1))
def test_coalesced_delivery_only_increases_and_converges(
    ops: list[tuple[str, str, int]], seed: int, cut: float
) -> None:
    """The hub's delivery: a snapshot at some revision, then deltas in revision order
    where any change but the newest of each key may have been coalesced away."""
    model = _Model()
    for op in ops:
        model.apply(op)
    rng = random.Random(seed)
    start = int(cut * model.rev)
    m, seen = mirror_with("app.**")
    m.on_snapshot(snap("s1", start, model.snapshot(start)))
    later = [c for c in model.changes if c.rev > start]
    newest = {c.key: c.rev for c in later}
    delivered = [c for c in later if newest[c.key] == c.rev or rng.random() < 0.5]
    for c in delivered:
        m.on_delta(c.wire())
    _check_monotonic(seen)
    assert view(m) == model.state
    assert m.rev == max(start, delivered[-1].rev if delivered else 0)


@settings(max_examples=300, deadline=None)
@given(ops=ops, seed=st.integers(0, 2**32 - 1))
def test_any_delivery_order_only_increases_and_converges(
    ops: list[tuple[str, str, int]], seed: int
) -> None:
    """Even a shuffled delivery with duplicates (as a buggy resume could produce)
    never moves a key backwards, and converges once each key's newest change is in."""
    model = _Model()
    for op in ops:
        model.apply(op)
    rng = random.Random(seed)
    m, seen = mirror_with("app.**")
    m.on_snapshot(snap("s1", 0, []))
    newest = {c.key: c for c in model.changes}
    delivery = [c for c in model.changes if rng.random() < 0.6]
    delivery += list(newest.values())
    delivery += rng.sample(model.changes, min(len(model.changes), 5))  # duplicates
    rng.shuffle(delivery)
    for c in delivery:
        m.on_delta(c.wire())
    _check_monotonic(seen)
    assert view(m) == model.state


@settings(max_examples=200, deadline=None)
@given(ops=ops, cut=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_resume_equals_a_fresh_snapshot(
    ops: list[tuple[str, str, int]], cut: float, seed: int
) -> None:
    """Processing up to some revision, then an incremental snapshot since it (keys
    changed after it: current entry or removed) ends like a fresh full snapshot."""
    model = _Model()
    for op in ops:
        model.apply(op)
    rng = random.Random(seed)
    since = int(cut * model.rev)
    m, _ = mirror_with("app.**")
    m.on_snapshot(snap("s1", 0, []))
    newest_before = {c.key: c.rev for c in model.changes if c.rev <= since}
    for c in model.changes:  # a coalesced delivery up to `since`
        if c.rev <= since and (newest_before[c.key] == c.rev or rng.random() < 0.5):
            m.on_delta(c.wire())
    m.on_progress(since)
    assert m.on_welcome("h1") is True
    resume_since = m.since("s1")
    assert resume_since == since or (since == 0 and resume_since is None)
    changed = list(dict.fromkeys(c.key for c in model.changes if c.rev > since))
    current = {e["key"]: e for e in model.snapshot(model.rev)}
    entries = [current[k] for k in changed if k in current]
    removed = [k for k in changed if k not in model.state]
    m.on_snapshot(snap("s1", model.rev, entries, mode="incremental", removed=removed))
    fresh, _ = mirror_with("app.**")
    fresh.on_snapshot(snap("s1", model.rev, model.snapshot(model.rev)))
    assert view(m) == view(fresh) == model.state
