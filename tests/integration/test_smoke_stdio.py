from __future__ import annotations

import json

import pytest

from kit import kit_config, server_env
from qaqnuz.testing import start_kernel, write_config
from stdio_harness import stdio_session

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_list_and_call(tmp_path, mode):
    cfg = write_config(tmp_path, kit_config())
    kernel = await start_kernel(cfg, plugins=["testkit_pack.plugin"])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
    await kernel.aclose()
    async with stdio_session(server_env(cfg, key), mode=mode) as client:
        tools = await client.list_tools()
        names = sorted(t.name for t in tools.tools)
        res = await client.call_tool("echo", {"message": "hi"})
        print(mode, client.protocol_version, names)
    print(res)
    assert not res.is_error
    assert json.loads(res.content[0].text) == {"message": "hi", "times": 1}
