"""`[plugins.http]`: where to listen and how strictly to treat requests."""

from __future__ import annotations

import ipaddress

import msgspec

from qaqnuz import ConfigError, SecretRef, parse_positive_duration

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class MetricsAuth(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Who may scrape `/metrics`: a bearer token (by reference), source networks, or both (both must hold)."""

    token: SecretRef | None = None
    allow: list[str] = msgspec.field(default_factory=list)


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    query_token: bool = True
    allowed_hosts: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_HOSTS))
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_ORIGINS))
    max_body_bytes: int = 4 * 1024 * 1024
    request_timeout: str = "30s"
    header_timeout: str = "10s"
    keep_alive_timeout: str = "5s"
    shutdown_timeout: str = "30s"
    session_idle_timeout: str = "30m"
    max_sessions: int = 10_000
    max_sessions_per_key: int = 100
    max_sessions_per_brand: int = 1000
    max_connections: int = 1000
    auth_failures_per_minute: int = 30
    metrics: bool = True
    access_log: bool = True
    fast_path: bool = True
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    metrics_auth: MetricsAuth | None = None


class Limits(msgspec.Struct, frozen=True):
    request_timeout: float
    header_timeout: float
    keep_alive_timeout: float
    shutdown_timeout: float
    session_idle_timeout: float


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check(settings: HttpSettings) -> Limits:
    """Validate what msgspec cannot; every problem is reported with its location."""
    problems: list[str] = []
    where = "[plugins.http]"
    durations: dict[str, float] = {}
    for name in ("request_timeout", "header_timeout", "keep_alive_timeout", "shutdown_timeout", "session_idle_timeout"):
        try:
            durations[name] = parse_positive_duration(getattr(settings, name))
        except ValueError as exc:
            problems.append(f"{where} {name}: {exc}")
    if not 0 <= settings.port <= 65535:
        problems.append(f"{where} port: must be between 0 and 65535")
    if settings.max_body_bytes < 1024:
        problems.append(f"{where} max_body_bytes: must be at least 1024")
    if settings.auth_failures_per_minute < 0:
        problems.append(f"{where} auth_failures_per_minute: 0 (off) or more")
    if settings.max_connections < 1:
        problems.append(f"{where} max_connections: must be at least 1")
    for name in ("max_sessions", "max_sessions_per_key", "max_sessions_per_brand"):
        if getattr(settings, name) < 1:
            problems.append(f"{where} {name}: must be at least 1")
    if not settings.host:
        problems.append(f"{where} host: must not be empty")
    auth = settings.metrics_auth
    if auth is not None:
        if auth.token is None and not auth.allow:
            problems.append(f"{where} metrics_auth: give a token, an allow list of networks, or both")
        for network in auth.allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                problems.append(f"{where} metrics_auth.allow: {network!r} is not an IP address or network")
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(
                f"{where} trusted_proxies: {proxy!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
            )
    for name in ("allowed_hosts", "allowed_origins"):
        values = getattr(settings, name)
        if not values:
            problems.append(f"{where} {name}: must not be empty (every request would be refused)")
        if any(v in ("*", "") for v in values):
            problems.append(f"{where} {name}: '*' and empty entries are not allowed; list each host")
    if not is_loopback(settings.host) and settings.query_token:
        problems.append(
            f"{where} query_token: must be false when host is not a loopback address ({settings.host}); "
            f"a key in a URL leaks through proxies, browser history and referrers. Send it in the "
            f"Authorization header, or bind 127.0.0.1"
        )
    if problems:
        raise ConfigError(problems)
    return Limits(**durations)
