"""The `testkit` tool provider, loaded in tests through QAQNUZ_PLUGINS=testkit_pack.plugin.

Its tools cover the envelope's cases: success, sensitive, exception, dependency error, oversized
payload, timeout, and a write tool for approvals that counts its executions in a file so a test in
another process can check "exactly once". `description_file` lets a test change a description while
the server runs, to exercise tool sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from qaqnuz import DependencyError, Provider, SideEffect, Stability, Tool, ToolPackContext, hookimpl


class TestkitSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    counter_file: str = "testkit-executions.txt"
    description_file: str | None = None
    big_bytes: int = 300_000
    slow_seconds: float = 5.0


OBJ = {"type": "object", "properties": {}, "additionalProperties": False}


class Testkit:
    def __init__(self, settings: TestkitSettings, ctx: ToolPackContext) -> None:
        self.settings = settings
        self.counter = Path(ctx.resolve(settings.counter_file))
        self.description_file = Path(ctx.resolve(settings.description_file)) if settings.description_file else None

    async def list_tools(self) -> list[Tool]:
        echo_description = "Echo a message back."
        if self.description_file is not None and self.description_file.exists():
            echo_description = self.description_file.read_text().strip() or echo_description
        return [
            Tool(
                name="echo",
                description=echo_description,
                scope="orders.read",
                side_effect=SideEffect.READ,
                input_schema={
                    "type": "object",
                    "properties": {
                        "message": {"type": "string", "maxLength": 100},
                        "times": {"type": "integer", "minimum": 1},
                    },
                    "required": ["message"],
                    "additionalProperties": False,
                },
                handler=self.echo,
            ),
            Tool("beta_echo", "Echo, beta tier.", OBJ, "orders.read", SideEffect.READ, self.ok, Stability.BETA),
            Tool("secret_dump", "Dump secrets.", OBJ, "orders.read", SideEffect.SENSITIVE, self.ok),
            Tool("disabled_tool", "Disabled for the brand.", OBJ, "orders.read", SideEffect.READ, self.ok),
            Tool("hidden_tool", "Never made exposable.", OBJ, "orders.read", SideEffect.READ, self.ok),
            Tool("write_tool", "Needs orders.write.", OBJ, "orders.write", SideEffect.WRITE, self.ok),
            Tool("boom", "Raises an exception.", OBJ, "orders.read", SideEffect.READ, self.boom),
            Tool("flaky_upstream", "Upstream fails.", OBJ, "orders.read", SideEffect.EXTERNAL, self.upstream),
            Tool(
                "big",
                "Returns an oversized payload.",
                OBJ,
                "orders.read",
                SideEffect.READ,
                self.big,
                max_result_bytes=65536,
            ),
            Tool(
                "slow",
                "Sleeps past its timeout.",
                OBJ,
                "orders.read",
                SideEffect.READ,
                self.slow,
                timeout_s=0.5,
            ),
            Tool(
                "create_order",
                "Create an order (needs approval).",
                {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
                "orders.write",
                SideEffect.WRITE,
                self.create_order,
            ),
            Tool(
                "routed",
                "Echo a region; its value travels in the Mcp-Param-Region header too (2026-07-28).",
                {
                    "type": "object",
                    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                    "required": ["region"],
                    "additionalProperties": False,
                },
                "orders.read",
                SideEffect.READ,
                self.ok,
            ),
            Tool(
                "deploy",
                "Deploy a target (arguments include credentials; needs approval where configured).",
                {
                    "type": "object",
                    "properties": {
                        "target": {"type": "string"},
                        "api_token": {"type": "string"},
                        "options": {"type": "object"},
                        "notes": {"type": "string"},
                    },
                    "required": ["target"],
                    "additionalProperties": False,
                },
                "orders.write",
                SideEffect.WRITE,
                self.deploy,
            ),
        ]

    async def deploy(self, args: Mapping[str, Any]) -> Any:
        with self.counter.open("a") as handle:
            handle.write(f"deploy:{args['target']}\n")
        return {"deployed": args["target"]}

    async def echo(self, args: Mapping[str, Any]) -> Any:
        return {"message": args["message"], "times": args.get("times", 1)}

    async def ok(self, args: Mapping[str, Any]) -> Any:
        return {"ok": True}

    async def boom(self, args: Mapping[str, Any]) -> Any:
        raise RuntimeError("secret detail: /etc/passwd password=hunter2 SELECT * FROM keys")

    async def upstream(self, args: Mapping[str, Any]) -> Any:
        raise DependencyError("upstream 503 from https://internal.example/api?token=abc")

    async def big(self, args: Mapping[str, Any]) -> Any:
        return [{"row": i, "text": "é" * 50} for i in range(self.settings.big_bytes // 60)]

    async def slow(self, args: Mapping[str, Any]) -> Any:
        await anyio.sleep(self.settings.slow_seconds)
        return {"late": True}

    async def create_order(self, args: Mapping[str, Any]) -> Any:
        with self.counter.open("a") as handle:
            handle.write(f"{args['sku']}:{args['qty']}\n")
        return {"created": True, "sku": args["sku"], "qty": args["qty"]}


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [Provider("testkit", lambda s, ctx: Testkit(s, ctx), "Tools for the kernel's tests.", TestkitSettings)]
