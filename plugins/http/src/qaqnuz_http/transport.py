"""Serving: uvicorn on a socket we bind ourselves, tool sync in the background, graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import uvicorn

from qaqnuz import Host, UsageError, listen_socket
from qaqnuz_http.app import Built, build_app
from qaqnuz_http.coalesce import held_writes_protocol
from qaqnuz_http.connections import deadline_protocol
from qaqnuz_http.direct import direct_protocol, direct_support
from qaqnuz_http.settings import HttpSettings, Limits, is_loopback

log = logging.getLogger("qaqnuz.http")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises SIGTERM after shutdown, which would kill the
    process before the kernel flushes last-used times. We watch signals ourselves."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpTransport:
    def __init__(self, settings: HttpSettings, limits: Limits, *, metrics_token: bytes | None = None) -> None:
        self.settings = settings
        self.limits = limits
        self._metrics_token = metrics_token
        self.server: _Server | None = None
        self.port: int | None = None  # the bound port (useful with port = 0)
        self.built: Built | None = None  # the running app (its binding, session manager and fast path)
        self._adopted: socket.socket | None = None

    @property
    def shutdown_seconds(self) -> float:
        """How long `serve` may take to finish in-flight calls once asked to stop."""
        return self.limits.shutdown_timeout

    def listen(self) -> socket.socket:
        """Bind the configured address now and return the socket, inheritable, for worker processes
        (`qaqnuz serve --workers N`): each adopts it and accepts on it."""
        return _bind(self.settings.host, self.settings.port)

    def adopt(self, fd: int) -> None:
        """Serve on an inherited listening socket instead of binding one."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise UsageError(f"--listen-fd {fd}: not a socket this process inherited ({exc.strerror or exc})") from None
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise UsageError(f"--listen-fd {fd}: not a listening TCP socket")
        sock.set_inheritable(False)  # nothing a tool starts may hold the port open after this worker exits
        self._adopted = sock

    def stop(self) -> None:
        """Ask a running `serve` to finish in-flight calls and return (safe from any thread)."""
        if self.server is not None:
            self.server.should_exit = True

    async def serve(self, host: Host) -> None:
        s = self.settings
        if host.loopback_only and not is_loopback(s.host):
            raise UsageError(
                f"refusing to listen on {s.host}: the selected auth provider checks no credential and may only "
                f"serve loopback addresses (127.0.0.1, ::1, localhost)"
            )
        self.built = built = build_app(host, s, self.limits, metrics_token=self._metrics_token)
        host.hold_audit()  # every write below settles the held audit records first (HeldWrites)
        protocol = held_writes_protocol(host.settle_audit)  # a response's head and body in one write
        if built.direct is not None:
            if direct_support():
                protocol = direct_protocol(built.direct)
            else:
                log.warning("fast-path requests go through the ASGI stack: uvicorn's request cycle is not as expected")
        protocol = deadline_protocol(protocol, self.limits.header_timeout)  # idle and dribbling sockets
        sock = self._adopted if self._adopted is not None else _bind(s.host, s.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            built.app,
            log_config=None,
            access_log=False,  # ours is redacted; uvicorn's would print the query string
            server_header=False,
            proxy_headers=False,
            ws="none",
            http=protocol,
            lifespan="on",
            timeout_keep_alive=max(1, math.ceil(self.limits.keep_alive_timeout)),
            limit_concurrency=s.max_connections,  # beyond it uvicorn answers 503 instead of queueing
            timeout_graceful_shutdown=max(1, math.ceil(self.limits.shutdown_timeout)),
        )
        self.server = server = _Server(config)
        restore = _bridge_logging()
        if not is_loopback(s.host):
            log.warning(
                "listening on non-loopback address %s: every MCP request must carry an API key; only Host "
                "headers in allowed_hosts (%s) are served",
                s.host,
                ", ".join(s.allowed_hosts),
            )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain_on_exit, server, built)
                if threading.current_thread() is threading.main_thread():
                    tg.start_soon(self._watch_signals, server, built)
                tg.start_soon(self._announce, server)
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()
        finally:
            built.binding.close()
            sock.close()
            restore()
            self.server = None
        log.info("HTTP server stopped")

    async def _announce(self, server: _Server) -> None:
        await _until(lambda: server.started)
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        log.info("serving MCP over HTTP at http://%s:%d/mcp", host, self.port)

    async def _watch_signals(self, server: _Server, built: Built) -> None:
        first = 0.0
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if server.should_exit and time.monotonic() - first < 1.0:
                    continue  # the same stop delivered twice (a launcher forwarding it, and the sender)
                if server.should_exit:  # a second signal: stop now
                    log.warning("received %s again; stopping without waiting", signal.Signals(signum).name)
                    server.force_exit = True
                    built.tracker.end_streams()
                    continue
                log.info("received %s; finishing in-flight calls", signal.Signals(signum).name)
                first = time.monotonic()
                server.should_exit = True

    async def _drain_on_exit(self, server: _Server, built: Built) -> None:
        """Once asked to stop: refuse new MCP requests, wait for those in flight, then end open streams."""
        await _until(lambda: server.should_exit)
        tracker = built.tracker
        tracker.draining = True
        deadline = time.monotonic() + self.limits.shutdown_timeout
        await _until(lambda: tracker.in_flight == 0 or time.monotonic() >= deadline)
        if tracker.in_flight:
            log.warning("%d MCP requests still in flight at the shutdown timeout", tracker.in_flight)
        tracker.end_streams()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll: uvicorn's flags are plain attributes, set by `stop()` from any thread or by a signal."""
    while not condition():  # noqa: ASYNC110
        await anyio.sleep(0.05)


def _bind(host: str, port: int) -> socket.socket:
    return listen_socket(host, port, backlog=2048, inheritable=True)  # workers share it


def _bridge_logging() -> Any:
    """Route uvicorn's and the SDK's own loggers through the qaqnuz handlers (and their redaction).

    The SDK logs request bodies at debug level, so it is capped at warning whatever `log_level` says.
    """
    ours = logging.getLogger("qaqnuz")
    saved = []
    strip = _StripTracebacks()
    for name, floor in (("uvicorn", logging.INFO), ("mcp", logging.WARNING), ("sse_starlette", logging.WARNING)):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        if not logger.handlers and ours.handlers:
            logger.handlers[:] = ours.handlers
            logger.propagate = False
        logger.setLevel(max(floor, ours.getEffectiveLevel()))
        logger.addFilter(strip)

    def restore() -> None:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
            logger.removeFilter(strip)

    return restore


class _StripTracebacks(logging.Filter):
    """The SDK's and uvicorn's error records can carry request bodies in their tracebacks (pydantic
    prints the input it rejected): keep the message, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            kind = record.exc_info[0] if record.exc_info else None
            record.msg = f"{record.getMessage()} ({kind.__name__ if kind is not None else 'error'})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True
