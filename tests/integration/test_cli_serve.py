"""`companion-hub serve` as a user runs it: a real process, flags, config, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hub exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError("hub did not become ready")


def test_serve_with_config_env_and_flags(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "hub.toml"
    cfg.write_text('port = 1\nheartbeat_ms = 1234\nlog_format = "json"\n')
    env = {**os.environ, "COMPANION_HUB_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "companion_hub",
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_ready(port, proc)
        assert ready["status"] == "ok" and ready["rev"] >= 1

        async def hello() -> dict:
            from companion_hub.client import connect_raw

            async with await connect_raw(f"ws://127.0.0.1:{port}/ws", "probe") as conn:
                assert conn.welcome is not None
                return conn.welcome

        welcome = asyncio.run(hello())
        assert welcome["heartbeat_ms"] == 1234  # from the file; the port came from the flag
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "hub listening" in events and "shutting down" in events
    assert any("development mode" in e for e in events)
    assert "Task was destroyed" not in err
    assert (tmp_path / "data" / "hub.sqlite3").exists()  # the event log


def test_serve_rejects_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text("heartbeat_ms = -5\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "companion_hub",
            "serve",
            "--config",
            str(cfg),
            "--data-dir",
            "memory",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2
    assert "heartbeat_ms -5: must be at least 50" in r.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["--version"], "companion-hub 0."), (["serve", "--help"], "--log-level")],
)
def test_cli_help(argv: list[str], expected: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "companion_hub", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert expected in r.stdout


def test_sighup_rereads_the_token_file_and_closes_revoked_clients(tmp_path: Path) -> None:
    """The operator revokes a token with the CLI and sends SIGHUP to the running hub:
    that client's connection closes with 1008, the others stay."""
    port = free_port()
    tokens = tmp_path / "tokens.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "companion_hub", "token", *args, "--tokens", str(tokens)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip

    show = cli("add", "show", "--role", "app").stdout.strip()
    panel = cli("add", "panel", "--role", "operator").stdout.strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "companion_hub", "serve", "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--tokens", str(tokens)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_ready(port, proc)

        async def scenario() -> tuple[int | None, bool]:
            from companion_hub.client import connect_raw

            url = f"ws://127.0.0.1:{port}/ws"
            a = await connect_raw(url, "show", token=show, timeout=10)
            b = await connect_raw(url, "panel", token=panel, timeout=10)
            await asyncio.to_thread(cli, "revoke", "show")
            proc.send_signal(signal.SIGHUP)
            code = await a.wait_closed(timeout=15)
            reply = await b.request({"op": "get", "patterns": ["hub.info"]}, timeout=10)
            await b.close()
            await a.close()
            return code, bool(reply["ok"])

        code, panel_still_served = asyncio.run(scenario())
        assert code == 1008 and panel_still_served
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert show not in err and panel not in err  # no token in the hub's log
