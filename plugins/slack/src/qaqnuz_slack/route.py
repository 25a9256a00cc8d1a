"""`/slack/interactions`: Slack's interactivity requests (button clicks, the Deny reason modal).

Every request is verified first (v0 signature over the raw body, 5-minute window, one of the signing
secrets); an exact replay of a verified request changes nothing. A click is then checked against the
approval's own brand: it must come from that brand's channel and from one of its approvers, and the person
a key belongs to may not approve that key's call. The decision goes through the kernel's approval service
(the one `qaqnuz approvals` uses: the store decides exactly once, and the decision is audited with
`by = "slack:<user id>"`). The answer is sent at once; messages to Slack (the updated request, a note to
the clicker, the modal) go out in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qaqnuz import ApprovalRequest, ApprovalStatus, UsageError, WebRouteContext
from qaqnuz_slack.blocks import APPROVE, DENY, cut, outcome_message
from qaqnuz_slack.client import SlackClient, SlackError
from qaqnuz_slack.settings import Options
from qaqnuz_slack.signature import WINDOW, verify

#: The largest interaction request read (Slack's are a few KiB).
MAX_BODY = 256 * 1024
DENY_MODAL = "qaqnuz_deny_reason"
#: How long a user group's members are trusted before Slack is asked again.
GROUP_TTL = 60.0
#: The most a click waits for Slack to list a group's members (the answer is due within 3 s).
GROUP_WAIT = 2.0
_APPROVAL_ID = re.compile(r"apr_[0-9A-Za-z]{26}")
_USER = re.compile(r"[UW][A-Z0-9]{2,}")


class SlackRoute:
    """The ASGI app mounted at `/slack`."""

    def __init__(self, options: Options, client: SlackClient, ctx: WebRouteContext) -> None:
        self.options = options
        self.client = client
        self.ctx = ctx
        self.clock: Callable[[], float] = ctx.clock
        self.logger: logging.Logger = ctx.logger
        self._secrets = [s.reveal().encode() for s in options.signing_secrets]
        self._seen: dict[str, float] = {}
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}  # user group -> (read at, members)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = Starlette(routes=[Route("/interactions", self.interactions, methods=["POST"])])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def interactions(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return Response("too large", status_code=413)
        now = self.clock()
        signature = request.headers.get("x-slack-signature")
        timestamp = request.headers.get("x-slack-request-timestamp")
        if not verify(self._secrets, timestamp, signature, body, now):
            return Response("invalid signature", status_code=401)
        assert signature is not None
        self._seen = {sig: until for sig, until in self._seen.items() if until > now}
        if signature in self._seen:  # a verified request seen before: answered, never acted on again
            return Response(status_code=200)
        self._seen[signature] = now + 2 * WINDOW
        try:
            payload = json.loads(parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"][0])
        except (ValueError, KeyError, IndexError):
            return Response("bad payload", status_code=400)
        if not isinstance(payload, dict):
            return Response("bad payload", status_code=400)
        kind = payload.get("type")
        if kind == "block_actions":
            await self._clicked(payload)
        elif kind == "view_submission" and _get(payload, "view", "callback_id") == DENY_MODAL:
            await self._deny_submitted(payload)
        return Response(status_code=200)

    async def _clicked(self, payload: dict[str, Any]) -> None:
        actions = payload.get("actions")
        action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
        action_id, approval_id = action.get("action_id"), action.get("value")
        user, channel = _get(payload, "user", "id"), _get(payload, "channel", "id")
        ts = _get(payload, "container", "message_ts") or _get(payload, "message", "ts")
        if action_id not in (APPROVE, DENY) or not isinstance(approval_id, str):
            return
        if not isinstance(user, str) or not isinstance(channel, str) or not isinstance(ts, str):
            return
        record, refusal = await self._check(approval_id, user, channel, approve=action_id == APPROVE)
        if record is None:
            self._note(channel, user, refusal)
            return
        if action_id == APPROVE:
            await self._decide(record, user, channel, ts, approve=True, reason=None)
            return
        trigger = payload.get("trigger_id")
        if isinstance(trigger, str):
            metadata = json.dumps({"approval_id": approval_id, "channel": channel, "ts": ts})
            self._spawn(self.client.deliver("views.open", {"trigger_id": trigger, "view": _deny_view(metadata)}))

    async def _deny_submitted(self, payload: dict[str, Any]) -> None:
        user = _get(payload, "user", "id")
        try:
            meta = json.loads(_get(payload, "view", "private_metadata") or "")
        except ValueError:
            return
        reason = _get(payload, "view", "state", "values", "reason", "reason", "value")
        if not isinstance(meta, dict) or not isinstance(user, str):
            return
        approval_id, channel, ts = meta.get("approval_id"), meta.get("channel"), meta.get("ts")
        if not isinstance(approval_id, str) or not isinstance(channel, str) or not isinstance(ts, str):
            return
        record, refusal = await self._check(approval_id, user, channel, approve=False)
        if record is None:
            self._note(channel, user, refusal)
            return
        text = cut(reason.strip(), 500) if isinstance(reason, str) and reason.strip() else None
        await self._decide(record, user, channel, ts, approve=False, reason=text)

    async def _check(
        self, approval_id: str, user: str, channel: str, *, approve: bool
    ) -> tuple[ApprovalRequest | None, str]:
        """The approval `user` may decide from `channel`, or None and why not (to tell the clicker)."""
        if not _APPROVAL_ID.fullmatch(approval_id) or not _USER.fullmatch(user):
            return None, "That is not an approval this server knows."
        try:
            record = await self.ctx.approvals.get(approval_id)
        except UsageError:
            return None, "That is not an approval this server knows."
        brand = self.options.brands.get(record.brand)
        if brand is None or brand.channel != channel:
            return None, "That is not an approval this server knows."
        if user not in brand.approvers:
            try:  # Slack wants its answer within 3 s: the membership check gets two of them
                async with asyncio.timeout(GROUP_WAIT):
                    member = await self._in_groups(user, brand.approver_groups)
            except TimeoutError:
                member = None
            if member is None:
                return None, "Your approver group could not be checked just now; try again in a moment."
            if not member:
                self.logger.warning("slack user %s is not an approver of brand %s; refused", user, record.brand)
                return None, "You are not an approver for this brand."
        if approve and _owner(brand.users, record.key_name) == user:
            self.logger.warning("slack user %s tried to approve their own key's call; refused", user)
            return None, "You cannot approve a call made with your own key."
        status = record.effective_status(self.clock())
        if status is not ApprovalStatus.PENDING:
            return None, _already(record, str(status))
        return record, ""

    async def _in_groups(self, user: str, groups: list[str]) -> bool | None:
        """Whether `user` is in one of the approver `groups` (members read from Slack, kept for a minute);
        None when Slack could not say: the click is refused (fail closed)."""
        now = self.clock()
        for group in groups:
            cached = self._groups.get(group)
            if cached is None or now - cached[0] >= GROUP_TTL:
                try:
                    answer = await self.client.call("usergroups.users.list", {"usergroup": group}, form=True)
                except SlackError as exc:
                    self.logger.warning("reading slack user group %s failed (%s)", group, exc.error)
                    return None
                users = answer.get("users")
                members = frozenset(u for u in users if isinstance(u, str)) if isinstance(users, list) else frozenset()
                cached = self._groups[group] = (now, members)
            if user in cached[1]:
                return True
        return False

    async def _decide(
        self, record: ApprovalRequest, user: str, channel: str, ts: str, *, approve: bool, reason: str | None
    ) -> None:
        try:
            decided = await self.ctx.approvals.decide(
                record.approval_id, approve=approve, by=f"slack:{user}", reason=reason, brand=record.brand
            )
        except UsageError:  # decided by someone else in the meantime: the first decision won
            try:
                latest = await self.ctx.approvals.get(record.approval_id)
            except UsageError:
                return
            self._note(channel, user, _already(latest, str(latest.effective_status(self.clock()))))
            return
        status = "approved" if approve else "denied"
        self._spawn(self.client.deliver("chat.update", outcome_message(decided, channel, ts, status)))

    def _note(self, channel: str, user: str, text: str) -> None:
        if _USER.fullmatch(user):
            self._spawn(self.client.deliver("chat.postEphemeral", {"channel": channel, "user": user, "text": text}))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.client.aclose()


def _owner(users: dict[str, str], key_name: str) -> str | None:
    """The Slack user a key name is mapped to, names compared without case or surrounding spaces."""
    wanted = key_name.strip().casefold()
    for name, user in users.items():
        if name.strip().casefold() == wanted:
            return user
    return None


def _already(record: ApprovalRequest, status: str) -> str:
    text = f"This approval is already {status}"
    if record.decided_by:
        by = record.decided_by
        text += f" by <@{by[6:]}>" if by.startswith("slack:") and _USER.fullmatch(by[6:]) else " by someone else"
    return text + "."


def _get(data: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(data, dict):
            return None
        data = data.get(step)
    return data


def _deny_view(metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (optional)"},
                "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "max_length": 500},
            }
        ],
    }
