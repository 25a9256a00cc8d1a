"""qaqnuz-demo: the `qaqnuz demo` command and the demo shop generator.

`qaqnuz demo` sets up a folder once (config, server secret, the demo shop database, a key), prints the key
with ready-to-paste client settings, and serves the shop over HTTP through the `sql` pack. This module only
registers the command (the command line loads every plugin on start, so it stays light); the work is in
`qaqnuz_demo.demo`, the generator in `qaqnuz_demo.shop`.
"""

from __future__ import annotations

import argparse

from qaqnuz import Command, CommandContext, UsageError, hookimpl

DEFAULT_DIR = "qaqnuz-demo"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help=f"demo folder, created once and reused (default: ./{DEFAULT_DIR})"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address the HTTP transport binds (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port the HTTP transport binds (default: {DEFAULT_PORT})"
    )
    parser.add_argument("--no-serve", action="store_true", help="set up and print, but do not start the server")


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    """Set up the demo folder once, print the key and client settings (the result: stdout), serve HTTP."""
    from pathlib import Path

    from qaqnuz_demo import demo

    serve = not args.no_serve
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: use a port between 1 and 65535")
    needs = demo.missing(ctx.plugins, serve=serve)
    if needs:
        raise UsageError(demo.describe_missing(needs))
    folder = Path(args.dir)
    created = demo.prepare(folder)
    config = ctx.config(argparse.Namespace(config=str(folder / demo.CONFIG_FILE)))
    ctx.setup_logging(config.server.log_level, config.server.log_format)
    kernel = ctx.kernel(config)
    transport = kernel.transport("http", {"host": args.host, "port": args.port}) if serve else None

    async def main() -> None:
        async with kernel.running() as host:
            key, minted = await demo.demo_key(kernel, folder)
            for name in [*created, *([demo.KEY_FILE] if minted else [])]:
                ctx.err(f"created {folder / name}")
            if not serve and demo.missing(ctx.plugins, serve=True):
                ctx.err(f"note: serving needs the http transport (distribution qaqnuz-http): {demo.INSTALL_HINT}")
            ctx.out(
                demo.instructions(folder=folder, key=key, host=args.host, port=args.port, serving=serve), reveal=True
            )
            if transport is not None:
                ctx.settle()
                await transport.serve(host)

    ctx.serve(main)
    return 0


@hookimpl
def qaqnuz_commands() -> list[Command]:
    return [
        Command(
            "demo",
            "set up a demo brand, shop database and key once, print how to connect, serve HTTP",
            run,
            arguments,
            epilog="The key and the client settings are the command's result and go to stdout; logs go to stderr.",
        )
    ]
