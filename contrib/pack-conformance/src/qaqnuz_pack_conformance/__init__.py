"""qaqnuz-pack-conformance: the tool fixtures the official MCP conformance suite calls.

`@modelcontextprotocol/conformance` (0.1.16) drives a running server through fixed tools named
`test_*`. This pack provides every one of them, with the names, descriptions and input schemas the
suite's reference server uses, as ordinary qaqnuz tools: each call goes through the governed path and
its answer is the kernel's one envelope (content[0] is the JSON payload as text, structuredContent the
envelope).

Each fixture does what the suite's reference server does:

* text and error fixtures return their text, or raise `TerminalError` (isError true, a non-empty text);
* content-block fixtures (image, audio, embedded resource, mixed) return a `qaqnuz.ToolResult` whose
  MCP content blocks follow the JSON payload in content[0];
* logging and progress fixtures send three notifications ~50 ms apart on the request's stream through
  `qaqnuz.current_call()` (and log the lines to the server log too);
* sampling and elicitation fixtures ask the client through `current_call().sample()` / `.elicit()`;
  outside an MCP request they fail with a `terminal` error that says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import msgspec

from qaqnuz import Provider, ToolPackContext, hookimpl

if TYPE_CHECKING:
    from qaqnuz_pack_conformance.fixtures import ConformancePack


class ConformanceSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[packs.<name>] type = "conformance"`."""

    scope: str = "conformance.test"


def factory(settings: ConformanceSettings, ctx: ToolPackContext) -> ConformancePack:
    from qaqnuz_pack_conformance.fixtures import factory as build

    return build(settings, ctx)


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [
        Provider(
            "conformance",
            factory,
            "Conformance pack: the tool fixtures of the official MCP conformance suite (test_*).",
            ConformanceSettings,
        )
    ]


def __getattr__(name: str) -> Any:
    """The fixtures (they need the MCP SDK's types) load on first use, not when plugins are discovered."""
    if name.startswith("__"):
        raise AttributeError(name)
    fixtures = importlib.import_module("qaqnuz_pack_conformance.fixtures")
    try:
        return getattr(fixtures, name)
    except AttributeError:
        raise AttributeError(f"module 'qaqnuz_pack_conformance' has no attribute {name!r}") from None


__all__ = ["ConformanceSettings", "factory", "qaqnuz_tool_providers"]
