"""The governed path (SPEC §2): plain async code awaiting the selected providers in a fixed order.

list_tools and call_tool share one visibility function, so nothing a key cannot call is ever shown to
it, and every hidden tool fails with the same bytes as an unknown one. Every exception inside auth,
policy, limiter or approver is a denial; every exception inside a tool is a sanitised `terminal`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import mcp.types as mt

from qaqnuz import envelope as env
from qaqnuz.audit import canonical_json
from qaqnuz.envelope import ErrorClass
from qaqnuz.errors import DependencyError, TerminalError
from qaqnuz.records import ApprovalRequest, ApprovalStatus, CallRequest, Decision, Principal, SideEffect, ToolResult
from qaqnuz.registry import RegisteredTool, Snapshot

if TYPE_CHECKING:
    from qaqnuz.kernel import Kernel, Runtime

log = logging.getLogger("qaqnuz.pipeline")
_CACHE_LIMIT = 10_000


def args_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the arguments (sorted keys, compact)."""
    return hashlib.sha256(canonical_json(arguments)).hexdigest()


def visibility(runtime: Runtime, entry: RegisteredTool | None, principal: Principal) -> str | None:
    """Why `principal` cannot see `entry`, or None if it can. The one check behind list and call."""
    brand = runtime.config.brands.get(principal.brand)
    if brand is None or not runtime.config.plans[brand.plan].entitled:
        return "brand not entitled"
    if not runtime.policies:
        return "no policy is configured, so every call is denied"
    if entry is None:
        return "unknown tool"
    tool = entry.tool
    if tool.side_effect is SideEffect.SENSITIVE:
        return "sensitive tools are never exposed"
    settings = runtime.tool_settings(principal.brand, tool.name)
    if not settings.enabled:
        return "disabled for the brand"
    if not settings.exposable:
        return "not exposable for the brand (opt-in)"
    if tool.scope not in principal.scopes:
        return f"key lacks scope {tool.scope}"
    if tool.scope not in runtime.ceiling(principal.brand, principal.role):
        return f"role {principal.role} ceiling lacks scope {tool.scope}"
    return None


@attrs.frozen
class Outcome:
    """What one call came to, for the envelope, the audit line and the metrics."""

    step: str
    outcome: str
    result: env.Success | env.Failure
    text: str
    approval_id: str | None = None
    extra: tuple[Any, ...] = ()


def _fail(step: str, cls: ErrorClass, message: str, *, outcome: str | None = None, **kw: Any) -> Outcome:
    failure = env.failure(cls, message, **kw)
    outcome = outcome or ("denied" if step != "execution" else "failed")
    return Outcome(step, outcome, failure, message, failure.approval_id)


class Pipeline:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._visible_cache: dict[tuple[Any, ...], tuple[frozenset[str], list[mt.Tool]]] = {}

    # -- tools/list ------------------------------------------------------------------------------------
    def _visible(
        self, principal: Principal, runtime: Runtime | None = None, snapshot: Snapshot | None = None
    ) -> tuple[frozenset[str], list[mt.Tool]]:
        """The names and wire definitions `principal` may see, cached per key, config and catalogue."""
        runtime = runtime or self.kernel.runtime
        snapshot = snapshot or self.kernel.registry.snapshot
        key = (principal, runtime.version, snapshot.version)
        cached = self._visible_cache.get(key)
        if cached is None:
            entries = [e for e in snapshot.tools.values() if visibility(runtime, e, principal) is None]
            cached = (frozenset(e.tool.name for e in entries), [_wire_tool(e) for e in entries])
            if len(self._visible_cache) >= _CACHE_LIMIT:
                self._visible_cache.clear()
            self._visible_cache[key] = cached
        return cached

    def list_tools(self, principal: Principal) -> list[mt.Tool]:
        return self._visible(principal)[1]

    # -- tools/call ------------------------------------------------------------------------------------
    async def call_tool(
        self, principal: Principal, name: str, arguments: Mapping[str, Any] | None, *, transport: str = ""
    ) -> mt.CallToolResult:
        started = time.perf_counter()
        # One runtime and one catalogue for the whole call, even if a reload lands mid-call.
        runtime, snapshot = self.kernel.runtime, self.kernel.registry.snapshot
        entry = snapshot.tools.get(name)
        arguments = arguments if arguments is not None else {}
        call = _Call(digest="")
        try:
            outcome = await self._govern(runtime, snapshot, principal, entry, arguments, call)
        except anyio.get_cancelled_exc_class():
            self._finish(principal, name, entry, call, started, transport, None)
            raise
        except Exception as exc:  # a bug in the kernel itself: fail closed
            log.error("internal error in the governed path (%s)", type(exc).__name__)
            outcome = _fail("internal", ErrorClass.TERMINAL, env.TERMINAL_FAILED)
        self._finish(principal, name, entry, call, started, transport, outcome)
        return mt.CallToolResult(
            content=[mt.TextContent(type="text", text=outcome.text), *outcome.extra],
            structured_content=env.to_builtins(outcome.result),
            is_error=isinstance(outcome.result, env.Failure),
        )

    def _finish(
        self,
        principal: Principal,
        name: str,
        entry: RegisteredTool | None,
        call: _Call,
        started: float,
        transport: str,
        outcome: Outcome | None,
    ) -> None:
        """Metrics and the audit line; a cancelled call (outcome None) is recorded too."""
        elapsed = time.perf_counter() - started
        # Only registered names reach the audit line or a label: a client-chosen name is unbounded.
        tool_label = name if entry is not None else "(unknown)"
        if outcome is None:
            step, result, error_class, approval_id = call.step or "execution", "cancelled", "", call.approval_id
        else:
            step, result, approval_id = outcome.step, outcome.outcome, outcome.approval_id
            error_class = str(outcome.result.error_class) if isinstance(outcome.result, env.Failure) else ""
        try:
            self.kernel.metrics.call(principal.brand, tool_label, result, error_class, elapsed)
        except Exception as exc:
            log.error("updating call metrics failed (%s)", type(exc).__name__)
        self.kernel.record(
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
            transport=transport or None,
        )

    async def _govern(
        self,
        runtime: Runtime,
        snapshot: Snapshot,
        principal: Principal,
        entry: RegisteredTool | None,
        arguments: Mapping[str, Any],
        call: _Call,
    ) -> Outcome:
        kernel = self.kernel
        try:
            call.digest = args_digest(arguments) if isinstance(arguments, Mapping) else ""
        except Exception:  # not JSON-encodable, or nested too deep
            call.digest = ""
        brand_cfg = runtime.config.brands.get(principal.brand)
        # 1. entitlement
        call.step = "entitlement"
        if brand_cfg is None or not runtime.config.plans[brand_cfg.plan].entitled:
            return _fail("entitlement", ErrorClass.PERMISSION, env.NOT_ENTITLED)
        # 2. rate limit, both dimensions, fail closed: only an explicit True admits
        call.step = "rate_limit"
        key_limit, brand_limit = runtime.limits(principal.brand)
        try:
            admission = await runtime.limiter.admit(principal.key_id, key_limit, principal.brand, brand_limit)
            admitted = admission.admitted is True
        except Exception as exc:
            kernel.metrics.limiter_errors.inc()
            log.error("rate limiter failed (%s); denying", type(exc).__name__)
            return _fail("rate_limit", ErrorClass.RETRYABLE, env.LIMITER_UNAVAILABLE, retry_after_ms=1000)
        if not admitted:
            dimension = admission.dimension if admission.dimension in ("key", "brand") else "key"
            kernel.metrics.rate_limit_rejections.labels(dimension).inc()
            wait = admission.retry_after_ms if isinstance(admission.retry_after_ms, int) else 1000
            return _fail("rate_limit", ErrorClass.RETRYABLE, env.RATE_LIMITED, retry_after_ms=wait)
        # 3. visibility: the same (cached) answer list_tools gives; one generic answer for every reason
        call.step = "visibility"
        if entry is None or entry.tool.name not in self._visible(principal, runtime, snapshot)[0]:
            return _fail("visibility", ErrorClass.PERMISSION, env.NOT_PERMITTED)
        tool = entry.tool
        # 4. input validation (validator compiled once per definition)
        call.step = "validation"
        if not isinstance(arguments, Mapping) or not call.digest:
            return _fail("validation", ErrorClass.VALIDATION, "Invalid arguments at $: expected a JSON object.")
        error = next(iter(sorted(entry.validator.iter_errors(arguments), key=_error_order)), None)
        if error is not None:
            return _fail("validation", ErrorClass.VALIDATION, validation_message(error))
        settings = runtime.tool_settings(principal.brand, tool.name)
        request = CallRequest(
            principal, tool, arguments, call.digest, settings, runtime.ceiling(principal.brand, principal.role)
        )
        # 5. policy: every policy must allow explicitly; none installed is a deny; an exception is a deny
        call.step = "policy"
        if not runtime.policies:
            return _fail("policy", ErrorClass.PERMISSION, env.POLICY_DENIED)
        for policy in runtime.policies:
            try:
                decision = await policy.decide(request)
                allowed = isinstance(decision, Decision) and decision.allow is True
            except Exception as exc:
                kernel.metrics.policy_errors.inc()
                log.error("policy %s failed (%s); denying", type(policy).__name__, type(exc).__name__)
                return _fail("policy", ErrorClass.PERMISSION, env.POLICY_DENIED)
            if not allowed:
                return _fail("policy", ErrorClass.PERMISSION, env.POLICY_DENIED)
        # 6. approval gate: bound to the exact call and to this definition of the tool
        if settings.approval:
            call.step = "approval"
            gate = await self._approval(runtime, principal, entry, call.digest)
            if isinstance(gate, Outcome):
                return gate
            call.approval_id = gate
        # 7. execution with the tool's timeout
        call.step = "execution"
        return await self._execute(principal, entry, arguments, call.approval_id)

    async def _approval(
        self, runtime: Runtime, principal: Principal, entry: RegisteredTool, digest: str
    ) -> Outcome | str:
        """The approval id to execute under, or the Outcome that stops the call."""
        approver, kernel, tool = runtime.approver, self.kernel, entry.tool.name
        binding = hashlib.sha256(f"{entry.digest}:{digest}".encode("ascii")).hexdigest()
        summary = {"tool": tool, "key_name": principal.name}

        async def ask() -> ApprovalRequest:
            return await approver.request(principal.brand, principal.key_id, tool, binding, summary=summary)

        try:
            approval = await ask()
            if (approval.brand, approval.key_id, approval.tool, approval.args_hash) != (
                principal.brand,
                principal.key_id,
                tool,
                binding,
            ):
                raise ValueError("the approver answered for a different call")
            if approval.status is ApprovalStatus.PENDING and runtime.wait_seconds > 0:
                waited = await approver.wait(approval.approval_id, runtime.wait_seconds)
                if waited is not None and waited.approval_id == approval.approval_id:
                    approval = waited
            if approval.status is ApprovalStatus.APPROVED:
                if await approver.consume(approval.approval_id) is True:
                    kernel.observe_decision(approval)
                    return approval.approval_id
                # Used by a concurrent identical call (or it just lapsed): ask again rather than run twice.
                approval = await ask()
                if approval.status is ApprovalStatus.APPROVED:
                    raise ValueError("an approval could not be consumed")
            if approval.status in (ApprovalStatus.DENIED, ApprovalStatus.EXPIRED):
                await approver.close(approval.approval_id)
                kernel.observe_decision(approval)
                denied = approval.status is ApprovalStatus.DENIED
                text = (env.approval_denied if denied else env.approval_expired)(approval.approval_id)
                outcome = "approval_denied" if denied else "approval_expired"
                return _fail("approval", ErrorClass.PERMISSION, text, approval_id=approval.approval_id, outcome=outcome)
            if approval.status is not ApprovalStatus.PENDING:
                raise ValueError(f"unexpected approval status {approval.status!r}")
        except Exception as exc:
            kernel.metrics.approver_errors.inc()
            log.error("approver failed (%s); denying", type(exc).__name__)
            return _fail("approval", ErrorClass.PERMISSION, env.APPROVAL_UNAVAILABLE, outcome="approval_unavailable")
        kernel.approval_requested()
        return _fail(
            "approval",
            ErrorClass.PERMISSION,
            env.approval_required(approval.approval_id),
            approval_id=approval.approval_id,
            outcome="approval_requested",
        )

    async def _execute(
        self,
        principal: Principal,
        entry: RegisteredTool,
        arguments: Mapping[str, Any],
        approval_id: str | None,
    ) -> Outcome:
        tool = entry.tool
        try:
            with anyio.fail_after(tool.timeout_s):
                data = await tool.handler(arguments)
            blocks: tuple[Any, ...] = ()
            if isinstance(data, ToolResult):
                data, blocks = data.data, data.content
                if not all(isinstance(b, _CONTENT_BLOCKS) for b in blocks):
                    raise TypeError("a ToolResult content item is not an MCP content block")
            text, success = env.success(data, tool.max_result_bytes)
            blocks, dropped = _fit_blocks(blocks, tool.max_result_bytes - len(text.encode("utf-8")))
            if dropped:
                success = env.Success(ok=True, data=success.data, truncated=True)
        except DependencyError as exc:
            log.warning("tool %s: dependency failure (%s)", tool.name, type(exc).__name__)
            message = exc.public or env.DEPENDENCY_FAILED
            return _fail("execution", ErrorClass.DEPENDENCY, message, approval_id=approval_id)
        except TerminalError as exc:
            log.warning("tool %s: terminal failure (%s)", tool.name, type(exc).__name__)
            return _fail("execution", ErrorClass.TERMINAL, exc.public or env.TERMINAL_FAILED, approval_id=approval_id)
        except TimeoutError:
            log.warning("tool %s: timed out after %ss", tool.name, tool.timeout_s)
            return _fail("execution", ErrorClass.DEPENDENCY, env.DEPENDENCY_FAILED, approval_id=approval_id)
        except Exception as exc:
            log.error("tool %s raised %s", tool.name, type(exc).__name__)
            return _fail("execution", ErrorClass.TERMINAL, env.TERMINAL_FAILED, approval_id=approval_id)
        try:  # bookkeeping must never turn a call that ran into a failure
            self.kernel.executed(principal.brand)
        except Exception as exc:
            log.error("usage accounting failed (%s); the call itself succeeded", type(exc).__name__)
        return Outcome("execution", "executed", success, text, approval_id, blocks)


@attrs.define
class _Call:
    """What the governed path has learned about a call so far (for the audit line, even if cancelled)."""

    digest: str
    step: str = ""
    approval_id: str | None = None


_CONTENT_BLOCKS = (mt.TextContent, mt.ImageContent, mt.AudioContent, mt.EmbeddedResource, mt.ResourceLink)


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


def _wire_tool(entry: RegisteredTool) -> mt.Tool:
    tool = entry.tool
    return mt.Tool(
        name=tool.name,
        description=f"[{tool.stability}] {tool.description}",
        input_schema=dict(tool.input_schema),
        annotations=mt.ToolAnnotations(
            read_only_hint=tool.side_effect is SideEffect.READ,
            destructive_hint=tool.side_effect is not SideEffect.READ,
            open_world_hint=tool.side_effect is SideEffect.EXTERNAL,
        ),
    )


def _error_order(error: Any) -> tuple[int, str]:
    return (len(error.absolute_path), str(list(error.absolute_path)))


_RULE_HINTS = {
    "type": lambda v: f"expected type {' or '.join(v) if isinstance(v, list) else v}",
    "enum": lambda v: "must be one of the allowed values",
    "const": lambda v: "must equal the required constant",
    "minimum": lambda v: f"must be >= {v}",
    "maximum": lambda v: f"must be <= {v}",
    "exclusiveMinimum": lambda v: f"must be > {v}",
    "exclusiveMaximum": lambda v: f"must be < {v}",
    "minLength": lambda v: f"must be at least {v} characters",
    "maxLength": lambda v: f"must be at most {v} characters",
    "pattern": lambda v: "must match the required pattern",
    "format": lambda v: f"must be a valid {v}",
    "minItems": lambda v: f"must have at least {v} items",
    "maxItems": lambda v: f"must have at most {v} items",
    "uniqueItems": lambda v: "items must be unique",
    "additionalProperties": lambda v: "unexpected properties are not allowed",
    "unevaluatedProperties": lambda v: "unexpected properties are not allowed",
    "multipleOf": lambda v: f"must be a multiple of {v}",
}


def validation_message(error: Any) -> str:
    """Names the JSON path and the rule broken; never echoes the value given."""
    path = error.json_path
    rule = error.validator
    if rule == "required":
        present = set(error.instance) if isinstance(error.instance, Mapping) else set()
        missing = [p for p in error.validator_value if p not in present]
        names = ", ".join(repr(p) for p in missing)
        return f"Invalid arguments at {path}: missing required property {names} (rule: required)."
    hint = _RULE_HINTS.get(rule)
    detail = hint(error.validator_value) if hint else "does not satisfy the schema"
    return f"Invalid arguments at {path}: {detail} (rule: {rule})."
