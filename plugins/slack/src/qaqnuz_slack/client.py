"""A small client of Slack's Web API (JSON over HTTPS with the bot token) that retries in the background.

`call` makes one request and raises `SlackError` saying whether a retry could help (429 with its
Retry-After, 5xx, timeouts, network errors) or not (`channel_not_found`, `invalid_auth`, ...). `deliver`
retries with exponential backoff and never raises: it is what the background tasks use, so a Slack outage
costs a counted failure and a log line, never a governed call's time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from qaqnuz import Secret

#: `ok: false` errors worth another try (everything else is a configuration problem a retry cannot fix).
RETRYABLE_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
#: The longest a Retry-After is obeyed for (a hostile or broken answer cannot park a task for hours).
MAX_RETRY_AFTER = 120.0


class SlackError(Exception):
    def __init__(self, error: str, *, retryable: bool, retry_after: float = 0.0) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class SlackClient:
    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        timeout: float,
        attempts: int,
        backoff: float,
        logger: logging.Logger,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.base_url = base_url
        self._token = token
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.logger = logger
        #: Failed attempts to reach Slack (each one also logged, and counted by `on_error`: the kernel's
        #: `qaqnuz_approval_notify_errors_total` for the approver's client).
        self.errors = 0
        self._on_error = on_error
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:  # made on first use, on the loop that serves
            self._http = httpx.AsyncClient(base_url=self.base_url + "/", timeout=self.timeout, follow_redirects=False)
        return self._http

    async def call(self, method: str, payload: dict[str, Any], *, form: bool = False) -> dict[str, Any]:
        """One Web API request. `form`: sent form-encoded, for the methods that read no JSON body (the
        `usergroups.*` ones)."""
        headers = {"Authorization": f"Bearer {self._token.reveal()}"}
        try:
            if form:
                response = await self._client().post(method, data=payload, headers=headers)
            else:
                response = await self._client().post(method, json=payload, headers=headers)
        except httpx.TimeoutException:
            raise SlackError("timeout", retryable=True) from None
        except httpx.HTTPError as exc:
            raise SlackError(type(exc).__name__, retryable=True) from None
        if response.status_code == 429:
            raise SlackError("http_429", retryable=True, retry_after=_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500:
            raise SlackError(f"http_{response.status_code}", retryable=True)
        if response.status_code != 200:
            raise SlackError(f"http_{response.status_code}", retryable=False)
        try:
            body = response.json()
        except ValueError:
            raise SlackError("invalid_json", retryable=True) from None
        if not isinstance(body, dict):
            raise SlackError("invalid_json", retryable=True)
        if body.get("ok") is not True:
            error = str(body.get("error") or "unknown_error")[:64]
            raise SlackError(error, retryable=error in RETRYABLE_ERRORS)
        return body

    async def deliver(self, method: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """`call`, retried with backoff; the answer, or None once it gave up (logged and counted)."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.call(method, payload)
            except SlackError as exc:
                self.errors += 1
                self._on_error()
                last = attempt == self.attempts or not exc.retryable
                self.logger.warning(
                    "slack %s failed (%s), attempt %d of %d%s",
                    method,
                    exc.error,
                    attempt,
                    self.attempts,
                    "; giving up" if last else "",
                )
                if last:
                    return None
                await anyio.sleep(min(max(delay, exc.retry_after), MAX_RETRY_AFTER))
                delay *= 2
        return None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, min(float(value or 1), MAX_RETRY_AFTER))
    except ValueError:
        return 1.0
