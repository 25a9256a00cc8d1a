"""`qaqnuz store migrate`: bring the store's schema up to date, before a deploy rather than at a start.

A store that keeps a versioned schema (PostgreSQL) offers `migrate()`; every server also runs it at start
under the store's own lock, so this command is for operators who migrate as a separate deploy step and for
seeing what a new version would change. The embedded SQLite store creates and upgrades its file when it is
opened, so there is nothing to run for it.
"""

from __future__ import annotations

import argparse

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import with_config
from qaqnuz.records import Command


def arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)


def migrate(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = ctx.config(args)
    admin = ctx.admin(config)
    scheme = config.store_scheme
    run = getattr(admin.store, "migrate", None)

    async def main() -> list[str] | None:
        try:
            return list(await run()) if run is not None else None
        finally:
            await admin.aclose()

    if run is None:
        ctx.run(admin.aclose, inline=admin.inline)
        ctx.err(f"store {scheme}: its schema is created and upgraded when it is opened; nothing to migrate")
        return 0
    applied = ctx.run(main)
    if applied:
        for name in applied:
            ctx.out(f"applied {name}")
        ctx.err(f"store {scheme}: {len(applied)} migration(s) applied; the schema is up to date")
    else:
        ctx.err(f"store {scheme}: the schema is already up to date")
    return 0


COMMANDS = [
    Command("store", "store tools"),
    Command(
        "store migrate", "apply the store's pending schema migrations (also run at every start)", migrate, arguments
    ),
]
