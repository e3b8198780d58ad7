"""TLS on the client side: which certificates a ``wss://`` connection trusts.

The server's certificate is always verified (chain and host name). By default against
the system's trust store; with ``ca_file`` against the CA certificates of that PEM file
only (the hub's own self-signed certificate, or the operator's CA); with ``ssl`` as the
caller's :class:`ssl.SSLContext` says (client certificates, pinning, other defaults).
There is no switch that turns verification off: a caller who really wants that builds
the context themselves.
"""

from __future__ import annotations

import ssl as _ssl
import urllib.parse

import aiohttp

from .errors import BadRequest

__all__ = ["TLS_SCHEMES", "client_ssl", "describe_tls_error", "is_tls_url"]

TLS_SCHEMES = ("wss", "https")
"""URL schemes that speak TLS."""


def is_tls_url(url: str) -> bool:
    """Whether ``url`` is ``wss://`` (or ``https://``)."""
    return urllib.parse.urlsplit(url).scheme.lower() in TLS_SCHEMES


def client_ssl(
    url: str, *, ca_file: str | None = None, ssl: _ssl.SSLContext | None = None
) -> _ssl.SSLContext | bool:
    """What to give aiohttp's ``ssl=`` for ``url``.

    ``True`` (aiohttp's default: verify against the system's trust store) unless
    ``ca_file`` (a context that trusts only the CA certificates in that PEM file) or
    ``ssl`` (used as given) says otherwise. Raises :class:`BadRequest` (a
    :class:`ValueError`) when both are given, when either is given for a URL that is
    not ``wss://`` (it would silently not be used), or when ``ca_file`` cannot be
    loaded.
    """
    if ca_file is not None and ssl is not None:
        raise BadRequest("give ca_file or ssl, not both")
    if ca_file is None and ssl is None:
        return True
    if not is_tls_url(url):
        what = "ca_file" if ca_file is not None else "ssl"
        raise BadRequest(f"{what} is for a wss:// URL; {url!r} does not use TLS")
    if ssl is not None:
        if not isinstance(ssl, _ssl.SSLContext):
            raise BadRequest(f"ssl must be an ssl.SSLContext, not {type(ssl).__name__}")
        return ssl
    assert ca_file is not None
    try:
        return _ssl.create_default_context(_ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, _ssl.SSLError) as exc:
        raise BadRequest(f"ca_file {ca_file!r}: cannot load the CA certificates: {exc}") from None


def describe_tls_error(url: str, exc: aiohttp.ClientSSLError) -> str:
    """A sentence for a failed TLS handshake with ``url``, with the likely fix."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        reason = getattr(cause, "verify_message", None) or str(cause)
        return (
            f"TLS certificate verification failed for {url}: {reason}. Trust the hub's "
            "certificate (or its CA) with ca_file= (CLI: --ca-file PEM)"
        )
    return (
        f"TLS handshake with {url} failed: {exc.os_error or exc} "
        "(is the hub serving TLS on that port?)"
    )
