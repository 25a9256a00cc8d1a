"""A `CallTrace` as OpenTelemetry spans, after the fact, following the semantic conventions for MCP servers.

The kernel hands over a finished request with wall-clock times, so every span is started and ended with
explicit timestamps: nothing here is timed, and nothing waits. `record` only queues the trace: building
seven spans in the SDK costs hundreds of microseconds, which the call's answer would otherwise wait for, so
this tracer's own thread builds them and hands them to the SDK's `BatchSpanProcessor`, whose thread exports
them (a dead collector costs the serving loop nothing). Each tracer has a private `TracerProvider`: qaqnuz
never touches OpenTelemetry's global provider, so a config reload can replace this one, and an application
embedding qaqnuz keeps its own.

What goes into an attribute is decided here alone, from fields the kernel guarantees carry no argument, key
or client value (`CallTrace`); nothing the client sent is ever copied, not even the JSON-RPC request id.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping

import anyio.to_thread
from opentelemetry.context import Context, get_current
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from qaqnuz import CallTrace, StepSpan
from qaqnuz_otel.settings import Options

#: Outcomes that are the request's success.
SUCCESS = frozenset({"executed", "listed"})
#: Error classes that are the server's (or its dependency's) failure, so the span's status is ERROR. A denial
#: (permission, validation, a rate limit) is the system working: `error.type` says which, the status stays
#: UNSET, as an HTTP server leaves a 4xx.
FAILURES = frozenset({"terminal", "dependency", "internal"})
#: `network.transport` (and `network.protocol.name`) per qaqnuz transport, as the MCP conventions give them.
NETWORK = {"stdio": ("pipe", None), "http": ("tcp", "http")}
#: What the kernel names a tool that is not registered: a placeholder, never a tool's name.
UNKNOWN_TOOL = "(unknown)"
SCOPE = "qaqnuz_otel"
#: Traces waiting for the builder thread at most; past it the oldest make room (the loop never waits).
QUEUE = 4096

Attributes = dict[str, str]


class OtelTracer:
    """One private TracerProvider, its batch processor and OTLP/HTTP exporter, for one runtime's life."""

    def __init__(self, options: Options, *, server_name: str, version: str, logger: logging.Logger) -> None:
        self._log = logger
        resource = Resource.create({"service.name": options.service_name or server_name, "service.version": version})
        self._provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(options.sample_ratio)),
            # The kernel closes the tracer (`aclose`) when the server stops or the config reloads; an exit
            # hook would also keep every replaced provider alive and hold a dying process on a dead collector.
            shutdown_on_exit=False,
        )
        exporter = OTLPSpanExporter(
            endpoint=options.endpoint,
            headers={name: value.reveal() for name, value in options.headers.items()},
            timeout=options.timeout,
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer(SCOPE, version)
        self._closed = False
        self._pending: collections.deque[tuple[CallTrace, Context]] = collections.deque(maxlen=QUEUE)
        self._dropped = 0
        self._wake = threading.Event()
        self._builder = threading.Thread(target=self._build_loop, name="qaqnuz-otel-spans", daemon=True)
        self._builder.start()

    def __repr__(self) -> str:  # the exporter holds the header values: never show its innards
        return "OtelTracer()"

    def record(self, trace: CallTrace) -> None:
        """Queue the trace, with the serving task's OpenTelemetry context (a parent, if something else
        traces this request), for the builder thread; a few microseconds, and never a wait."""
        if self._closed:
            return
        if len(self._pending) == QUEUE:
            self._dropped += 1
        self._pending.append((trace, get_current()))
        self._wake.set()

    async def aclose(self) -> None:
        """Build what is queued, export it (within the timeout) and stop both threads, off the serving loop."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        await anyio.to_thread.run_sync(self._shutdown)

    def _shutdown(self) -> None:
        self._builder.join()
        self._provider.shutdown()

    def _build_loop(self) -> None:
        reported = 0
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._pending:
                trace, context = self._pending.popleft()
                try:
                    self._spans(trace, context)
                except Exception as exc:  # a trace that cannot be built is lost, never the thread
                    self._log.warning("a trace could not be recorded (%s)", type(exc).__name__)
            if self._dropped > reported:
                self._log.warning("%d traces dropped: more arrived than spans could be built", self._dropped - reported)
                reported = self._dropped
            if self._closed and not self._pending:
                return

    def _spans(self, trace: CallTrace, context: Context) -> None:
        """The request span and one child per step, ended at their own times and queued for export."""
        tool = trace.tool if trace.tool and trace.tool != UNKNOWN_TOOL else None
        failed = trace.error_class in FAILURES
        error_type = "" if trace.outcome in SUCCESS else (trace.error_class or trace.outcome)
        request = self._tracer.start_span(
            f"{trace.method} {tool}" if tool else trace.method,
            context=context,
            kind=SpanKind.SERVER,
            attributes=request_attributes(trace, tool, error_type),
            start_time=trace.start_ns,
        )
        if request.is_recording():  # not sampled: no child would be either
            parent = set_span_in_context(request)
            last = len(trace.steps) - 1
            for index, step in enumerate(trace.steps):
                decided = index == last and bool(error_type)  # the step that stopped (or failed) the request
                name, step_attributes = step_span(step, tool)
                if decided:
                    step_attributes["error.type"] = error_type
                    step_attributes["qaqnuz.outcome"] = trace.outcome
                child = self._tracer.start_span(
                    name, context=parent, kind=SpanKind.INTERNAL, attributes=step_attributes, start_time=step.start_ns
                )
                if decided and failed:
                    child.set_status(Status(StatusCode.ERROR, error_type))
                child.end(end_time=step.end_ns)
            if failed:
                request.set_status(Status(StatusCode.ERROR, error_type))
        request.end(end_time=trace.end_ns)


def request_attributes(trace: CallTrace, tool: str | None, error_type: str) -> Attributes:
    """The MCP server span's attributes: the conventions' where they have one, `qaqnuz.*` for the rest."""
    attributes: Attributes = {"mcp.method.name": trace.method}
    if trace.method == "tools/call":
        attributes["gen_ai.operation.name"] = "execute_tool"
        if tool is not None:
            attributes["gen_ai.tool.name"] = tool
    transport, protocol = NETWORK.get(trace.transport, (None, None))
    if transport is not None:
        attributes["network.transport"] = transport
    if protocol is not None:
        attributes["network.protocol.name"] = protocol
    if error_type:
        attributes["error.type"] = error_type
    optional: Mapping[str, str | None] = {
        "qaqnuz.transport": trace.transport or None,
        "qaqnuz.brand": trace.brand,
        "qaqnuz.role": trace.role,
        "qaqnuz.outcome": trace.outcome,
        "qaqnuz.error_class": trace.error_class or None,
        "qaqnuz.request_id": trace.request_id,
        "qaqnuz.incident_id": trace.incident_id,
        "qaqnuz.approval_id": trace.approval_id,
    }
    attributes.update({key: value for key, value in optional.items() if value})
    return attributes


def step_span(step: StepSpan, tool: str | None) -> tuple[str, Attributes]:
    """A governance step's span name and attributes. The execution step is the tool's own run: the GenAI
    conventions' `execute_tool {gen_ai.tool.name}` span, so tool latency reads the same as any agent's."""
    attributes: Attributes = {"qaqnuz.step": step.name}
    if step.name == "execution" and tool is not None:
        attributes["gen_ai.operation.name"] = "execute_tool"
        attributes["gen_ai.tool.name"] = tool
        return f"execute_tool {tool}", attributes
    return f"qaqnuz {step.name}", attributes
