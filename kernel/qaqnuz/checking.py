"""`qaqnuz config check`: everything `serve` would validate, every error of the file in one run.

Each stage goes on with what the stages before it could build: the config as far as it is valid, the
secret (or a stand-in, to keep checking), the store and audit sinks, every provider and every
`[plugins.<name>]` table (selected or not), every pack and per-brand pack setting, the first tool sync,
brand tool references and web routes. Nothing is served and nothing is called.
"""

from __future__ import annotations

import logging
import time

import attrs

from qaqnuz.admin import Admin, load_secret, open_admin
from qaqnuz.config import Config
from qaqnuz.errors import ConfigError, PluginError, StoreError
from qaqnuz.plugins import Plugins
from qaqnuz.records import ProviderKind
from qaqnuz.registry import Registry
from qaqnuz.runtime import Builder, Runtime, build_routes, check_references, close_all
from qaqnuz.secrets import Redactor
from qaqnuz.tenancy import tenancy_warnings


@attrs.frozen
class Report:
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    brands: int
    packs: int
    tools: int


async def check(config: Config, plugins: Plugins, problems: list[str]) -> Report:
    """Validate `config` (already decoded, with `problems` found so far) as far as it goes."""
    found = list(problems)

    def add(more: list[str]) -> None:
        found.extend(p for p in more if p not in found)

    try:
        secret = load_secret(config)
    except ConfigError as exc:
        add(exc.problems)
        secret = b"\0" * 32  # a stand-in, so the rest can still be checked
    admin: Admin | None = None
    try:
        admin = open_admin(config, plugins=plugins, secret=secret, dry_run=True)
    except ConfigError as exc:
        add(exc.problems)
    except (PluginError, StoreError) as exc:
        add([str(exc)])
    notes: list[str] = []
    try:  # what `qaqnuz serve` uses without --transport (qaqnuz-mcp always picks stdio): worth a warning
        plugins.provider(ProviderKind.TRANSPORT, config.server.transport, "[server] transport")
    except PluginError as exc:
        notes.append(f"{exc}; `qaqnuz serve` without --transport would fail")
    redactor = Redactor()  # every secret a pack resolves is masked in the log and in what is printed
    redactor.guard([logging.getLogger(), logging.getLogger("qaqnuz")])
    runtime: Runtime | None = None
    warnings: list[str] = []
    tools = 0
    try:
        builder = Builder(plugins, admin.store if admin else _NO_STORE, secret, time.time, redactor.add)  # type: ignore[arg-type]
        try:
            runtime = builder.runtime(config, previous=None)
        except ConfigError as exc:
            add(exc.problems)
            add(builder.check_plugin_tables(config))
        if runtime is not None:
            registry = Registry()
            try:
                await registry.sync(runtime.packs, runtime.brand_packs, strict=True)
                add(check_references(config, set(registry.snapshot.tools)))
            except ConfigError as exc:
                add(exc.problems)
            tools = len(registry.snapshot.tools)
            warnings = tenancy_warnings(runtime, registry.snapshot)
        if admin is not None:
            try:
                build_routes(config, plugins, admin.keys, admin.approvals, time.time)
            except ConfigError as exc:
                add(exc.problems)
        else:  # no services to build routes with: still name the routes nothing installed provides
            for name in config.plugins.routes:
                try:
                    plugins.route(name, "[plugins] routes")
                except PluginError as exc:
                    add([str(exc)])
    finally:
        if runtime is not None:
            await close_all(runtime.stateful())
        if admin is not None:
            await admin.aclose()
        redactor.release()
    return Report(
        tuple(redactor.mask(p) for p in found),
        tuple(redactor.mask(w) for w in (*notes, *warnings)),
        len(config.brands),
        len(config.packs),
        tools,
    )


class _NoStore:
    """Stands in for a store that could not be opened (its problem is already reported)."""

    def __getattr__(self, name: str) -> object:
        raise StoreError("no store")


_NO_STORE = _NoStore()
