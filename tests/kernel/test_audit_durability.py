"""What the running kernel does with its audit log: a write tool's `intent` before it runs, its outcome after
under the same call id; a log that cannot be written refuses calls (`on_error = "fail"`) or is counted
(`"continue"`); and the newest record anchored in the store, so `qaqnuz audit verify` finds a cut tail."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from kit import kit_config
from qaqnuz.audit import audit_files, chain_key, verify
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio
QAQNUZ = Path(sys.executable).parent / "qaqnuz"
PLUGINS = ["testkit_pack.plugin"]


def config_text(audit: str = "") -> str:
    exposed = "tools.write_tool = { exposable = true }"
    text = kit_config().replace(exposed, exposed + "\ntools.deploy = { exposable = true }", 1)
    return text + "\n[audit]\n" + audit


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for f in audit_files(folder / "qaqnuz-audit.jsonl") for line in f.read_text().splitlines()]


def digest(arguments: dict) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def manager_key(kernel) -> str:
    key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.read", "orders.write"], name="m")
    return key


@pytest.mark.parametrize("fsync", ["batch", "every"])
async def test_a_write_tool_gets_an_intent_before_it_runs_and_its_outcome_after(tmp_path, fsync) -> None:
    cfg = write_config(tmp_path, config_text(f'fsync = "{fsync}"\n'))
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    try:
        key = await manager_key(kernel)
        async with connect(kernel, key) as client:
            deployed = await client.call_tool("deploy", {"target": "prod-7"})
            echoed = await client.call_tool("echo", {"message": "hi"})
    finally:
        await kernel.aclose()
    assert deployed.is_error is False and echoed.is_error is False
    calls = [r for r in records(tmp_path) if r.get("tool") in ("deploy", "echo")]
    assert [(r["tool"], r["outcome"]) for r in calls] == [("deploy", "intent"), ("deploy", "executed"),
                                                          ("echo", "executed")]  # fmt: skip
    intent, outcome, read = calls
    assert intent["call_id"] == outcome["call_id"] and intent["call_id"].startswith("call_")
    assert intent["args_hash"] == outcome["args_hash"] == digest({"target": "prod-7"})
    assert "latency_ms" not in intent and intent["step"] == "execution"
    assert "call_id" not in read  # a read tool keeps one record per call
    assert intent["seq"] < outcome["seq"]
    key_bytes = (tmp_path / "qaqnuz.secret").read_bytes().strip()
    verdict = verify(tmp_path / "qaqnuz-audit.jsonl", chain_key(key_bytes))
    assert verdict.problems == [] and verdict.unknown == []


async def test_the_kernel_anchors_the_newest_record_in_the_store(tmp_path) -> None:
    cfg = write_config(tmp_path, config_text('fsync_interval = "100ms"\n'))
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    path = str(tmp_path / "qaqnuz-audit.jsonl")
    try:
        key = await manager_key(kernel)
        async with anyio.create_task_group() as tg:
            tg.start_soon(kernel.run_background)
            async with connect(kernel, key) as client:
                await client.call_tool("echo", {"message": "one"})
                with anyio.fail_after(10):
                    while (anchor := await kernel.store.audit_anchor(path)) is None or anchor.seq < 2:
                        await anyio.sleep(0.05)  # anchored by the periodic flush, not at close
                await client.call_tool("echo", {"message": "two"})
            tg.cancel_scope.cancel()
    finally:
        await kernel.aclose()
    final = records(tmp_path)[-1]
    anchor = await stored_anchor(cfg, path)
    assert anchor is not None and (anchor.seq, anchor.hash) == (final["seq"], final["hash"])  # closing anchors
    assert anchor.file == "qaqnuz-audit.jsonl" and anchor.offset == Path(path).stat().st_size


async def stored_anchor(cfg: Path, name: str):
    """The anchor in the store of a config, read after its kernel closed."""
    from qaqnuz.admin import open_admin
    from qaqnuz.config import load_config

    admin = open_admin(load_config(cfg))
    try:
        return await admin.store.audit_anchor(name)
    finally:
        await admin.aclose()


async def served(folder: Path, calls: int) -> Path:
    """A config whose server minted a key and answered `calls` echoes, then stopped."""
    cfg = write_config(folder, config_text())
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    try:
        key = await manager_key(kernel)
        async with connect(kernel, key) as client:
            for i in range(calls):
                await client.call_tool("echo", {"message": f"m{i}"})
    finally:
        await kernel.aclose()
    return cfg


def cli_verify(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(QAQNUZ), "audit", "verify", "--config", str(cfg), *extra], capture_output=True,
                          text=True)  # fmt: skip


async def test_cli_verify_finds_a_cut_tail_through_the_store_anchor(tmp_path) -> None:
    cfg = await served(tmp_path, 5)
    ok = cli_verify(cfg)
    assert ok.returncode == 0, ok.stderr
    assert "chain intact, reaches the store's anchor (record 6)" in ok.stderr  # the minted key, then 5 calls
    path = tmp_path / "qaqnuz-audit.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    cut = cli_verify(cfg)
    assert cut.returncode == 1
    assert "first bad record: qaqnuz-audit.jsonl: the log ends at record 4" in cut.stderr
    assert "records were cut off the end" in cut.stderr
    alone = cli_verify(cfg, "--no-anchor")  # the chain alone cannot see it, and says what it skipped
    assert alone.returncode == 0 and "--no-anchor" in alone.stderr


def _break(path: Path) -> None:
    """Make the live audit file unwritable, for root too: a folder where the file was."""
    path.unlink()
    path.mkdir()


def _mend(path: Path) -> None:
    path.rmdir()


async def test_on_error_fail_refuses_calls_while_the_log_cannot_be_written(tmp_path) -> None:
    cfg = write_config(tmp_path, config_text('on_error = "fail"\n'))
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    path = tmp_path / "qaqnuz-audit.jsonl"
    counter = tmp_path / "testkit-executions.txt"
    try:
        key = await manager_key(kernel)
        async with connect(kernel, key) as client:
            assert (await client.call_tool("echo", {"message": "before"})).is_error is False
            _break(path)
            # A write tool's intent cannot be written: refused before it runs.
            refused = await client.call_tool("deploy", {"target": "never"})
            assert refused.is_error is True
            assert refused.structured_content["error_class"] == "retryable"
            assert "audit log cannot be written" in refused.structured_content["sanitized_error"]
            assert not counter.exists() or "never" not in counter.read_text()
            # Every call is refused while it stays unwritable; readiness says why.
            echo = await client.call_tool("echo", {"message": "during"})
            assert echo.is_error is True and echo.structured_content["error_class"] == "retryable"
            assert (await kernel.readiness())["audit"] is False
            _mend(path)
            # The next refused call's own record is written: the log is back, and calls run again.
            await client.call_tool("echo", {"message": "probe"})
            after = await client.call_tool("deploy", {"target": "after"})
            assert after.is_error is False
            assert (await kernel.readiness())["audit"] is True
    finally:
        await kernel.aclose()
    assert kernel.metrics.audit_errors._value.get() >= 2
    assert counter.read_text().splitlines() == ["deploy:after"]


async def test_on_error_fail_with_an_unwritable_file_at_start_refuses_from_the_first_call(tmp_path) -> None:
    (tmp_path / "blocked").write_text("a file, so nothing can be created under it")
    text = config_text('on_error = "fail"\n').replace(
        'secret_file = "qaqnuz.secret"', 'secret_file = "qaqnuz.secret"\naudit_file = "blocked/audit.jsonl"', 1
    )
    cfg = write_config(tmp_path, text)
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    try:
        assert (await kernel.readiness())["audit"] is False
        key = await manager_key(kernel)
        async with connect(kernel, key) as client:
            echo = await client.call_tool("echo", {"message": "first"})
    finally:
        await kernel.aclose()
    assert echo.is_error is True and echo.structured_content["error_class"] == "retryable"


async def test_on_error_continue_serves_and_counts_every_lost_record(tmp_path, caplog) -> None:
    cfg = write_config(tmp_path, config_text('on_error = "continue"\n'))
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    assert 'on_error = "continue"' in caplog.text  # said loudly at start
    path = tmp_path / "qaqnuz-audit.jsonl"
    try:
        key = await manager_key(kernel)
        async with connect(kernel, key) as client:
            _break(path)
            before = kernel.metrics.audit_errors._value.get()
            for i in range(3):
                assert (await client.call_tool("echo", {"message": f"m{i}"})).is_error is False
            assert (await client.call_tool("deploy", {"target": "served"})).is_error is False
            assert (await kernel.readiness())["audit"] is True
            lost = kernel.metrics.audit_errors._value.get() - before
    finally:
        await kernel.aclose()
    assert lost == 5  # three calls, and the deploy's intent and outcome
    assert "AUDIT WRITE FAILED" in caplog.text
    assert (tmp_path / "testkit-executions.txt").read_text().splitlines() == ["deploy:served"]


async def test_a_refusing_server_recovers_without_calls_once_the_log_can_be_written(tmp_path) -> None:
    # Readiness takes a refusing replica out of rotation, so no call may come to prove the log writable again.
    cfg = write_config(tmp_path, config_text('on_error = "fail"\nfsync_interval = "100ms"\n'))
    kernel = await start_kernel(cfg, plugins=PLUGINS)
    path = tmp_path / "qaqnuz-audit.jsonl"
    try:
        key = await manager_key(kernel)
        _break(path)
        async with connect(kernel, key) as client:
            await client.call_tool("echo", {"message": "lost"})
        assert (await kernel.readiness())["audit"] is False
        _mend(path)
        async with anyio.create_task_group() as tg:
            tg.start_soon(kernel.run_background)
            with anyio.fail_after(10):
                while not (await kernel.readiness())["audit"]:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    finally:
        await kernel.aclose()
    assert [r["outcome"] for r in records(tmp_path) if r.get("step") == "audit"] == ["resumed"]


async def test_cli_verify_of_a_copy_checks_it_against_the_servers_anchor(tmp_path) -> None:
    cfg = await served(tmp_path, 3)
    copy = tmp_path / "copy" / "audit.jsonl"
    copy.parent.mkdir()
    copy.write_text("".join((tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines(keepends=True)[:-1]))
    checked = cli_verify(cfg, "--file", str(copy))
    assert checked.returncode == 1 and "records were cut off the end" in checked.stderr
    gone = cli_verify(cfg, "--file", str(tmp_path / "nowhere.jsonl"))
    assert gone.returncode == 1 and "the log was removed" in gone.stderr
