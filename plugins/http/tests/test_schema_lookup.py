"""The SDK checks `Mcp-Param-*` headers of a 2026-07-28 tools/call against the tool's input schema. qaqnuz
answers that lookup in O(1) from the caller's own visible tools: a visible tool's headers are checked, and a
hidden tool's schema is never served, so a hidden tool answers exactly like an unknown one."""

from __future__ import annotations

import json

import httpx

from kit import kit_config

ROUTED = kit_config().replace(
    "tools.echo = { exposable = true }", "tools.echo = { exposable = true }\ntools.routed = { exposable = true }", 1
)


def modern_call(name: str, arguments: dict, region_header: str | None) -> tuple[dict, dict]:
    headers = {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    if region_header is not None:
        headers["Mcp-Param-Region"] = region_header
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments,
                                                                          "_meta": meta}}  # fmt: skip
    return headers, body


def post(server, key: str, name: str, arguments: dict, region_header: str | None) -> tuple[int, dict]:
    headers, body = modern_call(name, arguments, region_header)
    headers["Authorization"] = f"Bearer {key}"
    response = httpx.post(server.url, headers=headers, content=json.dumps(body), timeout=10)
    return response.status_code, response.json()


def test_a_visible_tools_headers_are_checked_and_a_hidden_tool_answers_like_an_unknown_one(http_server):
    server = http_server(ROUTED)
    acme = server.mint("acme")
    globex = server.mint("globex", brand="globex")  # globex never made `routed` exposable: hidden
    ok = post(server, acme, "routed", {"region": "eu"}, "eu")
    assert ok[0] == 200 and ok[1]["result"]["isError"] is False
    mismatch = post(server, acme, "routed", {"region": "eu"}, "us")
    assert mismatch[0] == 400  # the lookup served the schema, so the SDK checked the header
    hidden = post(server, globex, "routed", {"region": "eu"}, "us")
    unknown = post(server, globex, "no_such_tool", {"region": "eu"}, "us")
    assert hidden[0] == unknown[0] == 200
    assert hidden[1]["result"] == unknown[1]["result"]
    assert hidden[1]["result"]["structuredContent"]["error_class"] == "permission"


def test_the_lookup_serves_only_what_the_principal_sees(http_server):
    import anyio

    from qaqnuz import Binding

    server = http_server(ROUTED)
    kernel = server.kernel
    binding = Binding(kernel.host, lambda ctx: None, transport="test")
    try:
        acme = anyio.run(kernel.authenticate, server.mint("a"))
        globex = anyio.run(kernel.authenticate, server.mint("g", brand="globex"))
        assert binding._input_schema("routed") is None  # no principal in this context: nothing
        with binding.acting_for(acme):
            assert binding._input_schema("routed")["properties"]["region"]["x-mcp-header"] == "Region"
            for hidden in ("hidden_tool", "secret_dump", "write_tool", "disabled_tool", "nope"):
                assert binding._input_schema(hidden) is None, hidden
        with binding.acting_for(globex):
            assert binding._input_schema("routed") is None
    finally:
        binding.close()
