"""Frozen records and provider protocols: the vocabulary shared by the kernel and every plugin.

Registration hooks return records (`Provider`, `WebRoute`, `Command`), never live objects, so discovery does
no I/O and the kernel decides what to instantiate from config. The request path talks to providers only
through the small Protocols below, which keeps the governed order explicit in `pipeline.py`. Nothing here
imports the MCP SDK: `import qaqnuz` stays light.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import msgspec

if TYPE_CHECKING:
    from qaqnuz.envelope import Outcome


class ProviderKind(enum.StrEnum):
    """The provider kinds the kernel knows; each has one registration hook."""

    AUTH = "auth"
    POLICY = "policy"
    APPROVER = "approver"
    LIMITER = "limiter"
    TRANSPORT = "transport"
    TOOLS = "tools"
    STORE = "store"
    AUDIT = "audit"
    TRACER = "tracer"


class NoSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Settings struct for providers that take no settings: any key given is an error."""


@attrs.frozen
class Provider:
    """What a registration hook returns: a named factory plus the shape of its settings.

    `factory(settings, context)` is called only when config selects `name`; `settings` is an instance of
    `settings_type` decoded from `[plugins.<name>]` (or the pack table for tool providers), and `context`
    is the context of its kind (`ToolPackContext`, `StoreContext`, ...): each kind sees only what it needs.
    """

    name: str
    factory: Callable[[Any, Any], Any]
    description: str
    settings_type: type[msgspec.Struct] = NoSettings


@attrs.frozen
class WebRoute:
    """An ASGI application a plugin mounts on the HTTP transport, under `path` (a prefix).

    `factory(settings, context)` builds the app once per server from `[plugins.<name>]` and a
    `WebRouteContext`. The route authenticates its own requests (a console session, a Slack signature):
    the transport never hands it an MCP key. With `mcp_key = True` the transport instead authenticates an
    MCP key on every request (`Authorization: Bearer`) and puts the `Principal` in the ASGI scope under
    `"qaqnuz.principal"`; a request without a valid key then gets the fixed 401 and never reaches the route.
    """

    name: str
    path: str
    factory: Callable[[Any, Any], Any]
    description: str
    settings_type: type[msgspec.Struct] = NoSettings
    mcp_key: bool = False


@attrs.frozen
class Command:
    """A `qaqnuz` subcommand. `name` is its words after `qaqnuz` ("demo", "keys rotate", "slack manifest").

    `arguments(parser)` adds its options; `run(args, context)` does the work and returns the exit code
    (0 ok, 1 runtime failure, 2 usage or config error; raising `UsageError`/`ConfigError` gives 2 with the
    message). A command without `run` names a group and carries the group's help.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace, Any], int] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    epilog: str = ""


class SideEffect(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    EXTERNAL = "external"
    SENSITIVE = "sensitive"


class Stability(enum.StrEnum):
    STABLE = "stable"
    BETA = "beta"
    DEPRECATED = "deprecated"


ToolHandler = Callable[[Mapping[str, Any]], Awaitable[Any]]


@attrs.frozen
class Tool:
    """One tool definition as a tool provider yields it.

    Everything but `handler` is part of the definition hash, so a change to any of them is a change the
    registry notices and announces. `binds_brand` says the tool itself limits its data to the calling
    brand (an SQL tool that uses `:brand`, an HTTP tool that sends `{{ brand }}`); `config check` warns
    about tools several brands share that do not. `interactive` says the tool talks back to its caller while
    it runs (`current_call()`: log, progress, sampling, elicitation), so its calls take a transport's
    streaming path; other tools may be answered by a transport's faster, single-response path, where those
    messages would not reach the caller.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]
    scope: str
    side_effect: SideEffect
    handler: ToolHandler = attrs.field(eq=False, repr=False)
    stability: Stability = Stability.STABLE
    timeout_s: float = 30.0
    max_result_bytes: int = 256 * 1024
    binds_brand: bool = False
    interactive: bool = False

    def definition(self) -> dict[str, Any]:
        """The hashed part of a tool: everything a client or the governance path can observe."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "scope": self.scope,
            "side_effect": str(self.side_effect),
            "stability": str(self.stability),
            "timeout_s": self.timeout_s,
            "max_result_bytes": self.max_result_bytes,
            "binds_brand": self.binds_brand,
            "interactive": self.interactive,
        }


@attrs.frozen
class ToolResult:
    """What a handler returns when it has MCP content blocks to show beside its data.

    `data` is the payload (JSON-encoded into `content[0]` and `structuredContent.data`, as for a plain
    return value); `content` holds `mcp.types` blocks (ImageContent, AudioContent, EmbeddedResource,
    ResourceLink, TextContent) appended after `content[0]`. They count toward `max_result_bytes`: blocks
    that do not fit are dropped from the end and the envelope says `truncated: true`.
    """

    data: Any
    content: tuple[Any, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class ToolSettings:
    """A brand's settings for one tool. Exposure is opt-in: a tool is hidden until configured."""

    enabled: bool = True
    exposable: bool = False
    approval: bool = False


@attrs.frozen(cache_hash=True)  # a key of the per-key caches on every request: hashed once per instance
class Principal:
    """Who is calling: derived only from a verified credential, never from anything the client says."""

    key_id: str
    brand: str
    role: str
    scopes: frozenset[str]
    name: str = ""


@attrs.frozen
class Caller:
    """What a running tool may know about whose call it runs (never the key itself).

    Packs bind these so one pack serves many brands without one brand reading another's data.
    """

    brand: str
    key_id: str
    key_name: str
    role: str

    @classmethod
    def of(cls, principal: Principal) -> Caller:
        return cls(principal.brand, principal.key_id, principal.name, principal.role)

    def values(self) -> dict[str, str]:
        """The names packs bind (`:brand`, `{{ key_id }}`, ...) and their values."""
        return {"brand": self.brand, "key_id": self.key_id, "key_name": self.key_name, "role": self.role}


#: The argument names a pack reserves for the caller's identity (never taken from the caller's input).
CALLER_NAMES: frozenset[str] = frozenset({"brand", "key_id", "key_name", "role"})


@attrs.frozen
class Decision:
    """A policy's answer. `reason` is for the audit log and operators, never shown to the caller."""

    allow: bool
    reason: str = ""


@attrs.frozen
class Limit:
    """At most `count` admitted calls in any rolling window of `window_s` seconds."""

    count: int
    window_s: float


@attrs.frozen
class Admission:
    """A limiter's answer for both dimensions at once. `dimension` names the one that refused."""

    admitted: bool
    retry_after_ms: int = 0
    dimension: str = ""


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CONSUMED = "consumed"


@attrs.frozen
class ApprovalCall:
    """One exact call that needs a human decision, as the governed path hands it to the approver.

    `args_hash` is the same SHA-256 the audit line carries; `tool_digest` binds the approval to this
    definition of the tool (a changed tool asks again). `arguments` is what the human sees: secret-looking
    values already masked, capped at 16 KiB (`arguments_truncated` then says so). `max_pending` caps the
    requests one key may have waiting. `role` (the key's) and `side_effect` (the tool's) are for the human's
    eyes; an approver that shows them keeps them itself (the store does not).
    """

    brand: str
    key_id: str
    key_name: str
    tool: str
    args_hash: str
    tool_digest: str
    arguments: Any
    arguments_truncated: bool = False
    max_pending: int = 20
    role: str = ""
    side_effect: str = ""


@attrs.frozen
class ApprovalRequest:
    """One exact call awaiting a human: bound to brand, key, tool and the arguments' hash.

    `arguments` is kept only while a human may still need it: it is None once the request was used,
    denied or expired.
    """

    approval_id: str
    brand: str
    key_id: str
    tool: str
    args_hash: str
    status: ApprovalStatus
    created_at: float
    expires_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    reason: str | None = None
    valid_until: float | None = None
    key_name: str = ""
    arguments: Any = None
    arguments_truncated: bool = False

    def effective_status(self, now: float) -> ApprovalStatus:
        """The status as of `now`: a pending or approved request past its time is expired."""
        if self.status is ApprovalStatus.PENDING and self.expires_at <= now:
            return ApprovalStatus.EXPIRED
        if self.status is ApprovalStatus.APPROVED and self.valid_until is not None and self.valid_until <= now:
            return ApprovalStatus.EXPIRED
        return self.status


@attrs.frozen
class CallRequest:
    """A call as the pipeline hands it to policies: principal, tool, validated arguments, their hash, and
    the scopes the principal's role may hold under the brand's current config."""

    principal: Principal
    tool: Tool
    arguments: Mapping[str, Any]
    args_hash: str
    settings: ToolSettings
    ceiling: frozenset[str] = frozenset()


@attrs.define(eq=False)
class ToolList:
    """The tools one principal may see under one config and catalogue (cached by the pipeline).

    `cache` is free for a binding or transport to keep its own encodings of `tools` in, by a key of its own
    (it is rebuilt with the list).
    """

    names: frozenset[str]
    tools: tuple[Tool, ...]
    cache: dict[str, Any] = attrs.field(factory=dict)
    _by_name: dict[str, Tool] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._by_name = {tool.name: tool for tool in self.tools}

    def find(self, name: str) -> Tool | None:
        """The visible tool of that name, or None (hidden and unknown alike)."""
        return self._by_name.get(name)


@runtime_checkable
class AuthProvider(Protocol):
    """Maps a raw credential to a Principal, or None. Any failure must look the same to the caller.

    A provider that must stay off the network (it checks no credential) sets `loopback_only = True`.
    """

    async def authenticate(self, credential: str | None) -> Principal | None: ...


@runtime_checkable
class Policy(Protocol):
    """Allows or denies one call. Every installed policy must allow; an exception is a deny."""

    async def decide(self, request: CallRequest) -> Decision: ...


@runtime_checkable
class RateLimiter(Protocol):
    """Admits a call in both dimensions atomically (both counted, or neither)."""

    async def admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission: ...


@runtime_checkable
class Approver(Protocol):
    """Holds approval requests and their decisions.

    `request` returns the live approval for the exact call (creating a pending one if there is none) and
    raises `qaqnuz.PendingCapReached` when the key already has `call.max_pending` requests waiting;
    `consume` atomically turns an approved, still valid approval into consumed and says whether it did;
    `close` marks a denied or expired approval as reported so the next identical call opens a new one;
    `wait` holds for up to `seconds` for a decision and returns the approval as it then stands.
    Optional: `async start()`, awaited once as a server starts (for work of its own, like posting requests
    whose notice never went out), and `async aclose()` when it is replaced or the server stops.
    """

    async def request(self, call: ApprovalCall) -> ApprovalRequest: ...

    async def consume(self, approval_id: str) -> bool: ...

    async def close(self, approval_id: str) -> None: ...

    async def wait(self, approval_id: str, seconds: float) -> ApprovalRequest | None: ...


@runtime_checkable
class ToolProvider(Protocol):
    """Yields tool definitions; the registry polls `list_tools` every sync period.

    A provider holding connections may also define `async def aclose()`; the kernel awaits it when the
    provider is replaced (config reload) or the server stops.
    """

    async def list_tools(self) -> Sequence[Tool]: ...


@attrs.frozen
class StepSpan:
    """One governance step of a call (entitlement, rate_limit, visibility, validation, policy, approval, audit,
    execution) with its wall-clock start and end in nanoseconds since the epoch."""

    name: str
    start_ns: int
    end_ns: int


@attrs.frozen
class CallTrace:
    """One MCP request as the governed path saw it, handed to every tracer once its answer is known.

    Built after the fact from timestamps the path takes anyway, so a server without a tracer pays nothing
    for tracing and one with a tracer never waits on it. It holds no argument, no key and no client value:
    `tool` is a registered tool's name ("(unknown)" for any other), `brand` and `role` come from config."""

    method: str  # "tools/call" or "tools/list"
    tool: str | None
    brand: str
    role: str
    transport: str
    start_ns: int
    end_ns: int
    steps: tuple[StepSpan, ...]
    outcome: str
    error_class: str = ""
    request_id: str | None = None
    incident_id: str | None = None
    approval_id: str | None = None


@runtime_checkable
class Tracer(Protocol):
    """Receives every tools/call and tools/list as a `CallTrace` (`[plugins] tracing = [...]`).

    `record` runs on the serving loop after the call: it must not block or wait for the network; hand the
    trace to a background exporter. An exception is logged and ignored: tracing never fails a call. A tracer
    may define `async def aclose()` (flush and stop its exporter)."""

    def record(self, trace: CallTrace) -> None: ...


@runtime_checkable
class AuditSink(Protocol):
    """Receives every audit record (a flat JSON-able mapping) in order. `write` must not drop a record
    silently: raise, and the kernel counts it (`qaqnuz_audit_errors_total`) and logs it loudly.

    A sink may also have `write_many(records)`: the records of one pass of the server's event loop, in order,
    written all or none (one write for several calls that finished together); without it, `write` is called
    for each."""

    def write(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Channel(Protocol):
    """The caller's connection as a running tool may use it (implemented by the MCP binding)."""

    async def log(self, level: str, message: Any, *, logger: str | None = None) -> None: ...

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None: ...

    async def sample(self, prompt: str, *, max_tokens: int, system_prompt: str | None) -> str: ...

    async def elicit(self, message: str, schema: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]: ...


ChangeListener = Callable[[], Awaitable[None]]


@runtime_checkable
class Host(Protocol):
    """What a transport may use of a running kernel, and nothing more.

    `authenticate` turns a credential into a principal (every request; a failure is counted and audited);
    `list_tools` and `call_tool` are the governed path; `readiness` says whether the store, the limiter and
    the tool catalogue answer; `on_change` registers a listener for tool-list changes (it returns the
    function that unregisters it); `web_routes` are the plugin routes config enabled, built for this server.
    `hold_audit` (called on the serving loop) lets the kernel hold the audit records made on that loop until
    the end of its pass, to write those of calls that finish together at once; a transport that calls it
    must call `settle_audit` before any bytes leave the process, so no answer is ever seen before its audit
    line. A transport that never calls `hold_audit` has every record written at once.
    """

    @property
    def server_name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def loopback_only(self) -> bool: ...

    @property
    def metrics_registry(self) -> Any: ...

    async def authenticate(self, credential: str | None, *, transport: str) -> Principal | None:
        """The principal, or None for a refused credential; raises `qaqnuz.CredentialsUnavailable` when the
        credential cannot be checked now (answer it as retryable: HTTP 503 with Retry-After)."""
        ...

    def list_tools(self, principal: Principal) -> ToolList: ...

    def hold_audit(self) -> None: ...

    def settle_audit(self) -> None: ...

    async def call_tool(
        self,
        principal: Principal,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        transport: str,
        channel: Channel | None = None,
    ) -> Outcome: ...

    async def readiness(self) -> dict[str, bool]: ...

    def on_change(self, listener: ChangeListener) -> Callable[[], None]: ...

    def web_routes(self) -> Sequence[MountedRoute]: ...


@attrs.frozen
class MountedRoute:
    """A web route built for one server: where it is mounted, its ASGI app, and whether the transport
    authenticates an MCP key for it."""

    name: str
    path: str
    app: Any
    mcp_key: bool = False


@runtime_checkable
class Transport(Protocol):
    """Serves a running kernel, through its `Host`, until stopped (EOF, a signal, or `stop()`).

    The kernel runs its background work (tool sync, config reload, flushes) around `serve`.
    A network transport refuses non-loopback binds while `host.loopback_only` is true.
    """

    async def serve(self, host: Host) -> None: ...


__all__ = [
    "CALLER_NAMES",
    "Admission",
    "ApprovalCall",
    "ApprovalRequest",
    "ApprovalStatus",
    "Approver",
    "AuditSink",
    "AuthProvider",
    "CallRequest",
    "CallTrace",
    "Caller",
    "Channel",
    "Command",
    "Decision",
    "Host",
    "Limit",
    "MountedRoute",
    "NoSettings",
    "Policy",
    "Principal",
    "Provider",
    "ProviderKind",
    "RateLimiter",
    "SideEffect",
    "Stability",
    "StepSpan",
    "Tool",
    "ToolHandler",
    "ToolList",
    "ToolProvider",
    "ToolResult",
    "ToolSettings",
    "Tracer",
    "Transport",
    "WebRoute",
]
