"""`qaqnuz serve`: one kernel, one transport, until stopped."""

from __future__ import annotations

import argparse

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import with_config
from qaqnuz.records import Command


def arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--transport", help="stdio or http (default: [server] transport)")
    parser.add_argument("--host", help="bind address for network transports (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port for network transports")


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = ctx.config(args)
    ctx.setup_logging(config.server.log_level)
    kernel = ctx.kernel(config)
    name = args.transport or config.server.transport
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        transport = kernel.transport(name, overrides)
    except BaseException:
        ctx.run(kernel.aclose)
        raise

    async def main() -> None:
        async with kernel.running() as host:
            ctx.settle()
            await transport.serve(host)

    ctx.serve(main)
    return 0


COMMANDS = [Command("serve", "serve MCP over a transport until stopped", run, arguments)]
