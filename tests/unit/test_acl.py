"""Roles and identities (core/acl.py): what a role may read, own, call and publish."""

from __future__ import annotations

import pytest

from companion_hub.core.acl import BUILTIN_ROLES, Identity, Role, development, reader_for


def ident(role: Role, client: str = "c") -> Identity:
    return Identity(client, role, token="t", enforced=True)


def test_development_allows_everything() -> None:
    d = development("x")
    assert d.reads_everything and d.reader is None and d.may_read("anything.at.all")
    assert d.may_call("companion", "press") and d.may_publish and d.may_read_log
    assert d.namespaces(["extra"]) == ["app.x", "extra"]


def test_builtin_roles() -> None:
    viewer, app = ident(BUILTIN_ROLES["viewer"]), ident(BUILTIN_ROLES["app"], "tally")
    operator, admin = ident(BUILTIN_ROLES["operator"]), ident(BUILTIN_ROLES["admin"])
    assert viewer.namespaces() == [] and not viewer.may_publish
    assert not viewer.may_call("app.x", "go") and not viewer.may_read_log
    assert app.namespaces() == ["app.tally"] and app.may_publish
    assert app.may_call("app.mixer", "cut") and not app.may_call("companion", "press")
    assert operator.may_call("companion", "press") and operator.may_call("app.x", "y")
    assert not operator.may_call("other", "x") and not operator.may_read_log
    assert admin.may_call("anything.deep", "x") and admin.may_read_log
    assert all(i.reads_everything for i in (viewer, app, operator, admin))


def test_read_patterns_and_the_shared_reader() -> None:
    role = Role("stage", read=("app.show.**", "companion.buttons.*.0.*"), own=())
    a, b = ident(role, "a"), ident(role, "b")
    assert a.reader is b.reader is reader_for(role.read)  # one per set of patterns
    assert a.may_read("app.show") and a.may_read("app.show.cue.1")
    assert a.may_read("companion.buttons.1.0.3") and not a.may_read("companion.buttons.1.1.3")
    assert not a.may_read("app.shows") and not a.may_read("hub.info")
    assert a.readable(["app.show.x", "hub.info"]) == ["app.show.x"]
    nothing = ident(Role("none", read=()))
    assert not nothing.may_read("app.show.x")


def test_call_patterns() -> None:
    role = Role("r", call=("companion:press", "app.*:reset"))
    i = ident(role)
    assert i.may_call("companion", "press") and not i.may_call("companion", "set_variable")
    assert i.may_call("app.mixer", "reset") and not i.may_call("app.mixer", "cut")
    assert not i.may_call("app.mixer.sub", "reset")  # * is one segment


def test_own_with_the_client_placeholder_and_grants() -> None:
    role = Role("r", own=("app.{client}", "shared.{client}"))
    assert ident(role, "tally-1").namespaces(["extra"]) == [
        "app.tally-1",
        "shared.tally-1",
        "extra",
    ]


@pytest.mark.parametrize(
    "role",
    [
        Role("bad", read=("a*b",)),
        Role("bad", call=("companion",)),
        Role("bad", call=("*x:press",)),
        Role("bad", own=("hub.x",)),
    ],
)
def test_invalid_roles_are_refused(role: Role) -> None:
    with pytest.raises((ValueError, Exception)):
        role.check()
