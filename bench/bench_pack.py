"""The `bench` tool pack: one `echo` tool with the same input schema as the baseline server.

Loaded in-process as a module object by `bench/run.py`, and in `qaqnuz-mcp` and `qaqnuz serve` subprocesses
as the module path `bench.bench_pack` (with the repository root on PYTHONPATH). Nothing here imports from
tests/.

Settings: `write_tool = true` adds `echo_write`, the same echo declared a write (bench/audit_cost.py);
`extra_tools = N` (default 0) adds `echo_1` .. `echo_N`, each with the same schema, scope and
handler as `echo` (bench/http_load.py's scale rows; each still has to be made exposable to a brand). The tool
list is built once, so a sync costs the pack nothing and what is measured is qaqnuz's own work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from qaqnuz import ConfigError, Provider, SideEffect, Tool, ToolPackContext, hookimpl

#: Must stay equal to `baseline_server.ECHO_INPUT_SCHEMA`; `run.py` checks it before measuring.
ECHO_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 1000}},
    "required": ["text"],
    "additionalProperties": False,
}
SCOPE = "echo.read"


class BenchSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    extra_tools: int = 0
    #: Also `echo_write`: the same echo declared as a write (so each call gets a write-ahead intent record).
    write_tool: bool = False


class BenchPack:
    def __init__(self, extra_tools: int = 0, write_tool: bool = False) -> None:
        self.tools = [self._tool("echo")] + [self._tool(f"echo_{i}") for i in range(1, extra_tools + 1)]
        if write_tool:
            self.tools.append(self._tool("echo_write", SideEffect.WRITE))

    def _tool(self, name: str, side_effect: SideEffect = SideEffect.READ) -> Tool:
        return Tool(
            name=name,
            description="Echo the given text back.",
            input_schema=ECHO_INPUT_SCHEMA,
            scope=SCOPE,
            side_effect=side_effect,
            handler=self.echo,
        )

    async def list_tools(self) -> list[Tool]:
        return list(self.tools)

    async def echo(self, args: Mapping[str, Any]) -> Any:
        return {"text": args["text"]}


def _factory(settings: BenchSettings, ctx: ToolPackContext) -> BenchPack:
    if settings.extra_tools < 0:
        raise ConfigError([f"{ctx.where} extra_tools: must be 0 or more"])
    return BenchPack(settings.extra_tools, settings.write_tool)


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [Provider("bench", _factory, "One echo tool (plus extra_tools copies) for bench/.", BenchSettings)]
