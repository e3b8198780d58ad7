"""A real Mosquitto broker for the tests and the benchmarks, on a free loopback port.

Each :class:`Mosquitto` writes its own configuration file (anonymous, or with a
password file made by ``mosquitto_passwd``) into a private directory and starts the
Debian ``mosquitto`` binary. It can be stopped and started again on the same port,
with or without persistence, to test what survives a broker restart.

Where the binary comes from: ``HUB_MOSQUITTO`` if set, else ``mosquitto`` on the PATH
or in ``/usr/sbin``. Without it the tests are skipped with the reason on a developer's
machine, and fail in CI (``CI`` set; ``.ci/run`` installs the package).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def mosquitto_binary() -> str | None:
    explicit = os.environ.get("HUB_MOSQUITTO")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def need_mosquitto() -> str:
    """The broker's path; skip (fail in CI) without it."""
    binary = mosquitto_binary()
    if binary is None:
        msg = "Mosquitto is not installed (Debian: apt-get install mosquitto; or set HUB_MOSQUITTO)"
        if os.environ.get("CI"):
            pytest.fail(msg + ": CI must have it (.ci/run installs it)")
        pytest.skip(msg)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker process. ``users`` maps user names to passwords (then anonymous
    clients are refused); ``persistence`` keeps retained messages across a restart."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        port: int | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.binary = binary or mosquitto_binary() or "mosquitto"
        self.users = dict(users or {})
        self.persistence = persistence
        self.tls = tls  # (certificate chain PEM, key PEM): the listener speaks TLS only
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="hub-mosquitto-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "mosquitto.log"

    # --- configuration ---------------------------------------------------------------

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "user root",  # do not drop to the mosquitto user: the files are ours
            "max_inflight_messages 1000",
            "max_queued_messages 100000",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_dest stderr",
        ]
        if self.tls is not None:
            lines += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]
        if self.users:
            pw = self.dir / "passwords"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        path = self.dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    # --- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        conf = self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen within {timeout} s: {self.log_tail()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (Mosquitto saves its persistence file) or SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
