"""Calls read back from a real audit file (written by the same `AuditLog` the server uses), newest first, and
the audit chain checked incrementally as it grows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaqnuz.audit import AuditLog, ChainCheck, chain_key
from qaqnuz.audit import verify as verify_log
from qaqnuz.calllog import CallQuery, read_calls

T0 = 1_800_000_000.0

KEY = chain_key(b"c" * 48)


def verify(path: Path) -> tuple[int, list[str]]:
    verdict = verify_log(path, KEY)
    return verdict.count, verdict.problems


def call(i: int, *, brand: str = "acme", tool: str = "echo", outcome: str = "executed", key: str = "k1") -> dict:
    return {"time": T0 + i, "brand": brand, "key_id": key, "role": "viewer", "tool": tool, "step": "execution",
            "outcome": outcome, "latency_ms": 1.5, "args_hash": "a" * 64}  # fmt: skip


def write(path: Path, records: list[dict]) -> None:
    log = AuditLog(path, KEY)
    for record in records:
        log.write(record)
    log.close()


def every_page(path: Path, **filters: object) -> list[list[float]]:
    pages, before = [], None
    while True:
        page = read_calls(path, CallQuery(before=before, **filters))  # type: ignore[arg-type]
        pages.append([c["time"] - T0 for c in page.calls])
        if page.next_before is None:
            return pages
        before = page.next_before


def test_newest_first_in_pages_without_gaps_or_repeats(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = [call(i) for i in range(120)]
    records.insert(30, {"time": T0 + 30.5, "step": "key", "outcome": "minted", "brand": "acme"})  # not a call
    write(path, records)
    pages = every_page(path, limit=50)
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [t for page in pages for t in page] == [float(i) for i in range(119, -1, -1)]


def test_filters_match_every_field_they_name(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, [call(0), call(1, brand="globex"), call(2, tool="create_order", outcome="approval_requested"),
                 call(3, key="k2"), call(4, outcome="denied")])  # fmt: skip
    assert every_page(path, brand="globex") == [[1.0]]
    assert every_page(path, tool="create_order") == [[2.0]]
    assert every_page(path, outcome="denied") == [[4.0]]
    assert every_page(path, key_id="k2") == [[3.0]]
    assert every_page(path, brands=frozenset({"acme"})) == [[4.0, 3.0, 2.0, 0.0]]
    assert every_page(path, brands=frozenset({"acme"}), brand="globex") == [[]]  # a brand-scoped reader
    assert every_page(path, since=T0 + 2, until=T0 + 3) == [[3.0, 2.0]]


def test_an_absent_file_has_no_calls_and_a_partial_last_line_is_skipped(tmp_path: Path) -> None:
    assert read_calls(tmp_path / "none.jsonl", CallQuery()).calls == []
    path = tmp_path / "audit.jsonl"
    write(path, [call(0), call(1)])
    with path.open("ab") as handle:
        handle.write(b'{"time": 1800000002, "tool": "ec')  # a writer mid-line
    assert [c["time"] - T0 for c in read_calls(path, CallQuery()).calls] == [1.0, 0.0]


def test_a_page_stops_at_max_scan_with_a_cursor_to_go_on_from(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, [call(0, tool="rare")] + [call(i) for i in range(1, 400)])
    first = read_calls(path, CallQuery(tool="rare", max_scan=1 << 16))
    assert first.calls == [] and first.scanned_all is False and first.next_before is not None
    rest = read_calls(path, CallQuery(tool="rare", before=first.next_before))
    assert [c["tool"] for c in rest.calls] == ["rare"]


def test_only_the_fields_a_person_needs_are_shown(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, [call(0)])
    (shown,) = read_calls(path, CallQuery()).calls
    assert "args_hash" not in shown and "prev" not in shown and "hash" not in shown
    assert shown["tool"] == "echo" and shown["latency_ms"] == 1.5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["acme", "globex"]), min_size=0, max_size=60), st.integers(1, 7))
def test_paging_any_file_yields_exactly_the_matching_calls(brands: list[str], limit: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        write(path, [call(i, brand=b) for i, b in enumerate(brands)])
        got = [t for page in every_page(path, brand="acme", limit=limit) for t in page]
        assert got == [float(i) for i in range(len(brands) - 1, -1, -1) if brands[i] == "acme"]


def test_the_chain_is_checked_incrementally_and_an_edit_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, [call(i) for i in range(5)])
    check = ChainCheck(path, KEY)
    assert check.check() == (5, [])
    write(path, [call(i) for i in range(5, 8)])  # appended by another writer: picked up where it stopped
    assert check.check() == (8, [])
    lines = path.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["outcome"] = "denied"
    lines[2] = json.dumps(edited, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")  # replaced (same size or not): checked again from the start
    count, problems = ChainCheck(path, KEY).check()
    assert count == 8 and problems and "audit.jsonl:3:" in problems[0]
    assert verify(path)[1] == problems


@pytest.mark.parametrize("lines", [0, 3])
def test_a_last_line_without_its_newline_is_left_for_later(tmp_path: Path, lines: int) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, [call(i) for i in range(lines)])
    with path.open("ab") as handle:
        handle.write(b'{"partial":')
    assert ChainCheck(path, KEY).check() == (lines, [])
    assert verify(path) == (lines, [])  # not a record yet (or a write a crash cut short): noted, not a problem
    assert verify_log(path, KEY).torn == len(b'{"partial":')
