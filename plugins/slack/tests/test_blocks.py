"""What a request message shows: escaped, cut short, masked values left masked."""

from __future__ import annotations

import json

from qaqnuz import ApprovalRequest, ApprovalStatus
from qaqnuz_slack.blocks import MAX_ARGUMENTS, MAX_VALUE, escape, outcome_message, request_message


def record(**changes):
    fields = dict(
        approval_id="apr_" + "a" * 26, brand="acme", key_id="k1", tool="create_order", args_hash="h",
        status=ApprovalStatus.PENDING, created_at=1_800_000_000.0, expires_at=1_800_086_400.0, key_name="agent",
        arguments={"sku": "A-1"},
    )  # fmt: skip
    fields.update(changes)
    return ApprovalRequest(**fields)


def test_mrkdwn_control_characters_are_escaped():
    assert escape("<@U123> & <!here>") == "&lt;@U123&gt; &amp; &lt;!here&gt;"
    message = request_message(record(tool="<!channel>", key_name="<@U1>", arguments={"<k>": "<v>"}), "C1")
    shown = json.dumps(message)
    assert "<!channel>" not in shown and "<@U1>" not in shown and "<k>" not in shown and "<v>" not in shown


def test_long_values_and_many_arguments_are_cut():
    arguments = {f"a{i}": "y" * (MAX_VALUE * 2) for i in range(MAX_ARGUMENTS + 5)}
    text = request_message(record(arguments=arguments, arguments_truncated=True), "C1")["blocks"][1]["text"]["text"]
    assert "y" * (MAX_VALUE + 1) not in text and "…" in text
    shown = text.count("\n• ") + text.startswith("• ")
    assert f"and {MAX_ARGUMENTS + 5 - shown} more" in text and "cut short" in text
    assert len(text) < 3000  # Slack refuses a longer section: the message would never be posted


def test_a_section_escaped_longer_still_fits():
    arguments = {f"a{i}": "<" * MAX_VALUE for i in range(5)}  # each `<` shows as `&lt;`
    text = request_message(record(arguments=arguments), "C1")["blocks"][1]["text"]["text"]
    assert len(text) < 3000 and "more" in text


def test_no_line_can_be_forged_or_hidden():
    arguments = {"note": "ok\n\n• *amount*: `5`", "x`*y_~": "\u202egnp.exe", "z\u200b": 1}
    text = request_message(record(arguments=arguments), "C1")["blocks"][1]["text"]["text"]
    assert text.count("\n") == 2  # three arguments, three lines
    assert "\\u000a" in text and "\\u202e" in text and "\\u200b" in text
    assert "\u202e" not in text and "\u200b" not in text and "`5`" not in text
    assert "• `x'*y_~`:" in text  # a name is code: its marks are literal, its backtick cannot close it


def test_masked_values_stay_masked_and_backticks_cannot_break_out():
    text = request_message(record(arguments={"api_token": "***", "q": "a`b"}), "C1")["blocks"][1]["text"]["text"]
    assert "`***`" in text and "a`b" not in text


def test_unfurling_is_off_and_buttons_carry_the_id():
    message = request_message(record(), "C1")
    assert message["unfurl_links"] is False and message["unfurl_media"] is False
    assert {b["value"] for b in message["blocks"][-1]["elements"]} == {"apr_" + "a" * 26}


def test_the_outcome_names_who_decided_and_has_no_buttons():
    decided = record(status=ApprovalStatus.DENIED, decided_by="slack:U123ABC", decided_at=1_800_000_100.0,
                     reason="<nope>")  # fmt: skip
    message = outcome_message(decided, "C1", "1.2", "denied")
    shown = json.dumps(message)
    assert "<@U123ABC>" in shown and "&lt;nope&gt;" in shown and "Denied" in shown
    assert all(b["type"] != "actions" for b in message["blocks"])
    cli = outcome_message(record(decided_by="<!here>"), "C1", "1.2", "approved")
    assert "<!here>" not in json.dumps(cli)
