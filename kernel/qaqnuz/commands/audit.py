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


def verify(args: argparse.Namespace, ctx: CommandContext) -> int:
    from qaqnuz.audit import verify as verify_chain

    path = _path(args, ctx)
    count, problems = verify_chain(path)
    for problem in problems:
        ctx.err(f"{path}: {problem}")
    if problems:
        ctx.err(f"{path}: {len(problems)} problem(s) in {count} lines; the log was altered")
        return 1
    ctx.err(f"{path}: OK, {count} lines, hash chain intact")
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

    size = path.stat().st_size if path.exists() else 0
    if args.lines:
        page = read_calls(path, CallQuery(calls_only=False, limit=args.lines, before=size, max_scan=1 << 62))
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
    """Print each complete line appended after `offset`; start over at the beginning of a file that was
    replaced (rotated) or cut short."""
    inode = _inode(path)
    pending = b""
    while True:
        current = _inode(path)
        if current != inode:
            inode, offset, pending = current, 0, b""
        if current is not None:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < offset:
                    offset, pending = 0, b""
                handle.seek(offset)
                data = handle.read()
            offset += len(data)
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    show(record)
        time.sleep(interval)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


COMMANDS = [
    Command("audit", "audit log tools"),
    Command("audit verify", "check the audit log's hash chain", verify, arguments),
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
