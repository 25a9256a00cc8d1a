"""The console's ASGI app: sign-in, the pages, the JSON API under `/console/api/`, and the static files.

Every request but sign-in and the static files needs a live session (see `sessions`); a page without one is
sent to the sign-in page, an API call gets 401. Every state-changing request (POST) must carry the
session's CSRF token (a form field or the `X-CSRF-Token` header) and, when the browser sends an `Origin`,
come from this server's own origin; otherwise it is refused with 403 before anything changes. Responses
carry a Content-Security-Policy that allows only this server's own script and style files (no inline script),
and forbid framing. The HTTP transport has already checked Host and Origin against its allow lists, removed
any MCP key from the request, and limited the body size.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from qaqnuz import (
    USER_NAME_RE,
    CallQuery,
    ConsoleUser,
    UsageError,
    WebRouteContext,
    approval_view,
    client_settings,
    looks_like_key,
    parse_positive_duration,
)
from qaqnuz_console.access import Viewer
from qaqnuz_console.sessions import PRE_COOKIE, SESSION_COOKIE, Pre, Sessions
from qaqnuz_console.settings import ConsoleSettings, Options, load
from qaqnuz_console.throttle import Throttle

BASE = "/console"
STATIC_FILES = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), clipboard-write=(self)"),
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE_SIZE = 50
#: What a refused sign-in says, whatever the reason: no hint whether the name exists.
SIGN_IN_REFUSED = "That name and password do not match an account that may sign in."
#: Password checks run at once (each a memory-hard hash); more wait their turn.
HASHES_AT_ONCE = 4

Handler = Callable[[Request, Viewer], Awaitable[Response]]


class ConsoleError(Exception):
    """A request that cannot be served as asked: shown on the page or answered as JSON with `status`."""

    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class Console:
    """The app mounted at `/console`."""

    def __init__(self, options: Options, ctx: WebRouteContext) -> None:
        if ctx.users is None or ctx.view is None or ctx.signing_key is None or ctx.audit is None:
            raise UsageError("the console needs a kernel that provides users, a server view and signing keys")
        self.options = options
        self.ctx = ctx
        self.users = ctx.users
        self.view = ctx.view
        self.audit: Callable[..., None] = ctx.audit
        self.clock: Callable[[], float] = ctx.clock
        self.log: logging.Logger = ctx.logger
        self.sessions = Sessions(
            ctx.signing_key("session"), ctx.signing_key("csrf"), idle=options.session_idle,
            absolute=options.session_absolute,
        )  # fmt: skip
        self.throttle = Throttle(
            per_pair=options.login_attempts, per_source=options.source_attempts, window=options.login_window
        )
        # Each password check holds 64 MiB for about a tenth of a second: a few at a time, whatever arrives.
        self._hashing = anyio.Semaphore(HASHES_AT_ONCE)
        self.oidc: Any = None
        if options.oidc is not None:
            from qaqnuz_console.oidc import OidcClient

            self.oidc = OidcClient(options.oidc, clock=self.clock, logger=self.log)
        self.templates = Environment(
            loader=PackageLoader("qaqnuz_console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(base=BASE, when=_when, server_name=ctx.server_name)
        self.templates.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True)
        self._static = {name: resources.files("qaqnuz_console").joinpath("static", name).read_bytes()
                        for name in STATIC_FILES}  # fmt: skip
        page, api = self._page, self._api
        self.app = Starlette(
            routes=[
                Route("/login", self.login_form, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", page(self.logout), methods=["POST"]),
                Route("/oidc/start", self.oidc_start, methods=["GET"]),
                Route("/oidc/callback", self.oidc_callback, methods=["GET"]),
                Route("/static/{name}", self.static, methods=["GET"]),
                Route("/keys", page(self.keys_page), methods=["GET"]),
                Route("/keys", page(self.keys_create, write=True), methods=["POST"]),
                Route("/keys/{key_id}/revoke", page(self.keys_revoke, write=True), methods=["POST"]),
                Route("/keys/{key_id}/rotate", page(self.keys_rotate, write=True), methods=["POST"]),
                Route("/approvals", page(self.approvals_page), methods=["GET"]),
                Route("/approvals/{approval_id}", page(self.approvals_decide, write=True), methods=["POST"]),
                Route("/calls", page(self.calls_page), methods=["GET"]),
                Route("/tools", page(self.tools_page), methods=["GET"]),
                Route("/connect", page(self.connect_page), methods=["GET"]),
                Route("/status", page(self.status_page), methods=["GET"]),
                Route("/api/me", api(self.api_me), methods=["GET"]),
                Route("/api/keys", api(self.api_keys), methods=["GET"]),
                Route("/api/keys", api(self.api_keys_create, write=True), methods=["POST"]),
                Route("/api/keys/{key_id}/revoke", api(self.api_keys_revoke, write=True), methods=["POST"]),
                Route("/api/keys/{key_id}/rotate", api(self.api_keys_rotate, write=True), methods=["POST"]),
                Route("/api/approvals", api(self.api_approvals), methods=["GET"]),
                Route("/api/approvals/{approval_id}", api(self.api_approvals_decide, write=True), methods=["POST"]),
                Route("/api/calls", api(self.api_calls), methods=["GET"]),
                Route("/api/tools", api(self.api_tools), methods=["GET"]),
                Route("/api/status", api(self.api_status), methods=["GET"]),
            ]
        )
        self.app.router.redirect_slashes = False

    def __repr__(self) -> str:
        return "Console()"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        if scope["path"].rstrip("/") == BASE:  # the bare prefix: the first page
            await RedirectResponse(f"{BASE}/keys", 303)(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

    async def aclose(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()

    # -- plumbing ----------------------------------------------------------------------------------------
    def _render(self, template: str, code: int = 200, /, **values: Any) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(template).render(**values), code)

    def _secure(self, request: Request) -> bool:
        if self.options.secure_cookies is not None:
            return self.options.secure_cookies
        host = (request.url.hostname or "").lower()
        return not (request.url.scheme == "http" and host in LOOPBACK_HOSTS)

    def _origin(self, request: Request) -> str:
        """This server's origin as people reach it (the public URL, else the request's checked Host)."""
        if self.options.public_url:
            parts = urlsplit(self.options.public_url)
            return f"{parts.scheme}://{parts.netloc}"
        return f"{request.url.scheme}://{request.headers.get('host', '')}"

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        return origin.rstrip("/").lower() in {
            self._origin(request).lower(),
            f"{request.url.scheme}://{request.headers.get('host', '')}".lower(),
        }

    def _set_session(self, response: Response, request: Request, value: str, max_age: int) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path=BASE, secure=self._secure(request),
                            httponly=True, samesite="strict")  # fmt: skip

    def _clear_session(self, response: Response, request: Request) -> None:
        response.delete_cookie(SESSION_COOKIE, path=BASE, secure=self._secure(request), httponly=True,
                               samesite="strict")  # fmt: skip

    def _source(self, request: Request) -> str:
        return request.client.host if request.client else "?"

    async def _viewer(self, request: Request) -> Viewer | None:
        """The signed-in person, or None. A store that does not answer is a refusal too (fail closed)."""
        now = self.clock()
        session = self.sessions.decode(request.cookies.get(SESSION_COOKIE), now)
        if session is None:
            return None
        user = await self.users.get(session.user)
        if user is None or session.issued <= user.sessions_after or not _role_ok(user, self.view.brands()):
            return None
        return Viewer(user, session, self.sessions.csrf(session.nonce))

    def _page(self, handler: Handler, *, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                viewer = await self._viewer(request)
            except Exception as exc:
                self.log.error("console: cannot check a session (%s); refusing", type(exc).__name__)
                return self._render("error.html", 503, viewer=None, message="The store is not answering; try again.")
            if viewer is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response: Response = RedirectResponse(f"{BASE}/login?{urlencode({'next': target})}", 303)
                if request.cookies.get(SESSION_COOKIE):
                    self._clear_session(response, request)
                return response
            if request.method == "POST":
                refusal = await self._refuse_post(request, viewer, write)
                if refusal is not None:
                    return self._render("error.html", refusal.status, viewer=viewer, message=str(refusal))
            try:
                response = await handler(request, viewer)
            except ConsoleError as exc:
                response = self._render("error.html", exc.status, viewer=viewer, message=str(exc))
            except Exception as exc:
                self.log.error("console: %s %s failed (%s)", request.method, request.url.path, type(exc).__name__)
                response = self._render(
                    "error.html", 503, viewer=viewer, message="That failed on the server; try again."
                )
            self._refresh(response, request, viewer)
            return response

        return endpoint

    def _api(self, handler: Handler, *, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                viewer = await self._viewer(request)
            except Exception as exc:
                self.log.error("console: cannot check a session (%s); refusing", type(exc).__name__)
                return _error(503, "the store is not answering; try again")
            if viewer is None:
                return _error(401, "sign in first: POST /console/login, or use the console in a browser")
            if request.method == "POST":
                refusal = await self._refuse_post(request, viewer, write)
                if refusal is not None:
                    return _error(refusal.status, str(refusal))
            try:
                response = await handler(request, viewer)
            except ConsoleError as exc:
                response = _error(exc.status, str(exc), exc.field)
            except UsageError as exc:
                response = _error(400, str(exc))
            except Exception as exc:
                self.log.error("console: %s %s failed (%s)", request.method, request.url.path, type(exc).__name__)
                response = _error(503, "that failed on the server; try again")
            self._refresh(response, request, viewer)
            return response

        return endpoint

    async def _refuse_post(self, request: Request, viewer: Viewer, write: bool) -> ConsoleError | None:
        """Why a state-changing request is refused (None: it may go on). Checked before anything changes."""
        if not self._same_origin(request):
            return ConsoleError("Refused: the request did not come from this console's own pages.", 403)
        token = request.headers.get("x-csrf-token")
        if token is None and _is_form(request):
            form = await request.form()
            value = form.get("csrf")
            token = value if isinstance(value, str) else None
        if not self.sessions.csrf_ok(viewer.session.nonce, token):
            self.log.warning("console: refused a %s to %s from %s: missing or wrong CSRF token",
                             request.method, request.url.path, viewer.name)  # fmt: skip
            return ConsoleError(
                "Refused: the form was stale or not from this console (CSRF token). Reload the page.", 403
            )
        if write and not viewer.can_write:
            return ConsoleError(f"Refused: the {viewer.user.role} role can only read.", 403)
        return None

    def _refresh(self, response: Response, request: Request, viewer: Viewer) -> None:
        if any(v.startswith(f"{SESSION_COOKIE}=") for k, v in response.headers.items() if k == "set-cookie"):
            return  # the handler set or cleared the session itself (signing out)
        now = self.clock()
        touched = self.sessions.touched(viewer.session, now)
        if touched is not None:
            self._set_session(response, request, self.sessions.encode(touched), self.sessions.max_age(touched, now))

    # -- sign-in -----------------------------------------------------------------------------------------
    def _pre(self, request: Request) -> Pre | None:
        return self.sessions.decode_pre(request.cookies.get(PRE_COOKIE), self.clock())

    def _login_page(self, request: Request, status: int = 200, *, error: str | None = None, name: str = "",
                    pre: Pre | None = None) -> Response:  # fmt: skip
        pre = pre or self._pre(request) or self.sessions.new_pre(self.clock())
        next_path = _next_path(request.query_params.get("next"))
        response = self._render(
            "login.html", status, viewer=None, error=error, name=name, next_path=next_path,
            csrf=self.sessions.csrf(pre.nonce), passwords=self.options.passwords,
            oidc_label=self.options.oidc.label if self.options.oidc else None,
        )  # fmt: skip
        self._set_pre(response, request, pre)
        return response

    def _set_pre(self, response: Response, request: Request, pre: Pre) -> None:
        # Lax, not Strict: the identity provider's redirect back is a cross-site navigation that must carry it.
        response.set_cookie(PRE_COOKIE, self.sessions.encode_pre(pre), max_age=900, path=BASE,
                            secure=self._secure(request), httponly=True, samesite="lax")  # fmt: skip

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request)

    async def login(self, request: Request) -> Response:
        now = self.clock()
        source = self._source(request)
        pre = self._pre(request)
        form = await request.form() if _is_form(request) else None
        if form is None or pre is None or not self._same_origin(request):
            return self._login_page(request, 403, error="The sign-in form was stale; it has been reloaded: try again.")
        name = str(form.get("name") or "").strip()
        password = str(form.get("password") or "")
        if not self.sessions.csrf_ok(pre.nonce, str(form.get("csrf") or "")):
            return self._login_page(request, 403, error="The sign-in form was stale; it has been reloaded: try again.")
        if not self.options.passwords:
            return self._login_page(request, 403, error="Password sign-in is turned off; use single sign-on.")
        if not name or not password:
            return self._login_page(request, 400, error="Give your user name and password.", name=name[:128])
        shown = _name_shown(name)
        wait = self.throttle.wait(name, source, now)
        if wait:
            self.audit(step="console", outcome="sign_in_throttled", user=shown, source=source)
            self.log.warning("console: sign-in for %r from %s throttled for %d s", shown, source, wait)
            response = self._login_page(
                request, 429, name=name[:128],
                error=f"Too many failed sign-ins for this name from your address. Try again in {wait} s.",
            )  # fmt: skip
            response.headers["retry-after"] = str(wait)
            return response
        self.throttle.begin(name, source, now)  # counted as failed until the password proves right
        from qaqnuz_console.passwords import verify_password

        user = await self.users.get(name)
        if looks_like_key(password):  # an MCP key is never a console credential: refused unchecked
            self.log.warning("console: an MCP key was offered as the password of %r; refused", shown)
            ok = False
        else:
            async with self._hashing:
                ok = await _in_thread(verify_password, user.password_hash if user else None, password)
        if not ok or user is None or not _role_ok(user, self.view.brands()):
            self.audit(step="console", outcome="sign_in_refused", user=shown, source=source, method="password")
            self.log.info("console: sign-in refused for %r from %s", shown, source)
            return self._login_page(request, 401, error=SIGN_IN_REFUSED, name=name[:128])
        self.throttle.forgive(name, source, now)
        await self._rehash_if_weak(user, password)
        return self._signed_in(request, user, "password", _next_path(str(form.get("next") or "")))

    async def _rehash_if_weak(self, user: ConsoleUser, password: str) -> None:
        """A hash made under weaker parameters than today's is replaced now, while the password is at hand."""
        from qaqnuz_console.passwords import hash_password, needs_rehash

        if user.password_hash is None or not needs_rehash(user.password_hash):
            return
        try:
            async with self._hashing:
                stronger = await _in_thread(hash_password, password)
            await self.users.rehashed(user, stronger)
            self.log.info("console: %s's password hash was upgraded to the current parameters", user.name)
        except Exception as exc:  # the sign-in itself succeeded; the old hash still works
            self.log.warning("console: upgrading %s's password hash failed (%s)", user.name, type(exc).__name__)

    def _signed_in(self, request: Request, user: ConsoleUser, method: str, next_path: str) -> Response:
        now = max(self.clock(), user.sessions_after + 0.001)  # issued after any sessions end the user had
        session = self.sessions.new(user.name, now)
        self.audit(step="console", outcome="signed_in", user=user.name, role=user.role, brand=user.brand,
                   source=self._source(request), method=method)  # fmt: skip
        self.log.info("console: %s signed in (%s, %s)", user.name, user.role, method)
        response: Response
        if method == "oidc":
            # Arrived by a cross-site redirect: a SameSite=Strict cookie set now is not sent on a redirect in
            # the same chain, so a same-site page moves on instead.
            response = self._render("continue.html", viewer=None, next_path=next_path)
        else:
            response = RedirectResponse(next_path, 303)
        self._set_session(response, request, self.sessions.encode(session), self.sessions.max_age(session, now))
        response.delete_cookie(PRE_COOKIE, path=BASE)
        return response

    async def logout(self, request: Request, viewer: Viewer) -> Response:
        await self.users.end_sessions(viewer.name)
        self.audit(step="console", outcome="signed_out", user=viewer.name, source=self._source(request))
        self.log.info("console: %s signed out", viewer.name)
        response = RedirectResponse(f"{BASE}/login", 303)
        self._clear_session(response, request)
        return response

    async def oidc_start(self, request: Request) -> Response:
        if self.oidc is None:
            return self._render("error.html", 404, viewer=None, message="Single sign-on is not configured.")
        now = self.clock()
        try:
            url, pending = await self.oidc.begin(self._redirect_uri(request))
        except Exception as exc:
            self.log.warning("console: single sign-on could not start (%s)", _safe(exc))
            return self._login_page(request, 502, error=f"Single sign-on is unavailable: {_safe(exc)}")
        pre = self.sessions.new_pre(now, (pending.state, pending.nonce, pending.verifier, pending.created))
        response = RedirectResponse(url, 303)
        self._set_pre(response, request, pre)
        return response

    async def oidc_callback(self, request: Request) -> Response:
        if self.oidc is None:
            return self._render("error.html", 404, viewer=None, message="Single sign-on is not configured.")
        from qaqnuz_console.oidc import OidcError, Pending

        pre = self._pre(request)
        params = request.query_params
        source = self._source(request)
        if params.get("error"):
            message = f"The identity provider refused the sign-in ({str(params.get('error'))[:64]})."
            return self._login_page(request, 401, error=message)
        if pre is None or pre.oidc is None:
            return self._login_page(
                request, 400, error="That sign-in was not started here, or took too long; try again."
            )
        state, nonce, verifier, created = pre.oidc
        try:
            identity = await self.oidc.finish(
                Pending(state, nonce, verifier, created), code=str(params.get("code") or ""),
                state=str(params.get("state") or ""), redirect_uri=self._redirect_uri(request),
            )  # fmt: skip
        except OidcError as exc:
            self.audit(step="console", outcome="sign_in_refused", source=source, method="oidc", reason=str(exc)[:200])
            self.log.warning("console: single sign-on refused: %s", exc)
            return self._login_page(
                request, 401, error=f"Single sign-on refused: {exc}", pre=self.sessions.new_pre(self.clock())
            )
        user = ConsoleUser(identity.username, identity.role, identity.brand, None, 0.0)
        try:
            self.users.check(user.name, user.role, user.brand)
        except UsageError as exc:
            return self._login_page(request, 401, error=f"Single sign-on refused: {exc}")
        stored = await self.users.get(user.name)
        if stored is not None and stored.password_hash is not None:
            # A local account of the same name is not the provider's to take over (nor to sign in as).
            self.audit(step="console", outcome="sign_in_refused", user=user.name, source=source, method="oidc",
                       reason="a local account has this name")  # fmt: skip
            self.log.warning("console: single sign-on as %r refused: a local account has that name", user.name)
            message = "Single sign-on refused: a local account has this name; sign in with its password."
            return self._login_page(request, 401, error=message)
        if stored is None or (stored.role, stored.brand) != (user.role, user.brand):
            # Remembered so that a session can be checked on every request (and ended by signing out);
            # the provider's claims decide the role at each sign-in.
            stored = await self.users.add(user.name, role=user.role, brand=user.brand, password_hash=None,
                                          replace=stored is not None, actor="oidc")  # fmt: skip
        return self._signed_in(request, stored, "oidc", f"{BASE}/keys")

    def _redirect_uri(self, request: Request) -> str:
        return f"{self._origin(request)}{BASE}/oidc/callback"

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return Response("not found", 404, media_type="text/plain")
        return Response(self._static[name], media_type=STATIC_FILES[name])

    # -- keys --------------------------------------------------------------------------------------------
    def _brand_param(self, request: Request, viewer: Viewer, value: str | None = None) -> str:
        """The brand a page is about: asked for (and visible to the viewer), else their first."""
        brands = viewer.brands(self.view.brands())
        wanted = value if value is not None else request.query_params.get("brand")
        if wanted:
            if wanted not in brands:
                raise ConsoleError(f"No brand {wanted!r} that you may see.", 404, "brand")
            return wanted
        if not brands:
            raise ConsoleError(
                "No brand is configured that you may see: brands are defined under [brands.<name>] in the config file.",
                404,
            )
        return brands[0]

    async def _keys(self, brand: str) -> list[dict[str, Any]]:
        now = self.clock()
        return [{**k.public(), "state": k.state(now)} for k in await self.ctx.keys.list(brand)]

    async def keys_page(self, request: Request, viewer: Viewer, *, form: dict[str, Any] | None = None,
                        errors: dict[str, str] | None = None, status: int = 200) -> Response:  # fmt: skip
        brand = self._brand_param(request, viewer, (form or {}).get("brand"))
        brands = self.view.brands()
        return self._render(
            "keys.html", status, viewer=viewer, page="keys", brand=brand, brands=viewer.brands(brands),
            keys=await self._keys(brand), roles=brands[brand]["roles"], form=form or {"expires_in": "90d"},
            errors=errors or {}, max_lifetime=_days(self.view.max_key_lifetime()),
        )  # fmt: skip

    async def _mint(self, viewer: Viewer, fields: dict[str, Any]) -> tuple[str, Any]:
        """Mint from form or JSON fields; a problem is a ConsoleError naming the field that caused it."""
        brand = str(fields.get("brand") or "")
        if not viewer.may_see(brand) or brand not in self.view.brands():
            raise ConsoleError(f"No brand {brand!r} that you may manage.", 404, "brand")
        name = str(fields.get("name") or "").strip()
        if not name:
            raise ConsoleError("Name the key after who or what will use it.", 400, "name")
        if len(name) > 100:
            raise ConsoleError("Keep the name to 100 characters.", 400, "name")
        role = str(fields.get("role") or "")
        if role not in self.view.brands()[brand]["roles"]:
            raise ConsoleError(f"Pick one of brand {brand}'s roles.", 400, "role")
        scopes = [str(s) for s in fields.get("scopes") or []]
        if not scopes:
            raise ConsoleError("Pick at least one scope; a key without scopes can call nothing.", 400, "scopes")
        expires_text = str(fields.get("expires_in") or "").strip()
        expires_in: float | None = None
        if expires_text:
            try:
                expires_in = parse_positive_duration(expires_text)
            except ValueError:
                raise ConsoleError(
                    "Write the lifetime as a duration such as 30d, 12h or 90m.", 400, "expires_in"
                ) from None
        try:
            return await self.ctx.keys.mint(brand=brand, scopes=scopes, name=name, role=role, expires_in=expires_in,
                                             actor=viewer.actor)  # fmt: skip
        except UsageError as exc:
            message = str(exc)
            field = "scopes" if "scope" in message else "expires_in" if "expires" in message else None
            raise ConsoleError(message.replace("--expires-in", "the lifetime"), 400, field) from None

    async def keys_create(self, request: Request, viewer: Viewer) -> Response:
        form = await request.form()
        fields: dict[str, Any] = {k: form.get(k) for k in ("brand", "name", "role", "expires_in")}
        fields["scopes"] = [s for s in form.getlist("scopes") if isinstance(s, str)]
        try:
            raw, record = await self._mint(viewer, fields)
        except ConsoleError as exc:
            errors = {exc.field or "form": str(exc)}
            if exc.field == "brand":
                raise
            return await self.keys_page(request, viewer, form=fields, errors=errors, status=exc.status)
        return self._created(request, viewer, raw, record, "created")

    def _created(self, request: Request, viewer: Viewer, raw: str, record: Any, verb: str) -> Response:
        url = f"{self._origin(request)}/mcp"
        return self._render("connect.html", viewer=viewer, page="connect", key=raw, record=record.public(),
                            verb=verb, url=url, settings=client_settings(url, raw))  # fmt: skip

    async def keys_revoke(self, request: Request, viewer: Viewer) -> Response:
        key_id = request.path_params["key_id"]
        try:
            record, _ = await self.ctx.keys.revoke(key_id, viewer.only_brand, actor=viewer.actor)
        except UsageError as exc:
            raise ConsoleError(str(exc), 404) from None
        return RedirectResponse(f"{BASE}/keys?{urlencode({'brand': record.brand})}", 303)

    async def keys_rotate(self, request: Request, viewer: Viewer) -> Response:
        try:
            raw, record, _ = await self.ctx.keys.rotate(request.path_params["key_id"], viewer.only_brand,
                                                         actor=viewer.actor)  # fmt: skip
        except UsageError as exc:
            raise ConsoleError(str(exc), 400) from None
        return self._created(request, viewer, raw, record, "rotated")

    # -- approvals ---------------------------------------------------------------------------------------
    async def _approvals(self, viewer: Viewer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(pending and approved-unused requests, the most recent closed ones) the viewer may see."""
        now = self.clock()
        brand = viewer.only_brand
        live = [approval_view(a, now) for a in await self.ctx.approvals.list(brand)]
        every = await self.ctx.approvals.store.list_approvals(brand, include_closed=True)
        live_ids = {a["approval_id"] for a in live}
        history = [approval_view(a, now) for a in every if a.approval_id not in live_ids]
        history.sort(key=lambda a: a["decided_at"] or a["created_at"], reverse=True)
        return live, history[:PAGE_SIZE]

    async def approvals_page(self, request: Request, viewer: Viewer) -> Response:
        live, history = await self._approvals(viewer)
        return self._render("approvals.html", viewer=viewer, page="approvals", live=live, history=history,
                            decided=request.query_params.get("decided"))  # fmt: skip

    async def _decide(self, viewer: Viewer, approval_id: str, decision: str, reason: str) -> Any:
        if decision not in ("approve", "deny"):
            raise ConsoleError("Choose approve or deny.", 400, "decision")
        reason = reason.strip()[:500]
        if decision == "deny" and not reason:
            raise ConsoleError("Say why you deny it; the caller sees the reason.", 400, "reason")
        try:
            return await self.ctx.approvals.decide(approval_id, approve=decision == "approve", by=viewer.actor,
                                                   reason=reason or None, brand=viewer.only_brand)  # fmt: skip
        except UsageError as exc:
            raise ConsoleError(str(exc), 409 if "not pending" in str(exc) else 404) from None

    async def approvals_decide(self, request: Request, viewer: Viewer) -> Response:
        form = await request.form()
        approval_id = request.path_params["approval_id"]
        try:
            record = await self._decide(
                viewer, approval_id, str(form.get("decision") or ""), str(form.get("reason") or "")
            )
        except ConsoleError as exc:
            live, history = await self._approvals(viewer)
            return self._render("approvals.html", exc.status, viewer=viewer, page="approvals", live=live,
                                history=history, errors={approval_id: str(exc)}, decided=None)  # fmt: skip
        return RedirectResponse(f"{BASE}/approvals?{urlencode({'decided': record.approval_id})}", 303)

    # -- calls, tools, connect, status -------------------------------------------------------------------
    async def _chain(self) -> dict[str, Any]:
        """The audit chain's state, checked in a worker thread: the first check of a large file reads it all."""
        chain: dict[str, Any] = await _in_thread(self.view.chain)
        return chain

    def _call_query(self, request: Request, viewer: Viewer) -> tuple[CallQuery, dict[str, str]]:
        params = request.query_params
        shown = {k: str(params.get(k) or "").strip() for k in ("brand", "key_id", "tool", "outcome", "since", "until")}
        brand = shown["brand"] or None
        if brand is not None and not viewer.may_see(brand) and viewer.only_brand is not None:
            raise ConsoleError(f"No brand {brand!r} that you may see.", 404, "brand")
        before = params.get("before")
        try:
            cursor = int(before) if before else None
        except ValueError:
            raise ConsoleError("That page link is broken; start from the newest calls.", 400) from None
        query = CallQuery(
            brand=brand,
            brands=None if viewer.only_brand is None else frozenset({viewer.only_brand}),
            key_id=shown["key_id"] or None,
            tool=shown["tool"] or None,
            outcome=shown["outcome"] or None,
            since=_moment(shown["since"], "since"),
            until=_moment(shown["until"], "until"),
            before=cursor,
            limit=PAGE_SIZE,
        )
        return query, shown

    async def calls_page(self, request: Request, viewer: Viewer) -> Response:
        try:
            query, shown = self._call_query(request, viewer)
        except ConsoleError as exc:
            return self._render("calls.html", exc.status, viewer=viewer, page="calls", calls=[], shown={},
                                error=str(exc), chain=await self._chain(), older=None,
                                brands=viewer.brands(self.view.brands()))  # fmt: skip
        page = await _in_thread(self.view.calls, query)
        older = None
        if page.next_before is not None:
            older = urlencode({**{k: v for k, v in shown.items() if v}, "before": page.next_before})
        return self._render("calls.html", viewer=viewer, page="calls", calls=page.calls, shown=shown, error=None,
                            chain=await self._chain(), older=older, scanned_all=page.scanned_all,
                            brands=viewer.brands(self.view.brands()))  # fmt: skip

    async def tools_page(self, request: Request, viewer: Viewer) -> Response:
        brand = self._brand_param(request, viewer)
        return self._render("tools.html", viewer=viewer, page="tools", brand=brand,
                            brands=viewer.brands(self.view.brands()), tools=self.view.tools(brand))  # fmt: skip

    async def connect_page(self, request: Request, viewer: Viewer) -> Response:
        url = f"{self._origin(request)}/mcp"
        return self._render("connect.html", viewer=viewer, page="connect", key=None, record=None, verb=None,
                            url=url, settings=client_settings(url, "YOUR_KEY"))  # fmt: skip

    async def status_page(self, request: Request, viewer: Viewer) -> Response:
        return self._render("status.html", viewer=viewer, page="status", status=await self.view.status(),
                            chain=await self._chain())  # fmt: skip

    # -- JSON API ----------------------------------------------------------------------------------------
    async def api_me(self, request: Request, viewer: Viewer) -> Response:
        user = viewer.user
        return _json({"name": user.name, "role": user.role, "brand": user.brand, "csrf_token": viewer.csrf,
                      "brands": viewer.brands(self.view.brands()), "can_write": viewer.can_write})  # fmt: skip

    async def api_keys(self, request: Request, viewer: Viewer) -> Response:
        brand = self._brand_param(request, viewer)
        return _json({"brand": brand, "keys": await self._keys(brand)})

    async def api_keys_create(self, request: Request, viewer: Viewer) -> Response:
        fields = await _json_body(request)
        raw, record = await self._mint(viewer, fields)
        url = f"{self._origin(request)}/mcp"
        return _json({"key": raw, "record": record.public(), "mcp_url": url}, 201)

    async def api_keys_revoke(self, request: Request, viewer: Viewer) -> Response:
        try:
            record, revoked = await self.ctx.keys.revoke(request.path_params["key_id"], viewer.only_brand,
                                                         actor=viewer.actor)  # fmt: skip
        except UsageError as exc:
            raise ConsoleError(str(exc), 404) from None
        return _json({"record": record.public(), "revoked": revoked})

    async def api_keys_rotate(self, request: Request, viewer: Viewer) -> Response:
        try:
            raw, record, old = await self.ctx.keys.rotate(request.path_params["key_id"], viewer.only_brand,
                                                           actor=viewer.actor)  # fmt: skip
        except UsageError as exc:
            raise ConsoleError(str(exc), 400) from None
        return _json({"key": raw, "record": record.public(), "replaces": old.key_id}, 201)

    async def api_approvals(self, request: Request, viewer: Viewer) -> Response:
        live, history = await self._approvals(viewer)
        return _json({"live": live, "history": history})

    async def api_approvals_decide(self, request: Request, viewer: Viewer) -> Response:
        body = await _json_body(request)
        record = await self._decide(viewer, request.path_params["approval_id"], str(body.get("decision") or ""),
                                    str(body.get("reason") or ""))  # fmt: skip
        return _json(approval_view(record, self.clock()))

    async def api_calls(self, request: Request, viewer: Viewer) -> Response:
        query, _ = self._call_query(request, viewer)
        page = await _in_thread(self.view.calls, query)
        return _json({"calls": page.calls, "next_before": page.next_before, "scanned_all": page.scanned_all,
                      "chain": await self._chain()})  # fmt: skip

    async def api_tools(self, request: Request, viewer: Viewer) -> Response:
        brand = self._brand_param(request, viewer)
        return _json({"brand": brand, "tools": self.view.tools(brand)})

    async def api_status(self, request: Request, viewer: Viewer) -> Response:
        return _json({**await self.view.status(), "audit_chain": await self._chain()})


def build_console(settings: ConsoleSettings, ctx: WebRouteContext) -> Console:
    brands = frozenset(ctx.view.brands()) if ctx.view is not None else frozenset()
    return Console(load(settings, ctx, brands), ctx)


# -- helpers -----------------------------------------------------------------------------------------------
def _role_ok(user: ConsoleUser, brands: dict[str, Any]) -> bool:
    """A stored user whose role still makes sense for the config in force (a removed brand ends its admins)."""
    if user.role == "admin":
        return True
    if user.role == "brand-admin":
        return user.brand in brands
    return user.role == "auditor" and (user.brand is None or user.brand in brands)


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("application/x-www-form-urlencoded", "multipart/form-data")


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ConsoleError("send a JSON object with Content-Type: application/json", 415)
    try:
        body = msgspec.json.decode(await request.body())
    except (msgspec.DecodeError, RecursionError):
        raise ConsoleError("the body is not valid JSON (or is nested too deeply)", 400) from None
    if not isinstance(body, dict):
        raise ConsoleError("send a JSON object", 400)
    return body


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _error(status: int, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    return JSONResponse(body, status)


def _next_path(value: str | None) -> str:
    """Where to go after sign-in: a console path only (never another site: an open redirect)."""
    if value and value.startswith(f"{BASE}/") and not value.startswith("//") and "\\" not in value:
        if not value.startswith((f"{BASE}/login", f"{BASE}/logout", f"{BASE}/oidc", f"{BASE}/api/")):
            return value
    return f"{BASE}/keys"


def _when(moment: float | None) -> str:
    if not moment:
        return "—"
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _days(seconds: float) -> str:
    days = seconds / 86_400
    return f"{days:g}d" if days >= 1 else f"{seconds:g}s"


def _moment(text: str, field: str) -> float | None:
    """A time filter: an ISO date-time (UTC unless it says otherwise), as from a datetime-local field."""
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConsoleError(f"Write {field} as a date and time, e.g. 2026-12-01T14:30.", 400, field) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _name_shown(name: str) -> str:
    """A typed user name as the log and the audit file may hold it: one that could be a user's, else withheld
    (a key or a password pasted into the wrong field must not be written down)."""
    if USER_NAME_RE.fullmatch(name) and not looks_like_key(name):
        return name
    return "(withheld)"


def _safe(exc: BaseException) -> str:
    text = str(exc)
    return text[:200] if text and not looks_like_key(text) else type(exc).__name__


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Work that takes milliseconds or more (a memory-hard hash, reading the audit file): off the event loop,
    so MCP requests go on meanwhile."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(function, *args)
