"""Protocol revision 2 in the SDK, sans I/O: ``owner`` on deltas, ``stale_since``,
versions in a snapshot's ``removed``, ``durable`` writes, ``limits.oldest_rev``.

Every new field is optional: the same code keeps working with a hub that omits it.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from companion_hub.client import requests
from companion_hub.client.messages import (
    Change,
    Removal,
    entry_from_wire,
    removal_from_wire,
    welcome_from_wire,
)
from companion_hub.client.mirror import Mirror
from companion_hub.core.keys import parse_pattern


def mirror(*patterns: str) -> tuple[Mirror, list[Change]]:
    m = Mirror()
    seen: list[Change] = []
    m.add_listener(seen.append)
    m.on_welcome("h1")
    m.add_sub("s1", [parse_pattern(p) for p in patterns])
    return m, seen


def snap(rev: int, entries: list[Any], removed: list[Any] | None = None, **kw: Any) -> Any:
    return {
        "op": "snapshot",
        "sub": "s1",
        "rev": rev,
        "mode": kw.get("mode", "full"),
        "entries": entries,
        "removed": removed or [],
        "done": kw.get("done", True),
    }


def ent(key: str, value: Any, version: int, rev: int, **extra: Any) -> dict[str, Any]:
    return {"key": key, "value": value, "version": version, "rev": rev, **extra}


# --- owner and stale_since ------------------------------------------------------------


def test_deltas_carry_owner_and_old_hubs_keep_the_previous_one() -> None:
    m, seen = mirror("app.**")
    m.on_snapshot(snap(5, [ent("app.x.a", 1, 1, 5, owner="app.x")]))
    # revision 2: the delta says who owns the key, even for a key first seen in it
    m.on_delta({"op": "delta", **ent("app.y.b", 1, 1, 6, owner="app.y")})
    assert m.get("app.y.b").owner == "app.y"  # type: ignore[union-attr]
    # an earlier hub: no owner on the delta, the previous entry's is kept
    m.on_delta({"op": "delta", **ent("app.x.a", 2, 2, 7)})
    assert m.get("app.x.a").owner == "app.x"  # type: ignore[union-attr]
    # deleted deltas carry it too, and so does the change
    ch = m.on_delta(
        {"op": "delta", "key": "app.y.b", "deleted": True, "version": 2, "rev": 8, "owner": "app.y"}
    )
    assert ch is not None and ch.deleted and ch.owner == "app.y"
    ch = m.on_delta({"op": "delta", "key": "app.x.a", "deleted": True, "version": 3, "rev": 9})
    assert ch is not None and ch.owner == "app.x"  # without owner: the held entry's
    assert [c.owner for c in seen] == ["app.x", "app.y", "app.x", "app.y", "app.x"]


def test_stale_since_is_kept_on_stale_entries_only() -> None:
    m, _ = mirror("app.**")
    m.on_snapshot(snap(5, [ent("app.x.a", 1, 1, 5, owner="app.x", ts=100)]))
    ch = m.on_delta(
        {"op": "delta", **ent("app.x.a", 1, 1, 6, stale=True, ts=100, stale_since=4200)}
    )
    assert ch is not None and ch.stale and ch.stale_since == 4200 and ch.ts == 100
    assert m.get("app.x.a").stale_since == 4200  # type: ignore[union-attr]
    ch = m.on_delta({"op": "delta", **ent("app.x.a", 1, 1, 7, stale=False, ts=100)})
    assert ch is not None and not ch.stale and ch.stale_since is None
    # a hub that does not send it: None
    ch = m.on_delta({"op": "delta", **ent("app.x.a", 1, 1, 8, stale=True)})
    assert ch is not None and ch.stale and ch.stale_since is None
    assert entry_from_wire(ent("k", 1, 1, 1, stale=False, stale_since=5)).stale_since is None


# --- removed with versions ------------------------------------------------------------


def test_removed_accepts_both_forms() -> None:
    assert removal_from_wire("app.x.a") == Removal("app.x.a")
    assert removal_from_wire({"key": "app.x.a", "version": 4, "rev": 9}) == Removal("app.x.a", 4, 9)
    assert removal_from_wire({"key": "app.x.a"}) == Removal("app.x.a")


def test_incremental_removal_with_versions_deletes_older_entries() -> None:
    m, seen = mirror("app.**")
    m.on_snapshot(snap(5, [ent("app.x.a", 1, 3, 4, owner="app.x"), ent("app.x.b", 1, 1, 5)]))
    removed = [{"key": "app.x.a", "version": 4, "rev": 8}, "app.x.b"]
    m.on_snapshot(snap(10, [], removed, mode="incremental"))
    assert m.entries == {}
    dels = [c for c in seen if c.deleted]
    # the deletion's own version and rev when given; an estimate for a bare key
    assert [(c.key, c.version, c.rev, c.owner) for c in dels] == [
        ("app.x.a", 4, 8, "app.x"),
        ("app.x.b", 2, 10, None),
    ]
    # the exact tombstone refuses the value the deletion replaced...
    assert m.on_delta({"op": "delta", **ent("app.x.a", 1, 3, 7)}) is None
    # ...and takes a re-creation after it
    assert m.on_delta({"op": "delta", **ent("app.x.a", "new", 5, 11)}) is not None


def test_a_removal_does_not_delete_a_newer_entry() -> None:
    """An entry re-created after the deletion (seen in a delta of another subscription
    on the same connection) outlives a removal of an older version."""
    m, seen = mirror("app.**")
    m.add_sub("s2", [parse_pattern("app.x.**")])
    m.on_snapshot(snap(5, [ent("app.x.a", 1, 1, 5)]))
    m.on_delta({"op": "delta", **ent("app.x.a", "again", 3, 12)})  # deleted at v2, re-created
    m.on_snapshot(snap(11, [], [{"key": "app.x.a", "version": 2, "rev": 9}], mode="incremental"))
    e = m.get("app.x.a")
    assert e is not None and e.value == "again" and e.version == 3
    assert not any(c.deleted for c in seen)


def test_a_removal_of_a_key_not_held_leaves_a_tombstone() -> None:
    m, _ = mirror("app.**")
    m.on_snapshot(snap(5, []))
    m.on_snapshot(snap(9, [], [{"key": "app.x.a", "version": 2, "rev": 8}], mode="incremental"))
    assert m.on_delta({"op": "delta", **ent("app.x.a", 1, 1, 3)}) is None  # older: refused
    assert m.get("app.x.a") is None


def test_chunked_removals_are_applied_on_the_last_chunk() -> None:
    m, _ = mirror("app.**")
    m.on_snapshot(snap(5, [ent("app.x.a", 1, 1, 2), ent("app.x.b", 1, 1, 3)]))
    m.on_snapshot(
        snap(9, [], [{"key": "app.x.a", "version": 2, "rev": 6}], mode="incremental", done=False)
    )
    assert m.get("app.x.a") is not None
    m.on_snapshot(snap(9, [], ["app.x.b"], mode="incremental"))
    assert m.entries == {} and m.rev == 9


class _Hub:
    """A naive store: versions, revisions, deletions (with their versions)."""

    def __init__(self) -> None:
        self.rev = 0
        self.state: dict[str, tuple[Any, int, int]] = {}  # key -> (value, version, rev)
        self.deleted: dict[str, tuple[int, int]] = {}  # key -> (version, rev)
        self.log: list[tuple[str, int]] = []  # (key, rev) of each change

    def set(self, key: str, value: int) -> None:
        if key in self.state and self.state[key][0] == value:
            return
        last = self.state[key][1] if key in self.state else self.deleted.get(key, (0, 0))[0]
        self.rev += 1
        self.state[key] = (value, last + 1, self.rev)
        self.deleted.pop(key, None)
        self.log.append((key, self.rev))

    def delete(self, key: str) -> None:
        if key not in self.state:
            return
        self.rev += 1
        self.deleted[key] = (self.state.pop(key)[1] + 1, self.rev)
        self.log.append((key, self.rev))

    def entries(self, keys: Any = None) -> list[dict[str, Any]]:
        return [
            ent(k, v, ver, rev)
            for k, (v, ver, rev) in self.state.items()
            if keys is None or k in keys
        ]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.booleans(), st.sampled_from(["app.x.a", "app.x.b", "app.x.c"]), st.integers(0, 3)
        ),
        min_size=1,
        max_size=40,
    ),
    cut=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_resume_with_versioned_removals_equals_a_fresh_snapshot(
    ops: list[tuple[bool, str, int]], cut: float, seed: int
) -> None:
    hub = _Hub()
    n_before = int(cut * len(ops))
    for is_set, key, value in ops[:n_before]:
        hub.set(key, value) if is_set else hub.delete(key)
    m, _ = mirror("app.**")
    m.on_snapshot(snap(hub.rev, hub.entries()))
    since = hub.rev
    for is_set, key, value in ops[n_before:]:
        hub.set(key, value) if is_set else hub.delete(key)
    changed = {k for k, rev in hub.log if rev > since}
    removed: list[Any] = [
        {"key": k, "version": v, "rev": r} for k, (v, r) in hub.deleted.items() if k in changed
    ]
    rng = random.Random(seed)
    rng.shuffle(removed)
    m.on_snapshot(snap(hub.rev, hub.entries(changed), removed, mode="incremental"))
    fresh, _ = mirror("app.**")
    fresh.on_snapshot(snap(hub.rev, hub.entries()))
    assert m.entries == fresh.entries


# --- durable writes and the welcome's limits ------------------------------------------


def test_durable_is_sent_only_when_asked_for() -> None:
    assert requests.set_message("app.x.y", 1) == {"op": "set", "key": "app.x.y", "value": 1}
    assert requests.set_message("app.x.y", 1, 3, durable=True) == {
        "op": "set",
        "key": "app.x.y",
        "value": 1,
        "expect_version": 3,
        "durable": True,
    }
    assert requests.delete_message("app.x.y", durable=True) == {
        "op": "delete",
        "key": "app.x.y",
        "durable": True,
    }
    assert "durable" not in requests.delete_message("app.x.y")
    batch = requests.set_many_message({"app.x.a": 1, "app.x.b": 2}, {"app.x.b": 0}, durable=True)
    assert batch == {
        "op": "set",
        "entries": [
            {"key": "app.x.a", "value": 1},
            {"key": "app.x.b", "value": 2, "expect_version": 0},
        ],
        "durable": True,
    }


def test_welcome_limits_oldest_rev() -> None:
    w = welcome_from_wire({"op": "welcome", "hub": "h", "limits": {"oldest_rev": 42, "new": 1}})
    assert w.limits.oldest_rev == 42 and w.limits.raw == {"oldest_rev": 42, "new": 1}
    assert welcome_from_wire({"op": "welcome", "hub": "h"}).limits.oldest_rev is None
