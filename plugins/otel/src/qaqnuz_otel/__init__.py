"""The `otel` tracer: each MCP request qaqnuz governs, as OpenTelemetry spans exported over OTLP/HTTP.

This module only registers the provider and validates its settings: the command line loads every plugin on
each start, so it imports no OpenTelemetry. `qaqnuz_otel.tracer` turns a `CallTrace` into spans; see
README.md for the span shapes and why they are what they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qaqnuz import ConfigError, Provider, TracerContext, hookimpl
from qaqnuz_otel.settings import OtelSettings, check

if TYPE_CHECKING:
    from qaqnuz_otel.tracer import OtelTracer

__all__ = ["OtelSettings", "qaqnuz_tracers"]


def _factory(settings: OtelSettings, ctx: TracerContext) -> OtelTracer:
    """Validates everything and resolves the header secrets now (a config error stops the load); sends
    nothing until the first trace is exported, from the exporter's own thread."""
    options, problems = check(settings, ctx.where, ctx.secret)
    if problems or options is None:
        raise ConfigError(problems)
    from qaqnuz_otel.tracer import OtelTracer

    return OtelTracer(options, server_name=ctx.server_name, version=ctx.version, logger=ctx.logger)


@hookimpl
def qaqnuz_tracers() -> list[Provider]:
    return [
        Provider(
            "otel",
            _factory,
            "OpenTelemetry traces over OTLP/HTTP: a span per MCP request, a child per governance step.",
            OtelSettings,
        )
    ]
