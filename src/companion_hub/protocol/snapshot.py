"""What a new subscription receives first: a full or an incremental snapshot.

One function for the WebSocket's ``subscribe`` and the HTTP event stream, so both
resume by the same rule (protocol section 4): incremental when ``since`` is given and
the store still knows every change after it, otherwise full; reads outside the
identity's role are left out, as if those keys did not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.acl import Identity
from ..core.keys import Pattern, match
from ..core.store import Entry, Store


@dataclass(slots=True)
class Snapshot:
    rev: int
    mode: str  # "full" or "incremental"
    entries: list[Entry] = field(default_factory=list)
    # incremental: (key, version, rev) of each key deleted after ``since``
    removed: list[tuple[str, int, int]] = field(default_factory=list)


def take_snapshot(
    store: Store, patterns: Sequence[Pattern], since: int | None, identity: Identity
) -> Snapshot:
    """The snapshot at the store's current revision (call it in the same synchronous
    step that registers the subscription: nothing can change in between)."""
    rev = store.rev
    changed = None
    if since is not None and 0 <= since <= rev:
        changed = store.last_changes_since(since)
    if changed is None:
        snap = Snapshot(rev, "full", store.matching(patterns))
    else:
        snap = Snapshot(rev, "incremental")
        for key, last_rev in changed.items():
            if any(match(p, key) for p in patterns):
                e = store.get(key)
                if e is None:
                    snap.removed.append((key, store.deleted_version(key), last_rev))
                else:
                    snap.entries.append(e)
    if not identity.reads_everything:  # outside the role: as if they did not exist
        snap.entries = [e for e in snap.entries if identity.may_read(e.key)]
        snap.removed = [r for r in snap.removed if identity.may_read(r[0])]
    return snap
