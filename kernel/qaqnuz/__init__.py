"""qaqnuz: a governed MCP server built as a pluggy microkernel.

This module is the public face plugins import: the hook marker, the records and provider protocols, the
per-kind factory contexts, the store contract, and the errors a tool raises to choose its error class.
Anything not exported here is internal. Importing it loads no MCP SDK module: the heavy pieces (`Kernel`,
`Binding`, `run_cli`) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qaqnuz.callcontext import CallContext, current_call
from qaqnuz.calllog import CallPage, CallQuery
from qaqnuz.config import parse_duration, parse_positive_duration
from qaqnuz.connect import MODERN_PROTOCOL, client_json, client_settings, curl_line, mcp_remote_command
from qaqnuz.contexts import (
    ApproverContext,
    AuditSinkContext,
    AuthContext,
    Context,
    LimiterContext,
    PolicyContext,
    SecretResolver,
    ServerView,
    StoreContext,
    ToolPackContext,
    TracerContext,
    TransportContext,
    WebRouteContext,
)
from qaqnuz.envelope import LIMITER_UNAVAILABLE, Outcome
from qaqnuz.errors import (
    ConfigError,
    CredentialsUnavailable,
    DependencyError,
    LimiterUnavailable,
    PendingCapReached,
    PluginError,
    StoreError,
    TerminalError,
    ToolError,
    UsageError,
)
from qaqnuz.hookspecs import hookimpl
from qaqnuz.keys import looks_like_key
from qaqnuz.listening import listen_socket
from qaqnuz.packkit import InputParam, ToolConfig, input_schema, tool_from_config, unique_names
from qaqnuz.records import (
    CALLER_NAMES,
    Admission,
    ApprovalCall,
    ApprovalRequest,
    ApprovalStatus,
    Approver,
    AuditSink,
    AuthProvider,
    Caller,
    CallRequest,
    CallTrace,
    Channel,
    Command,
    Decision,
    Host,
    Limit,
    MountedRoute,
    NoSettings,
    Policy,
    Principal,
    Provider,
    ProviderKind,
    RateLimiter,
    SideEffect,
    Stability,
    StepSpan,
    Tool,
    ToolList,
    ToolProvider,
    ToolResult,
    ToolSettings,
    Tracer,
    Transport,
    WebRoute,
)
from qaqnuz.rpcfaults import error_body as rpc_error_body
from qaqnuz.rpcfaults import fault as rpc_fault
from qaqnuz.rpcfaults import usable_id as rpc_usable_id
from qaqnuz.secrets import Secret, SecretRef
from qaqnuz.services import USER_NAME_RE, approval_view
from qaqnuz.store import (
    APPROVAL_COLUMNS,
    CONSOLE_ROLES,
    CONSOLE_USER_COLUMNS,
    KEY_COLUMNS,
    ApprovalNotFound,
    ApprovalNotPending,
    AuditAnchor,
    ConsoleUser,
    KeyCapReached,
    KeyNotActive,
    KeyRecord,
    Store,
    approval_from_row,
    console_user_from_row,
    decided_request,
    key_from_row,
    key_from_rows,
    opened_request,
)

if TYPE_CHECKING:
    from qaqnuz.command_context import CommandContext
    from qaqnuz.fastwire import FastAnswers, FastRequest
    from qaqnuz.kernel import Kernel
    from qaqnuz.server import Binding
    from qaqnuz.version import __version__


def __getattr__(name: str) -> Any:
    """Heavier pieces load on first use, so importing the records never imports the MCP server."""
    if name == "Kernel":
        from qaqnuz.kernel import Kernel

        return Kernel
    if name == "Binding":
        from qaqnuz.server import Binding

        return Binding
    if name in ("FastAnswers", "FastRequest"):
        from qaqnuz import fastwire

        return getattr(fastwire, name)
    if name == "__version__":  # read from the installed metadata on first use, not at every import
        from qaqnuz.version import __version__

        return __version__
    if name == "CommandContext":
        from qaqnuz.command_context import CommandContext

        return CommandContext
    if name == "run_cli":
        from qaqnuz.cli import main

        return main
    raise AttributeError(f"module 'qaqnuz' has no attribute {name!r}")


__all__ = [
    "APPROVAL_COLUMNS",
    "CALLER_NAMES",
    "CONSOLE_ROLES",
    "CONSOLE_USER_COLUMNS",
    "KEY_COLUMNS",
    "LIMITER_UNAVAILABLE",
    "MODERN_PROTOCOL",
    "USER_NAME_RE",
    "Admission",
    "ApprovalCall",
    "ApprovalNotFound",
    "ApprovalNotPending",
    "ApprovalRequest",
    "ApprovalStatus",
    "Approver",
    "ApproverContext",
    "AuditAnchor",
    "AuditSink",
    "AuditSinkContext",
    "AuthContext",
    "AuthProvider",
    "Binding",
    "CallContext",
    "CallPage",
    "CallQuery",
    "CallRequest",
    "CallTrace",
    "Caller",
    "Channel",
    "Command",
    "CommandContext",
    "ConfigError",
    "ConsoleUser",
    "Context",
    "CredentialsUnavailable",
    "Decision",
    "DependencyError",
    "FastAnswers",
    "FastRequest",
    "Host",
    "InputParam",
    "Kernel",
    "KeyCapReached",
    "KeyNotActive",
    "KeyRecord",
    "Limit",
    "LimiterContext",
    "LimiterUnavailable",
    "MountedRoute",
    "NoSettings",
    "Outcome",
    "PendingCapReached",
    "PluginError",
    "Policy",
    "PolicyContext",
    "Principal",
    "Provider",
    "ProviderKind",
    "RateLimiter",
    "Secret",
    "SecretRef",
    "SecretResolver",
    "ServerView",
    "SideEffect",
    "Stability",
    "StepSpan",
    "Store",
    "StoreContext",
    "StoreError",
    "TerminalError",
    "Tool",
    "ToolConfig",
    "ToolError",
    "ToolList",
    "ToolPackContext",
    "ToolProvider",
    "ToolResult",
    "ToolSettings",
    "Tracer",
    "TracerContext",
    "Transport",
    "TransportContext",
    "UsageError",
    "WebRoute",
    "WebRouteContext",
    "__version__",
    "approval_from_row",
    "approval_view",
    "client_json",
    "client_settings",
    "console_user_from_row",
    "curl_line",
    "current_call",
    "decided_request",
    "hookimpl",
    "input_schema",
    "key_from_row",
    "key_from_rows",
    "listen_socket",
    "looks_like_key",
    "mcp_remote_command",
    "opened_request",
    "parse_duration",
    "parse_positive_duration",
    "rpc_error_body",
    "rpc_fault",
    "rpc_usable_id",
    "run_cli",
    "tool_from_config",
    "unique_names",
]
