"""The token file: named bearer tokens, each bound to a client name (or a pattern of
client names) and a role. Only a salted scrypt hash of each token is stored.

A token, as handed to the user once by :meth:`TokenStore.add`, looks like::

    chub_<id>_<secret>      e.g. chub_3f9a1c0b7d2e_Jx8...  (secret: token_urlsafe(32))

``<id>`` is public (it only finds the entry); ``<secret>`` is 43 URL-safe characters
(256 random bits). The file (JSON, mode 0600, written atomically)::

    {
      "version": 1,
      "tokens": [
        {
          "id": "3f9a1c0b7d2e",            # 8-64 lowercase hex characters, unique
          "name": "tally",                 # unique, [a-z0-9][a-z0-9_-]{0,62}
          "client": "tally-*",             # the client name(s) it may connect as
          "role": "app",                   # a role name (checked by the hub)
          "kdf": {"name": "scrypt", "n": 16384, "r": 8, "p": 1},
          "salt": "<32 hex: 16 random bytes>",
          "hash": "<64 hex: scrypt(token, salt, n, r, p, dklen=32)>",
          "created": "2024-11-27T09:33:19Z"  # ISO 8601, UTC
        }
      ]
    }

The hashed password is the whole token string (``chub_<id>_<secret>``, ASCII). Each
entry records the scrypt parameters it was made with, and verification uses those,
so the defaults can change without invalidating existing tokens.

``client`` is a client name or a pattern in which ``*`` stands for any run (possibly
empty) of client-name characters, matched against the whole name: ``tally-*`` allows
``tally-1`` and ``tally-cam-2``; ``*`` allows any client name.

Unknown fields, a wrong ``version``, duplicate ids or names and out-of-range scrypt
parameters make the whole file invalid (:class:`TokenFileError`); error messages name
the file, the entry and the problem, never a value that could be a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.errors import CompanionHubError
from ..core.keys import is_valid_client_name

__all__ = [
    "DEFAULT_KDF",
    "FILE_VERSION",
    "TOKEN_PREFIX",
    "KdfParams",
    "TokenEntry",
    "TokenError",
    "TokenFileError",
    "TokenStore",
    "is_valid_client_pattern",
    "token_id",
]

log = logging.getLogger("companion_hub.auth")

FILE_VERSION = 1
TOKEN_PREFIX = "chub_"
ID_HEX_CHARS = 12  # of new tokens (48 bits); the file accepts 8-64
SALT_BYTES = 16
HASH_BYTES = 32
MAX_FILE_BYTES = 16 * 1024 * 1024

_ID_RE = re.compile(r"[0-9a-f]{8,64}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{16,256}")
_MAX_TOKEN_CHARS = len(TOKEN_PREFIX) + 64 + 1 + 256
_PATTERN_RE = re.compile(r"[a-z0-9*][a-z0-9_*-]{0,62}")
_HEX_RE = re.compile(r"(?:[0-9a-f]{2})+")
_CLIENT_RUN = "[a-z0-9_-]*"
_ENTRY_FIELDS = frozenset({"id", "name", "client", "role", "kdf", "salt", "hash", "created"})
_NAME_RULE = "[a-z0-9][a-z0-9_-]{0,62}"

# scrypt's bounds for parameters read from a file (a hand-edited file must not make
# each verification take minutes or gigabytes)
_MAX_N = 1 << 20
_MAX_R = 32
_MAX_P = 16
_MAX_MEM = 256 * 1024 * 1024  # bytes, 128 * r * n
_MAX_WORK = 1 << 24  # n * r * p (the default is 1 << 17)


class TokenError(CompanionHubError):
    """A token operation was refused (an invalid name, role or client pattern, a
    duplicate name). The message never contains a token."""


class TokenFileError(TokenError):
    """The token file cannot be read or written, or is malformed. The message names the
    file and the problem, never a secret."""


@dataclass(frozen=True)
class KdfParams:
    """scrypt's cost parameters (``n`` a power of two, ``r`` block size, ``p``
    parallelism)."""

    n: int
    r: int = 8
    p: int = 1

    def check(self) -> None:
        """ValueError (with a message naming the problem) unless the parameters are in
        range."""
        for k in ("n", "r", "p"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k} must be a positive integer")
        if self.n < 2 or self.n & (self.n - 1) or self.n > _MAX_N:
            raise ValueError(f"n must be a power of two from 2 to {_MAX_N}")
        if self.r > _MAX_R or self.p > _MAX_P:
            raise ValueError(f"r must be at most {_MAX_R}, p at most {_MAX_P}")
        if 128 * self.r * self.n > _MAX_MEM or self.n * self.r * self.p > _MAX_WORK:
            raise ValueError("n, r and p ask for too much memory or time")

    def derive(self, password: bytes, salt: bytes) -> bytes:
        # OpenSSL needs 128 * r * (n + p + 2) bytes; leave a margin
        maxmem = 128 * self.r * (self.n + self.p + 2) + (1 << 20)
        return hashlib.scrypt(
            password, salt=salt, n=self.n, r=self.r, p=self.p, maxmem=maxmem, dklen=HASH_BYTES
        )

    def to_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p}

    @classmethod
    def from_json(cls, obj: object) -> KdfParams:
        """ValueError unless ``obj`` is ``{"name": "scrypt", "n": .., "r": .., "p": ..}``
        with parameters in range."""
        if not isinstance(obj, dict):
            raise ValueError("expected an object")
        if obj.get("name") != "scrypt":
            raise ValueError("name must be 'scrypt'")
        unknown = sorted(set(obj) - {"name", "n", "r", "p"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        if not all(k in obj for k in ("n", "r", "p")):
            raise ValueError("n, r and p are required")
        params = cls(n=obj["n"], r=obj["r"], p=obj["p"])
        params.check()
        return params


# The cost of new tokens. n=16384, r=8, p=1 (16 MiB of memory) took 29-45 ms per
# verification on the development machine (2 vCPUs, CPython 3.11, OpenSSL's scrypt;
# TokenStore.verify: median 29 ms, the same for a wrong, unknown or malformed token);
# n=8192 took 16-24 ms, n=32768 91-94 ms. Tests may replace this (e.g. with
# KdfParams(n=1024)) or pass ``kdf=`` to TokenStore; the file records the parameters
# of each token, and verification always uses the recorded ones.
DEFAULT_KDF = KdfParams(n=16384, r=8, p=1)


def is_valid_client_pattern(pattern: object) -> bool:
    """A client name in which ``*`` may stand for any run of client-name characters."""
    return isinstance(pattern, str) and _PATTERN_RE.fullmatch(pattern) is not None


def _client_regex(pattern: str) -> re.Pattern[str] | None:
    if "*" not in pattern:
        return None
    parts = re.split(r"(\*+)", pattern)
    return re.compile("".join(_CLIENT_RUN if p.startswith("*") else re.escape(p) for p in parts))


def token_id(token: object) -> str | None:
    """The id part of a well-formed token string, else None (no exception, no logging:
    the argument may be a secret)."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        return None
    if not token.startswith(TOKEN_PREFIX):
        return None
    tid, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or _ID_RE.fullmatch(tid) is None or _SECRET_RE.fullmatch(secret) is None:
        return None
    return tid


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TokenEntry:
    """One token of the file, without its secret. ``name`` is what the hub reports and
    logs (``Identity.token``); ``client`` a client name or pattern; ``role`` a role
    name; ``created`` ISO 8601 UTC. ``salt``, ``digest`` and ``kdf`` are internals."""

    id: str
    name: str
    client: str
    role: str
    created: str
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    kdf: KdfParams = field(repr=False)
    _client_rx: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_client_rx", _client_regex(self.client))

    @property
    def is_pattern(self) -> bool:
        return self._client_rx is not None

    def allows_client(self, client: str) -> bool:
        """Whether a connection with this token may call itself ``client``: the same
        name, or a full match of the pattern (``*``: any run of client-name
        characters). A string that is not a valid client name never matches."""
        if not is_valid_client_name(client):
            return False
        rx = self._client_rx
        return client == self.client if rx is None else rx.fullmatch(client) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "client": self.client,
            "role": self.role,
            "kdf": self.kdf.to_json(),
            "salt": self.salt.hex(),
            "hash": self.digest.hex(),
            "created": self.created,
        }


def _check_fields(name: str, role: str, client: str) -> None:
    if not is_valid_client_name(name):
        raise TokenError(f"token name: must match {_NAME_RULE}")
    if not is_valid_client_name(role):
        raise TokenError(f"token {name!r}: role: must match {_NAME_RULE}")
    if not is_valid_client_pattern(client):
        raise TokenError(
            f"token {name!r}: client: a client name ({_NAME_RULE}), '*' standing for any "
            "run of its characters"
        )


def _parse_hex(obj: Mapping[str, Any], key: str, min_bytes: int) -> bytes:
    v = obj.get(key)
    if not isinstance(v, str) or _HEX_RE.fullmatch(v) is None or len(v) < 2 * min_bytes:
        raise ValueError(f"{key}: expected at least {min_bytes} bytes as lowercase hex")
    return bytes.fromhex(v)


def _parse_entry(obj: object) -> TokenEntry:
    """ValueError naming the field; never echoes a value that failed validation."""
    if not isinstance(obj, dict):
        raise ValueError("expected an object")
    unknown = sorted(k for k in obj if k not in _ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    missing = sorted(_ENTRY_FIELDS - set(obj))
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    tid, name, client, role, created = (
        obj["id"],
        obj["name"],
        obj["client"],
        obj["role"],
        obj["created"],
    )
    if not isinstance(tid, str) or _ID_RE.fullmatch(tid) is None:
        raise ValueError("id: expected 8-64 lowercase hex characters")
    if not is_valid_client_name(name):
        raise ValueError(f"name: must match {_NAME_RULE}")
    if not is_valid_client_name(role):
        raise ValueError(f"role: must match {_NAME_RULE}")
    if not is_valid_client_pattern(client):
        raise ValueError("client: expected a client name or a pattern with '*'")
    if not isinstance(created, str):
        raise ValueError("created: expected an ISO 8601 time")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise ValueError("created: expected an ISO 8601 time") from None
    try:
        kdf = KdfParams.from_json(obj["kdf"])
    except ValueError as exc:
        raise ValueError(f"kdf: {exc}") from None
    salt = _parse_hex(obj, "salt", 8)
    digest = _parse_hex(obj, "hash", 16)
    return TokenEntry(tid, name, client, role, created, salt, digest, kdf)


class TokenStore:
    """The token file in memory, and the operations on it.

    ``TokenStore.load(path)`` reads the file (a missing file is an empty store unless
    ``must_exist``); :meth:`reload` re-reads it (on SIGHUP); :meth:`verify` checks a
    token (blocking, ~40 ms with the default parameters: run it in a worker thread);
    :meth:`add` and :meth:`revoke` change the file (atomically, mode 0600) after
    re-reading it, so they never undo another process's change.

    Thread-safe: :meth:`verify` may run in worker threads while :meth:`reload`,
    :meth:`add` or :meth:`revoke` run elsewhere; it sees either the old or the new set
    of tokens. A :meth:`verify` that began before a :meth:`reload` can return an entry
    the reload removed: check :meth:`is_current` after awaiting it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        must_exist: bool = False,
        kdf: KdfParams | None = None,
    ) -> None:
        """An empty store for ``path`` (nothing is read: see :meth:`load`). ``kdf``:
        the parameters of tokens this store adds (default: :data:`DEFAULT_KDF` at the
        time of the call)."""
        if kdf is not None:
            kdf.check()
        self.path = Path(path)
        self.must_exist = must_exist
        self._kdf = kdf
        self._lock = threading.Lock()  # guards the swap of _by_name/_by_id
        self._file_lock = threading.Lock()  # serializes read-modify-write of the file
        self._by_name: dict[str, TokenEntry] = {}
        self._by_id: dict[str, TokenEntry] = {}
        self._dummy_salt = secrets.token_bytes(SALT_BYTES)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        must_exist: bool = False,
        kdf: KdfParams | None = None,
    ) -> TokenStore:
        """Read the token file at ``path``. TokenFileError if it is malformed or
        unreadable, or missing and ``must_exist``."""
        store = cls(path, must_exist=must_exist, kdf=kdf)
        store.reload()
        return store

    @property
    def kdf(self) -> KdfParams:
        """The parameters of new tokens."""
        return self._kdf or DEFAULT_KDF

    def __len__(self) -> int:
        return len(self._by_name)

    def entries(self) -> list[TokenEntry]:
        """Every token, sorted by name."""
        with self._lock:
            return sorted(self._by_name.values(), key=lambda e: e.name)

    def get(self, name: str) -> TokenEntry | None:
        with self._lock:
            return self._by_name.get(name)

    def is_current(self, entry: TokenEntry) -> bool:
        """Whether ``entry`` is still in the store, unchanged (not revoked or replaced
        by a :meth:`reload` since it was returned)."""
        with self._lock:
            return self._by_name.get(entry.name) == entry

    def reload(self) -> set[str]:
        """Re-read the file. Returns the names of the tokens that disappeared or changed
        (their id, role, client or hash), whose connections should close. On
        TokenFileError the store keeps its previous tokens."""
        with self._file_lock:
            return self._swap(self._read(missing_ok=not self.must_exist))

    def verify(self, token: str) -> TokenEntry | None:
        """The entry ``token`` belongs to, or None (a wrong secret, an unknown id, a
        malformed token). BLOCKING (one scrypt derivation, also for an unknown id or a
        malformed token, so the time taken does not tell which ids exist). Raises
        nothing and logs nothing about the token."""
        tid = token_id(token)
        entry = None
        if tid is not None:
            with self._lock:
                entry = self._by_id.get(tid)
        if entry is None:
            self.kdf.derive(b"chub_00000000_dummy-password-dummy", self._dummy_salt)
            return None
        derived = entry.kdf.derive(token.encode("ascii"), entry.salt)
        return entry if hmac.compare_digest(derived, entry.digest) else None

    def add(self, name: str, role: str, client: str | None = None) -> str:
        """Create a token named ``name`` for ``role``, allowing ``client`` (a client
        name or pattern; default: ``name``), write the file and return the token string
        (the only time it exists outside the caller). TokenError for an invalid name,
        role or client or an existing name; TokenFileError if the file cannot be read
        or written."""
        client = name if client is None else client
        _check_fields(name, role, client)
        with self._file_lock:
            current = self._read(missing_ok=True)
            if name in current:
                raise TokenError(f"token {name!r} exists (revoke it first)")
            ids = {e.id for e in current.values()}
            tid = secrets.token_hex(ID_HEX_CHARS // 2)
            while tid in ids:
                tid = secrets.token_hex(ID_HEX_CHARS // 2)
            token = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
            kdf = self.kdf
            salt = secrets.token_bytes(SALT_BYTES)
            digest = kdf.derive(token.encode("ascii"), salt)
            entry = TokenEntry(tid, name, client, role, _utc_now(), salt, digest, kdf)
            new = {**current, name: entry}
            self._write(new)
            self._swap(new)
        return token

    def revoke(self, name: str) -> bool:
        """Remove the token named ``name`` from the file; False if there is none.
        TokenFileError if the file cannot be read or written."""
        with self._file_lock:
            current = self._read(missing_ok=True)
            if name not in current:
                self._swap(current)
                return False
            new = {k: e for k, e in current.items() if k != name}
            self._write(new)
            self._swap(new)
        return True

    # --- internals ----------------------------------------------------------------------

    def _swap(self, new: dict[str, TokenEntry]) -> set[str]:
        by_id = {e.id: e for e in new.values()}
        with self._lock:
            old = self._by_name
            self._by_name = new
            self._by_id = by_id
        return {name for name, e in old.items() if new.get(name) != e}

    def _error(self, problem: str) -> TokenFileError:
        return TokenFileError(f"token file {self.path}: {problem}")

    def _read(self, *, missing_ok: bool) -> dict[str, TokenEntry]:
        try:
            st = os.stat(self.path)  # before open(): a FIFO would block it
            if not stat.S_ISREG(st.st_mode):
                raise self._error("not a regular file")
            with open(self.path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            if missing_ok:
                return {}
            raise self._error("not found") from None
        except OSError as exc:
            raise self._error(f"cannot read: {exc.strerror or exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise self._error(f"larger than {MAX_FILE_BYTES} bytes")
        if os.name == "posix" and st.st_mode & 0o077:
            log.warning(
                "token file %s is accessible to other users (mode %03o); chmod 600 it",
                self.path,
                stat.S_IMODE(st.st_mode),
            )
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self._error("not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise self._error(
                f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        return self._parse(doc)

    def _parse(self, doc: object) -> dict[str, TokenEntry]:
        if not isinstance(doc, dict):
            raise self._error('expected an object {"version": 1, "tokens": [...]}')
        unknown = sorted(k for k in doc if k not in ("version", "tokens"))
        if unknown:
            raise self._error(f"unknown field {unknown[0]!r}")
        version = doc.get("version")
        if type(version) is not int or version != FILE_VERSION:
            raise self._error(f"version: expected {FILE_VERSION}")
        tokens = doc.get("tokens")
        if not isinstance(tokens, list):
            raise self._error("tokens: expected a list")
        by_name: dict[str, TokenEntry] = {}
        ids: set[str] = set()
        for i, obj in enumerate(tokens):
            name = obj.get("name") if isinstance(obj, dict) else None
            where = f"tokens[{i}]"
            if is_valid_client_name(name):
                where += f" ({name})"
            try:
                entry = _parse_entry(obj)
            except ValueError as exc:
                raise self._error(f"{where}: {exc}") from None
            if entry.name in by_name:
                raise self._error(f"{where}: duplicate name")
            if entry.id in ids:
                raise self._error(f"{where}: duplicate id")
            by_name[entry.name] = entry
            ids.add(entry.id)
        return by_name

    def _write(self, entries: Mapping[str, TokenEntry]) -> None:
        doc = {"version": FILE_VERSION, "tokens": [e.to_json() for e in entries.values()]}
        data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        parent = self.path.parent
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise self._error(f"cannot write: {exc.strerror or exc}") from None
        try:
            try:
                with os.fdopen(fd, "wb") as f:
                    os.chmod(tmp, 0o600)  # mkstemp's mode already; whatever the umask
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise self._error(f"cannot write: {exc.strerror or exc}") from None
        _fsync_dir(parent)


def _fsync_dir(path: Path) -> None:
    """Make the rename durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
