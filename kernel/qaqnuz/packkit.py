"""Building blocks for configured tool packs: the common `[[packs.<pack>.tools]]` fields and the
`input` table that becomes a JSON Schema 2020-12.

Packs extend `ToolConfig` with their own fields (an SQL statement, an HTTP request) and call
`tool_from_config` to get a `Tool` record, so every pack spells the shared fields the same way and
reports mistakes at the same kind of location.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from qaqnuz.config import SCOPE_RE, TOOL_NAME_RE, parse_positive_duration
from qaqnuz.errors import ConfigError
from qaqnuz.records import SideEffect, Stability, Tool, ToolHandler

ParamType = Literal["string", "integer", "number", "boolean"]
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


class GeneratedSchema(dict[str, Any]):
    """An input schema this module built from an `input` table: valid JSON Schema 2020-12 by construction
    (typed parameters, regular expressions already compiled), so the registry need not check it against the
    metaschema, which costs about a millisecond per schema (seconds for a large catalogue)."""


class InputParam(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One argument of a configured tool. Required unless `required = false` or a `default` is given."""

    type: ParamType
    description: str | None = None
    required: bool | None = None
    default: Any = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None


class ToolConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields every configured tool has. `input` (a table of parameters) or `input_schema` (a whole
    JSON Schema object), not both; neither means the tool takes no arguments."""

    name: str
    description: str
    scope: str
    side_effect: SideEffect = SideEffect.READ
    stability: Stability = Stability.STABLE
    timeout: str = "30s"
    max_result_bytes: int = 256 * 1024
    input: dict[str, InputParam] | None = None
    input_schema: dict[str, Any] | None = None


def input_schema(tool: ToolConfig, where: str) -> dict[str, Any]:
    """The tool's JSON Schema: given whole, or generated from its `input` table (closed to extra keys)."""
    if tool.input is not None and tool.input_schema is not None:
        raise ConfigError([f"{where}: give either input or input_schema, not both"])
    if tool.input_schema is not None:
        if tool.input_schema.get("type") != "object":
            raise ConfigError([f'{where} input_schema: the root must be {{ type = "object" }}'])
        return dict(tool.input_schema)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in (tool.input or {}).items():
        if not _PARAM_NAME.match(name):
            raise ConfigError([f"{where} input.{name}: parameter names are letters, digits and '_' (max 64)"])
        properties[name] = _param_schema(param, f"{where} input.{name}")
        if param.required is not False and param.default is None:
            required.append(name)
    schema = GeneratedSchema(type="object", properties=properties, additionalProperties=False)
    if required:
        schema["required"] = required
    return schema


def _param_schema(param: InputParam, where: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type}
    numeric = param.type in ("integer", "number")
    if not numeric and (param.minimum is not None or param.maximum is not None):
        raise ConfigError([f"{where}: minimum/maximum apply to integer and number parameters only"])
    if param.type != "string" and any(
        v is not None for v in (param.min_length, param.max_length, param.pattern, param.format)
    ):
        raise ConfigError([f"{where}: min_length, max_length, pattern and format apply to strings only"])
    if param.pattern is not None:
        try:
            re.compile(param.pattern)
        except re.error as exc:
            raise ConfigError([f"{where} pattern: not a valid regular expression ({exc.msg})"]) from None
    for key, value in (
        ("description", param.description),
        ("enum", param.enum),
        ("minimum", param.minimum),
        ("maximum", param.maximum),
        ("minLength", param.min_length),
        ("maxLength", param.max_length),
        ("pattern", param.pattern),
        ("format", param.format),
        ("default", param.default),
    ):
        if value is not None:
            schema[key] = value
    return schema


def tool_from_config(tool: ToolConfig, handler: ToolHandler, where: str, *, binds_brand: bool = False) -> Tool:
    """A `Tool` record for a configured tool, with every shared field checked at `where`.

    `binds_brand` says the handler limits its data to the caller's brand (see `qaqnuz.Tool`)."""
    problems = []
    if not TOOL_NAME_RE.match(tool.name):
        problems.append(f"{where} name: {tool.name!r} must match [A-Za-z0-9_.-]{{1,128}}")
    if not SCOPE_RE.match(tool.scope):
        problems.append(f"{where} scope: {tool.scope!r} must be '<resource>.<action>' in lower case")
    if not tool.description.strip():
        problems.append(f"{where} description: required; it is what the model reads")
    try:
        timeout = parse_positive_duration(tool.timeout)
    except ValueError as exc:
        problems.append(f"{where} timeout: {exc}")
        timeout = 30.0
    if tool.max_result_bytes < 64:
        problems.append(f"{where} max_result_bytes: at least 64")
    if problems:
        raise ConfigError(problems)
    return Tool(
        name=tool.name,
        description=tool.description.strip(),
        input_schema=input_schema(tool, where),
        scope=tool.scope,
        side_effect=tool.side_effect,
        handler=handler,
        stability=tool.stability,
        timeout_s=timeout,
        max_result_bytes=tool.max_result_bytes,
        binds_brand=binds_brand,
    )


def unique_names(tools: Sequence[ToolConfig], where: str) -> None:
    """Two tools of one pack with the same name are an error naming both positions."""
    seen: dict[str, int] = {}
    for index, tool in enumerate(tools):
        if tool.name in seen:
            raise ConfigError(
                [f"{where} tools[{index}] name: {tool.name!r} is already used by tools[{seen[tool.name]}]"]
            )
        seen[tool.name] = index
