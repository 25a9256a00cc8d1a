"""The `http` tool provider: each configured tool is one templated request against the pack's base URL."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from qaqnuz import (
    CALLER_NAMES,
    ConfigError,
    TerminalError,
    Tool,
    ToolPackContext,
    current_call,
    input_schema,
    parse_positive_duration,
    tool_from_config,
    unique_names,
)
from qaqnuz_pack_http.client import BAD_HEADER_ARGUMENT, BAD_PATH_ARGUMENT, Upstream
from qaqnuz_pack_http.settings import AuthConfig, HttpSettings, HttpToolConfig
from qaqnuz_pack_http.template import (
    Omit,
    TemplateSyntaxError,
    body_placeholders,
    encode_segment,
    placeholders,
    render,
    render_body,
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*\Z")
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"})
_BAD_HEADER_CHARS = ("\r", "\n", "\x00")


NO_CALLER = "This tool needs to know its caller and was called outside a governed call."


def pack_name(ctx: ToolPackContext) -> str:
    """The pack this instance serves (`shop` for `[packs.shop]` and `[brands.acme.packs.shop]`)."""
    return ctx.section.rpartition("packs.")[2] or "?"


def check_header(name: str, value: str, where: str, problems: list[str], auth_header: str | None) -> None:
    if not _HEADER_NAME.match(name):
        problems.append(f"{where}: {name!r} is not a valid header name")
    elif name.lower() in _RESERVED_HEADERS:
        problems.append(f"{where}: {name} is set by the HTTP client; remove it")
    elif auth_header is not None and name.lower() == auth_header.lower():
        problems.append(f"{where}: {name} is set by [auth]; remove it here")
    if any(c in value for c in _BAD_HEADER_CHARS) or not value.isascii():
        problems.append(f"{where}: header values are ASCII without line breaks")


def auth_headers(auth: AuthConfig | None, ctx: ToolPackContext, where: str) -> dict[str, str]:
    """The credential header(s), resolved now from the environment or a file (never from config text)."""
    if auth is None:
        return {}
    problems = []
    allowed = {"bearer": {"token"}, "header": {"header", "value"}, "basic": {"username", "password"}}[auth.type]
    for field in ("token", "header", "value", "username", "password"):
        given = getattr(auth, field) is not None
        if given and field not in allowed:
            problems.append(f"{where} {field}: does not apply to type = {auth.type!r}")
        if not given and field in allowed:
            problems.append(f"{where} {field}: required for type = {auth.type!r}")
    if auth.header is not None and (not _HEADER_NAME.match(auth.header) or auth.header.lower() in _RESERVED_HEADERS):
        problems.append(f"{where} header: {auth.header!r} is not a usable header name")
    if auth.username is not None and ":" in auth.username:
        problems.append(f"{where} username: cannot contain ':'")
    if problems:
        raise ConfigError(problems)
    if auth.type == "bearer":
        assert auth.token is not None
        return {"Authorization": f"Bearer {ctx.secret(auth.token, f'{where} token').reveal()}"}
    if auth.type == "header":
        assert auth.header is not None and auth.value is not None
        return {auth.header: ctx.secret(auth.value, f"{where} value").reveal()}
    assert auth.username is not None and auth.password is not None
    password = ctx.secret(auth.password, f"{where} password")
    token = base64.b64encode(f"{auth.username}:{password.reveal()}".encode()).decode("ascii")
    ctx.secrets.mask(token)  # the encoded form is as secret as the password
    return {"Authorization": f"Basic {token}"}


class HttpTool:
    """One compiled tool: its templates checked at load, rendered per call."""

    def __init__(self, config: HttpToolConfig, pack: HttpPack, where: str) -> None:
        self.config = config
        self.pack = pack
        self.where = where
        problems: list[str] = []
        schema = input_schema(config, where)
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        self.defaults = {k: p["default"] for k, p in properties.items() if isinstance(p, dict) and "default" in p}
        self.inputs = frozenset(properties)
        variables = pack.variables
        for name in properties:
            if name in CALLER_NAMES:
                problems.append(
                    f"{where} input.{name}: {name!r} is filled from the verified caller ({{{{ {name} }}}}), never "
                    f"taken from input; rename the parameter"
                )
            elif name in variables:
                problems.append(f"{where} input.{name}: {name!r} is also a pack variable; rename one of them")
        known = set(variables) | set(properties) | CALLER_NAMES
        always = set(variables) | required | set(self.defaults) | CALLER_NAMES
        used: set[str] = set()

        def check(location: str, text: str) -> list[str]:
            try:
                names = placeholders(text)
            except TemplateSyntaxError as exc:
                problems.append(f"{location}: {exc}")
                return []
            for name in names:
                if name not in known:
                    problems.append(f"{location}: unknown placeholder {name!r}")
            used.update(names)
            return names

        # path
        path = config.path
        if not path.startswith("/"):
            problems.append(f"{where} path: must start with '/' (it is appended to base_url)")
        static = re.sub(r"\{\{[^}]*\}\}", "", path)
        if not _PATH_CHARS.match(static):
            problems.append(f"{where} path: only URL-safe characters outside placeholders (put queries in `query`)")
        self.segments = path.split("/")
        for segment in self.segments:
            if segment in (".", ".."):
                problems.append(f"{where} path: '.' and '..' segments are not allowed")
            for name in check(f"{where} path", segment):
                if name in known and name not in always:
                    problems.append(
                        f"{where} path: placeholder {name!r} is an optional argument without a default; "
                        f"a path needs a value (make it required or give it a default)"
                    )
        # query and headers
        self.query: list[tuple[str, str]] = []
        for key, value in config.query.items():
            text = value if isinstance(value, str) else _static(value)
            check(f"{where} query.{key}", text)
            self.query.append((key, text))
        self.headers: list[tuple[str, str]] = []
        for key, value in config.headers.items():
            check_header(key, value, f"{where} headers.{key}", problems, pack.auth_header)
            check(f"{where} headers.{key}", value)
            self.headers.append((key, value))
        # body
        if config.body is not None and config.method == "GET":
            problems.append(f"{where} body: a GET request has no body; use query or another method")
        try:
            for location, name in body_placeholders(config.body):
                used.add(name)
                if name not in known:
                    problems.append(f"{where} {location}: unknown placeholder {name!r}")
        except TemplateSyntaxError as exc:
            problems.append(f"{where} body: {exc}")
        if problems:
            raise ConfigError(problems)
        self.caller_names = frozenset(used & CALLER_NAMES)
        self.tool = tool_from_config(config, self, where, binds_brand="brand" in used)

    async def __call__(self, arguments: Mapping[str, Any]) -> Any:
        # Only declared inputs fill placeholders: with a whole `input_schema` open to other properties, an
        # undeclared argument must not override a (per-brand) variable.
        values = {**self.pack.variables, **self.defaults, **{k: v for k, v in arguments.items() if k in self.inputs}}
        if self.caller_names:
            call = current_call()
            if call is None:  # fail closed: never send a tenant-scoped request without its tenant
                raise TerminalError("no call context", public=NO_CALLER)
            values.update(call.caller.values())
        segments = []
        for segment in self.segments:
            if "{{" not in segment:
                segments.append(segment)
                continue
            rendered = render(segment, values, encode_segment)  # every name is known to be present
            if rendered in ("", ".", ".."):
                raise TerminalError("bad path segment", public=BAD_PATH_ARGUMENT)
            segments.append(rendered)
        params = []
        for key, template in self.query:
            try:
                params.append((key, render(template, values)))
            except Omit:
                continue
        headers = {}
        for key, template in self.headers:
            try:
                value = render(template, values)
            except Omit:
                continue
            if any(c in value for c in _BAD_HEADER_CHARS) or not value.isascii():
                raise TerminalError("bad header value", public=BAD_HEADER_ARGUMENT)
            headers[key] = value
        extra: dict[str, Any] = {}
        if self.config.body is not None:
            try:
                extra["json"] = render_body(self.config.body, values)
            except Omit:
                pass
        return await self.pack.upstream.request(
            self.config.method, "/".join(segments), tool=self.config.name, params=params, headers=headers, **extra
        )


def _static(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HttpPack:
    """An `http` pack: one Upstream (one lazily created httpx client) shared by all its tools."""

    def __init__(self, settings: HttpSettings, ctx: ToolPackContext) -> None:
        where = ctx.where
        problems: list[str] = []
        base = check_base_url(settings.base_url, f"{where} base_url", problems)
        for key, value in settings.variables.items():
            if not _NAME.match(key):
                problems.append(f"{where} variables.{key}: names are letters, digits and '_' (max 64)")
            if "{{" in value or "}}" in value:
                problems.append(f"{where} variables.{key}: variables are plain values, not templates")
            if key in CALLER_NAMES:
                problems.append(
                    f"{where} variables.{key}: {key!r} is filled from the verified caller; rename the variable"
                )
        self.variables = dict(settings.variables)
        durations = {}
        for field in ("timeout", "connect_timeout", "max_retry_wait"):
            raw = getattr(settings, field)
            if raw is None:
                continue
            try:
                durations[field] = parse_positive_duration(raw)
            except ValueError as exc:
                problems.append(f"{where} {field}: {exc}")
        if settings.max_response_bytes < 1:
            problems.append(f"{where} max_response_bytes: at least 1")
        if not 0 <= settings.retries <= 5:
            problems.append(f"{where} retries: between 0 and 5")
        if not 1 <= settings.max_connections <= 100:
            problems.append(f"{where} max_connections: between 1 and 100")
        self.auth_header = None
        if settings.auth is not None:
            self.auth_header = "Authorization" if settings.auth.type != "header" else settings.auth.header
        for key, value in settings.headers.items():
            check_header(key, value, f"{where} headers.{key}", problems, self.auth_header)
        try:
            credential = auth_headers(settings.auth, ctx, f"[{ctx.section}.auth]")
        except ConfigError as exc:
            problems.extend(exc.problems)
            credential = {}
        if problems:
            raise ConfigError(problems)
        self.upstream = Upstream(
            str(base),
            timeout=durations.get("timeout", 10.0),
            connect_timeout=durations.get("connect_timeout"),
            max_response_bytes=settings.max_response_bytes,
            allow_private=settings.allow_private,
            headers={**settings.headers, **credential},
            retries=settings.retries,
            max_retry_wait=durations.get("max_retry_wait", 5.0),
            max_connections=settings.max_connections,
            logger=ctx.logger,
            observe=ctx.upstream,
        )
        try:
            unique_names(settings.tools, where)
        except ConfigError as exc:
            problems.extend(exc.problems)
        tools: list[Tool] = []
        for index, tool in enumerate(settings.tools):
            try:
                tools.append(HttpTool(tool, self, f"{where} tools[{index}]").tool)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        self.tools: Sequence[Tool] = tuple(tools)

    async def list_tools(self) -> Sequence[Tool]:
        return self.tools

    async def aclose(self) -> None:
        await self.upstream.aclose()


def check_base_url(text: str, where: str, problems: list[str]) -> httpx.URL | None:
    """An absolute http(s) URL with a host and no credentials, query or fragment."""
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        problems.append(f"{where}: not a valid URL")
        return None
    if url.scheme not in ("http", "https"):
        problems.append(f"{where}: must be an http:// or https:// URL (got scheme {url.scheme or 'none'!r})")
    elif not url.host:
        problems.append(f"{where}: needs a host name")
    if url.userinfo:
        problems.append(f"{where}: must not contain credentials; use [auth] with a secret reference")
    if url.query or url.fragment:
        problems.append(f"{where}: must not have a query or fragment; use a tool's `query` table")
    if "{{" in text:
        problems.append(f"{where}: base_url is not a template")
    return url


def factory(settings: HttpSettings, ctx: ToolPackContext) -> HttpPack:
    return HttpPack(settings, ctx)
