"""`qaqnuz keys ...`: mint, list, revoke, rotate and re-scope keys.

A key is printed exactly once, alone on stdout, when it is minted or rotated; no other output of any
command ever contains one (errors never repeat what was typed if it could be a key).
"""

from __future__ import annotations

import argparse
import json
import time

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import table, ts, with_config
from qaqnuz.config import parse_duration
from qaqnuz.errors import UsageError
from qaqnuz.records import Command

KEY_REF_HELP = "the key id (the public part shown by `keys list`), or the whole key"


def create_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--brand", required=True, help="the brand the key belongs to")
    parser.add_argument("--role", default="viewer", help="role on the key (default: viewer)")
    parser.add_argument("--scope", action="append", required=True, help="a scope to grant; repeat for more")
    parser.add_argument("--name", required=True, help="who or what uses the key")
    parser.add_argument(
        "--expires-in", help="lifetime such as 30d or 12h (default and maximum: [server] max_key_lifetime)"
    )
    parser.add_argument("--json", action="store_true", help="print the key and its record as JSON")


def create(args: argparse.Namespace, ctx: CommandContext) -> int:
    try:
        expires_in = parse_duration(args.expires_in) if args.expires_in else None
    except ValueError as exc:
        raise UsageError(f"--expires-in: {exc}") from None
    raw, record = ctx.with_admin(
        args,
        lambda admin: admin.keys.mint(
            brand=args.brand, scopes=args.scope, name=args.name, role=args.role, expires_in=expires_in
        ),
    )
    if args.json:
        ctx.out(json.dumps({"key": raw, **record.public()}), reveal=True)
    else:
        ctx.out(raw, reveal=True)
        ctx.err(f"key {record.key_id} for brand {record.brand} (role {record.role}); shown once, store it now")
    return 0


def list_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--brand", help="only this brand")
    parser.add_argument("--json", action="store_true", help="JSON output")


def list_keys(args: argparse.Namespace, ctx: CommandContext) -> int:
    records = ctx.with_admin(args, lambda admin: admin.keys.list(args.brand))
    now = time.time()
    if args.json:
        ctx.out(json.dumps([{**r.public(), "active": r.active(now), "state": r.state(now)} for r in records]))
        return 0
    rows = [
        [
            r.key_id,
            r.name,
            r.brand,
            r.role,
            ",".join(r.scopes) or "-",
            r.state(now),
            ts(r.expires_at),
            ts(r.last_used_at),
        ]
        for r in records
    ]
    ctx.out(table(rows, ["KEY_ID", "NAME", "BRAND", "ROLE", "SCOPES", "STATE", "EXPIRES", "LAST_USED"]))
    return 0


def ref_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("key", metavar="KEY_ID", help=KEY_REF_HELP)
    parser.add_argument("--brand", help="refuse unless the key belongs to this brand")


def revoke(args: argparse.Namespace, ctx: CommandContext) -> int:
    record, revoked = ctx.with_admin(args, lambda admin: admin.keys.revoke(args.key, args.brand))
    if not revoked:
        ctx.err(f"key {record.key_id} was already revoked")
        return 0
    ctx.err(f"revoked key {record.key_id} ({record.name}, brand {record.brand}); it fails from the next call on")
    return 0


def rotate_arguments(parser: argparse.ArgumentParser) -> None:
    ref_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the new key and its record as JSON")


def rotate(args: argparse.Namespace, ctx: CommandContext) -> int:
    raw, record, old = ctx.with_admin(args, lambda admin: admin.keys.rotate(args.key, args.brand))
    if args.json:
        ctx.out(json.dumps({"key": raw, **record.public(), "replaces": old.key_id}), reveal=True)
    else:
        ctx.out(raw, reveal=True)
    ctx.err(
        f"rotated key {old.key_id} -> {record.key_id} ({record.name}, brand {record.brand}); the old key fails "
        f"from its next call on; the new one is shown once, store it now"
    )
    return 0


def update_arguments(parser: argparse.ArgumentParser) -> None:
    ref_arguments(parser)
    parser.add_argument(
        "--scope", action="append", required=True, help="a scope the key holds from now on; repeat for more"
    )


def update(args: argparse.Namespace, ctx: CommandContext) -> int:
    record = ctx.with_admin(args, lambda admin: admin.keys.update_scopes(args.key, args.scope, args.brand))
    ctx.err(f"key {record.key_id} ({record.name}, brand {record.brand}) now holds {', '.join(record.scopes)}")
    return 0


COMMANDS = [
    Command("keys", "mint, list, revoke, rotate and re-scope API keys"),
    Command("keys create", "mint a key; prints it once on stdout", create, create_arguments),
    Command("keys list", "list keys (never secrets), with last use", list_keys, list_arguments),
    Command("keys revoke", "revoke a key; it fails from the next call on", revoke, ref_arguments),
    Command(
        "keys rotate",
        "replace a key's secret (same brand, role, scopes, name and expiry); prints the new key once",
        rotate,
        rotate_arguments,
    ),
    Command("keys update", "replace a key's scopes (within its role's ceiling)", update, update_arguments),
]
