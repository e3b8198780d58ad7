"""EmberConsumer: Companion's variables over Ember+, as a sans-I/O state machine.

It walks the provider's tree with GetDirectory, by node identifiers (never by numeric
path: paths and the value parameter's name change when Companion rebuilds its tree):
the root, then ``Companion Tree``, ``variables``, ``internal`` and ``custom``, then
every variable node. A variable node's child parameter holds the value (its
identifier is the type name, e.g. ``string``). GetDirectory on the variable node is
what makes Companion's provider push that variable's changes to this connection; a
Subscribe on the parameter is sent as well, for providers that follow the spec.

Events (:class:`VariablesListed` per kind once both lists are complete, then
:class:`VariableChanged` on pushes) are returned by :meth:`EmberConsumer.feed` and
:meth:`EmberConsumer.tick`; bytes to send wait in :meth:`EmberConsumer.data_to_send`.

Companion's provider, after a rebuild, keeps existing connections open but stops
answering them (keep-alives excepted). So the consumer sends a GetDirectory on the
root every ``probe_interval`` seconds and reports :class:`Stalled` when any request
(probe or walk) sees no Glow message for ``request_timeout`` seconds; the driver
then closes the connection and starts over with a new consumer. A Stalled consumer
stays silent.

Everything received is hostile: malformed messages are counted in
:attr:`EmberConsumer.problems` (an :class:`EmberProblem` event the first time per
kind), the number of variables per kind and the size of a value are capped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from . import glow, s101
from .ber import BerError
from .glow import CommandType, Node, Parameter

TREE = "Companion Tree"
VARIABLES = "variables"
KINDS = ("internal", "custom")

JsonValue = int | float | str | bool | None


@dataclass(frozen=True)
class VariablesListed:
    kind: str  # "internal" | "custom"
    values: dict[str, JsonValue]


@dataclass(frozen=True)
class VariableChanged:
    kind: str
    name: str
    value: JsonValue


@dataclass(frozen=True)
class Stalled:
    reason: str


@dataclass(frozen=True)
class EmberProblem:
    kind: str
    detail: str


Event = VariablesListed | VariableChanged | Stalled | EmberProblem


@dataclass(frozen=True)
class ConsumerOptions:
    probe_interval: float = 0.8  # seconds between GetDirectory probes once listed
    request_timeout: float = 0.7  # no Glow message this long while a request waits: Stalled
    max_variables: int = 10_000  # per kind
    max_value_chars: int = 64 * 1024  # longer values are ignored (a problem)


@dataclass
class _Var:
    kind: str
    name: str
    node_path: tuple[int, ...]
    param_path: tuple[int, ...] | None = None
    value: JsonValue = None
    type: int | None = None
    loaded: bool = False


@dataclass
class _Walk:
    tree: tuple[int, ...] | None = None
    variables: tuple[int, ...] | None = None
    lists: dict[str, tuple[int, ...]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # kinds whose node list arrived


def to_json(value: glow.Value) -> JsonValue:
    """A Glow value as a JSON-able Python value (octets as hex text)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EmberConsumer:
    """One connection's consumer state. Create a new one per connection."""

    def __init__(self, options: ConsumerOptions | None = None) -> None:
        self.options = options or ConsumerOptions()
        self._decoder = s101.S101Decoder()
        self._out = bytearray()
        self._now = 0.0
        self._walk = _Walk()
        self._pending: dict[tuple[int, ...], float] = {}  # GetDirectory path -> sent at
        self._waiting_since: float | None = None  # a request waits; last progress at
        self._probe_sent: float | None = None
        self._next_probe: float | None = None
        self._vars: dict[tuple[str, str], _Var] = {}
        self._by_node: dict[tuple[int, ...], _Var] = {}
        self._by_param: dict[tuple[int, ...], _Var] = {}
        self.listed = False
        self.stalled = False
        self.problems: dict[str, int] = {}

    # --- I/O boundary ---------------------------------------------------------------

    def start(self, now: float) -> bytes:
        """The first request (GetDirectory on the root); also returns anything queued."""
        self._now = now
        self._request(())
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def feed(self, data: bytes, now: float | None = None) -> list[Event]:
        """Bytes as received, in any chunking."""
        if now is not None:
            self._now = now
        events: list[Event] = []
        if self.stalled:
            return events
        for msg in self._decoder.feed(data):
            if isinstance(msg, s101.KeepAliveRequest):
                self._out += s101.keepalive_response()
            elif isinstance(msg, s101.EmberMessage):
                self._message(msg.payload, events)
        for kind, n in self._decoder.dropped.items():
            if n and self.problems.get(f"s101-{kind}", 0) < n:
                self._problem(f"s101-{kind}", "dropped frame", events, count=n)
        return events

    def tick(self, now: float) -> list[Event]:
        """Time passes: probes, and the stall check. Call every ~100-500 ms."""
        self._now = now
        events: list[Event] = []
        if self.stalled:
            return events
        if self._waiting_since is not None and now - self._waiting_since > (
            self.options.request_timeout
        ):
            self.stalled = True
            what = "probe" if self._probe_sent is not None else "request"
            waiting = sorted(self._pending)[:3]
            paths = ", ".join(".".join(map(str, p)) or "root" for p in waiting)
            events.append(
                Stalled(f"no answer to a {what} for {now - self._waiting_since:.1f} s ({paths})")
            )
            return events
        if self.listed and self._next_probe is not None and now >= self._next_probe:
            self._next_probe = None
            self._probe_sent = now
            if self._waiting_since is None:
                self._waiting_since = now
            self._out += s101.encode_ember(glow.get_directory(()))
            # a GetDirectory also subscribes (Companion's provider keeps a list with a
            # duplicate per request): take it back, so probes do not pile up there
            self._out += s101.encode_ember(glow.command_at((), CommandType.UNSUBSCRIBE))
        return events

    def keepalive_request(self) -> bytes:
        """A keep-alive request frame (Companion answers these even when abandoned)."""
        return s101.keepalive_request()

    # --- writes ---------------------------------------------------------------------

    def write(self, kind: str, name: str, value: JsonValue) -> bytes:
        """A set-value request for a variable's value parameter (KeyError if unknown).

        For a STRING parameter, non-text values are sent as text (numbers in their
        JSON form, booleans as ``true``/``false``).
        """
        var = self._vars.get((kind, name))
        if var is None or var.param_path is None:
            raise KeyError(f"{kind}:{name}")
        wire: glow.Value = value
        if var.type == glow.ParameterType.STRING and not isinstance(value, str):
            wire = json.dumps(value)
        elif isinstance(value, float) and value.is_integer() and var.type == 1:
            wire = int(value)
        return s101.encode_ember(glow.set_value(var.param_path, wire))

    def write_custom(self, name: str, value: JsonValue) -> bytes:
        return self.write("custom", name, value)

    def values(self, kind: str) -> dict[str, JsonValue]:
        """The current values of one kind (complete once listed)."""
        return {v.name: v.value for v in self._vars.values() if v.kind == kind}

    # --- internals ------------------------------------------------------------------

    def _problem(self, kind: str, detail: str, events: list[Event], count: int = 0) -> None:
        first = kind not in self.problems
        self.problems[kind] = count or self.problems.get(kind, 0) + 1
        if first:
            events.append(EmberProblem(kind, detail))

    def _request(self, path: tuple[int, ...]) -> None:
        self._pending[path] = self._now
        if self._waiting_since is None:
            self._waiting_since = self._now
        self._out += s101.encode_ember(glow.get_directory(path))

    def _message(self, payload: bytes, events: list[Event]) -> None:
        try:
            root = glow.decode_root(payload)
        except BerError as exc:
            self._problem("bad-glow", str(exc), events)
            return
        # any Glow message is a sign of life: the probe is answered, the walk progresses
        self._probe_sent = None
        if self.listed and self._next_probe is None:
            self._next_probe = self._now + self.options.probe_interval
        top = {id(el) for el in root.elements}
        for el in glow.walk(root.elements):
            if isinstance(el, Node):
                self._node(el, id(el) in top, events)
            else:
                self._parameter(el, None, events)
        self._waiting_since = self._now if self._pending else None
        self._maybe_listed(events)

    def _node(self, node: Node, top: bool, events: list[Event]) -> None:
        path = node.path
        ident = node.contents.identifier if node.contents is not None else None
        w = self._walk
        # discovering the way down, by identifiers
        if w.tree is None and len(path) == 1 and ident == TREE:
            w.tree = path
            self._request(path)
        elif w.tree is not None and w.variables is None and path[:-1] == w.tree:
            if ident == VARIABLES:
                w.variables = path
                self._request(path)
        elif w.variables is not None and path[:-1] == w.variables and ident in KINDS:
            assert ident is not None
            if ident not in w.lists:
                w.lists[ident] = path
                self._request(path)
        if not top:
            return
        if not node.qualified:
            self._pending.pop((), None)  # numbered root elements answer the root
        if path not in self._pending:
            return
        # the answer to one of our GetDirectory requests (a root element with its path)
        del self._pending[path]
        for kind, list_path in w.lists.items():
            if path == list_path and kind not in w.listed:
                w.listed.add(kind)
                self._list(kind, node, events)
        var = self._by_node.get(path)
        if var is not None:
            var.loaded = True
            for c in node.children or []:
                if isinstance(c, Parameter):
                    self._parameter(c, var, events)
                    break

    def _list(self, kind: str, node: Node, events: list[Event]) -> None:
        count = 0
        for c in node.children or []:
            if not isinstance(c, Node) or c.contents is None or not c.contents.identifier:
                continue
            if count >= self.options.max_variables:
                self._problem("too-many-variables", f"more than {count} {kind}", events)
                break
            name = c.contents.identifier
            if (kind, name) in self._vars:
                continue
            count += 1
            var = _Var(kind, name, c.path)
            self._vars[(kind, name)] = var
            self._by_node[c.path] = var
            self._request(c.path)

    def _parameter(self, p: Parameter, var: _Var | None, events: list[Event]) -> None:
        if var is None:
            var = self._by_param.get(p.path) or self._by_node.get(p.path[:-1])
            if var is None:
                return
        if var.param_path is None:
            var.param_path = p.path
            self._by_param[p.path] = var
            self._out += s101.encode_ember(glow.command_at(p.path, CommandType.SUBSCRIBE))
        elif var.param_path != p.path:
            return
        c = p.contents
        if c is None:
            return
        if c.type is not None:
            var.type = c.type
        if not c.has_value:
            return
        value = to_json(c.value)
        if isinstance(value, str) and len(value) > self.options.max_value_chars:
            self._problem("value-too-long", f"{var.kind}:{var.name}", events)
            return
        changed = type(value) is not type(var.value) or value != var.value
        var.value = value
        if self.listed and changed:
            events.append(VariableChanged(var.kind, var.name, value))

    def _maybe_listed(self, events: list[Event]) -> None:
        if self.listed or len(self._walk.listed) < len(KINDS):
            return
        if any(not v.loaded for v in self._vars.values()):
            return
        self.listed = True
        self._next_probe = self._now + self.options.probe_interval
        for kind in KINDS:
            events.append(VariablesListed(kind, self.values(kind)))
