"""A kernel instance: owns its plugin manager, config, store, registry, metrics and audit log.

Nothing here is global, so tests (and one process) can run several kernels side by side. The selected
providers and the config they were built from form an immutable `Runtime`; a config reload builds a new
one, validates it whole and swaps it in atomically, or keeps the running one and logs why not.
"""

from __future__ import annotations

import calendar
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs

from qaqnuz.audit import AuditLog
from qaqnuz.config import Config, decode_settings, load_config, parse_duration, parse_rate
from qaqnuz.errors import ConfigError, PluginError, UsageError
from qaqnuz.keys import key_hash, new_key
from qaqnuz.metrics import Metrics
from qaqnuz.pipeline import Pipeline
from qaqnuz.plugins import Plugins
from qaqnuz.records import (
    ApprovalRequest,
    ApprovalStatus,
    Approver,
    AuthProvider,
    Limit,
    Policy,
    Principal,
    ProviderContext,
    ProviderKind,
    RateLimiter,
    ToolProvider,
    ToolSettings,
)
from qaqnuz.registry import Registry
from qaqnuz.secrets import Redactor
from qaqnuz.store import KeyCapReached, KeyRecord, Store

log = logging.getLogger("qaqnuz.kernel")
_DEFAULT_SETTINGS = ToolSettings()
ChangeListener = Callable[[], Awaitable[None]]


def load_secret(config: Config) -> bytes:
    """The server secret: `$QAQNUZ_SECRET`, else the secret file named in config."""
    from_env = os.environ.pop("QAQNUZ_SECRET", None)  # not inherited by anything the server starts
    if from_env:
        if len(from_env) < 32:
            raise ConfigError(["env QAQNUZ_SECRET: too short; use at least 32 random characters"])
        return from_env.encode("utf-8")
    path = Path(config.resolve(config.server.secret_file))
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(
            [f"[server] secret_file: {path} does not exist; create it with `qaqnuz init` or set QAQNUZ_SECRET"]
        ) from None
    if len(secret) < 32:
        raise ConfigError([f"[server] secret_file: {path} holds fewer than 32 bytes; regenerate it"])
    if path.stat().st_mode & 0o077:
        log.warning("secret file %s is readable by group or others; chmod 600 it", path)
    return secret


@attrs.frozen
class Runtime:
    """The selected providers plus the config they serve; replaced whole on reload."""

    version: int
    config: Config
    auth: AuthProvider
    policies: tuple[Policy, ...]
    limiter: RateLimiter
    approver: Approver
    packs: Mapping[str, ToolProvider]
    provider_keys: Mapping[str, Any]
    wait_seconds: float
    _limits: Mapping[str, tuple[Limit, Limit]]
    _settings: Mapping[tuple[str, str], ToolSettings]
    _ceilings: Mapping[tuple[str, str], frozenset[str]]

    def limits(self, brand: str) -> tuple[Limit, Limit]:
        return self._limits[brand]

    def tool_settings(self, brand: str, tool: str) -> ToolSettings:
        return self._settings.get((brand, tool), _DEFAULT_SETTINGS)

    def ceiling(self, brand: str, role: str) -> frozenset[str]:
        """The scopes `role` may hold in `brand` (empty for an undefined role)."""
        return self._ceilings.get((brand, role), frozenset())


class Kernel:
    def __init__(
        self,
        config: Config,
        *,
        plugins: Plugins | None = None,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.plugins = plugins if plugins is not None else Plugins()
        self.secret = secret if secret is not None else load_secret(config)
        self.store = Store(config.store_path())
        from qaqnuz import __version__

        self.metrics = Metrics(__version__)
        self.audit = AuditLog(config.resolve(config.server.audit_file))
        self.registry = Registry()
        self.redactor = Redactor()
        self.redactor.guard([logging.getLogger(), logging.getLogger("qaqnuz")])
        self._listeners: list[ChangeListener] = []
        self._last_used: dict[str, float] = {}
        self._usage: dict[tuple[str, str], int] = {}
        self._monthly: dict[tuple[str, str], int] = {}
        self._month, self._month_start, self._month_end = "", 0.0, 0.0
        self._config_stamp = _stamp(config.path)
        self.runtime = self._build_runtime(config, previous=None)
        self.pipeline = Pipeline(self)

    # -- assembly --------------------------------------------------------------------------------------
    def _context(self, config: Config, name: str, section: str = "") -> ProviderContext:
        return ProviderContext(
            config=config,
            store=self.store,
            clock=self.clock,
            logger=logging.getLogger(f"qaqnuz.provider.{name}"),
            server_secret=self.secret,
            redactor=self.redactor,
            section=section,
        )

    def _instantiate(
        self,
        kind: ProviderKind,
        name: str,
        raw: Mapping[str, Any],
        where: str,
        config: Config,
        previous: Runtime | None,
        selected_at: str | None = None,
    ) -> tuple[Any, Any]:
        registered = self.plugins.provider(kind, name, selected_at or where)
        settings = decode_settings(raw, registered.provider.settings_type, f"[{where}]")
        reuse_key = (kind, name, repr(settings))
        if previous is not None and kind in (ProviderKind.LIMITER, ProviderKind.TOOLS):
            old = previous.provider_keys.get(f"{kind}:{where}")
            if old is not None and old[0] == reuse_key:
                return old[1], reuse_key
        try:
            instance = registered.provider.factory(settings, self._context(config, name, where))
        except (ConfigError, PluginError):
            raise
        except Exception as exc:
            # Only the type: a factory's exception text can carry a DSN or a credential.
            raise PluginError(
                f"{where}: provider {name!r} from {registered.plugin.distribution} failed to start "
                f"({type(exc).__name__}); a factory should raise qaqnuz.ConfigError to explain itself"
            ) from None
        return instance, reuse_key

    def _build_runtime(self, config: Config, previous: Runtime | None) -> Runtime:
        problems: list[str] = []
        keys: dict[str, Any] = {}

        def make(kind: ProviderKind, name: str, raw: Mapping[str, Any], where: str, selected_at: str) -> Any:
            try:
                instance, reuse_key = self._instantiate(kind, name, raw, where, config, previous, selected_at)
            except (ConfigError, PluginError) as exc:
                problems.extend(exc.problems if isinstance(exc, ConfigError) else [str(exc)])
                return None
            if instance is None:
                problems.append(f"{selected_at}: provider {name!r} built nothing; its plugin is broken")
                return None
            keys[f"{kind}:{where}"] = (reuse_key, instance)
            return instance

        sel = config.plugins
        settings_for = config.plugin_settings

        def plugin(kind: ProviderKind, name: str, selector: str) -> Any:
            return make(kind, name, settings_for.get(name, {}), f"plugins.{name}", f"[plugins] {selector}")

        auth = plugin(ProviderKind.AUTH, sel.auth, "auth")
        policies = tuple(plugin(ProviderKind.POLICY, name, "policies") for name in sel.policies)
        limiter = plugin(ProviderKind.LIMITER, sel.limiter, "limiter")
        approver = plugin(ProviderKind.APPROVER, sel.approver, "approver")
        selected = {sel.auth, sel.limiter, sel.approver, *sel.policies}
        known = {name for table in self.plugins.providers.values() for name in table}
        for name in settings_for:
            if name not in selected and name not in known:
                problems.append(f"[plugins.{name}]: no installed provider is named {name!r}")
        packs: dict[str, ToolProvider] = {}
        for pack, raw in config.packs.items():
            body = {k: v for k, v in raw.items() if k != "type"}
            instance = make(ProviderKind.TOOLS, raw["type"], body, f"packs.{pack}", f"[packs.{pack}] type")
            if instance is not None:
                packs[pack] = instance
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
            packs=packs,
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
        )

    @property
    def loopback_only(self) -> bool:
        """True while the selected auth provider is marked `loopback_only` (e.g. the built-in `anonymous`).

        A network transport must then refuse to bind any address but a loopback one (127.0.0.0/8, ::1,
        localhost). A reload never switches a running kernel to such a provider, so checking at bind time
        is enough.
        """
        return _loopback_only(self.runtime.auth)

    def transport(self, name: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """Build the transport `name` from `[plugins.<name>]`, with command-line overrides on top."""
        raw = {**self.runtime.config.plugin_settings.get(name, {}), **(overrides or {})}
        registered = self.plugins.provider(ProviderKind.TRANSPORT, name, "--transport")
        fields = set(getattr(registered.provider.settings_type, "__struct_fields__", ()))
        unknown = [k for k in (overrides or {}) if k not in fields]
        if unknown:
            raise UsageError(f"--{unknown[0]} does not apply to the {name} transport")
        instance, _ = self._instantiate(ProviderKind.TRANSPORT, name, raw, f"plugins.{name}", self.runtime.config, None)
        return instance

    def check_references(self, runtime: Runtime, tool_names: set[str]) -> list[str]:
        """Brand tool settings that name no tool any pack provides."""
        problems = []
        for brand, cfg in runtime.config.brands.items():
            for tool in cfg.tools:
                if tool not in tool_names:
                    known = ", ".join(sorted(tool_names)) or "none"
                    problems.append(
                        f"[brands.{brand}] tools.{tool}: no pack provides a tool named {tool!r}; known: {known}"
                    )
        return problems

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """First sync, strict: a broken pack, a duplicate or a dangling reference stops startup."""
        await self.registry.sync(self.runtime.packs, strict=True)
        problems = self.check_references(self.runtime, set(self.registry.snapshot.tools))
        if problems:
            raise ConfigError(problems)
        self.metrics.tools_registered.set(len(self.registry.snapshot.tools))
        self._refresh_pending_gauge()
        self._publish_quotas()
        log.info(
            "kernel ready: %d tools from %d packs, %d brands",
            len(self.registry.snapshot.tools),
            len(self.runtime.packs),
            len(self.runtime.config.brands),
        )

    async def run_background(self) -> None:
        """Sync tools and reload config every sync period; flush last-used on its own period."""
        sync_every = parse_duration(self.runtime.config.server.sync_interval)
        flush_every = parse_duration(self.runtime.config.server.last_used_flush)
        next_flush = time.monotonic() + flush_every
        while True:
            await anyio.sleep(sync_every)
            await self.tick()
            if time.monotonic() >= next_flush:
                self.flush()
                next_flush = time.monotonic() + flush_every

    async def tick(self) -> None:
        """One sync period: reload the config if its file changed, then sync every pack."""
        changed = await self.maybe_reload()
        try:
            synced = await self.registry.sync(self.runtime.packs)
            self.metrics.tool_sync.labels("changed" if synced else "unchanged").inc()
        except Exception as exc:
            self.metrics.tool_sync.labels("error").inc()
            log.error("tool sync failed (%s)", type(exc).__name__)
            synced = False
        self.metrics.tools_registered.set(len(self.registry.snapshot.tools))
        self._refresh_pending_gauge()
        if changed or synced:
            log.info("tool catalogue or config changed; notifying clients")
            await self.notify_changed()

    async def maybe_reload(self) -> bool:
        path = self.runtime.config.path
        stamp = _stamp(path)
        if path is None or stamp == self._config_stamp:
            return False
        runtime: Runtime | None = None
        try:
            config = load_config(path)
            runtime = self._build_runtime(config, previous=self.runtime)
            names: set[str] = set()
            for provider in runtime.packs.values():
                with anyio.fail_after(30):
                    names.update(t.name for t in await provider.list_tools())
            problems = self.check_references(runtime, names)
            if _loopback_only(runtime.auth) and not self.loopback_only:
                # The transport checked its bind address against the auth at startup; it cannot now.
                problems.append(
                    f"[plugins] auth: {config.plugins.auth!r} is loopback only and can be chosen only at startup; "
                    f"restart the server to use it"
                )
            if problems:
                raise ConfigError(problems)
        except (ConfigError, PluginError) as exc:
            self._config_stamp = stamp  # this file is wrong as written: wait for the next edit
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            await self._close_unused(runtime, keep=self.runtime)
            return False
        except Exception as exc:  # transient (a pack could not list its tools): try again next period
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload failed (%s), keeping the running config; retrying", type(exc).__name__)
            await self._close_unused(runtime, keep=self.runtime)
            return False
        previous, self.runtime = self.runtime, runtime
        self._config_stamp = stamp
        await self._close_unused(previous, keep=runtime)
        self._publish_quotas()
        self.metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded from %s", path)
        return True

    async def _close_unused(self, runtime: Runtime | None, *, keep: Runtime) -> None:
        """Close the stateful providers of `runtime` that `keep` does not reuse."""
        if runtime is None:
            return
        kept = {id(p) for p in (*keep.packs.values(), keep.limiter)}
        await _close_all(p for p in (*runtime.packs.values(), runtime.limiter) if id(p) not in kept)

    def add_change_listener(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def notify_changed(self) -> None:
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception as exc:
                log.warning("a change listener failed (%s)", type(exc).__name__)

    def flush(self) -> None:
        """Write batched last-used times and usage counts; on failure keep them for the next flush."""
        last_used, usage = self._last_used, self._usage
        self._last_used, self._usage = {}, {}
        try:
            self.store.flush_last_used(last_used, usage)
        except Exception as exc:
            log.error("flushing last-used times failed (%s); will retry", type(exc).__name__)
            for key_id, ts in last_used.items():
                self._last_used[key_id] = max(ts, self._last_used.get(key_id, 0))
            for k, n in usage.items():
                self._usage[k] = self._usage.get(k, 0) + n

    async def aclose(self) -> None:
        self.flush()
        await _close_all((*self.runtime.packs.values(), self.runtime.limiter))
        self.store.close()
        self.audit.close()
        self.redactor.release()
        log.info("kernel stopped; last-used times flushed")

    # -- the hot path's helpers ------------------------------------------------------------------------
    async def authenticate(self, credential: str | None, *, transport: str = "") -> Principal | None:
        """A principal for the credential, or None; any exception is a None (fail closed)."""
        try:
            principal = await self.runtime.auth.authenticate(credential)
        except Exception as exc:
            log.error("auth provider failed (%s); denying", type(exc).__name__)
            principal = None
        if principal is None:
            self.metrics.auth_failures.labels(transport or "unknown").inc()
            self.record(step="auth", outcome="denied", error_class="permission", transport=transport or None)
            return None
        self._last_used[principal.key_id] = self.clock()
        return principal

    def record(self, **fields: Any) -> None:
        """One audit line. A failed write is logged loudly and counted, never silently dropped."""
        fields["time"] = round(self.clock(), 6)
        try:
            self.audit.write(fields)
        except Exception as exc:
            self.metrics.audit_errors.inc()
            log.error("AUDIT WRITE FAILED (%s): %s", type(exc).__name__, fields.get("step"))

    def executed(self, brand: str) -> None:
        """Count an executed call toward the brand's monthly soft quota (counted and warned, never enforced)."""
        now = self.clock()
        if not (self._month_start <= now < self._month_end):
            self._roll_month(now)
        key = (brand, self._month)
        self._usage[key] = self._usage.get(key, 0) + 1
        count = self._monthly.get(key)
        if count is None:
            count = self.store.usage(brand, self._month)
        count += 1
        self._monthly[key] = count
        self.metrics.gauge(self.metrics.monthly_calls, brand).set(count)
        cfg = self.runtime.config.brands.get(brand)
        quota = self.runtime.config.plans[cfg.plan].monthly_quota if cfg else None
        if quota and (count == quota + 1 or (count > quota and count % 1000 == 0)):
            log.warning("brand %s is over its monthly soft quota (%d > %d calls); not enforced", brand, count, quota)

    def _roll_month(self, now: float) -> None:
        moment = time.gmtime(now)
        self._month = time.strftime("%Y-%m", moment)
        self._month_start = calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0))
        year, month = (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
        self._month_end = calendar.timegm((year, month, 1, 0, 0, 0))

    def _publish_quotas(self) -> None:
        for brand, cfg in self.runtime.config.brands.items():
            quota = self.runtime.config.plans[cfg.plan].monthly_quota
            if quota:
                self.metrics.monthly_quota.labels(brand).set(quota)

    def approval_requested(self) -> None:
        """Refresh the pending gauge; only approval-gated calls (human-paced) pay for it."""
        self._refresh_pending_gauge()

    def observe_decision(self, approval: ApprovalRequest) -> None:
        """Count a decision the first time the server sees it (decisions may come from another process)."""
        if approval.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED):
            self.metrics.approval_decisions.labels(str(approval.status)).inc()
            if approval.decided_at is not None:
                self.metrics.approval_decision_seconds.observe(max(0.0, approval.decided_at - approval.created_at))
        elif approval.status is ApprovalStatus.EXPIRED:
            self.metrics.approval_decisions.labels("expired").inc()
        self._refresh_pending_gauge()

    def _refresh_pending_gauge(self) -> None:
        try:
            counts = self.store.pending_counts()
        except Exception:
            return
        for brand in self.runtime.config.brands:
            self.metrics.approvals_pending.labels(brand).set(counts.get(brand, 0))

    # -- operations shared by the CLI and the testing plugin ---------------------------------------------
    def mint_key(
        self,
        *,
        brand: str,
        scopes: list[str],
        name: str,
        role: str = "viewer",
        expires_in: float | None = None,
    ) -> tuple[str, KeyRecord]:
        """Validate and store a new key; returns (raw key, record). The raw key is never stored."""
        from qaqnuz.config import SCOPE_RE

        config = self.runtime.config
        brand_cfg = config.brands.get(brand)
        if brand_cfg is None:
            raise UsageError(
                f"unknown brand {brand!r}; configured brands: {', '.join(sorted(config.brands)) or 'none'}"
            )
        if not name.strip():
            raise UsageError("--name is required: name the key after who or what uses it")
        if role not in brand_cfg.roles:
            raise UsageError(
                f"brand {brand!r} has no role {role!r}; its roles: {', '.join(sorted(brand_cfg.roles)) or 'none'} "
                f"(define roles under [brands.{brand}] roles)"
            )
        ceiling = set(brand_cfg.roles[role])
        for scope in scopes:
            if not SCOPE_RE.match(scope):
                raise UsageError(
                    f"invalid scope {scope!r}: scopes are '<resource>.<action>' in lower case, e.g. orders.read; "
                    f"wildcards are not allowed"
                )
            if scope not in ceiling:
                raise UsageError(
                    f"scope {scope!r} is outside role {role!r}'s ceiling for brand {brand!r} "
                    f"({', '.join(sorted(ceiling)) or 'empty'})"
                )
        max_lifetime = parse_duration(config.server.max_key_lifetime)
        if expires_in is not None and (expires_in <= 0 or expires_in > max_lifetime):
            raise UsageError(
                f"--expires-in must be more than 0 and at most {config.server.max_key_lifetime} "
                f"([server] max_key_lifetime)"
            )
        plan = config.plans[brand_cfg.plan]
        if not plan.entitled:
            raise UsageError(f"brand {brand!r} is on plan {brand_cfg.plan!r}, which is not entitled to MCP access")
        now = self.clock()
        parsed = new_key(config.server.key_prefix)
        record = KeyRecord(
            key_id=parsed.key_id,
            name=name,
            brand=brand,
            role=role,
            scopes=tuple(sorted(set(scopes))),
            hash=key_hash(self.secret, parsed.raw),
            created_at=now,
            expires_at=now + expires_in if expires_in else now + max_lifetime,
            revoked_at=None,
            last_used_at=None,
        )
        try:
            self.store.insert_key(record, max_active=plan.max_keys, now=now)
        except KeyCapReached as exc:
            raise UsageError(
                f"brand {brand!r} already has {exc.active} active keys, the cap of plan {brand_cfg.plan!r} "
                f"({exc.cap}); revoke one with `qaqnuz keys revoke KEY_ID` or move the brand to a larger plan"
            ) from None
        self.record(step="key", outcome="minted", brand=brand, key_id=record.key_id, role=role)
        return parsed.raw, record


def _loopback_only(auth: Any) -> bool:
    return getattr(auth, "loopback_only", False) is True


def _stamp(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


async def _close_all(providers: Any) -> None:
    """Await `aclose()` on each distinct provider that has one; a failure is logged, never raised."""
    for provider in {id(p): p for p in providers}.values():
        closer = getattr(provider, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:
                log.warning("closing a provider failed (%s)", type(exc).__name__)
