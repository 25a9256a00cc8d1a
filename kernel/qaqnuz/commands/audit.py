"""`qaqnuz audit verify | search | tail`: check the audit file's hash chain, find records, watch new ones.

Search and tail read the file itself (they need no running server and no store), newest first for a search,
oldest first for a tail; neither ever prints an argument (the log holds only their hash).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from qaqnuz.command_context import CommandContext
from qaqnuz.commands._common import table, ts, with_config
from qaqnuz.errors import UsageError
from qaqnuz.records import Command

#: What a search or tail prints per record, in this order (`--json` prints the whole record).
COLUMNS = ("time", "step", "outcome", "brand", "key_id", "tool", "error_class", "latency_ms", "approval_id")


def arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument("--file", help="audit file (default: [server] audit_file from config)")


def _path(args: argparse.Namespace, ctx: CommandContext) -> str:
    if args.file:
        return str(args.file)
    config = ctx.config(args)
    return config.resolve(config.server.audit_file)


def verify_arguments(parser: argparse.ArgumentParser) -> None:
    arguments(parser)
    parser.add_argument(
        "--no-anchor",
        action="store_true",
        help="check the chain alone, without the store's anchor (a cut tail then goes unnoticed)",
    )


#: How many problems `verify` prints; the first is the first bad record, the count says how many in all.
_PROBLEMS_PRINTED = 20


def verify(args: argparse.Namespace, ctx: CommandContext) -> int:
    from qaqnuz.audit import verify as verify_chain
    from qaqnuz.store import AuditAnchor

    config = ctx.config(args)
    path = str(args.file) if args.file else config.resolve(config.server.audit_file)
    admin = ctx.admin(config)
    key = admin.chain_key
    # the server's anchor, whichever copy of its log is checked (`--file`)
    name = config.audit.anchor or os.path.abspath(config.resolve(config.server.audit_file))

    async def read_anchor() -> AuditAnchor | None:
        try:
            return None if args.no_anchor else await admin.store.audit_anchor(name)
        finally:
            await admin.aclose()

    try:
        anchor = ctx.run(read_anchor, inline=admin.inline)
    except Exception as exc:
        ctx.err(f"cannot read the audit anchor from the store ({type(exc).__name__}); check [server] store, or "
                f"add --no-anchor to check the chain alone")  # fmt: skip
        return 1
    verdict = verify_chain(path, key, anchor)
    if not verdict.files:
        if anchor is None:
            ctx.err(f"{path}: no such audit file; give it with --file, or check [server] audit_file")
        else:
            ctx.err(f"{path}: no audit file, but the store's anchor says record {anchor.seq} was written: the log "
                    f"was removed")  # fmt: skip
        return 1
    if verdict.torn:
        ctx.err(f"note: the live file ends in {verdict.torn} bytes of an unfinished record (a write cut short by a "
                f"crash, or one under way); the next write removes it and records that it did")  # fmt: skip
    for intent in verdict.unknown:
        ctx.err(f"unknown outcome: {intent} (an intent with no outcome: still running, or the server stopped "
                f"while it ran)")  # fmt: skip
    if verdict.problems:
        ctx.err(f"first bad record: {verdict.problems[0]}")
        for problem in verdict.problems[1:_PROBLEMS_PRINTED]:
            ctx.err(f"  then: {problem}")
        ctx.err(f"{path}: {len(verdict.problems)} problem(s) in {verdict.count} records across "
                f"{len(verdict.files)} file(s); the log was altered")  # fmt: skip
        return 1
    if anchor is None and not args.no_anchor and verdict.count:
        ctx.err(f"warning: no anchor in the store under {name!r}: a cut tail cannot be detected (a log written "
                f"before anchoring, another store, or the anchor removed)")  # fmt: skip
    anchored = (
        "the store's anchor was not read (--no-anchor)" if args.no_anchor
        else "no anchor in the store" if anchor is None
        else f"reaches the store's anchor (record {anchor.seq})"
    )  # fmt: skip
    unknown = f"; {len(verdict.unknown)} call(s) with unknown outcome" if verdict.unknown else ""
    ctx.err(f"{path}: OK, {verdict.count} records in {len(verdict.files)} file(s), chain intact, {anchored}{unknown}")
    return 0


# -- search ------------------------------------------------------------------------------------------------
def search_arguments(parser: argparse.ArgumentParser) -> None:
    arguments(parser)
    parser.add_argument("--brand", help="only this brand's records")
    parser.add_argument("--key", metavar="KEY_ID", help="only records of this key id (as `qaqnuz keys list` shows)")
    parser.add_argument("--tool", help="only records of this tool")
    parser.add_argument("--outcome", help="only this outcome (executed, failed, denied, approval_requested, minted...)")
    parser.add_argument("--since", help="from this time: an ISO date-time (UTC unless it says) or a duration ago (1h)")
    parser.add_argument("--until", help="up to this time: an ISO date-time or a duration ago")
    parser.add_argument("--calls", action="store_true", help="only tool calls (no key, approval or console records)")
    parser.add_argument("--limit", type=int, default=50, help="at most this many records, newest first (default 50)")
    parser.add_argument("--before", type=int, help="continue an earlier search from the cursor it printed")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, every field of the record")


def _moment(text: str | None, option: str, now: float) -> float | None:
    if text is None:
        return None
    from qaqnuz.config import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is neither a date-time (2026-12-01T14:30) nor a duration ago (90m, 24h, 7d)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _line(record: dict[str, Any]) -> list[str]:
    cells = []
    for name in COLUMNS:
        value = record.get(name)
        cells.append(ts(value) if name == "time" else "-" if value is None else str(value))
    return cells


def search(args: argparse.Namespace, ctx: CommandContext) -> int:
    from qaqnuz.calllog import CallQuery, read_calls
    from qaqnuz.keys import looks_like_key

    if args.key is not None and looks_like_key(args.key):
        raise UsageError("--key takes a key id (12 letters and digits, from `qaqnuz keys list`), never the key")
    if not 1 <= args.limit <= 10_000:
        raise UsageError("--limit must be between 1 and 10000")
    path = _path(args, ctx)
    if not Path(path).exists():
        raise UsageError(f"{path}: no such audit file; give it with --file, or check [server] audit_file")
    now = time.time()
    query = CallQuery(
        brand=args.brand, key_id=args.key, tool=args.tool, outcome=args.outcome,
        since=_moment(args.since, "--since", now), until=_moment(args.until, "--until", now),
        before=args.before, limit=args.limit, calls_only=args.calls, max_scan=1 << 62,
    )  # fmt: skip
    page = read_calls(path, query)
    if args.json:
        for record in page.calls:
            ctx.out(json.dumps(record, sort_keys=True))
    else:
        ctx.out(table([_line(r) for r in page.calls], [c.upper() for c in COLUMNS]))
    if page.next_before is not None:
        ctx.err(f"{len(page.calls)} record(s); older ones may match: add --before {page.next_before}")
    return 0


# -- tail --------------------------------------------------------------------------------------------------
def tail_arguments(parser: argparse.ArgumentParser) -> None:
    arguments(parser)
    parser.add_argument("-n", "--lines", type=int, default=10, help="how many of the newest records first (default 10)")
    parser.add_argument("-f", "--follow", action="store_true", help="then print records as they are appended")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, every field of the record")
    parser.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)  # tests poll faster


def tail(args: argparse.Namespace, ctx: CommandContext) -> int:
    from qaqnuz.calllog import CallQuery, read_calls

    if not 0 <= args.lines <= 10_000:
        raise UsageError("--lines must be between 0 and 10000")
    path = Path(_path(args, ctx))
    if not path.exists() and not args.follow:
        raise UsageError(f"{path}: no such audit file; give it with --file, or check [server] audit_file")

    def show(record: dict[str, Any]) -> None:
        shown = {k: v for k, v in record.items() if k not in ("prev", "hash")}
        ctx.out(json.dumps(shown, sort_keys=True) if args.json else "  ".join(_line(shown)))

    from qaqnuz.audit import rotated_files

    older = sum(f.stat().st_size for f in rotated_files(path))
    size = path.stat().st_size if path.exists() else 0
    if args.lines:
        query = CallQuery(calls_only=False, limit=args.lines, before=older + size, max_scan=1 << 62)
        page = read_calls(path, query)
        for record in reversed(page.calls):
            show(record)
    if not args.follow:
        return 0
    try:
        _follow(path, size, show, args.interval)
    except KeyboardInterrupt:
        pass
    return 0


def _follow(path: Path, offset: int, show: Any, interval: float) -> None:
    """Print each complete line appended after `offset`. The file stays open, so when it is rotated the
    lines written to it before the rename are still read, then the new live file from its start; a file
    cut short is read again from its start."""
    handle = path.open("rb") if path.exists() else None
    pending = b""

    def drain(current: Any) -> None:
        nonlocal pending
        data = current.read()
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                show(record)

    if handle is not None:
        handle.seek(offset)
    try:
        while True:
            inode = _inode(path)
            if handle is not None and inode != _inode_of(handle):
                drain(handle)  # what was written before the rotation
                handle.close()
                handle, pending = None, b""
            if handle is None and inode is not None:
                handle = path.open("rb")
            if handle is not None:
                if os.fstat(handle.fileno()).st_size < handle.tell():
                    handle.seek(0)
                    pending = b""
                drain(handle)
            time.sleep(interval)
    finally:
        if handle is not None:
            handle.close()


def _inode_of(handle: Any) -> tuple[int, int]:
    st = os.fstat(handle.fileno())
    return st.st_dev, st.st_ino


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


COMMANDS = [
    Command("audit", "audit log tools"),
    Command(
        "audit verify",
        "check the audit log's chain across rotated files, its anchor in the store, and list unknown outcomes",
        verify,
        verify_arguments,
    ),
    Command(
        "audit search",
        "find audit records by brand, key, tool, outcome and time, newest first",
        search,
        search_arguments,
    ),
    Command(
        "audit tail", "the newest audit records, and with --follow each one as it is appended", tail, tail_arguments
    ),
]
