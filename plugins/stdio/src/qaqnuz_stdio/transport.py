"""The stdio transport itself: serves one MCP client over stdin/stdout with the key from `QAQNUZ_API_KEY`.

stdout carries JSON-RPC only (the SDK diverts stray writes to stderr while serving); logs go to stderr.
The key is checked at startup, so a bad key exits non-zero before anything is written to stdout, and
again on every request, so a revocation takes effect on the next call. EOF on stdin or SIGTERM/SIGINT
stop the server cleanly; the CLI then flushes last-used times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.stdio import stdio_server

import qaqnuz
from qaqnuz import Host, UsageError

log = logging.getLogger("qaqnuz.stdio")
ENV_KEY = "QAQNUZ_API_KEY"


class StdioTransport:
    async def serve(self, host: Host) -> None:
        key = os.environ.pop(ENV_KEY, "").strip() or None  # not inherited by anything a tool starts
        if await host.authenticate(key, transport="stdio") is None:
            raise UsageError(
                f"{ENV_KEY} is missing, malformed, unknown, expired or revoked; "
                f"mint a key with `qaqnuz keys create` and export it as {ENV_KEY}"
            )
        binding = qaqnuz.Binding(host, lambda ctx: key, transport="stdio")
        server = binding.server
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, tg.cancel_scope)
                log.info("serving MCP over stdio")
                async with stdio_server(stdin=_claim_stdin()) as (read_stream, write_stream):  # type: ignore[arg-type]
                    await server.run(read_stream, write_stream, server.create_initialization_options())
                log.info("stdin closed; stopping")
                tg.cancel_scope.cancel()
        finally:
            binding.close()


class _StdinLines:
    """Lines from a private duplicate of stdin, read by a daemon thread.

    The SDK's own reader uses a worker thread that shutdown must wait for, so SIGTERM could not stop a
    server whose client keeps the pipe open. A daemon thread never holds up exit. fd 0 itself is pointed
    at /dev/null, as the SDK does, so tools and child processes can never read the wire.
    """

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "r", encoding="utf-8", errors="replace")
        self._send, self._receive = anyio.create_memory_object_stream[str](64)
        self._thread: threading.Thread | None = None

    def _pump(self, token: Any) -> None:
        # If the loop is gone (shutdown) or stdin broke, either way the server sees EOF.
        with contextlib.suppress(Exception):
            for line in self._file:
                anyio.from_thread.run(self._send.send, line, token=token)
        with contextlib.suppress(Exception):
            anyio.from_thread.run_sync(self._send.close, token=token)

    def __aiter__(self) -> _StdinLines:
        if self._thread is None:
            token = anyio.lowlevel.current_token()
            self._thread = threading.Thread(target=self._pump, args=(token,), name="qaqnuz-stdin", daemon=True)
            self._thread.start()
        return self

    async def __anext__(self) -> str:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


def _claim_stdin() -> _StdinLines:
    private = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return _StdinLines(private)


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; stopping", signal.Signals(signum).name)
            scope.cancel()
            return
