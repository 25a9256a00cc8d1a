"""The governed path (SPEC §2): plain async code awaiting the selected providers in a fixed order.

list_tools and call_tool share one visibility function, so nothing a key cannot call is ever shown to
it, and every hidden tool fails with the same bytes as an unknown one. Every exception inside auth,
policy, limiter or approver is a denial; every exception inside a tool is a sanitised `terminal` with an
incident id that the server's log line (with its traceback) carries too.

The pipeline knows no transport and no wire format: it is handed the current runtime and catalogue and a
bookkeeper, and returns a domain `Outcome`; the binding turns that into MCP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs

from qaqnuz import envelope as env
from qaqnuz import masking, requestid
from qaqnuz.audit import canonical_json
from qaqnuz.callcontext import CallContext
from qaqnuz.envelope import ErrorClass, Outcome
from qaqnuz.errors import DependencyError, LimiterUnavailable, PendingCapReached, TerminalError
from qaqnuz.keys import random_b62
from qaqnuz.records import (
    ApprovalCall,
    ApprovalRequest,
    ApprovalStatus,
    Caller,
    CallRequest,
    CallTrace,
    Channel,
    Decision,
    Principal,
    SideEffect,
    StepSpan,
    ToolList,
    ToolResult,
)
from qaqnuz.registry import RegisteredTool, Snapshot
from qaqnuz.runtime import Runtime
from qaqnuz.sink import Bookkeeper

log = logging.getLogger("qaqnuz.pipeline")
_CACHE_LIMIT = 10_000
#: How long a caller over the pending-approvals cap should wait before retrying.
PENDING_CAP_RETRY_MS = 60_000
#: How long a caller refused because the audit log cannot be written should wait before retrying.
AUDIT_RETRY_MS = 1000
#: The `type` of each MCP content block a `ToolResult` may carry.
CONTENT_BLOCK_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})


def args_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the arguments (sorted keys, compact)."""
    return hashlib.sha256(canonical_json(arguments)).hexdigest()


def new_incident_id() -> str:
    """A random public reference for one failure: in the caller's envelope and the server's log line."""
    return "inc_" + random_b62(16)


def visibility(runtime: Runtime, snapshot: Snapshot, entry: RegisteredTool | None, principal: Principal) -> str | None:
    """Why `principal` cannot see `entry`, or None if it can. The one check behind list and call."""
    brand = principal.brand
    if not runtime.entitled(brand):
        return "brand not entitled"
    if not runtime.policies:
        return "no policy is configured, so every call is denied"
    if entry is None:
        return "unknown tool"
    tool = entry.tool
    if tool.side_effect is SideEffect.SENSITIVE:
        return "sensitive tools are never exposed"
    if not runtime.serves(entry.pack, brand):
        return f"pack {entry.pack} is limited to other brands"
    settings = runtime.tool_settings(brand, tool.name)
    if not settings.enabled:
        return "disabled for the brand"
    if not settings.exposable:
        return "not exposable for the brand (opt-in)"
    if runtime.own_instance(entry.pack, brand) and (brand, tool.name) not in snapshot.brand_tools:
        return f"the brand's own settings of pack {entry.pack} did not load this tool"
    if tool.scope not in principal.scopes:
        return f"key lacks scope {tool.scope}"
    if tool.scope not in runtime.ceiling(brand, principal.role):
        return f"role {principal.role} ceiling lacks scope {tool.scope}"
    return None


#: How long a call refused for being one too many in flight is told to wait.
BUSY_RETRY_MS = 250


def _fail(step: str, cls: ErrorClass, message: str, *, outcome: str | None = None, **kw: Any) -> Outcome:
    failure = env.failure(cls, message, **kw)
    outcome = outcome or ("denied" if step != "execution" else "failed")
    return Outcome(step, outcome, failure, message, failure.approval_id, incident_id=failure.incident_id)


Current = Callable[[], tuple[Runtime, Snapshot]]


class Pipeline:
    """The governed path over whatever runtime and catalogue `current()` returns at the start of a call."""

    def __init__(self, current: Current, sink: Bookkeeper) -> None:
        self.current = current
        self.sink = sink
        self._visible_cache: dict[tuple[Any, ...], ToolList] = {}
        self._running = 0  # calls in flight in this process
        self._running_by_key: dict[str, int] = {}  # only keys with a call in flight

    # -- tools/list ------------------------------------------------------------------------------------
    def visible(self, principal: Principal, runtime: Runtime, snapshot: Snapshot) -> ToolList:
        """The tools `principal` may see, cached per key, config and catalogue."""
        key = (principal, runtime.version, snapshot.version)
        cached = self._visible_cache.get(key)
        if cached is None:
            entries = [e for e in snapshot.tools.values() if visibility(runtime, snapshot, e, principal) is None]
            cached = ToolList(frozenset(e.tool.name for e in entries), tuple(e.tool for e in entries))
            if len(self._visible_cache) >= _CACHE_LIMIT:
                self._visible_cache.clear()
            self._visible_cache[key] = cached
        return cached

    def list_tools(self, principal: Principal, *, transport: str = "") -> ToolList:
        runtime, snapshot = self.current()
        if not runtime.tracers:
            return self.visible(principal, runtime, snapshot)
        wall, start = time.time_ns(), time.perf_counter_ns()
        listed = self.visible(principal, runtime, snapshot)
        end = time.perf_counter_ns()
        done = wall + end - start
        steps = (StepSpan("visibility", wall, done),)
        trace = CallTrace("tools/list", None, principal.brand, principal.role, transport, wall, done, steps, "listed",
                          request_id=requestid.current())  # fmt: skip
        self._trace(runtime, trace)
        return listed

    def _trace(self, runtime: Runtime, trace: CallTrace) -> None:
        for tracer in runtime.tracers:
            try:
                tracer.record(trace)
            except Exception as exc:  # tracing never fails a call
                log.warning("tracer %s failed (%s)", type(tracer).__name__, type(exc).__name__)

    # -- tools/call ------------------------------------------------------------------------------------
    async def call_tool(
        self,
        principal: Principal,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        transport: str = "",
        channel: Channel | None = None,
    ) -> Outcome:
        started = time.perf_counter_ns()
        # One runtime and one catalogue for the whole call, even if a reload lands mid-call.
        runtime, snapshot = self.current()
        wall = time.time_ns() if runtime.tracers else 0
        entry = snapshot.tools.get(name)
        arguments = arguments if arguments is not None else {}
        call = _Call(digest="", channel=channel, transport=transport)
        key_id = principal.key_id
        busy = self._busy(runtime, key_id)
        if busy is not None:
            call.mark("concurrency")
            self._finish(runtime, principal, name, entry, call, started, wall, busy)
            return busy
        self._running += 1
        self._running_by_key[key_id] = self._running_by_key.get(key_id, 0) + 1
        try:
            outcome = await self._govern(runtime, snapshot, principal, entry, arguments, call)
        except anyio.get_cancelled_exc_class():
            self._finish(runtime, principal, name, entry, call, started, wall, None)
            raise
        except Exception as exc:  # a bug in the kernel itself: fail closed
            incident = new_incident_id()
            log.error("internal error in the governed path (incident %s)", incident, exc_info=exc)
            outcome = _fail("internal", ErrorClass.TERMINAL, env.TERMINAL_FAILED, incident_id=incident)
        finally:
            self._running -= 1
            left = self._running_by_key[key_id] - 1
            if left:
                self._running_by_key[key_id] = left
            else:
                del self._running_by_key[key_id]
        self._finish(runtime, principal, name, entry, call, started, wall, outcome)
        return outcome

    def _busy(self, runtime: Runtime, key_id: str) -> Outcome | None:
        """The refusal of a call beyond `[server] max_in_flight_per_key` or `max_in_flight`, or None."""
        server = runtime.config.server
        if self._running_by_key.get(key_id, 0) >= server.max_in_flight_per_key:
            self.sink.rate_limited("in_flight_key")
            message = env.KEY_BUSY.format(limit=server.max_in_flight_per_key)
            return _fail("concurrency", ErrorClass.RETRYABLE, message, retry_after_ms=BUSY_RETRY_MS)
        if self._running >= server.max_in_flight:
            self.sink.rate_limited("in_flight")
            message = env.SERVER_BUSY.format(limit=server.max_in_flight)
            return _fail("concurrency", ErrorClass.RETRYABLE, message, retry_after_ms=BUSY_RETRY_MS)
        return None

    async def admit_session(self, principal: Principal) -> Outcome | None:
        """A new session (an `initialize` on HTTP, a legacy SSE connection) counted against the key's and the
        brand's rate limits like a call: None when admitted, else the refusal (fail closed)."""
        runtime, _ = self.current()
        if not runtime.entitled(principal.brand):  # a brand gone from the config, or not entitled: no session
            return _fail("entitlement", ErrorClass.PERMISSION, env.NOT_ENTITLED)
        return await self._rate_limit(runtime, principal)

    def _finish(
        self,
        runtime: Runtime,
        principal: Principal,
        name: str,
        entry: RegisteredTool | None,
        call: _Call,
        started: int,
        wall: int,
        outcome: Outcome | None,
    ) -> None:
        """Metrics, the audit line and the trace; a cancelled call (outcome None) is recorded too."""
        ended = time.perf_counter_ns()
        elapsed = (ended - started) / 1e9
        transport = call.transport
        # Only registered names reach the audit line or a label: a client-chosen name is unbounded.
        tool_label = name if entry is not None else "(unknown)"
        incident: str | None = None
        if outcome is None:
            step, result, error_class, approval_id = call.step or "execution", "cancelled", "", call.approval_id
        else:
            step, result, approval_id = outcome.step, outcome.outcome, outcome.approval_id
            error_class, incident = outcome.error_class, outcome.incident_id
        self.sink.call_done(principal.brand, tool_label, result, error_class, elapsed)
        self.sink.record(
            brand=principal.brand,
            key_id=principal.key_id,
            role=principal.role,
            tool=tool_label,
            args_hash=call.digest or None,
            step=step,
            outcome=result,
            error_class=error_class or None,
            latency_ms=round(elapsed * 1000, 3),
            approval_id=approval_id,
            incident_id=incident,
            transport=transport or None,
            call_id=call.call_id,
        )
        if runtime.tracers:
            steps = call.steps(wall, started, ended)
            self._trace(runtime, CallTrace("tools/call", tool_label, principal.brand, principal.role, transport, wall,
                                           wall + ended - started, steps, result, error_class, requestid.current(),
                                           incident, approval_id))  # fmt: skip

    async def _rate_limit(self, runtime: Runtime, principal: Principal) -> Outcome | None:
        """One unit from the key's and the brand's buckets: None when admitted, else the refusal."""
        sink = self.sink
        try:
            key_limit, brand_limit = runtime.limits(principal.brand)
            admission = await runtime.limiter.admit(principal.key_id, key_limit, principal.brand, brand_limit)
            admitted = admission.admitted is True
        except Exception as exc:
            sink.limiter_error()
            if isinstance(exc, LimiterUnavailable):  # the limiter logs its own outages once, not per call
                wait = exc.retry_after_ms
                log.debug("rate limiter unavailable; denying as retryable")
            else:
                wait = 1000
                log.error("rate limiter failed (%s); denying", type(exc).__name__)
            return _fail("rate_limit", ErrorClass.RETRYABLE, env.LIMITER_UNAVAILABLE, retry_after_ms=max(1, wait))
        if not admitted:
            dimension = admission.dimension if admission.dimension in ("key", "brand") else "key"
            sink.rate_limited(dimension)
            wait = admission.retry_after_ms if isinstance(admission.retry_after_ms, int) else 1000
            return _fail("rate_limit", ErrorClass.RETRYABLE, env.RATE_LIMITED, retry_after_ms=wait)
        return None

    async def _govern(
        self,
        runtime: Runtime,
        snapshot: Snapshot,
        principal: Principal,
        entry: RegisteredTool | None,
        arguments: Mapping[str, Any],
        call: _Call,
    ) -> Outcome:
        sink = self.sink
        # 0. the audit log: while it cannot be written (`[audit] on_error = "fail"`), nothing runs unseen
        if sink.audit_refusing():
            call.mark("audit")
            return _fail("audit", ErrorClass.RETRYABLE, env.AUDIT_UNAVAILABLE, retry_after_ms=AUDIT_RETRY_MS)
        try:
            call.digest = args_digest(arguments) if isinstance(arguments, Mapping) else ""
        except Exception:  # not JSON-encodable, or nested too deep
            call.digest = ""
        # 1. entitlement
        call.mark("entitlement")
        if not runtime.entitled(principal.brand):
            return _fail("entitlement", ErrorClass.PERMISSION, env.NOT_ENTITLED)
        # 2. rate limit, both dimensions, fail closed: only an explicit True admits
        call.mark("rate_limit")
        refused = await self._rate_limit(runtime, principal)
        if refused is not None:
            return refused
        # 3. visibility: the same (cached) answer list_tools gives; one generic answer for every reason
        call.mark("visibility")
        if entry is None or entry.tool.name not in self.visible(principal, runtime, snapshot).names:
            return _fail("visibility", ErrorClass.PERMISSION, env.NOT_PERMITTED)
        tool = entry.tool
        # 4. input validation (validator compiled once per definition)
        call.mark("validation")
        if not isinstance(arguments, Mapping) or not call.digest:
            return _fail("validation", ErrorClass.VALIDATION, "Invalid arguments at $: expected a JSON object.")
        problem = entry.validator.problem(arguments)
        if problem is not None:
            return _fail("validation", ErrorClass.VALIDATION, problem)
        settings = runtime.tool_settings(principal.brand, tool.name)
        request = CallRequest(
            principal, tool, arguments, call.digest, settings, runtime.ceiling(principal.brand, principal.role)
        )
        # 5. policy: every policy must allow explicitly; none installed is a deny; an exception is a deny
        call.mark("policy")
        if not runtime.policies:
            return _fail("policy", ErrorClass.PERMISSION, env.POLICY_DENIED)
        for policy in runtime.policies:
            try:
                decision = await policy.decide(request)
                allowed = isinstance(decision, Decision) and decision.allow is True
            except Exception as exc:
                sink.policy_error()
                log.error("policy %s failed (%s); denying", type(policy).__name__, type(exc).__name__)
                return _fail("policy", ErrorClass.PERMISSION, env.POLICY_DENIED)
            if not allowed:
                return _fail("policy", ErrorClass.PERMISSION, env.POLICY_DENIED)
        # 6. approval gate: bound to the exact call and to this definition of the tool
        if settings.approval:
            call.mark("approval")
            gate = await self._approval(runtime, principal, entry, arguments, call.digest)
            if isinstance(gate, Outcome):
                return gate
            call.approval_id = gate
        # 7. write-ahead: a tool that changes something gets a durable `intent` record before it runs, so a
        # crash between running it and recording its outcome leaves the call visible (`unknown outcome`)
        if tool.side_effect is not SideEffect.READ or settings.approval:
            call.mark("intent")
            call.call_id = "call_" + random_b62(16)
            written = await sink.intent(
                brand=principal.brand, key_id=principal.key_id, role=principal.role, tool=tool.name,
                args_hash=call.digest, step="execution", outcome="intent", approval_id=call.approval_id,
                transport=call.transport or None, call_id=call.call_id,
            )  # fmt: skip
            if not written:
                return _fail("audit", ErrorClass.RETRYABLE, env.AUDIT_UNAVAILABLE, retry_after_ms=AUDIT_RETRY_MS,
                             approval_id=call.approval_id)  # fmt: skip
        # 8. execution with the tool's timeout, as this brand's instance of the pack runs it
        call.mark("execution")
        runnable = snapshot.brand_tools.get((principal.brand, tool.name), tool)
        return await self._execute(principal, runnable, arguments, call)

    async def _approval(
        self,
        runtime: Runtime,
        principal: Principal,
        entry: RegisteredTool,
        arguments: Mapping[str, Any],
        digest: str,
    ) -> Outcome | str:
        """The approval id to execute under, or the Outcome that stops the call."""
        approver, sink, tool = runtime.approver, self.sink, entry.tool.name
        shown, cut = masking.for_approver(arguments)
        wanted = ApprovalCall(
            brand=principal.brand,
            key_id=principal.key_id,
            key_name=principal.name,
            tool=tool,
            args_hash=digest,
            tool_digest=entry.digest,
            arguments=shown,
            arguments_truncated=cut,
            max_pending=runtime.config.approvals.max_pending_per_key,
            role=principal.role,
            side_effect=str(entry.tool.side_effect),
        )

        async def ask() -> ApprovalRequest:
            approval = await approver.request(wanted)
            if (approval.brand, approval.key_id, approval.tool, approval.args_hash) != (
                principal.brand,
                principal.key_id,
                tool,
                digest,
            ):
                raise ValueError("the approver answered for a different call")
            return approval

        try:
            approval = await ask()
            if approval.status is ApprovalStatus.PENDING and runtime.wait_seconds > 0:
                waited = await approver.wait(approval.approval_id, runtime.wait_seconds)
                if waited is not None and waited.approval_id == approval.approval_id:
                    approval = waited
            if approval.status is ApprovalStatus.APPROVED:
                if await approver.consume(approval.approval_id) is True:
                    await sink.decision_observed(approval)
                    return approval.approval_id
                # Used by a concurrent identical call (or it just lapsed): ask again rather than run twice.
                approval = await ask()
                if approval.status is ApprovalStatus.APPROVED:
                    raise ValueError("an approval could not be consumed")
            if approval.status in (ApprovalStatus.DENIED, ApprovalStatus.EXPIRED):
                await approver.close(approval.approval_id)
                await sink.decision_observed(approval)
                denied = approval.status is ApprovalStatus.DENIED
                text = (env.approval_denied if denied else env.approval_expired)(approval.approval_id)
                outcome = "approval_denied" if denied else "approval_expired"
                return _fail("approval", ErrorClass.PERMISSION, text, approval_id=approval.approval_id, outcome=outcome)
            if approval.status is not ApprovalStatus.PENDING:
                raise ValueError(f"unexpected approval status {approval.status!r}")
        except PendingCapReached:
            return _fail(
                "approval",
                ErrorClass.RETRYABLE,
                env.TOO_MANY_PENDING,
                retry_after_ms=PENDING_CAP_RETRY_MS,
                outcome="approval_capped",
            )
        except Exception as exc:
            sink.approver_error()
            log.error("approver failed (%s); denying", type(exc).__name__)
            return _fail("approval", ErrorClass.PERMISSION, env.APPROVAL_UNAVAILABLE, outcome="approval_unavailable")
        await sink.approval_requested()
        return _fail(
            "approval",
            ErrorClass.PERMISSION,
            env.approval_required(approval.approval_id),
            approval_id=approval.approval_id,
            outcome="approval_requested",
        )

    async def _execute(self, principal: Principal, tool: Any, arguments: Mapping[str, Any], call: _Call) -> Outcome:
        approval_id = call.approval_id
        context = CallContext(Caller.of(principal), call.channel)
        token = context._activate()
        try:
            async with asyncio.timeout(tool.timeout_s):  # half the cost of anyio.fail_after, per call
                data = await tool.handler(arguments)
            blocks: tuple[Any, ...] = ()
            if isinstance(data, ToolResult):
                data, blocks = data.data, data.content
                if not all(_is_block(b) for b in blocks):
                    raise TypeError("a ToolResult content item is not an MCP content block")
            text, success = env.success(data, tool.max_result_bytes)
            blocks, dropped = _fit_blocks(blocks, tool.max_result_bytes - len(text.encode("utf-8")))
            if dropped:
                success = env.Success(ok=True, data=success.data, truncated=True)
        except DependencyError as exc:
            incident = new_incident_id()
            log.warning("tool %s: dependency failure (incident %s)", tool.name, incident, exc_info=exc)
            message = exc.public or env.DEPENDENCY_FAILED
            return _fail("execution", ErrorClass.DEPENDENCY, message, approval_id=approval_id, incident_id=incident)
        except TerminalError as exc:
            incident = new_incident_id()
            log.warning("tool %s: terminal failure (incident %s)", tool.name, incident, exc_info=exc)
            message = exc.public or env.TERMINAL_FAILED
            return _fail("execution", ErrorClass.TERMINAL, message, approval_id=approval_id, incident_id=incident)
        except TimeoutError:
            incident = new_incident_id()
            log.warning("tool %s: timed out after %ss (incident %s)", tool.name, tool.timeout_s, incident)
            return _fail(
                "execution", ErrorClass.DEPENDENCY, env.DEPENDENCY_FAILED, approval_id=approval_id, incident_id=incident
            )
        except Exception as exc:
            incident = new_incident_id()
            log.error("tool %s raised %s (incident %s)", tool.name, type(exc).__name__, incident, exc_info=exc)
            return _fail(
                "execution", ErrorClass.TERMINAL, env.TERMINAL_FAILED, approval_id=approval_id, incident_id=incident
            )
        finally:
            CallContext._deactivate(token)
        try:  # bookkeeping must never turn a call that ran into a failure
            await self.sink.executed(principal.brand)
        except Exception as exc:
            log.error("usage accounting failed (%s); the call itself succeeded", type(exc).__name__)
        return Outcome("execution", "executed", success, text, approval_id, blocks)


@attrs.define
class _Call:
    """What the governed path has learned about a call so far (for the audit line, even if cancelled)."""

    digest: str
    step: str = ""
    approval_id: str | None = None
    channel: Channel | None = None
    transport: str = ""
    #: Set when the call has an `intent` record: its outcome record carries the same id.
    call_id: str | None = None
    #: (step, perf_counter_ns when it began) in order: a tracer's child spans, built after the call.
    marks: list[tuple[str, int]] = attrs.Factory(list)

    def mark(self, step: str) -> None:
        self.step = step
        self.marks.append((step, time.perf_counter_ns()))

    def steps(self, start_wall_ns: int, start_ns: int, end_ns: int) -> tuple[StepSpan, ...]:
        """The marks as spans on the wall clock, each ending where the next began."""
        shift = start_wall_ns - start_ns
        ends = [at for _, at in self.marks[1:]] + [end_ns]
        return tuple(StepSpan(step, at + shift, end + shift) for (step, at), end in zip(self.marks, ends, strict=True))


def _is_block(block: Any) -> bool:
    """An MCP content block (`mcp.types`): a pydantic model with one of the content `type`s."""
    return getattr(block, "type", None) in CONTENT_BLOCK_TYPES and hasattr(block, "model_dump_json")


def _fit_blocks(blocks: tuple[Any, ...], budget: int) -> tuple[tuple[Any, ...], bool]:
    """The leading blocks whose JSON fits in `budget` bytes, and whether any were dropped."""
    kept: list[Any] = []
    for block in blocks:
        size = len(block.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8"))
        if size > budget:
            return tuple(kept), True
        budget -= size
        kept.append(block)
    return tuple(kept), False
