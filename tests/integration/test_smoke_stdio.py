"""The `mcp` client over stdio, in both eras: its plain tools/list and tools/call take the fast path."""

from __future__ import annotations

import json
import tempfile

import pytest

from kit import kit_config, server_env
from qaqnuz.testing import start_kernel, write_config
from stdio_harness import stdio_session

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_list_and_call(tmp_path, mode):
    cfg = write_config(tmp_path, kit_config().replace("[server]\n", '[server]\nlog_level = "debug"\n', 1))
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
    await kernel.aclose()
    with tempfile.TemporaryFile("w+") as errlog:
        async with stdio_session(server_env(cfg, key), mode=mode, errlog=errlog) as client:
            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            res = await client.call_tool("echo", {"message": "hi"})
            assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
        errlog.seek(0)
        log = errlog.read()
    assert "echo" in names
    assert not res.is_error
    assert json.loads(res.content[0].text) == {"message": "hi", "times": 1}
    assert "tools/list answered on the fast path" in log and "tools/call answered on the fast path" in log
