"""A real OpenID Connect provider on 127.0.0.1 for tests: the console's client talks to it over HTTP exactly as
it would to Keycloak, Entra ID or Okta, so no part of the wire protocol is mocked.

It implements just the authorization code flow with PKCE (RFC 6749, RFC 7636, OpenID Connect Core 1.0):

- `/.well-known/openid-configuration`: discovery;
- `/jwks`: its RSA public key(s), each with a `kid`;
- `/authorize`: checks the request and signs `user` in at once (no page), answering 302 to
  `redirect_uri?code=...&state=...`, so a browser following redirects completes sign-in unattended;
- `/token`: exchanges a code (single use, bound to its client, redirect URI and PKCE challenge) for an
  RS256-signed ID token and an access token.

Knobs on the instance make it misbehave (sign with an unpublished key, wrong audience or issuer, expired
tokens, `alg: none`, a fixed nonce, an unknown `kid`, a discovery document naming another issuer); change
them between requests as a test needs. Every request's path is appended to `requests`, and every ID token
issued to `id_tokens`.

    with FakeIdP(claims={"sub": "u1", "email": "ada@example.com", "groups": ["admins"]}) as idp:
        ... Oidc(issuer=idp.issuer, client_id=idp.client_id, ...) ...
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CODE_LIFETIME = 60.0


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One RSA key per name for the whole test session: generating them is the slow part of a test."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    scope: str
    expires: float


@dataclass
class FakeIdP:
    """The provider; `start()` (or `with`) serves it, `.issuer` is its URL."""

    #: The signed-in user's claims, put into every ID token as they are (sub, email, groups, ...).
    claims: dict[str, Any] = field(
        default_factory=lambda: {"sub": "user-1", "email": "ada@example.com", "groups": ["admins"]}
    )
    client_id: str = "qaqnuz-console"
    #: None: a public client, identified by `client_id` in the token request's form.
    client_secret: str | None = "console-secret-7f3a"
    #: Registered redirect URIs; None accepts any (convenient when the console's port is random).
    redirect_uris: tuple[str, ...] | None = None
    expires_in: int = 300

    # Misbehaviours.
    #: Sign ID tokens with a key the JWKS does not hold (but still name the published kid).
    sign_with_other_key: bool = False
    #: The ID token's `aud` instead of client_id (a string or a list).
    audience: str | list[str] | None = None
    #: The ID token's `iss` instead of the issuer (discovery still tells the truth).
    token_issuer: str | None = None
    #: Issue ID tokens whose `exp` is already past (by this many seconds).
    expired_by: int | None = None
    #: Issue unsigned ID tokens (`alg: none`).
    alg_none: bool = False
    #: Put this nonce into ID tokens instead of the one the authorization request carried.
    nonce: str | None = None
    #: Name a `kid` the JWKS does not list (the token is otherwise signed with the published key).
    unknown_kid: bool = False
    #: The discovery document's `issuer` instead of the real one.
    discovery_issuer: str | None = None

    requests: list[str] = field(default_factory=list)
    id_tokens: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kid = "key-1"
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.issuer = ""

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> FakeIdP:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.issuer = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: its port then refuses connections, which is how a test takes the provider down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeIdP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rotate_key(self) -> None:
        """Sign with a new key under a new kid, publishing only it (as after a rotation that retired the old)."""
        number = int(self.kid.rsplit("-", 1)[1]) + 1
        self.kid = f"key-{number}"

    # -- documents --------------------------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.discovery_issuer or self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(rsa_key(self.kid).public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def id_token(self, code: _Code) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.token_issuer or self.issuer,
            "aud": self.audience if self.audience is not None else code.client_id,
            "iat": now,
            "exp": now - self.expired_by if self.expired_by is not None else now + self.expires_in,
            "auth_time": now,
            **self.claims,
        }
        if "email" in self.claims:  # as real providers do when they checked the address
            claims.setdefault("email_verified", True)
        nonce = self.nonce if self.nonce is not None else code.nonce
        if nonce is not None:
            claims["nonce"] = nonce
        if self.alg_none:
            header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{header}.{_b64(json.dumps(claims).encode())}."
        key = rsa_key("unpublished") if self.sign_with_other_key else rsa_key(self.kid)
        kid = "not-published" if self.unknown_kid else self.kid
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    # -- endpoints: (status, headers, JSON body or None) ------------------------------------------------------

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        client_id, redirect_uri = query.get("client_id"), query.get("redirect_uri", "")
        # RFC 6749 4.1.2.1: with an unknown client or redirect URI, tell the user, never redirect.
        if client_id != self.client_id:
            return 400, {}, {"error": "invalid_request", "error_description": "unknown client_id"}
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            return 400, {}, {"error": "invalid_request", "error_description": "bad redirect_uri"}
        if self.redirect_uris is not None and redirect_uri not in self.redirect_uris:
            return 400, {}, {"error": "invalid_request", "error_description": "unregistered redirect_uri"}

        def back(**params: str) -> tuple[int, dict[str, str], Any]:
            if "state" in query:
                params["state"] = query["state"]
            separator = "&" if parts.query else "?"
            return 302, {"Location": f"{redirect_uri}{separator}{urlencode(params)}"}, None

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in query.get("scope", "").split():
            return back(error="invalid_scope", error_description="openid is required")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(
                client_id=client_id,
                redirect_uri=redirect_uri,
                challenge=query["code_challenge"],
                nonce=query.get("nonce"),
                scope=query.get("scope", ""),
                expires=time.time() + CODE_LIFETIME,
            )
        return back(code=code)

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, str], Any]:
        client_id, secret = self._client(form, authorization)
        if client_id != self.client_id or (self.client_secret is not None and secret != self.client_secret):
            return 401, {"WWW-Authenticate": 'Basic realm="fakeidp"'}, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {}, {"error": "unsupported_grant_type"}
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)  # single use, whatever happens next
        if code is None or code.expires < time.time() or code.client_id != client_id:
            return 400, {}, {"error": "invalid_grant", "error_description": "unknown, used or expired code"}
        if form.get("redirect_uri") != code.redirect_uri:
            return 400, {}, {"error": "invalid_grant", "error_description": "redirect_uri differs"}
        if s256(form.get("code_verifier", "")) != code.challenge:
            return 400, {}, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        id_token = self.id_token(code)
        self.id_tokens.append(id_token)
        body = {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": code.scope,
            "id_token": id_token,
        }
        return 200, {"Cache-Control": "no-store", "Pragma": "no-cache"}, body

    @staticmethod
    def _client(form: dict[str, str], authorization: str | None) -> tuple[str | None, str | None]:
        """client_secret_basic, else client_secret_post (or a public client's bare client_id)."""
        if authorization is not None and authorization.lower().startswith("basic "):
            try:
                pair = base64.b64decode(authorization[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            client_id, _, secret = pair.partition(":")
            return unquote_plus(client_id), unquote_plus(secret)
        return form.get("client_id"), form.get("client_secret")


def _handler(idp: FakeIdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            idp.requests.append(parts.path)
            if parts.path == "/.well-known/openid-configuration":
                self._answer(200, {}, idp.discovery())
            elif parts.path == "/jwks":
                self._answer(200, {}, idp.jwks())
            elif parts.path == "/authorize":
                self._answer(*idp.authorize({k: v[0] for k, v in parse_qs(parts.query).items()}))
            else:
                self._answer(404, {}, {"error": "not_found"})

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            idp.requests.append(parts.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if parts.path != "/token":
                self._answer(404, {}, {"error": "not_found"})
            elif self.headers.get_content_type() != "application/x-www-form-urlencoded":
                self._answer(400, {}, {"error": "invalid_request", "error_description": "form body expected"})
            else:
                form = {k: v[0] for k, v in parse_qs(body).items()}
                self._answer(*idp.token(form, self.headers.get("Authorization")))

        def _answer(self, status: int, headers: dict[str, str], body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows failures well enough

    return Handler
