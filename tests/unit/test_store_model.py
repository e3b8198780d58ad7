"""Model-based test: the store against a naive reference model (hypothesis stateful)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from companion_hub.core.errors import HubError
from companion_hub.core.jsonvalue import json_equal

from .conftest import StoreHarness

NAMESPACES = ["app.a", "app.b", "companion"]
KEYS = [f"{ns}.{k}" for ns in NAMESPACES for k in ("x", "y", "z.w")]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.0, 0.5]),
    st.sampled_from(["", "a", "b"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 2), max_size=2),
)
EPOCHS = st.integers(1, 3)
OWNED = st.sets(st.sampled_from(NAMESPACES), max_size=3)


@dataclass
class ModelEntry:
    value: Any
    version: int
    rev: int
    stale: bool
    wepoch: int = 0


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = StoreHarness(history_limit=50)
        for ns in NAMESPACES:
            self.h.store.register_namespace(ns, ns)
        self.entries: dict[str, ModelEntry] = {}
        self.last_version: dict[str, int] = {}
        self.rev = 0
        self.seen_versions: dict[str, list[int]] = {}
        self.snapshots: list[tuple[int, dict[str, tuple[Any, int, bool]]]] = []

    # -- model helpers --------------------------------------------------------------
    def _ns(self, key: str) -> str:
        return next(ns for ns in NAMESPACES if key.startswith(ns + "."))

    def _model_set(self, key: str, value: Any, epoch: int) -> tuple[int, bool]:
        cur = self.entries.get(key)
        if cur is not None and json_equal(cur.value, value):
            cur.wepoch = epoch
            if not cur.stale:
                return cur.version, False
            self.rev += 1
            cur.stale, cur.rev = False, self.rev
            return cur.version, True
        self.rev += 1
        version = (cur.version if cur else self.last_version.get(key, 0)) + 1
        self.entries[key] = ModelEntry(value, version, self.rev, False, epoch)
        self.last_version[key] = version
        return version, True

    def _expect_ok(self, key: str, expect: int | None) -> bool:
        have = self.entries[key].version if key in self.entries else 0
        return expect is None or expect == have

    # -- rules ----------------------------------------------------------------------
    @rule(
        owned=OWNED,
        key=st.sampled_from(KEYS),
        value=VALUES,
        expect=st.none() | st.integers(0, 4),
        epoch=EPOCHS,
    )
    def set(self, owned: set[str], key: str, value: Any, expect: int | None, epoch: int) -> None:
        allowed = self._ns(key) in owned and self._expect_ok(key, expect)
        try:
            r = self.h.w(owned, epoch).set(key, value, expect)
        except HubError:
            assert not allowed
            return
        assert allowed
        version, changed = self._model_set(key, value, epoch)
        assert (r.version, r.changed) == (version, changed)

    @rule(owned=OWNED, key=st.sampled_from(KEYS), expect=st.none() | st.integers(0, 4))
    def delete(self, owned: set[str], key: str, expect: int | None) -> None:
        allowed = self._ns(key) in owned and self._expect_ok(key, expect) and key in self.entries
        try:
            r = self.h.w(owned).delete(key, expect)
        except HubError:
            assert not allowed
            return
        assert allowed
        cur = self.entries.pop(key)
        self.rev += 1
        self.last_version[key] = cur.version + 1
        assert r.version == cur.version + 1

    @rule(
        owned=OWNED,
        batch=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4),
        epoch=EPOCHS,
    )
    def set_many(self, owned: set[str], batch: list[tuple[str, Any]], epoch: int) -> None:
        keys = [k for k, _ in batch]
        allowed = (
            bool(keys) and len(set(keys)) == len(keys) and all(self._ns(k) in owned for k in keys)
        )
        ops = [(k, v, None) for k, v in batch]
        before = self.h.store.rev
        try:
            results = self.h.w(owned, epoch).set_many(ops)
        except HubError:
            assert not allowed
            assert self.h.store.rev == before
            return
        assert allowed
        for (k, v), r in zip(batch, results, strict=True):
            version, changed = self._model_set(k, v, epoch)
            assert (r.version, r.changed) == (version, changed)
        new_revs = [r.rev for r in results if r.changed]
        assert new_revs == list(range(before + 1, before + 1 + len(new_revs)))

    @rule(ns=st.sampled_from(NAMESPACES))
    def mark_stale(self, ns: str) -> None:
        flipped = self.h.store.mark_stale(ns, actor="hub")
        expected = [k for k, e in self.entries.items() if self._ns(k) == ns and not e.stale]
        assert flipped == len(expected)
        # the order of the flips is unspecified: each gets one of the new revisions
        new_revs = set(range(self.rev + 1, self.rev + 1 + flipped))
        for k in expected:
            e = self.entries[k]
            actual = self.h.store.get(k)
            assert actual is not None and actual.rev in new_revs
            new_revs.discard(actual.rev)
            e.stale, e.rev = True, actual.rev
        self.rev += flipped

    @rule(ns=st.sampled_from(NAMESPACES), epoch=EPOCHS)
    def sync(self, ns: str, epoch: int) -> None:
        deleted = self.h.w({ns}, epoch).sync()
        doomed = [k for k, e in self.entries.items() if self._ns(k) == ns and e.wepoch != epoch]
        assert sorted(r.key for r in deleted) == sorted(doomed)
        for k in doomed:
            cur = self.entries.pop(k)
            self.rev += 1
            self.last_version[k] = cur.version + 1

    @rule()
    def take_snapshot(self) -> None:
        self.snapshots.append((self.h.store.rev, self._view()))

    @precondition(lambda self: bool(self.snapshots))
    @rule(data=st.data())
    def incremental_resume_equals_state(self, data: st.DataObject) -> None:
        since, old_view = data.draw(st.sampled_from(self.snapshots))
        changed = self.h.store.changed_since(since)
        if changed is None:
            assert since < self.h.store.oldest_resumable
            return
        view = dict(old_view)
        for key in set(changed):
            e = self.h.store.get(key)
            if e is None:
                view.pop(key, None)
            else:
                view[key] = (msgspec.json.decode(e.raw), e.version, e.stale)
        assert view == self._view()

    # -- invariants -----------------------------------------------------------------
    def _view(self) -> dict[str, tuple[Any, int, bool]]:
        return {
            e.key: (msgspec.json.decode(e.raw), e.version, e.stale)
            for ns in self.h.store.namespaces()
            for e in ns.entries.values()
        }

    @invariant()
    def store_equals_model(self) -> None:
        assert self.h.store.rev == self.rev
        view = self._view()
        assert set(view) == set(self.entries)
        for k, m in self.entries.items():
            value, version, stale = view[k]
            assert json_equal(value, m.value)
            assert (version, stale) == (m.version, m.stale)
            e = self.h.store.get(k)
            assert e is not None and e.rev == m.rev and e.owner == self._ns(k)

    @invariant()
    def changes_are_ordered_and_versions_grow(self) -> None:
        revs = [c.rev for c in self.h.changes]
        assert revs == list(range(1, len(revs) + 1))
        last: dict[str, tuple[int, bytes | None]] = {}
        for c in self.h.changes:
            prev_version, prev_raw = last.get(c.key, (0, None))
            raw = None if c.entry is None else c.entry.raw
            if c.entry is not None and prev_raw is not None and raw == prev_raw:
                assert c.version >= prev_version  # a stale flip keeps the version
            else:
                assert c.version > prev_version  # a value change or delete bumps it
            last[c.key] = (c.version, raw)


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
