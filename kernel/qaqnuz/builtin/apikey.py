"""API-key authentication against the embedded store.

Malformed keys and bad checksums are rejected before any store lookup. A credential not verified before is
looked up past the store's cache, and an unknown key id still costs a decoded row and one HMAC, so how long a
refusal takes does not tell a known key id from an unknown one (tests/kernel/test_auth_timing.py). Every
failure returns None: the transport turns that into one fixed response.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from qaqnuz.contexts import AuthContext
from qaqnuz.hookspecs import hookimpl
from qaqnuz.keys import hash_matches, parse_key
from qaqnuz.records import Principal, Provider
from qaqnuz.store import KeyRecord, Store

_DUMMY_HASH = "0" * 64
#: Credentials verified recently (bounded: cleared when full; only keys that passed are ever kept).
_VERIFIED_MAX = 10_000


@attrs.define
class ApiKeyAuth:
    store: Store
    secret: bytes = attrs.field(repr=False)
    prefix: str
    clock: Callable[[], float]
    _verified: dict[str, tuple[KeyRecord, Principal]] = attrs.field(factory=dict, init=False, repr=False)

    async def authenticate(self, credential: str | None) -> Principal | None:
        """The key's principal. A credential verified before skips the parse and the HMAC while the store still
        holds the very record it was verified against (revoked, expired, rotated or re-scoped is a different
        record, or an inactive one); the store is asked on every request either way."""
        if credential is not None:
            known = self._verified.get(credential)
            if known is not None:
                verified, principal = known
                if await self.store.get_key(verified.key_id) == verified and verified.active(self.clock()):
                    return principal
                self._verified.pop(credential, None)  # another request may have dropped it meanwhile
        parsed = parse_key(credential, self.prefix)
        if parsed is None:
            return None
        record = await self.store.get_key(parsed.key_id, fresh=True)  # see `Store.get_key`
        matched = hash_matches(self.secret, parsed.raw, record.hash if record else _DUMMY_HASH)
        if record is None or not matched or not record.active(self.clock()):
            return None
        principal = Principal(
            key_id=record.key_id,
            brand=record.brand,
            role=record.role,
            scopes=frozenset(record.scopes),
            name=record.name,
        )
        if credential is not None:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[credential] = (record, principal)
        return principal


def _factory(settings: object, ctx: AuthContext) -> ApiKeyAuth:
    return ApiKeyAuth(store=ctx.store, secret=ctx.server_secret, prefix=ctx.config.server.key_prefix, clock=ctx.clock)


@hookimpl
def qaqnuz_auth_providers() -> list[Provider]:
    return [Provider("apikey", _factory, "API keys minted by `qaqnuz keys create`, checked against the store.")]
