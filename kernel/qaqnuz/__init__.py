"""qaqnuz: a governed MCP server built as a pluggy microkernel.

This module is the public face plugins import: the hook marker, the records and provider protocols,
and the errors a tool raises to choose its error class. Anything not exported here is internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from qaqnuz.callcontext import CallContext, current_call
from qaqnuz.config import parse_duration, parse_positive_duration
from qaqnuz.errors import ConfigError, DependencyError, PluginError, TerminalError, ToolError, UsageError
from qaqnuz.hookspecs import hookimpl
from qaqnuz.packkit import InputParam, ToolConfig, input_schema, tool_from_config, unique_names
from qaqnuz.records import (
    Admission,
    ApprovalRequest,
    ApprovalStatus,
    Approver,
    AuthProvider,
    CallRequest,
    Decision,
    Limit,
    NoSettings,
    Policy,
    Principal,
    Provider,
    ProviderContext,
    ProviderKind,
    RateLimiter,
    SideEffect,
    Stability,
    Tool,
    ToolProvider,
    ToolResult,
    ToolSettings,
    Transport,
)
from qaqnuz.secrets import Secret, SecretRef

try:
    __version__ = version("qaqnuz")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"


def __getattr__(name: str) -> object:
    """Heavier pieces load on first use, so importing the records never imports the MCP server."""
    if name == "Kernel":
        from qaqnuz.kernel import Kernel

        return Kernel
    if name == "Binding":
        from qaqnuz.server import Binding

        return Binding
    if name == "run_cli":
        from qaqnuz.cli import main

        return main
    raise AttributeError(f"module 'qaqnuz' has no attribute {name!r}")


__all__ = [
    "Admission",
    "ApprovalRequest",
    "ApprovalStatus",
    "Approver",
    "AuthProvider",
    "Binding",
    "CallContext",
    "CallRequest",
    "ConfigError",
    "Decision",
    "DependencyError",
    "InputParam",
    "Kernel",
    "Limit",
    "NoSettings",
    "PluginError",
    "Policy",
    "Principal",
    "Provider",
    "ProviderContext",
    "ProviderKind",
    "RateLimiter",
    "Secret",
    "SecretRef",
    "SideEffect",
    "Stability",
    "TerminalError",
    "Tool",
    "ToolConfig",
    "ToolError",
    "ToolProvider",
    "ToolResult",
    "ToolSettings",
    "Transport",
    "UsageError",
    "__version__",
    "current_call",
    "hookimpl",
    "input_schema",
    "parse_duration",
    "parse_positive_duration",
    "run_cli",
    "tool_from_config",
    "unique_names",
]
