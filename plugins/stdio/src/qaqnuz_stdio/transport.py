"""The stdio transport itself: serves one MCP client over stdin/stdout with the key from `QAQNUZ_API_KEY`.

stdout carries JSON-RPC only (fd 1 points at stderr while serving, so stray writes miss the wire); logs go
to stderr. Plain tools/call and tools/list lines take the fast path (`fastpath.py`); the SDK serves the rest.
The key is checked at startup, so a bad key exits non-zero before anything is written to stdout, and
again on every request, so a revocation takes effect on the next call. EOF on stdin or SIGTERM/SIGINT
stop the server cleanly; the CLI then flushes last-used times.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import anyio
from mcp.server.stdio import stdio_server

import qaqnuz
from qaqnuz import Host, UsageError
from qaqnuz_stdio import pipes
from qaqnuz_stdio.fastpath import Calls, FastPath, Intercept, RequestIds, WatchedOutput
from qaqnuz_stdio.faults import Checked
from qaqnuz_stdio.settings import StdioSettings

log = logging.getLogger("qaqnuz.stdio")
ENV_KEY = "QAQNUZ_API_KEY"


class StdioTransport:
    def __init__(self, settings: StdioSettings | None = None) -> None:
        self.settings = settings or StdioSettings()
        self.fast: FastPath | None = None  # while serving with the fast path on (tests read `answered`)

    async def serve(self, host: Host) -> None:
        key = os.environ.pop(ENV_KEY, "").strip() or None  # not inherited by anything a tool starts
        try:
            principal = await host.authenticate(key, transport="stdio")
        except qaqnuz.CredentialsUnavailable:
            raise qaqnuz.StoreError(
                f"{ENV_KEY} cannot be checked: the store is not answering; start again once it is"
            ) from None
        if principal is None:
            raise UsageError(
                f"{ENV_KEY} is missing, malformed, unknown, expired or revoked; "
                f"mint a key with `qaqnuz keys create` and export it as {ENV_KEY}"
            )
        binding = qaqnuz.Binding(host, lambda ctx: key, transport="stdio")
        server = binding.server
        # `qaqnuz_sessions_open{transport="stdio"}` is 1 while the client is connected (a host without the
        # methods, such as a test double, counts nothing).
        opened = getattr(host, "session_opened", None)
        closed = getattr(host, "session_closed", None)
        devnull = os.open(os.devnull, os.O_RDONLY)
        if opened is not None and closed is not None:
            opened("stdio")
        try:
            with pipes.claimed(0, devnull) as stdin_fd, pipes.claimed(1, 2) as stdout_fd:
                os.close(devnull)
                devnull = -1
                lines = await pipes.open_lines(stdin_fd, self.settings.max_message_bytes)
                output = await pipes.Output.open(stdout_fd, host.settle_audit)
                host.hold_audit()  # every write to stdout settles the held audit records first (Output)
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_stop_on_signal, tg.cancel_scope)
                        log.info("serving MCP over stdio")
                        calls = Calls()  # fast-path calls: EOF lets them finish; a failed one stops serving
                        with anyio.CancelScope() as serving:
                            calls.on_failure = serving.cancel
                            # protocol faults answered here; one request id per JSON-RPC message
                            stdin: Any = RequestIds(Checked(lines, output))
                            stdout: Any = output
                            if self.settings.fast_path:
                                self.fast = FastPath(host, key, output, calls)
                                stdin, stdout = Intercept(stdin, self.fast), WatchedOutput(output, self.fast)
                            try:
                                async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
                                    await server.run(read_stream, write_stream, server.create_initialization_options())
                                await calls.wait()  # EOF: running calls finish (a signal still cancels them)
                            except BaseException as stopped:  # a signal, a failure: the calls end with it
                                calls.cancel()
                                try:
                                    await calls.finish()
                                except Exception as failure:
                                    if isinstance(stopped, anyio.get_cancelled_exc_class()):
                                        raise  # the failed call is why serving was cancelled: it is the error
                                    log.error("a fast-path call failed too (%s)", type(failure).__name__)
                                raise
                        await calls.finish()  # a failed call stopped serving: raise it
                        log.info("stdin closed; stopping")
                        tg.cancel_scope.cancel()
                finally:
                    output.close()
                    pipes.restore_blocking(stdin_fd)
                    pipes.restore_blocking(stdout_fd)
        finally:
            if devnull >= 0:
                os.close(devnull)
            binding.close()
            if opened is not None and closed is not None:
                closed("stdio")


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; stopping", signal.Signals(signum).name)
            scope.cancel()
            return
