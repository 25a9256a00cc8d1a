"""The conformance fixtures through a real kernel and the governed path, with qaqnuz.testing's fixtures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mcp.types as mt
import pytest

import qaqnuz.callcontext
import qaqnuz_pack_conformance as pack
from qaqnuz import ConfigError

pytestmark = pytest.mark.anyio

PACK_DIR = Path(__file__).resolve().parents[1]
SHIPPED = (PACK_DIR / "qaqnuz-conformance.toml").read_text()
FIXTURES = [
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_error_handling",
    "test_tool_with_progress",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool",
]
CLIENT_FACING = {
    "test_sampling": ({"prompt": "Test prompt for sampling"}, "sampling/createMessage"),
    "test_elicitation": ({"message": "Please provide your information"}, "elicitation/create"),
    "test_elicitation_sep1034_defaults": ({}, "elicitation/create"),
    "test_elicitation_sep1330_enums": ({}, "elicitation/create"),
}


def keyed_config(scope: str = "conformance.test", extra: str = "") -> str:
    exposed = "\n".join(f"tools.{name} = {{ exposable = true }}" for name in FIXTURES)
    return f"""\
[brands.acme]
plan = "enterprise"
roles = {{ viewer = ["{scope}"] }}
{exposed}

[packs.conformance]
type = "conformance"
{extra}
"""


async def keyed_kernel(qaqnuz_kernel, text: str | None = None, scope: str = "conformance.test"):
    kernel = await qaqnuz_kernel(text or keyed_config(scope), plugins=[pack])
    key, _ = await kernel.keys.mint(brand="acme", scopes=[scope], name="t")
    return kernel, key


async def call(qaqnuz_kernel, qaqnuz_client, name: str, arguments=None, mode: str = "auto"):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    async with qaqnuz_client(kernel, key, mode=mode) as client:
        return await client.call_tool(name, arguments or {})


async def test_the_shipped_config_exposes_every_fixture_anonymously(qaqnuz_kernel, qaqnuz_client):
    kernel = await qaqnuz_kernel(SHIPPED, plugins=[pack, "http"])
    async with qaqnuz_client(kernel, None) as client:  # anonymous auth: no key at all
        listed = await client.list_tools()
        simple = await client.call_tool("test_simple_text", {})
    tools = {t.name: t for t in listed.tools}
    assert sorted(tools) == sorted(FIXTURES)
    for tool in tools.values():  # what tools-list checks
        assert tool.description and tool.input_schema["type"] == "object"
    assert tools["test_simple_text"].input_schema == {"type": "object", "properties": {}}
    assert tools["test_sampling"].input_schema["required"] == ["prompt"]
    assert tools["test_elicitation"].input_schema["required"] == ["message"]
    schema = tools["json_schema_2020_12_tool"].input_schema  # the pending json-schema-2020-12 scenario
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "address" in schema["$defs"] and schema["additionalProperties"] is False
    assert not simple.is_error


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_simple_text(qaqnuz_kernel, qaqnuz_client, mode):
    result = await call(qaqnuz_kernel, qaqnuz_client, "test_simple_text", mode=mode)
    assert not result.is_error
    assert json.loads(result.content[0].text) == pack.SIMPLE_TEXT
    assert result.structured_content == {"ok": True, "data": pack.SIMPLE_TEXT, "truncated": False}


async def test_error_handling_is_a_terminal_error_with_text(qaqnuz_kernel, qaqnuz_client):
    result = await call(qaqnuz_kernel, qaqnuz_client, "test_error_handling")
    assert result.is_error
    assert result.content[0].type == "text" and result.content[0].text == pack.ERROR_TEXT
    assert result.structured_content["error_class"] == "terminal"


async def test_content_block_fixtures_follow_the_payload_with_mcp_blocks(qaqnuz_kernel, qaqnuz_client):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    async with qaqnuz_client(kernel, key) as client:
        image = await client.call_tool("test_image_content", {})
        audio = await client.call_tool("test_audio_content", {})
        embedded = await client.call_tool("test_embedded_resource", {})
        mixed = await client.call_tool("test_multiple_content_types", {})
    for result in (image, audio, embedded, mixed):
        assert not result.is_error and result.content[0].type == "text"  # content[0]: the JSON payload
    assert [c.type for c in image.content] == ["text", "image"]
    assert (image.content[1].data, image.content[1].mime_type) == (pack.PNG, "image/png")
    assert (audio.content[1].data, audio.content[1].mime_type) == (pack.WAV, "audio/wav")
    resource = embedded.content[1].resource
    assert (resource.uri, resource.mime_type, resource.text) == (
        "test://embedded-resource",
        "text/plain",
        "This is an embedded resource content.",
    )
    assert [c.type for c in mixed.content] == ["text", "text", "image", "resource"]
    assert json.loads(mixed.content[3].resource.text) == {"test": "data", "value": 123}
    assert mixed.structured_content["data"] == {"content": ["text", "image", "resource"]}


async def test_logging_and_progress_reach_the_client_on_the_request(qaqnuz_kernel, qaqnuz_client, caplog):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    messages, steps = [], []

    async def on_log(params):
        messages.append((params.level, params.logger, params.data))

    async def on_progress(progress, total, message):
        steps.append((progress, total, message))

    async with qaqnuz_client(kernel, key, mode="legacy", logging_callback=on_log) as client:
        with caplog.at_level(logging.INFO, logger="qaqnuz.provider.conformance"):
            logged = await client.call_tool("test_tool_with_logging", {})
            progress = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    assert not logged.is_error and not progress.is_error
    assert messages == [("info", "conformance", m) for m in pack.LOG_MESSAGES]
    lines = [r.getMessage() for r in caplog.records if r.name == "qaqnuz.provider.conformance"]
    assert lines == [f"test_tool_with_logging: {m}" for m in pack.LOG_MESSAGES]  # and to the server's log
    assert [(p, t) for p, t, _ in steps] == [(0, 100), (50, 100), (100, 100)]


async def test_set_level_filters_log_notifications(qaqnuz_kernel, qaqnuz_client):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    messages = []

    async def on_log(params):
        messages.append(params.data)

    async with qaqnuz_client(kernel, key, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("warning")
        result = await client.call_tool("test_tool_with_logging", {})
    assert not result.is_error and messages == []  # info is below the connection's level


async def test_client_facing_fixtures_ask_the_client(qaqnuz_kernel, qaqnuz_client):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    asked = []

    async def on_sampling(context, params):
        asked.append(("sampling", params.messages[0].content.text, params.max_tokens))
        return mt.CreateMessageResult(
            role="assistant", content=mt.TextContent(type="text", text="four"), model="test-model"
        )

    async def on_elicitation(context, params):
        asked.append(("elicitation", params.message, sorted(params.requested_schema["properties"])))
        return mt.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    options = {"sampling_callback": on_sampling, "elicitation_callback": on_elicitation}
    async with qaqnuz_client(kernel, key, mode="legacy", **options) as client:
        sampled = await client.call_tool("test_sampling", {"prompt": "2+2?"})
        elicited = await client.call_tool("test_elicitation", {"message": "Who are you?"})
    assert json.loads(sampled.content[0].text) == "LLM response: four"
    assert json.loads(elicited.content[0].text) == {
        "action": "accept",
        "content": {"username": "ada", "email": "ada@example.com"},
    }
    assert asked == [("sampling", "2+2?", 100), ("elicitation", "Who are you?", ["email", "username"])]


async def test_without_a_back_channel_client_requests_are_a_dependency_error(qaqnuz_kernel, qaqnuz_client):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    async with qaqnuz_client(kernel, key, mode="auto") as client:  # 2026-07-28: no server-to-client requests
        sampled = await client.call_tool("test_sampling", {"prompt": "hi"})
        elicited = await client.call_tool("test_elicitation", {"message": "Who?"})
    assert sampled.structured_content["error_class"] == "dependency"
    assert sampled.content[0].text == qaqnuz.callcontext.NO_SAMPLING
    assert elicited.content[0].text == qaqnuz.callcontext.NO_ELICITATION


def test_the_requests_client_facing_fixtures_would_send():
    sampling = pack.CLIENT_REQUESTS["test_sampling"]({"prompt": "hi"})
    assert sampling["params"] == {
        "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
        "maxTokens": 100,
    }
    asked = pack.CLIENT_REQUESTS["test_elicitation"]({"message": "Who?"})["params"]
    assert asked["message"] == "Who?" and asked["requestedSchema"]["required"] == ["username", "email"]
    defaults = pack.CLIENT_REQUESTS["test_elicitation_sep1034_defaults"]({})["params"]["requestedSchema"]["properties"]
    assert {k: v["default"] for k, v in defaults.items()} == {
        "name": "John Doe",
        "age": 30,
        "score": 95.5,
        "status": "active",
        "verified": True,
    }
    assert defaults["status"]["enum"] == ["active", "inactive", "pending"]
    enums = pack.CLIENT_REQUESTS["test_elicitation_sep1330_enums"]({})["params"]["requestedSchema"]["properties"]
    assert "enum" not in enums["titledSingle"] and len(enums["titledSingle"]["oneOf"]) == 3
    assert len(enums["legacyEnum"]["enumNames"]) == len(enums["legacyEnum"]["enum"])
    assert enums["untitledMulti"]["items"]["enum"] and enums["titledMulti"]["items"]["anyOf"]


async def test_arguments_are_validated_against_the_schemas(qaqnuz_kernel, qaqnuz_client):
    kernel, key = await keyed_kernel(qaqnuz_kernel)
    async with qaqnuz_client(kernel, key) as client:
        no_prompt = await client.call_tool("test_sampling", {})
        extra = await client.call_tool("json_schema_2020_12_tool", {"name": "Ada", "age": 3})
        bad_ref = await client.call_tool("json_schema_2020_12_tool", {"address": {"city": 7}})
        good = await client.call_tool("json_schema_2020_12_tool", {"name": "Ada", "address": {"city": "Bern"}})
    assert no_prompt.structured_content["error_class"] == "validation"
    assert "additionalProperties" in extra.content[0].text
    assert bad_ref.structured_content["error_class"] == "validation"  # $ref into $defs is followed
    assert good.structured_content["data"]["arguments"] == {"name": "Ada", "address": {"city": "Bern"}}


async def test_scope_setting_and_unknown_settings(qaqnuz_kernel, qaqnuz_client):
    kernel, key = await keyed_kernel(qaqnuz_kernel, keyed_config("qa.run", 'scope = "qa.run"'), scope="qa.run")
    async with qaqnuz_client(kernel, key) as client:
        assert len((await client.list_tools()).tools) == len(FIXTURES)
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(keyed_config(extra="delay = 1"), plugins=[pack])
    assert "delay" in "\n".join(caught.value.problems)
