"""TLS end to end: a hub serving ``wss://`` and ``https://`` with a certificate made in
the test (trustme), and the SDK, the raw connection, the CLI and ``log replay``
verifying it."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from companion_hub import cli
from companion_hub.client import (
    BadRequest,
    HubClient,
    SyncHubClient,
    Unavailable,
    connect_raw,
)
from companion_hub.server.app import HubServer
from tests.unit.test_eventlog_query import build_scenario

TLS_FAILURE_S = 3.0
"""An untrusted certificate fails at once, well before any connect timeout used here."""


@dataclass
class Pems:
    cert: str  # the hub's certificate chain (--tls-cert)
    key: str  # its private key (--tls-key)
    ca: str  # the CA certificate a client trusts (--ca-file)


def write_pems(tmp: Path, ca: trustme.CA, *names: str) -> Pems:
    tmp.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*names)
    pems = Pems(str(tmp / "cert.pem"), str(tmp / "key.pem"), str(tmp / "ca.pem"))
    leaf.private_key_and_cert_chain_pem.write_to_path(pems.cert)
    leaf.private_key_pem.write_to_path(pems.key)
    ca.cert_pem.write_to_path(pems.ca)
    return pems


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pems(tmp_path: Path, ca: trustme.CA) -> Pems:
    return write_pems(tmp_path / "tls", ca, "127.0.0.1", "localhost")


@pytest.fixture
async def tls_hub(hub_factory: Callable[..., Any], pems: Pems) -> HubServer:
    srv: HubServer = await hub_factory(tls_cert=pems.cert, tls_key=pems.key)
    return srv


def wss(srv: HubServer, host: str = "127.0.0.1") -> str:
    return f"wss://{host}:{srv.port}/ws"


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


# --- the SDK ----------------------------------------------------------------------------


async def test_hub_client_over_wss(tls_hub: HubServer, pems: Pems) -> None:
    async with HubClient(wss(tls_hub), "tally", ca_file=pems.ca) as hub:
        assert hub.connected
        r = await hub.set("app.tally.status", "live")
        assert r.version == 1
        entry = await hub.get("app.tally.status")
        assert entry is not None and entry.value == "live"
        info = await hub.get("hub.info")
        assert info is not None and info.value["hub"] == tls_hub.hub.hub_id
        async with hub.watch("app.tally.**") as changes:
            first = await asyncio.wait_for(anext(changes), 5)
            assert (first.key, first.value) == ("app.tally.status", "live")
    assert tls_hub.hub.store.get("app.tally.status") is not None


async def test_hub_client_with_an_ssl_context(tls_hub: HubServer, ca: trustme.CA) -> None:
    async with HubClient(wss(tls_hub, "localhost"), "tally", ssl=trusting(ca)) as hub:
        await hub.set("app.tally.n", 1)


async def test_sync_client_over_wss(tls_hub: HubServer, pems: Pems) -> None:
    def script() -> Any:
        with SyncHubClient(wss(tls_hub), "script", ca_file=pems.ca) as hub:
            hub.set("app.script.x", {"a": 1})
            entry = hub.get("app.script.x")
            return entry.value if entry else None

    assert await asyncio.to_thread(script) == {"a": 1}


async def test_connect_raw_over_wss(tls_hub: HubServer, pems: Pems, ca: trustme.CA) -> None:
    async with await connect_raw(wss(tls_hub), "probe", ca_file=pems.ca) as conn:
        assert conn.welcome is not None and conn.welcome["hub"] == tls_hub.hub.hub_id
        result = await conn.result({"op": "set", "key": "app.probe.x", "value": 1})
        assert result["version"] == 1
    async with (
        aiohttp.ClientSession() as session,
        await connect_raw(wss(tls_hub), "probe", session=session, ssl=trusting(ca)) as conn,
    ):
        assert (await conn.result({"op": "get", "patterns": ["app.probe.x"]}))["entries"]


async def test_untrusted_certificate_is_refused_at_once(tls_hub: HubServer, tmp_path: Path) -> None:
    """Without the CA (the system trust store), or with another CA: a clear
    verification error right away, not retries until the connect timeout."""
    other = write_pems(tmp_path / "other", trustme.CA(), "127.0.0.1")
    for kwargs in ({}, {"ca_file": other.ca}):
        hub = HubClient(wss(tls_hub), "tally", connect_timeout=30, **kwargs)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(Unavailable) as info:
            await hub.connect()
        assert loop.time() - t0 < TLS_FAILURE_S
        message = info.value.message
        assert "TLS certificate verification failed" in message, message
        assert "ca_file" in message
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorCertificateError)
        assert hub.state == "closed"
        assert hub.last_error == message

    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await asyncio.wait_for(connect_raw(wss(tls_hub), "probe"), TLS_FAILURE_S)
    assert not tls_hub.hub.sessions  # nobody got in


async def test_host_name_is_verified(
    hub_factory: Callable[..., Any], tmp_path: Path, ca: trustme.CA
) -> None:
    """A certificate for another name does not do, even from a trusted CA."""
    pems = write_pems(tmp_path / "named", ca, "hub.example")
    srv = await hub_factory(tls_cert=pems.cert, tls_key=pems.key)
    with pytest.raises(Unavailable, match="verification failed") as info:
        await HubClient(wss(srv), "tally", ca_file=pems.ca, connect_timeout=30).connect()
    assert "127.0.0.1" in str(info.value.__cause__)


async def test_self_signed_certificate_as_its_own_ca_file(
    hub_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """The operator's simplest setup: one self-signed certificate, given to the hub
    (with its key) and to the clients (alone)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "companion-hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "hub.pem"
    key_pem = tmp_path / "hub.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    srv = await hub_factory(tls_cert=str(cert_pem), tls_key=str(key_pem))
    async with HubClient(wss(srv), "tally", ca_file=str(cert_pem)) as hub:
        await hub.set("app.tally.status", "live")
    with pytest.raises(Unavailable, match="self-signed certificate"):
        await HubClient(wss(srv), "tally", connect_timeout=30).connect()


async def test_plain_ws_to_the_tls_port_fails(tls_hub: HubServer) -> None:
    url = f"ws://127.0.0.1:{tls_hub.port}/ws"
    with pytest.raises(Unavailable, match="wss://"):
        await HubClient(url, "tally", connect_timeout=1).connect()
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(connect_raw(url, "probe"), 5)
    assert not tls_hub.hub.sessions


async def test_wss_to_a_plain_port_fails_at_once(
    hub_factory: Callable[..., Any], pems: Pems
) -> None:
    plain = await hub_factory()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Unavailable, match="TLS handshake") as info:
        await HubClient(wss(plain), "tally", ca_file=pems.ca, connect_timeout=30).connect()
    assert loop.time() - t0 < TLS_FAILURE_S
    assert "serving TLS" in info.value.message


async def test_tls_options_are_checked_at_once(pems: Pems, ca: trustme.CA, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="wss://"):
        HubClient("ws://127.0.0.1:8420/ws", "tally", ca_file=pems.ca)
    with pytest.raises(BadRequest, match="wss://"):
        HubClient("ws://127.0.0.1:8420/ws", "tally", ssl=trusting(ca))
    with pytest.raises(BadRequest, match="not both"):
        HubClient("wss://127.0.0.1:8420/ws", "tally", ca_file=pems.ca, ssl=trusting(ca))
    with pytest.raises(ValueError, match="cannot load"):  # BadRequest is a ValueError
        HubClient("wss://127.0.0.1:8420/ws", "tally", ca_file=str(tmp_path / "missing.pem"))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(BadRequest, match="cannot load"):
        HubClient("wss://127.0.0.1:8420/ws", "tally", ca_file=str(not_pem))
    with pytest.raises(BadRequest, match="wss://"):
        await connect_raw("ws://127.0.0.1:8420/ws", "probe", ca_file=pems.ca)


# --- https on the same port -------------------------------------------------------------


async def test_https_on_the_same_port(tls_hub: HubServer, ca: trustme.CA) -> None:
    base = f"https://127.0.0.1:{tls_hub.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health/live", ssl=trusting(ca)) as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok"}
        async with http.get(f"{base}/api/state/hub.info", ssl=trusting(ca)) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"{base}/health/live")  # the system trust store
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"http://127.0.0.1:{tls_hub.port}/health/live")


# --- the CLI ----------------------------------------------------------------------------


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_cli_get_over_wss(
    tls_hub: HubServer,
    pems: Pems,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = wss(tls_hub)
    assert await run_cli("get", "hub.info", "--json", "--url", url, "--ca-file", pems.ca) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["key"] == "hub.info" and entry["value"]["hub"] == tls_hub.hub.hub_id

    # without the CA: refused at once, saying why and what to do
    monkeypatch.delenv("COMPANION_HUB_CA_FILE", raising=False)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await run_cli("get", "hub.info", "--url", url) == 1
    assert loop.time() - t0 < TLS_FAILURE_S + 2
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "certificate verification failed" in err
    assert "--ca-file" in err

    # the URL and the CA from the environment
    monkeypatch.setenv("COMPANION_HUB_URL", url)
    monkeypatch.setenv("COMPANION_HUB_CA_FILE", pems.ca)
    assert await run_cli("set", "--client", "tally", "app.tally.status", '"live"') == 0
    assert "version=1" in capsys.readouterr().out
    # the variable is not used for a ws:// URL (another, plain hub)...
    plain_url = f"ws://127.0.0.1:{tls_hub.port}/ws"
    assert await run_cli("get", "hub.info", "--url", plain_url, "--connect-timeout", "1") == 1
    assert "use wss://" in capsys.readouterr().err
    # ...but --ca-file with one is a mistake
    assert await run_cli("get", "hub.info", "--url", plain_url, "--ca-file", pems.ca) == 2
    assert "--ca-file is for a wss:// URL" in capsys.readouterr().err
    monkeypatch.delenv("COMPANION_HUB_CA_FILE")
    assert await run_cli("get", "hub.info", "--ca-file", str(Path(pems.ca).parent / "no")) == 2
    assert "cannot load" in capsys.readouterr().err


async def test_cli_replace_check_uses_https(
    tls_hub: HubServer, pems: Pems, capsys: pytest.CaptureFixture[str]
) -> None:
    """--client NAME of a connected application: the CLI asks the hub over https (with
    the same CA) and refuses to take the connection over."""
    url = wss(tls_hub)
    async with HubClient(url, "panel", ca_file=pems.ca) as panel:
        argv = ["set", "--url", url, "--ca-file", pems.ca, "--client", "panel"]
        assert await run_cli(*argv, "app.panel.x", "1") == 2
        err = capsys.readouterr().err
        assert "client 'panel' is connected" in err and "--replace" in err
        assert panel.connected and not panel.replaced


async def test_log_replay_over_wss(
    tls_hub: HubServer, pems: Pems, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log" / "hub.sqlite3"
    db.parent.mkdir()
    build_scenario(db)
    base = ["log", "replay", "--db", str(db), "--speed", "0", "--client", "replayer"]
    assert await run_cli(*base, "--url", wss(tls_hub), "--ca-file", pems.ca) == 0
    assert "replayed" in capfd.readouterr().err
    assert tls_hub.hub.store.get("app.replayer.replay.app.tally.count") is not None

    assert await run_cli(*base, "--url", wss(tls_hub)) == 1
    err = capfd.readouterr().err
    assert "certificate verification failed" in err and "--ca-file" in err
    plain_url = f"ws://127.0.0.1:{tls_hub.port}/ws"
    assert await run_cli(*base, "--url", plain_url, "--ca-file", pems.ca) == 2
    assert "--ca-file is for a wss:// URL" in capfd.readouterr().err


# --- companion-hub serve --tls-cert/--tls-key, as a process -----------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def served(pems: Pems) -> AsyncIterator[int]:
    """``companion-hub serve --tls-cert PEM --tls-key PEM`` as a process; its port."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "companion_hub",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        "memory",
        "--tls-cert",
        pems.cert,
        "--tls-key",
        pems.key,
        env={**os.environ, "COMPANION_HUB_LOG_LEVEL": "info", "COMPANION_HUB_LOG_FORMAT": "json"},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ctx = ssl.create_default_context(cafile=pems.ca)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        async with aiohttp.ClientSession() as http:
            while True:
                assert proc.returncode is None, "the hub exited"
                try:
                    async with http.get(f"https://127.0.0.1:{port}/health/ready", ssl=ctx) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectorError:
                    pass
                assert loop.time() < deadline, "the hub did not become ready"
                await asyncio.sleep(0.1)
        yield port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    text = err.decode()
    assert proc.returncode == 0, text
    assert f"wss://127.0.0.1:{port}/ws" in text  # the "hub listening" line says wss


async def test_serve_with_tls_flags(
    served: int, pems: Pems, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"wss://127.0.0.1:{served}/ws"
    assert await run_cli("get", "hub.info", "--json", "--url", url, "--ca-file", pems.ca) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["key"] == "hub.info"
