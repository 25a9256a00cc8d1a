"""`qaqnuz config check`: validate everything `serve` would, reporting every error of the file at once."""

from __future__ import annotations

import argparse

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import with_config
from qaqnuz.config import default_config_path, load_config_lenient
from qaqnuz.errors import ConfigError
from qaqnuz.records import Command


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    from qaqnuz.checking import check

    ctx.setup_logging("warning")
    path = args.config or default_config_path()
    config, problems = load_config_lenient(path)
    if config is None:
        raise ConfigError(problems)
    report = ctx.run(lambda: check(config, ctx.plugins, problems))
    for warning in report.warnings:
        ctx.err(f"warning: {warning}")
    if report.problems:
        raise ConfigError(list(report.problems))
    ctx.err(
        f"{config.path}: OK ({report.brands} brands, {report.packs} packs, {report.tools} tools"
        f"{f', {len(report.warnings)} warning(s)' if report.warnings else ''})"
    )
    return 0


COMMANDS = [
    Command("config", "validate configuration"),
    Command(
        "config check",
        "validate config as serve would (providers, packs, transports), reporting every error with its location",
        run,
        with_config,
    ),
]
