"""The `slack` approver: the store holds every request and decision, exactly as the built-in queue's do;
Slack is only where a person sees a request and clicks.

`request` opens (or finds) the approval in the store and, for a new pending one, schedules the post to the
brand's channel as a background task: the governed call never waits on Slack, and a Slack that cannot be
reached leaves the request pending (never approved), the failure counted and logged. `wait` polls the
store, so a click (through the `/slack` route, or `qaqnuz approvals` on the command line) ends the wait.
Using, denying or expiring an approval updates its message. Which message is whose is kept in the
ledger (`state_file`), so after a restart the first use of the approver posts the pending requests whose
message never went out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from qaqnuz import ApprovalCall, ApprovalRequest, ApprovalStatus, Store
from qaqnuz_slack.blocks import outcome_message, request_message
from qaqnuz_slack.client import MAX_RETRY_AFTER, SlackClient
from qaqnuz_slack.ledger import Ledger
from qaqnuz_slack.settings import Options

_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def new_approval_id() -> str:
    """`apr_` and 26 base62 characters (about 154 random bits), like the built-in queue's ids."""
    return "apr_" + "".join(secrets.choice(_B62) for _ in range(26))


class SlackApprover:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        pending_ttl: float,
        options: Options,
        client: SlackClient,
        logger: logging.Logger,
    ) -> None:
        self.store = store
        self.clock = clock
        self.pending_ttl = pending_ttl
        self.options = options
        self.client = client
        self.logger = logger
        self.ledger = Ledger(options.state_file, clock())
        self._posting: set[str] = set()
        self._recovered = False
        self._reposting: asyncio.Task[None] | None = None
        self._posted_here: set[str] = set()  # posted by this process (the guard while the state file fails)
        #: How long one post may keep retrying: an older claim whose post never went out may be taken again.
        self.horizon = options.attempts * options.timeout + sum(
            min(options.backoff * 2**i, MAX_RETRY_AFTER) for i in range(options.attempts)
        )
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def notify_errors(self) -> int:
        return self.client.errors

    async def request(self, call: ApprovalCall) -> ApprovalRequest:
        record = await self.store.open_approval(
            call, new_id=new_approval_id(), now=self.clock(), pending_ttl=self.pending_ttl
        )
        await self.start()  # a server started it already; a kernel without background work did not
        if (
            record.status is ApprovalStatus.PENDING
            and record.approval_id not in self._posting
            and record.brand in self.options.brands
        ):
            self._posting.add(record.approval_id)  # now, so a repeat of the call does not post it twice
            self._spawn(self._maybe_post(record, call.role, call.side_effect, claimed=True))
        return record

    async def start(self) -> None:
        """Begin posting what never went out (the kernel calls this as a server starts; also on first use)."""
        if not self._recovered:
            self._recovered = True
            self._reposting = asyncio.get_running_loop().create_task(self._keep_posting())

    async def consume(self, approval_id: str) -> bool:
        consumed = await self.store.consume_approval(approval_id, self.clock())
        if consumed:
            self._spawn(self._update(approval_id, "approved and used"))
        return consumed

    async def close(self, approval_id: str) -> None:
        record = await self.store.get_approval(approval_id)
        await self.store.close_approval(approval_id)
        if record is not None and record.effective_status(self.clock()) is ApprovalStatus.EXPIRED:
            self._spawn(self._update(approval_id, "expired"))
        elif record is not None and not (record.decided_by or "").startswith("slack:"):
            self._spawn(self._update(approval_id, "denied"))  # with `qaqnuz approvals deny`: say so in Slack
        else:  # denied in Slack: the route that took the click updated the message
            self._spawn(self._forget(approval_id))

    async def wait(self, approval_id: str, seconds: float) -> ApprovalRequest | None:
        with anyio.move_on_after(seconds):
            while True:
                record = await self.store.get_approval(approval_id)
                if record is None or record.status is not ApprovalStatus.PENDING:
                    return record
                await anyio.sleep(0.2)
        return await self.store.get_approval(approval_id)

    async def drain(self) -> None:
        """Wait for the background posts and updates under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        if self._reposting is not None:
            self._reposting.cancel()
            await asyncio.gather(self._reposting, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.client.aclose()

    async def _maybe_post(
        self, record: ApprovalRequest, role: str = "", side_effect: str = "", *, claimed: bool = False
    ) -> None:
        """Post `record` unless another process (or an earlier run) did or is doing it. Runs in the background:
        a governed call never waits on the state file or on Slack. `claimed`: `_posting` already holds it."""
        if record.brand not in self.options.brands:
            return  # decided with `qaqnuz approvals` only
        if not claimed:
            self._posting.add(record.approval_id)
        try:
            now = self.clock()
            ours = await self.ledger.claim(record.approval_id, now, now - self.horizon)
        except Exception as exc:  # a broken state file must not cost the notice: post once from this process
            self.logger.error("slack state file failed (%s); posting without it", type(exc).__name__)
            ours = record.approval_id not in self._posted_here
        if ours:
            self._posted_here.add(record.approval_id)
            await self._post(record, role, side_effect)
        else:
            self._posting.discard(record.approval_id)

    async def _keep_posting(self) -> None:
        """Post what never went out: at once (a restart), then every `horizon` (once a post that gave up may
        be claimed again), so a request made while Slack was down is posted once Slack is back."""
        while True:
            await self._recover()
            await anyio.sleep(max(self.horizon, 1.0))

    async def _recover(self) -> None:
        """Post the pending requests whose message never went out (a restart, an outage)."""
        try:
            for record in await self.store.list_approvals():
                if record.effective_status(self.clock()) is ApprovalStatus.PENDING:
                    if record.approval_id not in self._posting:
                        await self._maybe_post(record)
        except Exception as exc:
            self.logger.error("re-posting pending approvals failed (%s)", type(exc).__name__)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, record: ApprovalRequest, role: str = "", side_effect: str = "") -> None:
        try:
            brand = self.options.brands[record.brand]
            message = request_message(record, brand.channel, role, side_effect)
            answer = await self.client.deliver("chat.postMessage", message)
            if answer is not None and isinstance(answer.get("ts"), str):
                await self.ledger.posted(record.approval_id, str(answer.get("channel") or brand.channel), answer["ts"])
        except Exception as exc:  # a background task must never die loudly
            self.logger.error("posting approval %s failed (%s)", record.approval_id, type(exc).__name__)
        finally:
            self._posting.discard(record.approval_id)

    async def _forget(self, approval_id: str) -> None:
        try:
            await self.ledger.forget(approval_id)
        except Exception as exc:
            self.logger.error("slack state file failed (%s)", type(exc).__name__)

    async def _update(self, approval_id: str, status: str) -> None:
        try:
            where = await self.ledger.where(approval_id)
            record = await self.store.get_approval(approval_id)
            if where is None or record is None:
                return
            await self.client.deliver("chat.update", outcome_message(record, where[0], where[1], status))
            await self.ledger.forget(approval_id)
        except Exception as exc:
            self.logger.error("updating approval %s failed (%s)", approval_id, type(exc).__name__)
