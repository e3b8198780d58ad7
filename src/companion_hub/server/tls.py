"""TLS for the hub's port: ``wss://`` and ``https://`` with a PEM certificate."""

from __future__ import annotations

import ssl

from ..core.errors import CompanionHubError


class TlsError(CompanionHubError):
    """The certificate or key cannot be used."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side context with the standard library's secure defaults (TLS 1.2+)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"tls_cert/tls_key: cannot load {cert} / {key}: {exc}") from None
    return ctx
