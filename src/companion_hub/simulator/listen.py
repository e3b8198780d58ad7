"""The simulator's listening sockets (Satellite, HTTP, Ember+): one rule for all."""

from __future__ import annotations

import errno
import socket

from ..core.errors import PortInUse


def listen_socket(host: str, port: int, setting: str = "port") -> socket.socket:
    """A bound, listening, non-blocking TCP socket (port 0 picks a free one).

    A port another process listens on raises :class:`PortInUse` naming ``setting``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port, setting) from None
        raise
    return sock
