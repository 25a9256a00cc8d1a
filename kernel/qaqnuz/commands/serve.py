"""`qaqnuz serve`: one kernel, one transport, until stopped; or several worker processes on one socket.

`--metrics-port` gives a transport without an HTTP listener of its own (stdio) a Prometheus endpoint: a
tiny server on the same event loop, bound before serving starts (a taken port is a usage error, not a
half-started server), stopped with the server, and writing only to its sockets, since stdout may be the
JSON-RPC channel.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import with_config
from qaqnuz.errors import UsageError
from qaqnuz.listening import listen_socket
from qaqnuz.records import Command

#: Limiters whose windows live in one process: several workers would each admit the whole limit.
_PROCESS_LOCAL_LIMITERS = ("memory",)


def arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--transport", help="stdio or http (default: [server] transport)")
    parser.add_argument("--host", help="bind address for network transports (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port for network transports")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (network transports; default 1). Limits, approvals, "
        "revocations and /metrics hold across them; needs a shared limiter (sqlite, the default, or redis)",
    )
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="also serve GET /metrics (Prometheus text) on this port while serving, e.g. for stdio, which has "
        "no HTTP listener of its own (one process only; the http transport has /metrics already)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="bind address for --metrics-port (default 127.0.0.1; metric labels name brands, tools and packs)",
    )


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = ctx.config(args)
    ctx.setup_logging(config.server.log_level, config.server.log_format)
    if args.workers < 1:
        raise UsageError(f"--workers: {args.workers} is not a number of processes; give 1 or more")
    name = args.transport or config.server.transport
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    metrics_sock = None
    if args.metrics_port is not None:
        if args.workers > 1:
            raise UsageError("--metrics-port: one process only; with --workers use the http transport's /metrics")
        metrics_sock = listen_socket(args.metrics_host, args.metrics_port, backlog=64, inheritable=False,
                                     what="--metrics-port")  # fmt: skip
    try:
        kernel = ctx.kernel(config)
    except BaseException:
        if metrics_sock is not None:
            metrics_sock.close()
        raise
    try:
        transport = kernel.transport(name, overrides)
        if args.workers > 1:
            listen = _listener(transport, name)
        if args.workers > 1 or args.listen_fd is not None:  # the supervisor, and each worker (re)started
            _shared_limiter(config.plugins.limiter, args.workers)
    except BaseException:
        if metrics_sock is not None:
            metrics_sock.close()
        ctx.run(kernel.aclose)
        raise
    if args.workers > 1:
        ctx.run(kernel.aclose)  # the supervisor serves nothing itself; each worker builds its own kernel
        return _supervise(args, config.path, name, listen, transport)
    if args.listen_fd is not None:
        transport.adopt(args.listen_fd)

    async def main() -> None:
        async with kernel.running() as host:
            ctx.settle()
            if metrics_sock is None:
                await _serve(transport, host, args.listen_fd is not None)
                return
            import anyio

            async with anyio.create_task_group() as tg:
                tg.start_soon(_serve_metrics, metrics_sock, lambda: host.metrics_registry)
                await _serve(transport, host, args.listen_fd is not None)
                tg.cancel_scope.cancel()

    ctx.serve(main)
    return 0


def _listener(transport: Any, name: str) -> Any:
    listen = getattr(transport, "listen", None)
    if listen is None or not hasattr(transport, "adopt"):
        raise UsageError(
            f"--workers: the {name} transport serves one client per process and cannot share a socket; "
            f"start one process per client, or use --transport http"
        )
    return listen


def _shared_limiter(limiter: str, workers: int) -> None:
    """Workers share limits only through a shared limiter. A running server cannot switch limiters (a
    restart-only setting), but a worker restarted after the file changed reads it anew: checked there too."""
    if limiter in _PROCESS_LOCAL_LIMITERS:
        count = f"{workers} workers" if workers > 1 else "several workers"
        raise UsageError(
            f"--workers: [plugins] limiter = {limiter!r} counts in one process, so {count} would each admit "
            f'the whole limit; use limiter = "sqlite" (shared through a file beside the store) or "redis"'
        )


def _supervise(args: argparse.Namespace, config_path: str | None, name: str, listen: Any, transport: Any) -> int:
    import logging

    from qaqnuz.workers import Supervisor

    sock = listen()
    host, port = sock.getsockname()[:2]
    argv = ["serve", "--transport", name]
    if config_path:
        argv += ["--config", config_path]
    if args.host is not None:
        argv += ["--host", args.host]
    argv += ["--port", str(port)]
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("qaqnuz.workers").info("listening on %s:%d for %d %s workers", shown, port, args.workers, name)
    try:
        return Supervisor(argv, sock.fileno(), args.workers, shutdown_timeout=transport.shutdown_seconds).run()
    finally:
        sock.close()


async def _serve(transport: Any, host: Any, worker: bool) -> None:
    if not worker:
        await transport.serve(host)
        return
    import anyio

    from qaqnuz.workers import parent_gone

    async def watch_parent() -> None:
        while not parent_gone():  # noqa: ASYNC110 - a parent that vanished sends no event
            await anyio.sleep(1.0)
        transport.stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_parent)
        await transport.serve(host)
        tg.cancel_scope.cancel()


#: How long a scraper may take to send its request line and headers.
_METRICS_READ_TIMEOUT = 10.0


async def _serve_metrics(sock: socket.socket, registry: Callable[[], Any]) -> None:
    """GET /metrics on `sock` until cancelled; any other path is 404, any other method 405."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    log = logging.getLogger("qaqnuz.metrics")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_METRICS_READ_TIMEOUT):
                request = await reader.readline()
                for _ in range(100):  # headers: read and ignored (no auth here: bind it where it belongs)
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
            parts = request.split()
            method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
            if method not in (b"GET", b"HEAD"):
                status, kind, body = b"405 Method Not Allowed", b"text/plain", b"method not allowed\n"
            elif path != b"/metrics":
                status, kind, body = b"404 Not Found", b"text/plain", b"not found\n"
            else:
                status, kind, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(registry())
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\n" \
                   b"Connection: close\r\n\r\n" % (status, kind, len(body))  # fmt: skip
            writer.write(head if method == b"HEAD" else head + body)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        except Exception as exc:
            log.error("answering a metrics scrape failed (%s)", type(exc).__name__)
        finally:
            writer.close()

    server = await asyncio.start_server(answer, sock=sock)
    host, port = sock.getsockname()[:2]
    log.info("serving /metrics at http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
    async with server:
        await server.serve_forever()


COMMANDS = [Command("serve", "serve MCP over a transport until stopped", run, arguments)]
