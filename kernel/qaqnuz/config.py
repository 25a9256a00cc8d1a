"""Configuration: TOML decoded into msgspec structs, with every error reported at its location.

Decoding is done field by field so one run reports every problem (`[brands.acme] plan: ...`), not just
the first. `QAQNUZ_<SECTION>__<KEY>` environment variables override file values before validation.
Provider settings (`[plugins.<name>]`, `[packs.<pack>]`) are validated later against the settings
struct the provider registered, because only the plugin manager knows those types.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

from qaqnuz.errors import ConfigError
from qaqnuz.secrets import Secret, SecretRef, resolve

SCOPE_RE = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\Z")
TOOL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
ENV_PREFIX = "QAQNUZ_"


def parse_duration(text: str | float | int) -> float:
    """'90s', '5m', '24h', '30d', '250ms' or a bare number of seconds, as seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not text >= 0:  # NaN too
            raise ValueError("a duration cannot be negative")
        seconds = float(text)
    else:
        match = _DURATION_RE.match(str(text))
        if not match:
            raise ValueError(f"{str(text)[:40]!r} is not a duration; write e.g. '250ms', '5s', '10m', '24h' or '30d'")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    return seconds


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < 0.1:
        raise ValueError(f"{text!r} is too short; use at least 100ms")
    return seconds


def parse_positive_duration(text: str | float | int) -> float:
    """A duration that must be more than zero (timeouts, waits), in seconds."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be more than 0")
    return seconds


def parse_rate(text: str) -> tuple[int, float]:
    """'60/60s' or '300/m' as (count, window seconds)."""
    match = _RATE_RE.match(str(text))
    if not match or len(match.group(1)) > 18 or int(match.group(1)) < 1:
        raise ValueError(f"{str(text)[:40]!r} is not a rate; write '<count>/<window>', e.g. '60/60s' or '300/m'")
    window = float(match.group(2) or 1) * _UNITS[match.group(3)]
    if window <= 0:
        raise ValueError(f"{text!r} has an empty window")
    return int(match.group(1)), window


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for config tables: unknown keys are errors."""


class ServerConfig(Strict):
    name: str = "qaqnuz-mcp"
    store: str | SecretRef = "sqlite:///qaqnuz.db"  # a URL; one with a password only by reference
    secret_file: str = "qaqnuz.secret"  # noqa: S105 - a file name, not a secret
    key_prefix: str = "qx_live_"
    transport: str = "stdio"
    sync_interval: str = "5s"
    last_used_flush: str = "60s"
    audit_file: str = "qaqnuz-audit.jsonl"
    limiter_file: str = ""  # the `sqlite` limiter's file; empty: beside the store (see Config.limiter_path)
    max_key_lifetime: str = "366d"
    log_level: str = "info"
    #: "text" (one human line per event) or "json" (one JSON object per line, for a log pipeline).
    log_format: str = "text"
    #: At most this many tools get their own `tool` label on the per-tool duration histogram, per brand;
    #: calls of any other tool are counted under tool="(other)". 0: no per-tool duration at all.
    metrics_tool_limit: int = 200
    #: Tool calls running at once in this process, over all keys, and for any one key: a call beyond either
    #: is refused at once (retryable), so one client cannot hold every worker of the server.
    max_in_flight: int = 256
    max_in_flight_per_key: int = 16


class LimitsConfig(Strict):
    per_key: str = "60/60s"
    per_brand: str = "300/60s"


class PlanConfig(Strict):
    entitled: bool = False
    max_keys: int | None = None
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    monthly_quota: int | None = None


class ToolSettingsConfig(Strict):
    enabled: bool = True
    exposable: bool = False
    approval: bool = False


class LimitsOverride(Strict):
    """A brand's limits: each rate given replaces the plan's; one left out keeps the plan's."""

    per_key: str | None = None
    per_brand: str | None = None


class BrandConfig(Strict):
    plan: str
    roles: dict[str, list[str]] = msgspec.field(default_factory=dict)
    tools: dict[str, ToolSettingsConfig] = msgspec.field(default_factory=dict)
    limits: LimitsOverride | None = None
    #: `[brands.<brand>.packs.<pack>]`: settings of that pack for this brand's calls (validated by the kernel
    #: against the pack's settings struct).
    packs: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class ApprovalsConfig(Strict):
    pending_ttl: str = "24h"
    valid_for: str = "1h"
    wait_seconds: float = 0.0
    max_pending_per_key: int = 20


class AuditConfig(Strict):
    """`[audit]`: how the audit file is made durable, rotated and anchored, and what a failing sink does."""

    #: "batch": written at once, flushed to disk every `fsync_interval` (a call never waits on the disk);
    #: "every": flushed to disk before the call that made the record goes on.
    fsync: str = "batch"
    fsync_interval: str = "1s"
    #: Start a new file when the current one reaches this size ("0": never); the chain goes on across files.
    rotate_size: str = "100MiB"
    #: Start a new file when the current one's first record is this old ("": never).
    rotate_every: str = ""
    #: "fail": while records cannot be written, calls are refused as retryable; "continue": calls are served
    #: and every lost record is counted (`qaqnuz_audit_errors_total`).
    on_error: str = "fail"
    #: The name the newest record is anchored under in the store ("": the audit file's absolute path). Replicas
    #: that share a store but each keep their own audit file need distinct names only if their paths match.
    anchor: str = ""


class PluginsConfig(Strict):
    auth: str = "apikey"
    policies: list[str] = msgspec.field(default_factory=lambda: ["scope"])
    limiter: str = "sqlite"
    approver: str = "queue"
    audit: list[str] = msgspec.field(default_factory=lambda: ["file"])
    routes: list[str] = msgspec.field(default_factory=list)
    #: Tracers that receive every tools/call and tools/list as a trace (`qaqnuz_tracers`, e.g. "otel").
    tracing: list[str] = msgspec.field(default_factory=list)


class PackConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One `[packs.<pack>]` table: the kernel's own keys, and the provider's settings (the rest)."""

    type: str
    brands: tuple[str, ...] | None = None
    shared: bool = False
    settings: dict[str, Any] = msgspec.field(default_factory=dict)

    def serves(self, brand: str) -> bool:
        """Whether the pack's tools may be seen and called by `brand` (`brands = [...]` limits it)."""
        return self.brands is None or brand in self.brands


#: Keys of `[packs.<pack>]` the kernel reads itself; every other key is the provider's.
PACK_KERNEL_KEYS = ("type", "brands", "shared")
#: Keys `[brands.<brand>.packs.<pack>]` may not override.
PACK_FIXED_KEYS = (*PACK_KERNEL_KEYS, "tools")


#: Keys of `[plugins]` that select providers; every other key there is a `[plugins.<name>]` table.
PLUGIN_SELECTORS = frozenset(f.name for f in msgspec.structs.fields(PluginsConfig))

DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "starter": {"entitled": False, "max_keys": 0, "limits": {"per_key": "30/60s", "per_brand": "60/60s"}},
    "growth": {
        "entitled": True,
        "max_keys": 5,
        "limits": {"per_key": "60/60s", "per_brand": "300/60s"},
        "monthly_quota": 50_000,
    },
    "enterprise": {
        "entitled": True,
        "max_keys": 100,
        "limits": {"per_key": "600/60s", "per_brand": "6000/60s"},
        "monthly_quota": 5_000_000,
    },
}


class Config(msgspec.Struct, kw_only=True, frozen=True):
    """A validated configuration. Paths are absolute (resolved against the config file's folder)."""

    server: ServerConfig
    plans: dict[str, PlanConfig]
    brands: dict[str, BrandConfig]
    approvals: ApprovalsConfig
    plugins: PluginsConfig
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    plugin_settings: dict[str, dict[str, Any]]
    packs: dict[str, PackConfig]
    path: str | None = None
    base_dir: str = "."
    #: `[server] store` given as a secret reference, resolved when the config was read (None: a plain URL).
    store_secret: Secret | None = None
    #: Packs left out because their table is invalid (only in a config with problems): what tools they would
    #: provide is unknown, so references to tools are not checked against the others alone.
    broken_packs: tuple[str, ...] = ()

    def resolve(self, relative: str) -> str:
        """A path from config, made absolute against the config file's folder."""
        return str(Path(self.base_dir, os.path.expanduser(relative)))

    def limiter_path(self) -> str:
        """Where the `sqlite` limiter keeps its windows: `[server] limiter_file`; else beside the embedded
        store's file (`qaqnuz.db` -> `qaqnuz-limits.db`), so every process on one store shares its limits;
        else `qaqnuz-limits.db` beside the config."""
        if self.server.limiter_file:
            return self.resolve(self.server.limiter_file)
        store = self.store_url
        prefix = "sqlite:///"
        rest = store[len(prefix) :] if store.startswith(prefix) else ""
        if rest and "?" not in rest and not rest.startswith(("file:", ":memory:")):
            path = Path(self.resolve(rest))
            return str(path.with_name(f"{path.stem}-limits.db"))
        return self.resolve("qaqnuz-limits.db")

    @property
    def store_url(self) -> str:
        """`[server] store`, resolved if it is a secret reference. It may hold a password: never log it."""
        if self.store_secret is not None:
            return self.store_secret.reveal()
        return self.server.store if isinstance(self.server.store, str) else ""

    @property
    def store_scheme(self) -> str:
        """The scheme of `[server] store`, which names the store provider ("sqlite", "postgresql"); "" when
        the URL was invalid (and reported)."""
        url = self.store_url
        return url.split("://", 1)[0].lower() if "://" in url else ""

    def limits_for(self, brand: str) -> LimitsConfig:
        cfg = self.brands[brand]
        plan = self.plans[cfg.plan].limits
        if cfg.limits is None:
            return plan
        return LimitsConfig(
            per_key=cfg.limits.per_key or plan.per_key, per_brand=cfg.limits.per_brand or plan.per_brand
        )


# -- loading -----------------------------------------------------------------------------------------
def default_config_path() -> Path:
    """`$QAQNUZ_CONFIG`, then `./qaqnuz.toml`."""
    return Path(os.environ.get("QAQNUZ_CONFIG") or "qaqnuz.toml")


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate a config file; raise ConfigError listing all."""
    config, problems = load_config_lenient(path, env=env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def load_config_lenient(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[Config | None, list[str]]:
    """The config as far as it is valid (broken tables left out or defaulted), and every problem found.

    `config check` uses this to go on validating providers and packs after a structural error, so one run
    reports every error of a file. None only when the file cannot be read or parsed at all.
    """
    file = Path(path) if path is not None else default_config_path()
    try:
        raw_text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{file}: no such config file; create one with `qaqnuz init` or pass --config"]
    except UnicodeDecodeError as exc:
        return None, [f"{file}: not UTF-8 text (an invalid byte at offset {exc.start}); save the file as UTF-8"]
    except OSError as exc:
        return None, [f"{file}: cannot read the config file ({exc.strerror})"]
    return parse_config_lenient(raw_text, source=str(file), base_dir=str(file.resolve().parent), env=env)


def parse_config(
    text: str, *, source: str = "<config>", base_dir: str = ".", env: Mapping[str, str] | None = None
) -> Config:
    config, problems = parse_config_lenient(text, source=source, base_dir=base_dir, env=env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def parse_config_lenient(
    text: str, *, source: str = "<config>", base_dir: str = ".", env: Mapping[str, str] | None = None
) -> tuple[Config | None, list[str]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{source}: not valid TOML: {exc}"]
    except ValueError:  # an integer longer than Python converts (4,300 digits)
        return None, [f"{source}: not valid TOML here: a number is too long; no setting takes one that large"]
    problems: list[str] = []
    overridden = apply_env_overrides(data, os.environ if env is None else env, problems)
    config = validate(data, problems, source=source, base_dir=base_dir)
    return config, [_blame_env(problem, overridden) for problem in problems]


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """`QAQNUZ_SERVER__STORE=...` sets `[server] store`; deeper paths use more `__`.

    Returns the location (`[server] store`) of every value set, mapped to the variable that set it.
    """
    overridden: dict[str, str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if any(not p for p in parts):
            problems.append(f"env {name}: empty section or key; write QAQNUZ_<SECTION>__<KEY>")
            continue
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except ValueError:  # TOMLDecodeError, or a number too long to convert
            value = raw  # a bare string
        table = data
        for part in parts[:-1]:
            nested = table.setdefault(part, {})
            if not isinstance(nested, dict):
                problems.append(f"env {name}: [{'.'.join(parts[:-1])}] is not a table")
                break
            table = nested
        else:
            table[parts[-1]] = value
            overridden[f"[{'.'.join(parts[:-1])}] {parts[-1]}"] = name
    return overridden


def _blame_env(problem: str, overridden: Mapping[str, str]) -> str:
    """A problem about a value an environment variable set names that variable."""
    for location, name in overridden.items():
        if problem.startswith(f"{location}:"):
            return f"env {name}: {problem}"
    return problem


TOP_LEVEL = ("server", "plans", "brands", "approvals", "audit", "plugins", "packs")


def validate(data: dict[str, Any], problems: list[str], *, source: str = "<config>", base_dir: str = ".") -> Config:
    """Every structural and cross-reference check; problems are appended, located.

    Returns the config as far as it is valid: a broken table is defaulted (`[server]`, `[plugins]`, ...)
    or left out (a brand, a pack), so the caller may go on checking the rest. It is only usable as a
    whole when `problems` stayed empty.
    """
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(f"{source}: [{key}]: unknown section; valid sections: {', '.join(TOP_LEVEL)}")

    server = _table(data, "server", ServerConfig, "[server]", problems) or ServerConfig()
    approvals = _table(data, "approvals", ApprovalsConfig, "[approvals]", problems) or ApprovalsConfig()
    audit = _table(data, "audit", AuditConfig, "[audit]", problems) or AuditConfig()

    raw_plugins = data.get("plugins", {})
    if not isinstance(raw_plugins, dict):
        problems.append("[plugins]: must be a table")
        raw_plugins = {}
    selectors = {k: v for k, v in raw_plugins.items() if k in PLUGIN_SELECTORS}
    plugin_settings: dict[str, dict[str, Any]] = {}
    for key, value in raw_plugins.items():
        if key in PLUGIN_SELECTORS:
            continue
        if isinstance(value, dict):
            plugin_settings[key] = value
        else:
            problems.append(
                f"[plugins] {key}: unknown key; valid keys: {', '.join(sorted(PLUGIN_SELECTORS))}, "
                f"or a [plugins.<provider>] settings table"
            )
    plugins = _table({"plugins": selectors}, "plugins", PluginsConfig, "[plugins]", problems) or PluginsConfig()

    plans: dict[str, PlanConfig] = {}
    raw_plans = data.get("plans", {})
    if not isinstance(raw_plans, dict):
        problems.append("[plans]: must be a table of plans")
        raw_plans = {}
    for name in {*DEFAULT_PLANS, *raw_plans}:
        merged = _merge(DEFAULT_PLANS.get(name, {}), raw_plans.get(name, {}))
        plan = _table({name: merged}, name, PlanConfig, f"[plans.{name}]", problems)
        if plan is None:
            continue
        broken = len(problems)
        for dim in ("per_key", "per_brand"):
            _check(parse_rate, getattr(plan.limits, dim), f"[plans.{name}.limits] {dim}", problems)
        if plan.max_keys is not None and plan.max_keys < 0:
            problems.append(f"[plans.{name}] max_keys: must be 0 or more")
        if len(problems) == broken:
            plans[name] = plan

    raw_packs = data.get("packs", {})
    if not isinstance(raw_packs, dict):
        problems.append("[packs]: must be a table of packs")
        raw_packs = {}
    raw_brands = data.get("brands", {})
    if not isinstance(raw_brands, dict):
        problems.append("[brands]: must be a table of brands")
        raw_brands = {}

    brands: dict[str, BrandConfig] = {}
    for name in raw_brands:
        where = f"[brands.{name}]"
        if not NAME_RE.match(name):
            problems.append(f"{where}: brand names are lower case letters, digits, '_' or '-' (max 64)")
        brand = _table(raw_brands, name, BrandConfig, where, problems)
        if brand is None:
            continue
        if brand.plan not in plans and brand.plan not in raw_plans:  # an invalid plan is reported at the plan
            known = ", ".join(sorted(plans))
            problems.append(f"{where} plan: undefined plan {brand.plan!r}; defined plans: {known}")
        for role, scopes in brand.roles.items():
            if not NAME_RE.match(role):
                problems.append(f"{where} roles.{role}: role names are lower case letters, digits, '_' or '-'")
            for scope in scopes:
                if not SCOPE_RE.match(scope):
                    problems.append(
                        f"{where} roles.{role}: invalid scope {scope!r}; scopes are '<resource>.<action>' "
                        f"in lower case (e.g. 'orders.read'), no wildcards"
                    )
        for tool in brand.tools:
            if not TOOL_NAME_RE.match(tool):
                problems.append(f"{where} tools.{tool}: invalid tool name; use [A-Za-z0-9_.-], 1-128 chars")
        if brand.limits is not None:
            for dim in ("per_key", "per_brand"):
                if getattr(brand.limits, dim) is not None:
                    _check(parse_rate, getattr(brand.limits, dim), f"{where} limits.{dim}", problems)
        brands[name] = brand  # with problems, kept (if its plan is valid) so later checks can still run

    packs: dict[str, PackConfig] = {}
    broken_packs: list[str] = []
    for name, raw in raw_packs.items():
        where = f"[packs.{name}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a table")
            broken_packs.append(name)
            continue
        if not isinstance(raw.get("type"), str):
            problems.append(f'{where} type: missing; name the tool provider, e.g. type = "sql"')
            broken_packs.append(name)
            continue
        pack_brands = raw.get("brands")
        shared = raw.get("shared", False)
        broken = len(problems)
        if pack_brands is not None:
            if not isinstance(pack_brands, list) or not all(isinstance(b, str) for b in pack_brands):
                problems.append(f'{where} brands: a list of brand names, e.g. brands = ["acme"]')
                pack_brands = None
            else:
                for brand_name in pack_brands:
                    if brand_name not in raw_brands:
                        known = ", ".join(sorted(raw_brands)) or "none"
                        problems.append(f"{where} brands: unknown brand {brand_name!r}; configured brands: {known}")
        if not isinstance(shared, bool):
            problems.append(f"{where} shared: true or false")
            shared = False
        if len(problems) != broken:
            broken_packs.append(name)
            continue
        packs[name] = PackConfig(
            type=raw["type"],
            brands=tuple(pack_brands) if pack_brands is not None else None,
            shared=shared,
            settings={k: v for k, v in raw.items() if k not in PACK_KERNEL_KEYS},
        )

    for brand_name, brand in brands.items():
        for pack_name, override in brand.packs.items():
            where = f"[brands.{brand_name}.packs.{pack_name}]"
            if pack_name not in raw_packs:
                known = ", ".join(sorted(raw_packs)) or "none"
                problems.append(f"{where}: no pack named {pack_name!r} is configured; configured packs: {known}")
                continue
            pack = packs.get(pack_name)
            if pack is not None and not pack.serves(brand_name):
                problems.append(
                    f"{where}: pack {pack_name!r} is limited to brands {', '.join(pack.brands or ())}; "
                    f"add {brand_name!r} to [packs.{pack_name}] brands or remove these settings"
                )
            for key in override:
                if key in PACK_FIXED_KEYS:
                    problems.append(
                        f"{where} {key}: cannot be set per brand; {key} is defined once, in [packs.{pack_name}] "
                        f"(per-brand settings change where and as whom a pack connects, not what it is)"
                    )

    for key in ("sync_interval", "last_used_flush", "max_key_lifetime"):
        _check(_positive_duration, getattr(server, key), f"[server] {key}", problems)
    for key in ("pending_ttl", "valid_for"):
        _check(_positive_duration, getattr(approvals, key), f"[approvals] {key}", problems)
    if not 0 <= approvals.wait_seconds <= 300:  # NaN fails here too
        problems.append("[approvals] wait_seconds: must be between 0 and 300")
    if approvals.max_pending_per_key < 1:
        problems.append("[approvals] max_pending_per_key: must be at least 1")
    store_secret, store_ok = _store_url(server.store, base_dir, problems)
    if not store_ok:
        server = msgspec.structs.replace(server, store="")  # reported: no store is built from it
        store_secret = None
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}_(?:[a-z0-9]{1,16}_)?", server.key_prefix):
        problems.append(f"[server] key_prefix: {server.key_prefix!r} must look like 'qx_live_'")
    if server.log_level.lower() not in {"debug", "info", "warning", "error"}:
        problems.append("[server] log_level: one of debug, info, warning, error")
    if server.log_format not in ("text", "json"):
        problems.append(f'[server] log_format: {server.log_format!r}; write "text" or "json"')
    if server.metrics_tool_limit < 0:
        problems.append("[server] metrics_tool_limit: must be 0 or more")
    for name in ("max_in_flight", "max_in_flight_per_key"):
        if getattr(server, name) < 1:
            problems.append(f"[server] {name}: must be at least 1")
    audit = _checked_audit(audit, problems)
    return Config(
        server=server,
        plans=plans,
        brands={name: brand for name, brand in brands.items() if brand.plan in plans},
        approvals=approvals,
        audit=audit,
        plugins=plugins,
        plugin_settings=plugin_settings,
        packs=packs,
        path=None if source.startswith("<") else str(Path(source).resolve()),
        base_dir=base_dir,
        broken_packs=tuple(broken_packs),
        store_secret=store_secret,
    )


_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def parse_size(text: str | int) -> int:
    """'100MiB', '1GB', '512KiB' or a bare number of bytes, as bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. '100MiB', '1GiB', '500MB' or '0' (never)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"]


def _checked_audit(audit: AuditConfig, problems: list[str]) -> AuditConfig:
    """Report every bad `[audit]` value (a config with any is not used, so the values are returned as read)."""
    if audit.fsync not in ("batch", "every"):
        problems.append(f'[audit] fsync: {audit.fsync!r}; write "batch" (flush every fsync_interval) or "every"')
    if audit.on_error not in ("fail", "continue"):
        problems.append(f'[audit] on_error: {audit.on_error!r}; write "fail" (refuse calls) or "continue"')
    _check(_positive_duration, audit.fsync_interval, "[audit] fsync_interval", problems)
    _check(parse_size, audit.rotate_size, "[audit] rotate_size", problems)
    if audit.rotate_every:
        try:
            if parse_duration(audit.rotate_every) < 60:
                problems.append(f"[audit] rotate_every: {audit.rotate_every!r} is too short; use at least 1m")
        except ValueError as exc:
            problems.append(f"[audit] rotate_every: {exc}")
    return audit


def store_credentials(url: str) -> list[str]:
    """What of a store URL must never be logged: the URL, and its password as written and as decoded, from
    the user part or the query."""
    parts = urlsplit(url)
    found = [url]
    raw = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
    found += [raw, unquote(raw)]
    found += [value for name, value in parse_qsl(parts.query) if name.lower() == "password"]
    return [value for value in dict.fromkeys(found) if value]


def _holds_password(url: str) -> bool:
    """A password in the user part (`user:pw@host`) or in the query (`?password=...`)."""
    parts = urlsplit(url)
    if re.match(r"[^:/]+://[^/@?]*:[^/@?]*@", url):
        return True
    return any(name.lower() == "password" for name, _ in parse_qsl(parts.query, keep_blank_values=True))


def _store_url(store: str | SecretRef, base_dir: str, problems: list[str]) -> tuple[Secret | None, bool]:
    """Check `[server] store`: a URL whose scheme names the provider, with no password written into config.
    A secret reference is resolved now; its value is never quoted in a problem."""
    where = "[server] store"
    secret: Secret | None = None
    if isinstance(store, SecretRef):
        try:
            secret = resolve(store, where, base_dir)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None, False
        url, shown = secret.reveal().strip(), "the URL its reference holds"
        secret = Secret(url)
    else:
        url, shown = store, "the URL"  # never quoted: a malformed URL may still hold a password
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*://.*", url, flags=re.DOTALL):
        problems.append(
            f"{where}: {shown} is not a store URL; write e.g. sqlite:///qaqnuz.db or postgresql://host/db "
            f"(a lowercase scheme, which names the store provider, then ://)"
        )
        return None, False
    if secret is None and _holds_password(url):
        problems.append(
            f'{where}: the URL carries a password; keep it out of config: store = {{ env = "QAQNUZ_STORE_URL" }} '
            f'(or {{ file = "path" }}) holding the whole URL, or the database client\'s own password file'
        )
        return None, False
    return secret, True


def decode_settings(raw: Mapping[str, Any], settings_type: type[msgspec.Struct], where: str) -> Any:
    """Validate a provider's settings table; raises ConfigError naming each bad key."""
    problems: list[str] = []
    value = _table({"t": dict(raw)}, "t", settings_type, where, problems)
    if problems:
        raise ConfigError(problems)
    return value


# -- helpers -------------------------------------------------------------------------------------------
def _merge(base: Mapping[str, Any], override: Any) -> Any:
    if not isinstance(override, dict):
        return override
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _check(parse: Any, value: Any, where: str, problems: list[str]) -> None:
    try:
        parse(value)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")


def _table(parent: Mapping[str, Any], key: str, struct: type[Any], where: str, problems: list[str]) -> Any:
    """Decode `parent[key]` into `struct`, collecting one problem per bad field (not just the first)."""
    raw = parent.get(key, {})
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table, got {_kind(raw)}")
        return None
    fields = _fields(struct)  # type: ignore[arg-type]  # a class is hashable; mypy reads type[Any] as not
    before = len(problems)
    for name in raw:
        if name not in fields:
            problems.append(f"{where} {name}: unknown key; valid keys: {', '.join(sorted(fields)) or 'none'}")
    for name, (info, nested, is_dict, is_list) in fields.items():
        if name not in raw:
            if info.required:
                problems.append(f"{where} {name}: missing required key")
            continue
        value = raw[name]
        if nested is not None and isinstance(value, dict) and is_dict:
            for sub_key in value:
                _table(value, sub_key, nested, _child(where, f"{name}.{sub_key}"), problems)
            continue
        if nested is not None and isinstance(value, dict) and not is_list:
            _table(raw, name, nested, _child(where, name), problems)
            continue
        if nested is not None and isinstance(value, list) and is_list:
            for index, item in enumerate(value):
                _table({str(index): item}, str(index), nested, _child(where, f"{name}[{index}]"), problems)
            continue
        try:
            msgspec.convert(value, type=info.type, strict=True)
        except msgspec.ValidationError as exc:
            if nested is not None and nested.__name__ == "SecretRef":
                problems.append(
                    f"{where} {name}: a secret is given by reference, never written into config: "
                    f'{{ env = "NAME" }} or {{ file = "path" }}'
                )
            else:
                problems.append(f"{where} {name}: {_clean(str(exc), value)}")
    if len(problems) > before:
        return None
    try:
        return msgspec.convert(raw, type=struct, strict=True)
    except msgspec.ValidationError as exc:  # pragma: no cover - each field was checked above
        problems.append(f"{where}: {exc}")
        return None


_FieldPlan = tuple[Any, "type[msgspec.Struct] | None", bool, bool]


@functools.cache
def _fields(struct: Any) -> dict[str, _FieldPlan]:
    """A struct's fields with what `_table` asks of each type (read once per class: msgspec resolves the
    annotations on every `fields()` call, and a catalogue's config can hold ten thousand tool tables)."""
    return {
        f.name: (f, _struct_in(f.type), _is_container(f.type, dict), _is_container(f.type, list))
        for f in msgspec.structs.fields(struct)
    }


def _struct_in(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct type behind `S`, `S | None` or `dict[str, S]`, if any."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    for arg in get_args(tp):
        found = _struct_in(arg)
        if found is not None:
            return found
    return None


def _is_container(tp: Any, kind: type) -> bool:
    """Whether `tp` is `kind[...]` or a union holding one (e.g. `dict[str, S] | None`)."""
    return get_origin(tp) is kind or any(get_origin(arg) is kind for arg in get_args(tp))


def _child(where: str, key: str) -> str:
    """`[brands.acme]` + `limits` → `[brands.acme.limits]`; `[packs.shop] tools[0]` + `input` → `... tools[0].input`."""
    if where.startswith("[") and where.endswith("]") and " " not in where:
        return f"{where[:-1]}.{key}]" if not key.split(".")[-1].endswith("]") else f"{where} {key}"
    return f"{where}.{key}"


def _kind(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}.get(
        type(value), type(value).__name__
    )


def _clean(message: str, value: Any) -> str:
    """msgspec's message without its `$` path (we give our own location)."""
    message = re.sub(r" - at `\$[^`]*`", "", message).replace("Expected `", "expected `")
    return message if ", got `" in message else f"{message} (got {_kind(value)})"
