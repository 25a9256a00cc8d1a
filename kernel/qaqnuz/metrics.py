"""Prometheus collectors, one registry per kernel.

Labels come only from config (brand, tool) or fixed vocabularies (outcome, error class, dimension,
transport): never a key, token, argument or user value. Labelled children are cached so the hot path
pays one dict lookup per update.

Under several worker processes (`qaqnuz serve --workers N`) each worker's values live in files of a shared
folder (`PROMETHEUS_MULTIPROC_DIR`, prometheus-client's multiprocess mode) and every worker's `/metrics`
answers for all of them: counters and histograms add up, and the gauges every worker computes alike from
the store (pending approvals, tools, quotas, monthly calls: see `Bookkeeper.flush`) report the largest
live value instead of a sum.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DECISION_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


#: Where prometheus-client keeps multiprocess values; set by `serve --workers` for its workers.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        r = self.registry
        self.tool_calls = Counter(
            "qaqnuz_tool_calls",
            "tools/call decisions by outcome.",
            ["brand", "tool", "outcome", "error_class"],
            registry=r,
        )
        self.tool_call_duration = Histogram(
            "qaqnuz_tool_call_duration_seconds",
            "Time spent answering tools/call.",
            ["brand"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter("qaqnuz_auth_failures", "Rejected credentials.", ["transport"], registry=r)
        self.rate_limit_rejections = Counter(
            "qaqnuz_rate_limit_rejections", "Calls refused by the rate limiter.", ["dimension"], registry=r
        )
        self.limiter_errors = Counter("qaqnuz_limiter_errors", "Limiter failures (each one a denial).", registry=r)
        self.approvals_pending = Gauge(
            "qaqnuz_approvals_pending",
            "Approval requests awaiting a decision.",
            ["brand"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.approval_decisions = Counter(
            "qaqnuz_approval_decisions", "Approval decisions observed.", ["decision"], registry=r
        )
        self.approval_decision_seconds = Histogram(
            "qaqnuz_approval_decision_seconds",
            "Time from approval request to decision.",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.tools_registered = Gauge(
            "qaqnuz_tools_registered", "Tools in the registry.", registry=r, multiprocess_mode="livemax"
        )
        self.tool_sync = Counter("qaqnuz_tool_sync", "Tool registry sync runs.", ["result"], registry=r)
        self.config_reloads = Counter("qaqnuz_config_reloads", "Config file reloads.", ["result"], registry=r)
        self.monthly_calls = Gauge(
            "qaqnuz_monthly_calls",
            "Executed calls this month (soft quota, never enforced).",
            ["brand"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.monthly_quota = Gauge(
            "qaqnuz_monthly_quota", "The plan's monthly soft quota.", ["brand"], registry=r, multiprocess_mode="livemax"
        )
        self.policy_errors = Counter(
            "qaqnuz_policy_errors", "Exceptions inside policies (each one a denial).", registry=r
        )
        self.approver_errors = Counter(
            "qaqnuz_approver_errors", "Exceptions inside the approver (each one a denial).", registry=r
        )
        self.approval_notify_errors = Counter(
            "qaqnuz_approval_notify_errors",
            "Failed attempts to tell the humans about an approval request (the request stays pending).",
            registry=r,
        )
        self.audit_errors = Counter("qaqnuz_audit_errors", "Audit lines that could not be written.", registry=r)
        # A gauge rather than an Info: Info has no multiprocess mode. The sample is the same.
        self.build_info = Gauge(
            "qaqnuz_build_info", "Build information.", ["version"], registry=r, multiprocess_mode="livemax"
        )
        self.build_info.labels(version).set(1)
        self._children: dict[tuple[Any, ...], Any] = {}

    @property
    def exposition(self) -> CollectorRegistry:
        """What `/metrics` answers: this kernel's registry, or under several workers every worker's values."""
        if self.multiproc_dir is None:
            return self.registry
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        return merged

    def call(self, brand: str, tool: str, outcome: str, error_class: str, seconds: float) -> None:
        key = ("call", brand, tool, outcome, error_class)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.tool_calls.labels(brand, tool, outcome, error_class)
        child.inc()
        hkey = ("dur", brand)
        hist = self._children.get(hkey)
        if hist is None:
            hist = self._children[hkey] = self.tool_call_duration.labels(brand)
        hist.observe(seconds)

    def gauge(self, gauge: Gauge, label: str) -> Any:
        """A cached labelled child of a one-label gauge."""
        key = (id(gauge), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = gauge.labels(label)
        return child
