"""``companion-hub token add|list|revoke`` through ``companion_hub.cli.main``."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from companion_hub.auth import tokens as tk
from companion_hub.auth.tokens import KdfParams, TokenStore
from companion_hub.cli import main

TOKEN_LINE = re.compile(r"chub_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No configuration from the environment; the default data dir under tmp_path;
    cheap scrypt parameters."""
    for var in ("CONFIG", "DATA_DIR", "TOKENS_FILE", "HOST", "PORT", "LOG_LEVEL"):
        monkeypatch.delenv(f"COMPANION_HUB_{var}", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(tk, "DEFAULT_KDF", KdfParams(n=1024))
    return tmp_path / "xdg" / "companion-hub"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["token", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_add_prints_only_the_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(capsys, "add", "tally", "--role", "app", "--data-dir", str(tmp_path))
    assert rc == 0
    assert TOKEN_LINE.fullmatch(out)
    assert "shown only this once" in err
    assert "kill -HUP <pid>" in err
    assert "client tally, role app" in err
    path = tmp_path / "tokens.json"
    assert str(path) in err and "is new" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = TokenStore.load(path).verify(out.strip())
    assert entry is not None and (entry.name, entry.client, entry.role) == ("tally", "tally", "app")
    assert out.strip() not in path.read_text()
    # a second add to the same file: no "is new"
    rc, out, err = run(capsys, "add", "two", "--role", "viewer", "--data-dir", str(tmp_path))
    assert rc == 0 and "is new" not in err


def test_add_with_a_client_pattern_and_a_tokens_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "etc" / "hub-tokens.json"
    rc, out, _ = run(
        capsys, "add", "tallies", "--role", "viewer", "--client", "tally-*", "--tokens", str(path)
    )
    assert rc == 0
    entry = TokenStore.load(path).verify(out.strip())
    assert entry is not None and entry.client == "tally-*"
    assert entry.allows_client("tally-7")


def test_the_default_file_is_in_the_default_data_dir(
    capsys: pytest.CaptureFixture[str], isolated: Path
) -> None:
    rc, out, _ = run(capsys, "add", "tally", "--role", "app")
    assert rc == 0
    assert TokenStore.load(isolated / "tokens.json").verify(out.strip()) is not None
    rc, out, _ = run(capsys, "list")
    assert rc == 0 and "tally" in out


def test_the_environment_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env-tokens.json"
    monkeypatch.setenv("COMPANION_HUB_TOKENS_FILE", str(path))
    rc, out, _ = run(capsys, "add", "tally", "--role", "app")
    assert rc == 0
    assert TokenStore.load(path).verify(out.strip()) is not None


def test_the_config_names_the_file_and_the_roles(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "from-config.json"
    config = tmp_path / "hub.toml"
    config.write_text(
        f'tokens_file = "{path}"\n\n[roles.stage]\nread = ["app.**"]\nown = []\npublish = false\n'
    )
    rc, out, _ = run(capsys, "add", "display", "--role", "stage", "--config", str(config))
    assert rc == 0
    entry = TokenStore.load(path).verify(out.strip())
    assert entry is not None and entry.role == "stage"
    # --tokens wins over the config
    other = tmp_path / "other.json"
    rc, _, _ = run(
        capsys, "add", "x", "--role", "app", "--config", str(config), "--tokens", str(other)
    )
    assert rc == 0 and other.exists()
    assert [e.name for e in TokenStore.load(path).entries()] == ["display"]


def test_an_unknown_role(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(capsys, "add", "tally", "--role", "stage", "--data-dir", str(tmp_path))
    assert rc == 2 and out == ""
    assert "unknown role 'stage'; known roles: admin, app, operator, viewer" in err
    assert "--config" in err
    assert not (tmp_path / "tokens.json").exists()
    config = tmp_path / "hub.toml"
    config.write_text("[roles.stage]\nown = []\n")
    rc, _, err = run(
        capsys, "add", "t", "--role", "nope", "--config", str(config), "--data-dir", str(tmp_path)
    )
    assert rc == 2
    assert "known roles: admin, app, operator, stage, viewer" in err


def test_a_duplicate_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "add", "tally", "--role", "app", "--data-dir", str(tmp_path))[0] == 0
    rc, out, err = run(capsys, "add", "tally", "--role", "viewer", "--data-dir", str(tmp_path))
    assert rc == 2 and out == ""
    assert "token 'tally' exists (revoke it first)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Tally", "--role", "app"], "token name: must match"),
        (["tally", "--role", "app", "--client", "Tally"], "client:"),
        (["tally", "--role", "app", "--client", "a.b"], "client:"),
    ],
)
def test_invalid_arguments(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    rc, out, err = run(capsys, "add", *argv, "--data-dir", str(tmp_path))
    assert rc == 2 and out == ""
    assert message in err


def test_role_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["token", "add", "tally"])
    assert exc.value.code == 2
    assert "--role" in capsys.readouterr().err


def test_memory_data_dir_needs_a_tokens_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "add", "tally", "--role", "app", "--data-dir", "memory")
    assert rc == 2 and out == ""
    assert "give --tokens FILE" in err


def test_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = str(tmp_path)
    run(capsys, "add", "tally", "--role", "app", "--data-dir", d)
    run(capsys, "add", "display-wall", "--role", "viewer", "--client", "wall-*", "--data-dir", d)
    rc, out, err = run(capsys, "list", "--data-dir", d)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert re.fullmatch(r"NAME +CLIENT +ROLE +CREATED +ID", lines[0])
    assert re.fullmatch(r"display-wall +wall-\* +viewer +\S+Z +[0-9a-f]{12}", lines[1])
    assert re.fullmatch(r"tally +tally +app +\S+Z +[0-9a-f]{12}", lines[2])
    assert len(lines) == 3
    # never a hash or a salt
    stored = json.loads((tmp_path / "tokens.json").read_text())["tokens"]
    for e in stored:
        assert e["hash"] not in out and e["salt"] not in out
        assert e["id"] in out


def test_list_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "add", "tally", "--role", "app", "--data-dir", str(tmp_path))
    rc, out, _ = run(capsys, "list", "--json", "--data-dir", str(tmp_path))
    assert rc == 0
    (row,) = json.loads(out)
    assert set(row) == {"name", "client", "role", "created", "id"}
    assert (row["name"], row["client"], row["role"]) == ("tally", "tally", "app")


def test_list_without_tokens(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(capsys, "list", "--data-dir", str(tmp_path))
    assert rc == 0 and out == ""
    assert "does not exist" in err
    assert not (tmp_path / "tokens.json").exists()
    run(capsys, "add", "tally", "--role", "app", "--data-dir", str(tmp_path))
    run(capsys, "revoke", "tally", "--data-dir", str(tmp_path))
    rc, out, err = run(capsys, "list", "--data-dir", str(tmp_path))
    assert rc == 0 and out == "" and "is empty" in err
    rc, out, _ = run(capsys, "list", "--json", "--data-dir", str(tmp_path))
    assert rc == 0 and json.loads(out) == []


def test_revoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = str(tmp_path)
    _, token, _ = run(capsys, "add", "tally", "--role", "app", "--data-dir", d)
    _, keep, _ = run(capsys, "add", "keep", "--role", "app", "--data-dir", d)
    rc, out, err = run(capsys, "revoke", "tally", "--data-dir", d)
    assert rc == 0 and out == ""
    assert "revoked" in err and "kill -HUP <pid>" in err
    store = TokenStore.load(tmp_path / "tokens.json")
    assert store.verify(token.strip()) is None
    assert store.verify(keep.strip()) is not None
    rc, out, err = run(capsys, "revoke", "tally", "--data-dir", d)
    assert rc == 1 and out == ""
    assert "no token named 'tally'" in err


def test_revoke_without_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(capsys, "revoke", "tally", "--data-dir", str(tmp_path))
    assert rc == 1 and "no token named 'tally'" in err
    assert not (tmp_path / "tokens.json").exists()


def test_a_malformed_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"version": 2, "tokens": []}')
    for argv in (["list"], ["revoke", "x"], ["add", "x", "--role", "app"]):
        rc, out, err = run(capsys, *argv, "--tokens", str(path))
        assert rc == 2 and out == "", argv
        assert f"token file {path}: version: expected 1" in err
    assert path.read_text() == '{"version": 2, "tokens": []}'


def test_a_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(capsys, "list", "--config", str(tmp_path / "missing.toml"))
    assert rc == 2 and "not found" in err
