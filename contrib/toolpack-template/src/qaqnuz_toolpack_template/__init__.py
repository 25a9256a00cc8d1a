"""A template tool pack: two tools defined in Python, configured once as `[packs.<name>] type = "template"`.

A pack is a tool provider: qaqnuz calls `list_tools()` every sync period and governs every call to the
tools it returns (auth, rate limits, visibility, validation, policy, approval, audit). The pack only says
what each tool is and does; it never sees the caller's key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from qaqnuz import Provider, SideEffect, Tool, ToolPackContext, hookimpl


class TemplateSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[packs.<name>]` keys besides `type`. Unknown keys are config errors with their location."""

    greeting: str = "Hello"
    scope: str = "demo.read"


class TemplatePack:
    def __init__(self, settings: TemplateSettings) -> None:
        self.settings = settings

    async def list_tools(self) -> list[Tool]:
        return [
            Tool(
                name="greet",
                description="Greet someone by name.",
                scope=self.settings.scope,
                side_effect=SideEffect.READ,
                input_schema={
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 80}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
                handler=self.greet,
            ),
            Tool(
                name="utc_time",
                description="The server's current time in UTC, ISO 8601.",
                scope=self.settings.scope,
                side_effect=SideEffect.READ,
                input_schema={"type": "object", "properties": {}, "additionalProperties": False},
                handler=self.utc_time,
            ),
        ]

    async def greet(self, args: Mapping[str, Any]) -> dict[str, str]:
        return {"message": f"{self.settings.greeting}, {args['name']}!"}

    async def utc_time(self, args: Mapping[str, Any]) -> dict[str, str]:
        return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _factory(settings: TemplateSettings, ctx: ToolPackContext) -> TemplatePack:
    return TemplatePack(settings)


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [Provider("template", _factory, "Template pack: greet and utc_time.", TemplateSettings)]
