"""`Upstream`: one base URL, one lazily created httpx client, and every rule about talking to it.

Timeouts, the response size cap, the SSRF guard, bounded retries and the mapping of outcomes onto the
kernel's error classes live here, so the configured pack and code packs (contrib/pack-weather) share them.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import httpx
import msgspec

from qaqnuz import DependencyError, TerminalError
from qaqnuz_pack_http.guard import BlockedAddress, GuardedBackend, Resolver

REFUSED_ADDRESS = (
    "The upstream service address is not allowed: private, loopback and internal network addresses are refused."
)
OVERSIZED = "The upstream response is larger than this tool accepts."
BAD_PATH_ARGUMENT = "An argument cannot be used as a URL path segment (empty, '.' or '..')."
BAD_HEADER_ARGUMENT = "An argument cannot be used in an HTTP header (line break, NUL or non-ASCII character)."

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEPENDENCY_STATUSES = frozenset({408, 429})  # 4xx answers that mean "not now", not "never"
_NO_BODY = object()
_decoder = msgspec.json.Decoder()


def rejected(status: int) -> str:
    """The public text of a 4xx answer: the status code only, never the body or the URL."""
    return f"The upstream service rejected the request (HTTP {status})."


def redirected(status: int) -> str:
    return f"The upstream service answered with a redirect (HTTP {status}), which this tool does not follow."


def _quiet_http_loggers() -> None:
    """httpx logs every request URL (query string included) at INFO, httpcore logs headers at DEBUG.

    Raise them to WARNING unless the operator set a level on purpose."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


_quiet_http_loggers()


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool built on the guarded network backend."""

    def __init__(self, *, backend: GuardedBackend, limits: httpx.Limits) -> None:
        import httpcore

        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class _Oversized(Exception):
    pass


class _Retry(Exception):
    def __init__(self, wait: float | None) -> None:
        super().__init__()
        self.wait = wait


class Upstream:
    """Requests to one base URL. Paths given to `request` must already be percent-encoded.

    - every URL must stay under `base_url` (same scheme, host, port; path under the base path);
    - redirects are not followed; cookies are not kept; proxies and .netrc from the environment are ignored;
    - the body is read in chunks and reading stops at `max_response_bytes` (then the connection is dropped);
    - idempotent methods are retried `retries` times on connection failure or 429/502/503/504, waiting
      `Retry-After` when the upstream gives one no longer than `max_retry_wait` seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        max_response_bytes: int = 1024 * 1024,
        allow_private: bool = False,
        headers: Mapping[str, str] | None = None,
        retries: int = 1,
        max_retry_wait: float = 5.0,
        max_connections: int = 10,
        logger: logging.Logger | None = None,
        resolver: Resolver | None = None,
        observe: Callable[[float, str | None], None] | None = None,
    ) -> None:
        self.base = httpx.URL(base_url)
        if self.base.scheme not in ("http", "https") or not self.base.host:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        self._prefix = self.base.raw_path.split(b"?", 1)[0].rstrip(b"/")
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout if connect_timeout is not None else timeout)
        self.max_response_bytes = max_response_bytes
        self.headers = dict(headers or {})
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=30.0
        )
        self.backend = GuardedBackend(allow_private=allow_private, resolver=resolver)
        self.log = logger or logging.getLogger("qaqnuz_pack_http")
        #: (seconds, error kind or None) for every request sent (the pack's `ctx.upstream`).
        self.observe = observe
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def client(self) -> httpx.AsyncClient:
        """The pack's one client, created on first use (so a pack that is never called opens nothing)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=_PinnedTransport(backend=self.backend, limits=self.limits),
                timeout=self.timeout,
                follow_redirects=False,
                trust_env=False,
                headers={"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "qaqnuz-http"},
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- URLs ------------------------------------------------------------------------------------------
    def url(self, path: str) -> httpx.URL:
        """`base_url` + an encoded `path`; refuses anything that does not stay under the base URL."""
        if not path.startswith("/"):
            path = "/" + path
        url = httpx.URL(str(self.base).split("?", 1)[0].rstrip("/") + path)
        if (url.scheme, url.host, url.port) != (self.base.scheme, self.base.host, self.base.port):
            raise TerminalError("url left the base origin", public=REFUSED_ADDRESS)
        raw = url.raw_path.split(b"?", 1)[0]
        if self._prefix and raw != self._prefix and not raw.startswith(self._prefix + b"/"):
            raise TerminalError("url left the base path", public=REFUSED_ADDRESS)
        return url

    # -- requests --------------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        tool: str,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = _NO_BODY,
    ) -> Any:
        """Send one request and return its payload (JSON data, `{"text": ...}`, or None for an empty body).

        Raises `DependencyError` (transient upstream trouble) or `TerminalError` (refused, rejected, too
        large); their public texts never hold the URL, a header or the body.
        """
        url = self.url(path)
        merged = {**self.headers, **(headers or {})}
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        for attempt in range(attempts):
            try:
                return await self._once(method, url, tool, params, merged, json)
            except _Retry as retry:
                last = attempt == attempts - 1
                wait = retry.wait if retry.wait is not None else min(0.2 * 2**attempt, self.max_retry_wait)
                if last or wait > self.max_retry_wait:
                    raise DependencyError("upstream unavailable") from None
                await anyio.sleep(wait)
        raise DependencyError("upstream unavailable")  # pragma: no cover - the loop always returns or raises

    async def _once(
        self,
        method: str,
        url: httpx.URL,
        tool: str,
        params: Sequence[tuple[str, str]] | None,
        headers: Mapping[str, str],
        json: Any,
    ) -> Any:
        client = self.client()
        kwargs: dict[str, Any] = {"params": list(params) if params else None, "headers": dict(headers)}
        if json is not _NO_BODY:
            kwargs["content"] = msgspec.json.encode(json)
            kwargs["headers"].setdefault("Content-Type", "application/json")
        started = time.monotonic()
        status = 0
        try:
            request = client.build_request(method, url, **kwargs)
            response = await client.send(request, stream=True)
            try:
                status = response.status_code
                if 200 <= status < 300:
                    body = await self._read(response)
                    self._log(method, tool, status, started, error=None)
                    return self._payload(response, body)
            finally:
                await response.aclose()
        except BlockedAddress:
            self._log(method, tool, "refused", started)
            raise TerminalError("refused an internal address", public=REFUSED_ADDRESS) from None
        except _Oversized:
            self._log(method, tool, status, started, "response over max_response_bytes", error="other")
            raise TerminalError("response over the cap", public=OVERSIZED) from None
        except httpx.TimeoutException as exc:
            self._log(method, tool, "timeout", started, error="timeout")
            raise DependencyError(f"upstream {type(exc).__name__}") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            self._log(method, tool, "connect-error", started, error="connect")
            if isinstance(exc, httpx.ConnectError):
                raise _Retry(None) from None
            raise DependencyError(f"upstream {type(exc).__name__}") from None
        except httpx.HTTPError as exc:  # TLS, protocol and transport failures
            self._log(method, tool, "transport-error", started, error="other")
            raise DependencyError(f"upstream {type(exc).__name__}") from None
        self._log(method, tool, status, started, error="status")
        if status in RETRY_STATUSES:
            raise _Retry(_retry_after(response.headers.get("Retry-After")))
        if status >= 500 or status in DEPENDENCY_STATUSES:
            raise DependencyError(f"upstream HTTP {status}")
        if 300 <= status < 400:
            raise TerminalError(f"upstream HTTP {status}", public=redirected(status))
        if 400 <= status < 500:
            raise TerminalError(f"upstream HTTP {status}", public=rejected(status))
        raise DependencyError(f"upstream HTTP {status}")  # 1xx as a final answer: a broken upstream

    async def _read(self, response: httpx.Response) -> bytes:
        """The body, read chunk by chunk and abandoned as soon as it passes the cap."""
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise _Oversized
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise _Oversized
            chunks.append(chunk)
        return b"".join(chunks)

    def _payload(self, response: httpx.Response, body: bytes) -> Any:
        if not body.strip():
            return None
        content_type = response.headers.get("Content-Type", "").lower()
        if "json" in content_type:
            try:
                return _decoder.decode(body)
            except (msgspec.DecodeError, RecursionError):
                raise DependencyError("upstream sent invalid JSON (or JSON nested too deeply)") from None
        return {"text": body.decode(response.encoding or "utf-8", errors="replace")}

    def _log(
        self, method: str, tool: str, status: int | str, started: float, note: str = "", *, error: str | None = ""
    ) -> None:
        """Method, tool, status and elapsed time only: never the URL, query, headers or body. Each request
        that reached the network is also observed (`error`: its failure's kind, None for a success; "" for
        one refused before it left, which is not the upstream's latency)."""
        seconds = time.monotonic() - started
        self.log.info("%s %s -> %s in %.0fms%s", method, tool, status, seconds * 1000, f" ({note})" if note else "")
        if self.observe is not None and error != "":
            self.observe(seconds, error)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
