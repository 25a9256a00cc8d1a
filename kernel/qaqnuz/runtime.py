"""The runtime: the providers config selects, built together, plus the lookups the governed path makes.

A runtime is immutable. A config reload builds a whole new one (reusing stateful instances whose settings
did not change: limiter windows, pack connection pools), validates it, and the kernel swaps it in
atomically; requests in flight keep the one they started with.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from qaqnuz.assembly import build
from qaqnuz.config import Config, PackConfig, decode_settings, parse_duration, parse_rate
from qaqnuz.contexts import (
    ApproverContext,
    AuthContext,
    LimiterContext,
    PolicyContext,
    SecretResolver,
    ServerView,
    ToolPackContext,
    TracerContext,
    TransportContext,
    WebRouteContext,
)
from qaqnuz.errors import ConfigError, PluginError, UsageError
from qaqnuz.plugins import Plugins, install_hint
from qaqnuz.records import (
    Approver,
    AuthProvider,
    Limit,
    MountedRoute,
    Policy,
    ProviderKind,
    RateLimiter,
    ToolProvider,
    ToolSettings,
    Tracer,
)
from qaqnuz.services import ApprovalService, ConsoleUserService, KeyService
from qaqnuz.store import Store

_DEFAULT_SETTINGS = ToolSettings()
log = logging.getLogger("qaqnuz.kernel")


@attrs.frozen
class Runtime:
    """The selected providers plus the config they serve; replaced whole on reload."""

    version: int
    config: Config
    auth: AuthProvider
    policies: tuple[Policy, ...]
    limiter: RateLimiter
    approver: Approver
    #: `[plugins] tracing`: empty unless configured (then the governed path builds a trace per request).
    tracers: tuple[Tracer, ...]
    packs: Mapping[str, ToolProvider]
    #: (pack, brand) -> the instance built from the pack's settings plus `[brands.<brand>.packs.<pack>]`.
    brand_packs: Mapping[tuple[str, str], ToolProvider]
    provider_keys: Mapping[str, tuple[Any, Any]]
    wait_seconds: float
    _limits: Mapping[str, tuple[Limit, Limit]]
    _settings: Mapping[tuple[str, str], ToolSettings]
    _ceilings: Mapping[tuple[str, str], frozenset[str]]
    _entitled: frozenset[str]

    def limits(self, brand: str) -> tuple[Limit, Limit]:
        return self._limits[brand]

    def tool_settings(self, brand: str, tool: str) -> ToolSettings:
        return self._settings.get((brand, tool), _DEFAULT_SETTINGS)

    def ceiling(self, brand: str, role: str) -> frozenset[str]:
        """The scopes `role` may hold in `brand` (empty for an undefined role)."""
        return self._ceilings.get((brand, role), frozenset())

    def entitled(self, brand: str) -> bool:
        return brand in self._entitled

    def serves(self, pack: str, brand: str) -> bool:
        """Whether `brand` may see and call the tools of `pack` (`[packs.<pack>] brands`)."""
        cfg = self.config.packs.get(pack)
        return cfg is not None and cfg.serves(brand)

    def own_instance(self, pack: str, brand: str) -> bool:
        """Whether `brand` has its own instance of `pack` (per-brand settings)."""
        return (pack, brand) in self.brand_packs

    def stateful(self) -> list[Any]:
        """The instances that may hold connections or state, to close when they are no longer used."""
        return [*self.packs.values(), *self.brand_packs.values(), self.limiter, self.approver, *self.tracers]


@attrs.frozen
class Builder:
    """Builds runtimes (and transports) for one kernel: its plugins, store, secret, clock and masking."""

    plugins: Plugins
    store: Store
    secret: bytes = attrs.field(repr=False)
    clock: Callable[[], float]
    mask: Callable[[str], None] = attrs.field(repr=False)
    offline: bool = False
    #: Counts an approver's failure to notify the humans (the kernel's `qaqnuz_approval_notify_errors_total`).
    notify_failed: Callable[[], None] = attrs.field(repr=False, default=lambda: None)
    #: Records a pack's upstream request: (pack name, seconds, error kind or None) (`qaqnuz_upstream_*`).
    upstream: Callable[[str, float, str | None], None] | None = attrs.field(repr=False, default=None)

    def _logger(self, name: str) -> logging.Logger:
        return logging.getLogger(f"qaqnuz.provider.{name}")

    def runtime(self, config: Config, previous: Runtime | None) -> Runtime:
        """Every provider config selects; all problems raised together as one ConfigError."""
        problems: list[str] = []
        keys: dict[str, tuple[Any, Any]] = {}
        base_dir, clock = config.base_dir, self.clock

        def make(kind: ProviderKind, name: str, raw: Mapping[str, Any], section: str, selected_at: str,
                 context: Callable[[str], Any]) -> Any:  # fmt: skip
            try:
                registered = self.plugins.provider(kind, name, selected_at)
                reuse_key = (kind, name, repr(raw))
                if previous is not None and kind in (ProviderKind.LIMITER, ProviderKind.TOOLS):
                    old = previous.provider_keys.get(f"{kind}:{section}")
                    if old is not None and old[0] == reuse_key:
                        keys[f"{kind}:{section}"] = old
                        return old[1]
                instance, _ = build(registered, raw, section, context)
            except ConfigError as exc:
                problems.extend(exc.problems)
                return None
            except PluginError as exc:
                problems.append(str(exc))
                return None
            keys[f"{kind}:{section}"] = (reuse_key, instance)
            return instance

        sel = config.plugins
        plugin_settings = config.plugin_settings

        def plugin(kind: ProviderKind, name: str, selector: str, context: Callable[[str], Any]) -> Any:
            return make(kind, name, plugin_settings.get(name, {}), f"plugins.{name}", f"[plugins] {selector}", context)

        auth = plugin(
            ProviderKind.AUTH,
            sel.auth,
            "auth",
            lambda section: AuthContext(
                section=section,
                logger=self._logger(sel.auth),
                base_dir=base_dir,
                clock=clock,
                store=self.store,
                server_secret=self.secret,
                config=config,
            ),
        )

        def policy_context(name: str) -> Callable[[str], PolicyContext]:
            return lambda section: PolicyContext(
                section=section, logger=self._logger(name), base_dir=base_dir, clock=clock, config=config
            )

        policies = tuple(
            plugin(
                ProviderKind.POLICY,
                name,
                "policies",
                policy_context(name),
            )
            for name in sel.policies
        )
        limiter = plugin(
            ProviderKind.LIMITER,
            sel.limiter,
            "limiter",
            lambda section: LimiterContext(
                section=section,
                logger=self._logger(sel.limiter),
                base_dir=base_dir,
                clock=clock,
                limiter_file=config.limiter_path(),
                secrets=SecretResolver(config.base_dir, self.mask),
            ),
        )
        approver = plugin(
            ProviderKind.APPROVER,
            sel.approver,
            "approver",
            lambda section: ApproverContext(
                section=section,
                logger=self._logger(sel.approver),
                base_dir=base_dir,
                clock=clock,
                store=self.store,
                pending_ttl=parse_duration(config.approvals.pending_ttl),
                valid_for=parse_duration(config.approvals.valid_for),
                secrets=SecretResolver(config.base_dir, self.mask),
                notify_failed=self.notify_failed,
            ),
        )
        from qaqnuz.version import __version__

        def tracer_context(name: str) -> Callable[[str], TracerContext]:
            return lambda section: TracerContext(
                section=section, logger=self._logger(name), base_dir=base_dir, clock=clock,
                server_name=config.server.name, version=__version__, secrets=SecretResolver(config.base_dir, self.mask),
            )  # fmt: skip

        tracers = tuple(plugin(ProviderKind.TRACER, name, "tracing", tracer_context(name)) for name in sel.tracing)
        problems.extend(self.check_plugin_tables(config))

        secrets = SecretResolver(config.base_dir, self.mask)
        packs: dict[str, ToolProvider] = {}
        broken_packs: set[str] = set()

        def pack_context(pack_type: str, brand: str | None) -> Callable[[str], ToolPackContext]:
            return lambda section: ToolPackContext(
                section=section,
                logger=self._logger(pack_type),
                base_dir=base_dir,
                clock=clock,
                secrets=secrets,
                brand=brand,
                offline=self.offline,
                upstream_sink=self.upstream,
            )

        for pack, pc in config.packs.items():
            before = len(problems)
            instance = make(
                ProviderKind.TOOLS,
                pc.type,
                pc.settings,
                f"packs.{pack}",
                f"[packs.{pack}] type",
                pack_context(pc.type, None),
            )
            if instance is not None:
                packs[pack] = instance
            if len(problems) > before:
                broken_packs.add(pack)
        brand_packs: dict[tuple[str, str], ToolProvider] = {}
        for brand, brand_cfg in config.brands.items():
            for pack, override in brand_cfg.packs.items():
                pack_cfg: PackConfig | None = config.packs.get(pack)
                if pack_cfg is None or not pack_cfg.serves(brand):
                    continue  # reported by config validation
                if pack in broken_packs:  # its own errors are reported; still name keys the pack does not have
                    problems.extend(self._unknown_keys(pack_cfg.type, override, f"[brands.{brand}.packs.{pack}]"))
                    continue
                instance = make(
                    ProviderKind.TOOLS,
                    pack_cfg.type,
                    {**pack_cfg.settings, **override},
                    f"brands.{brand}.packs.{pack}",
                    f"[packs.{pack}] type",
                    pack_context(pack_cfg.type, brand),
                )
                if instance is not None:
                    brand_packs[(pack, brand)] = instance
        if problems:
            raise ConfigError(problems)
        limits = {}
        for brand in config.brands:
            lim = config.limits_for(brand)
            limits[brand] = (Limit(*parse_rate(lim.per_key)), Limit(*parse_rate(lim.per_brand)))
        return Runtime(
            version=(previous.version + 1) if previous else 1,
            config=config,
            auth=auth,
            policies=tuple(p for p in policies if p is not None),
            limiter=limiter,
            approver=approver,
            tracers=tuple(t for t in tracers if t is not None),
            packs=packs,
            brand_packs=brand_packs,
            provider_keys=keys,
            wait_seconds=config.approvals.wait_seconds,
            limits=limits,
            settings={
                (brand, tool): ToolSettings(t.enabled, t.exposable, t.approval)
                for brand, cfg in config.brands.items()
                for tool, t in cfg.tools.items()
            },
            ceilings={
                (brand, role): frozenset(scopes)
                for brand, cfg in config.brands.items()
                for role, scopes in cfg.roles.items()
            },
            entitled=frozenset(b for b, cfg in config.brands.items() if config.plans[cfg.plan].entitled),
        )

    def _unknown_keys(self, pack_type: str, raw: Mapping[str, Any], where: str) -> list[str]:
        registered = self.plugins.providers[ProviderKind.TOOLS].get(pack_type)
        if registered is None:
            return []
        fields = sorted(getattr(registered.provider.settings_type, "__struct_fields__", ()))
        return [f"{where} {key}: unknown key; valid keys: {', '.join(fields)}" for key in raw if key not in fields]

    def check_plugin_tables(self, config: Config) -> list[str]:
        """Every `[plugins.<name>]` table against every installed provider and route of that name, selected or
        not (a transport's is built, which validates what its struct cannot)."""
        problems: list[str] = []
        for name, raw in config.plugin_settings.items():
            section = f"plugins.{name}"
            matches = [
                (kind, table[name])
                for kind, table in self.plugins.providers.items()
                if name in table and kind is not ProviderKind.TOOLS  # packs are configured in [packs.<pack>]
            ]
            route = self.plugins.routes.get(name)
            if not matches and route is None:
                installed = sorted(
                    {
                        n
                        for kind, table in self.plugins.providers.items()
                        if kind is not ProviderKind.TOOLS
                        for n in table
                    }
                    | set(self.plugins.routes)
                )
                hints = [h for kind in ProviderKind if (h := install_hint(str(kind), name))]
                problems.append(
                    f"[{section}]: no installed provider or web route is named {name!r}; settings tables can name: "
                    f"{', '.join(installed)}" + (f"; {hints[0]}" if hints else "")
                )
                continue
            settings_types = [r.provider.settings_type for kind, r in matches if kind is not ProviderKind.TRANSPORT]
            if route is not None:
                settings_types.append(route.route.settings_type)
            try:
                if any(kind is ProviderKind.TRANSPORT for kind, _ in matches):
                    self.transport(config, name, {})  # built: a transport validates what its struct cannot
                for settings_type in settings_types:
                    decode_settings(raw, settings_type, f"[{section}]")
            except ConfigError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
            except PluginError as exc:
                problems.append(str(exc))
        return problems

    def transport(self, config: Config, name: str, overrides: Mapping[str, Any]) -> Any:
        """The transport `name`, from `[plugins.<name>]` with command-line overrides on top."""
        registered = self.plugins.provider(ProviderKind.TRANSPORT, name, "--transport")
        fields = set(getattr(registered.provider.settings_type, "__struct_fields__", ()))
        unknown = [k for k in overrides if k not in fields]
        if unknown:
            raise UsageError(f"--{unknown[0]} does not apply to the {name} transport")
        raw = {**config.plugin_settings.get(name, {}), **overrides}
        instance, _ = build(
            registered,
            raw,
            f"plugins.{name}",
            lambda section: TransportContext(
                section=section,
                logger=self._logger(name),
                clock=self.clock,
                base_dir=config.base_dir,
                secrets=SecretResolver(config.base_dir, self.mask),
            ),
        )
        return instance


def check_references(config: Config, tool_names: set[str]) -> list[str]:
    """Brand tool settings that name no tool any pack provides (unknowable while a pack is broken)."""
    problems: list[str] = []
    if config.broken_packs:
        return problems
    for brand, cfg in config.brands.items():
        for tool in cfg.tools:
            if tool not in tool_names:
                known = ", ".join(sorted(tool_names)) or "none"
                problems.append(
                    f"[brands.{brand}] tools.{tool}: no pack provides a tool named {tool!r}; known: {known}"
                )
    return problems


_ROUTE_PATH = re.compile(r"(/[a-z0-9][a-z0-9_-]*)+")


def build_routes(
    config: Config,
    plugins: Plugins,
    keys: KeyService,
    approvals: ApprovalService,
    clock: Callable[[], float],
    mask: Callable[[str], None] | None = None,
    *,
    users: ConsoleUserService | None = None,
    view: ServerView | None = None,
    secret: bytes | None = None,
    audit: Callable[..., None] | None = None,
) -> list[MountedRoute]:
    """The web routes `[plugins] routes` enables, each built from `[plugins.<name>]`; all problems at once."""
    problems: list[str] = []
    routes: list[MountedRoute] = []
    for name in config.plugins.routes:
        try:
            registered = plugins.route(name, "[plugins] routes")
        except PluginError as exc:
            problems.append(str(exc))
            continue
        route = registered.route
        path = route.path.rstrip("/")
        if not _ROUTE_PATH.fullmatch(path):
            problems.append(
                f"[plugins] routes: route {name!r} from {registered.plugin.distribution} has an invalid path "
                f"{route.path!r}; its plugin is broken"
            )
            continue

        def context(section: str, name: str = name) -> WebRouteContext:
            return WebRouteContext(
                section=section,
                logger=logging.getLogger(f"qaqnuz.route.{name}"),
                clock=clock,
                base_dir=config.base_dir,
                keys=keys,
                approvals=approvals,
                server_name=config.server.name,
                secrets=SecretResolver(config.base_dir, mask) if mask is not None else None,
                users=users,
                view=view,
                signing_key=None if secret is None else functools.partial(route_key, secret, name),
                audit=audit,
            )

        try:
            app, _ = build(registered, config.plugin_settings.get(name, {}), f"plugins.{name}", context)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        except PluginError as exc:
            problems.append(str(exc))
            continue
        routes.append(MountedRoute(name, path, app, route.mcp_key))
    if problems:
        raise ConfigError(problems)
    return routes


def route_key(secret: bytes, route: str, purpose: str) -> bytes:
    """A key for one route and purpose, derived from the server secret (HMAC-SHA-256 as a KDF): a route
    holds what it needs to sign its cookies, never the secret that hashes every API key."""
    return hmac.new(secret, f"qaqnuz route key\0{route}\0{purpose}".encode(), hashlib.sha256).digest()


async def close_all(providers: Iterable[Any]) -> None:
    """Await `aclose()` on each distinct provider that has one; a failure is logged, never raised."""
    for provider in {id(p): p for p in providers}.values():
        closer = getattr(provider, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:
                log.warning("closing a provider failed (%s)", type(exc).__name__)
