"""The simulated Companion's Ember+ provider (TCP 9092 in Companion).

The tree, as Companion 5.1 serves it::

    0          Companion Tree
    0.0          identity: product, company, version, build (parameters)
    0.1, 0.2     pages, location (empty here: the simulator serves no buttons over Ember+)
    0.3          variables
    0.3.1          internal: one node per internal variable, in a fixed order
    0.3.2          custom: one node per custom variable, in creation order
    0.3.k.i.1        the value parameter, named after its type ("string", "integer")
    0.4          action recorder (two boolean parameters, for the shape only)

Each variable node's only child is numbered 1 and holds the value. Custom values are
STRING and READ_WRITE (description "A custom variable"); internal ones are READ and
typed from their value when the tree is built. At the first build every value is a
STRING (Companion builds its tree before its internal values exist); after a rebuild
numbers are INTEGER and booleans BOOLEAN.

The rules reproduced, as the provider library Companion uses behaves:

- GetDirectory on an element answers it (qualified) with its children, one level;
  on the root, the root node alone. It also subscribes the connection to that path.
- A changed value is pushed, as a QualifiedParameter, to the connections subscribed to
  the path of the parameter's parent (the variable node), at once.
- A write of a custom value sets the variable (HTTP reads see it, subscribers get the
  push) and is answered with the parameter; a write to a READ parameter is answered
  with the current value and changes nothing.
- A new custom variable rebuilds the provider after a debounce (2.5 s, at most 10 s
  while variables keep being created): the listener is reopened on the same port,
  and the connections open at that moment stay open but are abandoned: keep-alives
  are still answered, requests are not, and nothing more is pushed.

:class:`EmberProvider` and :class:`EmberSession` are sans I/O (the session takes bytes
and queues bytes); :class:`EmberServer` is the asyncio driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from companion_hub.adapters.companion.ember import glow, s101
from companion_hub.adapters.companion.ember.ber import BerError
from companion_hub.adapters.companion.ember.glow import (
    Access,
    Command,
    CommandType,
    Node,
    NodeContents,
    Parameter,
    ParameterContents,
    ParameterType,
)

from .listen import listen_socket
from .model import UNDEFINED, value_text

if TYPE_CHECKING:
    from .state import CompanionState

log = logging.getLogger("companion_hub.simulator")

# the internal variables the simulator computes, in the order the tree lists them
INTERNAL_VARIABLES: tuple[tuple[str, str], ...] = (
    ("date_iso", "Date (YYYY-MM-DD)"),
    ("instance_errors", "Number of connections with errors"),
    ("instance_warns", "Number of connections with warnings"),
    ("instance_oks", "Number of connections which are OK"),
    ("instance_disabled", "Number of connections which are disabled"),
    ("time_hms", "Time of day (HH:MM:SS)"),
    ("time_hm", "Time of day (HH:MM)"),
    ("time_h", "Time of day (HH)"),
    ("time_m", "Time of day (MM)"),
    ("time_s", "Time of day (ss)"),
    ("time_unix", "Timestamp (s)"),
    ("uptime", "Uptime (s)"),
)
CUSTOM_DESCRIPTION = "A custom variable"
VARIABLES_PATH = (0, 3)
KIND_NUMBER = {"internal": 1, "custom": 2}
VALUE_NUMBER = 1
DEFAULT_REBUILD_DELAY = 2.5
MAX_REBUILD_DELAY = 10.0

_TYPE_NAMES = {
    ParameterType.STRING: "string",
    ParameterType.INTEGER: "integer",
    ParameterType.BOOLEAN: "boolean",
    ParameterType.REAL: "real",
}


def _typed(value: Any, strings: bool) -> tuple[ParameterType, glow.Value]:
    """A value's Ember+ type and wire value at build time."""
    if not strings:
        if isinstance(value, bool):
            return ParameterType.BOOLEAN, value
        if isinstance(value, int):
            return ParameterType.INTEGER, value
        if isinstance(value, float):
            return ParameterType.REAL, value
    return ParameterType.STRING, value_text(value) or ""


def _convert(value: Any, ptype: int | None) -> glow.Value:
    """A new value in the type the parameter was built with."""
    if value is UNDEFINED:
        value = None
    if ptype == ParameterType.INTEGER:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        try:
            return int(float(str(value)))
        except (TypeError, ValueError):
            return 0
    if ptype == ParameterType.REAL:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return 0.0
    if ptype == ParameterType.BOOLEAN:
        return bool(value)
    return value_text(value) or ""


@dataclass
class _Variable:
    kind: str
    name: str
    node: Node
    param: Parameter


class EmberProvider:
    """The tree of one build, its live sessions, pushes and writes (no I/O)."""

    def __init__(self, state: CompanionState, *, version: str = "5.1.0", build: str = "") -> None:
        self.state = state
        self.version = version
        self.build_id = build
        self.builds = 0
        self.sessions: set[EmberSession] = set()
        self.on_new_variable: Callable[[], None] | None = None  # the driver debounces
        self._index: dict[tuple[int, ...], Node | Parameter] = {}
        self._vars: dict[tuple[str, str], _Variable] = {}
        self._by_param: dict[tuple[int, ...], _Variable] = {}
        self.root = Node((0,))
        self.rebuild()

    # --- the tree -------------------------------------------------------------------

    def rebuild(self) -> None:
        """Build the tree from the state; the sessions open until now are abandoned."""
        strings = self.builds == 0
        self.builds += 1
        for session in self.sessions:
            session.abandoned = True
        self.sessions = set()
        self._vars.clear()
        self._by_param.clear()

        def node(path: tuple[int, ...], ident: str, desc: str | None = None) -> Node:
            return Node(path, NodeContents(ident, desc), [])

        def param(path: tuple[int, ...], ident: str, value: glow.Value, **kw: Any) -> Parameter:
            contents = ParameterContents(identifier=ident, value=value, has_value=True, **kw)
            return Parameter(path, contents)

        root = node((0,), "Companion Tree")
        identity = node((0, 0), "identity")
        assert identity.children is not None
        for i, (ident, value) in enumerate(
            (
                ("product", "Companion"),
                ("company", "Bitfocus AS"),
                ("version", self.version),
                ("build", self.build_id),
            )
        ):
            identity.children.append(
                param((0, 0, i), ident, value, type=ParameterType.STRING, access=Access.READ)
            )
        variables = node(VARIABLES_PATH, "variables")
        internal = node((*VARIABLES_PATH, 1), "internal", "Companion internal variables")
        custom = node((*VARIABLES_PATH, 2), "custom", "Companion custom variables")
        internal_list = [
            (name, desc, self.state.variable_value("internal", name))
            for name, desc in INTERNAL_VARIABLES
        ]
        custom_list = [
            (name, CUSTOM_DESCRIPTION, value) for name, value in self.state.custom_variables.items()
        ]
        for kind, parent, entries in (
            ("internal", internal, internal_list),
            ("custom", custom, custom_list),
        ):
            assert parent.children is not None
            for i, (name, desc, value) in enumerate(entries):
                vpath = (*parent.path, i)
                wire: glow.Value
                if kind == "custom":
                    ptype, wire = ParameterType.STRING, value_text(value) or ""
                    access = Access.READ_WRITE
                else:
                    ptype, wire = _typed(value, strings)
                    access = Access.READ
                vnode = node(vpath, name, desc)
                p = param(
                    (*vpath, VALUE_NUMBER),
                    _TYPE_NAMES[ptype],
                    wire,
                    description=desc,
                    type=ptype,
                    access=access,
                )
                assert vnode.children is not None
                vnode.children.append(p)
                parent.children.append(vnode)
                var = _Variable(kind, name, vnode, p)
                self._vars[(kind, name)] = var
                self._by_param[p.path] = var
        assert variables.children is not None and root.children is not None
        variables.children.extend([internal, custom])
        recorder = node((0, 4), "action recorder", "Action recorder controls")
        assert recorder.children is not None
        recorder.children.append(
            param((0, 4, 0), "Enable", False, type=ParameterType.BOOLEAN, access=Access.READ_WRITE)
        )
        recorder.children.append(
            param((0, 4, 1), "Discard", False, type=ParameterType.BOOLEAN, access=Access.WRITE)
        )
        root.children.extend(
            [identity, node((0, 1), "pages"), node((0, 2), "location"), variables, recorder]
        )
        self.root = root
        self._index = {el.path: el for el in glow.walk([root]) if not isinstance(el, Command)}

    def has(self, path: tuple[int, ...]) -> bool:
        return path in self._index

    def open_session(self) -> EmberSession:
        session = EmberSession(self)
        self.sessions.add(session)
        return session

    def close_session(self, session: EmberSession) -> None:
        self.sessions.discard(session)

    def variable_names(self, kind: str) -> list[str]:
        return [name for (k, name) in self._vars if k == kind]

    # --- changes --------------------------------------------------------------------

    def variables_changed(self, names: frozenset[str]) -> None:
        """The state's listener: push changed values; a new custom variable asks a rebuild."""
        for full in names:
            label, _, name = full.partition(":")
            if label == "internal" and name.startswith("custom_"):
                continue  # the same change arrives as custom:<name>
            if label not in ("internal", "custom"):
                continue
            var = self._vars.get((label, name))
            if var is None:
                if label == "custom" and name in self.state.custom_variables:
                    log.debug("ember: new custom variable, rebuild", extra={"name": name})
                    if self.on_new_variable is not None:
                        self.on_new_variable()
                continue
            contents = var.param.contents
            assert contents is not None
            value = _convert(self.state.variable_value(label, name), contents.type)
            if type(value) is type(contents.value) and value == contents.value:
                continue
            contents.value = value
            self._push(var)

    def _push(self, var: _Variable) -> None:
        data = self._qualified_param_frame(var.param)
        for session in self.sessions:
            if var.node.path in session.subscriptions:
                session.send(data)

    @staticmethod
    def _qualified_param_frame(p: Parameter) -> bytes:
        msg = glow.encode_root([Parameter(p.path, p.contents, None, qualified=True)])
        return s101.encode_ember(msg)

    # --- requests -------------------------------------------------------------------

    def directory(self, path: tuple[int, ...]) -> bytes | None:
        """The answer to GetDirectory on ``path`` (None: no such element, no answer)."""
        if not path:
            return glow.encode_root([Node((0,), self.root.contents, None)])
        el = self._index.get(path)
        if el is None:
            return None
        if isinstance(el, Parameter):
            return glow.encode_root([Parameter(path, el.contents, [], qualified=True)])
        if not el.children:
            return glow.encode_root([Node(path, None, None, qualified=True)])
        children: list[glow.Element] = []
        for c in el.children:
            if isinstance(c, Node):
                children.append(Node(c.path, c.contents, None))
            elif isinstance(c, Parameter):
                children.append(Parameter(c.path, c.contents, None))
        return glow.encode_root([Node(path, el.contents, children, qualified=True)])

    def write(self, path: tuple[int, ...], value: glow.Value) -> bytes | None:
        """A set-value request: the answer to send back (None: no such parameter)."""
        el = self._index.get(path)
        if not isinstance(el, Parameter):
            return None
        var = self._by_param.get(path)
        if var is not None and var.kind == "custom" and value is not None:
            self.state.set_custom_variable(var.name, value)  # pushes through the listener
        return self._qualified_param_frame(el)


class EmberSession:
    """One consumer connection (sans I/O): bytes in, bytes queued out."""

    def __init__(self, provider: EmberProvider) -> None:
        self.provider = provider
        self.decoder = s101.S101Decoder()
        self.subscriptions: set[tuple[int, ...]] = set()
        self.abandoned = False
        self.problems: dict[str, int] = {}
        self.on_output: Callable[[], None] | None = None
        self._out = bytearray()

    def send(self, data: bytes) -> None:
        self._out += data
        if self.on_output is not None:
            self.on_output()

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def _problem(self, kind: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1

    def receive_data(self, data: bytes) -> None:
        for msg in self.decoder.feed(data):
            if isinstance(msg, s101.KeepAliveRequest):
                self.send(s101.keepalive_response())
            elif isinstance(msg, s101.EmberMessage) and not self.abandoned:
                try:
                    root = glow.decode_root(msg.payload)
                except BerError:
                    self._problem("bad-glow")
                    continue
                for el in root.elements:
                    if isinstance(el, Command):
                        self._command((), el)
                    else:
                        self._element(el)

    def _element(self, el: Node | Parameter) -> None:
        children = el.children or []
        if children and isinstance(children[0], Command):
            self._command(el.path, children[0])
            return
        if isinstance(el, Parameter) and not children:
            if el.contents is not None and el.contents.has_value:
                answer = self.provider.write(el.path, el.contents.value)
                if answer is not None:
                    self.send(answer)
            return
        for c in children:
            if not isinstance(c, Command):
                self._element(c)

    def _command(self, path: tuple[int, ...], cmd: Command) -> None:
        if path and not self.provider.has(path):
            return
        if cmd.number == CommandType.GET_DIRECTORY:
            self.subscriptions.add(path)
            answer = self.provider.directory(path)
            if answer is not None:
                self.send(s101.encode_ember(answer))
        elif cmd.number == CommandType.SUBSCRIBE:
            self.subscriptions.add(path)
        elif cmd.number == CommandType.UNSUBSCRIBE:
            self.subscriptions.discard(path)


class EmberServer:
    """The asyncio driver: the listener, one reader and writer per connection, rebuilds."""

    def __init__(
        self,
        state: CompanionState,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        version: str = "5.1.0",
        rebuild_delay: float = DEFAULT_REBUILD_DELAY,
        max_rebuild_delay: float = MAX_REBUILD_DELAY,
    ) -> None:
        self.host = host
        self.port = port
        self.rebuild_delay = rebuild_delay
        self.max_rebuild_delay = max_rebuild_delay
        self.provider = EmberProvider(state, version=version)
        self.provider.on_new_variable = self._schedule_rebuild
        self._state = state
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._rebuild_timer: asyncio.TimerHandle | None = None
        self._rebuild_first: float | None = None
        self.rebuilds = 0

    async def start(self) -> None:
        self._state.add_variable_listener(self.provider.variables_changed)
        await self._listen()
        log.info("ember+ provider listening", extra={"port": self.port})

    async def _listen(self) -> None:
        sock = listen_socket(self.host, self.port, "--ember-port")
        self._server = await asyncio.start_server(self._on_connection, sock=sock)
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        self._state.remove_variable_listener(self.provider.variables_changed)
        if self._rebuild_timer is not None:
            self._rebuild_timer.cancel()
            self._rebuild_timer = None
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def _schedule_rebuild(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._rebuild_first is None:
            self._rebuild_first = now
        if self._rebuild_timer is not None:
            self._rebuild_timer.cancel()
        delay = min(self.rebuild_delay, self._rebuild_first + self.max_rebuild_delay - now)
        self._rebuild_timer = loop.call_later(max(0.0, delay), self._start_rebuild)

    def _start_rebuild(self) -> None:
        self._rebuild_timer = None
        self._rebuild_first = None
        asyncio.get_running_loop().create_task(self.rebuild())

    async def rebuild(self) -> None:
        """Rebuild the tree and reopen the listener; open connections are abandoned."""
        if self._server is not None:
            self._server.close()  # the open connections stay
            self._server = None
        self.provider.rebuild()
        self.rebuilds += 1
        await self._listen()
        log.info("ember+ provider rebuilt", extra={"port": self.port})

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = self.provider.open_session()
        wake = asyncio.Event()
        session.on_output = wake.set
        self._writers.add(writer)

        async def write_loop() -> None:
            while True:
                await wake.wait()
                wake.clear()
                data = session.data_to_send()
                if data:
                    writer.write(data)
                    await writer.drain()

        writing = asyncio.get_running_loop().create_task(write_loop())
        try:
            while not writing.done():
                data = await reader.read(65536)
                if not data:
                    break
                session.receive_data(data)
        except (ConnectionError, OSError):
            pass
        finally:
            writing.cancel()
            with contextlib.suppress(BaseException):
                await writing
            self.provider.close_session(session)
            self._writers.discard(writer)
            writer.transport.abort()
