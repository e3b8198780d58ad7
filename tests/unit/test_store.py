"""The store's rules (protocol sections 3, 5, 6), one test per rule."""

from __future__ import annotations

import pytest

from companion_hub.core.errors import ErrorCode, HubError
from companion_hub.core.keys import parse_pattern

from .conftest import StoreHarness

A = {"app.a"}


@pytest.fixture
def h() -> StoreHarness:
    h = StoreHarness()
    h.store.register_namespace("app.a", "a")
    h.store.register_namespace("app.b", "b")
    return h


def test_create_update_versions_and_revs(h: StoreHarness) -> None:
    r1 = h.set(A, "app.a.x", 1)
    r2 = h.set(A, "app.a.x", 2)
    r3 = h.set(A, "app.a.y", "v")
    assert (r1.version, r2.version, r3.version) == (1, 2, 1)
    assert r1.rev < r2.rev < r3.rev
    e = h.store.get("app.a.x")
    assert e is not None
    assert (e.version, e.rev, e.owner, e.stale) == (2, r2.rev, "app.a", False)
    assert [c.rev for c in h.changes] == [r1.rev, r2.rev, r3.rev]


def test_equal_write_is_a_noop(h: StoreHarness) -> None:
    r1 = h.set(A, "app.a.x", {"a": 1, "b": [1, 2]})
    n = len(h.changes)
    r2 = h.w(A).set("app.a.x", {"b": [1.0, 2], "a": 1})
    assert not r2.changed
    assert (r2.version, r2.rev) == (r1.version, r1.rev)
    assert len(h.changes) == n
    assert h.set(A, "app.a.x", {"a": True, "b": [1, 2]}).changed  # true is not 1


def test_not_owner(h: StoreHarness) -> None:
    with pytest.raises(HubError) as exc:
        h.set(A, "app.b.x", 1)
    assert exc.value.code is ErrorCode.NOT_OWNER
    with pytest.raises(HubError) as exc:
        h.set(A, "nowhere.x", 1)
    assert exc.value.code is ErrorCode.NOT_OWNER
    assert h.changes == []


def test_namespaces_never_nest(h: StoreHarness) -> None:
    with pytest.raises(HubError):
        h.store.register_namespace("app.a.sub", "c")
    with pytest.raises(HubError):
        h.store.register_namespace("app", "c")
    with pytest.raises(HubError):
        h.store.register_namespace("app.a", "someone-else")
    assert h.store.register_namespace("app.a", "a").name == "app.a"


def test_delete_and_versions_never_reused(h: StoreHarness) -> None:
    h.set(A, "app.a.x", 1)
    h.set(A, "app.a.x", 2)
    d = h.w(A).delete("app.a.x")
    assert d.version == 3
    assert h.store.get("app.a.x") is None
    assert h.changes[-1].deleted
    again = h.set(A, "app.a.x", 1)
    assert again.version == 4
    with pytest.raises(HubError) as exc:
        h.w(A).delete("app.a.nothing")
    assert exc.value.code is ErrorCode.NOT_FOUND


def test_compare_and_set(h: StoreHarness) -> None:
    assert h.set(A, "app.a.x", 1, expect=0).version == 1
    with pytest.raises(HubError) as exc:
        h.set(A, "app.a.x", 2, expect=0)
    assert exc.value.code is ErrorCode.CONFLICT
    assert exc.value.details == {"key": "app.a.x", "version": 1}
    assert h.set(A, "app.a.x", 2, expect=1).version == 2
    with pytest.raises(HubError) as exc:
        h.w(A).delete("app.a.x", expect_version=1)
    assert exc.value.code is ErrorCode.CONFLICT
    h.w(A).delete("app.a.x", expect_version=2)
    assert h.set(A, "app.a.x", 3, expect=0).version == 4


def _op(key: str, value: object, expect: int | None = None) -> tuple[str, object, int | None]:
    return (key, value, expect)


def test_batch_is_atomic_and_consecutive(h: StoreHarness) -> None:
    h.set(A, "app.a.x", 1)
    before = h.store.rev
    with pytest.raises(HubError) as exc:
        h.w(A).set_many([_op("app.a.y", 1), _op("app.b.z", 1)])
    assert exc.value.code is ErrorCode.NOT_OWNER
    assert exc.value.details == {"index": 1, "key": "app.b.z"}
    with pytest.raises(HubError) as exc:
        h.w(A).set_many([_op("app.a.y", 1), _op("app.a.x", 5, expect=7)])
    assert exc.value.code is ErrorCode.CONFLICT
    assert h.store.rev == before and h.store.get("app.a.y") is None
    results = h.w(A).set_many([_op("app.a.y", 1), _op("app.a.z", 2), _op("app.a.x", 1)])
    assert [r.rev for r in results[:2]] == [before + 1, before + 2]
    assert not results[2].changed  # equal value: no new rev
    with pytest.raises(HubError) as exc:
        h.w(A).set_many([_op("app.a.q", 1), _op("app.a.q", 2)])
    assert exc.value.code is ErrorCode.BAD_REQUEST


def test_stale_and_fresh_again(h: StoreHarness) -> None:
    r = h.set(A, "app.a.x", 1)
    h.set(A, "app.a.y", 2)
    ts = h.store.get("app.a.x").ts  # type: ignore[union-attr]
    assert h.store.mark_stale("app.a", actor="hub") == 2
    assert h.store.mark_stale("app.a", actor="hub") == 0  # already stale: no new changes
    e = h.store.get("app.a.x")
    assert e is not None and e.stale and e.version == r.version and e.ts == ts
    assert e.rev > r.rev
    fresh = h.set(A, "app.a.x", 1)  # equal value clears the flag
    assert fresh.changed and fresh.version == r.version and fresh.rev > e.rev
    e2 = h.store.get("app.a.x")
    assert e2 is not None and not e2.stale and e2.ts == ts


def test_sync_deletes_what_was_not_written(h: StoreHarness) -> None:
    for k in ("x", "y", "z"):
        h.w(A, 1).set(f"app.a.{k}", 1)
    h.w(A, 2).set("app.a.y", 1)  # an equal-value write counts
    deleted = h.w(A, 2).sync()
    assert sorted(r.key for r in deleted) == ["app.a.x", "app.a.z"]
    assert h.store.get("app.a.y") is not None
    assert h.store.get("app.a.x") is None


def test_matching(h: StoreHarness) -> None:
    for k in ("app.a.x", "app.a.y.z", "app.b.x"):
        h.set({"app.a", "app.b"}, k, 1)

    def keys(*pats: str) -> list[str]:
        return sorted(e.key for e in h.store.matching([parse_pattern(p) for p in pats]))

    assert keys("**") == ["app.a.x", "app.a.y.z", "app.b.x"]
    assert keys("app.a.**") == ["app.a.x", "app.a.y.z"]
    assert keys("app.*.x") == ["app.a.x", "app.b.x"]
    assert keys("app.a.x", "app.b.x") == ["app.a.x", "app.b.x"]
    assert keys("app.a") == []


def test_history_window(h: StoreHarness) -> None:
    small = StoreHarness(history_limit=4)
    small.store.register_namespace("n", "n")
    for i in range(20):
        small.set({"n"}, f"n.k{i % 3}", i)
    oldest = small.store.oldest_resumable
    assert oldest > 0
    assert small.store.changed_since(oldest - 1) is None
    changed = small.store.changed_since(oldest)
    assert changed is not None
    assert len(list(changed)) == small.store.rev - oldest
    assert list(small.store.changed_since(small.store.rev) or ["x"]) == []
    assert small.store.changed_since(small.store.rev + 1) is None


def test_stale_and_sync_by_prefix(h: StoreHarness) -> None:
    for k in ("buttons.1", "buttons.2", "vars.x"):
        h.w(A, 1).set(f"app.a.{k}", 1)
    assert h.store.mark_stale("app.a", actor="hub", prefix="app.a.buttons") == 2
    assert not h.store.get("app.a.vars.x").stale  # type: ignore[union-attr]
    h.w(A, 2).set("app.a.buttons.1", 1)
    deleted = h.w(A, 2).sync("app.a.buttons")
    assert [r.key for r in deleted] == ["app.a.buttons.2"]
    assert h.store.get("app.a.vars.x") is not None


def test_oldest_resumable_says_when_a_restart_flip_forces_a_full_snapshot() -> None:
    """``welcome.limits.oldest_rev`` must not promise an incremental resume that the
    store then refuses: after a restart that flipped restored keys to stale without
    revisions, resuming from before the restart gives a full snapshot."""
    from companion_hub.core.store import Entry

    def restored(stale_namespaces: set[str]) -> StoreHarness:
        h = StoreHarness()
        h.store.restore(
            rev=10,
            namespaces=[("app.a", "a")],
            entries=[Entry("app.a.x", b"1", 3, 10, "app.a", False, 5)],
            tombstones={},
            history=["app.a.x"] * 10,
            stale_namespaces=stale_namespaces,
        )
        return h

    clean = restored(set())
    assert clean.store.oldest_resumable == 0
    assert clean.store.changed_since(0) is not None
    flipped = restored({"app.a"})
    assert flipped.store.oldest_resumable == 10
    assert flipped.store.changed_since(9) is None
    assert flipped.store.changed_since(10) is not None
