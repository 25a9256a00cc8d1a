"""`qaqnuz approvals ...`: see what waits for a human (with the call's masked arguments) and decide it."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import table, ts, user, with_config
from qaqnuz.records import Command
from qaqnuz.services import approval_view


def list_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--brand", help="only this brand")
    parser.add_argument("--json", action="store_true", help="JSON output, with each request's masked arguments")


def list_approvals(args: argparse.Namespace, ctx: CommandContext) -> int:
    records = ctx.with_admin(args, lambda admin: admin.approvals.list(args.brand))
    now = time.time()
    if args.json:
        ctx.out(json.dumps([approval_view(r, now) for r in records]))
        return 0
    rows = [
        [r.approval_id, r.brand, r.key_id, r.tool, str(r.effective_status(now)), ts(r.created_at), ts(r.expires_at)]
        for r in records
    ]
    ctx.out(table(rows, ["APPROVAL_ID", "BRAND", "KEY_ID", "TOOL", "STATUS", "REQUESTED", "EXPIRES"]))
    return 0


def show_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("approval_id", metavar="ID", help="the approval id (apr_...)")
    parser.add_argument("--brand", help="refuse unless the request belongs to this brand")
    parser.add_argument("--json", action="store_true", help="JSON output")


def show(args: argparse.Namespace, ctx: CommandContext) -> int:
    record = ctx.with_admin(args, lambda admin: admin.approvals.get(args.approval_id, args.brand))
    view = approval_view(record, time.time())
    if args.json:
        ctx.out(json.dumps(view))
        return 0
    lines = [
        f"approval   {view['approval_id']} ({view['status']})",
        f"brand      {view['brand']}",
        f"key        {view['key_id']} ({view['key_name'] or '-'})",
        f"tool       {view['tool']}",
        f"requested  {ts(view['created_at'])}, expires {ts(view['expires_at'])}",
        f"args hash  {view['args_hash']}",
    ]
    if view["decided_at"]:
        lines.append(f"decided    {ts(view['decided_at'])} by {view['decided_by']}: {view['reason'] or '-'}")
    if view["arguments"] is None:
        lines.append("arguments  (deleted: the request was used, denied or has expired)")
    else:
        note = " (cut to 16 KiB)" if view["arguments_truncated"] else ""
        lines.append(f"arguments{note} (values of secret-looking names masked):")
        lines.append(json.dumps(view["arguments"], indent=2, ensure_ascii=False, sort_keys=True))
    ctx.out("\n".join(lines))
    return 0


def decide_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument(
        "approval_id", metavar="ID", help="the approval id (apr_...) from `approvals list` or the caller's error"
    )
    parser.add_argument("--reason", help="why (recorded in the audit log)")
    parser.add_argument("--brand", help="refuse unless the request belongs to this brand")
    parser.add_argument("--by", help="who decided (default: cli:<user>)")


def decider(approve: bool) -> Callable[[argparse.Namespace, CommandContext], int]:
    def decide(args: argparse.Namespace, ctx: CommandContext) -> int:
        by = args.by or f"cli:{user()}"
        record = ctx.with_admin(
            args,
            lambda admin: admin.approvals.decide(
                args.approval_id, approve=approve, by=by, reason=args.reason, brand=args.brand
            ),
        )
        verb = "approved" if approve else "denied"
        extra = f"; valid until {ts(record.valid_until)}" if approve else ""
        ctx.err(f"{verb} {record.approval_id} ({record.tool}, brand {record.brand}) as {by}{extra}")
        return 0

    return decide


COMMANDS = [
    Command("approvals", "list, show and decide approval requests"),
    Command("approvals list", "pending and approved-but-unused requests", list_approvals, list_arguments),
    Command("approvals show", "one request with the call's arguments (secrets masked)", show, show_arguments),
    Command("approvals approve", "approve a pending request", decider(True), decide_arguments),
    Command("approvals deny", "deny a pending request", decider(False), decide_arguments),
]
