"""BASELINE for bench/http_load.py: the bare `mcp` low-level Server over Streamable HTTP, served by uvicorn.

    python -m bench.http_baseline_server --port P [--tools N]      (from the repository root)

The same `echo` tool as `baseline_server.py` (same schema, same answer, same `get_tool_input_schema`), plus
`echo_1` .. `echo_<N-1>` with the same schema when `--tools N` asks for more, so tools/list lists N tools.
No governance: an `Authorization` header is ignored. JSON replies (`json_response=True`) and stateful
sessions (`stateless_http=False`); a request with `MCP-Protocol-Version: 2026-07-28` is answered by the SDK's
single-exchange handler whatever `stateless` says. `Server.streamable_http_app(host="127.0.0.1")` turns on
the SDK's Host/Origin check with the loopback allowlist, as qaqnuz checks Host and Origin too.

uvicorn runs with the settings qaqnuz's HTTP transport gives it (`plugins/http/.../transport.py`): the
`auto` loop and HTTP parser (uvloop and httptools when installed), no access log, no server header, no
websockets, a 5 s keep-alive, at most 1000 connections. `GET /healthz` answers 200 once it serves.
"""

from __future__ import annotations

import argparse
from typing import Any

import mcp.types as mt
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.baseline_server import ECHO_INPUT_SCHEMA, ECHO_TOOL, echo_result


def build_server(tools: int) -> Server[Any]:
    """A low-level Server listing `echo` plus `echo_1` .. `echo_<tools-1>`, all answering like `echo`."""
    listed = [ECHO_TOOL] + [ECHO_TOOL.model_copy(update={"name": f"echo_{i}"}) for i in range(1, tools)]
    names = frozenset(t.name for t in listed)
    result = mt.ListToolsResult(tools=listed)

    async def list_tools(ctx: ServerRequestContext[Any], params: mt.PaginatedRequestParams | None) -> Any:
        return result

    async def call_tool(ctx: ServerRequestContext[Any], params: mt.CallToolRequestParams) -> mt.CallToolResult:
        if params.name not in names:
            raise MCPError(code=mt.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        return echo_result(params)

    def input_schema(name: str) -> dict[str, Any] | None:
        return ECHO_INPUT_SCHEMA if name in names else None

    return Server(
        "bench-baseline",
        version="0.1.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=input_schema,
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def main() -> None:
    p = argparse.ArgumentParser(description="bare mcp low-level Server over Streamable HTTP (bench baseline)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tools", type=int, default=1, help="tools to list: echo plus echo_1 .. echo_<N-1> (default 1)")
    args = p.parse_args()
    server = build_server(max(1, args.tools))
    app = server.streamable_http_app(
        json_response=True,
        stateless_http=False,
        host=args.host,
        custom_starlette_routes=[Route("/healthz", healthz, methods=["GET"])],
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        lifespan="on",
        timeout_keep_alive=5,
        limit_concurrency=1000,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
