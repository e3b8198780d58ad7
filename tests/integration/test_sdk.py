"""The SDK against a real hub over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from companion_hub.client import (
    Change,
    Conflict,
    Failed,
    HubClient,
    NotFound,
    NotOwner,
    Timeout,
    Unavailable,
)
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer


def url_of(srv: HubServer) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


@pytest.fixture
async def srv() -> AsyncIterator[HubServer]:
    async with HubServer(HubConfig(port=0, heartbeat_ms=500)) as s:
        yield s


def client(srv: HubServer, name: str, **kw: Any) -> HubClient:
    kw.setdefault("backoff_base", 0.02)
    kw.setdefault("backoff_max", 0.2)
    return HubClient(url_of(srv), name, **kw)


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def next_change(it: Any, timeout: float = 3.0) -> Change:
    ch: Change = await asyncio.wait_for(anext(it), timeout)
    return ch


def hold_reconnect(c: HubClient) -> asyncio.Event:
    """Make ``c``'s next connection attempts wait until the returned event is set."""
    gate = asyncio.Event()
    driver = c._driver  # the asyncio driver: sockets, time, reconnection
    orig = driver._open

    async def gated() -> Any:
        await gate.wait()
        return await orig()

    driver._open = gated  # type: ignore[method-assign]
    return gate


async def drop(srv: HubServer, name: str, code: int = 1000, reason: bytes = b"") -> None:
    """The hub closes client ``name``'s connection (the client then reconnects)."""
    session: Any = srv.hub.sessions[name]
    connection = getattr(session, "connection", session)  # the session's WebSocket driver
    await connection.ws.close(code=code, message=reason)


def hub_view(srv: HubServer, prefix: str) -> dict[str, tuple[Any, int, bool]]:
    """The hub's own state under ``prefix`` (read through the public HTTP-equivalent get)."""
    out = {}
    for ns in srv.hub.store.namespaces():
        for k, e in ns.entries.items():
            if k.startswith(prefix):
                out[k] = (srv.hub.store._decode(e.raw), e.version, e.stale)
    return out


def mirror_view(c: HubClient, prefix: str) -> dict[str, tuple[Any, int, bool]]:
    return {
        k: (e.value, e.version, e.stale)
        for k, e in c.mirror.entries.items()
        if k.startswith(prefix)
    }


# --- basics ---------------------------------------------------------------------------


async def test_connect_set_get_watch(srv: HubServer) -> None:
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        assert a.connected and a.namespaces == ["app.tally"] and a.hub_id == srv.hub.hub_id
        r = await a.set("app.tally.status", {"on": True})
        assert r.version == 1 and r.rev > 0
        # b has no subscription: a one-off get
        e = await b.get("app.tally.status")
        assert e is not None and e.value == {"on": True} and e.owner == "app.tally"
        assert await b.get("app.tally.nothing") is None
        async with b.watch("app.tally.**") as w:
            first = await next_change(w)
            assert (first.key, first.value, first.version) == ("app.tally.status", {"on": True}, 1)
            await a.set("app.tally.status", "off")
            ch = await next_change(w)
            assert (ch.value, ch.version, ch.stale, ch.deleted) == ("off", 2, False, False)
            # now the mirror answers: no request needed, same value
            e = await b.get("app.tally.status")
            assert e is not None and e.value == "off"
            d = await a.delete("app.tally.status")
            ch = await next_change(w)
            assert ch.deleted and ch.version == d.version == 3
        assert await b.get("app.tally.status") is None


async def test_writes_and_their_errors(srv: HubServer) -> None:
    async with client(srv, "tally") as a:
        res = await a.set_many({"app.tally.a": 1, "app.tally.b": 2})
        assert [r.key for r in res] == ["app.tally.a", "app.tally.b"]
        assert res[1].rev == res[0].rev + 1
        with pytest.raises(Conflict) as ci:
            await a.set("app.tally.a", 5, expect_version=7)
        assert ci.value.details is not None and ci.value.details["version"] == 1
        assert (await a.set("app.tally.a", 5, expect_version=1)).version == 2
        with pytest.raises(NotOwner):
            await a.set("app.other.x", 1)
        with pytest.raises(NotFound):
            await a.delete("app.tally.nope")
        with pytest.raises(Conflict):  # atomic batch: nothing applied
            await a.set_many({"app.tally.c": 1, "app.tally.a": 9}, {"app.tally.a": 1})
        assert await a.get("app.tally.c") is None
        # sync: keys not written on this connection are deleted
    async with client(srv, "tally") as a2:
        await a2.set("app.tally.a", 5)
        assert await a2.sync() == 1
        assert set((await a2.get_many("app.tally.**")).keys()) == {"app.tally.a"}


async def test_get_many_uses_the_mirror_only_when_covered(srv: HubServer) -> None:
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        await a.set_many({"app.tally.x.one": 1, "app.tally.y.two": 2})
        sub = await b.subscribe("app.tally.x.**")
        assert set(sub.entries()) == {"app.tally.x.one"}
        # covered: from the mirror; not covered: a request that sees y too
        assert set(await b.get_many("app.tally.x.*")) == {"app.tally.x.one"}
        assert set(await b.get_many("app.tally.**")) == {"app.tally.x.one", "app.tally.y.two"}
        await sub.unsubscribe()
        assert b.mirror.entries == {}
        assert b.subscriptions == []


async def test_stale_flip_is_watched(srv: HubServer) -> None:
    async with client(srv, "panel") as b:
        a = client(srv, "tally")
        await a.connect()
        await a.set("app.tally.live", True)
        async with b.watch("app.tally.**") as w:
            assert (await next_change(w)).stale is False
            await a.close()
            ch = await next_change(w)
            assert ch.key == "app.tally.live" and ch.stale and ch.version == 1 and ch.value is True
            async with client(srv, "tally") as a2:
                await a2.set("app.tally.live", True)  # equal value clears the flag
                ch = await next_change(w)
                assert not ch.stale and ch.version == 1


async def test_batched_frames_converge(srv: HubServer) -> None:
    """Many writers; the hub batches deltas into array frames and coalesces; the
    subscriber's mirror ends equal to the hub's state with versions only increasing."""
    async with client(srv, "panel") as b:
        versions: dict[str, int] = {}
        bad: list[Change] = []
        writers = [client(srv, f"w{i}") for i in range(3)]
        for w in writers:
            await w.connect()
        async with b.watch("app.**") as watch:

            async def consume() -> None:
                async for ch in watch:
                    if ch.version < versions.get(ch.key, 0):
                        bad.append(ch)
                    versions[ch.key] = ch.version

            consumer = asyncio.create_task(consume())

            async def write(c: HubClient) -> None:
                for i in range(150):
                    await c.set_many(
                        {f"app.{c.client}.k{j}": i * 10 + j for j in range(4)}
                        if i % 3
                        else {f"app.{c.client}.k0": -i}
                    )
                    if i % 40 == 0:
                        await asyncio.sleep(0)
                await c.delete(f"app.{c.client}.k3")

            await asyncio.gather(*(write(w) for w in writers))
            await until(lambda: mirror_view(b, "app.") == hub_view(srv, "app."))
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        assert not bad
        for w in writers:
            await w.close()


async def test_chunked_snapshot(srv: HubServer) -> None:
    srv.hub.config.snapshot_chunk_bytes = 512
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        await a.set_many({f"app.tally.k{i}": {"i": i, "pad": "x" * 40} for i in range(200)})
        chunks: list[bool] = []
        orig = b.mirror.on_snapshot

        def spy(msg: dict[str, Any]) -> bool:
            chunks.append(msg["done"])
            return orig(msg)

        b.mirror.on_snapshot = spy  # type: ignore[method-assign]
        sub = await b.subscribe("app.tally.**")
        assert len(chunks) > 5 and chunks[-1] is True and not any(chunks[:-1])
        assert len(sub.entries()) == 200
        assert mirror_view(b, "app.") == hub_view(srv, "app.")


async def test_progress_moves_an_idle_subscribers_resume_point(srv: HubServer) -> None:
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        await b.subscribe("app.panel.**")
        before = b.rev
        r = await a.set("app.tally.x", 1)  # b does not subscribe to it
        await until(lambda: b.rev >= r.rev, timeout=3)
        assert b.rev > before and b.mirror.entries == {}


async def test_events(srv: HubServer) -> None:
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        stream = b.events()
        await b.subscribe("app.tally.**", events=True)
        assert await a.publish("app.tally.button", {"n": 3}) == 1
        ev = await asyncio.wait_for(anext(stream), 3)
        assert (ev.key, ev.data, ev.source) == ("app.tally.button", {"n": 3}, "tally")
        with pytest.raises(NotOwner):
            await b.publish("app.tally.button", 1)


# --- reconnect and resume -------------------------------------------------------------


async def test_reconnect_resumes_incrementally_on_the_same_hub(srv: HubServer) -> None:
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        await a.set_many({"app.tally.a": 1, "app.tally.b": 2, "app.tally.c": 3})
        modes: list[str] = []
        orig = b.mirror.on_snapshot

        def spy(msg: dict[str, Any]) -> bool:
            modes.append(msg["mode"])
            return orig(msg)

        b.mirror.on_snapshot = spy  # type: ignore[method-assign]
        async with b.watch("app.tally.**") as w:
            for _ in range(3):
                await next_change(w)
            assert modes == ["full"]
            # the hub drops b; while b is away a writes, deletes and creates
            gate = hold_reconnect(b)
            await drop(srv, "panel")
            await until(lambda: not b.connected)
            await a.set("app.tally.a", 10)
            await a.delete("app.tally.b")
            await a.set("app.tally.d", 4)
            gate.set()
            await until(lambda: b.connected)
            assert b.reconnects == 1
            got = {}
            while len(got) < 3:
                ch = await next_change(w)
                got[ch.key] = ch
            assert got["app.tally.a"].value == 10 and got["app.tally.a"].version == 2
            assert got["app.tally.b"].deleted
            assert got["app.tally.d"].value == 4
            assert modes == ["full", "incremental"]
            assert mirror_view(b, "app.tally.") == hub_view(srv, "app.tally.")
            # and it keeps receiving deltas on the new connection
            await a.set("app.tally.c", 30)
            ch = await next_change(w)
            assert (ch.key, ch.value) == ("app.tally.c", 30)


async def test_hub_restart_with_a_new_id_replaces_the_mirror() -> None:
    srv1 = HubServer(HubConfig(port=0, heartbeat_ms=500))
    await srv1.start()
    port = srv1.port
    a = client(srv1, "tally")
    b = client(srv1, "panel")
    srv2: HubServer | None = None
    try:
        await a.connect()
        await b.connect()
        for v in range(3):
            await a.set("app.tally.x", v)  # version 3
        await a.set("app.tally.gone", 1)
        async with b.watch("app.tally.**") as w:
            assert {(await next_change(w)).key for _ in range(2)} == {
                "app.tally.x",
                "app.tally.gone",
            }
            old_id = b.hub_id
            await srv1.stop()
            srv2 = HubServer(HubConfig(port=port, heartbeat_ms=500))
            await srv2.start()
            await until(lambda: a.connected and b.connected and b.hub_id != old_id)
            await b.wait_connected()
            # the full snapshot of the new hub is empty: b's mirror is emptied
            ch = await next_change(w)
            while ch.key != "app.tally.gone":
                ch = await next_change(w)
            assert ch.deleted
            await until(lambda: b.mirror.entries == {})
            # versions start again at 1 on the new hub and must be accepted
            r = await a.set("app.tally.x", "new")
            assert r.version == 1
            ch = await next_change(w)
            assert (ch.key, ch.value, ch.version) == ("app.tally.x", "new", 1)
            assert mirror_view(b, "app.") == hub_view(srv2, "app.")
    finally:
        await a.close()
        await b.close()
        if srv2 is not None:
            await srv2.stop()
        else:
            await srv1.stop()


async def test_subscriptions_survive_and_reconnect_uses_backoff(srv: HubServer) -> None:
    async with client(srv, "panel") as b:
        await b.subscribe("hub.info")
        for i in range(3):
            await drop(srv, "panel")
            await until(lambda n=i + 1: b.reconnects == n and b.connected)
        assert len(b.subscriptions) == 1 and b.mirror.get("hub.info") is not None
        assert await b.get("hub.info") is not None


async def test_takeover_stops_the_older_client(srv: HubServer) -> None:
    seen: list[str] = []
    async with client(srv, "tally") as a1:
        a1.on_disconnect(lambda c, reason: seen.append(f"lost: {reason}"))

        @a1.on_replaced
        async def replaced(c: HubClient) -> None:
            seen.append("replaced")

        async with client(srv, "tally") as a2:
            await until(lambda: a1.replaced)
            assert not a1.connected
            await until(lambda: "replaced" in seen)  # the hooks ran
            assert any(s.startswith("lost: ") and "4000" in s for s in seen), seen
            with pytest.raises(Unavailable, match="taken over"):
                await a1.set("app.tally.x", 1)
            await a2.set("app.tally.x", 1)
            await asyncio.sleep(0.2)
            assert not a1.connected and srv.hub.sessions["tally"].session_id == a2.session_id


async def test_on_disconnect_runs_for_every_lost_connection(srv: HubServer) -> None:
    reasons: list[str] = []
    async with client(srv, "tally") as c:
        c.on_disconnect(lambda hub, reason: reasons.append(reason))
        await drop(srv, "tally", 1001, b"going away")  # the hub drops it; the client returns
        await until(lambda: bool(reasons))
        await until(lambda: c.connected)
        assert "1001" in reasons[0] and not c.replaced


# --- commands -------------------------------------------------------------------------


async def test_commands_between_two_clients(srv: HubServer) -> None:
    async with client(srv, "mixer") as owner, client(srv, "panel") as caller:
        calls: list[tuple[dict[str, Any], str]] = []

        @owner.on_command("cut")
        async def cut(params: dict[str, Any], source: str) -> Any:
            calls.append((params, source))
            return {"cut": params.get("to")}

        owner.handle("sync_echo", lambda p, s: [p, s])

        @owner.on_command("conflict")
        def conflict(params: dict[str, Any], source: str) -> Any:
            raise Conflict("busy", {"why": "already cutting"})

        @owner.on_command("boom")
        def boom(params: dict[str, Any], source: str) -> Any:
            raise RuntimeError("the mixer is on fire")

        @owner.on_command("slow")
        async def slow(params: dict[str, Any], source: str) -> Any:
            await asyncio.sleep(1)
            return "late"

        assert await caller.command("app.mixer", "cut", to=2) == {"cut": 2}
        assert calls == [({"to": 2}, "panel")]
        # params named like command()'s own arguments still work
        assert await caller.command("app.mixer", "sync_echo", target="t", name="n") == [
            {"target": "t", "name": "n"},
            "panel",
        ]
        with pytest.raises(Conflict) as ci:
            await caller.command("app.mixer", "conflict")
        assert ci.value.message == "busy" and ci.value.details == {"why": "already cutting"}
        with pytest.raises(Failed, match="on fire"):
            await caller.command("app.mixer", "boom")
        with pytest.raises(NotFound):
            await caller.command("app.mixer", "nope")
        with pytest.raises(Unavailable):
            await caller.command("app.nobody", "cut")
        with pytest.raises(Timeout):
            await caller.command("app.mixer", "slow", timeout_ms=150)


async def test_idempotent_commands_run_once(srv: HubServer) -> None:
    async with client(srv, "mixer") as owner, client(srv, "panel") as caller:
        runs = 0

        @owner.on_command("cut")
        async def cut(params: dict[str, Any], source: str) -> Any:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0.05)
            return runs

        r1, r2 = await asyncio.gather(
            caller.command("app.mixer", "cut", idempotency_key="k-1"),
            caller.command("app.mixer", "cut", idempotency_key="k-1"),
        )
        r3 = await caller.command("app.mixer", "cut", idempotency_key="k-1")
        assert r1 == r2 == r3 == 1 and runs == 1
        assert await caller.command("app.mixer", "cut", idempotency_key="k-2") == 2


async def test_owner_dropping_mid_command_gives_unavailable(srv: HubServer) -> None:
    async with client(srv, "mixer") as owner, client(srv, "panel") as caller:
        started = asyncio.Event()

        @owner.on_command("hang")
        async def hang(params: dict[str, Any], source: str) -> Any:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(caller.command("app.mixer", "hang", timeout_ms=5000))
        await asyncio.wait_for(started.wait(), 3)
        await drop(srv, "mixer")
        with pytest.raises(Unavailable, match="may have been executed"):
            await task


# --- life cycle -----------------------------------------------------------------------


async def test_close_cancels_every_task(srv: HubServer) -> None:
    c = client(srv, "mixer")
    await c.connect()

    @c.on_command("hang")
    async def hang(params: dict[str, Any], source: str) -> Any:
        await asyncio.sleep(10)

    async with client(srv, "panel") as caller:
        t = asyncio.create_task(caller.command("app.mixer", "hang"))
        w = c.watch("hub.**")
        await next_change(w)
        await until(lambda: any(x.get_name().startswith("hub-client-cmd") for x in c._driver.tasks))
        await c.close()
        with pytest.raises(Unavailable):
            await t
    mine = [
        t for t in asyncio.all_tasks() if t.get_name().startswith("hub-client") and not t.done()
    ]
    assert mine == []

    async def drain() -> list[Change]:
        return [ch async for ch in w]

    # what was already queued is still delivered, then the iteration ends
    assert all(ch.key.startswith("hub.") for ch in await asyncio.wait_for(drain(), 2))
    with pytest.raises(Unavailable):
        await c.set("app.mixer.x", 1)


async def test_connect_fails_cleanly_without_a_hub() -> None:
    c = HubClient("ws://127.0.0.1:9/ws", "nobody", connect_timeout=0.3, backoff_base=0.05)
    with pytest.raises(Unavailable, match="could not connect"):
        await c.connect()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("hub-client")]


def test_invalid_client_name_is_refused_locally() -> None:
    with pytest.raises(ValueError, match="invalid client name"):
        HubClient("ws://127.0.0.1:1/ws", "Bad Name")


async def test_on_connect_rewrites_keys_after_a_reconnect(srv: HubServer) -> None:
    a = client(srv, "tally")
    runs = 0

    @a.on_connect
    async def republish(hub: HubClient) -> None:
        nonlocal runs
        runs += 1
        await hub.set("app.tally.live", True)

    async with a, client(srv, "panel") as b, b.watch("app.tally.**") as w:
        ch = await next_change(w)
        assert ch.value is True and not ch.stale and runs == 1
        gate = hold_reconnect(a)
        await drop(srv, "tally")
        assert (await next_change(w)).stale  # the owner went away...
        gate.set()
        ch = await next_change(w)  # ...and came back: fresh again, same version
        assert not ch.stale and ch.version == 1 and runs == 2


# --- protocol revision 2 --------------------------------------------------------------


async def test_revision_2_durable_owner_stale_since_limits(srv: HubServer) -> None:
    async with client(srv, "tally") as a, client(srv, "panel") as b:
        assert b.limits.oldest_rev is not None and b.limits.frame_bytes
        async with b.watch("app.tally.**") as w:
            r = await a.set("app.tally.x", 1, durable=True)  # the log is in memory: at once
            ch = await next_change(w)
            # first seen in a delta: the delta says who owns it
            assert (ch.key, ch.version, ch.owner, ch.stale_since) == (
                "app.tally.x",
                1,
                "app.tally",
                None,
            )
            assert (await a.set_many({"app.tally.y": 2}, durable=True))[0].version == 1
            assert (await next_change(w)).key == "app.tally.y"
            d = await a.delete("app.tally.y", durable=True)
            ch = await next_change(w)
            assert ch.deleted and ch.version == d.version and ch.owner == "app.tally"
            await a.close()
            ch = await next_change(w)
            assert ch.key == "app.tally.x" and ch.stale and ch.version == r.version
            assert ch.stale_since is not None and ch.stale_since >= (ch.ts or 0)
            e = b.mirror.get("app.tally.x")
            assert e is not None and e.stale_since == ch.stale_since and e.owner == "app.tally"
