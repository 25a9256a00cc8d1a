"""End to end over HTTP: an MCP client calls an approval-gated tool on a real server, the request is posted
to a real fake Slack, and signed interaction payloads decide it through `/slack/interactions`."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from conftest import ACME_CHANNEL, ALICE, BOB, CAROL, GLOBEX_CHANNEL, MALLORY, eventually, slack_config
from fakeslack import signed
from mcp import Client

pytestmark = pytest.mark.anyio

DEPLOY_LINE = "tools.create_order = { exposable = true, approval = true }\n\n[brands.globex]"
WITH_DEPLOY = "tools.create_order = { exposable = true, approval = true }\ntools.deploy = { exposable = true, approval = true }\n\n[brands.globex]"  # noqa: E501


def config(fake: Any, extra: str = "") -> str:
    return slack_config(fake.api, extra).replace(DEPLOY_LINE, WITH_DEPLOY, 1)


async def call(server: Any, key: str, tool: str, args: dict[str, Any]) -> Any:
    async with Client(f"{server.base}/mcp?token={key}") as client:
        return await client.call_tool(tool, args)


def post(server: Any, payload: dict[str, Any], **sign: Any) -> Any:
    import httpx

    body, headers = signed(payload, **sign)
    return httpx.post(server.interactions, content=body, headers=headers, timeout=10)


def audit(server: Any) -> list[dict[str, Any]]:
    path = server.folder / "qaqnuz-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def requested(server: Any, fake: Any, key: str, args: dict[str, Any], tool: str = "create_order") -> str:
    first = await call(server, key, tool, args)
    assert first.is_error and first.structured_content["error_class"] == "permission"
    approval_id: str = first.structured_content["approval_id"]
    await anyio.to_thread.run_sync(lambda: eventually(lambda: fake.made("chat.postMessage")))
    return approval_id


async def test_approve_in_slack_lets_the_identical_call_run_exactly_once(slack_server, fake_slack):
    server = slack_server(config(fake_slack))
    key = server.mint("manager")
    args = {"sku": "<!channel> *bold* & <http://evil.example|click>", "qty": 2}
    approval_id = await requested(server, fake_slack, key, args)

    [message] = fake_slack.made("chat.postMessage")
    assert message["channel"] == ACME_CHANNEL and message["unfurl_links"] is False and message["unfurl_media"] is False
    shown = json.dumps(message["blocks"])
    assert "create_order" in shown and "acme" in shown and "manager" in shown and approval_id in shown
    assert "(role *manager*)" in shown and "*create_order* (write)" in shown  # the key's role, the side effect
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown and "&amp;" in shown
    assert "&lt;http://evil.example|click&gt;" in shown
    buttons = message["blocks"][-1]["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("qaqnuz_approve", approval_id),
        ("qaqnuz_deny", approval_id),
    ]

    metric = server.kernel.metrics.registry.get_sample_value
    assert metric("qaqnuz_approvals_pending", {"brand": "acme"}) == 1.0
    answer = await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, ALICE)))
    assert answer.status_code == 200
    record = server.approval(approval_id)
    assert str(record.status) == "approved" and record.decided_by == f"slack:{ALICE}"
    await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.made("chat.update")))
    updated = fake_slack.posted(approval_id)[2]
    assert "Approved" in json.dumps(updated["blocks"]) and ALICE in json.dumps(updated["blocks"])
    assert "actions" not in [b["type"] for b in updated["blocks"]]  # no buttons any more

    executed = await call(server, key, "create_order", args)
    assert executed.is_error is False and executed.structured_content["data"]["qty"] == 2
    again = await call(server, key, "create_order", args)
    assert again.is_error and again.structured_content["approval_id"] != approval_id  # consumed: asks again
    counter = server.folder / "testkit-executions.txt"
    assert counter.read_text().splitlines() == [f"{args['sku']}:2"]
    assert metric("qaqnuz_approval_decisions_total", {"decision": "approved"}) == 1.0
    assert metric("qaqnuz_approval_decision_seconds_count") == 1.0
    assert metric("qaqnuz_approvals_pending", {"brand": "acme"}) == 1.0  # the last call opened a new one
    decided = [r for r in audit(server) if r.get("step") == "approval" and r.get("decided_by")]
    assert [(r["approval_id"], r["outcome"], r["decided_by"]) for r in decided] == [
        (approval_id, "approved", f"slack:{ALICE}")
    ]


async def test_masked_arguments_stay_masked_and_long_values_are_cut(slack_server, fake_slack):
    server = slack_server(config(fake_slack))
    key = server.mint("manager")
    args = {"target": "prod", "api_token": "sk-live-very-secret-value", "notes": "x" * 5000}
    await requested(server, fake_slack, key, args, tool="deploy")
    shown = json.dumps(fake_slack.made("chat.postMessage")[0]["blocks"])
    assert "sk-live-very-secret-value" not in shown and "***" in shown
    assert "x" * 400 not in shown and "…" in json.dumps(fake_slack.made("chat.postMessage")[0], ensure_ascii=False)


async def test_deny_with_a_reason_from_the_modal_is_a_permission_error(slack_server, fake_slack):
    server = slack_server(config(fake_slack))
    key = server.mint("manager")
    args = {"sku": "B-2", "qty": 1}
    approval_id = await requested(server, fake_slack, key, args)
    click = fake_slack.click(approval_id, ALICE, "qaqnuz_deny")
    assert (await anyio.to_thread.run_sync(lambda: post(server, click))).status_code == 200
    assert str(server.approval(approval_id).status) == "pending"  # the modal asks for a reason first
    [opened] = await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.made("views.open")))
    submit = fake_slack.deny_submission(opened["view"], ALICE, "not this week")
    assert (await anyio.to_thread.run_sync(lambda: post(server, submit))).status_code == 200
    record = server.approval(approval_id)
    assert str(record.status) == "denied" and record.reason == "not this week"
    denied = await call(server, key, "create_order", args)
    assert denied.is_error and denied.structured_content["error_class"] == "permission"
    assert not (server.folder / "testkit-executions.txt").exists()
    await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.made("chat.update")))
    assert "not this week" in json.dumps(fake_slack.posted(approval_id)[2]["blocks"])


async def test_refused_interactions_change_nothing(slack_server, fake_slack):
    server = slack_server(config(fake_slack))
    acme_key, globex_key = server.mint("manager"), server.mint("globex-agent", brand="globex")
    approval_id = await requested(server, fake_slack, acme_key, {"sku": "C-3", "qty": 1})
    globex_id = (await call(server, globex_key, "create_order", {"sku": "G-1", "qty": 1})).structured_content[
        "approval_id"
    ]
    await anyio.to_thread.run_sync(lambda: eventually(lambda: len(fake_slack.made("chat.postMessage")) == 2))
    good = fake_slack.click(approval_id, ALICE)

    def attempts() -> list[int]:
        import httpx

        body, headers = signed(good)
        forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
        stale_body, stale = signed(good, timestamp=int(time.time()) - 301)
        wrong_secret_body, wrong_secret = signed(good, secret="not-the-signing-secret")
        altered = body.replace(b"UALICE001", b"UCAROL001")
        sent = [
            httpx.post(server.interactions, content=body, headers=forged),
            httpx.post(server.interactions, content=stale_body, headers=stale),
            httpx.post(server.interactions, content=wrong_secret_body, headers=wrong_secret),
            httpx.post(server.interactions, content=altered, headers=headers),
            httpx.post(server.interactions, content=body, headers={"Content-Type": headers["Content-Type"]}),
        ]
        return [r.status_code for r in sent]

    assert await anyio.to_thread.run_sync(attempts) == [401, 401, 401, 401, 401]
    refused = [
        fake_slack.click(approval_id, MALLORY),  # not an approver
        fake_slack.click(approval_id, BOB),  # an approver, but the key is his own
        fake_slack.click(approval_id, CAROL),  # another brand's approver
        fake_slack.click(approval_id, ALICE, value="apr_" + "x" * 26),  # unknown approval id
        fake_slack.click(globex_id, ALICE, channel=ACME_CHANNEL),  # another brand's approval, from acme's channel
    ]
    for payload in refused:
        assert (await anyio.to_thread.run_sync(lambda p=payload: post(server, p))).status_code == 200
    for approval in (approval_id, globex_id):
        assert str(server.approval(approval).status) == "pending"
    notes = await anyio.to_thread.run_sync(
        lambda: eventually(
            lambda: len(fake_slack.made("chat.postEphemeral")) >= 5 and fake_slack.made("chat.postEphemeral")
        )
    )
    assert {n["user"] for n in notes} == {MALLORY, BOB, CAROL, ALICE}
    assert any("own key" in n["text"] for n in notes)

    # the first decision wins; a second click is told who decided; a replay changes nothing
    body, headers = signed(good)
    first = await anyio.to_thread.run_sync(lambda: post_raw(server, body, headers))
    assert first.status_code == 200 and str(server.approval(approval_id).status) == "approved"
    deny_later = fake_slack.click(approval_id, BOB, "qaqnuz_deny")
    assert (await anyio.to_thread.run_sync(lambda: post(server, deny_later))).status_code == 200
    told = await anyio.to_thread.run_sync(
        lambda: eventually(lambda: [n for n in fake_slack.made("chat.postEphemeral") if "already" in n["text"]])
    )
    assert told[0]["user"] == BOB and ALICE in told[0]["text"]
    assert not fake_slack.made("views.open")
    replay = await anyio.to_thread.run_sync(lambda: post_raw(server, body, headers))
    assert replay.status_code == 200
    record = server.approval(approval_id)
    assert str(record.status) == "approved" and record.decided_by == f"slack:{ALICE}"
    assert str(server.approval(globex_id).status) == "pending"
    decided = [r for r in audit(server) if r.get("step") == "approval" and r.get("decided_by")]
    assert len(decided) == 1


def post_raw(server: Any, body: bytes, headers: dict[str, str]) -> Any:
    import httpx

    return httpx.post(server.interactions, content=body, headers=headers, timeout=10)


async def test_slack_down_never_approves_and_never_holds_a_call_beyond_wait_seconds(slack_server, fake_slack):
    fake_slack.down = True
    server = slack_server(config(fake_slack).replace('valid_for = "1h"', 'valid_for = "1h"\nwait_seconds = 1', 1))
    key = server.mint("manager")
    args = {"sku": "D-4", "qty": 1}
    started = time.monotonic()
    first = await call(server, key, "create_order", args)
    took = time.monotonic() - started
    assert first.is_error and first.structured_content["error_class"] == "permission"
    assert took < 4  # wait_seconds (1 s) plus the call itself; Slack's retries happen in the background
    approval_id = first.structured_content["approval_id"]
    await anyio.to_thread.run_sync(lambda: eventually(lambda: len(fake_slack.made("chat.postMessage")) == 3))
    await anyio.sleep(0.3)
    assert len(fake_slack.made("chat.postMessage")) == 3  # `attempts = 3`, then it gave up
    counted = server.kernel.metrics.registry.get_sample_value("qaqnuz_approval_notify_errors_total")
    assert counted == 3.0
    assert str(server.approval(approval_id).status) == "pending"  # never approved
    again = await call(server, key, "create_order", args)
    assert again.is_error and again.structured_content["approval_id"] == approval_id
    assert not (server.folder / "testkit-executions.txt").exists()

    fake_slack.down = False  # Slack is back: the request that never went out is posted by itself
    await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.messages, timeout=15))
    assert fake_slack.posted(approval_id)[0] == ACME_CHANNEL
    assert str(server.approval(approval_id).status) == "pending"


async def test_rate_limited_and_failing_slack_is_retried_until_it_posts(slack_server, fake_slack):
    fake_slack.scripted = [
        (429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}),
        (200, {}, {"ok": False, "error": "internal_error"}),
    ]
    server = slack_server(config(fake_slack))
    key = server.mint("manager")
    approval_id = await requested(server, fake_slack, key, {"sku": "E-5", "qty": 1})
    calls = await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.messages and fake_slack.calls))
    times = [c.method for c in calls]
    assert times == ["chat.postMessage"] * 3
    assert fake_slack.posted(approval_id)[0] == ACME_CHANNEL


async def test_wait_seconds_returns_as_soon_as_slack_approves(slack_server, fake_slack):
    server = slack_server(config(fake_slack).replace('valid_for = "1h"', 'valid_for = "1h"\nwait_seconds = 10', 1))
    key = server.mint("manager")
    args = {"sku": "F-6", "qty": 3}

    async def click_when_posted() -> None:
        posted = await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.made("chat.postMessage")))
        approval_id = posted[0]["blocks"][-1]["elements"][0]["value"]
        await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, ALICE)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(click_when_posted)
        started = time.monotonic()
        result = await call(server, key, "create_order", args)
    assert result.is_error is False and result.structured_content["data"]["sku"] == "F-6"
    assert time.monotonic() - started < 8


async def test_globex_requests_go_to_globex_channel(slack_server, fake_slack):
    server = slack_server(config(fake_slack))
    key = server.mint("globex-agent", brand="globex")
    approval_id = await requested(server, fake_slack, key, {"sku": "G-7", "qty": 1})
    assert fake_slack.posted(approval_id)[0] == GLOBEX_CHANNEL
    answer = await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, CAROL)))
    assert answer.status_code == 200 and str(server.approval(approval_id).status) == "approved"


async def test_a_restarted_server_posts_what_never_went_out_and_only_that(slack_server, fake_slack, tmp_path):
    folder = tmp_path / "restarted"
    fake_slack.down = True
    first = slack_server(config(fake_slack).replace("attempts = 3", "attempts = 1"), folder=folder)
    key = first.mint("manager")
    lost = await requested(first, fake_slack, key, {"sku": "R-1", "qty": 1})
    await anyio.sleep(0.2)
    assert len(fake_slack.made("chat.postMessage")) == 1 and not fake_slack.messages  # it never went out
    first.stop()

    fake_slack.down = False
    second = slack_server(config(fake_slack), folder=folder)  # posts what never went out as it starts
    await anyio.to_thread.run_sync(lambda: eventually(lambda: len(fake_slack.messages) == 1))
    assert fake_slack.posted(lost)[0] == ACME_CHANNEL
    fresh = (await call(second, key, "create_order", {"sku": "R-2", "qty": 1})).structured_content["approval_id"]
    await anyio.to_thread.run_sync(lambda: eventually(lambda: len(fake_slack.messages) == 2))
    assert fake_slack.posted(lost)[0] == ACME_CHANNEL and fake_slack.posted(fresh)[0] == ACME_CHANNEL
    second.stop()

    third = slack_server(config(fake_slack), folder=folder)
    newest = (await call(third, key, "create_order", {"sku": "R-3", "qty": 1})).structured_content["approval_id"]
    await anyio.to_thread.run_sync(lambda: eventually(lambda: len(fake_slack.messages) == 3))
    await anyio.sleep(0.3)
    posted = [json.dumps(m["blocks"]) for m in fake_slack.made("chat.postMessage")]
    assert [sum(i in p for p in posted) for i in (lost, fresh, newest)] == [2, 1, 1]  # lost: failed once, then posted
    answer = await anyio.to_thread.run_sync(lambda: post(third, fake_slack.click(lost, ALICE)))
    assert answer.status_code == 200 and str(third.approval(lost).status) == "approved"


async def test_an_expired_request_is_refused_and_its_message_says_so(slack_server, fake_slack):
    server = slack_server(config(fake_slack).replace('pending_ttl = "24h"', 'pending_ttl = "2s"', 1))
    key = server.mint("manager")
    args = {"sku": "X-9", "qty": 1}
    approval_id = await requested(server, fake_slack, key, args)
    await anyio.sleep(2.3)
    late = await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, ALICE)))
    assert late.status_code == 200 and str(server.approval(approval_id).status) != "approved"
    again = await call(server, key, "create_order", args)
    assert again.is_error and again.structured_content["error_class"] == "permission"
    assert not (server.folder / "testkit-executions.txt").exists()
    await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.made("chat.update")))
    assert "Expired" in json.dumps(fake_slack.posted(approval_id)[2]["blocks"])
    metric = server.kernel.metrics.registry.get_sample_value
    assert metric("qaqnuz_approval_decisions_total", {"decision": "expired"}) == 1.0


async def test_members_of_an_approver_group_may_decide_and_a_group_slack_cannot_read_decides_nothing(
    slack_server, fake_slack
):
    dave, eve = "UDAVE0001", "UEVE00001"
    fake_slack.groups["SAPPROVE1"] = [dave]
    text = config(fake_slack).replace(
        f'approvers = ["{ALICE}", "{BOB}"]', f'approvers = ["{ALICE}", "{BOB}"]\napprover_groups = ["SAPPROVE1"]', 1
    )
    server = slack_server(text)
    key = server.mint("manager")
    approval_id = await requested(server, fake_slack, key, {"sku": "G-7", "qty": 1})

    fake_slack.down = True  # the group cannot be read: refused, nothing decided
    assert (
        await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, dave)))
    ).status_code == 200
    assert str(server.approval(approval_id).status) == "pending"
    fake_slack.down = False
    assert (await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, eve)))).status_code == 200
    assert str(server.approval(approval_id).status) == "pending"  # not in the group
    assert (
        await anyio.to_thread.run_sync(lambda: post(server, fake_slack.click(approval_id, dave)))
    ).status_code == 200
    record = server.approval(approval_id)
    assert str(record.status) == "approved" and record.decided_by == f"slack:{dave}"
    asked = fake_slack.made("usergroups.users.list")
    assert asked and all(body == {"usergroup": "SAPPROVE1"} for body in asked)


async def test_a_request_denied_with_the_cli_is_updated_in_slack_too(slack_server, fake_slack):
    server = slack_server(config(fake_slack))
    key = server.mint("manager")
    args = {"sku": "Q-1", "qty": 1}
    approval_id = await requested(server, fake_slack, key, args)
    server.run(server.kernel.approvals.decide(approval_id, approve=False, by="ops", reason="no"))
    denied = await call(server, key, "create_order", args)
    assert denied.is_error and denied.structured_content["error_class"] == "permission"
    await anyio.to_thread.run_sync(lambda: eventually(lambda: fake_slack.made("chat.update")))
    blocks = json.dumps(fake_slack.posted(approval_id)[2]["blocks"])
    assert "Denied" in blocks and "ops" in blocks and "actions" not in blocks


async def test_slack_refusing_connections_never_approves_nor_holds_a_call(slack_server, fake_slack):
    from qaqnuz.testservers import free_port

    nowhere = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there: connection refused
    text = (
        config(fake_slack)
        .replace(fake_slack.api, nowhere)
        .replace('valid_for = "1h"', 'valid_for = "1h"\nwait_seconds = 1', 1)
    )
    server = slack_server(text)
    key = server.mint("manager")
    started = time.monotonic()
    first = await call(server, key, "create_order", {"sku": "N-1", "qty": 1})
    assert time.monotonic() - started < 4  # wait_seconds (1 s) and the call; Slack is tried in the background
    assert first.is_error and first.structured_content["error_class"] == "permission"
    approval_id = first.structured_content["approval_id"]
    metric = server.kernel.metrics.registry.get_sample_value
    await anyio.to_thread.run_sync(lambda: eventually(lambda: metric("qaqnuz_approval_notify_errors_total") == 3.0))
    assert str(server.approval(approval_id).status) == "pending"
    assert not (server.folder / "testkit-executions.txt").exists()
