"""Tools may add MCP content blocks after the JSON payload; logging/setLevel and completion/complete answer."""

from __future__ import annotations

import base64

import mcp.types as mt
import pytest
from mcp.shared.exceptions import MCPError

import qaqnuz
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.anyio

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
OBJ = {"type": "object", "properties": {}, "additionalProperties": False}


class BlocksPack:
    async def list_tools(self):
        def tool(name, handler, **kw):
            return qaqnuz.Tool(name, f"{name} tool.", OBJ, "media.read", qaqnuz.SideEffect.READ, handler, **kw)

        return [
            tool("picture", self.picture),
            tool("mixed", self.mixed),
            tool("too_big", self.too_big, max_result_bytes=400),
            tool("not_a_block", self.not_a_block),
        ]

    async def picture(self, args):
        return qaqnuz.ToolResult({"caption": "a dot"}, [mt.ImageContent(type="image", data=PNG, mime_type="image/png")])

    async def mixed(self, args):
        resource = mt.TextResourceContents(uri="test://x", mime_type="application/json", text='{"a":1}')
        return qaqnuz.ToolResult(
            {"n": 2},
            [
                mt.AudioContent(type="audio", data=PNG, mime_type="audio/wav"),
                mt.EmbeddedResource(type="resource", resource=resource),
            ],
        )

    async def too_big(self, args):
        small = mt.TextContent(type="text", text="fits")
        large = mt.ImageContent(type="image", data="A" * 2000, mime_type="image/png")
        return qaqnuz.ToolResult({"ok": 1}, [small, large])

    async def not_a_block(self, args):
        return qaqnuz.ToolResult({"ok": 1}, [{"type": "image", "data": "x"}])


class BlocksPlugin:
    @qaqnuz.hookimpl
    def qaqnuz_tool_providers(self):
        return [qaqnuz.Provider("blocks", lambda s, ctx: BlocksPack(), "Content blocks.")]


CONFIG = """\
[brands.acme]
plan = "growth"
roles = { viewer = ["media.read"] }
tools.picture = { exposable = true }
tools.mixed = { exposable = true }
tools.too_big = { exposable = true }
tools.not_a_block = { exposable = true }

[packs.media]
type = "blocks"
"""


@pytest.fixture
async def client_factory(tmp_path):
    kernel = await start_kernel(write_config(tmp_path, CONFIG), plugins=[BlocksPlugin()])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["media.read"], name="b")
    yield lambda mode: connect(kernel, key, mode=mode)
    await kernel.aclose()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_blocks_follow_the_json_payload(client_factory, mode):
    async with client_factory(mode) as client:
        picture = await client.call_tool("picture", {})
        mixed = await client.call_tool("mixed", {})
    assert [c.type for c in picture.content] == ["text", "image"]
    assert picture.content[0].text == '{"caption":"a dot"}'
    assert picture.content[1].data == PNG and picture.content[1].mime_type == "image/png"
    assert picture.structured_content == {"ok": True, "data": {"caption": "a dot"}, "truncated": False}
    assert [c.type for c in mixed.content] == ["text", "audio", "resource"]
    assert mixed.content[2].resource.uri == "test://x"


async def test_blocks_that_do_not_fit_are_dropped_and_marked(client_factory):
    async with client_factory("legacy") as client:
        result = await client.call_tool("too_big", {})
    assert [c.type for c in result.content] == ["text", "text"]
    assert result.structured_content["truncated"] is True


async def test_something_that_is_not_a_block_is_a_terminal_error(client_factory):
    async with client_factory("legacy") as client:
        result = await client.call_tool("not_a_block", {})
    assert result.is_error and result.structured_content["error_class"] == "terminal"
    assert len(result.content) == 1


async def test_set_level_and_complete_answer_and_require_a_key(client_factory, tmp_path):
    async with client_factory("legacy") as client:
        assert isinstance(await client.set_logging_level("debug"), mt.EmptyResult)
        completed = await client.complete(mt.PromptReference(type="ref/prompt", name="p"), {"name": "a", "value": "x"})
    assert completed.completion.values == []
    kernel = await start_kernel(write_config(tmp_path / "other", CONFIG), plugins=[BlocksPlugin()])
    try:
        async with connect(kernel, "qx_live_bad", mode="legacy") as client:
            with pytest.raises(MCPError) as caught:
                await client.set_logging_level("debug")
        assert caught.value.error.code == -32001
    finally:
        await kernel.aclose()


def test_the_block_budget_counts_utf8_bytes_not_characters():
    from qaqnuz.pipeline import _fit_blocks

    euro = mt.TextContent(type="text", text="€" * 150)  # 150 characters, 450+ bytes of JSON
    kept, dropped = _fit_blocks((euro,), 300)
    assert kept == () and dropped is True
    kept, dropped = _fit_blocks((euro,), 1000)
    assert kept == (euro,) and dropped is False
