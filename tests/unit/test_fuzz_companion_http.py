"""Companion's HTTP answers are treated as hostile: bounded reads, validated shapes.

The parsers are pure functions, fuzzed with random bytes and random JSON; the byte cap
is checked end to end against a real aiohttp server on 127.0.0.1 that answers a 50 MB
variable.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from companion_hub.adapters.companion.http import (
    DEFAULT_MAX_VALUE_BYTES,
    MAX_CONNECTIONS_BYTES,
    BodyTooLarge,
    CompanionHttp,
    Connection,
    ConnectionStatus,
    HttpError,
    VariableRef,
    parse_connections,
    parse_uptime,
    parse_value,
)
from tests.fuzzing import fuzz_settings

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
CONNECTION_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "label": st.text(max_size=8) | JSON,
        "id": st.text(max_size=8) | JSON,
        "moduleId": st.text(max_size=8) | JSON,
        "enabled": st.booleans() | JSON,
        "status": st.fixed_dictionaries(
            {},
            optional={
                k: st.none() | st.text(max_size=5) | JSON for k in ("category", "level", "message")
            },
        )
        | JSON,
    },
)


def usable(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("label"), str)


def check_connection(conn: Connection) -> None:
    assert isinstance(conn.label, str)
    assert conn.id is None or isinstance(conn.id, str)
    assert conn.module_id is None or isinstance(conn.module_id, str)
    assert conn.enabled is None or isinstance(conn.enabled, bool)
    if conn.status is not None:
        for value in (conn.status.category, conn.status.level, conn.status.message):
            assert value is None or isinstance(value, str)
    state = conn.as_state()
    assert set(state) == {"id", "module", "enabled", "status"}
    json.dumps(state)  # storable as is


# --- fuzz -------------------------------------------------------------------------------------


@pytest.mark.fuzz
@fuzz_settings
@given(items=st.lists(CONNECTION_LIKE | JSON, max_size=8))
def test_fuzz_connections_list(items: list[Any]) -> None:
    body = json.dumps(items).encode()
    connections, skipped = parse_connections(body)
    assert skipped == sum(not usable(i) for i in items)
    assert [c.label for c in connections] == [i["label"] for i in items if usable(i)]
    for conn in connections:
        check_connection(conn)


@pytest.mark.fuzz
@fuzz_settings
@given(doc=JSON)
def test_fuzz_connections_any_json(doc: Any) -> None:
    body = json.dumps(doc).encode()
    if not isinstance(doc, list):
        with pytest.raises(HttpError, match="not a JSON list"):
            parse_connections(body)
        return
    connections, skipped = parse_connections(body)
    assert len(connections) + skipped == len(doc)
    for conn in connections:
        check_connection(conn)


@pytest.mark.fuzz
@fuzz_settings
@given(body=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_fuzz_connections_random_bytes(body: bytes) -> None:
    try:
        connections, skipped = parse_connections(body)
    except HttpError as exc:
        assert str(exc).startswith("GET /api/connections")
        return
    assert skipped >= 0
    for conn in connections:
        check_connection(conn)


@pytest.mark.fuzz
@fuzz_settings
@given(
    text=st.text(max_size=80)
    | st.sampled_from(["inf", "-inf", "nan", "1e999", "-0", "12.5", "1_000", "9" * 400])
    | st.floats().map(repr)
)
def test_fuzz_uptime(text: str) -> None:
    value = parse_uptime(text)
    assert value is None or (isinstance(value, float) and math.isfinite(value) and value >= 0)


@pytest.mark.fuzz
@fuzz_settings
@given(
    status=st.sampled_from([200, 404, 204, 400, 500]) | st.integers(100, 599),
    body=st.binary(max_size=64),
    limit=st.integers(0, 64),
)
def test_fuzz_value(status: int, body: bytes, limit: int) -> None:
    try:
        value = parse_value(status, body, limit)
    except BodyTooLarge as exc:
        assert status == 200 and len(body) > limit and str(limit) in str(exc)
        return
    except HttpError as exc:
        assert status not in (200, 404) and exc.status == status
        return
    if status == 404:
        assert value is None
    else:
        assert status == 200 and isinstance(value, str) and len(body) <= limit


# --- regressions and examples ---------------------------------------------------------------


def test_connections_with_junk_items_keep_only_the_usable_ones() -> None:
    connections, skipped = parse_connections(b'[1,"x",null,{"label":"ok1"}]')
    assert connections == [Connection(label="ok1")] and skipped == 3


def test_a_companion_connection_keeps_what_the_adapter_stores() -> None:
    body = json.dumps(
        [
            {
                "id": "c1",
                "label": "obs",
                "moduleId": "obs-studio",
                "enabled": True,
                "status": {"category": "good", "level": "ok", "message": None},
                "extra": [1, 2],
            },
            {"id": 7, "label": "atem", "moduleId": None, "enabled": "yes", "status": "x"},
            {"label": 5},
        ]
    ).encode()
    (obs, atem), skipped = parse_connections(body)
    assert skipped == 1
    assert obs == Connection(
        label="obs",
        id="c1",
        module_id="obs-studio",
        enabled=True,
        status=ConnectionStatus("good", "ok", None),
    )
    assert obs.as_state() == {
        "id": "c1",
        "module": "obs-studio",
        "enabled": True,
        "status": {"category": "good", "level": "ok", "message": None},
    }
    assert atem.as_state() == {"id": None, "module": None, "enabled": None, "status": None}


@pytest.mark.parametrize("body", [b"{}", b'"x"', b"12", b"null"])
def test_connections_that_are_not_a_list_raise(body: bytes) -> None:
    with pytest.raises(HttpError, match="not a JSON list"):
        parse_connections(body)


@pytest.mark.parametrize("body", [b"", b"[", b"\xff", b"[" * 100_000, b"[NaN]"])
def test_connections_that_are_not_json_raise(body: bytes) -> None:
    with pytest.raises(HttpError, match="not JSON"):
        parse_connections(body)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12.0),
        ("12.5\n", 12.5),
        ("0", 0.0),
        ("inf", None),
        ("nan", None),
        ("1e999", None),
        ("-1", None),
        ("", None),
        ("abc", None),
        ("9" * 400, None),
    ],
)
def test_uptime(text: str, value: float | None) -> None:
    assert parse_uptime(text) == value


def test_value_with_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse_value(200, b"ok \xff\xfe", 100) == "ok \ufffd\ufffd"
    assert parse_value(404, b"whatever", 100) is None
    with pytest.raises(BodyTooLarge, match="value larger than 3 bytes"):
        parse_value(200, b"abcd", 3)
    with pytest.raises(HttpError) as err:
        parse_value(500, b"x" * 10_000, 100)
    assert err.value.status == 500 and len(err.value.text) < 400


# --- the byte cap against a real server -------------------------------------------------------

BIG = 50 * 1024 * 1024


@pytest.fixture
async def companion_api() -> AsyncIterator[tuple[CompanionHttp, dict[str, int]]]:
    """An HTTP server with Companion's routes: a 50 MB custom variable among normal ones."""
    sent = {"big": 0}

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        if "chunked" not in request.path:
            resp.content_length = BIG
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            while sent["big"] < BIG:
                await resp.write(chunk)
                sent["big"] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what the cap is for
        return resp

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def uptime(request: web.Request) -> web.Response:
        return web.Response(text="123")

    async def connections(request: web.Request) -> web.Response:
        return web.Response(body=b'[1,"x",null,{"label":"ok1"}]', content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/custom-variable/big/value", big)
    app.router.add_get("/api/custom-variable/bigchunked/value", big)
    app.router.add_get("/api/custom-variable/small/value", text)
    app.router.add_get("/api/variable/internal/uptime/value", uptime)
    app.router.add_get("/api/connections", connections)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = CompanionHttp("127.0.0.1", port, timeout=10.0)
    try:
        yield http, sent
    finally:
        await http.close()
        await runner.cleanup()


async def test_a_50_mb_value_is_reported_failed_without_being_read(
    companion_api: tuple[CompanionHttp, dict[str, int]],
) -> None:
    http, sent = companion_api
    proc = psutil.Process(os.getpid())
    before = proc.memory_info().rss
    big, small = VariableRef("custom", "big"), VariableRef("custom", "small")
    result = await asyncio.wait_for(http.poll([big, small]), 10)
    grown = proc.memory_info().rss - before
    assert result.failed == {big: f"value larger than {DEFAULT_MAX_VALUE_BYTES} bytes"}
    assert result.too_large == {big}
    assert result.values == {small: "ok"} and result.uptime == 123.0
    assert result.connections == [Connection(label="ok1")] and result.skipped_connections == 3
    assert grown < 20 * 1024 * 1024, grown
    await asyncio.sleep(0.2)
    assert sent["big"] < BIG  # the server could not send it all: the client hung up
    # the session still works after the dropped connection
    assert await http.get_value(small) == "ok"


async def test_a_chunked_value_over_a_small_cap(
    companion_api: tuple[CompanionHttp, dict[str, int]],
) -> None:
    http, _ = companion_api
    small_cap = CompanionHttp("127.0.0.1", int(http.base.rsplit(":", 1)[1]), max_value_bytes=2)
    try:
        with pytest.raises(BodyTooLarge, match="value larger than 2 bytes"):
            await small_cap.get_value(VariableRef("custom", "bigchunked"))
        assert await small_cap.get_value(VariableRef("custom", "small")) == "ok"
        result = await small_cap.poll([VariableRef("custom", "small")])
        assert result.uptime == 123.0  # the uptime has its own cap
        assert result.values == {VariableRef("custom", "small"): "ok"} and not result.failed
    finally:
        await small_cap.close()


async def test_an_oversized_connections_list_raises() -> None:
    async def connections(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            await resp.write(b"[" + b'{"label":"x"},' * (MAX_CONNECTIONS_BYTES // 10))
            await resp.write(b"{}]")
        except (ConnectionError, RuntimeError):
            pass
        return resp

    app = web.Application()
    app.router.add_get("/api/connections", connections)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http = CompanionHttp("127.0.0.1", runner.addresses[0][1])
    try:
        with pytest.raises(BodyTooLarge, match=str(MAX_CONNECTIONS_BYTES)):
            await http.connections()
    finally:
        await http.close()
        await runner.cleanup()
