"""The `bench` tool pack: one `echo` tool with the same input schema as the baseline server.

Loaded in-process as a module object by `bench/run.py`, and in `qaqnuz-mcp` subprocesses as the module
path `bench.bench_pack` (with the repository root on PYTHONPATH). Nothing here imports from tests/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qaqnuz import Provider, SideEffect, Tool, ToolPackContext, hookimpl

#: Must stay equal to `baseline_server.ECHO_INPUT_SCHEMA`; `run.py` checks it before measuring.
ECHO_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 1000}},
    "required": ["text"],
    "additionalProperties": False,
}
SCOPE = "echo.read"


class BenchPack:
    async def list_tools(self) -> list[Tool]:
        return [
            Tool(
                name="echo",
                description="Echo the given text back.",
                input_schema=ECHO_INPUT_SCHEMA,
                scope=SCOPE,
                side_effect=SideEffect.READ,
                handler=self.echo,
            )
        ]

    async def echo(self, args: Mapping[str, Any]) -> Any:
        return {"text": args["text"]}


def _factory(settings: object, ctx: ToolPackContext) -> BenchPack:
    return BenchPack()


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [Provider("bench", _factory, "One echo tool for bench/run.py.")]
