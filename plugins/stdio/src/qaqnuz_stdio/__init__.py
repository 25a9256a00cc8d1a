"""The stdio transport: serves one MCP client over stdin/stdout with the key from `QAQNUZ_API_KEY`.

This module only registers the transport (the command line loads it on every start, so it stays light);
`qaqnuz_stdio.transport` holds the transport itself. See README.md.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import qaqnuz
from qaqnuz import Provider, TransportContext, hookimpl

if TYPE_CHECKING:
    from qaqnuz_stdio.transport import StdioTransport

ENV_KEY = "QAQNUZ_API_KEY"


def _factory(settings: object, ctx: TransportContext) -> StdioTransport:
    from qaqnuz_stdio.transport import StdioTransport

    return StdioTransport()


@hookimpl
def qaqnuz_transports() -> list[Provider]:
    return [Provider("stdio", _factory, "One MCP client over stdin/stdout; key from QAQNUZ_API_KEY.")]


def main(argv: list[str] | None = None) -> int:
    """`qaqnuz-mcp`: the same as `qaqnuz serve --transport stdio`."""
    args = sys.argv[1:] if argv is None else argv
    return int(qaqnuz.run_cli(["serve", "--transport", "stdio", *args]))
