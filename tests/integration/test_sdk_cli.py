"""The CLI client commands, run as functions against a live hub."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from companion_hub.cli_client import add_client_commands
from companion_hub.client import HubClient
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer


@pytest.fixture
async def srv() -> AsyncIterator[HubServer]:
    async with HubServer(HubConfig(port=0, heartbeat_ms=500)) as s:
        yield s


def url_of(srv: HubServer) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


async def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="companion-hub")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    args = parser.parse_args(list(argv))
    rc: int = await asyncio.to_thread(args.func, args)
    return rc


async def until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_set_and_get(srv: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = url_of(srv)
    assert await cli("set", "--url", url, "--client", "tally", "app.tally.status", '"live"') == 0
    out = capsys.readouterr().out
    assert "app.tally.status" in out and "version=1" in out and "rev=" in out
    assert (
        await cli("set", "--url", url, "--client", "tally", "--json", "app.tally.n", '{"a": [1]}')
        == 0
    )
    assert json.loads(capsys.readouterr().out)["version"] == 1

    assert await cli("get", "--url", url, "app.tally.*") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "VERSION", "REV", "STALE", "VALUE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    # the CLI disconnected after each set: its keys are stale now
    assert rows["app.tally.status"].endswith('STALE  "live"')
    assert rows["app.tally.n"].endswith('{"a":[1]}')

    assert await cli("get", "--url", url, "--json", "app.tally.status") == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["value"] == "live" and entry["owner"] == "app.tally" and entry["stale"]

    assert await cli("get", "--url", url, "app.nothing.*") == 1
    assert "no entries" in capsys.readouterr().err


async def test_set_errors(srv: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = url_of(srv)
    # the default client is cli-<random>: it does not own app.tally
    assert await cli("set", "--url", url, "app.tally.status", '"x"') == 1
    err = capsys.readouterr().err
    assert "NOT_OWNER" in err and "--client" in err
    assert await cli("set", "--url", url, "--client", "tally", "app.tally.s", "live") == 2
    assert "not JSON" in capsys.readouterr().err
    assert await cli("set", "--url", url, "--client", "tally", "app.tally.s", "1") == 0
    capsys.readouterr()
    args = ("set", "--url", url, "--client", "tally", "--expect-version", "0", "app.tally.s", "2")
    assert await cli(*args) == 1
    assert "CONFLICT" in capsys.readouterr().err
    assert await cli("get", "--url", "ws://127.0.0.1:9/ws", "--connect-timeout", "0.2", "a") == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


async def test_watch(srv: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = url_of(srv)
    writer = HubClient(url, "tally")
    await writer.connect()
    await writer.set("app.tally.x", "one")
    argv = ["watch", "--url", url, "--client", "watcher", "--count", "5", "--seconds", "10"]
    task = asyncio.create_task(cli(*argv, "app.tally.**"))
    out: list[str] = []

    async def lines(n: int) -> None:
        # one change at a time: changes of a key not yet printed would coalesce
        def more() -> bool:
            out.extend(capsys.readouterr().out.splitlines())
            return len(out) >= n

        await until(more)

    await lines(1)
    await writer.set("app.tally.x", {"n": 2})
    await lines(2)
    await writer.delete("app.tally.x")
    await lines(3)
    await writer.set("app.tally.y", [1, 2])
    await lines(4)
    await writer.close()  # y goes stale
    assert await asyncio.wait_for(task, 5) == 0
    await lines(5)
    parts = [line.split("  ") for line in out]
    assert [p[1:] for p in parts] == [
        ["app.tally.x", '"one"', "v1"],
        ["app.tally.x", '{"n":2}', "v2"],
        ["app.tally.x", "DELETED", "v3"],
        ["app.tally.y", "[1,2]", "v1"],
        ["app.tally.y", "[1,2]", "v1", "STALE"],
    ]
    assert all(len(p[0]) == len("12:00:00.000") for p in parts)


async def test_watch_json_and_time_limit(
    srv: HubServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPANION_HUB_URL", url_of(srv))  # no --url
    assert await cli("watch", "--json", "--seconds", "0.3", "hub.info") == 0
    [line] = capsys.readouterr().out.splitlines()
    obj = json.loads(line)
    assert obj["key"] == "hub.info" and obj["value"]["hub"] == srv.hub.hub_id


async def test_call(srv: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = url_of(srv)
    async with HubClient(url, "mixer") as owner:
        owner.handle("echo", lambda params, source: {"params": params, "source": source[:4]})

        @owner.on_command("boom")
        def boom(params: dict[str, Any], source: str) -> Any:
            raise RuntimeError("no signal")

        args = ["call", "--url", url, "app.mixer", "echo", "to=2", "label=cam 1", "on=true"]
        assert await cli(*args, 'x={"a":1}') == 0
        assert json.loads(capsys.readouterr().out) == {
            "params": {"to": 2, "label": "cam 1", "on": True, "x": {"a": 1}},
            "source": "cli-",
        }
        assert await cli("call", "--url", url, "app.mixer", "boom") == 1
        err = capsys.readouterr().err
        assert "FAILED" in err and "no signal" in err
        assert await cli("call", "--url", url, "app.nobody", "echo") == 1
        assert "UNAVAILABLE" in capsys.readouterr().err
        assert await cli("call", "--url", url, "app.mixer", "echo", "novalue") == 2


async def test_messages_that_point_to_the_fix(
    srv: HubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_of(srv)
    base = ("set", "--url", url, "--client", "tally", "app.tally.s")
    assert await cli(*base, '{"a":1') == 2  # broken JSON: where, not "add quotes"
    err = capsys.readouterr().err
    assert "not valid JSON" in err and "character 7" in err and "quotes" not in err
    assert await cli(*base, "live") == 2  # a bare word: quotes
    assert "needs quotes" in capsys.readouterr().err
    assert await cli("get", "--url", url, "app.tally") == 1
    assert "'app.tally.**'" in capsys.readouterr().err
    async with HubClient(url, "mixer") as owner:
        owner.handle("echo", lambda params, source: params)
        assert await cli("call", "--url", url, "app.mixer.buttons", "echo") == 1
        err = capsys.readouterr().err
        assert "must be a namespace: 'app.mixer'" in err


async def test_a_bad_url_fails_at_once_with_the_expected_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for url in ("http://127.0.0.1:8420", "ws://127.0.0.1:8420", "127.0.0.1:8420/ws"):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await cli("get", "--url", url, "a") == 2
        assert loop.time() - t0 < 4.0  # no connection attempts until the 5 s timeout
        assert "ws://HOST:PORT/ws" in capsys.readouterr().err


def test_an_unknown_flag_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    from companion_hub.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["get", "--bogus", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: companion-hub get") and "--bogus" in err


async def test_a_call_does_not_take_over_a_running_client_by_accident(
    srv: HubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_of(srv)
    async with HubClient(url, "tally") as app:
        args = ("set", "--url", url, "--client", "tally", "app.tally.s", "1")
        assert await cli(*args) == 2
        err = capsys.readouterr().err
        assert "'tally' is connected" in err and "--replace" in err
        assert app.connected and not app.replaced
        assert await cli(*args, "--replace") == 0  # on purpose
        await until(lambda: app.replaced)
