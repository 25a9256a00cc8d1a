"""The template pack through a real kernel and the governed path, with qaqnuz.testing's fixtures."""

from __future__ import annotations

import json

import pytest

import qaqnuz_toolpack_template

pytestmark = pytest.mark.anyio

CONFIG = """\
[brands.acme]
plan = "growth"
roles = { viewer = ["demo.read"] }
tools.greet = { exposable = true }

[packs.demo]
type = "template"
greeting = "Hi"
"""


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_greet_through_the_governed_path(qaqnuz_kernel, qaqnuz_client, mode):
    kernel = await qaqnuz_kernel(CONFIG, plugins=[qaqnuz_toolpack_template])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["demo.read"], name="test")
    async with qaqnuz_client(kernel, key, mode=mode) as client:
        listed = await client.list_tools()
        result = await client.call_tool("greet", {"name": "Ada"})
        hidden = await client.call_tool("utc_time", {})
    assert [t.name for t in listed.tools] == ["greet"]  # utc_time is not exposable for acme
    assert json.loads(result.content[0].text) == {"message": "Hi, Ada!"}
    assert result.structured_content == {"ok": True, "data": {"message": "Hi, Ada!"}, "truncated": False}
    assert hidden.is_error and hidden.structured_content["error_class"] == "permission"


async def test_bad_input_is_a_validation_error(qaqnuz_kernel, qaqnuz_client):
    kernel = await qaqnuz_kernel(CONFIG, plugins=[qaqnuz_toolpack_template])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["demo.read"], name="test")
    async with qaqnuz_client(kernel, key) as client:
        result = await client.call_tool("greet", {"name": ""})
    assert result.structured_content["error_class"] == "validation"
    assert "$.name" in result.structured_content["sanitized_error"]
