"""``GET /api/log``: every parameter, whatever its value, gives an answer, never a 500.

Numbers out of range (beyond SQLite's signed 64 bits, negative revisions, times
outside the years 1..9999) are a 400 that names the parameter. One hub with a log on
disk serves every test of this module (it runs on its own event loop in a thread, so
the hypothesis test can be a plain function).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import yarl
from hypothesis import assume, given
from hypothesis import strategies as st

from companion_hub.client import connect_raw
from companion_hub.eventlog import query as q
from companion_hub.eventlog.http_api import MAX_LIMIT, MAX_VALUES, PARAMS
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer
from tests.fuzzing import fuzz_settings

BIG = "9" * 30  # the report: from_rev=999999999999999999999999999999 answered 500
INT_PARAMS = ("from_rev", "to_rev", "after_id", "limit")
TIME_PARAMS = ("since", "until")

Params = list[tuple[str, str]]


class LiveHub:
    """A hub with a log on disk, on an event loop of its own in a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-hub")
        self.thread.start()
        self.server = HubServer(HubConfig(port=0, data_dir=str(data_dir), heartbeat_ms=10_000))
        self.call(self._start())
        self.url = f"http://127.0.0.1:{self.server.port}/api/log"

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        await self.server.start()
        self.http = aiohttp.ClientSession()
        # something to find: changes, events, commands' records, sessions
        c = await connect_raw(f"ws://127.0.0.1:{self.server.port}/ws", "tally")
        for i in range(30):
            await c.result({"op": "set", "key": f"app.tally.k{i % 7}", "value": {"n": i}})
        await c.result({"op": "publish", "key": "app.tally.pressed", "data": {"button": 1}})
        await c.result({"op": "delete", "key": "app.tally.k3"})
        await c.close()
        event_log = self.server.hub.event_log
        assert event_log is not None
        for _ in range(1500):  # at most 30 s for the log to have it all on disk
            if event_log.durable_rev >= self.server.hub.store.rev:
                break
            await asyncio.sleep(0.02)

    async def _get(self, params: Params) -> tuple[int, bytes]:
        async with self.http.get(self.url, params=params) as r:
            return r.status, await r.read()

    def get(self, params: Params) -> tuple[int, Any]:
        """The status and the JSON body (the raw text when it is not JSON: a 500's)."""
        status, body = self.call(self._get(params))
        try:
            return status, msgspec.json.decode(body)
        except msgspec.DecodeError:
            return status, {"not_json": body[:500].decode(errors="replace")}

    def close(self) -> None:
        async def stop() -> None:
            await self.http.close()
            await self.server.stop()

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = LiveHub(tmp_path_factory.mktemp("api-log"))
    try:
        yield hub
    finally:
        hub.close()


def names_a_parameter(message: str, sent: set[str]) -> bool:
    return any(re.search(rf"(?<![A-Za-z_]){name}(?![A-Za-z_])", message) for name in sent)


def bad(live: LiveHub, params: Params) -> str:
    status, doc = live.get(params)
    assert status == 400, (params, status, doc)
    assert doc["error"]["code"] == "BAD_REQUEST"
    return str(doc["error"]["message"])


def good(live: LiveHub, params: Params) -> list[dict[str, Any]]:
    status, doc = live.get(params)
    assert status == 200, (params, status, doc)
    return list(doc["records"])


# --- regressions: numbers SQLite cannot bind --------------------------------------------


@pytest.mark.parametrize("name", [*INT_PARAMS, *TIME_PARAMS])
@pytest.mark.parametrize("value", [BIG, "-" + BIG, "9" * 5000, str(2**63), str(-(2**63) - 1)])
def test_huge_numbers_are_a_400_naming_the_parameter(live: LiveHub, name: str, value: str) -> None:
    params = [(name, value)]
    if name == "after_id":
        params.append(("from_rev", "1"))
    message = bad(live, params)
    assert message.startswith(name), message
    assert len(message) < 300  # a 5000-digit value is not echoed whole


@pytest.mark.parametrize("name", ["from_rev", "to_rev", "after_id"])
def test_revision_and_id_bounds(live: LiveHub, name: str) -> None:
    extra = [("from_rev", "1")] if name == "after_id" else []
    good(live, [(name, str(2**63 - 1)), *extra])
    good(live, [(name, "0"), *extra])
    assert bad(live, [(name, str(2**63)), *extra]) == f"{name} must be at most {2**63 - 1}"
    assert bad(live, [(name, "-1"), *extra]) == f"{name} must not be negative"


def test_limit_bounds(live: LiveHub) -> None:
    assert len(good(live, [("limit", "1")])) == 1
    assert len(good(live, [("limit", str(2**63 - 1))])) <= MAX_LIMIT  # capped
    assert bad(live, [("limit", "0")]) == "limit must be at least 1"
    assert bad(live, [("limit", "-5")]) == "limit must be at least 1"
    assert bad(live, [("limit", str(2**63))]).startswith("limit must be at most")


@pytest.mark.parametrize("name", TIME_PARAMS)
def test_time_bounds(live: LiveHub, name: str) -> None:
    for ok in (
        str(q.MIN_TIME_MS),
        str(q.MAX_TIME_MS),
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
        "1969-07-20T20:17:40Z",
        "2024-11-27T09:33:20+01:00",
    ):
        good(live, [(name, ok)])
    for out in (
        str(q.MIN_TIME_MS - 1),
        str(q.MAX_TIME_MS + 1),
        "0001-01-01T00:00:00+01:00",  # before the year 1 in UTC
        "9999-12-31T23:59:59-01:00",
    ):
        assert "out of range" in bad(live, [(name, out)])
    assert bad(live, [(name, "tomorrow")]).startswith(f"{name}: invalid time")


@pytest.mark.parametrize("value", ["1.5", "1e3", "0x10", "1_000", "١٢", "", " ", "\x00", "nan"])
@pytest.mark.parametrize("name", INT_PARAMS)
def test_integers_are_plain_ascii_digits(live: LiveHub, name: str, value: str) -> None:
    extra = [("from_rev", "1")] if name == "after_id" else []
    if value in ("",):  # empty: as if absent
        good(live, [(name, value), *extra])
        return
    assert bad(live, [(name, value), *extra]).startswith(f"{name} must be an integer")


@pytest.mark.parametrize("name", [*INT_PARAMS, *TIME_PARAMS])
def test_a_single_valued_parameter_given_twice(live: LiveHub, name: str) -> None:
    value = "1" if name in INT_PARAMS else "2024-01-01"
    assert bad(live, [(name, value), (name, value)]).startswith(f"{name} is given 2 times")


@pytest.mark.parametrize("name", ["pattern", "client", "type"])
def test_a_repeatable_parameter_has_a_limit(live: LiveHub, name: str) -> None:
    value = {"pattern": "app.**", "client": "tally", "type": "change"}[name]
    good(live, [(name, value)] * MAX_VALUES)
    assert bad(live, [(name, value)] * (MAX_VALUES + 1)).startswith(f"{name} is given")


def test_strings_with_nul_and_unicode(live: LiveHub) -> None:
    assert good(live, [("client", "a\x00b")]) == []
    assert good(live, [("client", "Ünïcødé ✓")]) == []
    assert "invalid pattern" in bad(live, [("pattern", "app.\x00")])
    assert "unknown type" in bad(live, [("type", "change,\x00")])
    assert "invalid time" in bad(live, [("since", "\x00")])
    assert len(good(live, [("client", "tally"), ("type", "change")])) > 0


# --- the library functions underneath -------------------------------------------------


def test_parse_time_and_point_ranges() -> None:
    assert q.parse_time(str(q.MAX_TIME_MS)) == q.MAX_TIME_MS
    assert q.parse_time("0001-01-01T00:00:00Z") == q.MIN_TIME_MS
    for text in (BIG, "9" * 5000, str(q.MIN_TIME_MS - 1), "-" + BIG):
        with pytest.raises(q.LogError, match="out of range"):
            q.parse_time(text)
    with pytest.raises(q.LogError, match="invalid time"):
        q.parse_time("١٢٣")  # not ASCII digits, not ISO 8601
    assert q.parse_point(str(2**63 - 1)) == q.Point("rev", 2**63 - 1)
    with pytest.raises(q.LogError, match="out of range"):
        q.parse_point(str(2**63))
    with pytest.raises(q.LogError, match="out of range"):
        q.parse_point("@" + BIG)


def test_make_filter_checks_every_bound() -> None:
    for name in ("from_rev", "to_rev", "after_id"):
        with pytest.raises(q.LogError, match=f"^{name} must be at most"):
            q.make_filter(**{name: 2**63})
        with pytest.raises(q.LogError, match=f"^{name} must not be negative"):
            q.make_filter(**{name: -1})
    for name in TIME_PARAMS:
        with pytest.raises(q.LogError, match=f"^{name}: time .* is out of range"):
            q.make_filter(**{name: q.MAX_TIME_MS + 1})
        with pytest.raises(q.LogError, match=f"^{name}: time .* is out of range"):
            q.make_filter(**{name: BIG})
    f = q.make_filter(from_rev=2**63 - 1, since=q.MIN_TIME_MS, until=str(q.MAX_TIME_MS))
    assert (f.from_rev, f.since, f.until) == (2**63 - 1, q.MIN_TIME_MS, q.MAX_TIME_MS)


# --- the property: no 5xx, whatever comes in -----------------------------------------

_EDGES = [
    0,
    1,
    -1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    q.MIN_TIME_MS,
    q.MIN_TIME_MS - 1,
    q.MAX_TIME_MS,
    q.MAX_TIME_MS + 1,
    10**30,
]
_values = st.one_of(
    st.integers().map(str),
    st.sampled_from(_EDGES).map(str),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats().map(str),
    st.text(),
    st.text(alphabet="0123456789+-_ .eE\x00").filter(bool),
    st.just(""),
    st.just("9" * 5000),
    st.datetimes(
        timezones=st.none()
        | st.just(UTC)
        | st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
    ).map(datetime.isoformat),
    st.lists(st.sampled_from([*q.RECORD_TYPES, "", "bogus"]), max_size=4).map(",".join),
    st.sampled_from(["**", "app.**", "app.tally.*", "app.tally.k1", "a.**.b", "*.x"]),
)
_names = st.sampled_from([*PARAMS, "bogus"])
# aiohttp itself refuses a request line longer than 8190 bytes (a 400 before the handler
# runs): the property is about the handler, so the generated requests stay below that
_MAX_TARGET = 8000


@pytest.mark.fuzz
@fuzz_settings
@given(params=st.lists(st.tuples(_names, _values), max_size=6))
def test_no_value_of_any_parameter_is_a_server_error(live: LiveHub, params: Params) -> None:
    assume(len(yarl.URL(live.url).with_query(params).raw_path_qs) < _MAX_TARGET)
    status, doc = live.get(params)
    sent = {name for name, _ in params}
    if status == 200:
        records = doc["records"]
        assert isinstance(records, list) and len(records) <= MAX_LIMIT
        return
    assert status in (400, 503), (params, status, doc)  # 503: the log cannot be read
    err = doc["error"]
    if status == 503:
        assert err["code"] == "UNAVAILABLE", doc
        return
    assert err["code"] == "BAD_REQUEST"
    assert names_a_parameter(err["message"], sent & set(PARAMS)), (params, err)
