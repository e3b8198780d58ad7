"""``Store.matching`` (which compiles patterns to regexes and short-cuts whole
namespaces) agrees with the grammar's reference matcher, ``core.keys.match``."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from companion_hub.core.keys import match, parse_pattern

from .conftest import StoreHarness

SEGMENTS = st.sampled_from(["a", "b", "c", "x1", "k-2", "_"])
NAMESPACES = ["app.a", "app.b", "companion", "hub"]


@st.composite
def keys(draw: st.DrawFn) -> str:
    ns = draw(st.sampled_from(NAMESPACES))
    rest = draw(st.lists(SEGMENTS, min_size=0, max_size=3))
    return ".".join([ns, *rest])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    """Mostly patterns shaped like the keys (so that they do match some), with
    segments turned into ``*`` and a ``**`` tail at any depth."""
    base = draw(keys()).split(".")
    segs = [draw(st.sampled_from([s, s, "*", "x1"])) for s in base]
    cut = draw(st.integers(0, len(segs)))
    if draw(st.booleans()):
        return ".".join([*segs[:cut], "**"])
    return ".".join(segs) or "**"


@settings(max_examples=500, deadline=None, derandomize=True)
@example(ks={"companion"}, texts=["companion", "companion"])  # found: an entry twice
@given(st.sets(keys(), max_size=30), st.lists(patterns(), min_size=1, max_size=4))
def test_matching_agrees_with_the_grammar(ks: set[str], texts: list[str]) -> None:
    h = StoreHarness()
    for ns in NAMESPACES:
        h.store.register_namespace(ns, ns)
    for k in ks:
        h.w({k.split(".")[0] if not k.startswith("app.") else ".".join(k.split(".")[:2])}).set(k, 1)
    pats = [parse_pattern(t) for t in texts]
    got = sorted(e.key for e in h.store.matching(pats))
    want = sorted(k for k in ks if any(match(p, k) for p in pats))
    assert got == want


@settings(max_examples=500, deadline=None, derandomize=True)
@given(keys(), st.lists(patterns(), min_size=1, max_size=4))
def test_compiled_patterns_and_literal_prefixes_agree_with_match(
    key: str, texts: list[str]
) -> None:
    """``compile_patterns`` (the store's fast path) and ``literal_prefix`` (the event
    log's SQL pre-filter) are derived from the grammar, and agree with ``match``."""
    from companion_hub.core.keys import compile_patterns, literal_prefix

    pats = [parse_pattern(t) for t in texts]
    assert bool(compile_patterns(pats).fullmatch(key)) == any(match(p, key) for p in pats)
    for p in pats:
        prefix, exact = literal_prefix(p)
        if match(p, key):
            assert key == prefix or key.startswith(prefix + ".") or prefix == ""
            if exact:
                assert key == prefix
