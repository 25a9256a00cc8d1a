"""The conformance fixtures themselves (see the package docstring)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import mcp.types as mt
from pydantic import TypeAdapter

from qaqnuz import SideEffect, TerminalError, Tool, ToolPackContext, ToolResult, current_call
from qaqnuz_pack_conformance import ConformanceSettings

#: A 1x1 PNG and a tiny WAV, base64, as in the suite's reference server.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

SIMPLE_TEXT = "This is a simple text response for testing."
ERROR_TEXT = "This tool intentionally returns an error for testing"
LOG_MESSAGES = ("Tool execution started", "Tool processing data", "Tool execution completed")
PROGRESS_STEPS = (0, 50, 100)
STEP_DELAY_S = 0.05
NO_CLIENT_REQUESTS = "This server cannot send {method} to the client outside an MCP request."

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def _string_arg(name: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": description}},
        "required": [name],
    }


JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

#: requestedSchema of `test_elicitation` (the suite accepts any form schema; this is the spec's example).
ELICITATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

#: requestedSchema of `test_elicitation_sep1034_defaults`: one default per primitive type (SEP-1034).
SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

#: requestedSchema of `test_elicitation_sep1330_enums`: the five enum shapes of SEP-1330.
SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}


def _elicitation(message: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"method": "elicitation/create", "params": {"mode": "form", "message": message, "requestedSchema": schema}}


def _sampling(prompt: str) -> dict[str, Any]:
    return {
        "method": "sampling/createMessage",
        "params": {"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 100},
    }


#: The server-to-client request each client-facing fixture would send, from its arguments.
CLIENT_REQUESTS = {
    "test_sampling": lambda args: _sampling(str(args.get("prompt", ""))),
    "test_elicitation": lambda args: _elicitation(str(args.get("message", "")), ELICITATION_SCHEMA),
    "test_elicitation_sep1034_defaults": lambda args: _elicitation(
        "Please review and update the form fields with defaults", SEP1034_SCHEMA
    ),
    "test_elicitation_sep1330_enums": lambda args: _elicitation(
        "Please select options from the enum fields", SEP1330_SCHEMA
    ),
}


_CONTENT_BLOCK = TypeAdapter(mt.ContentBlock)


#: Fixtures that talk back to the client while they run: their calls must take the transport's streaming path.
INTERACTIVE = frozenset({"test_tool_with_logging", "test_tool_with_progress", *CLIENT_REQUESTS})


def _blocks(blocks: list[dict[str, Any]]) -> ToolResult:
    """The blocks as MCP content after content[0]; the JSON payload names what was sent."""
    content: list[Any] = [_CONTENT_BLOCK.validate_python(b) for b in blocks]
    return ToolResult({"content": [b["type"] for b in blocks]}, tuple(content))


def image_block() -> dict[str, Any]:
    return {"type": "image", "data": PNG, "mimeType": "image/png"}


def resource_block(uri: str, mime_type: str, text: str) -> dict[str, Any]:
    return {"type": "resource", "resource": {"uri": uri, "mimeType": mime_type, "text": text}}


class ConformancePack:
    def __init__(self, settings: ConformanceSettings, logger: Any = None) -> None:
        self.settings = settings
        self.log = logger or logging.getLogger("qaqnuz.pack.conformance")
        fixtures: list[tuple[str, str, Mapping[str, Any], Any]] = [
            ("test_simple_text", "Tests simple text content response", NO_ARGS, self.simple_text),
            ("test_image_content", "Tests image content response", NO_ARGS, self.image_content),
            ("test_audio_content", "Tests audio content response", NO_ARGS, self.audio_content),
            ("test_embedded_resource", "Tests embedded resource content response", NO_ARGS, self.embedded_resource),
            (
                "test_multiple_content_types",
                "Tests response with multiple content types (text, image, resource)",
                NO_ARGS,
                self.multiple_content_types,
            ),
            (
                "test_tool_with_logging",
                "Tests tool that emits log messages during execution",
                NO_ARGS,
                self.with_logging,
            ),
            ("test_error_handling", "Tests error response handling", NO_ARGS, self.error_handling),
            ("test_tool_with_progress", "Tests tool that reports progress notifications", NO_ARGS, self.with_progress),
            (
                "test_sampling",
                "Tests server-initiated sampling (LLM completion request)",
                _string_arg("prompt", "The prompt to send to the LLM"),
                self.client_request("test_sampling"),
            ),
            (
                "test_elicitation",
                "Tests server-initiated elicitation (user input request)",
                _string_arg("message", "The message to show the user"),
                self.client_request("test_elicitation"),
            ),
            (
                "test_elicitation_sep1034_defaults",
                "Tests elicitation with default values for all primitive types (SEP-1034)",
                NO_ARGS,
                self.client_request("test_elicitation_sep1034_defaults"),
            ),
            (
                "test_elicitation_sep1330_enums",
                "Tests elicitation with enum schema improvements (SEP-1330)",
                NO_ARGS,
                self.client_request("test_elicitation_sep1330_enums"),
            ),
            (
                "json_schema_2020_12_tool",
                "Tool with JSON Schema 2020-12 features ($schema, $defs, $ref, additionalProperties)",
                JSON_SCHEMA_2020_12,
                self.json_schema_2020_12,
            ),
        ]
        self.tools = [
            Tool(
                name=name,
                description=description,
                input_schema=schema,
                scope=settings.scope,
                side_effect=SideEffect.READ,
                handler=handler,
                timeout_s=10.0,
                interactive=name in INTERACTIVE,
            )
            for name, description, schema, handler in fixtures
        ]

    async def list_tools(self) -> Sequence[Tool]:
        return self.tools

    async def simple_text(self, arguments: Mapping[str, Any]) -> str:
        return SIMPLE_TEXT

    async def image_content(self, arguments: Mapping[str, Any]) -> ToolResult:
        return _blocks([image_block()])

    async def audio_content(self, arguments: Mapping[str, Any]) -> ToolResult:
        return _blocks([{"type": "audio", "data": WAV, "mimeType": "audio/wav"}])

    async def embedded_resource(self, arguments: Mapping[str, Any]) -> ToolResult:
        return _blocks(
            [resource_block("test://embedded-resource", "text/plain", "This is an embedded resource content.")]
        )

    async def multiple_content_types(self, arguments: Mapping[str, Any]) -> ToolResult:
        return _blocks(
            [
                {"type": "text", "text": "Multiple content types test:"},
                image_block(),
                resource_block(
                    "test://mixed-content-resource", "application/json", json.dumps({"test": "data", "value": 123})
                ),
            ]
        )

    async def with_logging(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        call = current_call()
        for i, message in enumerate(LOG_MESSAGES):
            if i:
                await anyio.sleep(STEP_DELAY_S)
            self.log.info("test_tool_with_logging: %s", message)
            if call is not None:
                await call.log("info", message, logger="conformance")
        return {"result": "Tool with logging executed successfully", "log": list(LOG_MESSAGES)}

    async def with_progress(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        call = current_call()
        steps = []
        for i, done in enumerate(PROGRESS_STEPS):
            if i:
                await anyio.sleep(STEP_DELAY_S)
            message = f"Completed step {done} of 100"
            if call is not None:
                await call.report_progress(done, 100, message)
            steps.append({"progress": done, "total": 100, "message": message})
        return {"result": "Tool with progress executed successfully", "progress": steps}

    async def error_handling(self, arguments: Mapping[str, Any]) -> None:
        raise TerminalError("intentional error fixture", public=ERROR_TEXT)

    def client_request(self, name: str) -> Any:
        build = CLIENT_REQUESTS[name]

        async def handler(arguments: Mapping[str, Any]) -> Any:
            request = build(arguments)
            call = current_call()
            if call is None:  # called outside an MCP request (e.g. straight through the pipeline)
                raise TerminalError(f"{name}: no request context", public=NO_CLIENT_REQUESTS.format(**request))
            params = request["params"]
            if request["method"] == "sampling/createMessage":
                text = await call.sample(params["messages"][0]["content"]["text"], max_tokens=params["maxTokens"])
                return f"LLM response: {text}"
            action, content = await call.elicit(params["message"], params["requestedSchema"])
            return {"action": action, "content": content}

        handler.__name__ = name
        return handler

    async def json_schema_2020_12(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return {"result": "JSON Schema 2020-12 tool called", "arguments": dict(arguments)}


def factory(settings: ConformanceSettings, ctx: ToolPackContext) -> ConformancePack:
    return ConformancePack(settings, ctx.logger)
