"""The stdio transport: serves one MCP client over stdin/stdout with the key from `QAQNUZ_API_KEY`.

This module only registers the transport (the command line loads it on every start, so it stays light);
`qaqnuz_stdio.transport` holds the transport itself. See README.md.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import qaqnuz
from qaqnuz import ConfigError, Provider, TransportContext, hookimpl
from qaqnuz_stdio.settings import StdioSettings

if TYPE_CHECKING:
    from qaqnuz_stdio.transport import StdioTransport

__all__ = ["StdioSettings", "main", "qaqnuz_transports"]
ENV_KEY = "QAQNUZ_API_KEY"


def _factory(settings: StdioSettings, ctx: TransportContext) -> StdioTransport:
    if settings.max_message_bytes < 1024:
        raise ConfigError([f"{ctx.where} max_message_bytes: must be at least 1024"])
    from qaqnuz_stdio.transport import StdioTransport

    return StdioTransport(settings)


@hookimpl
def qaqnuz_transports() -> list[Provider]:
    return [Provider("stdio", _factory, "One MCP client over stdin/stdout; key from QAQNUZ_API_KEY.", StdioSettings)]


def main(argv: list[str] | None = None) -> int:
    """`qaqnuz-mcp`: the same as `qaqnuz serve --transport stdio`."""
    args = sys.argv[1:] if argv is None else argv
    return int(qaqnuz.run_cli(["serve", "--transport", "stdio", *args]))
