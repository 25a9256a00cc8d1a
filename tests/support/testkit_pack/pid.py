"""The `pid` tool provider: one tool, `whoami`, that answers with the process id of the worker that ran it.

It holds its worker's event loop for `hold_seconds` (a blocking sleep, on purpose), so while it runs that
worker accepts nothing and the next connection goes to another one: tests of `serve --workers` see their
calls spread over several processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from qaqnuz import Provider, SideEffect, Tool, ToolPackContext, hookimpl


class PidSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    hold_seconds: float = 0.2


class PidPack:
    def __init__(self, settings: PidSettings, ctx: ToolPackContext) -> None:
        self.hold = settings.hold_seconds

    async def list_tools(self) -> list[Tool]:
        schema = {"type": "object", "properties": {}, "additionalProperties": False}
        return [Tool("whoami", "The worker's process id.", schema, "orders.read", SideEffect.READ, self.whoami)]

    async def whoami(self, args: Mapping[str, Any]) -> Any:
        time.sleep(self.hold)  # blocking on purpose (see the module docstring)
        return {"pid": os.getpid()}


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [Provider("pid", lambda s, ctx: PidPack(s, ctx), "A tool naming the process that ran it.", PidSettings)]
