"""A real OTLP/HTTP receiver and a real qaqnuz server (kernel + HTTP transport on 127.0.0.1, in a thread with
its own loop) tracing to it, with a small pack of this folder's own (`otelkit`)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from otelkit import OtelTestPack, Receiver, Server, handler  # noqa: E402

from qaqnuz.testing import write_config  # noqa: E402


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    rec = Receiver(server)
    server.RequestHandlerClass = handler(rec)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def otel_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: `otel_server(config_text)` → a running server with the HTTP transport (stopped after)."""
    servers: list[Server] = []

    def start(config_text: str) -> Server:
        folder = tmp_path / f"server{len(servers)}"
        server = Server(folder)
        servers.append(server)
        server.start(write_config(folder, config_text), plugins=["http", "otel", OtelTestPack()])
        return server

    yield start
    for server in servers:
        server.stop()
