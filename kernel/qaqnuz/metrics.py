"""Prometheus collectors, one registry per kernel.

Labels come only from config (brand, tool, pack) or fixed vocabularies (outcome, error class, dimension,
transport, upstream error): never a key, token, argument or user value. Labelled children are cached so the
hot path pays one dict lookup per update. The per-tool duration histogram multiplies its buckets by every
tool, so each brand gets at most `[server] metrics_tool_limit` tool values there and the rest share
tool="(other)": a catalogue of thousands of tools must not turn one scrape into megabytes.

Under several worker processes (`qaqnuz serve --workers N`) each worker's values live in files of a shared
folder (`PROMETHEUS_MULTIPROC_DIR`, prometheus-client's multiprocess mode) and every worker's `/metrics`
answers for all of them: counters and histograms add up, and the gauges every worker computes alike from
the store (pending approvals, tools, quotas, monthly calls: see `Bookkeeper.flush`) report the largest
live value instead of a sum; open sessions add up across workers. The process and Python collectors
(CPU, memory, file descriptors, garbage collection) describe one process, so the merged answer carries the
serving worker's own, not a sum.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.registry import Collector

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DECISION_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


#: Where prometheus-client keeps multiprocess values; set by `serve --workers` for its workers.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The duration histogram's tool label once a brand has used up `[server] metrics_tool_limit` tool values.
OTHER_TOOLS = "(other)"
#: The duration histogram's only tool label when `[server] metrics_tool_limit` is 0.
ALL_TOOLS = "(all)"
#: What `upstream_errors_total{error}` may say: a failure's kind, never its message (which can carry a URL,
#: a query or a credential). Anything else a pack reports is counted as "other".
UPSTREAM_ERRORS = frozenset(("timeout", "connect", "status", "query", "other"))


class Metrics:
    def __init__(self, version: str, *, tool_limit: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        self.tool_limit = max(0, tool_limit)
        #: Per brand, the tools that have their own duration label, in the order they got it.
        self._labelled_tools: dict[str, dict[str, None]] = {}
        r = self.registry
        self.tool_calls = Counter(
            "qaqnuz_tool_calls",
            "tools/call decisions by outcome.",
            ["brand", "tool", "outcome", "error_class"],
            registry=r,
        )
        self.tool_call_duration = Histogram(
            "qaqnuz_tool_call_duration_seconds",
            "Time spent answering tools/call (tool: at most [server] metrics_tool_limit values per brand, then "
            '"(other)").',
            ["brand", "tool"],
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
        self.store_errors = Counter(
            "qaqnuz_store_errors",
            "Store operations that failed, by operation (auth: a credential could not be checked, each a refusal; "
            "flush, anchor, expire: retried next period; ping: a readiness probe).",
            ["operation"],
            registry=r,
        )
        # A gauge rather than an Info: Info has no multiprocess mode. The sample is the same.
        self.build_info = Gauge(
            "qaqnuz_build_info", "Build information.", ["version"], registry=r, multiprocess_mode="livemax"
        )
        self.build_info.labels(version).set(1)
        self.sessions_open = Gauge(
            "qaqnuz_sessions_open",
            "MCP sessions and connections open now, by transport.",
            ["transport"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.upstream_duration = Histogram(
            "qaqnuz_upstream_duration_seconds",
            "Time a tool pack waited on its upstream (an HTTP request, a query), failures included.",
            ["pack"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "qaqnuz_upstream_errors",
            "Failed upstream requests of a tool pack, by kind (timeout, connect, status, query, other).",
            ["pack", "error"],
            registry=r,
        )
        self.ready = Gauge(
            "qaqnuz_ready",
            "1 while a readiness check (store, limiter, registry) passed at the last /readyz probe, else 0.",
            ["check"],
            registry=r,
            multiprocess_mode="livemin",
        )
        # One process's own numbers, registered with this registry alone (never the global one).
        self.process_collectors: tuple[Collector, ...] = (
            ProcessCollector(registry=r),
            PlatformCollector(registry=r),
            GCCollector(registry=r),
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._merged: CollectorRegistry | None = None

    @property
    def exposition(self) -> CollectorRegistry:
        """What `/metrics` answers: this kernel's registry, or under several workers every worker's values."""
        if self.multiproc_dir is None:
            return self.registry
        from prometheus_client import multiprocess

        if self._merged is None:  # the collectors read the shared folder anew at every scrape
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
            for collector in self.process_collectors:
                merged.register(collector)
            self._merged = merged
        return self._merged

    def set_tool_limit(self, limit: int) -> None:
        """Apply a reloaded `[server] metrics_tool_limit`. Series already exported stay (a registry cannot
        forget them); new observations follow the new limit, keeping the tools labelled first."""
        limit = max(0, limit)
        if limit == self.tool_limit:
            return
        self.tool_limit = limit
        for brand, tools in self._labelled_tools.items():
            self._labelled_tools[brand] = dict.fromkeys(list(tools)[:limit])
        for key in [k for k in self._children if k[0] == "dur"]:
            del self._children[key]

    def _duration_child(self, brand: str, tool: str) -> Any:
        if self.tool_limit == 0:
            label = ALL_TOOLS
        else:
            tools = self._labelled_tools.setdefault(brand, {})
            if tool in tools:
                label = tool
            elif len(tools) < self.tool_limit:
                tools[tool] = None
                label = tool
            else:
                label = OTHER_TOOLS
        child = self._children[("dur", brand, tool)] = self.tool_call_duration.labels(brand, label)
        return child

    def call(self, brand: str, tool: str, outcome: str, error_class: str, seconds: float) -> None:
        key = ("call", brand, tool, outcome, error_class)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.tool_calls.labels(brand, tool, outcome, error_class)
        child.inc()
        hist = self._children.get(("dur", brand, tool))
        if hist is None:
            hist = self._duration_child(brand, tool)
        hist.observe(seconds)

    def session_opened(self, transport: str) -> None:
        self.gauge(self.sessions_open, transport).inc()

    def session_closed(self, transport: str) -> None:
        self.gauge(self.sessions_open, transport).dec()

    def upstream(self, pack: str, seconds: float, error: str | None) -> None:
        """One upstream request of `pack` (its name in config) that took `seconds`; `error` is the kind of
        failure, or None when it succeeded."""
        key = ("up", pack)
        hist = self._children.get(key)
        if hist is None:
            hist = self._children[key] = self.upstream_duration.labels(pack)
        hist.observe(max(0.0, seconds))
        if error is not None:
            kind = error if error in UPSTREAM_ERRORS else "other"
            ekey = ("uperr", pack, kind)
            counter = self._children.get(ekey)
            if counter is None:
                counter = self._children[ekey] = self.upstream_errors.labels(pack, kind)
            counter.inc()

    def readiness(self, checks: dict[str, bool]) -> None:
        for check, ok in checks.items():
            self.gauge(self.ready, check).set(1 if ok else 0)

    def gauge(self, gauge: Gauge, label: str) -> Any:
        """A cached labelled child of a one-label gauge."""
        key = (id(gauge), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = gauge.labels(label)
        return child
