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
import anyio.to_thread
import attrs
import jsonschema_rs

from qaqnuz.audit import canonical_json
from qaqnuz.config import SCOPE_RE, TOOL_NAME_RE
from qaqnuz.errors import ConfigError
from qaqnuz.packkit import GeneratedSchema
from qaqnuz.records import SideEffect, Stability, Tool, ToolProvider
from qaqnuz.validation import ArgumentsValidator

log = logging.getLogger("qaqnuz.registry")
SYNC_TIMEOUT_S = 30.0


@attrs.frozen
class RegisteredTool:
    tool: Tool
    pack: str
    digest: str
    validator: ArgumentsValidator = attrs.field(eq=False, repr=False)


@attrs.frozen
class Snapshot:
    version: int
    tools: Mapping[str, RegisteredTool]
    digest: str
    #: (brand, tool name) -> the tool as the brand's own instance of its pack yields it.
    brand_tools: Mapping[tuple[str, str], Tool] = attrs.field(factory=dict)


EMPTY = Snapshot(0, {}, "")
BrandPacks = Mapping[tuple[str, str], ToolProvider]


def schema_digest(schema: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(schema)).hexdigest()


def definition_digest(pack: str, tool: Tool, schema_hash: str | None = None) -> str:
    """SHA-256 over the pack and the whole definition (the schema through its own digest)."""
    definition = {"pack": pack, **tool.definition()}
    definition["input_schema"] = schema_hash or schema_digest(tool.input_schema)
    return hashlib.sha256(canonical_json(definition)).hexdigest()


def check_tool(tool: Any) -> str | None:
    """Why a definition is unusable apart from its schema's validity, or None (cheap: no schema check)."""
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
    return None


@attrs.frozen
class _Schema:
    """One distinct input schema: whether it is valid JSON Schema 2020-12, and its compiled validator."""

    problem: str | None
    validator: ArgumentsValidator | None = attrs.field(eq=False, repr=False)


@attrs.frozen
class _Known:
    """What the registry learned about one tool definition, to skip the work when it is seen again."""

    tool: Tool
    digest: str
    problem: str | None
    validator: ArgumentsValidator | None = attrs.field(eq=False, repr=False)


def _prepare(pack: str, tools: list[Tool], schemas: dict[str, _Schema]) -> list[_Known]:
    """Hash, check and compile new definitions (run in a worker thread: it is the expensive part of a sync).

    Each distinct schema is checked against the metaschema and compiled once, whatever the number of tools
    that share it."""
    out = []
    for tool in tools:
        problem = check_tool(tool)
        if problem is not None:
            out.append(_Known(tool, "", problem, None))
            continue
        schema_hash = schema_digest(tool.input_schema)
        known = schemas.get(schema_hash)
        if known is None:
            try:
                if not isinstance(tool.input_schema, GeneratedSchema):  # else valid by construction
                    # Against 2020-12's own metaschema whatever `$schema` says: the meta check would otherwise
                    # fetch a remote `$schema` (and let that document decide).
                    jsonschema_rs.meta.validate({k: v for k, v in tool.input_schema.items() if k != "$schema"})
            except jsonschema_rs.ValidationError as exc:
                known = _Schema(f"input_schema is not valid JSON Schema 2020-12 ({exc.message})", None)
            except Exception as exc:  # not even JSON (a non-string key, ...): this tool's problem, not the sync's
                known = _Schema(f"input_schema is not valid JSON Schema 2020-12 ({type(exc).__name__})", None)
            else:
                try:
                    known = _Schema(None, ArgumentsValidator(tool.input_schema))
                except Exception as exc:  # e.g. a pattern ECMA-262 rejects, a reference to elsewhere
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    known = _Schema(f"input_schema cannot be compiled ({first})", None)
            schemas[schema_hash] = known
        problem = f"tool {tool.name!r}: {known.problem}" if known.problem else None
        out.append(_Known(tool, definition_digest(pack, tool, schema_hash), problem, known.validator))
    return out


class PacksUnavailable(ConfigError):
    """A strict sync failed only because packs could not list their tools (perhaps for a moment)."""


class Registry:
    def __init__(self, schemas: dict[str, _Schema] | None = None, version: int = 0) -> None:
        self.snapshot: Snapshot = Snapshot(version, {}, "") if version else EMPTY
        self._last_good: dict[str, dict[str, RegisteredTool]] = {}
        self._last_good_brand: dict[tuple[str, str], dict[str, Tool]] = {}
        #: (pack, tool name) -> what the last sync learned of that definition.
        self._known: dict[tuple[str, str], _Known] = {}
        #: schema digest -> its check and compiled validator (shared by every tool with that schema).
        self._schemas: dict[str, _Schema] = schemas if schemas is not None else {}
        self._entries: dict[tuple[str, str], RegisteredTool] = {}
        #: What each pack and per-brand instance listed at the last sync that was applied ((pack, "") for a
        #: pack); None before the first one, and after one that raised or kept the previous catalogue.
        self._listings: dict[tuple[str, str], list[Any] | None] | None = None
        self._applied = False
        #: Syncs that looked past the listings (a sync whose listings are the last ones' objects does not).
        self.full_syncs = 0
        #: How many definitions were hashed and checked anew (a sync with no change adds none).
        self.prepared = 0

    def successor(self) -> Registry:
        """An empty registry for a new runtime (a config reload): nothing of this one's packs carries over
        but the checked schemas and their validators; its snapshot versions go on from this one's."""
        return Registry(self._schemas, self.snapshot.version)

    async def _definitions(self, pack: str, tools: list[Any]) -> list[_Known]:
        """What each listed tool is; only definitions not seen before (or changed) are hashed and checked,
        off the event loop."""
        known: list[_Known | None] = []
        fresh: list[Tool] = []
        for tool in tools:
            seen = self._known.get((pack, tool.name)) if isinstance(tool, Tool) else None
            if seen is not None and (seen.tool is tool or seen.tool == tool):
                known.append(seen)
            else:
                known.append(None)
                fresh.append(tool)
        if fresh:
            self.prepared += len(fresh)
            prepared = iter(await anyio.to_thread.run_sync(_prepare, pack, fresh, self._schemas))
            known = [k if k is not None else next(prepared) for k in known]
        return [k for k in known if k is not None]

    async def sync(
        self, packs: Mapping[str, ToolProvider], brand_packs: BrandPacks | None = None, *, strict: bool = False
    ) -> bool:
        """Poll every pack (and per-brand instance) once; True if clients can see a change. `strict` turns
        problems into errors.

        When every pack lists the very same tool objects as at the last complete sync (the usual case: a pack
        keeps its definitions), nothing is looked at further: an idle sync of 10,000 tools costs the listing
        and one identity comparison per tool."""
        unavailable: list[str] = []
        listings: dict[tuple[str, str], list[Any] | None] = {}
        for pack, provider in packs.items():
            listings[(pack, "")] = await _listed(provider, f"[packs.{pack}]", unavailable)
        for (pack, brand), provider in (brand_packs or {}).items():
            listings[(pack, brand)] = await _listed(provider, f"[brands.{brand}.packs.{pack}]", unavailable)
        if self._listings is not None and _same_listings(listings, self._listings):
            return False
        self._listings = None  # until this sync has applied them
        changed = await self._sync_listed(packs, brand_packs or {}, listings, unavailable, strict=strict)
        if self._applied:
            self._listings = listings
        return changed

    async def _sync_listed(
        self,
        packs: Mapping[str, ToolProvider],
        brand_packs: BrandPacks,
        listings: Mapping[tuple[str, str], list[Any] | None],
        unavailable: list[str],
        *,
        strict: bool,
    ) -> bool:
        self.full_syncs += 1
        self._applied = False
        per_pack: dict[str, dict[str, RegisteredTool]] = {}
        failures: list[str] = []
        known_now: dict[tuple[str, str], _Known] = {}
        for pack in packs:
            tools = listings[(pack, "")]
            if tools is None:
                per_pack[pack] = self._last_good.get(pack, {})
                continue
            entries: dict[str, RegisteredTool] = {}
            for known in await self._definitions(pack, tools):
                if known.problem is not None:
                    failures.append(f"[packs.{pack}]: {known.problem}")
                    log.error("[packs.%s]: %s; tool skipped", pack, known.problem)
                    continue
                if known.tool.name in entries:
                    failures.append(f"[packs.{pack}]: tool {known.tool.name!r} is defined twice")
                    continue
                known_now[(pack, known.tool.name)] = known
                entries[known.tool.name] = self._entry(pack, known)
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
            return False  # not applied: the next sync looks again (and says so again)
        brand_tools = self._sync_brands(brand_packs, listings, per_pack, failures)
        if strict and failures:
            raise ConfigError([*unavailable, *failures])
        if strict and unavailable:
            raise PacksUnavailable(unavailable)
        self._last_good = per_pack
        for pack, entries in per_pack.items():  # a pack that failed to list keeps what it had
            for name in entries:
                if (pack, name) not in known_now and (pack, name) in self._known:
                    known_now[(pack, name)] = self._known[(pack, name)]
        self._known = known_now
        self._entries = {(e.pack, e.tool.name): e for e in merged.values()}
        self._applied = True
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
        return digest != previous.digest or previous.version == 0 or brand_tools.keys() != previous.brand_tools.keys()

    def _sync_brands(
        self,
        brand_packs: BrandPacks,
        listings: Mapping[tuple[str, str], list[Any] | None],
        per_pack: Mapping[str, Mapping[str, RegisteredTool]],
        failures: list[str],
    ) -> dict[tuple[str, str], Tool]:
        """(brand, name) -> tool for every per-brand instance whose tools match its pack's definitions."""
        out: dict[tuple[str, str], Tool] = {}
        last_good: dict[tuple[str, str], dict[str, Tool]] = {}
        for pack, brand in brand_packs:
            where = f"[brands.{brand}.packs.{pack}]"
            tools = listings[(pack, brand)]
            if tools is None:
                kept = self._last_good_brand.get((pack, brand), {})
            else:
                base = per_pack.get(pack, {})
                kept = {}
                for tool in tools:
                    entry = base.get(tool.name) if isinstance(tool, Tool) else None
                    if entry is None or (entry.tool is not tool and entry.tool != tool):
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

    def _entry(self, pack: str, known: _Known) -> RegisteredTool:
        """The registered tool for a definition: the same object as last time while nothing changed (its
        handler compared by equality: a bound method is a new object at every attribute access)."""
        previous = self._entries.get((pack, known.tool.name))
        if previous is not None and previous.digest == known.digest and previous.tool.handler == known.tool.handler:
            return previous
        assert known.validator is not None
        return RegisteredTool(known.tool, pack, known.digest, known.validator)


def _same_listings(
    now: Mapping[tuple[str, str], list[Any] | None], before: Mapping[tuple[str, str], list[Any] | None]
) -> bool:
    """Every pack listed, and listed the very same objects in the same order as before."""
    if now.keys() != before.keys():
        return False
    for key, tools in now.items():
        previous = before[key]
        if tools is None or previous is None or len(tools) != len(previous):
            return False
        if not all(a is b for a, b in zip(tools, previous, strict=True)):
            return False
    return True


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
