"""The audit log: HMAC-chained JSON lines; a removed, edited or re-chained line is detected; never argument values.

The tamper cases across rotation and against the store's anchor are in test_audit_chain.py."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kit import kit_config
from qaqnuz.audit import AuditLog, chain_key
from qaqnuz.audit import verify as verify_log
from qaqnuz.testing import connect, start_kernel, write_config

QAQNUZ = Path(sys.executable).parent / "qaqnuz"
KEY = chain_key(b"k" * 48)


def verify(path: Path, key: bytes = KEY) -> tuple[int, list[str]]:
    verdict = verify_log(path, key)
    return verdict.count, verdict.problems


def write_records(path: Path, n: int, key: bytes = KEY) -> None:
    log = AuditLog(path, key)
    for i in range(n):
        log.write({"time": 1000.0 + i, "brand": "acme", "tool": "echo", "step": "execution", "outcome": "executed"})


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_intact_log_verifies(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    write_records(path, 5)
    assert verify(path) == (5, [])
    records = [json.loads(line) for line in lines(path)]
    assert records[0]["prev"] == "0" * 64
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]


def test_removed_middle_line_breaks_the_chain(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    write_records(path, 5)
    kept = lines(path)
    del kept[2]
    path.write_text("".join(kept))
    count, problems = verify(path)
    assert count == 4
    assert len(problems) == 1
    assert problems[0].startswith("audit.jsonl:3:")
    assert "records 3 to 3 are missing" in problems[0]


def test_reordered_lines_break_the_chain(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    write_records(path, 4)
    text = lines(path)
    text[1], text[2] = text[2], text[1]
    path.write_text("".join(text))
    _, problems = verify(path)
    assert problems and problems[0].startswith("audit.jsonl:2:") and "out of order" not in problems[0]
    assert any("out of order" in p for p in problems)


def test_edited_field_is_reported_as_edited(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    write_records(path, 5)
    text = lines(path)
    assert '"outcome":"executed"' in text[1]
    text[1] = text[1].replace('"outcome":"executed"', '"outcome":"denied"')
    path.write_text("".join(text))
    count, problems = verify(path)
    assert count == 5
    assert len(problems) == 1
    assert problems[0].startswith("audit.jsonl:2:")
    assert "edited" in problems[0]


def test_edited_line_with_recomputed_hash_still_breaks_the_chain(tmp_path) -> None:
    # Even a forger holding the key who rehashes the edited line cannot fix the next line's `prev` without
    # rewriting the tail.
    from qaqnuz.audit import chain_hash

    path = tmp_path / "audit.jsonl"
    write_records(path, 4)
    text = lines(path)
    record = json.loads(text[1])
    record.pop("hash")
    record["outcome"] = "denied"
    digest = chain_hash(KEY, record["prev"], record)
    text[1] = json.dumps(record, separators=(",", ":"), sort_keys=True)[:-1] + f',"hash":"{digest}"}}\n'
    path.write_text("".join(text))
    _, problems = verify(path)
    assert [p.split(":")[1] for p in problems] == ["3"]
    assert "chain broken" in problems[0]


def test_two_writers_on_one_file_keep_one_chain(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    server, cli = AuditLog(path, KEY), AuditLog(path, KEY)
    order = [server, server, cli, server, cli, cli, server]
    for i, writer in enumerate(order):
        writer.write({"time": float(i), "writer": "server" if writer is server else "cli", "step": "x"})
    assert verify(path) == (len(order), [])
    assert [json.loads(line)["writer"] for line in lines(path)] == ["server" if w is server else "cli" for w in order]


def test_two_processes_appending_at_once_keep_one_chain(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(
        """
        import sys
        from qaqnuz.audit import AuditLog, chain_key
        log = AuditLog(sys.argv[1], chain_key(b'k' * 48))
        for i in range(150):
            log.write({"time": float(i), "writer": sys.argv[2], "step": "x"})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("server", "cli")]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert verify(path) == (300, [])


def test_cli_audit_verify_exit_codes(tmp_path) -> None:
    cfg = write_config(tmp_path, kit_config())
    key = chain_key((tmp_path / "qaqnuz.secret").read_bytes().strip())
    path = tmp_path / "audit.jsonl"
    write_records(path, 4, key)
    command = [str(QAQNUZ), "audit", "verify", "--config", str(cfg), "--file", str(path)]
    ok = subprocess.run(command, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "4 records in 1 file(s)" in ok.stderr
    text = lines(path)
    del text[1]
    path.write_text("".join(text))
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "first bad record: audit.jsonl:2: records 2 to 2 are missing" in bad.stderr
    assert bad.stdout == ""
    other = write_config(tmp_path / "other", kit_config())  # another server's secret: nothing verifies
    foreign = subprocess.run(
        [*command[:3], "--config", str(other), "--file", str(path)], capture_output=True, text=True
    )
    assert foreign.returncode == 1 and "under this server's secret" in foreign.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_calls_are_audited_without_argument_values(tmp_path, mode) -> None:
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    marker = "zebra-quartz-7781"
    calls = [
        ("echo", {"message": marker}, "execution", "executed", None),
        ("echo", {"message": marker, "times": "x"}, "validation", "denied", "validation"),
        ("hidden_tool", {"note": marker}, "visibility", "denied", "permission"),
        ("boom", {}, "execution", "failed", "terminal"),
    ]
    try:
        key, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="auditor")
        async with connect(kernel, key, mode=mode) as client:
            for tool, args, _, _, _ in calls:
                await client.call_tool(tool, args)
    finally:
        await kernel.aclose()
    audit_file = tmp_path / "qaqnuz-audit.jsonl"
    raw = audit_file.read_text()
    assert marker not in raw
    assert key not in raw
    call_lines = [json.loads(line) for line in raw.splitlines() if '"tool"' in line]
    assert len(call_lines) == len(calls)
    for line, (tool, args, step, outcome, error_class) in zip(call_lines, calls, strict=True):
        assert line["brand"] == "acme"
        assert line["key_id"] == record.key_id
        assert line["role"] == "viewer"
        assert line["tool"] == tool
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":")).encode()
        assert line["args_hash"] == hashlib.sha256(canonical).hexdigest()
        assert line["step"] == step
        assert line["outcome"] == outcome
        assert line.get("error_class") == error_class
        assert isinstance(line["time"], float)
        assert line["latency_ms"] >= 0
    assert verify(audit_file, chain_key((tmp_path / "qaqnuz.secret").read_bytes().strip())) == (
        len(raw.splitlines()),
        [],
    )


def test_a_very_long_last_line_still_chains_after_a_reopen(tmp_path):
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, KEY)
    first.write({"step": "approval", "reason": "r" * 200_000})  # far longer than one read chunk
    first.close()
    second = AuditLog(path, KEY)  # a new writer (a restart, or the CLI) must chain from that whole line
    second.write({"step": "key"})
    second.close()
    count, problems = verify(path)
    assert count == 2 and problems == []


class CountingSink:
    """A sink that keeps what it is given, batch by batch."""

    def __init__(self, *, many: bool = True, fail: bool = False) -> None:
        self.batches: list[list[dict]] = []
        self.fail = fail
        if not many:
            self.write_many = None  # type: ignore[assignment]

    def write(self, record) -> None:
        if self.fail:
            raise OSError("disk full")
        self.batches.append([dict(record)])

    def write_many(self, records) -> None:
        if self.fail:
            raise OSError("disk full")
        self.batches.append([dict(r) for r in records])

    def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_records_made_in_one_pass_of_the_serving_loop_are_written_together_in_order() -> None:
    import asyncio

    import anyio

    from qaqnuz.services import Auditor

    sink = CountingSink()
    auditor = Auditor([("counting", sink)], clock=lambda: 1.0)
    auditor.hold_on(asyncio.get_running_loop())
    for i in range(5):
        auditor.record(step="execution", n=i)
    assert sink.batches == []  # held until the end of this pass
    await anyio.sleep(0)
    assert [[r["n"] for r in batch] for batch in sink.batches] == [[0, 1, 2, 3, 4]]
    auditor.record(step="execution", n=5)
    auditor.settle()  # what a transport calls before an answer leaves: written now
    assert [r["n"] for r in sink.batches[-1]] == [5]
    await anyio.to_thread.run_sync(lambda: auditor.record(step="cli", n=6))  # not the serving loop: at once
    assert [r["n"] for r in sink.batches[-1]] == [6]
    auditor.record(step="execution", n=7)
    auditor.close()  # closing writes what is held; later records are written at once
    auditor.record(step="execution", n=8)
    assert [[r["n"] for r in b] for b in sink.batches[-2:]] == [[7], [8]]


@pytest.mark.anyio
async def test_a_failed_batch_counts_every_record_it_lost(caplog) -> None:
    import asyncio

    import anyio

    from qaqnuz.services import Auditor

    errors: list[int] = []
    broken, fine, single = CountingSink(fail=True), CountingSink(), CountingSink(many=False)
    auditor = Auditor([("broken", broken), ("fine", fine), ("single", single)], lambda: 1.0, lambda: errors.append(1))
    auditor.hold_on(asyncio.get_running_loop())
    for i in range(3):
        auditor.record(step="execution", n=i)
    await anyio.sleep(0)
    assert len(errors) == 3 and "3 record(s) lost" in caplog.text and "broken" in caplog.text
    assert [[r["n"] for r in b] for b in fine.batches] == [[0, 1, 2]]  # the other sinks are unaffected
    assert [[r["n"] for r in b] for b in single.batches] == [[0], [1], [2]]  # no write_many: one write each


@pytest.mark.anyio
async def test_a_record_the_file_cannot_take_costs_only_itself(tmp_path) -> None:
    import asyncio

    import anyio

    from qaqnuz.builtin.file_audit import FileSink
    from qaqnuz.services import Auditor

    errors: list[int] = []
    path = tmp_path / "audit.jsonl"
    auditor = Auditor([("file", FileSink(AuditLog(path, KEY)))], lambda: 1.0, lambda: errors.append(1))
    auditor.hold_on(asyncio.get_running_loop())
    auditor.record(step="execution", n=0)
    auditor.record(step="execution", n=1, key_id="bad\udc80")  # not encodable as UTF-8
    auditor.record(step="execution", n=2)
    await anyio.sleep(0)
    assert [json.loads(line)["n"] for line in lines(path)] == [0, 2] and len(errors) == 1
    assert verify(path) == (2, [])


def test_a_batch_chains_like_single_lines_between_two_writers(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    server, cli = AuditLog(path, KEY), AuditLog(path, KEY)
    hashes = server.write_many([{"time": 1.0, "n": 1}, {"time": 2.0, "n": 2}])
    cli.write({"time": 3.0, "n": 3})
    hashes += server.write_many([{"time": 4.0, "n": 4}, {"time": 5.0, "n": 5}, {"time": 6.0, "n": 6}])
    assert verify(path) == (6, [])
    written = [json.loads(line) for line in lines(path)]
    assert [r["n"] for r in written] == [1, 2, 3, 4, 5, 6]
    assert [r["hash"] for r in written if r["n"] != 3] == hashes
