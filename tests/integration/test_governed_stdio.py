"""Acceptance tests for the governed path (SPEC §2 to §4) over stdio.

Every test drives a real `qaqnuz-mcp` subprocess with the real `mcp` Python client, in both protocol eras
where it is cheap ("auto" negotiates 2026-07-28, "legacy" 2025-11-25). Approvals are decided with the real
`qaqnuz` CLI as a subprocess, sharing the config folder's store with the running server. Keys are minted by
a kernel started in-process and closed before any subprocess starts.

The one exception is the per-brand limit across two keys: a stdio server serves exactly one key and the
built-in limiter lives in the server's memory, so two keys can only share a brand window inside one
process. That test drives one real kernel through the `mcp` client over the SDK's in-memory transport.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from kit import kit_config, server_env
from qaqnuz.envelope import (
    DEPENDENCY_FAILED,
    NOT_ENTITLED,
    NOT_PERMITTED,
    RATE_LIMITED,
    TERMINAL_FAILED,
    approval_denied,
    approval_expired,
)
from qaqnuz.testing import connect, start_kernel, write_config
from stdio_harness import stdio_session

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
PROTOCOLS = {"auto": "2026-07-28", "legacy": "2025-11-25"}
QAQNUZ = Path(sys.executable).parent / "qaqnuz"
COUNTER = "testkit-executions.txt"

VIEWER = ("acme", "viewer", ["orders.read"])
MANAGER = ("acme", "manager", ["orders.read", "orders.write"])
WRITER = ("acme", "manager", ["orders.write"])
GLOBEX_MANAGER = ("globex", "manager", ["orders.read", "orders.write"])

READ_TOOLS = {"beta_echo", "big", "boom", "echo", "flaky_upstream", "slow"}
WRITE_TOOLS = {"write_tool", "create_order"}


# -- helpers -----------------------------------------------------------------------------------------
async def provision(folder: Path, text: str, **keys: tuple[str, str, list[str]]) -> tuple[Path, dict[str, str]]:
    """Write the config into `folder` and mint one key per (brand, role, scopes); returns (config, raw keys)."""
    cfg = write_config(folder, text)
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        raw = {}
        for name, (brand, role, scopes) in keys.items():
            raw[name], _ = await kernel.keys.mint(brand=brand, role=role, scopes=scopes, name=name)
    finally:
        await kernel.aclose()
    return cfg, raw


async def cli(cfg: Path, *args: str) -> tuple[int, str, str]:
    """Run the real `qaqnuz` CLI against the config folder's store; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    proc = await anyio.run_process([str(QAQNUZ), *args, "--config", str(cfg)], env=env, check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def executions(cfg: Path) -> list[str]:
    counter = cfg.parent / COUNTER
    return counter.read_text().splitlines() if counter.exists() else []


def everything(result: Any) -> str:
    """The whole answer as one string, to check that nothing leaked anywhere in it."""
    return json.dumps(result.model_dump(mode="json"))


def assert_success(result: Any, data: Any) -> None:
    assert result.is_error is False
    assert result.content[0].type == "text"
    assert json.loads(result.content[0].text) == data
    assert result.structured_content == {"ok": True, "data": data, "truncated": False}


def assert_failure(result: Any, error_class: str, text: str | None = None) -> str:
    """Checks the failure envelope's shape; returns its sanitized_error."""
    assert result.is_error is True
    structured = result.structured_content
    assert structured["ok"] is False
    assert structured["error_class"] == error_class
    assert result.content[0].type == "text"
    assert result.content[0].text == structured["sanitized_error"]
    if text is not None:
        assert structured["sanitized_error"] == text
    return structured["sanitized_error"]


def assert_approval_required(result: Any) -> str:
    text = assert_failure(result, "permission")
    approval_id = result.structured_content["approval_id"]
    assert approval_id.startswith("apr_") and len(approval_id) > len("apr_") + 16
    assert "requires approval" in text
    assert approval_id in text
    return approval_id


# -- 1. list_tools -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_list_tools_shows_exactly_what_each_key_may_call(tmp_path, mode):
    cfg, keys = await provision(tmp_path, kit_config(), viewer=VIEWER, manager=MANAGER, writer=WRITER)
    expected = {
        "viewer": READ_TOOLS,
        "manager": READ_TOOLS | WRITE_TOOLS,
        "writer": WRITE_TOOLS,
    }
    for name, tools in expected.items():
        async with stdio_session(server_env(cfg, keys[name]), mode=mode) as client:
            assert client.protocol_version == PROTOCOLS[mode]
            listed = (await client.list_tools()).tools
        by_name = {t.name: t for t in listed}
        assert len(by_name) == len(listed), f"{name}: a tool is listed twice"
        assert set(by_name) == tools, name
        for tool in listed:
            assert tool.description.startswith(("[stable] ", "[beta] ")), tool.description
        if "echo" in by_name:
            assert by_name["echo"].description == "[stable] Echo a message back."
            assert by_name["beta_echo"].description == "[beta] Echo, beta tier."
        if "create_order" in by_name:
            assert by_name["create_order"].description == "[stable] Create an order (needs approval)."


@pytest.mark.parametrize("mode", MODES)
async def test_non_entitled_brand_lists_nothing_and_cannot_call(tmp_path, mode):
    # The key is minted while tiny's plan is entitled; then the brand is moved back to `starter`
    # (not entitled) and the server restarted on the same store: a downgraded brand.
    cfg, keys = await provision(tmp_path, kit_config(tiny_plan="growth"), tiny=("tiny", "viewer", ["orders.read"]))
    write_config(tmp_path, kit_config())
    async with stdio_session(server_env(cfg, keys["tiny"]), mode=mode) as client:
        listed = await client.list_tools()
        called = await client.call_tool("echo", {"message": "hi"})
    assert listed.tools == []
    assert_failure(called, "permission", NOT_ENTITLED)
    assert executions(cfg) == []


# -- 2. and 3. success, and one answer for every invisible tool ----------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_success_envelope_and_identical_permission_envelopes(tmp_path, mode):
    cfg, keys = await provision(tmp_path, kit_config(), viewer=VIEWER)
    async with stdio_session(server_env(cfg, keys["viewer"]), mode=mode) as client:
        ok = await client.call_tool("echo", {"message": "hello, world", "times": 3})
        beta = await client.call_tool("beta_echo", {})
        denied = {
            "unknown": await client.call_tool("no_such_tool", {}),
            "sensitive": await client.call_tool("secret_dump", {}),
            "disabled": await client.call_tool("disabled_tool", {}),
            "not exposable": await client.call_tool("hidden_tool", {}),
            "out of scope": await client.call_tool("write_tool", {}),
            # visibility is decided before validation: bad arguments to an invisible tool change nothing
            "unknown, bad args": await client.call_tool("no_such_tool_2", {"x": "y"}),
            "not exposable, bad args": await client.call_tool("hidden_tool", {"unexpected": 1}),
        }
    assert len(ok.content) == 1
    assert ok.content[0].text == '{"message":"hello, world","times":3}'
    assert_success(ok, {"message": "hello, world", "times": 3})
    assert_success(beta, {"ok": True})

    for result in denied.values():
        assert_failure(result, "permission", NOT_PERMITTED)
        assert set(result.structured_content) == {"ok", "error_class", "sanitized_error"}
    reference = denied["unknown"]
    for reason, result in denied.items():
        assert result.content[0].text == reference.content[0].text, reason
        assert result.structured_content == reference.structured_content, reason
        assert result.is_error is reference.is_error, reason
        assert result.model_dump_json() == reference.model_dump_json(), reason


# -- 4. validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_bad_arguments_name_the_path_and_never_echo_the_value(tmp_path, mode):
    cfg, keys = await provision(tmp_path, kit_config(), viewer=VIEWER)
    too_long = "ZQXSENTINEL" + "x" * 100
    cases = [
        # (arguments, path and rule the message must name, value that must not appear)
        ({"message": too_long}, ["$.message", "maxLength"], "ZQXSENTINEL"),
        ({"times": 2}, ["$", "missing required property 'message'", "required"], None),
        ({"message": "hi", "extra_prop": "EXTRASENTINEL"}, ["$", "additionalProperties"], "EXTRASENTINEL"),
        ({"message": "hi", "times": "TYPESENTINEL"}, ["$.times", "integer", "type"], "TYPESENTINEL"),
        ({"message": "hi", "times": -987654}, ["$.times", "minimum"], "987654"),
    ]
    async with stdio_session(server_env(cfg, keys["viewer"]), mode=mode) as client:
        results = [await client.call_tool("echo", arguments) for arguments, _, _ in cases]
    for (arguments, needles, secret), result in zip(cases, results, strict=True):
        text = assert_failure(result, "validation")
        assert text.startswith("Invalid arguments at "), text
        for needle in needles:
            assert needle in text, (arguments, text)
        if secret is not None:
            assert secret not in everything(result), (arguments, text)
    assert "$.message:" in results[0].content[0].text
    assert "$.times:" in results[3].content[0].text


# -- 5. failures are classified and sanitised; big payloads are cut ----------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_tool_failures_are_classified_and_sanitised(tmp_path, mode):
    cfg, keys = await provision(tmp_path, kit_config(), viewer=VIEWER)
    async with stdio_session(server_env(cfg, keys["viewer"]), mode=mode) as client:
        boom = await client.call_tool("boom", {})
        flaky = await client.call_tool("flaky_upstream", {})
        slow = await client.call_tool("slow", {})
        big = await client.call_tool("big", {})

    assert_failure(boom, "terminal", TERMINAL_FAILED)
    leaked = everything(boom)
    for fragment in ("hunter2", "/etc/passwd", "SELECT", "password", "secret detail", "RuntimeError", "Traceback"):
        assert fragment not in leaked, fragment

    assert_failure(flaky, "dependency", DEPENDENCY_FAILED)
    leaked = everything(flaky)
    for fragment in ("503", "internal.example", "token=abc", "DependencyError"):
        assert fragment not in leaked, fragment

    assert_failure(slow, "dependency", DEPENDENCY_FAILED)
    assert "late" not in everything(slow)

    assert big.is_error is False
    text = big.content[0].text
    assert len(text.encode("utf-8")) <= 65536
    data = json.loads(text)  # valid JSON, cut on whole rows
    assert big.structured_content == {"ok": True, "data": data, "truncated": True}
    assert isinstance(data, list) and 0 < len(data) < 300_000 // 60
    assert data == [{"row": i, "text": "é" * 50} for i in range(len(data))]


# -- 6. approvals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_approved_call_executes_exactly_once(tmp_path, mode):
    cfg, keys = await provision(tmp_path, kit_config(), manager=MANAGER)
    order = {"sku": "A-1", "qty": 2}
    async with stdio_session(server_env(cfg, keys["manager"]), mode=mode) as client:
        first = await client.call_tool("create_order", order)
        approval_id = assert_approval_required(first)
        assert first.content[0].text == (
            f"Tool call requires approval (approval_id={approval_id}). Re-issue the same call after it is approved."
        )
        again = await client.call_tool("create_order", order)
        same_reordered = await client.call_tool("create_order", {"qty": 2, "sku": "A-1"})
        other = await client.call_tool("create_order", {"sku": "A-1", "qty": 3})
        assert executions(cfg) == []

        code, _, err = await cli(cfg, "approvals", "approve", approval_id, "--reason", "looks fine")
        assert code == 0, err

        executed = await client.call_tool("create_order", order)
        third = await client.call_tool("create_order", order)
        other_after = await client.call_tool("create_order", {"sku": "A-1", "qty": 3})

    assert assert_approval_required(again) == approval_id
    assert assert_approval_required(same_reordered) == approval_id  # canonical JSON of the arguments
    other_id = assert_approval_required(other)
    assert other_id != approval_id

    assert_success(executed, {"created": True, "sku": "A-1", "qty": 2})
    assert executions(cfg) == ["A-1:2"]  # exactly once, and nothing for the other arguments

    new_id = assert_approval_required(third)  # the approval was consumed: a fresh request
    assert new_id not in (approval_id, other_id)
    assert assert_approval_required(other_after) == other_id  # still pending, untouched by the approval

    code, _, _ = await cli(cfg, "approvals", "approve", approval_id)
    assert code == 2  # a consumed approval cannot be decided again


async def test_denied_approval_says_so_and_never_executes(tmp_path):
    cfg, keys = await provision(tmp_path, kit_config(), manager=MANAGER)
    order = {"sku": "D-1", "qty": 1}
    async with stdio_session(server_env(cfg, keys["manager"])) as client:
        approval_id = assert_approval_required(await client.call_tool("create_order", order))
        code, _, err = await cli(cfg, "approvals", "deny", approval_id, "--reason", "no")
        assert code == 0, err
        denied = await client.call_tool("create_order", order)
        after = await client.call_tool("create_order", order)
    text = assert_failure(denied, "permission", approval_denied(approval_id))
    assert "denied" in text
    assert denied.structured_content["approval_id"] == approval_id
    assert assert_approval_required(after) != approval_id  # re-issuing opens a new request
    assert executions(cfg) == []


async def test_pending_request_expires(tmp_path):
    cfg, keys = await provision(tmp_path, kit_config(pending_ttl="1s"), manager=MANAGER)
    order = {"sku": "E-1", "qty": 1}
    async with stdio_session(server_env(cfg, keys["manager"])) as client:
        approval_id = assert_approval_required(await client.call_tool("create_order", order))
        await anyio.sleep(1.5)  # past pending_ttl
        code, _, _ = await cli(cfg, "approvals", "approve", approval_id)
        assert code == 2  # an expired request cannot be approved
        expired = await client.call_tool("create_order", order)
        after = await client.call_tool("create_order", order)
    text = assert_failure(expired, "permission", approval_expired(approval_id))
    assert "expired" in text
    assert expired.structured_content["approval_id"] == approval_id
    assert assert_approval_required(after) != approval_id
    assert executions(cfg) == []


async def test_approval_not_used_within_its_validity_expires(tmp_path):
    cfg, keys = await provision(tmp_path, kit_config(valid_for="1s"), manager=MANAGER)
    order = {"sku": "V-1", "qty": 1}
    async with stdio_session(server_env(cfg, keys["manager"])) as client:
        approval_id = assert_approval_required(await client.call_tool("create_order", order))
        code, _, err = await cli(cfg, "approvals", "approve", approval_id)
        assert code == 0, err
        await anyio.sleep(1.5)  # past valid_for
        expired = await client.call_tool("create_order", order)
    assert_failure(expired, "permission", approval_expired(approval_id))
    assert executions(cfg) == []


async def test_another_brand_can_neither_see_nor_decide_an_approval(tmp_path):
    cfg, keys = await provision(tmp_path, kit_config(), acme=MANAGER, globex=GLOBEX_MANAGER)
    order = {"sku": "X-1", "qty": 5}
    async with stdio_session(server_env(cfg, keys["acme"])) as acme:
        acme_id = assert_approval_required(await acme.call_tool("create_order", order))
        async with stdio_session(server_env(cfg, keys["globex"])) as globex:
            globex_id = assert_approval_required(await globex.call_tool("create_order", order))
        assert globex_id != acme_id

        for verb in ("approve", "deny"):
            code, out, err = await cli(cfg, "approvals", verb, acme_id, "--brand", "globex")
            assert code == 2, (verb, out, err)
            assert acme_id not in out

        code, out, err = await cli(cfg, "approvals", "list", "--brand", "globex", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert [r["approval_id"] for r in listed] == [globex_id]
        assert all(r["brand"] == "globex" for r in listed)
        assert acme_id not in out

        code, out, err = await cli(cfg, "approvals", "list", "--brand", "acme", "--json")
        assert code == 0, err
        assert [(r["approval_id"], r["status"]) for r in json.loads(out)] == [(acme_id, "pending")]

        still = await acme.call_tool("create_order", order)
    assert assert_approval_required(still) == acme_id  # globex's attempts left it pending
    assert executions(cfg) == []


# -- 7. rate limits ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_per_key_limit_refuses_the_sixth_call(tmp_path, mode):
    cfg, keys = await provision(tmp_path, kit_config(per_key="5/60s", per_brand="300/60s"), viewer=VIEWER)
    async with stdio_session(server_env(cfg, keys["viewer"]), mode=mode) as client:
        admitted = [await client.call_tool("echo", {"message": f"m{i}"}) for i in range(5)]
        sixth = await client.call_tool("echo", {"message": "m5"})
        # the limit comes before visibility: an unknown tool is refused the same way
        unknown = await client.call_tool("no_such_tool", {})
        listed = await client.list_tools()  # list_tools is never rate limited
    for i, result in enumerate(admitted):
        assert_success(result, {"message": f"m{i}", "times": 1})
    for result in (sixth, unknown):
        assert_failure(result, "retryable", RATE_LIMITED)
        assert result.content[0].text == "Rate limit exceeded. Please wait before sending more requests."
        hint = result.structured_content["retry_hint"]
        assert 0 < hint["retry_after_ms"] <= 60_000
        assert hint["max_attempts"] >= 1 and hint["backoff"]
    assert {t.name for t in listed.tools} == READ_TOOLS


@pytest.mark.parametrize("mode", MODES)
async def test_per_brand_limit_holds_across_two_keys(tmp_path, mode):
    # One process, two keys of one brand (see the module docstring for why not two stdio servers).
    cfg = write_config(tmp_path, kit_config(per_key="100/60s", per_brand="5/60s"))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    try:
        first, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="first")
        second, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="second")
        other, _ = await kernel.keys.mint(brand="globex", scopes=["orders.read"], name="other")
        async with (
            connect(kernel, first, mode=mode) as one,
            connect(kernel, second, mode=mode) as two,
            connect(kernel, other, mode=mode) as three,
        ):
            admitted = [await one.call_tool("echo", {"message": "a"}) for _ in range(3)]
            admitted += [await two.call_tool("echo", {"message": "b"}) for _ in range(2)]
            refused = [await two.call_tool("echo", {"message": "b"}), await one.call_tool("echo", {"message": "a"})]
            other_brand = await three.call_tool("echo", {"message": "c"})
    finally:
        await kernel.aclose()
    for result in admitted:
        assert result.is_error is False
    for result in refused:
        assert_failure(result, "retryable", RATE_LIMITED)
        assert result.structured_content["retry_hint"]["retry_after_ms"] > 0
    assert_success(other_brand, {"message": "c", "times": 1})
