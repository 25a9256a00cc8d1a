"""Frozen records and provider protocols: the vocabulary shared by the kernel and every plugin.

Registration hooks return `Provider` records, never live objects, so discovery does no I/O and the
kernel decides what to instantiate from config. The request path talks to providers only through the
small Protocols below, which keeps the governed order explicit in `pipeline.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import msgspec


class ProviderKind(enum.StrEnum):
    """The provider kinds the kernel knows; each has one registration hook."""

    AUTH = "auth"
    POLICY = "policy"
    APPROVER = "approver"
    LIMITER = "limiter"
    TRANSPORT = "transport"
    TOOLS = "tools"


class NoSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Settings struct for providers that take no settings: any key given is an error."""


@attrs.frozen
class Provider:
    """What a registration hook returns: a named factory plus the shape of its settings.

    `factory(settings, context)` is called only when config selects `name`; `settings` is an instance of
    `settings_type` decoded from `[plugins.<name>]` (or the pack table for tool providers).
    """

    name: str
    factory: Callable[[Any, ProviderContext], Any]
    description: str
    settings_type: type[msgspec.Struct] = NoSettings


@attrs.frozen
class ProviderContext:
    """What a factory may use: the kernel's validated config, store, clock and logger.

    `resolve(path)` makes a path from config absolute against the config file's folder.
    """

    config: Any
    store: Any
    clock: Callable[[], float]
    logger: Any
    server_secret: bytes = attrs.field(repr=False)
    redactor: Any = attrs.field(default=None, repr=False)
    #: The config section this instance is built for, e.g. "packs.shop" or "plugins.memory", so a
    #: factory can locate its own errors ("[packs.shop] tools[0] sql: ...").
    section: str = ""

    def resolve(self, path: str) -> str:
        return str(self.config.resolve(path))

    def secret(self, ref: Any, where: str) -> Any:
        """Resolve a `SecretRef` now; a missing secret is a ConfigError located at `where`.

        The value is masked in the kernel's log output from here on.
        """
        from qaqnuz.secrets import resolve

        secret = resolve(ref, where, self.config.base_dir)
        if self.redactor is not None:
            self.redactor.add(secret.reveal())
        return secret


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
    registry notices and announces.
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


@attrs.frozen
class Principal:
    """Who is calling: derived only from a verified credential, never from anything the client says."""

    key_id: str
    brand: str
    role: str
    scopes: frozenset[str]
    name: str = ""


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
class ApprovalRequest:
    """One exact call awaiting a human: bound to brand, key, tool and the arguments' hash."""

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

    `request` returns the live approval for the exact call (creating a pending one if there is none);
    `consume` atomically turns an approved, still valid approval into consumed and says whether it did;
    `close` marks a denied or expired approval as reported so the next identical call opens a new one.
    """

    async def request(
        self, brand: str, key_id: str, tool: str, args_hash: str, *, summary: Mapping[str, Any]
    ) -> ApprovalRequest: ...

    async def consume(self, approval_id: str) -> bool: ...

    async def close(self, approval_id: str) -> None: ...

    async def wait(self, approval_id: str, seconds: float) -> ApprovalRequest | None:
        """Hold for up to `seconds` for a decision; the approval as it then stands."""
        ...


@runtime_checkable
class ToolProvider(Protocol):
    """Yields tool definitions; the registry polls `list_tools` every sync period."""

    async def list_tools(self) -> Sequence[Tool]: ...


@runtime_checkable
class Transport(Protocol):
    """Serves a kernel until stopped (EOF, signal, or the kernel shutting down).

    A network transport refuses non-loopback binds while `kernel.loopback_only` is true.
    """

    async def serve(self, kernel: Any) -> None: ...


__all__ = [
    "Admission",
    "ApprovalRequest",
    "ApprovalStatus",
    "Approver",
    "AuthProvider",
    "CallRequest",
    "Decision",
    "Limit",
    "NoSettings",
    "Policy",
    "Principal",
    "Provider",
    "ProviderContext",
    "ProviderKind",
    "RateLimiter",
    "SideEffect",
    "Stability",
    "Tool",
    "ToolHandler",
    "ToolProvider",
    "ToolResult",
    "ToolSettings",
    "Transport",
]
