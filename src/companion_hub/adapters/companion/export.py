"""Export: hub state into Companion custom variables.

A Companion user wants other applications' state on buttons (a tally app's "live"
flag, a stage timer's remaining time). Companion shows custom variables on buttons
(``$(custom:<name>)``) and in feedbacks, and its documented way to set one from
outside is the HTTP API (``POST /api/custom-variable/<name>/value``), which needs no
Ember+ and no module. So the adapter writes selected hub keys there.

The pieces, pure first:

- :class:`ExportRule`: one ``[[companion.export]]`` table. ``key`` is a hub key or a
  pattern with ``*`` segments; ``variable`` names the custom variable, where ``<1>``
  is replaced by the key segment the first ``*`` matched, ``<2>`` the second, and so
  on (a pattern must use each of its ``*``, so two keys of one rule never share a
  variable).
- :func:`value_text`: a JSON value as the text Companion shows (strings as they are,
  numbers as text with integers without ``.0``, ``true``/``false``, null as ``""``,
  objects and arrays as compact JSON; or the configured ``field`` of an object).
- :class:`ExportQueue`: per variable the newest text wanted and what Companion is
  known to have. Not a queue of writes: a change to a variable that is already
  waiting or being written only replaces the text wanted, so intermediate values are
  skipped and the last one always goes out. At most one write per variable is in
  flight, and a variable is written at most every :data:`MIN_INTERVAL` seconds, so
  a key changing a thousand times a second costs about twenty writes a second.
- :class:`Exporter`: the runtime. A store listener (removed on stop) feeds the
  queue; a task (under the adapter's supervisor) writes through the adapter's HTTP
  link while it is up, up to :data:`MAX_IN_FLIGHT` writes at a time.

**No loops.** The adapter never exports keys of its own namespace, nor its own
``hub.adapters.<name>`` status: a custom variable it exports is also what it may
poll into ``<ns>.variables.custom.<name>``, and exporting that back would write
Companion's value into Companion. The configuration refuses rules that can only
match there; a pattern that could also match them (``*.x``) skips them at run time.

**Stale and deleted.** A key that turns stale (its owner went away) writes the rule's
``stale_text``; a deleted key writes ``deleted_text``. An exact key that does not
exist when the adapter starts writes ``deleted_text`` too.

**Re-export.** When the HTTP link comes back up, and when Companion restarted (its
uptime went back), every variable is written again: Companion may have lost or
changed it meanwhile.

**Missing variables.** Companion cannot create a custom variable over HTTP: a write
to one that does not exist is refused (404). The variable is then listed in
``hub.adapters.<name>`` (``export.missing`` with a ``hint``), logged once with the fix
("create custom variable X in Companion"), and not written again until Companion
reconnects or restarts, or :data:`RETRY_MISSING` seconds have passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import Enum
from typing import TYPE_CHECKING, Any

import msgspec

from ...core.errors import HubError
from ...core.keys import GLOBSTAR, STAR, Pattern, compile_patterns, literal_prefix, parse_pattern
from ...logs import Throttle
from .http import HttpError

if TYPE_CHECKING:
    from ...core.store import Change, Entry, Store
    from .http import CompanionHttp

__all__ = [
    "ExportQueue",
    "ExportRule",
    "Exporter",
    "WriteResult",
    "check_rules",
    "value_text",
]

log = logging.getLogger("companion_hub.adapters.companion")
_throttled = Throttle(log, interval=10.0)

MIN_INTERVAL = 0.05  # seconds between two writes of one variable (newest value wins)
RETRY_FAILED = 2.0  # seconds before a write that failed (not a 404) is tried again
RETRY_MISSING = 30.0  # seconds between tries of variables Companion does not have
MAX_IN_FLIGHT = 8  # writes in flight at a time (one per variable at most)
MAX_REPORTED = 20  # missing variables named in hub.adapters.<name>

_PLACEHOLDER = re.compile(r"<(\d+)>")
_VAR_CHARS = re.compile(r"[A-Za-z0-9_-]*")
_MAX_SAFE_INT = 2**53


# --- the rules (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRule:
    """One ``[[companion.export]]``: a key or pattern -> a custom variable.

    Raises :class:`ValueError` (naming the setting) when the rule is invalid.
    """

    key: str
    variable: str
    field: str | None = None  # a member (or dotted path) of an object value
    stale_text: str = "?"
    deleted_text: str | None = None  # None: the same as stale_text
    pattern: Pattern = dc_field(init=False, repr=False, compare=False)
    exact: bool = dc_field(init=False, repr=False, compare=False)
    _rx: re.Pattern[str] = dc_field(init=False, repr=False, compare=False)
    # the variable template split: literal text and placeholder numbers (0-based)
    _parts: tuple[str | int, ...] = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            pattern = parse_pattern(self.key)
        except HubError as exc:
            raise ValueError(f"key {self.key!r}: {exc.message}") from None
        if GLOBSTAR in pattern:
            raise ValueError(
                f"key {self.key!r}: '**' is not allowed in an export; use '*' segments "
                "(each names a part of the variable: <1>, <2>, ...)"
            )
        stars = pattern.count(STAR)
        parts = _parse_template(self.variable, stars)
        used = {p for p in parts if isinstance(p, int)}
        if len(used) != stars:
            unused = ", ".join(f"<{i + 1}>" for i in range(stars) if i not in used)
            raise ValueError(
                f"variable {self.variable!r}: key {self.key!r} has {stars} '*'; the "
                f"variable must use each of them ({unused} missing), so that two keys "
                "never write the same variable"
            )
        if self.field is not None and (not self.field or any(not s for s in self.field.split("."))):
            raise ValueError(f"field {self.field!r}: a member name (or a dotted path a.b)")
        rx = r"\.".join("([^.]+)" if s == STAR else re.escape(s) for s in pattern)
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "exact", stars == 0)
        object.__setattr__(self, "_rx", re.compile(rx))
        object.__setattr__(self, "_parts", parts)

    @property
    def deleted(self) -> str:
        return self.stale_text if self.deleted_text is None else self.deleted_text

    def variable_for(self, key: str) -> str | None:
        """The custom variable ``key`` is exported to, or None if the rule does not
        match it."""
        m = self._rx.fullmatch(key)
        if m is None:
            return None
        if self.exact:
            return self.variable
        groups = m.groups()
        return "".join(p if isinstance(p, str) else groups[p] for p in self._parts)

    def text(self, entry: Entry | None) -> str:
        """The text to write for the key's state (None: the key does not exist)."""
        if entry is None:
            return self.deleted
        if entry.stale:
            return self.stale_text
        return value_text(msgspec.json.decode(entry.raw), self.field)


def _parse_template(template: str, stars: int) -> tuple[str | int, ...]:
    """``"tally_<1>"`` -> ``("tally_", 0)``; ValueError if it cannot give a valid
    Companion custom variable name (``[A-Za-z0-9_-]+``) or names a ``*`` the key lacks.
    Key segments are ``[A-Za-z0-9_-]`` themselves, so every substitution is valid."""
    if not template:
        raise ValueError("variable: empty (a Companion custom variable name is required)")
    parts: list[str | int] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(template[pos : m.start()])
        n = int(m.group(1))
        if not 1 <= n <= stars:
            have = f"only {stars} '*'" if stars else "no '*'"
            raise ValueError(f"variable {template!r}: <{n}> but the key has {have}")
        parts.append(n - 1)
        pos = m.end()
    parts.append(template[pos:])
    for p in parts:
        if isinstance(p, str) and _VAR_CHARS.fullmatch(p) is None:
            raise ValueError(
                f"variable {template!r}: a Companion custom variable name has only "
                "letters, digits, '_' and '-' (placeholders: <1>, <2>, ...)"
            )
    return tuple(p for p in parts if p != "")


def check_rules(rules: Sequence[ExportRule], namespace: str, name: str) -> None:
    """The rules together, for an adapter owning ``namespace`` and named ``name``:
    ValueError for a rule that can only export the adapter's own keys (a loop), or
    two rules naming the same variable."""
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        where = f"export {i + 1} (key {rule.key!r})"
        prefix, _ = literal_prefix(rule.pattern)
        if prefix and (prefix == namespace or prefix.startswith(namespace + ".")):
            raise ValueError(
                f"{where}: the adapter's own namespace {namespace!r} is never exported "
                "(it mirrors Companion: that would write Companion's values back into it)"
            )
        if rule.exact and rule.key == f"hub.adapters.{name}":
            raise ValueError(f"{where}: the adapter's own status is never exported")
        if rule.variable in seen:
            raise ValueError(
                f"{where}: variable {rule.variable!r} is also written by "
                f"export {seen[rule.variable]}"
            )
        seen[rule.variable] = i + 1


# --- values as text (pure) ----------------------------------------------------------------


def value_text(value: Any, field: str | None = None) -> str:
    """A JSON value as the text of a custom variable.

    With ``field``: that member of an object (a dotted path walks nested objects);
    a value that is not an object, or lacks the member, gives ``""`` (as null).
    """
    if field is not None:
        for name in field.split("."):
            if not isinstance(value, dict) or name not in value:
                return ""
            value = value[name]
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    return msgspec.json.encode(value).decode()


def _number_text(x: float) -> str:
    """Like JavaScript's ``String(x)`` for the usual cases: ``2.0`` -> ``"2"``,
    ``0.1`` -> ``"0.1"``, ``1e-7`` -> ``"1e-7"``."""
    if not math.isfinite(x):
        return ""  # JSON has no such numbers; nothing sensible to show
    if x.is_integer() and abs(x) < _MAX_SAFE_INT:
        return str(int(x))
    text = repr(x)
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


# --- coalescing (pure) ----------------------------------------------------------------


class WriteResult(Enum):
    OK = "ok"
    MISSING = "missing"  # Companion has no such custom variable (404)
    FAILED = "failed"  # anything else: retried after RETRY_FAILED


class ExportQueue:
    """Per variable: the newest text wanted and the text Companion is known to have.

    ``set`` only records the newest text; ``take`` hands out the variables to write
    now (oldest first, at most one write in flight per variable, each variable at
    most every ``min_interval`` seconds), ``done`` records the outcome. Memory is
    bounded by the number of variables, never by the rate of changes.
    """

    def __init__(self, min_interval: float = MIN_INTERVAL, retry_after: float = RETRY_FAILED):
        self.min_interval = min_interval
        self.retry_after = retry_after
        self._want: dict[str, str] = {}
        self._confirmed: dict[str, str] = {}  # what Companion has (as far as known)
        # waiting to be written, not in flight; an OrderedDict (see mqtt/outbox.py)
        self._dirty: OrderedDict[str, None] = OrderedDict()
        self._in_flight: dict[str, tuple[str, int]] = {}  # var -> (text, epoch)
        self._due: dict[str, float] = {}  # var -> earliest time of its next write
        self.missing: dict[str, None] = {}  # refused with 404 (reported until written)
        self._parked: set[str] = set()  # of missing: not tried again until a retry
        self.epoch = 0  # +1 at each resend_all: older writes prove nothing
        self.changes = 0
        self.writes = 0

    def __len__(self) -> int:
        """The number of variables known."""
        return len(self._want)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def pending(self) -> int:
        """Variables waiting to be written (not in flight, not parked)."""
        return len(self._dirty)

    def wanted(self, var: str) -> str | None:
        return self._want.get(var)

    def set(self, var: str, text: str) -> bool:
        """The newest text of ``var``; True if the variable was not known before."""
        self.changes += 1
        new = var not in self._want
        self._want[var] = text
        self._consider(var)
        return new

    def drop(self, var: str) -> None:
        """Forget ``var`` (its write in flight, if any, is then ignored)."""
        self._want.pop(var, None)
        self._confirmed.pop(var, None)
        self._dirty.pop(var, None)
        self._due.pop(var, None)
        self.missing.pop(var, None)
        self._parked.discard(var)

    def _consider(self, var: str) -> None:
        if var in self._in_flight or var in self._parked:
            return  # done() or a retry looks at it again
        if self._confirmed.get(var) == self._want[var]:
            self._dirty.pop(var, None)
        elif var not in self._dirty:
            self._dirty[var] = None

    def take(self, now: float, n: int) -> tuple[list[tuple[str, str]], float | None]:
        """Up to ``n`` writes ``(variable, text)`` to start now, and the time the next
        waiting variable becomes due (None: none waits for its interval)."""
        out: list[tuple[str, str]] = []
        next_due: float | None = None
        if n <= 0:
            return out, None
        due = self._due
        for var in self._dirty:
            t = due.get(var, 0.0)
            if t > now:
                next_due = t if next_due is None else min(next_due, t)
                continue
            out.append((var, self._want[var]))
            if len(out) >= n:
                break
        for var, text in out:
            del self._dirty[var]
            self._in_flight[var] = (text, self.epoch)
            due[var] = now + self.min_interval
        self.writes += len(out)
        return out, next_due

    def done(self, var: str, result: WriteResult, now: float) -> None:
        """The write of ``var`` (from :meth:`take`) ended with ``result``."""
        flight = self._in_flight.pop(var, None)
        if flight is None or var not in self._want:
            return
        text, epoch = flight
        current = epoch == self.epoch
        if result is WriteResult.OK:
            if current:
                self._confirmed[var] = text
            self.missing.pop(var, None)
        elif result is WriteResult.MISSING:
            self._confirmed.pop(var, None)
            self.missing[var] = None
            if current:
                self._parked.add(var)
        else:
            self._confirmed.pop(var, None)
            self._due[var] = now + self.retry_after
        self._consider(var)

    def resend_all(self) -> None:
        """Companion may have lost or changed everything: write every variable again,
        missing ones included, at once."""
        self.epoch += 1
        self._confirmed.clear()
        self._due.clear()
        self._parked.clear()
        for var in self._want:
            self._consider(var)

    def retry_missing(self) -> None:
        """Try the variables Companion refused again (maybe they exist now)."""
        parked, self._parked = self._parked, set()
        for var in parked:
            if var in self._want:
                self._consider(var)


# --- the runtime --------------------------------------------------------------------------


class Exporter:
    """Store changes -> :class:`ExportQueue` -> ``set_custom_variable`` over HTTP.

    ``http()`` gives the adapter's HTTP client while its link is up (else None);
    ``publish()`` republishes ``hub.adapters.<name>`` (never called from inside a
    store listener: the task calls it).
    """

    def __init__(
        self,
        store: Store,
        rules: Sequence[ExportRule],
        *,
        name: str,
        namespace: str,
        http: Callable[[], CompanionHttp | None],
        publish: Callable[[], None],
        retry_missing: float = RETRY_MISSING,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.rules = list(rules)
        self.name = name
        self.namespace = namespace
        self.status_key = f"hub.adapters.{name}"
        self._http = http
        self._publish = publish
        self.retry_missing_every = retry_missing
        self.max_in_flight = max_in_flight
        self.queue = ExportQueue()
        self._any = compile_patterns([r.pattern for r in self.rules])
        self._wake = asyncio.Event()
        self._status_changed = False
        self._logged_missing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Listen to the store and load what it holds now (written once the link is up)."""
        if not self._listening:
            self.store.add_listener(self._on_change)
            self._listening = True
        for rule in self.rules:
            if rule.exact:
                entry = self.store.get(rule.key)
                if entry is None or not self._skip(entry.key, entry.owner):
                    self.queue.set(rule.variable, rule.text(entry))
                continue
            for entry in self.store.matching([rule.pattern]):
                var = rule.variable_for(entry.key)
                if var is not None and not self._skip(entry.key, entry.owner):
                    self.queue.set(var, rule.text(entry))
        self._wake.set()

    def stop(self) -> None:
        if self._listening:
            self.store.remove_listener(self._on_change)
            self._listening = False
        for task in self._tasks:
            task.cancel()

    def resync(self, why: str) -> None:
        """The HTTP link came (back) up or Companion restarted: write everything again."""
        if len(self.queue):
            log.info(
                "exporting every variable to Companion again",
                extra={"adapter": self.name, "why": why, "variables": len(self.queue)},
            )
        self.queue.resend_all()
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """The ``export`` field of ``hub.adapters.<name>`` (stable between changes of
        the variables known or missing: no counters)."""
        missing = list(self.queue.missing)
        out: dict[str, Any] = {"variables": len(self.queue), "missing": missing[:MAX_REPORTED]}
        if len(missing) > MAX_REPORTED:
            out["missing_count"] = len(missing)
        if missing:
            names = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            noun = "variable" if len(missing) == 1 else "variables"
            out["hint"] = (
                f"create custom {noun} {names} in Companion (Variables > Custom variables)"
            )
        return out

    # --- store changes (synchronous, inside the commit: cheap, no store writes) -------

    def _skip(self, key: str, owner: str) -> bool:
        """Keys never exported: the adapter's own namespace and its own status."""
        return owner == self.namespace or key == self.status_key

    def _on_change(self, change: Change) -> None:
        key = change.key
        if self._any.fullmatch(key) is None or self._skip(key, change.owner):
            return
        queue = self.queue
        for rule in self.rules:
            var = rule.variable_for(key)
            if var is None:
                continue
            if change.entry is None and not rule.exact and var in queue.missing:
                # a key that came and went, whose variable Companion never had
                queue.drop(var)
                self._status_changed = True
            elif queue.set(var, rule.text(change.entry)):
                self._status_changed = True
        self._wake.set()

    # --- the writer task ----------------------------------------------------------

    async def run(self) -> None:
        """Write what the queue hands out while the HTTP link is up (forever)."""
        loop = asyncio.get_running_loop()
        queue = self.queue
        next_retry = loop.time() + self.retry_missing_every
        try:
            while True:
                self._wake.clear()
                if self._status_changed:
                    self._status_changed = False
                    self._publish()
                now = loop.time()
                if now >= next_retry:
                    queue.retry_missing()
                    next_retry = now + self.retry_missing_every
                timeout = next_retry - now
                http = self._http()
                if http is not None:
                    writes, due = queue.take(now, self.max_in_flight - queue.in_flight)
                    for var, text in writes:
                        task = loop.create_task(self._write(http, var, text))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    if due is not None:
                        timeout = min(timeout, max(0.0, due - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.001, timeout))
        finally:
            for task in self._tasks:
                task.cancel()

    async def _write(self, http: CompanionHttp, var: str, text: str) -> None:
        result = WriteResult.FAILED
        try:
            await http.set_custom_variable(var, text)
            result = WriteResult.OK
        except HttpError as exc:
            if exc.status == 404:
                result = WriteResult.MISSING
            else:
                _throttled.warning(
                    f"export-failed:{self.name}",
                    "could not set a Companion custom variable; retrying",
                    adapter=self.name,
                    variable=var,
                    error=str(exc)[:300],
                )
        except Exception:  # not expected: say so, retry later like any failure
            log.exception("exporting a Companion custom variable failed", extra={"variable": var})
        finally:
            was_missing = var in self.queue.missing
            self.queue.done(var, result, asyncio.get_running_loop().time())
            self._wake.set()
        if result is WriteResult.MISSING:
            if not was_missing:
                self._status_changed = True
            if var not in self._logged_missing:
                self._logged_missing.add(var)
                log.warning(
                    f"create custom variable {var} in Companion (Variables > Custom "
                    "variables): Companion refuses to set a custom variable that does not "
                    "exist, so the hub cannot export to it",
                    extra={"adapter": self.name, "variable": var},
                )
        elif result is WriteResult.OK and was_missing:
            self._status_changed = True
            self._logged_missing.discard(var)
            log.info(
                "Companion custom variable exists now: exported",
                extra={"adapter": self.name, "variable": var},
            )
