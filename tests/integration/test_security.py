"""Tokens, roles and browsers over real sockets (docs/security.md): every refusal of
issue 9 — a missing or wrong token, each kind of forbidden read, write, command and
publish, a takeover by another identity, a cross-origin handshake, a start beyond
loopback without tokens, revocation on reload, rate-limited failed logins — and a
scan of the hub's log output, database and API for the tokens."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from companion_hub.auth.tokens import TokenStore
from companion_hub.client import connect_raw
from companion_hub.client.raw import RawConnection
from companion_hub.core.acl import Role
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer, UnsafeListen

STAGE = Role("stage", read=("app.show.**", "companion.buttons.**"), own=(), publish=False)


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.json"
    store = TokenStore.load(str(path))
    made = {
        "show": store.add("show", "app"),
        "show2": store.add("show2", "app", client="show"),  # another identity, same name
        "panel": store.add("panel", "operator"),
        "stage": store.add("stage", "stage"),
        "viewer": store.add("viewer", "viewer"),
        "admin": store.add("admin", "admin"),
        "tally": store.add("tally-fleet", "app", client="tally-*"),
    }
    return path, made


async def start_secured(tmp_path: Path, path: Path, failures: int = 100) -> HubServer:
    srv = HubServer(
        HubConfig(
            port=0,
            tokens_file=str(path),
            roles={"stage": STAGE},
            data_dir=str(tmp_path / "data"),
            auth_failures=failures,
            auth_failure_window=60.0,
            auth_lockout=60.0,
        )
    )
    await srv.start()
    srv.url = f"ws://127.0.0.1:{srv.port}/ws"  # type: ignore[attr-defined]
    return srv


@pytest.fixture
async def secured(
    tmp_path: Path, tokens: tuple[Path, dict[str, str]]
) -> AsyncIterator[tuple[HubServer, dict[str, str]]]:
    path, made = tokens
    srv = await start_secured(tmp_path, path)
    try:
        yield srv, made
    finally:
        await srv.stop()


async def hello(url: str, client: str, token: str | None, **extra: Any) -> RawConnection:
    """Say hello without expecting a welcome (the reply stays in the inbox)."""
    conn = await connect_raw(url, None, **extra)
    msg: dict[str, Any] = {"op": "hello", "id": "h", "client": client}
    if token is not None:
        msg["token"] = token
    await conn.send(msg)
    return conn


async def refused(url: str, client: str, token: str | None) -> tuple[dict[str, Any], int | None]:
    conn = await hello(url, client, token)
    err = await conn.receive(lambda m: m.get("op") == "error", timeout=10)
    code = await conn.wait_closed(timeout=10)
    await conn.close()
    return err, code


async def welcomed(url: str, client: str, token: str) -> RawConnection:
    return await connect_raw(url, client, token=token, timeout=10)


async def test_missing_wrong_and_foreign_tokens_are_unauthorized(
    secured: tuple[HubServer, dict[str, str]],
) -> None:
    srv, t = secured
    url = srv.url  # type: ignore[attr-defined]
    for client, token in [
        ("show", None),
        ("show", "nope"),
        ("show", t["show"][:-2] + "xx"),  # a wrong secret for a real id
        ("panel", t["show"]),  # a real token, but not for this client name
    ]:
        err, code = await refused(url, client, token)
        assert (err["code"], err["id"], code) == ("UNAUTHORIZED", "h", 1008), (client, err)
    ok = await welcomed(url, "show", t["show"])
    assert ok.welcome["namespaces"] == ["app.show"]
    fleet = await welcomed(url, "tally-3", t["tally"])  # a pattern token
    assert fleet.welcome["namespaces"] == ["app.tally-3"]
    await ok.close()
    await fleet.close()


async def test_reads_outside_the_role_do_not_exist(
    secured: tuple[HubServer, dict[str, str]],
) -> None:
    srv, t = secured
    url = srv.url  # type: ignore[attr-defined]
    show = await welcomed(url, "show", t["show"])
    await show.result({"op": "set", "key": "app.show.cue", "value": 1})
    await show.result({"op": "set", "key": "app.show.secret", "value": "x"})
    other = await welcomed(url, "tally-1", t["tally"])
    await other.result({"op": "set", "key": "app.tally-1.note", "value": "hidden"})

    # the stage display's role reads app.show.** and companion.buttons.** only
    stage = await welcomed(url, "stage", t["stage"])
    _, entries = await stage.subscribe("**", events=True)
    keys = {e["key"] for e in entries}
    assert {"app.show.cue", "app.show.secret"} <= keys
    assert not any(k.startswith(("app.tally-1", "hub.")) for k in keys)
    got = await stage.result({"op": "get", "patterns": ["**"]})
    assert {e["key"] for e in got["entries"]} == keys
    # deltas and events outside the role never arrive; inside they do
    await other.result({"op": "set", "key": "app.tally-1.note", "value": "still hidden"})
    await other.result({"op": "publish", "key": "app.tally-1.ev", "data": 1})
    await show.result({"op": "set", "key": "app.show.cue", "value": 2})
    await show.result({"op": "publish", "key": "app.show.go", "data": 2})
    seen = [await stage.receive(lambda m: m["op"] in ("delta", "event"), timeout=10)]
    seen.append(await stage.receive(lambda m: m["op"] in ("delta", "event"), timeout=10))
    assert [(m["op"], m["key"]) for m in seen] == [
        ("delta", "app.show.cue"),
        ("event", "app.show.go"),
    ]
    assert not [m for m in stage.inbox if m.get("key", "").startswith("app.tally-1")]

    # HTTP, with the same role
    base = f"http://127.0.0.1:{srv.port}"
    auth = {"Authorization": f"Bearer {t['stage']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/state", headers=auth) as r:
            body = await r.json()
        assert {e["key"] for e in body["entries"]} == keys
        async with http.get(f"{base}/api/state/app.tally-1.note", headers=auth) as r:
            assert r.status == 404  # as if it did not exist
        async with http.get(f"{base}/api/state/app.show.cue", headers=auth) as r:
            assert r.status == 200
    for c in (show, other, stage):
        await c.close()


async def test_writes_commands_and_publishes_outside_the_role_are_forbidden(
    secured: tuple[HubServer, dict[str, str]],
) -> None:
    srv, t = secured
    url = srv.url  # type: ignore[attr-defined]
    viewer = await welcomed(url, "viewer", t["viewer"])
    assert viewer.welcome["namespaces"] == []
    for msg in (
        {"op": "set", "key": "app.viewer.x", "value": 1},
        {"op": "set", "key": "app.show.x", "value": 1},
        {"op": "delete", "key": "app.show.x"},
        {"op": "publish", "key": "app.viewer.ev", "data": 1},
        {"op": "command", "target": "companion", "name": "press", "params": {}},
        {"op": "command", "target": "app.show", "name": "go", "params": {}},
    ):
        r = await viewer.request(msg, timeout=10)
        assert r["ok"] is False and r["error"]["code"] == "FORBIDDEN", (msg, r)

    show = await welcomed(url, "show", t["show"])
    r = await show.request({"op": "set", "key": "app.panel.x", "value": 1})
    assert r["error"]["code"] == "FORBIDDEN"  # another application's namespace
    r = await show.request({"op": "command", "target": "companion", "name": "press"})
    assert r["error"]["code"] == "FORBIDDEN"  # the app role calls applications only
    r = await show.request({"op": "command", "target": "app.nobody", "name": "go"})
    assert r["error"]["code"] == "UNAVAILABLE"  # allowed, but nobody owns it

    panel = await welcomed(url, "panel", t["panel"])  # operator: Companion too
    r = await panel.request({"op": "command", "target": "companion", "name": "press"})
    assert r["error"]["code"] == "UNAVAILABLE"  # allowed (no Companion in this test)
    for c in (viewer, show, panel):
        await c.close()


async def test_takeover_only_by_the_same_identity(
    secured: tuple[HubServer, dict[str, str]],
) -> None:
    srv, t = secured
    url = srv.url  # type: ignore[attr-defined]
    first = await welcomed(url, "show", t["show"])
    err, code = await refused(url, "show", t["show2"])  # valid for "show", another token
    assert (err["code"], code) == ("FORBIDDEN", 1008)
    assert srv.hub.sessions["show"].session_id == first.welcome["session"]  # untouched
    second = await welcomed(url, "show", t["show"])  # the same identity may replace
    assert await first.wait_closed(timeout=10) == 4000
    await second.close()


async def test_revoked_tokens_are_closed_on_reload(
    secured: tuple[HubServer, dict[str, str]], tokens: tuple[Path, dict[str, str]]
) -> None:
    srv, t = secured
    url = srv.url  # type: ignore[attr-defined]
    path, _ = tokens
    show = await welcomed(url, "show", t["show"])
    panel = await welcomed(url, "panel", t["panel"])
    assert TokenStore.load(str(path)).revoke("show")
    assert srv.hub.reload_tokens() == 1  # what SIGHUP does
    assert await show.wait_closed(timeout=10) == 1008
    assert not panel.closed
    err, code = await refused(url, "show", t["show"])
    assert (err["code"], code) == ("UNAUTHORIZED", 1008)
    r = await panel.request({"op": "get", "patterns": ["hub.info"]})
    assert r["ok"]
    await panel.close()


async def test_failed_logins_are_slowed_per_address(
    tmp_path: Path, tokens: tuple[Path, dict[str, str]]
) -> None:
    path, t = tokens
    srv = await start_secured(tmp_path, path, failures=3)
    url = srv.url  # type: ignore[attr-defined]
    try:
        for _ in range(3):
            err, _ = await refused(url, "show", "chub_00000000_wrong")
            assert "not valid" in err["message"]
        # locked out: even the right token is refused without being checked
        err, code = await refused(url, "show", t["show"])
        assert (err["code"], code) == ("UNAUTHORIZED", 1008)
        assert "too many failed attempts" in err["message"]
        async with aiohttp.ClientSession() as http:  # HTTP from the same address too
            auth = {"Authorization": f"Bearer {t['admin']}"}
            async with http.get(f"http://127.0.0.1:{srv.port}/api/state", headers=auth) as r:
                assert r.status == 401
    finally:
        await srv.stop()


async def test_http_needs_a_bearer_token_and_the_log_permission(
    secured: tuple[HubServer, dict[str, str]],
) -> None:
    srv, t = secured
    base = f"http://127.0.0.1:{srv.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/state") as r:
            assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
            assert (await r.json())["error"]["code"] == "UNAUTHORIZED"
        async with http.get(f"{base}/api/state", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        viewer = {"Authorization": f"Bearer {t['viewer']}"}
        admin = {"Authorization": f"Bearer {t['admin']}"}
        async with http.get(f"{base}/api/state", headers=viewer) as r:
            assert r.status == 200
        async with http.get(f"{base}/api/log", headers=viewer) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "FORBIDDEN"
        async with http.get(f"{base}/api/log", headers=admin) as r:
            assert r.status == 200
        async with http.get(f"{base}/health/live") as r:
            assert r.status == 200
        async with http.get(f"{base}/health/ready") as r:
            assert r.status == 200 and set(await r.json()) == {"status"}
        async with http.get(f"{base}/health/ready", headers=viewer) as r:
            assert {"status", "hub", "rev"} <= set(await r.json())


async def test_cross_origin_handshakes_are_refused(hub_factory: Callable[..., Any]) -> None:
    srv = await hub_factory(allowed_origins=["https://panel.example"])
    url = f"ws://127.0.0.1:{srv.port}/ws"
    for origin in ("https://evil.example", "http://127.0.0.1:1"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await connect_raw(url, "w", headers={"Origin": origin})
        assert info.value.status == 403
    for origin in (f"http://127.0.0.1:{srv.port}", "https://panel.example"):
        conn = await connect_raw(url, "w", headers={"Origin": origin})
        await conn.close()
    conn = await connect_raw(url, "w")  # no Origin: not a browser
    await conn.close()


def test_beyond_loopback_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(UnsafeListen, match="allow_anonymous"):
        HubServer(HubConfig(host="0.0.0.0", port=0))
    HubServer(HubConfig(host="0.0.0.0", port=0, allow_anonymous=True))  # said explicitly
    HubServer(HubConfig(host="127.0.0.2", port=0))  # loopback: the development mode
    HubServer(HubConfig(host="0.0.0.0", port=0, tokens_file=str(tmp_path / "t.json")))


def test_the_cli_says_what_to_do_beyond_loopback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "companion_hub", "serve", "--host", "0.0.0.0",
         "--data-dir", "memory"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "allow_anonymous" in proc.stderr and "--allow-anonymous" in proc.stderr
    assert "token add" in proc.stderr


async def test_tokens_never_leak(
    tmp_path: Path, tokens: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    path, t = tokens
    wrong = "chub_deadbeef_" + "W" * 43
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "leak"
    srv = HubServer(HubConfig(port=0, tokens_file=str(path), data_dir=str(data)))
    await srv.start()
    url = f"ws://127.0.0.1:{srv.port}/ws"
    try:
        show = await welcomed(url, "show", t["show"])
        await show.result({"op": "set", "key": "app.show.x", "value": 1})
        await refused(url, "show", wrong)
        await refused(url, "panel", t["show"])
        admin = {"Authorization": f"Bearer {t['admin']}"}
        bodies = []
        async with aiohttp.ClientSession() as http:
            for path_ in ("/api/state", "/api/log?limit=1000", "/health/ready"):
                async with http.get(f"http://127.0.0.1:{srv.port}{path_}", headers=admin) as r:
                    bodies.append(await r.text())
            async with http.get(
                f"http://127.0.0.1:{srv.port}/api/state",
                headers={"Authorization": f"Bearer {wrong}"},
            ) as r:
                bodies.append(await r.text())
        await show.close()
    finally:
        await srv.stop()
    db = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert b"auth-failed" in db  # the failures are recorded...
    for secret in [*t.values(), wrong]:
        body = secret.split("_", 2)[2]  # ...but no token, nor its secret part, anywhere
        assert body not in logs
        assert body.encode() not in db
        assert body.encode() not in path.read_bytes()
        assert not any(body in b for b in bodies)
