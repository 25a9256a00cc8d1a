"""The tool registry: polls every pack, hashes whole definitions, swaps snapshots atomically.

A snapshot is immutable; readers take `registry.snapshot` once per request and never see a half-built
catalogue. Each tool's JSON Schema validator is compiled once per definition hash and reused across
syncs. A pack that fails during sync keeps its last good tools; a duplicate tool name across packs is an
error naming both packs.

A pack with per-brand settings has one more instance per such brand. The catalogue (names, definitions,
validators) comes from the pack's own instance; a brand instance must yield the same definitions, and
only its handlers are used, for that brand's calls (`Snapshot.brand_tools`). A brand instance that fails
or disagrees leaves that brand without those tools (fail closed), never with another brand's handler.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import attrs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from qaqnuz.audit import canonical_json
from qaqnuz.config import SCOPE_RE, TOOL_NAME_RE
from qaqnuz.errors import ConfigError
from qaqnuz.records import SideEffect, Stability, Tool, ToolProvider

log = logging.getLogger("qaqnuz.registry")
SYNC_TIMEOUT_S = 30.0


@attrs.frozen
class RegisteredTool:
    tool: Tool
    pack: str
    digest: str
    validator: Draft202012Validator = attrs.field(eq=False, repr=False)


@attrs.frozen
class Snapshot:
    version: int
    tools: Mapping[str, RegisteredTool]
    digest: str
    #: (brand, tool name) -> the tool as the brand's own instance of its pack yields it.
    brand_tools: Mapping[tuple[str, str], Tool] = attrs.field(factory=dict)


EMPTY = Snapshot(0, {}, "")
BrandPacks = Mapping[tuple[str, str], ToolProvider]


def definition_digest(pack: str, tool: Tool) -> str:
    return hashlib.sha256(canonical_json({"pack": pack, **tool.definition()})).hexdigest()


def check_tool(tool: Any) -> str | None:
    """Why a definition is unusable, or None."""
    if not isinstance(tool, Tool):
        return f"not a qaqnuz.Tool ({type(tool).__name__})"
    if not TOOL_NAME_RE.match(tool.name):
        return f"tool name {tool.name!r} must match [A-Za-z0-9_.-]{{1,128}}"
    if not SCOPE_RE.match(tool.scope):
        return f"tool {tool.name!r}: scope {tool.scope!r} must be '<resource>.<action>' in lower case"
    if not isinstance(tool.side_effect, SideEffect) or not isinstance(tool.stability, Stability):
        return f"tool {tool.name!r}: side_effect and stability must be SideEffect/Stability values"
    if not isinstance(tool.input_schema, Mapping) or tool.input_schema.get("type") != "object":
        return f'tool {tool.name!r}: input_schema must be a JSON Schema object with "type": "object"'
    if not tool.description:
        return f"tool {tool.name!r}: a description is required"
    if tool.timeout_s <= 0 or tool.max_result_bytes < 64:
        return f"tool {tool.name!r}: timeout_s must be > 0 and max_result_bytes >= 64"
    try:
        Draft202012Validator.check_schema(dict(tool.input_schema))
    except SchemaError as exc:
        return f"tool {tool.name!r}: input_schema is not valid JSON Schema 2020-12 ({exc.message})"
    return None


class PacksUnavailable(ConfigError):
    """A strict sync failed only because packs could not list their tools (perhaps for a moment)."""


class Registry:
    def __init__(self, compiled: dict[str, RegisteredTool] | None = None, version: int = 0) -> None:
        self.snapshot: Snapshot = Snapshot(version, {}, "") if version else EMPTY
        self._last_good: dict[str, dict[str, RegisteredTool]] = {}
        self._last_good_brand: dict[tuple[str, str], dict[str, Tool]] = {}
        self._compiled: dict[str, RegisteredTool] = compiled if compiled is not None else {}

    def successor(self) -> Registry:
        """An empty registry for a new runtime (a config reload): nothing of this one's packs carries over
        but the compiled validators, and its snapshot versions go on from this one's."""
        return Registry(dict(self._compiled), self.snapshot.version)

    async def sync(
        self, packs: Mapping[str, ToolProvider], brand_packs: BrandPacks | None = None, *, strict: bool = False
    ) -> bool:
        """Poll every pack (and per-brand instance) once; True if clients can see a change. `strict` turns
        problems into errors."""
        per_pack: dict[str, dict[str, RegisteredTool]] = {}
        failures: list[str] = []
        unavailable: list[str] = []
        for pack, provider in packs.items():
            tools = await _listed(provider, f"[packs.{pack}]", unavailable)
            if tools is None:
                per_pack[pack] = self._last_good.get(pack, {})
                continue
            entries: dict[str, RegisteredTool] = {}
            for tool in tools:
                problem = check_tool(tool)
                if problem is not None:
                    failures.append(f"[packs.{pack}]: {problem}")
                    log.error("[packs.%s]: %s; tool skipped", pack, problem)
                    continue
                if tool.name in entries:
                    failures.append(f"[packs.{pack}]: tool {tool.name!r} is defined twice")
                    continue
                entries[tool.name] = self._compile(pack, tool)
            per_pack[pack] = entries

        merged: dict[str, RegisteredTool] = {}
        conflicts: list[str] = []
        for pack, entries in per_pack.items():
            for name, entry in entries.items():
                if name in merged:
                    conflicts.append(
                        f"duplicate tool name {name!r}: provided by pack {merged[name].pack!r} and pack {pack!r}; "
                        f"rename one of them"
                    )
                else:
                    merged[name] = entry
        if conflicts:
            if strict:
                raise ConfigError(conflicts)
            for line in conflicts:
                log.error("%s; keeping the previous catalogue", line)
            return False
        brand_tools = await self._sync_brands(brand_packs or {}, per_pack, failures, unavailable)
        if strict and failures:
            raise ConfigError([*unavailable, *failures])
        if strict and unavailable:
            raise PacksUnavailable(unavailable)
        self._last_good = per_pack
        digest = hashlib.sha256("".join(sorted(e.digest for e in merged.values())).encode()).hexdigest()
        previous = self.snapshot
        unchanged = (
            merged.keys() == previous.tools.keys()
            and all(previous.tools[name] is entry for name, entry in merged.items())
            and brand_tools.keys() == previous.brand_tools.keys()
            and all(previous.brand_tools[k] is tool for k, tool in brand_tools.items())
        )
        if unchanged and previous.version:
            return False
        # A new snapshot whenever any entry changed, even only its handler (a pack rebuilt by a config
        # reload); the return value says whether clients can see a difference.
        self.snapshot = Snapshot(previous.version + 1, dict(sorted(merged.items())), digest, brand_tools)
        self._compiled = {e.digest: e for e in merged.values()}
        return digest != previous.digest or previous.version == 0 or brand_tools.keys() != previous.brand_tools.keys()

    async def _sync_brands(
        self,
        brand_packs: BrandPacks,
        per_pack: Mapping[str, Mapping[str, RegisteredTool]],
        failures: list[str],
        unavailable: list[str],
    ) -> dict[tuple[str, str], Tool]:
        """(brand, name) -> tool for every per-brand instance whose tools match its pack's definitions."""
        out: dict[tuple[str, str], Tool] = {}
        last_good: dict[tuple[str, str], dict[str, Tool]] = {}
        for (pack, brand), provider in brand_packs.items():
            where = f"[brands.{brand}.packs.{pack}]"
            tools = await _listed(provider, where, unavailable)
            if tools is None:
                kept = self._last_good_brand.get((pack, brand), {})
            else:
                base = per_pack.get(pack, {})
                kept = {}
                for tool in tools:
                    entry = base.get(tool.name) if isinstance(tool, Tool) else None
                    if entry is None or (entry.tool is not tool and definition_digest(pack, tool) != entry.digest):
                        name = tool.name if isinstance(tool, Tool) else type(tool).__name__
                        message = (
                            f"{where}: tool {name!r} is not the one [packs.{pack}] defines; per-brand settings "
                            f"may change where and as whom a pack connects, not its tools"
                        )
                        failures.append(message)
                        log.error("%s; the brand cannot call it", message)
                        continue
                    kept[tool.name] = tool
            last_good[(pack, brand)] = kept
            for name, tool in kept.items():
                out[(brand, name)] = tool
        self._last_good_brand = last_good
        return out

    def _compile(self, pack: str, tool: Tool) -> RegisteredTool:
        digest = definition_digest(pack, tool)
        known = self._compiled.get(digest)
        if known is not None and known.tool.handler is tool.handler:
            return known
        validator = (
            known.validator
            if known is not None
            else Draft202012Validator(dict(tool.input_schema), format_checker=Draft202012Validator.FORMAT_CHECKER)
        )
        return RegisteredTool(tool, pack, digest, validator)


async def _listed(provider: ToolProvider, where: str, failures: list[str]) -> list[Any] | None:
    """The provider's tools, or None (the failure noted and logged) if listing failed or timed out."""
    try:
        with anyio.fail_after(SYNC_TIMEOUT_S):
            return list(await provider.list_tools())
    except Exception as exc:
        message = f"{where}: listing tools failed ({type(exc).__name__})"
        failures.append(message)
        log.error("%s; keeping its last good tools", message)
        return None
