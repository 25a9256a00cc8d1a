"""Keys over the real stdio transport: identical failures, revocation mid-session, last-used (SPEC §5, §6).

Each server is the real `qaqnuz-mcp` console script in a subprocess; sessions are driven by the real `mcp`
client; revocations go through the real `qaqnuz` CLI; the store is a real SQLite file in tmp_path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from kit import kit_config, server_env
from qaqnuz import keys
from qaqnuz.envelope import AUTH_FAILED
from qaqnuz.testing import start_kernel, write_config
from stdio_harness import stdio_session

BIN = Path(sys.executable).parent
QAQNUZ = str(BIN / "qaqnuz")
QAQNUZ_MCP = str(BIN / "qaqnuz-mcp")
PREFIX = "qx_live_"
LOG_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)
UNAUTHORIZED = -32001

pytestmark = pytest.mark.anyio


def _with_checksum(body: str) -> str:
    return body + keys.checksum(body)


async def test_bad_keys_fail_identically_at_startup(tmp_path):
    """Revoked, expired, unknown, wrong-secret, malformed, bad-checksum and missing keys: same exit, same stderr."""
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        expired_raw, expiring = await kernel.keys.mint(
            brand="acme", scopes=["orders.read"], name="expiring", expires_in=1
        )
        good, good_rec = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="good")
        revoked, revoked_rec = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="revoked")
        assert await kernel.store.revoke_key(revoked_rec.key_id, time.time())
    finally:
        await kernel.aclose()

    last = good[-1]
    bad_keys = {
        "revoked": revoked,
        "expired": expired_raw,
        "unknown": keys.new_key(PREFIX).raw,  # well formed, valid checksum, never minted
        "wrong_secret": _with_checksum(f"{PREFIX}{good_rec.key_id}_{'A' * keys.SECRET_LEN}"),  # known id
        "malformed": f"{PREFIX}not-a-key",
        "bad_checksum": good[:-1] + ("B" if last == "A" else "A"),
        "missing": None,
    }
    assert keys.parse_key(bad_keys["unknown"], PREFIX) is not None
    assert keys.parse_key(bad_keys["wrong_secret"], PREFIX) is not None
    assert keys.parse_key(bad_keys["bad_checksum"], PREFIX) is None
    while time.time() <= expiring.expires_at + 0.2:  # wait for the 1 s lifetime to pass
        await anyio.sleep(0.1)

    def spawn(key: str | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [QAQNUZ_MCP],
            env=server_env(cfg, key),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    procs = {case: spawn(key) for case, key in bad_keys.items()}
    control = spawn(good)  # the same config with a good key starts, then stops on EOF
    results = {case: (p, *p.communicate(timeout=60)) for case, p in procs.items()}
    _, control_out, control_err = control, *control.communicate(timeout=60)

    assert control.returncode == 0, control_err.decode()
    assert control_out == b""

    normalised = {}
    for case, (proc, out, err) in results.items():
        text = err.decode()
        assert proc.returncode == 2, (case, text)
        assert out == b"", (case, out)  # nothing at all on stdout
        if bad_keys[case]:
            assert bad_keys[case] not in text, case
        error_lines = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1, (case, text)
        assert "QAQNUZ_API_KEY" in error_lines[0]
        normalised[case] = LOG_STAMP.sub("", text)

    assert len(set(normalised.values())) == 1, normalised


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_revocation_takes_effect_on_the_next_call_in_an_open_session(tmp_path, mode):
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="revoke-me")
    finally:
        await kernel.aclose()

    async with stdio_session(server_env(cfg, raw), mode=mode) as client:
        before = await client.call_tool("echo", {"message": "before"})
        assert not before.is_error
        assert json.loads(before.content[0].text) == {"message": "before", "times": 1}

        revoke = await anyio.run_process(
            [QAQNUZ, "keys", "revoke", record.key_id], env=server_env(cfg, None), check=False
        )
        assert revoke.returncode == 0, revoke.stderr.decode()
        assert f"revoked key {record.key_id}" in revoke.stderr.decode()

        with pytest.raises(MCPError) as call_error:
            await client.call_tool("echo", {"message": "after"})
        with pytest.raises(MCPError) as list_error:
            await client.list_tools(cache_mode="bypass")

    for error in (call_error.value, list_error.value):
        assert error.code == UNAUTHORIZED
        assert error.message == AUTH_FAILED
        assert error.data is None
        assert record.key_id not in error.message


async def test_last_used_is_set_after_a_stdio_call_and_survives_restart(tmp_path):
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        raw, record = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="used")
        _, idle = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="idle")
    finally:
        await kernel.aclose()
    assert record.last_used_at is None

    started = time.time()
    async with stdio_session(server_env(cfg, raw)) as client:
        result = await client.call_tool("echo", {"message": "hi"})
        assert not result.is_error
    # The client closed stdin (EOF); the server flushed last-used times as it stopped.

    listed = subprocess.run(
        [QAQNUZ, "keys", "list", "--json"], env=server_env(cfg, None), capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["key_id"]: row for row in json.loads(listed.stdout)}
    last_used = rows[record.key_id]["last_used_at"]
    assert last_used is not None
    assert last_used >= started
    assert rows[idle.key_id]["last_used_at"] is None  # only the key that was used

    restarted = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        assert (await restarted.store.get_key(record.key_id)).last_used_at == last_used
        assert (await restarted.store.get_key(idle.key_id)).last_used_at is None
    finally:
        await restarted.aclose()
    # Closing a kernel that saw no calls keeps the stored time.
    listed_again = subprocess.run(
        [QAQNUZ, "keys", "list", "--json"], env=server_env(cfg, None), capture_output=True, text=True, timeout=60
    )
    again = {row["key_id"]: row for row in json.loads(listed_again.stdout)}
    assert again[record.key_id]["last_used_at"] == last_used
