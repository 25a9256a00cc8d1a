"""OpenID Connect sign-in for the console: the authorization code flow with PKCE (RFC 6749, RFC 7636,
OpenID Connect Core 1.0), for a confidential client (client_secret_basic) or a public one.

The browser carries a `Pending` between `begin` and `finish` (the app signs it into a short-lived cookie), so
nothing here is kept per sign-in attempt except the nonces of completed sign-ins, which stop an ID token (or
a `Pending`) from being used twice. The provider is trusted only through what it signs: the ID token is
checked against the keys its discovery document publishes, and every refusal is an `OidcError` whose
message is safe to show and log (no code, token, verifier or secret ever goes into one, nor into the log).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import anyio
import httpx
import jwt

from qaqnuz_console.settings import Oidc

__all__ = ["ALGORITHMS", "PENDING_MAX_AGE", "Identity", "OidcClient", "OidcError", "Pending"]

#: Signature algorithms an ID token may use. Asymmetric only: an HS* token would be checked against the client
#: secret, which the provider is not the only one to know, and `none` is no signature at all.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
#: A sign-in not finished within this long is refused (the provider's own codes live far shorter).
PENDING_MAX_AGE = 600.0
#: How long the discovery document and the JWKS are trusted before being read again (keys get revoked).
DISCOVERY_TTL = 3600.0
#: An unknown `kid` refetches the JWKS (the provider may have rotated its keys), but at most this often, so
#: tokens with made-up key ids cannot turn the console into a JWKS request pump.
JWKS_REFETCH_INTERVAL = 60.0
#: Completed sign-ins' nonces kept for replay detection; the oldest are forgotten beyond this many.
MAX_USED_NONCES = 10_000
#: An ID token larger than this is refused before any parsing.
MAX_TOKEN_LENGTH = 16_384

_CURVES = {"ES256": "P-256", "ES384": "P-384"}
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
# RFC 6749 section 5.2: short registered codes, safe to repeat to the user (unlike the rest of a response).
_TOKEN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)


@dataclass(frozen=True)
class Pending:
    """What the browser carries (in a signed, short-lived cookie the app makes) between start and callback."""

    state: str
    nonce: str
    verifier: str  # PKCE code_verifier
    created: float  # clock() when begun


@dataclass(frozen=True)
class Identity:
    username: str  # from options.username_claim
    role: str  # "admin" | "brand-admin" | "auditor"
    brand: str | None
    subject: str  # the `sub` claim
    issuer: str


class OidcError(Exception):
    """Sign-in refused; str(exc) is safe to show the user and log: it never holds a token, code or secret."""


@dataclass(frozen=True)
class _Provider:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    fetched: float


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _where(url: str) -> str:
    """The URL without its query or fragment: enough to tell which endpoint failed, nothing a request carried."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class OidcClient:
    """One per console: it caches the provider's discovery document and keys, and remembers used nonces.

    `clock` is wall-clock time in seconds since the epoch (like `time.time`), because it is compared with the
    ID token's `exp`, `iat` and `nbf`.
    """

    def __init__(
        self,
        options: Oidc,
        *,
        clock: Callable[[], float],
        logger: logging.Logger,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._options = options
        self._clock = clock
        self._log = logger
        self._http = httpx.AsyncClient(
            timeout=options.timeout,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self._lock = anyio.Lock()
        self._provider: _Provider | None = None
        self._keys: list[dict[str, Any]] = []
        self._keys_fetched: float | None = None
        self._used_nonces: OrderedDict[str, float] = OrderedDict()

    async def begin(self, redirect_uri: str) -> tuple[str, Pending]:
        """The provider's authorization URL (response_type=code, client_id, redirect_uri, scope, state, nonce,
        code_challenge=S256(verifier), code_challenge_method=S256) and what to remember."""
        provider = await self._discover()
        pending = Pending(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),
            created=self._clock(),
        )
        params = {
            "response_type": "code",
            "client_id": self._options.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self._options.scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": _s256(pending.verifier),
            "code_challenge_method": "S256",
        }
        # The endpoint may carry its own query parameters (some providers route tenants that way); keep them.
        parts = urlsplit(provider.authorization_endpoint)
        query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        self._log.info("oidc: sign-in started")
        return url, pending

    async def finish(self, pending: Pending, *, code: str, state: str, redirect_uri: str) -> Identity:
        """Check state (constant time) and age (a Pending older than 10 minutes is refused), exchange the code
        at the token endpoint (with code_verifier; client_secret_basic when a client_secret is set, else
        client_id in the form body), verify the ID token, map claims to a console role."""
        try:
            return await self._finish(pending, code=code, state=state, redirect_uri=redirect_uri)
        except OidcError as exc:
            self._log.warning("oidc: sign-in refused: %s", exc)
            raise

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the steps of finish ---------------------------------------------------------------------------------

    async def _finish(self, pending: Pending, *, code: str, state: str, redirect_uri: str) -> Identity:
        # The state ties the callback to the browser that began the sign-in (no login CSRF); compare it without
        # leaking through timing how much of it an attacker guessed.
        if not hmac.compare_digest(pending.state.encode(), state.encode(errors="surrogatepass")):
            raise OidcError("the sign-in response does not belong to this browser's sign-in (state mismatch)")
        age = self._clock() - pending.created
        if age > PENDING_MAX_AGE:
            raise OidcError("the sign-in took too long; start again")
        if age < -self._options.leeway:
            raise OidcError("the sign-in claims to have begun in the future (check the clock); start again")
        # Spend no code on a sign-in that already completed: its nonce would be refused after the exchange anyway.
        self._forget_expired_nonces()
        if pending.nonce in self._used_nonces:
            raise OidcError("this sign-in was already completed (replayed nonce); start again")
        if not code:
            raise OidcError("the identity provider sent no sign-in code")
        provider = await self._discover()
        id_token = await self._exchange(provider, pending, code=code, redirect_uri=redirect_uri)
        claims = await self._verify(id_token, pending)
        identity = self._identity(claims)
        self._log.info("oidc: sign-in verified (role %s)", identity.role)
        return identity

    async def _exchange(self, provider: _Provider, pending: Pending, *, code: str, redirect_uri: str) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pending.verifier,
        }
        headers: dict[str, str] = {}
        secret = self._options.client_secret
        if secret is not None:
            # RFC 6749 section 2.3.1: both halves are form-urlencoded before being joined and base64-encoded.
            pair = f"{quote_plus(self._options.client_id)}:{quote_plus(secret.reveal())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form["client_id"] = self._options.client_id
        response = await self._request("POST", provider.token_endpoint, "token endpoint", data=form, headers=headers)
        if response.status_code != 200:
            error = self._oauth_error(response)
            self._log.warning("oidc: token endpoint answered %d (%s)", response.status_code, error or "no error code")
            if error:
                raise OidcError(f"the identity provider refused to complete the sign-in ({error})")
            raise OidcError(f"the identity provider refused to complete the sign-in (HTTP {response.status_code})")
        body = self._json(response, "token endpoint")
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError("the identity provider's token response holds no ID token")
        return id_token

    async def _verify(self, token: str, pending: Pending) -> dict[str, Any]:
        options = self._options
        if len(token) > MAX_TOKEN_LENGTH:
            raise OidcError("the ID token is malformed (too large)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("the ID token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            shown = repr(alg) if isinstance(alg, str) and len(alg) <= 16 else "this one"
            raise OidcError(f"the ID token is signed with an algorithm that is not allowed ({shown})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("the ID token is malformed (kid is not a string)")
        jwk = await self._key(kid, alg)
        if jwk is None:
            raise OidcError("the ID token is signed with a key the identity provider does not publish")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise OidcError("the identity provider's key for this ID token does not fit its algorithm") from None
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                # The signature only: every claim is checked below against our clock, with our messages.
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise OidcError("the ID token's signature does not verify") from None
        except jwt.PyJWTError:
            raise OidcError("the ID token is malformed") from None

        if claims.get("iss") != options.issuer:
            raise OidcError("the ID token was issued by another issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or options.client_id not in audiences:
            raise OidcError("the ID token is meant for another client (audience)")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != options.client_id:
            raise OidcError("the ID token was not issued to this client (authorized party)")
        now = self._clock()
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if exp is None:
            raise OidcError("the ID token has no expiry time")
        if not _is_number(exp):
            raise OidcError("the ID token is malformed (exp is not a number)")
        if exp <= now - options.leeway:
            raise OidcError("the ID token has expired")
        if iat is None:
            raise OidcError("the ID token has no issue time")
        if not _is_number(iat):
            raise OidcError("the ID token is malformed (iat is not a number)")
        if iat > now + options.leeway:
            raise OidcError("the ID token was issued in the future (check the clocks)")
        if nbf is not None:
            if not _is_number(nbf):
                raise OidcError("the ID token is malformed (nbf is not a number)")
            if nbf > now + options.leeway:
                raise OidcError("the ID token is not valid yet")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), pending.nonce.encode()):
            raise OidcError("the ID token does not belong to this sign-in (nonce mismatch)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise OidcError("the ID token names no subject")
        # Check and record with no await in between, so two callbacks racing with one token cannot both pass.
        self._forget_expired_nonces()
        if nonce in self._used_nonces:
            raise OidcError("this sign-in was already completed (replayed nonce); start again")
        self._used_nonces[nonce] = float(exp) + options.leeway
        while len(self._used_nonces) > MAX_USED_NONCES:
            self._used_nonces.popitem(last=False)
        return claims

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        options = self._options
        username = claims.get(options.username_claim)
        if not isinstance(username, str) or not username.strip():
            raise OidcError(f"the ID token has no {options.username_claim!r} claim to name you by")
        if options.username_claim == "email" and claims.get("email_verified") is not True:
            # An address the provider did not verify may be anyone's, a console admin's included.
            raise OidcError(
                "the identity provider has not verified the e-mail address that names you (email_verified); "
                "verify it there, or set username_claim to a claim the provider controls"
            )
        raw = claims.get(options.groups_claim)
        if raw is None:
            groups: frozenset[str] = frozenset()
        elif isinstance(raw, str):
            groups = frozenset({raw})
        elif isinstance(raw, list) and all(isinstance(group, str) for group in raw):
            groups = frozenset(raw)
        else:
            raise OidcError(f"the ID token's {options.groups_claim!r} claim is neither a string nor a list of strings")
        role: tuple[str, str | None] | None = next(
            ((role, brand) for group, role, brand in options.roles if group in groups), options.default_role
        )
        if role is None:
            raise OidcError("no group of yours maps to a console role")
        return Identity(
            username=username,
            role=role[0],
            brand=role[1],
            subject=str(claims["sub"]),
            issuer=str(claims["iss"]),
        )

    def _forget_expired_nonces(self) -> None:
        """Drop nonces whose tokens have expired: such a token is refused as expired anyway."""
        now = self._clock()
        for nonce in [nonce for nonce, until in self._used_nonces.items() if until < now]:
            del self._used_nonces[nonce]

    # -- the provider's documents ----------------------------------------------------------------------------

    async def _discover(self) -> _Provider:
        provider = self._provider
        if provider is not None and self._clock() - provider.fetched < DISCOVERY_TTL:
            return provider
        async with self._lock:
            provider = self._provider
            if provider is not None and self._clock() - provider.fetched < DISCOVERY_TTL:
                return provider
            url = f"{self._options.issuer}/.well-known/openid-configuration"
            document = self._json(await self._get(url, "discovery document"), "discovery document")
            if document.get("issuer") != self._options.issuer:
                raise OidcError("the identity provider's discovery document names another issuer")
            endpoints = {}
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                value = document.get(name)
                if not isinstance(value, str) or not self._acceptable_url(value):
                    raise OidcError(f"the identity provider's discovery document has no usable {name}")
                endpoints[name] = value
            provider = _Provider(**endpoints, fetched=self._clock())
            if self._provider is not None and self._provider.jwks_uri != provider.jwks_uri:
                self._keys, self._keys_fetched = [], None
            self._provider = provider
            self._log.info("oidc: discovery document read")
            return provider

    def _acceptable_url(self, url: str) -> bool:
        """An absolute URL, and https whenever the issuer is (settings allow http only for a loopback issuer)."""
        parts = urlsplit(url)
        if not parts.netloc:
            return False
        if urlsplit(self._options.issuer).scheme == "https":
            return parts.scheme == "https"
        return parts.scheme in ("http", "https")

    async def _key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        """The JWK for a token's `kid`, reading the JWKS again when it is stale or lacks that key."""
        fetched = self._keys_fetched
        if fetched is None or self._clock() - fetched >= DISCOVERY_TTL:
            await self._fetch_keys(fetched)
        found = self._find_key(kid, alg)
        fetched = self._keys_fetched
        if found is None and fetched is not None and self._clock() - fetched >= JWKS_REFETCH_INTERVAL:
            self._log.info("oidc: ID token names an unknown key; reading the JWKS again")
            await self._fetch_keys(fetched)
            found = self._find_key(kid, alg)
        return found

    async def _fetch_keys(self, seen: float | None) -> None:
        """Read the JWKS, unless another sign-in did since `seen` (then its keys are as fresh as ours would be)."""
        provider = await self._discover()
        async with self._lock:
            if self._keys_fetched is not None and self._keys_fetched != seen:
                return
            document = self._json(await self._get(provider.jwks_uri, "JWKS"), "JWKS")
            keys = document.get("keys")
            if not isinstance(keys, list):
                raise OidcError("the identity provider's JWKS is malformed")
            self._keys = [key for key in keys if isinstance(key, dict)]
            self._keys_fetched = self._clock()
            self._log.info("oidc: JWKS read (%d keys)", len(self._keys))

    def _find_key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        fitting = [key for key in self._keys if self._fits(key, alg)]
        if kid is not None:
            return next((key for key in fitting if key.get("kid") == kid), None)
        # No kid: acceptable only when the provider publishes a single key this token could be signed with.
        return fitting[0] if len(fitting) == 1 else None

    @staticmethod
    def _fits(key: Mapping[str, Any], alg: str) -> bool:
        if key.get("use", "sig") != "sig" or key.get("alg", alg) != alg:
            return False
        if key.get("kty") != _KEY_TYPES[alg[:2]]:
            return False
        return alg not in _CURVES or key.get("crv") == _CURVES[alg]

    # -- HTTP ----------------------------------------------------------------------------------------------------

    async def _get(self, url: str, what: str) -> httpx.Response:
        response = await self._request("GET", url, what)
        if response.status_code != 200:
            self._log.warning("oidc: %s %s answered %d", what, _where(url), response.status_code)
            raise OidcError(
                f"the identity provider could not be reached ({what} {_where(url)} answered {response.status_code})"
            )
        return response

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            # str(exc) may carry the request URL; only the kind of failure is repeated.
            reason = type(exc).__name__
            self._log.warning("oidc: %s %s failed: %s", what, _where(url), reason)
            raise OidcError(f"the identity provider could not be reached ({what} {_where(url)}: {reason})") from None

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OidcError(f"the identity provider's {what} is not a JSON object")
        return body

    @staticmethod
    def _oauth_error(response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        error = body.get("error") if isinstance(body, dict) else None
        return error if error in _TOKEN_ERRORS else None
