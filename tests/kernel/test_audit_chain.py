"""Tampering with a rotated, anchored audit log: each way of altering it is found, within a file and across
a rotation boundary, and the first bad record is named by file and line. An untouched set verifies.

The files are written by the server's own `AuditLog`; the anchor is what its `flush()` returns, which the
kernel keeps in the store.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from qaqnuz.audit import GENESIS, AuditLog, audit_files, chain_key, rotated_files, verify
from qaqnuz.calllog import CallQuery, read_calls
from qaqnuz.store import AuditAnchor

KEY = chain_key(b"s" * 48)


def build(tmp_path: Path, n: int = 40, rotate_size: int = 1500) -> tuple[Path, AuditAnchor]:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, rotate_size=rotate_size)
    for i in range(n):
        log.write({"time": 1000.0 + i, "brand": "acme", "tool": "echo", "step": "execution", "outcome": "executed",
                   "n": i})  # fmt: skip
    anchor = log.flush()
    log.close()
    assert anchor is not None
    return path, anchor


def read(file: Path) -> list[str]:
    return file.read_text().splitlines(keepends=True)


def write(file: Path, lines: list[str]) -> None:
    file.write_text("".join(lines))


def test_an_untouched_rotated_set_verifies_and_reaches_its_anchor(tmp_path) -> None:
    path, anchor = build(tmp_path)
    files = audit_files(path)
    assert len(files) >= 4 and files[-1] == path
    assert [f.name for f in files[:-1]] == [f"audit.jsonl.{i:06d}" for i in range(1, len(files))]
    records = [json.loads(line) for f in files for line in read(f)]
    assert [r["seq"] for r in records] == list(range(1, 41))
    assert [r["n"] for r in records] == list(range(40))
    assert records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]  # the chain goes on across files
    verdict = verify(path, KEY, anchor)
    assert (verdict.count, verdict.problems, verdict.unknown) == (40, [], [])
    assert verdict.files == [f.name for f in files]
    assert anchor.seq == 40 and anchor.file == "audit.jsonl" and anchor.offset == path.stat().st_size


def test_a_new_writer_goes_on_from_the_newest_rotated_file_when_the_live_one_is_empty(tmp_path) -> None:
    path, _ = build(tmp_path)
    path.write_bytes(b"")  # as if the process stopped between renaming the file and writing the next record
    path.unlink()
    log = AuditLog(path, KEY)
    log.write({"time": 2000.0, "step": "key"})
    log.close()
    assert verify(path, KEY).problems == []
    assert json.loads(read(path)[0])["seq"] == 1 + sum(len(read(f)) for f in rotated_files(path))


def boundary(path: Path) -> tuple[Path, Path]:
    """The second and third files: a record moved or removed at their seam crosses a rotation."""
    files = audit_files(path)
    return files[1], files[2]


def tamper_tail_truncation(path: Path, across: bool) -> str:
    if across:  # the whole live file and the last record of the newest rotated one
        older = rotated_files(path)[-1]
        path.unlink()
        write(older, read(older)[:-1])
        return "cut off the end"
    write(path, read(path)[:-3])
    return "cut off the end"


def tamper_middle_deletion(path: Path, across: bool) -> str:
    first, second = boundary(path)
    if across:
        write(second, read(second)[1:])
        return f"{second.name}:1: records"
    lines = read(first)
    del lines[2]
    write(first, lines)
    return f"{first.name}:3: records"


def tamper_edit(path: Path, across: bool) -> str:
    first, second = boundary(path)
    target = second if across else first
    lines = read(target)
    lines[0] = lines[0].replace('"outcome":"executed"', '"outcome":"denied"')
    write(target, lines)
    return f"{target.name}:1: its hash does not match"


def tamper_reorder(path: Path, across: bool) -> str:
    first, second = boundary(path)
    if across:  # the last record of one file swapped with the first of the next
        a, b = read(first), read(second)
        a[-1], b[0] = b[0], a[-1]
        write(first, a)
        write(second, b)
        return f"{first.name}:{len(a)}: records"
    lines = read(first)
    lines[1], lines[2] = lines[2], lines[1]
    write(first, lines)
    return f"{first.name}:2: records"


def tamper_sha256_rechain(path: Path, across: bool) -> str:
    """Rewrite records and re-chain them with plain SHA-256, as the public-hash chain allowed."""
    files = audit_files(path)[1:] if across else [path]
    prev = json.loads(read(audit_files(path)[0])[-1])["hash"] if across else None
    for file in files:
        out = []
        for line in read(file):
            record = json.loads(line)
            record.pop("hash")
            record["outcome"] = "denied"
            if prev is not None:
                record["prev"] = prev
            body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            prev = hashlib.sha256(record["prev"].encode() + b"\n" + body).hexdigest()
            out.append(body[:-1].decode() + f',"hash":"{prev}"}}\n')
        write(file, out)
    return f"{files[0].name}:1: its hash does not match"


def tamper_cut_and_rewrite(path: Path, across: bool) -> str:
    """Cut the tail, then append as many records again under the real key (a writer chaining on)."""
    if across:
        path.unlink()
    else:
        write(path, read(path)[:-3])
    log = AuditLog(path, KEY)
    for i in range(12):
        log.write({"time": 3000.0 + i, "step": "execution", "outcome": "executed"})
    log.close()
    return "is not the one the store anchored"


@pytest.mark.parametrize("across", [False, True], ids=["within-a-file", "across-rotation"])
@pytest.mark.parametrize(
    "tamper",
    [tamper_tail_truncation, tamper_middle_deletion, tamper_edit, tamper_reorder, tamper_sha256_rechain,
     tamper_cut_and_rewrite],
    ids=lambda f: f.__name__.removeprefix("tamper_"),
)  # fmt: skip
def test_every_kind_of_tampering_is_found_and_the_first_bad_record_named(tmp_path, tamper, across) -> None:
    path, anchor = build(tmp_path)
    expected = tamper(path, across)
    verdict = verify(path, KEY, anchor)
    assert verdict.problems, f"{tamper.__name__} went unnoticed"
    assert expected in verdict.problems[0], verdict.problems


def test_a_rotated_file_removed_from_the_middle_is_found(tmp_path) -> None:
    path, anchor = build(tmp_path)
    removed = rotated_files(path)[1]
    count = len(read(removed))
    removed.unlink()
    problems = verify(path, KEY, anchor).problems
    assert len(problems) == 1
    assert "records" in problems[0] and "are missing before it" in problems[0]
    assert f"records {int(json.loads(read(rotated_files(path)[0])[-1])['seq']) + 1} to" in problems[0]
    assert count > 0


def test_removing_the_oldest_files_is_named_as_such(tmp_path) -> None:
    path, anchor = build(tmp_path)
    rotated_files(path)[0].unlink()
    problems = verify(path, KEY, anchor).problems
    assert len(problems) == 1 and "older files were removed" in problems[0]


def test_without_the_anchor_a_cut_tail_is_invisible_which_is_why_it_is_anchored(tmp_path) -> None:
    path, anchor = build(tmp_path)
    write(path, read(path)[:-3])
    assert verify(path, KEY).problems == []
    assert verify(path, KEY, anchor).problems


def test_rotation_by_age_starts_a_new_file_once_the_first_record_is_old_enough(tmp_path) -> None:
    now = [1000.0]
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, rotate_every=3600, clock=lambda: now[0])
    for step in range(5):
        now[0] = 1000.0 + step * 1000
        log.write({"time": now[0], "step": "execution"})
    log.close()
    assert [len(read(f)) for f in audit_files(path)] == [4, 1]  # the 5th record came 4000 s after the 1st
    assert verify(path, KEY).problems == []


def test_a_restarted_writer_rotates_by_the_age_it_reads_from_the_file(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, KEY, clock=lambda: 1000.0).write({"time": 1000.0, "step": "x"})
    later = AuditLog(path, KEY, rotate_every=60, clock=lambda: 2000.0)
    later.write({"time": 2000.0, "step": "y"})
    later.close()
    assert [len(read(f)) for f in audit_files(path)] == [1, 1]


def test_intents_without_an_outcome_are_listed_as_unknown(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, rotate_size=400)
    log.write({"time": 1.0, "tool": "pay", "brand": "acme", "key_id": "k1", "outcome": "intent", "call_id": "call_a"})
    log.write({"time": 2.0, "tool": "pay", "brand": "acme", "key_id": "k1", "outcome": "intent", "call_id": "call_b"})
    log.write({"time": 3.0, "tool": "pay", "brand": "acme", "outcome": "executed", "call_id": "call_a"})
    log.close()
    assert len(audit_files(path)) > 1  # the outcome is in another file than its intent
    verdict = verify(path, KEY)
    assert verdict.problems == []
    assert len(verdict.unknown) == 1 and "call_b tool pay brand acme key k1" in verdict.unknown[0]


def test_fsync_every_and_flush_leave_the_same_chain(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY, fsync="every")
    log.write_many([{"time": 1.0, "n": 1}, {"time": 2.0, "n": 2}])
    first = log.flush()
    assert first is not None and first.seq == 2
    assert log.flush() is None  # nothing new to anchor
    log.write({"time": 3.0, "n": 3})
    second = log.flush()
    log.close()
    assert second is not None and second.seq == 3 and second.offset == path.stat().st_size
    assert verify(path, KEY, second).problems == []


def test_search_pages_across_rotated_files_with_a_stable_cursor(tmp_path) -> None:
    path, _ = build(tmp_path)
    seen: list[int] = []
    before = None
    while True:
        page = read_calls(path, CallQuery(limit=7, before=before, calls_only=False))
        seen += [r["n"] for r in page.calls]
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == list(range(39, -1, -1))
    since = read_calls(path, CallQuery(since=1030.0, limit=100, calls_only=False))
    assert [r["n"] for r in since.calls] == list(range(39, 29, -1))
    bounded = read_calls(path, CallQuery(tool="nothing", limit=5, max_scan=1000, calls_only=False))
    assert bounded.calls == [] and not bounded.scanned_all and bounded.next_before is not None


@pytest.mark.parametrize("key", [b"", b"k" * 32, b"x" * 64, b"long" * 40])
def test_the_chain_mac_is_hmac_sha256(key: bytes) -> None:
    import hmac

    from qaqnuz.audit import chain_hash

    body = {"seq": 1, "prev": GENESIS, "tool": "echo", "time": 1.5}
    message = GENESIS.encode() + b"\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert chain_hash(key, GENESIS, body) == hmac.digest(key, message, "sha256").hex()


def test_an_emptied_or_removed_log_does_not_pass_against_its_anchor(tmp_path) -> None:
    path, anchor = build(tmp_path)
    for rotated in rotated_files(path):
        rotated.unlink()
    path.write_bytes(b"")
    emptied = verify(path, KEY, anchor)
    assert emptied.count == 0 and "the log ends at record 0" in emptied.problems[0]
    path.unlink()
    removed = verify(path, KEY, anchor)
    assert removed.files == [] and any("cut off the end" in p for p in removed.problems)


def test_a_line_cut_short_by_a_crash_is_removed_by_the_next_writer_and_said_in_the_chain(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, KEY)
    for i in range(3):
        log.write({"time": float(i), "step": "x"})
    log.close()
    with path.open("ab") as handle:
        handle.write(b'{"time":3.0,"outcome":"inte')  # a write SIGKILL stopped between two pages
    before = verify(path, KEY)
    assert (before.count, before.problems, before.torn) == (3, [], 27)  # not a record, so not a problem
    after = AuditLog(path, KEY)
    after.write({"time": 4.0, "tool": "pay", "outcome": "intent", "call_id": "call_z"})
    after.close()
    records = [json.loads(line) for line in read(path)]
    assert [(r.get("outcome"), r["seq"]) for r in records] == [(None, 1), (None, 2), (None, 3),
                                                                ("torn_tail_removed", 4), ("intent", 5)]  # fmt: skip
    assert records[3]["bytes"] == 27 and records[3]["step"] == "audit"
    verdict = verify(path, KEY)
    assert verdict.problems == [] and verdict.torn == 0
    assert len(verdict.unknown) == 1 and "call_z" in verdict.unknown[0]


def test_a_line_cut_short_inside_a_rotated_file_is_damage(tmp_path) -> None:
    path, _ = build(tmp_path)
    older = rotated_files(path)[0]
    lines = read(older)
    write(older, [*lines[:-1], lines[-1][:40]])
    problems = verify(path, KEY).problems
    assert problems[0].startswith(f"{older.name}:{len(lines)}: not a valid audit record")


@pytest.mark.parametrize(
    "line",
    ['{"prev":"é","seq":1,"hash":"' + "a" * 64 + '"}', '{"seq":1,"prev":"' + GENESIS + '","hash":"ééé"}',
     '{"seq":"1","prev":"' + GENESIS + '","hash":"' + "a" * 64 + '"}', "not json at all"],
)  # fmt: skip
def test_a_foreign_line_is_named_not_a_crash_and_writers_chain_past_it(tmp_path, line: str) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(line + "\n")
    log = AuditLog(path, KEY)
    log.write({"time": 1.0, "step": "x"})
    log.close()
    problems = verify(path, KEY).problems
    assert problems == [f"{path.name}:1: not a valid audit record (cut short by a crash or a full disk, or not "
                        f"written by qaqnuz)"]  # fmt: skip
