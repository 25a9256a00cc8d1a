"""The `otel` tracer end to end: a real server traced to a real OTLP/HTTP receiver, called by the `mcp` SDK's
client over Streamable HTTP. What the receiver got is what a collector would get."""

from __future__ import annotations

import itertools
import logging
import socket
import time

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from otelkit import BOOM_PUBLIC, server_config

import qaqnuz_otel
from qaqnuz import ConfigError, SecretResolver

pytestmark = pytest.mark.anyio

SERVER, INTERNAL = 2, 1  # Span.SpanKind
UNSET, ERROR = 0, 2  # Status.StatusCode
GOVERNED = ["entitlement", "rate_limit", "visibility", "validation", "policy", "execution"]
TOKEN_ENV = "QAQNUZ_OTEL_TEST_TOKEN"
TOKEN = "Bearer CANARY-collector-token-51c9a"
TENANT = "CANARY-plain-header-value-0b7e"
ARGUMENT = "CANARY-argument-value-93f4d"
ARGUMENT_NAME = "CANARY_argument_name_2aa7"
ASKED_TOOL = "CANARY-tool-the-client-named-6e21"


def _client(server, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
    return Client(streamable_http_client(server.mcp, http_client=http))


def _children(spans: list[dict], parent: dict) -> list[dict]:
    return sorted((s for s in spans if s["parent"] == parent["span_id"]), key=lambda s: s["start"])


def _only(spans: list[dict], name: str, outcome: str | None = None) -> dict:
    found = [s for s in spans if s["name"] == name and outcome in (None, s["attributes"]["qaqnuz.outcome"])]
    assert len(found) == 1, (name, outcome, [s["name"] for s in spans])
    return found[0]


async def test_each_request_is_a_server_span_with_a_child_per_governance_step(otel_server, receiver, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    otel = f'headers = {{ authorization = {{ env = "{TOKEN_ENV}" }}, "x-tenant" = "{TENANT}" }}\ntimeout = "5s"'
    server = otel_server(server_config(receiver.endpoint, otel))
    key, key_id = server.mint()
    async with _client(server, key) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == {"echo", "boom"}
        result = await client.call_tool("echo", {"message": ARGUMENT})
        assert result.is_error is False
        assert result.structured_content["data"] == {"message": ARGUMENT}
        unknown = await client.call_tool(ASKED_TOOL, {"message": ARGUMENT})
        assert unknown.is_error is True
        invalid = await client.call_tool("echo", {"message": ARGUMENT, ARGUMENT_NAME: ARGUMENT})
        assert invalid.is_error is True
        failed = await client.call_tool("boom", {"message": ARGUMENT})
        assert failed.is_error is True and BOOM_PUBLIC in failed.content[0].text
    server.stop()  # closing the tracer flushes what is queued: everything has arrived once it returns

    assert receiver.exports, "no export reached the receiver"
    for export in receiver.exports:  # the configured headers, the secret one resolved from its reference
        assert export.headers["authorization"] == TOKEN
        assert export.headers["x-tenant"] == TENANT
    spans = receiver.spans()
    assert {s["resource"]["service.name"] for s in spans} == {"shop-mcp"}
    assert all(s["resource"]["service.version"] for s in spans)
    assert {s["scope"] for s in spans} == {"qaqnuz_otel"}

    # the executed call: the MCP server span ...
    call = _only(spans, "tools/call echo", "executed")
    assert call["kind"] == SERVER and call["parent"] == "" and call["status"] == UNSET
    attributes = call["attributes"]
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "echo"
    assert attributes["network.transport"] == "tcp" and attributes["network.protocol.name"] == "http"
    assert attributes["qaqnuz.brand"] == "acme" and attributes["qaqnuz.role"] == "viewer"
    assert attributes["qaqnuz.outcome"] == "executed"
    assert attributes["qaqnuz.request_id"].startswith("req_")
    assert "error.type" not in attributes and "qaqnuz.error_class" not in attributes
    # ... and its governance steps, in order, back to back, inside it
    steps = _children(spans, call)
    assert [s["attributes"]["qaqnuz.step"] for s in steps] == GOVERNED
    assert [s["name"] for s in steps] == [f"qaqnuz {step}" for step in GOVERNED[:-1]] + ["execute_tool echo"]
    assert all(s["kind"] == INTERNAL and s["trace_id"] == call["trace_id"] for s in steps)
    assert steps[-1]["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert steps[-1]["attributes"]["gen_ai.tool.name"] == "echo"
    assert call["start"] <= steps[0]["start"]
    for before, after in itertools.pairwise(steps):
        assert before["start"] <= before["end"] == after["start"]
    assert steps[-1]["end"] == call["end"] and call["start"] < call["end"]
    assert abs(call["start"] - time.time_ns()) < 120 * 10**9  # wall clock, not a monotonic counter

    # tools/list
    lists = [s for s in spans if s["name"] == "tools/list"]
    assert lists and all(s["kind"] == SERVER and s["attributes"]["qaqnuz.outcome"] == "listed" for s in lists)
    assert all("gen_ai.tool.name" not in s["attributes"] for s in lists)
    assert [c["name"] for c in _children(spans, lists[0])] == ["qaqnuz visibility"]

    # a tool the key cannot see: a denial, stopped at visibility; the name asked for is never copied
    hidden = _only(spans, "tools/call")
    assert hidden["attributes"]["error.type"] == "permission"
    assert hidden["attributes"]["qaqnuz.outcome"] == "denied"
    assert "gen_ai.tool.name" not in hidden["attributes"]
    assert hidden["status"] == UNSET  # a denial is the governance working, not a server fault
    hidden_steps = _children(spans, hidden)
    assert [s["attributes"]["qaqnuz.step"] for s in hidden_steps] == ["entitlement", "rate_limit", "visibility"]
    assert hidden_steps[-1]["attributes"]["error.type"] == "permission"
    assert all("error.type" not in s["attributes"] for s in hidden_steps[:-1])

    # invalid arguments: a denial at validation
    invalid_call = _only(spans, "tools/call echo", "denied")
    assert invalid_call["attributes"]["error.type"] == "validation" and invalid_call["status"] == UNSET
    assert [s["attributes"]["qaqnuz.step"] for s in _children(spans, invalid_call)] == GOVERNED[:4]

    # the failing tool: ERROR on the request and on the tool's span, nothing of what it said
    boom = _only(spans, "tools/call boom")
    assert boom["status"] == ERROR and boom["status_message"] == "dependency"
    assert boom["attributes"]["error.type"] == "dependency"
    assert boom["attributes"]["qaqnuz.outcome"] == "failed"
    assert boom["attributes"]["qaqnuz.incident_id"]
    boom_steps = _children(spans, boom)
    assert boom_steps[-1]["name"] == "execute_tool boom" and boom_steps[-1]["status"] == ERROR
    assert all(s["status"] == UNSET for s in boom_steps[:-1])

    # nothing the client sent, no key and no header value, anywhere in what left the server
    for export in receiver.exports:
        for canary in (ARGUMENT, ARGUMENT_NAME, ASKED_TOOL, key, key_id, TOKEN, TENANT, BOOM_PUBLIC):
            assert canary.encode() not in export.body, canary


async def test_sample_ratio_zero_sends_no_span_and_calls_still_work(otel_server, receiver):
    server = otel_server(server_config(receiver.endpoint, "sample_ratio = 0.0"))
    key, _ = server.mint()
    async with _client(server, key) as client:
        assert (await client.call_tool("echo", {"message": "hi"})).is_error is False
    server.stop()
    assert receiver.spans() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_collector_never_fails_a_call_nor_shows_a_header_in_the_logs(
    otel_server, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    endpoint = f"http://127.0.0.1:{_closed_port()}/v1/traces"
    otel = f'headers = {{ authorization = {{ env = "{TOKEN_ENV}" }}, "x-tenant" = "{TENANT}" }}\ntimeout = "1s"'
    server = otel_server(server_config(endpoint, otel))
    key, _ = server.mint()
    async with _client(server, key) as client:
        for _ in range(20):
            result = await client.call_tool("echo", {"message": "still served"})
            assert result.is_error is False
            assert result.structured_content["data"] == {"message": "still served"}
        assert {t.name for t in (await client.list_tools()).tools} == {"echo", "boom"}
    server.stop()  # the final export fails within `timeout`; stopping does not hang on the dead collector
    assert server.thread is not None and not server.thread.is_alive()
    exporter_lines = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert exporter_lines, "the failed export was not even attempted"
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TOKEN, TOKEN.split()[-1], TENANT, key):
        assert secret not in text


# -- settings: every problem at once, located, never repeating a value -----------------------------------
def _build(tmp_path, **settings):
    from qaqnuz import TracerContext

    (provider,) = qaqnuz_otel.qaqnuz_tracers()
    ctx = TracerContext(
        section="plugins.otel", logger=logging.getLogger("test"), clock=time.time, base_dir=str(tmp_path),
        server_name="shop-mcp", version="0.1.0", secrets=SecretResolver(str(tmp_path), lambda value: None),
    )  # fmt: skip
    import msgspec

    return provider.factory(msgspec.convert(settings, provider.settings_type), ctx)


def test_settings_problems_are_reported_together_without_values(tmp_path, monkeypatch):
    monkeypatch.delenv("QAQNUZ_OTEL_MISSING", raising=False)
    with pytest.raises(ConfigError) as caught:
        _build(
            tmp_path,
            endpoint="https://user:CANARY-pw-1@collector.example/v1/traces",
            headers={
                "Authorization": "Bearer CANARY-inline-token",
                "x-api-key": {"env": "QAQNUZ_OTEL_MISSING"},
                "bad header": "x",
                "x-extra": {"value": "CANARY-not-a-reference"},
            },
            timeout="0s",
            sample_ratio=1.5,
            service_name=" ",
        )
    problems = caught.value.problems
    text = "\n".join(problems)
    assert "CANARY" not in text
    assert any(p.startswith("[plugins.otel] endpoint: must not carry a user or password") for p in problems)
    assert any(p.startswith("[plugins.otel] headers.Authorization: carries a credential") for p in problems)
    assert any(p.startswith("[plugins.otel] headers.x-api-key:") and "QAQNUZ_OTEL_MISSING" in p for p in problems)
    assert any(p.startswith("[plugins.otel] headers: a header name") for p in problems)
    assert any(p.startswith("[plugins.otel] headers.x-extra: a secret reference is") for p in problems)
    assert any(p.startswith("[plugins.otel] timeout:") for p in problems)
    assert any(p.startswith("[plugins.otel] sample_ratio:") for p in problems)
    assert any(p.startswith("[plugins.otel] service_name:") for p in problems)


@pytest.mark.parametrize(
    "endpoint",
    ["ftp://collector/v1/traces", "http:///v1/traces", "http://collector/v1/traces?token=CANARY", "http://c:99999/"],
)
def test_an_endpoint_that_is_not_an_otlp_http_url_is_refused(tmp_path, endpoint):
    with pytest.raises(ConfigError) as caught:
        _build(tmp_path, endpoint=endpoint)
    assert caught.value.problems[0].startswith("[plugins.otel] endpoint:")
    assert "CANARY" not in str(caught.value)


def test_unknown_settings_are_refused():
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"endpoint": "http://c/v1/traces", "protocol": "grpc"}, qaqnuz_otel.OtelSettings)


async def test_a_secret_file_header_resolves_and_the_tracer_repr_shows_nothing(tmp_path):
    (tmp_path / "token").write_text("Bearer CANARY-from-a-file\n")
    tracer = _build(tmp_path, headers={"authorization": {"file": "token"}}, endpoint="http://127.0.0.1:9/v1/traces")
    try:
        assert "CANARY" not in repr(tracer)
    finally:
        await tracer.aclose()
    await tracer.aclose()  # closing twice is harmless


async def test_stdio_cancelled_and_unknown_calls_and_an_ambient_parent(tmp_path, receiver):
    """Traces handed to the tracer directly: what the other transports and outcomes become, and a request
    served inside another instrumentation's span joins its trace."""
    from opentelemetry.sdk.trace import TracerProvider

    from qaqnuz import CallTrace, StepSpan

    tracer = _build(tmp_path, endpoint=receiver.endpoint)
    now = time.time_ns()
    steps = (StepSpan("entitlement", now, now + 10), StepSpan("rate_limit", now + 10, now + 30))
    tracer.record(CallTrace("tools/call", "echo", "acme", "viewer", "stdio", now, now + 30, steps, "cancelled"))
    tracer.record(CallTrace("tools/call", "(unknown)", "acme", "viewer", "memory", now, now + 30, steps, "denied",
                            "permission"))  # fmt: skip
    outer = TracerProvider(shutdown_on_exit=False).get_tracer("someone-else")
    with outer.start_as_current_span("GET /mcp") as ambient:
        tracer.record(CallTrace("tools/list", None, "acme", "viewer", "http", now, now + 30, steps[:1], "listed"))
    await tracer.aclose()

    spans = receiver.spans()
    requests = [s for s in spans if s["kind"] == SERVER]
    assert len(requests) == 3
    cancelled = next(s for s in requests if s["attributes"]["qaqnuz.outcome"] == "cancelled")
    assert cancelled["name"] == "tools/call echo" and cancelled["attributes"]["network.transport"] == "pipe"
    assert "network.protocol.name" not in cancelled["attributes"]
    assert cancelled["attributes"]["error.type"] == "cancelled" and cancelled["status"] == UNSET
    assert _children(spans, cancelled)[-1]["attributes"]["error.type"] == "cancelled"
    denied = next(s for s in requests if s["attributes"]["qaqnuz.outcome"] == "denied")
    assert denied["name"] == "tools/call" and "gen_ai.tool.name" not in denied["attributes"]
    assert "network.transport" not in denied["attributes"]  # in-process: no network at all
    assert denied["attributes"]["qaqnuz.transport"] == "memory"
    listed = _only(spans, "tools/list")
    assert listed["trace_id"] == f"{ambient.get_span_context().trace_id:032x}"
    assert listed["parent"] == f"{ambient.get_span_context().span_id:016x}"
    assert {s["resource"]["service.name"] for s in spans} == {"shop-mcp"}
    tracer.record(CallTrace("tools/list", None, "acme", "viewer", "http", now, now + 30, steps[:1], "listed"))
