"""`qaqnuz plugins list`: name, distribution, version, providers, routes, commands and hooks of each plugin."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import table
from qaqnuz.records import Command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON output")


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    plugins = ctx.plugins
    provided: dict[str, list[str]] = {}
    for kind, registered in plugins.providers.items():
        for name, reg in registered.items():
            provided.setdefault(reg.plugin.name, []).append(f"{kind}:{name}")
    for name, route in plugins.routes.items():
        provided.setdefault(route.plugin.name, []).append(f"route:{name}")
    commands: dict[str, list[str]] = {}
    for name, command in plugins.commands.items():
        if command.command.run is not None:
            commands.setdefault(command.plugin.name, []).append(name)
    items: list[dict[str, Any]] = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "hooks": list(i.hooks),
            "providers": provided.get(i.name, []),
            "commands": commands.get(i.name, []),
            "builtin": i.builtin,
        }
        for i in plugins.infos
    ]
    if args.json:
        ctx.out(json.dumps(items))
        return 0
    rows = [[i["name"], i["distribution"], i["version"], ",".join(i["providers"]), ",".join(i["hooks"])] for i in items]
    ctx.out(table(rows, ["NAME", "DISTRIBUTION", "VERSION", "PROVIDES", "HOOKS"]))
    return 0


COMMANDS = [
    Command("plugins", "installed plugins"),
    Command("plugins list", "name, distribution, version, providers and hooks of each plugin", run, arguments),
]
