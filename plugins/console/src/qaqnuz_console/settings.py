"""`[plugins.console]`: sessions, sign-in throttling, where the console is reached, and OpenID Connect.

Every problem is reported at once, located with `ctx.where`. Durations are strings ("30m", "12h").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec

from qaqnuz import CONSOLE_ROLES, ConfigError, Secret, SecretRef, WebRouteContext, parse_positive_duration


class OidcSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The provider's issuer URL; its `/.well-known/openid-configuration` is read on first use.
    issuer: str
    #: The client id registered with the provider (also the ID token's expected audience).
    client_id: str
    #: The client secret, by reference only ({ env = "NAME" } or { file = "path" }); leave out for a public
    #: client (PKCE is used either way).
    client_secret: SecretRef | None = None
    #: The scopes asked for.
    scopes: list[str] = msgspec.field(default_factory=lambda: ["openid", "email", "profile"])
    #: The ID token claim that names the user in the console and the audit log.
    username_claim: str = "email"
    #: The ID token claim holding the user's groups or roles (a string or a list of strings).
    groups_claim: str = "groups"
    #: Group (or role) value -> console role: "admin", "auditor", "auditor:BRAND" or "brand-admin:BRAND".
    #: The first group of the user, in this table's order, that is listed here wins.
    roles: dict[str, str] = msgspec.field(default_factory=dict)
    #: The role of a user none of whose groups is in `roles`; leave out to refuse such users.
    default_role: str | None = None
    #: The label of the sign-in button.
    label: str = "Sign in with single sign-on"
    #: Clock skew allowed when checking the ID token's times.
    leeway: str = "60s"
    #: How long one request to the provider may take.
    timeout: str = "10s"


class ConsoleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The URL people reach the server at (https://mcp.example.com): the Connect page's MCP URL and the OpenID
    #: Connect redirect URI are built from it. Without it, they are built from the request's own Host (which
    #: the HTTP transport's allowed_hosts already checked).
    public_url: str | None = None
    #: A session ends after this long without a request...
    session_idle: str = "30m"
    #: ...and this long after sign-in, whatever happens.
    session_absolute: str = "12h"
    #: Mark cookies Secure. Default: yes, unless the request came to a loopback address over plain HTTP.
    secure_cookies: bool | None = None
    #: Failed sign-ins allowed per user name and source address within `login_window` before that pair waits.
    login_attempts: int = 5
    #: Failed sign-ins allowed per source address (over all names) within `login_window`.
    source_attempts: int = 20
    #: The window the two counts above are kept for.
    login_window: str = "15m"
    #: Allow password sign-in (local users made with `qaqnuz console users add`).
    passwords: bool = True
    #: OpenID Connect sign-in: `[plugins.console.oidc]`.
    oidc: OidcSettings | None = None


_ROLE_SPEC = re.compile(r"(admin|auditor)|(brand-admin|auditor):([a-z0-9][a-z0-9_-]*)")


@dataclass(frozen=True)
class Oidc:
    issuer: str
    client_id: str
    client_secret: Secret | None
    scopes: tuple[str, ...]
    username_claim: str
    groups_claim: str
    roles: tuple[tuple[str, str, str | None], ...]  # (group, role, brand)
    default_role: tuple[str, str | None] | None
    label: str
    leeway: float
    timeout: float


@dataclass(frozen=True)
class Options:
    public_url: str | None
    session_idle: float
    session_absolute: float
    secure_cookies: bool | None
    login_attempts: int
    source_attempts: int
    login_window: float
    passwords: bool
    oidc: Oidc | None = None


def role_spec(spec: str, brands: frozenset[str]) -> tuple[str, str | None] | str:
    """("role", brand or None) from "admin" / "auditor" / "auditor:acme" / "brand-admin:acme", or an error."""
    match = _ROLE_SPEC.fullmatch(spec)
    if match is None:
        return f"{spec!r} is not a console role; use admin, auditor, auditor:BRAND or brand-admin:BRAND"
    if match.group(1):
        return match.group(1), None
    role, brand = match.group(2), match.group(3)
    if brand not in brands:
        return f"{spec!r} names brand {brand!r}, which is not configured ({', '.join(sorted(brands)) or 'none'})"
    return role, brand


def load(settings: ConsoleSettings, ctx: WebRouteContext, brands: frozenset[str]) -> Options:
    problems: list[str] = []
    where = ctx.where

    def duration(name: str, value: str) -> float:
        try:
            return parse_positive_duration(value)
        except ValueError as exc:
            problems.append(f"{where} {name}: {exc}")
            return 1.0

    public_url = settings.public_url
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            problems.append(f"{where} public_url: {public_url!r} is not an http(s) URL like https://mcp.example.com")
        public_url = public_url.rstrip("/")
    idle = duration("session_idle", settings.session_idle)
    absolute = duration("session_absolute", settings.session_absolute)
    if idle > absolute:
        problems.append(
            f"{where} session_idle: longer than session_absolute; make it at most {settings.session_absolute}"
        )
    window = duration("login_window", settings.login_window)
    for name in ("login_attempts", "source_attempts"):
        if getattr(settings, name) < 1:
            problems.append(f"{where} {name}: must be at least 1")
    oidc: Oidc | None = None
    if settings.oidc is not None:
        oidc = _oidc(settings.oidc, ctx, brands, problems, duration)
    if not settings.passwords and oidc is None:
        problems.append(f"{where} passwords: false leaves no way to sign in; configure [{ctx.section}.oidc] too")
    if problems:
        raise ConfigError(problems)
    return Options(
        public_url=public_url,
        session_idle=idle,
        session_absolute=absolute,
        secure_cookies=settings.secure_cookies,
        login_attempts=settings.login_attempts,
        source_attempts=settings.source_attempts,
        login_window=window,
        passwords=settings.passwords,
        oidc=oidc,
    )


def _oidc(
    settings: OidcSettings, ctx: WebRouteContext, brands: frozenset[str], problems: list[str], duration: object
) -> Oidc:
    where = f"[{ctx.section}.oidc]"
    issuer = settings.issuer.rstrip("/")
    parts = urlsplit(issuer)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        problems.append(f"{where} issuer: {settings.issuer!r} must be an https URL (http only on a loopback address)")
    if not settings.client_id:
        problems.append(f"{where} client_id: required; the id your provider gave this client")
    if "openid" not in settings.scopes:
        problems.append(f"{where} scopes: must include 'openid'")
    roles: list[tuple[str, str, str | None]] = []
    for group, spec in settings.roles.items():
        parsed = role_spec(spec, brands)
        if isinstance(parsed, str):
            problems.append(f"{where} roles.{group}: {parsed}")
        else:
            roles.append((group, parsed[0], parsed[1]))
    default: tuple[str, str | None] | None = None
    if settings.default_role is not None:
        parsed = role_spec(settings.default_role, brands)
        if isinstance(parsed, str):
            problems.append(f"{where} default_role: {parsed}")
        else:
            default = parsed
    if not settings.roles and settings.default_role is None:
        problems.append(f"{where} roles: map at least one group to a console role (or set default_role)")
    secret = None
    if settings.client_secret is not None:
        try:
            secret = ctx.secret(settings.client_secret, f"{where} client_secret")
        except ConfigError as exc:
            problems.extend(exc.problems)
    assert callable(duration)
    return Oidc(
        issuer=issuer,
        client_id=settings.client_id,
        client_secret=secret,
        scopes=tuple(settings.scopes),
        username_claim=settings.username_claim,
        groups_claim=settings.groups_claim,
        roles=tuple(roles),
        default_role=default,
        label=settings.label,
        leeway=duration("oidc.leeway", settings.leeway),
        timeout=duration("oidc.timeout", settings.timeout),
    )


__all__ = ["CONSOLE_ROLES", "ConsoleSettings", "Oidc", "OidcSettings", "Options", "load", "role_spec"]
