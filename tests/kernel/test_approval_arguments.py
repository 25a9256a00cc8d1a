"""Approvers see what they approve: the call's arguments, secret-looking values masked, at most 16 KiB, kept only
while a human may need them. The approval's args_hash is the audit line's; pending requests are capped per key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.masking import MASK
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio
QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")
DEPLOY = (
    "tools.create_order = { exposable = true, approval = true }\ntools.deploy = { exposable = true, approval = true }"
)
ARGS = {
    "target": "prod-eu",
    "api_token": "tok-live-998877",
    "options": {"Password": "hunter2-xyz", "region": "eu", "nested": [{"session_id": "s-42", "keep": "me"}]},
    "notes": "rollout after 18:00",
}
SHOWN = {
    "target": "prod-eu",
    "api_token": MASK,
    "options": {"Password": MASK, "region": "eu", "nested": [{"session_id": MASK, "keep": "me"}]},
    "notes": "rollout after 18:00",
}


def config(cap: int = 20, pending_ttl: str = "24h") -> str:
    text = kit_config(pending_ttl=pending_ttl).replace(
        "tools.create_order = { exposable = true, approval = true }", DEPLOY, 1
    )
    return text.replace("[approvals]\n", f"[approvals]\nmax_pending_per_key = {cap}\n", 1)


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QAQNUZ, *args, "--config", str(cfg)], env=server_env(cfg, None), capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def audit(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "qaqnuz-audit.jsonl").read_text().splitlines()]


async def manager(kernel):
    raw, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=["orders.write"], name="deployer")
    return await kernel.authenticate(raw)


async def test_the_human_sees_masked_arguments_and_the_same_hash_as_the_audit_line(tmp_path):
    cfg = write_config(tmp_path, config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        outcome = await kernel.host.call_tool(await manager(kernel), "deploy", ARGS, transport="test")
    finally:
        await kernel.aclose()
    approval_id = outcome.approval_id
    assert outcome.result.error_class == "permission" and approval_id
    shown = cli(cfg, "approvals", "show", approval_id)
    assert shown.returncode == 0, shown.stderr
    assert json.dumps(SHOWN, indent=2, sort_keys=True) in shown.stdout
    for secret in ("tok-live-998877", "hunter2-xyz", "s-42"):
        assert secret not in shown.stdout + shown.stderr
    [line] = [r for r in audit(tmp_path) if r.get("approval_id") == approval_id]
    view = json.loads(cli(cfg, "approvals", "show", approval_id, "--json").stdout)
    assert view["args_hash"] == line["args_hash"]
    assert view["key_name"] == "deployer" and view["status"] == "pending"
    [listed] = json.loads(cli(cfg, "approvals", "list", "--json").stdout)
    assert listed["arguments"] == SHOWN and listed["args_hash"] == line["args_hash"]
    assert "tok-live-998877" not in (tmp_path / "qaqnuz.db").read_bytes().decode("latin-1")


async def test_arguments_are_deleted_once_used_denied_or_expired(tmp_path):
    cfg = write_config(tmp_path, config(pending_ttl="1s"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        who = await manager(kernel)
        used = (await kernel.host.call_tool(who, "deploy", {**ARGS, "target": "a"}, transport="t")).approval_id
        denied = (await kernel.host.call_tool(who, "deploy", {**ARGS, "target": "b"}, transport="t")).approval_id
        await kernel.approvals.decide(used, approve=True, by="t")
        await kernel.approvals.decide(denied, approve=False, by="t")
        assert (await kernel.store.get_approval(used)).arguments is not None  # approved, not yet used: still shown
        assert (await kernel.store.get_approval(denied)).arguments is None
        ran = await kernel.host.call_tool(who, "deploy", {**ARGS, "target": "a"}, transport="t")
        assert not ran.is_error
        assert (await kernel.store.get_approval(used)).arguments is None
        lapsed = (await kernel.host.call_tool(who, "deploy", {**ARGS, "target": "c"}, transport="t")).approval_id
        kernel.clock = lambda: 10**10  # long after the 1s pending_ttl
        await kernel.store.expire_approvals(10**10)
        assert (await kernel.store.get_approval(lapsed)).arguments is None
    finally:
        await kernel.aclose()
    shown = cli(cfg, "approvals", "show", used)
    assert "arguments  (deleted: the request was used, denied or has expired)" in shown.stdout


async def test_large_arguments_are_cut_to_16_kib_and_flagged(tmp_path):
    cfg = write_config(tmp_path, config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        outcome = await kernel.host.call_tool(
            await manager(kernel), "deploy", {"target": "t", "notes": "x" * 40_000}, transport="t"
        )
        stored = await kernel.store.get_approval(outcome.approval_id)
    finally:
        await kernel.aclose()
    assert stored.arguments_truncated is True
    assert len(json.dumps(stored.arguments).encode()) <= 16 * 1024 + 2


async def test_pending_requests_are_capped_per_key_and_the_cap_is_retryable(tmp_path):
    cfg = write_config(tmp_path, config(cap=2))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        who = await manager(kernel)
        first = [await kernel.host.call_tool(who, "deploy", {"target": f"t{i}"}, transport="t") for i in range(2)]
        assert all(o.result.error_class == "permission" and o.approval_id for o in first)
        over = await kernel.host.call_tool(who, "deploy", {"target": "t2"}, transport="t")
        assert over.result.error_class == "retryable"
        assert over.result.sanitized_error == (
            "Too many approval requests from this key are waiting for a decision. Retry once some are decided."
        )
        assert over.result.retry_hint.retry_after_ms > 0 and over.approval_id is None
        again = await kernel.host.call_tool(who, "deploy", {"target": "t0"}, transport="t")  # an identical call
        assert again.approval_id == first[0].approval_id
        other = await manager(kernel)  # another key of the same brand has its own allowance
        assert (await kernel.host.call_tool(other, "deploy", {"target": "t2"}, transport="t")).approval_id
    finally:
        await kernel.aclose()
    capped = [r for r in audit(tmp_path) if r.get("outcome") == "approval_capped"]
    assert len(capped) == 1 and capped[0]["error_class"] == "retryable"
