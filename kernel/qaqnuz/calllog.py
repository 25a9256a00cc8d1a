"""Tool calls (or any records) read back from the audit log (its rotated files too), newest first, for
people: the console's Calls page and `qaqnuz audit search`.

The audit file only grows, so a page is found by reading backwards from the end (or from a cursor, the
byte offset where the previous page stopped) in blocks, keeping the call lines that match the filters. A
page never reads more than `max_scan` bytes: a filter that matches nothing in a large file answers with
what it found and a cursor to go on from, instead of reading the whole file for one request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import attrs
import msgspec

from qaqnuz.audit import audit_files

_decoder = msgspec.json.Decoder()
_BLOCK = 1 << 16
#: What the Calls page shows of an audit line: never the arguments' hash or anything else.
CALL_FIELDS = ("time", "brand", "key_id", "tool", "step", "outcome", "error_class", "latency_ms", "approval_id",
               "transport", "incident_id")  # fmt: skip


@attrs.frozen(kw_only=True)
class CallQuery:
    """Which calls: every field that is set must match; `since`/`until` bound the time (epoch seconds);
    `before` is the cursor a previous page returned."""

    brand: str | None = None
    brands: frozenset[str] | None = None  # only these brands (a brand-scoped reader), whatever `brand` says
    key_id: str | None = None
    tool: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None
    limit: int = 50
    max_scan: int = 32 << 20
    #: Only tool calls (the console's Calls page); False: every record (`qaqnuz audit search`).
    calls_only: bool = True

    def matches(self, record: dict[str, Any]) -> bool:
        if self.calls_only and ("latency_ms" not in record or "tool" not in record):
            return False  # not a tool call (a key minted, an approval decided, a refused credential)
        if self.brands is not None and record.get("brand") not in self.brands:
            return False
        for name in ("brand", "key_id", "tool", "outcome"):
            wanted = getattr(self, name)
            if wanted is not None and record.get(name) != wanted:
                return False
        moment = record.get("time")
        if not isinstance(moment, (int, float)):
            return False
        return not (self.until is not None and moment > self.until)


@attrs.frozen
class CallPage:
    """Matching calls, newest first; `next_before` is the cursor for older ones (None: the file's start was
    reached); `scanned_all` is False when the page stopped at `max_scan` before finding `limit` calls."""

    calls: list[dict[str, Any]]
    next_before: int | None
    scanned_all: bool = True


def read_calls(path: str | Path, query: CallQuery) -> CallPage:
    """One page of calls from the audit log at `path`, rotated files included (an absent log has none).

    Positions (the cursor) count bytes across the whole log, oldest file first: rotated files never change,
    so a cursor stays valid while the live file grows or rotates."""
    found: list[dict[str, Any]] = []
    files: list[tuple[Path, int, int]] = []  # (file, base position, size)
    base = 0
    for file in audit_files(path):
        try:
            size = file.stat().st_size
        except FileNotFoundError:  # rotated away since the listing: its new name is not listed yet
            continue
        files.append((file, base, size))
        base += size
    end = base if query.before is None else max(0, min(base, query.before))
    scanned = 0
    for file, start, size in reversed(files):
        if start >= end:
            continue
        try:
            handle = file.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            page, scanned = _scan(handle, start, min(size, end - start), query, found, scanned)
        if page is not None:
            return page
    return CallPage(found, None)


def _scan(
    handle: BinaryIO, base: int, end: int, query: CallQuery, found: list[dict[str, Any]], scanned: int
) -> tuple[CallPage | None, int]:
    """Read one file backwards from byte `end`, adding matches to `found`; a page when it is complete (or
    the scan bound or `since` was reached), else None to go on in the file before."""
    position, tail = end, b""
    while position > 0:
        start = max(0, position - _BLOCK)
        handle.seek(start)
        block = handle.read(position - start) + tail
        scanned += position - start
        position = start
        lines = block.split(b"\n")
        tail = lines.pop(0) if start > 0 else b""  # the first piece may be the end of an earlier line
        offset = start + len(tail) + (1 if start > 0 else 0)
        starts = []
        for line in lines:
            starts.append(offset)
            offset += len(line) + 1
        for line, line_start in zip(reversed(lines), reversed(starts), strict=True):
            if not line.strip():
                continue
            record = _record(line)
            if record is None or not query.matches(record):
                continue
            if query.since is not None and record["time"] < query.since:
                return CallPage(found, None), scanned  # the log is in time order: nothing older can match
            found.append(_shown(record, query.calls_only))
            if len(found) >= query.limit:
                at = base + line_start
                return CallPage(found, at if at > 0 else None), scanned
        if scanned >= query.max_scan and (position > 0 or base > 0):
            return CallPage(found, base + position + len(tail) + (1 if position > 0 else 0), scanned_all=False), scanned
    return None, scanned


def _shown(record: dict[str, Any], calls_only: bool) -> dict[str, Any]:
    """A call as the Calls page shows it, or a whole record without its chain fields."""
    if calls_only:
        return {name: record[name] for name in CALL_FIELDS if name in record}
    return {k: v for k, v in record.items() if k not in ("prev", "hash")}


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = _decoder.decode(line)
    except msgspec.DecodeError:
        return None
    return record if isinstance(record, dict) else None
