"""A listening TCP socket bound before serving starts, so a taken port is a clear usage error at start (exit
2) instead of a traceback from inside a server library: the HTTP transport's and `--metrics-port`'s."""

from __future__ import annotations

import socket

from qaqnuz.errors import UsageError


def listen_socket(host: str, port: int, *, backlog: int, inheritable: bool, what: str = "") -> socket.socket:
    """Bound and listening on `host:port`; `inheritable` for a socket worker processes share, `what` names
    the option in the error ("--metrics-port")."""
    prefix = f"{what}: " if what else ""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"{prefix}cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise UsageError(f"{prefix}cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(inheritable)
    return sock
