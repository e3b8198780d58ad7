"""`companion-hub demo`, `serve` and `simulate` as a user runs them: the demo's own data
directory, and one clear line (exit code 2) when a port or the data directory is taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion_hub.cli import _run_hub, _settings, build_parser, demo_settings
from companion_hub.config import Settings, demo_data_dir
from companion_hub.core.errors import PortInUse
from companion_hub.eventlog.store import default_data_dir
from companion_hub.hub import HubConfig
from companion_hub.server.app import HubServer

from .test_cli_serve import free_port, wait_ready


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "companion_hub", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose default data directory is under tmp_path."""
    return {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "COMPANION_HUB_DATA_DIR": "",
    }


def one_line(r: subprocess.CompletedProcess[str], flag: str) -> str:
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert flag in lines[0] and "Traceback" not in r.stderr
    return lines[0]


# --- a busy port ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_busy_hub_port_is_one_line_naming_port(
    command: str, busy_port: int, home: dict[str, str], tmp_path: Path
) -> None:
    r = run_cli(command, "--port", str(busy_port), "--data-dir", str(tmp_path / "d"), env=home)
    line = one_line(r, "--port")
    assert line.startswith("companion-hub: ") and f":{busy_port} is already in use" in line
    assert not (tmp_path / "d").exists()  # refused before the data directory was touched


@pytest.mark.parametrize("flag", ["--satellite-port", "--ws-port", "--http-port"])
def test_simulate_with_a_busy_port_names_its_flag(flag: str, busy_port: int) -> None:
    ports = {"--satellite-port": "0", "--ws-port": "0", "--http-port": "0", flag: str(busy_port)}
    r = run_cli("simulate", *[x for kv in ports.items() for x in kv])
    line = one_line(r, flag)
    assert line.startswith("companion-hub simulate: ")
    for other in set(ports) - {flag}:
        assert other not in line


async def test_a_port_taken_after_the_check_is_port_in_use_and_frees_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    """The bind itself (a race with the early check) gives the same error, and the hub
    that could not listen closes its event log: the data directory is free again."""
    monkeypatch.setattr("companion_hub.cli._check_port", lambda host, port: None)
    settings = Settings(port=busy_port, data_dir=str(tmp_path))
    with pytest.raises(PortInUse) as err:
        await _run_hub(settings)
    assert err.value.flag == "--port"
    again = HubServer(HubConfig(port=0, data_dir=str(tmp_path)))  # not DataDirInUse
    await again.start()
    await again.stop()


# --- a data directory held by another hub ---------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_held_data_dir_is_one_line_naming_data_dir(
    command: str, tmp_path: Path, home: dict[str, str]
) -> None:
    data = tmp_path / "data"
    port = free_port()
    argv = ["serve", "--port", str(port), "--data-dir", str(data)]
    first = subprocess.Popen(
        [sys.executable, "-m", "companion_hub", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=home,
    )
    try:
        wait_ready(port, first)
        r = run_cli(command, "--port", str(free_port()), "--data-dir", str(data), env=home)
        line = one_line(r, "--data-dir")
        assert line.startswith("companion-hub: another hub is using the data directory")
        assert str(data) in line
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=15)
    assert first.returncode == 0, err


# --- the demo's own data directory -------------------------------------------------------------


def test_demo_keeps_its_data_apart_from_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPANION_HUB_DATA_DIR", raising=False)
    parser = build_parser()
    serve = _settings(parser.parse_args(["serve"]))
    assert serve.resolved_data_dir() == str(default_data_dir())  # production: unchanged
    demo = demo_settings(parser.parse_args(["demo"]))
    assert demo.resolved_data_dir() == str(demo_data_dir()) == str(default_data_dir() / "demo")
    assert demo_settings(parser.parse_args(["demo", "--data-dir", "memory"])).data_dir == "memory"
    assert demo_settings(parser.parse_args(["demo", "--data-dir", "/x"])).data_dir == "/x"
    monkeypatch.setenv("COMPANION_HUB_DATA_DIR", "/from/env")
    assert demo_settings(parser.parse_args(["demo"])).data_dir == "/from/env"


def test_the_demo_runs_in_its_own_data_directory(tmp_path: Path, home: dict[str, str]) -> None:
    production = tmp_path / "xdg" / "companion-hub"
    demo_dir = production / "demo"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "companion_hub", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=home,
    )
    try:
        wait_ready(port, proc, timeout=30)
        deadline = time.monotonic() + 15
        while not (demo_dir / "hub.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (demo_dir / "hub.lock").exists() and (demo_dir / "hub.sqlite3").exists()
        # the production default is neither created as a hub's directory nor locked
        assert not (production / "hub.lock").exists()
        assert not (production / "hub.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"Event log: {demo_dir}" in out  # the help says where, and why
    assert "/api/state/app.demo.message" in out  # the export onto the MSG button
    assert "Traceback" not in err
