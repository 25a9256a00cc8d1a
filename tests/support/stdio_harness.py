"""Start `qaqnuz-mcp` as a subprocess and drive it with the real `mcp` Python client."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters, stdio_client

BIN = Path(sys.executable).parent


@asynccontextmanager
async def stdio_session(env: dict[str, str], *, mode: str = "auto", errlog: Any = None, **kw: Any):
    params = StdioServerParameters(command=str(BIN / "qaqnuz-mcp"), args=[], env=env)
    transport = stdio_client(params, errlog=errlog) if errlog is not None else stdio_client(params)
    async with Client(transport, mode=mode, **kw) as client:
        yield client
