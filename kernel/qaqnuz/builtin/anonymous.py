"""Anonymous auth for local development and the conformance suite: every request is one configured
brand and role, with or without a credential.

Selected with `[plugins] auth = "anonymous"` and configured by `[plugins.anonymous] brand = "..."`,
`role = "..."`. The principal holds the role's whole scope ceiling under the brand's config and the fixed
key id `anonymous`, so plans, visibility, rate limits, policies, approvals and the audit log all still
apply; only the key check is gone.

Allowed only on loopback: the provider carries `loopback_only = True`, and a network transport must
refuse to bind anything but a loopback address while `Kernel.loopback_only` is true (stdio is local by
nature). The kernel refuses a config reload that switches a running server to such a provider, so the
bind-time check is enough.
"""

from __future__ import annotations

import msgspec

from qaqnuz.contexts import AuthContext
from qaqnuz.errors import ConfigError
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Principal, Provider

KEY_ID = "anonymous"


class AnonymousSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.anonymous]`: the brand and role every request is bound to."""

    brand: str
    role: str


class AnonymousAuth:
    """Maps every credential (or none) to the same principal."""

    #: Transports must refuse non-loopback binds while this provider is selected.
    loopback_only = True

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    async def authenticate(self, credential: str | None) -> Principal | None:
        return self.principal


def _factory(settings: AnonymousSettings, ctx: AuthContext) -> AnonymousAuth:
    where = ctx.where
    config = ctx.config
    brand = config.brands.get(settings.brand)
    if brand is None:
        known = ", ".join(sorted(config.brands)) or "none"
        raise ConfigError([f"{where} brand: unknown brand {settings.brand!r}; configured brands: {known}"])
    if settings.role not in brand.roles:
        known = ", ".join(sorted(brand.roles)) or "none"
        raise ConfigError([f"{where} role: brand {settings.brand!r} has no role {settings.role!r}; its roles: {known}"])
    scopes = frozenset(brand.roles[settings.role])
    ctx.logger.warning(
        "ANONYMOUS AUTH IS ON: every request, with or without a key, acts as brand %s role %s (scopes %s). "
        "For local development only; network transports bind loopback addresses only",
        settings.brand,
        settings.role,
        ", ".join(sorted(scopes)) or "none",
    )
    return AnonymousAuth(
        Principal(key_id=KEY_ID, brand=settings.brand, role=settings.role, scopes=scopes, name="anonymous")
    )


@hookimpl
def qaqnuz_auth_providers() -> list[Provider]:
    return [
        Provider(
            "anonymous",
            _factory,
            "No key: every request is one configured brand and role (loopback only, for local development).",
            AnonymousSettings,
        )
    ]
