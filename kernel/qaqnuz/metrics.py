"""Prometheus collectors, one registry per kernel.

Labels come only from config (brand, tool) or fixed vocabularies (outcome, error class, dimension,
transport): never a key, token, argument or user value. Labelled children are cached so the hot path
pays one dict lookup per update.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DECISION_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
            "qaqnuz_approvals_pending", "Approval requests awaiting a decision.", ["brand"], registry=r
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
        self.tools_registered = Gauge("qaqnuz_tools_registered", "Tools in the registry.", registry=r)
        self.tool_sync = Counter("qaqnuz_tool_sync", "Tool registry sync runs.", ["result"], registry=r)
        self.config_reloads = Counter("qaqnuz_config_reloads", "Config file reloads.", ["result"], registry=r)
        self.monthly_calls = Gauge(
            "qaqnuz_monthly_calls",
            "Executed calls this month (soft quota, never enforced).",
            ["brand"],
            registry=r,
        )
        self.monthly_quota = Gauge("qaqnuz_monthly_quota", "The plan's monthly soft quota.", ["brand"], registry=r)
        self.policy_errors = Counter(
            "qaqnuz_policy_errors", "Exceptions inside policies (each one a denial).", registry=r
        )
        self.approver_errors = Counter(
            "qaqnuz_approver_errors", "Exceptions inside the approver (each one a denial).", registry=r
        )
        self.audit_errors = Counter("qaqnuz_audit_errors", "Audit lines that could not be written.", registry=r)
        self.build_info = Info("qaqnuz_build", "Build information.", registry=r)
        self.build_info.info({"version": version})
        self._children: dict[tuple[Any, ...], Any] = {}

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
