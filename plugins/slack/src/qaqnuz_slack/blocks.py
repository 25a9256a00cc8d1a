"""The Slack messages: a request (what is asked, by whom, until when, Approve / Deny) and its outcome.

Everything that came from a caller is escaped for mrkdwn (`&`, `<`, `>`: no mention, link or channel ping
can be smuggled in) and cut short; arguments are the approval record's, whose secret-looking values the
kernel already masked. Link and media unfurling are off on every message.
"""

from __future__ import annotations

import json
import time
from typing import Any

from qaqnuz import ApprovalRequest

#: The longest one argument's value is shown; the rest is cut and marked.
MAX_VALUE = 300
#: Arguments shown at most (the rest are counted).
MAX_ARGUMENTS = 20
APPROVE, DENY = "qaqnuz_approve", "qaqnuz_deny"


def escape(text: str) -> str:
    """Safe in mrkdwn: no mention, link or channel ping (`&`, `<`, `>`), and no line break, control or
    invisible formatting character (bidi overrides, zero-width) that could forge or hide a line: those are
    shown as `\\uXXXX`."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def cut(text: str, limit: int = MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return escape(cut(shown)).replace("`", "'")


def _name(name: str) -> str:
    """An argument's name, shown as code like its value: `*`, `_` and `~` are literal there, and a backtick
    of the caller's cannot end it."""
    return escape(cut(name, 80)).replace("`", "'")


#: A section's text may hold 3,000 characters; arguments stop short of it (the rest counted).
MAX_SECTION = 2800


def argument_lines(arguments: Any, truncated: bool) -> str:
    if arguments is None:
        return "_(arguments no longer kept)_"
    if not isinstance(arguments, dict):
        return f"`{_value(arguments)}`"
    if not arguments:
        return "_(no arguments)_"
    lines: list[str] = []
    size = 0
    for k, v in list(arguments.items())[:MAX_ARGUMENTS]:
        line = f"• `{_name(str(k))}`: `{_value(v)}`"
        if size + len(line) + 1 > MAX_SECTION:
            break
        lines.append(line)
        size += len(line) + 1
    if len(arguments) > len(lines):
        lines.append(f"_… and {len(arguments) - len(lines)} more (all of them: `qaqnuz approvals show`)_")
    if truncated:
        lines.append("_(arguments were cut short for display)_")
    return "\n".join(lines)


def when(seconds: float) -> str:
    """A time Slack shows in each reader's own time zone, with a UTC fallback."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))
    return f"<!date^{int(seconds)}^{{date_short_pretty}} {{time}}|{fallback}>"


def _summary(record: ApprovalRequest, role: str = "", side_effect: str = "") -> str:
    """Who asks for what. The key's role and the tool's side-effect class come with the call (a request
    re-posted after a restart has only what the store keeps, and shows without them)."""
    who = escape(cut(record.key_name or record.key_id, 80))
    if role:
        who += f"* (role *{escape(cut(role, 40))}*)"
    else:
        who += "*"
    tool = escape(cut(record.tool, 80))
    effect = f" ({escape(cut(side_effect, 20))})" if side_effect else ""
    return f"*{escape(record.brand)}*: key *{who} asks to run *{tool}*{effect}"


def request_message(record: ApprovalRequest, channel: str, role: str = "", side_effect: str = "") -> dict[str, Any]:
    text = f"Approval needed: {record.brand} / {record.tool}"
    return {
        "channel": channel,
        "text": escape(cut(text, 200)),
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _summary(record, role, side_effect)}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": argument_lines(record.arguments, record.arguments_truncated)},
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Expires {when(record.expires_at)} · approval `{record.approval_id}`",
                    }
                ],
            },
            {
                "type": "actions",
                "block_id": "qaqnuz_decision",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE,
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "value": record.approval_id,
                    },
                    {
                        "type": "button",
                        "action_id": DENY,
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Deny"},
                        "value": record.approval_id,
                    },
                ],
            },
        ],
    }


def outcome_text(record: ApprovalRequest, status: str) -> str:
    text = f"*{escape(status.capitalize())}*"
    if record.decided_by:
        by = record.decided_by
        shown = f"<@{by[6:]}>" if by.startswith("slack:") and by[6:].isalnum() else escape(cut(by, 80))
        text += f" by {shown}"
    if record.decided_at:
        text += f" {when(record.decided_at)}"
    if record.reason:
        text += f": {escape(cut(record.reason, MAX_VALUE))}"
    return text


def outcome_message(record: ApprovalRequest, channel: str, ts: str, status: str) -> dict[str, Any]:
    """The request's message once decided, used or expired: no buttons any more."""
    return {
        "channel": channel,
        "ts": ts,
        "text": escape(cut(f"Approval {status}: {record.brand} / {record.tool}", 200)),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _summary(record)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": outcome_text(record, status)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"approval `{record.approval_id}`"}]},
        ],
    }
