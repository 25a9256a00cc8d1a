"""`qaqnuz init`: a starting config and a fresh server secret."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from qaqnuz.command_context import CommandContext
from qaqnuz.errors import UsageError
from qaqnuz.records import Command

INIT_CONFIG = """\
# qaqnuz configuration. Every option is documented in the README ("Configuration").
[server]
name = "qaqnuz-mcp"
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
audit_file = "qaqnuz-audit.jsonl"

[plugins]
limiter = "sqlite"   # limits shared by every process on this machine ("memory": one process only)
approver = "queue"

# A brand is a tenant. Keys belong to one brand and one role; a role's list is its scope ceiling.
# [brands.acme]
# plan = "growth"
# roles = { viewer = ["orders.read"], manager = ["orders.read", "orders.write"] }
# tools.get_order_status = { exposable = true }
# tools.create_order = { exposable = true, approval = true }
"""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".", help="folder to write qaqnuz.toml and qaqnuz.secret into (default: .)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace, ctx: CommandContext) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    config_path, secret_path = folder / "qaqnuz.toml", folder / "qaqnuz.secret"
    existing = [p for p in (config_path, secret_path) if p.exists()]
    if existing and not args.force:
        raise UsageError(f"{', '.join(map(str, existing))} already exist; pass --force to overwrite")
    config_path.write_text(INIT_CONFIG, encoding="utf-8")
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    os.chmod(secret_path, 0o600)
    ctx.err(f"wrote {config_path} and {secret_path} (mode 0600). Next: add a brand, then `qaqnuz keys create`.")
    return 0


COMMANDS = [Command("init", "write a config and a fresh server secret (0600)", run, arguments)]
