"""The token file: add, verify, revoke, reload; the file's format and its errors."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from companion_hub.auth import tokens as tk
from companion_hub.auth.tokens import (
    DEFAULT_KDF,
    KdfParams,
    TokenEntry,
    TokenError,
    TokenFileError,
    TokenStore,
    is_valid_client_pattern,
    token_id,
)
from companion_hub.core.errors import CompanionHubError

CHEAP = KdfParams(n=1024, r=8, p=1)
TOKEN_RE = re.compile(r"chub_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tokens.json"


@pytest.fixture
def store(path: Path) -> TokenStore:
    return TokenStore.load(path, kdf=CHEAP)


def doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_doc(path: Path, d: object) -> None:
    path.write_text(json.dumps(d))
    path.chmod(0o600)


def good_entry(**changes: Any) -> dict[str, Any]:
    e = {
        "id": "0123456789ab",
        "name": "tally",
        "client": "tally",
        "role": "app",
        "kdf": {"name": "scrypt", "n": 1024, "r": 8, "p": 1},
        "salt": "00" * 16,
        "hash": "11" * 32,
        "created": "2024-11-27T09:33:19Z",
    }
    e.update(changes)
    return e


# --- add, verify, revoke ---------------------------------------------------------------


def test_add_returns_a_token_that_verifies(store: TokenStore, path: Path) -> None:
    token = store.add("tally", "app")
    assert TOKEN_RE.fullmatch(token)
    entry = store.verify(token)
    assert entry is not None
    assert (entry.name, entry.client, entry.role) == ("tally", "tally", "app")
    assert token.startswith(f"chub_{entry.id}_")
    assert entry.kdf == CHEAP
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry.created)
    assert store.entries() == [entry]
    assert store.get("tally") == entry
    assert len(store) == 1
    # another process (the hub) reading the file verifies the same token
    assert TokenStore.load(path).verify(token) == entry


def test_add_with_a_client_pattern(store: TokenStore) -> None:
    token = store.add("tallies", "viewer", client="tally-*")
    entry = store.verify(token)
    assert entry is not None and entry.client == "tally-*" and entry.is_pattern
    assert entry.allows_client("tally-3")
    assert not entry.allows_client("tallies")


def test_each_token_is_distinct(store: TokenStore) -> None:
    a = store.add("a", "app")
    b = store.add("b", "app")
    ea, eb = store.verify(a), store.verify(b)
    assert ea is not None and eb is not None
    assert ea.name == "a" and eb.name == "b"
    assert ea.id != eb.id and ea.salt != eb.salt


def test_wrong_secret(store: TokenStore) -> None:
    token = store.add("tally", "app")
    last = "A" if token[-1] != "A" else "B"
    assert store.verify(token[:-1] + last) is None
    other = TokenStore(store.path, kdf=CHEAP).add("other", "app")
    # the id of one token with the secret of another
    tid = token_id(token)
    assert store.verify(f"chub_{tid}_{other.split('_', 2)[2]}") is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "chub_",
        "chub__" + "a" * 43,
        "chub_0123456789ab",
        "chub_0123456789ab_",
        "chub_0123456789ab_short",
        "chub_0123456789AB_" + "a" * 43,  # upper-case id
        "chub_0123_" + "a" * 43,  # id too short
        "CHUB_0123456789ab_" + "a" * 43,
        "Bearer chub_0123456789ab_" + "a" * 43,
        "chub_0123456789ab_" + "a" * 42 + "!",
        "chub_0123456789ab_" + "é" * 43,
        "chub_0123456789ab_" + "a" * 10_000,
        "x" * 1_000_000,
    ],
)
def test_malformed_tokens_are_none(store: TokenStore, bad: str) -> None:
    store.add("tally", "app")
    assert store.verify(bad) is None


@pytest.mark.parametrize("bad", [None, b"chub_0123456789ab_" + b"a" * 43, 42])
def test_a_non_string_is_none(store: TokenStore, bad: Any) -> None:
    assert store.verify(bad) is None


def test_unknown_id_malformed_and_wrong_cost_one_derivation_each(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = store.add("tally", "app")
    calls: list[int] = []
    real = KdfParams.derive

    def counting(self: KdfParams, password: bytes, salt: bytes) -> bytes:
        calls.append(self.n)
        return real(self, password, salt)

    monkeypatch.setattr(KdfParams, "derive", counting)
    tid = token_id(token)
    assert tid is not None
    unknown = token.replace(tid, "f" * 12 if tid != "f" * 12 else "e" * 12)
    for t in (token, token[:-1] + ("x" if token[-1] != "x" else "y"), unknown, "garbage", ""):
        store.verify(t)
    assert calls == [CHEAP.n] * 5


def test_revoke(store: TokenStore, path: Path) -> None:
    token = store.add("tally", "app")
    keep = store.add("keep", "app")
    assert store.revoke("tally") is True
    assert store.verify(token) is None
    assert store.verify(keep) is not None
    assert [e["name"] for e in doc(path)["tokens"]] == ["keep"]
    assert store.revoke("tally") is False
    assert store.revoke("never") is False


def test_revoke_without_a_file(path: Path) -> None:
    assert TokenStore(path).revoke("x") is False
    assert not path.exists()


def test_add_an_existing_name_is_refused(store: TokenStore) -> None:
    store.add("tally", "app")
    with pytest.raises(TokenError, match="exists"):
        store.add("tally", "viewer")
    assert [e.role for e in store.entries()] == ["app"]


@pytest.mark.parametrize(
    ("name", "role", "client", "what"),
    [
        ("Tally", "app", None, "token name"),
        ("-x", "app", None, "token name"),
        ("", "app", None, "token name"),
        ("a" * 64, "app", None, "token name"),
        ("tally", "App", None, "role"),
        ("tally", "", None, "role"),
        ("tally", "app", "Tally", "client"),
        ("tally", "app", "tally.x", "client"),
        ("tally", "app", "", "client"),
        ("tally", "app", "a" * 64, "client"),
    ],
)
def test_add_validates(
    store: TokenStore, name: str, role: str, client: str | None, what: str
) -> None:
    with pytest.raises(TokenError, match=what):
        store.add(name, role, client)
    assert not store.path.exists()


def test_an_error_never_echoes_a_token_given_as_a_name(store: TokenStore) -> None:
    token = store.add("tally", "app")
    with pytest.raises(TokenError) as exc:
        store.add(token, "app")
    assert token not in str(exc.value)
    assert token.split("_", 2)[2] not in str(exc.value)


def test_add_rereads_the_file_first(path: Path) -> None:
    """Two stores on one file (the hub and the CLI) never undo each other's changes."""
    a = TokenStore.load(path, kdf=CHEAP)
    b = TokenStore.load(path, kdf=CHEAP)
    ta = a.add("a", "app")
    tb = b.add("b", "app")
    assert {e["name"] for e in doc(path)["tokens"]} == {"a", "b"}
    assert b.verify(ta) is not None
    assert a.reload() == set()
    assert a.verify(tb) is not None


def test_the_default_parameters(path: Path) -> None:
    store = TokenStore.load(path)
    assert store.kdf == DEFAULT_KDF == KdfParams(n=16384, r=8, p=1)
    token = store.add("tally", "app")
    entry = TokenStore.load(path).verify(token)
    assert entry is not None and entry.kdf == DEFAULT_KDF
    assert doc(path)["tokens"][0]["kdf"] == {"name": "scrypt", "n": 16384, "r": 8, "p": 1}


def test_the_module_default_can_be_replaced(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "DEFAULT_KDF", CHEAP)
    store = TokenStore(path)
    assert store.kdf == CHEAP
    store.add("tally", "app")
    assert doc(path)["tokens"][0]["kdf"]["n"] == 1024


def test_verification_uses_the_stored_parameters(path: Path) -> None:
    token = TokenStore(path, kdf=CHEAP).add("cheap", "app")
    token2 = TokenStore(path, kdf=KdfParams(n=2048, r=4, p=2)).add("other", "app")
    store = TokenStore.load(path, kdf=KdfParams(n=4096))
    e1, e2 = store.verify(token), store.verify(token2)
    assert e1 is not None and e1.kdf == CHEAP
    assert e2 is not None and e2.kdf == KdfParams(n=2048, r=4, p=2)


# --- the file ---------------------------------------------------------------------------


def test_the_file_format(store: TokenStore, path: Path) -> None:
    token = store.add("tally", "operator", client="tally-*")
    d = doc(path)
    assert d["version"] == 1
    (e,) = d["tokens"]
    assert set(e) == {"id", "name", "client", "role", "kdf", "salt", "hash", "created"}
    assert e["id"] == token_id(token)
    assert (e["name"], e["client"], e["role"]) == ("tally", "tally-*", "operator")
    assert e["kdf"] == {"name": "scrypt", "n": 1024, "r": 8, "p": 1}
    assert re.fullmatch(r"[0-9a-f]{32}", e["salt"])
    assert re.fullmatch(r"[0-9a-f]{64}", e["hash"])
    # the hash is scrypt over the whole token string
    salt = bytes.fromhex(e["salt"])
    assert CHEAP.derive(token.encode(), salt).hex() == e["hash"]


def test_the_file_never_contains_the_token(store: TokenStore, path: Path) -> None:
    tokens = [store.add(f"t{i}", "app") for i in range(3)]
    store.revoke("t1")
    text = path.read_text()
    for token in tokens:
        assert token not in text
        assert token.split("_", 2)[2] not in text


def test_file_mode_0600(store: TokenStore, path: Path) -> None:
    store.add("tally", "app")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_readable_file_is_rewritten_0600_and_warned_about(
    store: TokenStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.add("tally", "app")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="companion_hub.auth"):
        assert store.reload() == set()
    assert "accessible to other users" in caplog.text
    store.add("other", "app")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tokens.json"
    TokenStore(path, kdf=CHEAP).add("tally", "app")
    assert path.exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_the_write_is_atomic(
    store: TokenStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = store.add("tally", "app")
    before = path.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(TokenFileError, match=r"cannot write: No space left on device") as exc:
        store.add("other", "app")
    assert str(path) in str(exc.value)
    with pytest.raises(TokenFileError):
        store.revoke("tally")
    monkeypatch.undo()
    assert path.read_bytes() == before  # unchanged
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json"]  # no temp file
    assert [e.name for e in store.entries()] == ["tally"]  # nor the memory
    assert store.verify(token) is not None


def test_the_write_goes_through_a_temp_file_in_the_same_directory(
    store: TokenStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    real = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((str(src), str(dst)))
        assert stat.S_IMODE(os.stat(src).st_mode) == 0o600
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.add("tally", "app")
    ((src, dst),) = seen
    assert Path(src).parent == path.parent and dst == str(path)


def test_a_missing_file(path: Path) -> None:
    store = TokenStore.load(path)
    assert store.entries() == [] and len(store) == 0
    assert store.verify("chub_0123456789ab_" + "a" * 43) is None
    with pytest.raises(TokenFileError, match=rf"token file {re.escape(str(path))}: not found"):
        TokenStore.load(path, must_exist=True)


# --- reload -----------------------------------------------------------------------------


def test_reload_reports_removed_and_changed_names(store: TokenStore, path: Path) -> None:
    ta = store.add("a", "app")
    tb = store.add("b", "app")
    store.add("c", "app")
    cli = TokenStore(path, kdf=CHEAP)  # another process
    cli.revoke("a")
    cli.add("d", "app")
    d = doc(path)
    for e in d["tokens"]:
        if e["name"] == "c":
            e["role"] = "viewer"
    write_doc(path, d)
    assert store.reload() == {"a", "c"}
    assert store.verify(ta) is None
    assert store.verify(tb) is not None
    assert [e.name for e in store.entries()] == ["b", "c", "d"]
    assert store.reload() == set()


def test_reload_after_the_file_was_deleted(store: TokenStore, path: Path) -> None:
    store.add("a", "app")
    path.unlink()
    assert store.reload() == {"a"}
    strict = TokenStore(path, must_exist=True)
    with pytest.raises(TokenFileError, match="not found"):
        strict.reload()


def test_a_bad_reload_keeps_the_old_tokens(store: TokenStore, path: Path) -> None:
    token = store.add("a", "app")
    path.write_text("{ not json")
    with pytest.raises(TokenFileError, match="invalid JSON"):
        store.reload()
    assert store.verify(token) is not None


def test_is_current(store: TokenStore, path: Path) -> None:
    token = store.add("a", "app")
    entry = store.verify(token)
    assert entry is not None and store.is_current(entry)
    TokenStore(path, kdf=CHEAP).revoke("a")
    TokenStore(path, kdf=CHEAP).add("a", "app")  # the same name, a new token
    store.reload()
    assert not store.is_current(entry)
    assert store.verify(token) is None


def test_verify_is_thread_safe_against_reload(store: TokenStore, path: Path) -> None:
    token = store.add("stable", "app")
    other = TokenStore(path, kdf=CHEAP)
    errors: list[BaseException] = []
    results: list[bool] = []
    stop = threading.Event()

    def verifier() -> None:
        try:
            while not stop.is_set():
                results.append(store.verify(token) is not None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=verifier) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(15):
            other.add(f"x{i}", "app")
            store.reload()
            other.revoke(f"x{i}")
            store.reload()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert results and all(results)


# --- client patterns ----------------------------------------------------------------------


def make_entry(client: str) -> TokenEntry:
    return TokenEntry("0123456789ab", "t", client, "app", "2024-01-01T00:00:00Z", b"", b"", CHEAP)


@pytest.mark.parametrize(
    ("pattern", "client", "allowed"),
    [
        ("tally", "tally", True),
        ("tally", "tally-1", False),
        ("tally", "Tally", False),
        ("tally-*", "tally-1", True),
        ("tally-*", "tally-cam-2", True),
        ("tally-*", "tally-", True),
        ("tally-*", "tally", False),
        ("tally-*", "xtally-1", False),
        ("*", "anything_at-all", True),
        ("*", "", False),
        ("*", "Upper", False),
        ("*", "a.b", False),
        ("*", "a" * 64, False),
        ("*-cam", "stage-cam", True),
        ("*-cam", "stage-cam-2", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "a-xb_yc", True),
        ("a*b*c", "acb", False),
        ("a**", "a1", True),
        ("a.b", "axb", False),  # not a valid pattern anyway; '.' is not a wildcard
    ],
)
def test_allows_client(pattern: str, client: str, allowed: bool) -> None:
    assert make_entry(pattern).allows_client(client) is allowed


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        ("tally", True),
        ("tally-*", True),
        ("*", True),
        ("*x*", True),
        ("Tally", False),
        ("", False),
        ("-x", False),
        ("a.b", False),
        ("a?", False),
        ("a" * 63, True),
        ("a" * 64, False),
        (None, False),
    ],
)
def test_is_valid_client_pattern(pattern: Any, valid: bool) -> None:
    assert is_valid_client_pattern(pattern) is valid


def test_entries_repr_has_no_hash_or_salt(store: TokenStore) -> None:
    store.add("tally", "app")
    (e,) = store.entries()
    assert e.digest.hex() not in repr(e)
    assert e.salt.hex() not in repr(e)
    assert "digest" not in repr(e) and "salt" not in repr(e)


# --- a malformed file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([], r"expected an object"),
        ({"version": 2, "tokens": []}, r"version: expected 1"),
        ({"version": True, "tokens": []}, r"version: expected 1"),
        ({"tokens": []}, r"version: expected 1"),
        ({"version": 1}, r"tokens: expected a list"),
        ({"version": 1, "tokens": {}}, r"tokens: expected a list"),
        ({"version": 1, "tokens": [], "extra": 1}, r"unknown field 'extra'"),
        ({"version": 1, "tokens": ["x"]}, r"tokens\[0\]: expected an object"),
        (
            {"version": 1, "tokens": [good_entry(comment="x")]},
            r"tokens\[0\] \(tally\): unknown field 'comment'",
        ),
        (
            {"version": 1, "tokens": [{k: v for k, v in good_entry().items() if k != "salt"}]},
            r"tokens\[0\] \(tally\): missing field 'salt'",
        ),
        (
            {"version": 1, "tokens": [good_entry(id="xyz")]},
            r"tokens\[0\] \(tally\): id: expected 8-64",
        ),
        (
            {"version": 1, "tokens": [good_entry(id=12345678)]},
            r"tokens\[0\] \(tally\): id: expected",
        ),
        ({"version": 1, "tokens": [good_entry(name="Tally")]}, r"tokens\[0\]: name: must match"),
        (
            {"version": 1, "tokens": [good_entry(role=None)]},
            r"tokens\[0\] \(tally\): role: must match",
        ),
        (
            {"version": 1, "tokens": [good_entry(client="a.b")]},
            r"tokens\[0\] \(tally\): client: expected a client",
        ),
        (
            {"version": 1, "tokens": [good_entry(created="yesterday")]},
            r"tokens\[0\] \(tally\): created: expected",
        ),
        (
            {"version": 1, "tokens": [good_entry(created=0)]},
            r"tokens\[0\] \(tally\): created: expected",
        ),
        (
            {"version": 1, "tokens": [good_entry(salt="zz")]},
            r"tokens\[0\] \(tally\): salt: expected at least 8 bytes",
        ),
        (
            {"version": 1, "tokens": [good_entry(salt="00")]},
            r"tokens\[0\] \(tally\): salt: expected at least 8 bytes",
        ),
        (
            {"version": 1, "tokens": [good_entry(hash="AB" * 32)]},
            r"tokens\[0\] \(tally\): hash: expected",
        ),
        (
            {"version": 1, "tokens": [good_entry(kdf="scrypt")]},
            r"tokens\[0\] \(tally\): kdf: expected an object",
        ),
        (
            {"version": 1, "tokens": [good_entry(kdf={"name": "pbkdf2", "n": 2, "r": 1, "p": 1})]},
            r"tokens\[0\] \(tally\): kdf: name must be 'scrypt'",
        ),
        (
            {
                "version": 1,
                "tokens": [good_entry(kdf={"name": "scrypt", "n": 1000, "r": 8, "p": 1})],
            },
            r"tokens\[0\] \(tally\): kdf: n must be a power of two",
        ),
        (
            {
                "version": 1,
                "tokens": [good_entry(kdf={"name": "scrypt", "n": 1 << 22, "r": 8, "p": 1})],
            },
            r"tokens\[0\] \(tally\): kdf: n must be a power of two from 2 to",
        ),
        (
            {
                "version": 1,
                "tokens": [good_entry(kdf={"name": "scrypt", "n": 1 << 20, "r": 16, "p": 1})],
            },
            r"tokens\[0\] \(tally\): kdf: n, r and p ask for too much",
        ),
        (
            {
                "version": 1,
                "tokens": [good_entry(kdf={"name": "scrypt", "n": 1024, "r": 8, "p": 0})],
            },
            r"tokens\[0\] \(tally\): kdf: p must be a positive integer",
        ),
        (
            {
                "version": 1,
                "tokens": [good_entry(kdf={"name": "scrypt", "n": 1024.0, "r": 8, "p": 1})],
            },
            r"tokens\[0\] \(tally\): kdf: n must be a positive integer",
        ),
        (
            {"version": 1, "tokens": [good_entry(kdf={"name": "scrypt", "n": 1024})]},
            r"tokens\[0\] \(tally\): kdf: n, r and p are required",
        ),
        (
            {"version": 1, "tokens": [good_entry(), good_entry(id="ba9876543210")]},
            r"tokens\[1\] \(tally\): duplicate name",
        ),
        (
            {"version": 1, "tokens": [good_entry(), good_entry(name="other")]},
            r"tokens\[1\] \(other\): duplicate id",
        ),
    ],
)
def test_malformed_files(path: Path, content: object, problem: str) -> None:
    write_doc(path, content)
    with pytest.raises(TokenFileError, match=rf"^token file {re.escape(str(path))}: {problem}"):
        TokenStore.load(path)


def test_a_valid_hand_written_file(path: Path) -> None:
    write_doc(path, {"version": 1, "tokens": [good_entry(client="tally-*")]})
    (e,) = TokenStore.load(path).entries()
    assert (e.id, e.name, e.client, e.role) == ("0123456789ab", "tally", "tally-*", "app")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{ not json", r"invalid JSON: .* \(line 1, column 3\)"),
        (b"", r"invalid JSON"),
        (b"\xff\xfe{}", r"not UTF-8"),
    ],
)
def test_unparseable_files(path: Path, raw: bytes, problem: str) -> None:
    path.write_bytes(raw)
    with pytest.raises(TokenFileError, match=rf"^token file {re.escape(str(path))}: {problem}"):
        TokenStore.load(path)


def test_a_directory_is_not_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="not a regular file"):
        TokenStore.load(tmp_path)


def test_an_unreadable_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_doc(path, {"version": 1, "tokens": []})

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tk, "open", denied, raising=False)
    with pytest.raises(TokenFileError, match="cannot read: Permission denied"):
        TokenStore.load(path)


def test_error_messages_never_echo_a_token_pasted_into_the_file(
    store: TokenStore, path: Path
) -> None:
    token = store.add("tally", "app")
    secret = token.split("_", 2)[2]
    d = doc(path)
    for field in ("name", "client", "role", "created", "salt", "id"):
        bad = json.loads(json.dumps(d))
        bad["tokens"][0][field] = token
        write_doc(path, bad)
        with pytest.raises(TokenFileError) as exc:
            TokenStore.load(path)
        assert secret not in str(exc.value), field
        assert d["tokens"][0]["hash"] not in str(exc.value)


def test_the_errors_are_companion_hub_errors() -> None:
    assert issubclass(TokenFileError, TokenError)
    assert issubclass(TokenError, CompanionHubError)


@pytest.mark.parametrize(
    "params",
    [KdfParams(n=3), KdfParams(n=1), KdfParams(n=1024, r=0), KdfParams(n=1024, p=17)],
)
def test_bad_kdf_params_for_a_store(path: Path, params: KdfParams) -> None:
    with pytest.raises(ValueError):
        TokenStore(path, kdf=params)


def test_token_id() -> None:
    assert token_id("chub_0123456789ab_" + "a" * 43) == "0123456789ab"
    assert token_id("chub_0123456789ab_a_b-c" + "a" * 20) == "0123456789ab"
    assert token_id("chub_0123456789ab") is None
    assert token_id(None) is None
