"""The stdio transport: serves one MCP client over stdin/stdout with the key from `QAQNUZ_API_KEY`.

stdout carries JSON-RPC only (the SDK diverts stray writes to stderr while serving); logs go to stderr.
The key is checked at startup, so a bad key exits non-zero before anything is written to stdout, and
again on every request, so a revocation takes effect on the next call. EOF on stdin or SIGTERM/SIGINT
stop the server cleanly; the CLI then flushes last-used times.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import anyio
from mcp.server.stdio import stdio_server

import qaqnuz
from qaqnuz import Provider, ProviderContext, UsageError, hookimpl

log = logging.getLogger("qaqnuz.stdio")
ENV_KEY = "QAQNUZ_API_KEY"


class StdioTransport:
    async def serve(self, kernel: Any) -> None:
        key = os.environ.get(ENV_KEY, "").strip() or None
        if await kernel.authenticate(key, transport="stdio") is None:
            raise UsageError(
                f"{ENV_KEY} is missing, malformed, unknown, expired or revoked; "
                f"mint a key with `qaqnuz keys create` and export it as {ENV_KEY}"
            )
        binding = qaqnuz.Binding(kernel, lambda ctx: key, transport="stdio")
        server = binding.server
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(kernel.run_background)
                tg.start_soon(_stop_on_signal, tg.cancel_scope)
                log.info("serving MCP over stdio")
                async with stdio_server() as (read_stream, write_stream):
                    await server.run(read_stream, write_stream, server.create_initialization_options())
                log.info("stdin closed; stopping")
                tg.cancel_scope.cancel()
        finally:
            binding.close()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; stopping", signal.Signals(signum).name)
            scope.cancel()
            return


def _factory(settings: object, ctx: ProviderContext) -> StdioTransport:
    return StdioTransport()


@hookimpl
def qaqnuz_transports() -> list[Provider]:
    return [Provider("stdio", _factory, "One MCP client over stdin/stdout; key from QAQNUZ_API_KEY.")]


def main(argv: list[str] | None = None) -> int:
    """`qaqnuz-mcp`: the same as `qaqnuz serve --transport stdio`."""
    args = sys.argv[1:] if argv is None else argv
    return int(qaqnuz.run_cli(["serve", "--transport", "stdio", *args]))  # type: ignore[operator]
