"""The plugin manager: built-ins from an explicit tuple, everything else from entry points.

Each kernel owns one `Plugins`; nothing here is global. Loading never renames or silently drops
anything: a plugin that fails to import, a duplicate plugin name, or a duplicate provider name stops
startup with an error naming the distributions involved.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

import attrs
import pluggy

from qaqnuz import hookspecs
from qaqnuz.errors import PluginError
from qaqnuz.records import Command, Provider, ProviderKind, WebRoute

R = TypeVar("R")
W = TypeVar("W")
ENTRY_POINT_GROUP = hookspecs.PROJECT
KERNEL_DISTRIBUTION = "qaqnuz"

#: Built-in plugins, always loaded first and in this order (short name, module).
BUILTINS: tuple[tuple[str, str], ...] = (
    ("apikey", "qaqnuz.builtin.apikey"),
    ("scope", "qaqnuz.builtin.scope_policy"),
    ("memory", "qaqnuz.builtin.memory_limiter"),
    ("sqlite_limiter", "qaqnuz.builtin.sqlite_limiter"),
    ("queue", "qaqnuz.builtin.queue_approver"),
    ("anonymous", "qaqnuz.builtin.anonymous"),
    ("sqlite", "qaqnuz.builtin.sqlite_store"),
    ("file", "qaqnuz.builtin.file_audit"),
    ("commands", "qaqnuz.commands"),
)

HOOK_FOR_KIND: dict[ProviderKind, str] = {
    ProviderKind.AUTH: "qaqnuz_auth_providers",
    ProviderKind.POLICY: "qaqnuz_policies",
    ProviderKind.APPROVER: "qaqnuz_approvers",
    ProviderKind.LIMITER: "qaqnuz_rate_limiters",
    ProviderKind.TRANSPORT: "qaqnuz_transports",
    ProviderKind.TOOLS: "qaqnuz_tool_providers",
    ProviderKind.STORE: "qaqnuz_stores",
    ProviderKind.AUDIT: "qaqnuz_audit_sinks",
    ProviderKind.TRACER: "qaqnuz_tracers",
}
COMMANDS_HOOK = "qaqnuz_commands"
WEB_ROUTES_HOOK = "qaqnuz_web_routes"

#: First-party providers and commands that come with a distribution of their own, for errors that name
#: what to install: (kind, name) -> (distribution, extra).
FIRST_PARTY: dict[tuple[str, str], tuple[str, str]] = {
    ("transport", "stdio"): ("qaqnuz-stdio", "stdio"),
    ("transport", "http"): ("qaqnuz-http", "http"),
    ("tools", "sql"): ("qaqnuz-pack-sql", "packs"),
    ("tools", "http"): ("qaqnuz-pack-http", "packs"),
    ("limiter", "redis"): ("qaqnuz-redis", "redis"),
    ("approver", "slack"): ("qaqnuz-slack", "slack"),
    ("store", "postgresql"): ("qaqnuz-postgres", "postgres"),
    ("store", "postgres"): ("qaqnuz-postgres", "postgres"),
    ("command", "demo"): ("qaqnuz-demo", "demo"),
    ("tracer", "otel"): ("qaqnuz-otel", "otel"),
}


def install_hint(kind: str, name: str) -> str:
    """How to get a first-party provider that is not installed, or "" for an unknown name."""
    known = FIRST_PARTY.get((kind, name))
    if known is None:
        return ""
    distribution, extra = known
    return f"{name!r} comes with the distribution {distribution}, which is not installed: pip install 'qaqnuz[{extra}]'"


@attrs.frozen
class PluginInfo:
    """One loaded plugin as `qaqnuz plugins list` shows it."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]
    builtin: bool = False


@attrs.frozen
class Registered:
    """A provider together with the plugin that registered it (for errors that name distributions)."""

    provider: Provider
    plugin: PluginInfo


@attrs.frozen
class RegisteredRoute:
    route: WebRoute
    plugin: PluginInfo


@attrs.frozen
class RegisteredCommand:
    command: Command
    plugin: PluginInfo


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class Plugins:
    """Loads plugins into a private pluggy manager and indexes their providers by kind and name.

    `explicit` names plugins to load even when autoload is off: an entry-point name, a module path, or
    an already-imported module object (tests pass modules directly). `allow`/`block` filter entry points
    by short name. `hook_args` are the keyword arguments the kernel passes to every registration hook
    whose spec names them (specs may gain arguments; implementations may accept fewer).
    """

    def __init__(
        self,
        *,
        builtins: Sequence[tuple[str, str]] = BUILTINS,
        group: str = ENTRY_POINT_GROUP,
        autoload: bool | None = None,
        explicit: Iterable[str | ModuleType | object] = (),
        allow: Iterable[str] | None = None,
        block: Iterable[str] = (),
        specs: ModuleType = hookspecs,
        hook_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(specs)
        self.hook_args = dict(hook_args or {})
        self.group = group
        self.infos: list[PluginInfo] = []
        if autoload is None:
            autoload = not _truthy(os.environ.get("QAQNUZ_DISABLE_PLUGIN_AUTOLOAD"))
        explicit = [*explicit, *_env_list("QAQNUZ_PLUGINS")]
        allow_set = set(allow) if allow is not None else None
        block_set = {*block, *_env_list("QAQNUZ_BLOCK_PLUGINS")}

        for name, module_path in builtins:
            self._register(importlib.import_module(module_path), name, KERNEL_DISTRIBUTION, builtin=True)

        explicit_names = {item for item in explicit if isinstance(item, str) and "." not in item}
        self._load_entry_points(autoload, explicit_names, allow_set, block_set)
        for item in explicit:
            if isinstance(item, str):
                if "." in item:
                    self._register(self._import(item, item, "(module path)"), item, "(module path)")
            else:
                name = getattr(item, "__name__", type(item).__name__)
                self._register(item, name, "(in-process)")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {self._name_of(exc.plugin)!r} implements a hook qaqnuz does not define "
                f"({exc}); check the plugin against qaqnuz {hookspecs.PROJECT} hook names"
            ) from None
        self.providers = self._collect()
        self.routes = self._collect_routes()
        self.commands = self._collect_commands()

    # -- loading -----------------------------------------------------------------------------------
    def _load_entry_points(
        self, autoload: bool, explicit_names: set[str], allow: set[str] | None, block: set[str]
    ) -> None:
        seen: dict[str, str] = {}
        for ep in sorted(md.entry_points(group=self.group), key=lambda e: e.name):
            dist, version = _name_and_version(ep.dist)
            if ep.name in seen:
                if seen[ep.name] == dist:
                    continue  # the same distribution seen twice on sys.path
                raise PluginError(
                    f"two distributions register the plugin name {ep.name!r}: {seen[ep.name]} and {dist}; "
                    f"uninstall one of them"
                )
            seen[ep.name] = dist
            wanted = autoload or ep.name in explicit_names
            if not wanted or ep.name in block or (allow is not None and ep.name not in allow):
                continue
            if any(info.name == ep.name for info in self.infos):
                other = next(info for info in self.infos if info.name == ep.name)
                raise PluginError(
                    f"the plugin name {ep.name!r} from {dist} is already taken by {other.distribution}; "
                    f"uninstall one of them"
                )
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist} {version} failed to import "
                    f"({type(exc).__name__}: {exc}); reinstall or upgrade {dist}, or skip it with "
                    f"QAQNUZ_BLOCK_PLUGINS={ep.name}"
                ) from None
            self._register(plugin, ep.name, dist, version)
        missing = explicit_names - set(seen) - {info.name for info in self.infos}
        if missing:
            raise PluginError(
                f"plugin(s) named in QAQNUZ_PLUGINS are not installed: {', '.join(sorted(missing))}; "
                f"installed: {', '.join(sorted(seen)) or 'none'}"
            )

    def _import(self, path: str, name: str, dist: str) -> object:
        module_path, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_path)
            return getattr(module, attr) if attr else module
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} ({dist}) failed to import ({type(exc).__name__}: {exc}); check the module path"
            ) from None

    def _register(self, plugin: object, name: str, dist: str, version: str = "", builtin: bool = False) -> None:
        if version == "" and dist == KERNEL_DISTRIBUTION:
            version = _kernel_version()
        try:
            self.pm.register(plugin, name=name)
        except ValueError:
            other = next((i for i in self.infos if i.name == name), None)
            raise PluginError(
                f"the plugin name {name!r} from {dist} is already taken by "
                f"{other.distribution if other else 'another plugin'}"
            ) from None
        hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []))
        self.infos.append(PluginInfo(name, dist, version, hooks, builtin))

    def _name_of(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or repr(plugin)

    # -- calling hooks ---------------------------------------------------------------------------------
    def call(self, hook_name: str) -> list[tuple[PluginInfo, list[Any]]]:
        """Each implementing plugin with the items its implementation returned, called through pluggy.

        Each plugin is called through a subset of the hook that holds its implementation and every wrapper
        (pluggy passes only the arguments an implementation names, and wrappers wrap each call), so a
        failure and every returned item are attributed to their plugin.
        """
        by_name = {info.name: info for info in self.infos}
        hook = getattr(self.pm.hook, hook_name)
        impls = hook.get_hookimpls()
        argnames = set(hook.spec.argnames) if hook.spec is not None else set()
        kwargs = {k: v for k, v in self.hook_args.items() if k in argnames}
        plain = [i for i in impls if not (i.wrapper or i.hookwrapper)]
        out: list[tuple[PluginInfo, list[Any]]] = []
        for impl in plain:
            info = by_name[impl.plugin_name]
            only = self.pm.subset_hook_caller(hook_name, remove_plugins=[i.plugin for i in plain if i is not impl])
            try:
                results = only(**kwargs)
                items = [item for result in results for item in (result or ())]
            except Exception as exc:
                raise PluginError(
                    f"plugin {info.name!r} ({info.distribution}) failed in {hook_name} "
                    f"({type(exc).__name__}); it must return a list of records"
                ) from None
            out.append((info, items))
        return out

    def _collect(self) -> dict[ProviderKind, dict[str, Registered]]:
        def registered(provider: Provider, info: PluginInfo) -> Registered:
            return Registered(provider, info)

        return {
            kind: self._named(hook, Provider, registered, lambda p: p.name, f"{kind} provider {{name!r}}")
            for kind, hook in HOOK_FOR_KIND.items()
        }

    def _collect_routes(self) -> dict[str, RegisteredRoute]:
        return self._named(WEB_ROUTES_HOOK, WebRoute, RegisteredRoute, lambda r: r.name, "web route {name!r}")

    def _collect_commands(self) -> dict[str, RegisteredCommand]:
        return self._named(
            COMMANDS_HOOK, Command, RegisteredCommand, lambda c: " ".join(c.name.split()), "command `qaqnuz {name}`"
        )

    def _named(
        self,
        hook_name: str,
        record_type: type[R],
        wrap: Callable[[R, PluginInfo], W],
        name_of: Callable[[R], str],
        what: str,
    ) -> dict[str, W]:
        """Every record one hook returned, by name; a name registered twice is an error naming both plugins."""
        table: dict[str, W] = {}
        owners: dict[str, PluginInfo] = {}
        for info, records in self.call(hook_name):
            for record in records:
                _expect(record, record_type, info, hook_name)
                name = name_of(record)
                if name in table:
                    first = owners[name]
                    raise PluginError(
                        f"duplicate {what.format(name=name)}: registered by plugin {first.name!r} "
                        f"({first.distribution}) and plugin {info.name!r} ({info.distribution}); "
                        f"uninstall or block one of them"
                    )
                table[name], owners[name] = wrap(record, info), info
        return table

    def provider(self, kind: ProviderKind, name: str, where: str) -> Registered:
        """The provider config asked for, or an error listing the valid names (and what to install)."""
        table = self.providers[kind]
        if name not in table:
            valid = ", ".join(sorted(table)) or "none installed"
            hint = install_hint(str(kind), name)
            raise PluginError(
                f"{where}: unknown {kind} provider {name!r}; valid names: {valid}" + (f"; {hint}" if hint else "")
            )
        return table[name]

    def route(self, name: str, where: str) -> RegisteredRoute:
        if name not in self.routes:
            valid = ", ".join(sorted(self.routes)) or "none installed"
            raise PluginError(f"{where}: unknown web route {name!r}; valid names: {valid}")
        return self.routes[name]


def _expect(item: object, kind: type, info: PluginInfo, hook_name: str) -> None:
    if not isinstance(item, kind):
        raise PluginError(
            f"plugin {info.name!r} ({info.distribution}) returned {type(item).__name__} from {hook_name}; "
            f"expected qaqnuz.{kind.__name__} records"
        )


@functools.cache
def _kernel_version() -> str:
    try:
        return md.version(KERNEL_DISTRIBUTION)
    except md.PackageNotFoundError:
        return "0+unknown"


def _name_and_version(dist: md.Distribution | None) -> tuple[str, str]:
    """A distribution's name and version from one read of its metadata (each read parses the whole file)."""
    if dist is None:
        return "(unknown distribution)", ""
    meta = dist.metadata
    return meta["Name"] or "(unknown distribution)", meta["Version"] or ""
