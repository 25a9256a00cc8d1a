"""`qaqnuz tools list`: every tool, and why it is or is not visible per brand and role.

Tool packs are built offline: nothing connects upstream and an unset pack secret is not an error, so the
list works on a machine without the production credentials.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import table, with_config
from qaqnuz.errors import UsageError
from qaqnuz.records import Command


def arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--brand", help="only this brand")
    parser.add_argument("--json", action="store_true", help="JSON output")


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = ctx.config(args)
    ctx.setup_logging("warning")
    if args.brand is not None and args.brand not in config.brands:
        raise UsageError(
            f"unknown brand {args.brand!r}; configured brands: {', '.join(sorted(config.brands)) or 'none'}"
        )
    kernel = ctx.kernel(config, offline=True)

    async def load() -> list[dict[str, Any]]:
        from qaqnuz.explain import explain_brand

        async with kernel.running(background=False, strict=False):
            brands = [args.brand] if args.brand else sorted(config.brands)
            return [row for brand in brands for row in explain_brand(kernel.runtime, kernel.registry.snapshot, brand)]

    rows = ctx.run(load)
    if args.json:
        ctx.out(json.dumps(rows))
        return 0
    cells = [
        [r["brand"], r["tool"], r["scope"], r["side_effect"], "yes" if r["visible"] else "no", r["why"]] for r in rows
    ]
    ctx.out(table(cells, ["BRAND", "TOOL", "SCOPE", "SIDE_EFFECT", "VISIBLE", "WHY"]))
    return 0


COMMANDS = [
    Command("tools", "inspect the tool catalogue"),
    Command("tools list", "every tool, and why it is or is not visible per brand", run, arguments),
]
