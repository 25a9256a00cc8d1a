"""The one place calls are accounted: metrics, audit records, last-used times and monthly usage.

The governed path reports to it and never fails because of it: every method here is bookkeeping, and a
failure in it is logged and counted, not turned into a failed call. Last-used times and usage counts
are batched in memory and written by `flush` (every `[server] last_used_flush`, and on shutdown).
"""

from __future__ import annotations

import calendar
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio

from qaqnuz.config import Config
from qaqnuz.metrics import Metrics
from qaqnuz.records import ApprovalRequest, ApprovalStatus
from qaqnuz.services import Auditor
from qaqnuz.store import Store

log = logging.getLogger("qaqnuz.kernel")


class Bookkeeper:
    def __init__(
        self,
        *,
        metrics: Metrics,
        audit: Auditor,
        store: Store,
        config: Callable[[], Config],
        clock: Callable[[], float],
    ) -> None:
        self.metrics = metrics
        self.audit = audit
        self.store = store
        self._config = config
        self.clock = clock
        self._last_used: dict[str, float] = {}
        self._usage: dict[tuple[str, str], int] = {}
        self._monthly: dict[tuple[str, str], int] = {}
        self._month, self._month_start, self._month_end = "", 0.0, 0.0

    # -- audit and counters ----------------------------------------------------------------------------
    def record(self, **fields: Any) -> None:
        """One audit record to every sink (failures are counted and logged by the auditor)."""
        self.audit.record(**fields)

    async def intent(self, **fields: Any) -> bool:
        """The write-ahead record of a call about to change something, written before it runs (and flushed
        to disk first under `[audit] fsync = "every"`, off the serving loop). False: it could not be written
        and `[audit] on_error = "fail"`, so the call must not run."""
        if self.audit.blocking:
            return await anyio.to_thread.run_sync(functools.partial(self.audit.write_now, fields, settle=False))
        return self.audit.write_now(fields)

    def audit_refusing(self) -> bool:
        """Whether calls are refused because the audit log cannot be written (`[audit] on_error = "fail"`)."""
        return self.audit.refusing

    def call_done(self, brand: str, tool: str, outcome: str, error_class: str, seconds: float) -> None:
        try:
            self.metrics.call(brand, tool, outcome, error_class, seconds)
        except Exception as exc:
            log.error("updating call metrics failed (%s)", type(exc).__name__)

    def auth_failed(self, transport: str) -> None:
        self.metrics.auth_failures.labels(transport or "unknown").inc()
        self.record(step="auth", outcome="denied", error_class="permission", transport=transport or None)

    def used(self, key_id: str) -> None:
        self._last_used[key_id] = self.clock()

    def rate_limited(self, dimension: str) -> None:
        self.metrics.rate_limit_rejections.labels(dimension).inc()

    def limiter_error(self) -> None:
        self.metrics.limiter_errors.inc()

    def policy_error(self) -> None:
        self.metrics.policy_errors.inc()

    def approver_error(self) -> None:
        self.metrics.approver_errors.inc()

    # -- usage -----------------------------------------------------------------------------------------
    async def executed(self, brand: str) -> None:
        """Count an executed call toward the brand's monthly soft quota (counted and warned, never enforced)."""
        now = self.clock()
        if not (self._month_start <= now < self._month_end):
            self._roll_month(now)
        key = (brand, self._month)
        self._usage[key] = self._usage.get(key, 0) + 1
        count = self._monthly.get(key)
        if count is None:
            count = await self.store.usage(brand, self._month)
        count += 1
        self._monthly[key] = count
        self.metrics.gauge(self.metrics.monthly_calls, brand).set(count)
        config = self._config()
        cfg = config.brands.get(brand)
        quota = config.plans[cfg.plan].monthly_quota if cfg else None
        if quota and (count == quota + 1 or (count > quota and count % 1000 == 0)):
            log.warning("brand %s is over its monthly soft quota (%d > %d calls); not enforced", brand, count, quota)

    def _roll_month(self, now: float) -> None:
        moment = time.gmtime(now)
        self._month = time.strftime("%Y-%m", moment)
        self._month_start = calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0))
        year, month = (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
        self._month_end = calendar.timegm((year, month, 1, 0, 0, 0))

    def publish_quotas(self) -> None:
        config = self._config()
        for brand, cfg in config.brands.items():
            quota = config.plans[cfg.plan].monthly_quota
            if quota:
                self.metrics.monthly_quota.labels(brand).set(quota)

    async def flush(self) -> None:
        """Write batched last-used times and usage counts; on failure keep them for the next flush."""
        last_used, usage = self._last_used, self._usage
        self._last_used, self._usage = {}, {}
        try:
            await self.store.flush_usage(last_used, usage)
            # Re-read each brand's month at its next call: the store now holds what every process sharing it
            # flushed, so the gauge follows them all (one flush period behind), not this process alone.
            self._monthly.clear()
        except Exception as exc:
            self.metrics.store_errors.labels("flush").inc()
            log.error("flushing last-used times failed (%s); will retry", type(exc).__name__)
            for key_id, ts in last_used.items():
                self._last_used[key_id] = max(ts, self._last_used.get(key_id, 0))
            for k, n in usage.items():
                self._usage[k] = self._usage.get(k, 0) + n

    # -- approvals -------------------------------------------------------------------------------------
    async def approval_requested(self) -> None:
        """Refresh the pending gauge; only approval-gated calls (human-paced) pay for it."""
        await self.refresh_pending()

    async def decision_observed(self, approval: ApprovalRequest) -> None:
        """Count a decision the first time the server sees it (decisions may come from another process)."""
        if approval.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED):
            self.metrics.approval_decisions.labels(str(approval.status)).inc()
            if approval.decided_at is not None:
                self.metrics.approval_decision_seconds.observe(max(0.0, approval.decided_at - approval.created_at))
        elif approval.status is ApprovalStatus.EXPIRED:
            self.metrics.approval_decisions.labels("expired").inc()
        await self.refresh_pending()

    async def refresh_pending(self) -> None:
        try:
            counts = await self.store.pending_counts()
        except Exception:
            return
        for brand in self._config().brands:
            self.metrics.approvals_pending.labels(brand).set(counts.get(brand, 0))
