"""`qaqnuz audit verify`: check the audit file's hash chain."""

from __future__ import annotations

import argparse

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import with_config
from qaqnuz.records import Command


def arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--file", help="audit file (default: [server] audit_file from config)")


def verify(args: argparse.Namespace, ctx: CommandContext) -> int:
    from qaqnuz.audit import verify as verify_chain

    if args.file:
        path = args.file
    else:
        config = ctx.config(args)
        path = config.resolve(config.server.audit_file)
    count, problems = verify_chain(path)
    for problem in problems:
        ctx.err(f"{path}: {problem}")
    if problems:
        ctx.err(f"{path}: {len(problems)} problem(s) in {count} lines; the log was altered")
        return 1
    ctx.err(f"{path}: OK, {count} lines, hash chain intact")
    return 0


COMMANDS = [
    Command("audit", "audit log tools"),
    Command("audit verify", "check the audit log's hash chain", verify, arguments),
]
