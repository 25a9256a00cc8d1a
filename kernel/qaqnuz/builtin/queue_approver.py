"""The built-in approver: requests wait in the server's store and are decided with `qaqnuz approvals`.

Approval ids carry about 154 random bits and are bound to (brand, key, tool, arguments hash); the CLI
decides them and records who decided, when and why.
"""

from __future__ import annotations

from collections.abc import Callable

from qaqnuz.contexts import ApproverContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.keys import random_b62
from qaqnuz.records import ApprovalCall, ApprovalRequest, Provider
from qaqnuz.store import Store

APPROVAL_ID_PREFIX = "apr_"


def new_approval_id() -> str:
    return APPROVAL_ID_PREFIX + random_b62(26)


class QueueApprover:
    def __init__(self, store: Store, clock: Callable[[], float], pending_ttl: float) -> None:
        self.store = store
        self.clock = clock
        self.pending_ttl = pending_ttl

    async def request(self, call: ApprovalCall) -> ApprovalRequest:
        return await self.store.open_approval(
            call, new_id=new_approval_id(), now=self.clock(), pending_ttl=self.pending_ttl
        )

    async def consume(self, approval_id: str) -> bool:
        return await self.store.consume_approval(approval_id, self.clock())

    async def close(self, approval_id: str) -> None:
        await self.store.close_approval(approval_id)

    async def wait(self, approval_id: str, seconds: float) -> ApprovalRequest | None:
        """Poll the store for a decision for up to `seconds` (decisions come from another process)."""
        import anyio  # only approval-gated calls with wait_seconds get here; the CLI never does

        with anyio.move_on_after(seconds):
            while True:
                record = await self.store.get_approval(approval_id)
                if record is None or record.status != "pending":
                    return record
                await anyio.sleep(0.2)
        return await self.store.get_approval(approval_id)


def _factory(settings: object, ctx: ApproverContext) -> QueueApprover:
    return QueueApprover(ctx.store, ctx.clock, ctx.pending_ttl)


@hookimpl
def qaqnuz_approvers() -> list[Provider]:
    return [Provider("queue", _factory, "Requests wait in the server's store; decide them with `qaqnuz approvals`.")]
