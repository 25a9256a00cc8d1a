"""`qaqnuz audit search` and `qaqnuz audit tail` as people run them: real commands on the audit file a real
kernel wrote (keys minted by the CLI, tool calls through the governed pipeline)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from kit import kit_config, server_env
from qaqnuz.testing import connect, start_kernel, write_config

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QAQNUZ, *args], env=server_env(cfg, None), capture_output=True, text=True, timeout=60,
                          cwd=cfg.parent)  # fmt: skip


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """An audit file with: two keys minted, echo called twice by acme and once by globex, one call denied."""
    config = write_config(tmp_path, kit_config())

    async def calls() -> None:
        kernel = await start_kernel(config, plugins=["testkit_pack.plugin"])
        try:
            acme, _ = await kernel.keys.mint(brand="acme", role="viewer", scopes=["orders.read"], name="a")
            globex, _ = await kernel.keys.mint(brand="globex", role="viewer", scopes=["orders.read"], name="g")
            async with connect(kernel, acme) as client:
                await client.call_tool("echo", {"message": "one"})
                await client.call_tool("echo", {"message": "two"})
                await client.call_tool("echo", {"nope": 1})  # refused by validation
            async with connect(kernel, globex) as client:
                await client.call_tool("echo", {"message": "three"})
        finally:
            await kernel.aclose()

    anyio.run(calls)
    return config


def lines(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_search_filters_newest_first(cfg: Path) -> None:
    every = lines(run(cfg, "audit", "search", "--json"))
    assert [r["time"] for r in every] == sorted((r["time"] for r in every), reverse=True)
    assert {r.get("step") for r in every} >= {"key", "execution", "validation"}
    assert not any("prev" in r or "hash" in r for r in every)
    calls = lines(run(cfg, "audit", "search", "--calls", "--json"))
    assert [(r["brand"], r["outcome"]) for r in calls] == [("globex", "executed"), ("acme", "denied"),
                                                          ("acme", "executed"), ("acme", "executed")]  # fmt: skip
    acme_ok = lines(run(cfg, "audit", "search", "--brand", "acme", "--outcome", "executed", "--json"))
    assert len(acme_ok) == 2 and {r["tool"] for r in acme_ok} == {"echo"}
    key_id = acme_ok[0]["key_id"]
    by_key = lines(run(cfg, "audit", "search", "--key", key_id, "--calls", "--json"))
    assert len(by_key) == 3 and {r["key_id"] for r in by_key} == {key_id}
    assert lines(run(cfg, "audit", "search", "--tool", "nothing", "--json")) == []
    minted = lines(run(cfg, "audit", "search", "--outcome", "minted", "--json"))
    assert {r["brand"] for r in minted} == {"acme", "globex"}


def test_search_by_time_and_in_pages(cfg: Path) -> None:
    assert lines(run(cfg, "audit", "search", "--since", "1h", "--json"))
    assert lines(run(cfg, "audit", "search", "--until", "2000-01-01T00:00", "--json")) == []
    first = run(cfg, "audit", "search", "--calls", "--limit", "2", "--json")
    assert len(lines(first)) == 2 and "--before" in first.stderr
    cursor = first.stderr.rsplit("--before ", 1)[1].split()[0]
    rest = lines(run(cfg, "audit", "search", "--calls", "--limit", "2", "--before", cursor, "--json"))
    assert [r["brand"] for r in rest] == ["acme", "acme"]
    table = run(cfg, "audit", "search", "--calls")
    assert table.stdout.splitlines()[0].split()[:3] == ["TIME", "STEP", "OUTCOME"] and "globex" in table.stdout


def test_search_refuses_what_it_cannot_use_and_never_repeats_a_key(cfg: Path) -> None:
    made = run(cfg, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "x")
    key = made.stdout.strip()
    refused = run(cfg, "audit", "search", "--key", key)
    assert refused.returncode == 2 and "key id" in refused.stderr and key not in refused.stderr + refused.stdout
    bad_time = run(cfg, "audit", "search", "--since", "yesterday-ish")
    assert bad_time.returncode == 2 and "duration ago" in bad_time.stderr
    missing = run(cfg, "audit", "search", "--file", str(cfg.parent / "absent.jsonl"))
    assert missing.returncode == 2 and "no such audit file" in missing.stderr


def test_tail_shows_the_newest_and_follows_appends_and_replacement(cfg: Path) -> None:
    last = lines(run(cfg, "audit", "tail", "-n", "3", "--json"))
    every = lines(run(cfg, "audit", "search", "--json", "--limit", "1000"))
    assert last == list(reversed(every[:3]))  # oldest first, as tail prints
    audit = cfg.parent / "qaqnuz-audit.jsonl"
    command = [QAQNUZ, "audit", "tail", "-n", "0", "--follow", "--json", "--interval", "0.05"]
    follower = subprocess.Popen(command, env=server_env(cfg, None), stdout=subprocess.PIPE, text=True, cwd=cfg.parent)
    watchdog = threading.Timer(30, follower.kill)  # a follower that never prints fails the test, never hangs it
    watchdog.start()
    try:
        time.sleep(0.5)
        assert run(cfg, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "new").returncode == 0
        assert follower.stdout is not None
        seen = json.loads(follower.stdout.readline())
        assert seen["outcome"] == "minted" and seen["brand"] == "acme"
        audit.rename(audit.with_suffix(".old"))  # rotated away: the next file is read from its start
        assert run(cfg, "keys", "create", "--brand", "globex", "--scope", "orders.read", "--name", "n2").returncode == 0
        again = json.loads(follower.stdout.readline())
        assert again["outcome"] == "minted" and again["brand"] == "globex"
    finally:
        watchdog.cancel()
        follower.terminate()
        follower.wait(timeout=10)
