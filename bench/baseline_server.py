"""BASELINE for bench/run.py: a bare `mcp` low-level Server with one `echo` tool and no governance.

Imports nothing from qaqnuz. `run.py` uses `server` in-process, and runs this file as a stdio
subprocess (`python baseline_server.py`) for the stdio scenarios.

The tool does what an ungoverned server minimally must: check `text` is a string (the low-level
Server does not validate arguments), return the data as JSON text plus structured content.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp.types as mt
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

#: Must stay equal to `bench_pack.ECHO_INPUT_SCHEMA`; `run.py` checks it before measuring.
ECHO_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 1000}},
    "required": ["text"],
    "additionalProperties": False,
}

ECHO_TOOL = mt.Tool(
    name="echo",
    description="Echo the given text back.",
    input_schema=ECHO_INPUT_SCHEMA,
    annotations=mt.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
)


async def list_tools(ctx: ServerRequestContext[Any], params: mt.PaginatedRequestParams | None) -> mt.ListToolsResult:
    return mt.ListToolsResult(tools=[ECHO_TOOL])


async def call_tool(ctx: ServerRequestContext[Any], params: mt.CallToolRequestParams) -> mt.CallToolResult:
    if params.name != "echo":
        raise MCPError(code=mt.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
    return echo_result(params)


def echo_result(params: mt.CallToolRequestParams) -> mt.CallToolResult:
    """The echo tool's answer (shared with the HTTP baseline, so both baselines do the same work per call)."""
    text = (params.arguments or {}).get("text")
    if not isinstance(text, str):
        return mt.CallToolResult(content=[mt.TextContent(text="'text' must be a string")], is_error=True)
    data = {"text": text}
    return mt.CallToolResult(content=[mt.TextContent(text=json.dumps(data))], structured_content=data)


def _input_schema(name: str) -> dict[str, Any] | None:
    return ECHO_INPUT_SCHEMA if name == "echo" else None


server = Server(
    "bench-baseline",
    version="0.1.0",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    get_tool_input_schema=_input_schema,
)


async def _serve_stdio() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(_serve_stdio)
