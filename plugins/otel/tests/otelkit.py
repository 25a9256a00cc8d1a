"""What the otel tests run against: an OTLP/HTTP receiver, a small pack of tools and the server's config."""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from qaqnuz import DependencyError, Provider, SideEffect, Tool, hookimpl
from qaqnuz.testing import ThreadServer

SCHEMA = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
    "additionalProperties": False,
}
#: What the failing tool tells its caller: it must reach the client, never a span.
BOOM_PUBLIC = "CANARY-public-text-the-tool-shows-8d1e"


async def _echo(arguments: Any) -> Any:
    return {"message": arguments["message"]}


async def _boom(arguments: Any) -> Any:
    raise DependencyError("upstream down", public=BOOM_PUBLIC)


class _Tools:
    async def list_tools(self) -> list[Tool]:
        return [
            Tool("echo", "Echo a message.", SCHEMA, "orders.read", SideEffect.READ, _echo),
            Tool("boom", "Always fails upstream.", SCHEMA, "orders.read", SideEffect.READ, _boom),
        ]


class OtelTestPack:
    """The tools the tests call, as an in-process plugin."""

    @hookimpl
    def qaqnuz_tool_providers(self) -> list[Provider]:
        return [Provider("otel_test", lambda settings, ctx: _Tools(), "Tools for the otel tests.")]


def server_config(endpoint: str, otel: str = "") -> str:
    return f"""\
[server]
name = "shop-mcp"
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"

[plugins]
tracing = ["otel"]

[plugins.otel]
endpoint = "{endpoint}"
{otel}

[brands.acme]
plan = "growth"
roles = {{ viewer = ["orders.read"] }}
tools.echo = {{ exposable = true }}
tools.boom = {{ exposable = true }}

[packs.kit]
type = "otel_test"
"""


@dataclass
class Export:
    path: str
    headers: dict[str, str]
    body: bytes
    request: ExportTraceServiceRequest


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: what a collector's `otlp` receiver does with POST /v1/traces."""

    server: ThreadingHTTPServer
    exports: list[Export] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, flat, with its resource's attributes beside it."""
        out = []
        with self.lock:
            exports = list(self.exports)
        for export in exports:
            for resource_spans in export.request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "attributes": _attributes(span.attributes),
                                "status": span.status.code,
                                "status_message": span.status.message,
                                "resource": resource,
                                "scope": scope_spans.scope.name,
                            }
                        )
        return out


def _attributes(pairs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


def handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            raw = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(encoding, bytes)(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(raw)
            with receiver.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.exports.append(Export(self.path, headers, raw, request))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    return Handler


class Server(ThreadServer):
    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def mint(self, name: str = "agent") -> tuple[str, str]:
        """(raw key, key id) of a fresh viewer key of acme."""
        raw, record = self.run(self.kernel.keys.mint(brand="acme", scopes=["orders.read"], name=name, role="viewer"))
        return str(raw), str(record.key_id)
