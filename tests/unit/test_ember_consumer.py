"""EmberConsumer against the simulator's Ember+ provider session, without sockets."""

from __future__ import annotations

from companion_hub.adapters.companion.ember import s101
from companion_hub.adapters.companion.ember.consumer import (
    ConsumerOptions,
    EmberConsumer,
    Event,
    Stalled,
    VariableChanged,
    VariablesListed,
)
from companion_hub.simulator.ember import EmberProvider, EmberSession
from companion_hub.simulator.scenario import scenario_from_dict
from companion_hub.simulator.state import CompanionState


class Pair:
    """A consumer wired to a provider session; time is set by hand."""

    def __init__(self, provider: EmberProvider, options: ConsumerOptions | None = None) -> None:
        self.provider = provider
        self.session: EmberSession = provider.open_session()
        self.consumer = EmberConsumer(options)
        self.now = 0.0
        self.session.receive_data(self.consumer.start(self.now))

    def pump(self) -> list[Event]:
        events: list[Event] = []
        for _ in range(100):
            out = self.consumer.data_to_send()
            if out:
                self.session.receive_data(out)
            back = self.session.data_to_send()
            if not out and not back:
                break
            events += self.consumer.feed(back, self.now)
        return events

    def tick(self, dt: float) -> list[Event]:
        self.now += dt
        events = self.consumer.tick(self.now)
        return events + self.pump()


def make() -> tuple[CompanionState, EmberProvider]:
    sc = scenario_from_dict({"custom_variables": {"cue": 0, "name": "hello"}})
    state = CompanionState(sc, subscriptions=True, api_version="1.14.0", companion_version="5.1")
    provider = EmberProvider(state)
    state.add_variable_listener(provider.variables_changed)
    return state, provider


def listed(events: list[Event]) -> dict[str, dict[str, object]]:
    return {e.kind: e.values for e in events if isinstance(e, VariablesListed)}


def test_lists_both_kinds_by_name() -> None:
    _, provider = make()
    pair = Pair(provider)
    lists = listed(pair.pump())
    assert lists["custom"] == {"cue": "0", "name": "hello"}
    assert lists["internal"]["time_hms"] and "uptime" in lists["internal"]
    assert pair.consumer.listed


def test_first_build_strings_then_typed_after_rebuild() -> None:
    _, provider = make()
    assert isinstance(listed(Pair(provider).pump())["internal"]["uptime"], str)
    provider.rebuild()
    lists = listed(Pair(provider).pump())
    assert isinstance(lists["internal"]["uptime"], int)
    assert isinstance(lists["internal"]["instance_oks"], int)
    assert lists["custom"]["cue"] == "0"  # custom values are always STRING


def test_pushes_and_writes() -> None:
    state, provider = make()
    a, b = Pair(provider), Pair(provider)
    a.pump()
    b.pump()
    state.set_custom_variable("cue", 7)
    assert a.pump() == [VariableChanged("custom", "cue", "7")]
    assert b.pump() == [VariableChanged("custom", "cue", "7")]
    a.session.receive_data(a.consumer.write_custom("name", "from ember"))
    assert VariableChanged("custom", "name", "from ember") in a.pump()
    assert state.custom_variables["name"] == "from ember"
    assert b.pump() == [VariableChanged("custom", "name", "from ember")]
    a.session.receive_data(a.consumer.write_custom("cue", 12))
    a.pump()
    assert state.custom_variables["cue"] == "12"


def test_internal_write_is_answered_with_the_current_value() -> None:
    _, provider = make()
    pair = Pair(provider)
    before = listed(pair.pump())["internal"]["instance_oks"]
    pair.session.receive_data(pair.consumer.write("internal", "instance_oks", "99"))
    assert pair.pump() == []  # the answer carries the unchanged value
    assert pair.consumer.values("internal")["instance_oks"] == before


def test_probe_keeps_a_live_session_and_detects_an_abandoned_one() -> None:
    state, provider = make()
    pair = Pair(provider, ConsumerOptions(probe_interval=2.0, request_timeout=1.5))
    pair.pump()
    for _ in range(20):
        assert pair.tick(0.5) == []  # probes answered
    provider.rebuild()  # the session is abandoned: still open, never answered
    assert pair.session.abandoned
    state.set_custom_variable("cue", 99)
    assert pair.pump() == []  # no pushes any more
    events: list[Event] = []
    for _ in range(10):
        events += pair.tick(0.5)
    assert len([e for e in events if isinstance(e, Stalled)]) == 1
    assert pair.consumer.stalled
    # a new connection lists again, with the value that changed meanwhile
    assert listed(Pair(provider).pump())["custom"]["cue"] == "99"


def test_walk_request_unanswered_stalls() -> None:
    _, provider = make()
    provider.rebuild()
    session = provider.open_session()
    session.abandoned = True
    consumer = EmberConsumer(ConsumerOptions(request_timeout=1.0))
    session.receive_data(consumer.start(0.0))
    assert session.data_to_send() == b""
    assert consumer.tick(0.9) == []
    (event,) = consumer.tick(1.2)
    assert isinstance(event, Stalled) and "root" in event.reason


def test_keepalive_requests_are_answered_both_ways() -> None:
    _, provider = make()
    pair = Pair(provider)
    pair.pump()
    assert pair.consumer.feed(s101.keepalive_request(), 0.0) == []
    assert pair.consumer.data_to_send() == s101.keepalive_response()
    provider.rebuild()  # an abandoned session still answers keep-alives
    pair.session.receive_data(s101.keepalive_request())
    assert pair.session.data_to_send() == s101.keepalive_response()


def test_new_custom_variable_asks_for_a_rebuild() -> None:
    state, provider = make()
    asked: list[int] = []
    provider.on_new_variable = lambda: asked.append(1)
    state.set_custom_variable("fresh", "x")
    assert asked == [1]
    provider.rebuild()
    assert listed(Pair(provider).pump())["custom"]["fresh"] == "x"


def test_caps_and_garbage() -> None:
    _, provider = make()
    pair = Pair(provider, ConsumerOptions(max_variables=1))
    events = pair.pump()
    assert len(listed(events)["custom"]) == 1
    assert any(getattr(e, "kind", "") == "too-many-variables" for e in events)
    bad = s101.encode_ember(b"\x60\x05garbage")
    events = pair.consumer.feed(bad + b"\x00\xfe\x01\xff", 0.0)
    assert pair.consumer.problems["bad-glow"] == 1
    assert not any(isinstance(e, VariableChanged) for e in events)
