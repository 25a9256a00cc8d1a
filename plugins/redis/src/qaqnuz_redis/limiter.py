"""The Redis rate limiter: the script of `script.py` behind a bounded client and a circuit breaker.

Every call costs one `EVALSHA` on a pooled connection. Its time is bounded three ways: the pool is at most
`pool_size` connections, and a call waits for one only while its budget lasts; reading a reply may take
`timeout` (redis-py's socket timeout), opening a connection `connect_timeout`; and the whole call,
waiting included, is cut at `connect_timeout + timeout` whatever happens inside redis-py. redis-py's own
retries are switched off (redis-py 8 retries a failed command or connection ten times by default, with
backoff of up to a second): a retry would multiply the time a call may take behind a dead Redis, and the
breaker does the retrying, once per cool-off, for the whole process. Any failure refuses the call as
`LimiterUnavailable` (retryable, counted in `qaqnuz_limiter_errors_total`) and opens the breaker
(`breaker.py`); nothing is ever admitted without Redis's answer.

The client is made on first use, on the event loop that serves the calls, so building the limiter (as
`qaqnuz config check` does) opens no connection. Once closed (a config reload replaced it, the server
stops), it refuses every call rather than reconnect behind its owner's back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from qaqnuz import Admission, Limit, LimiterUnavailable
from qaqnuz_redis import script
from qaqnuz_redis.breaker import Breaker, wait_ms
from qaqnuz_redis.settings import Options

T = TypeVar("T")


class RedisLimiter:
    def __init__(self, options: Options, logger: logging.Logger) -> None:
        self.options = options
        self._log = logger
        self._breaker = Breaker(options.breaker_cooldown, probe_wait=options.timeout)
        self._budget = options.connect_timeout + options.timeout
        self._redis: Redis | None = None
        self._slots: asyncio.Semaphore | None = None
        self._members = itertools.count()
        self._instance = os.urandom(8).hex()  # members unique across processes sharing the Redis
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisLimiter({self.options.endpoint})"

    async def admit(self, key_id: str, key_limit: Limit, brand: str, brand_limit: Limit) -> Admission:
        keys = script.keys(self.options.key_prefix, key_id, brand)
        args = (
            key_limit.count,
            script.micros(key_limit.window_s),
            brand_limit.count,
            script.micros(brand_limit.window_s),
            f"{self._instance}:{next(self._members)}",
        )

        async def evaluate(client: Redis) -> Any:
            try:
                return await client.execute_command("EVALSHA", script.SHA, 2, *keys, *args)
            except NoScriptError:  # a restarted or flushed Redis: send the script whole (EVAL caches it)
                return await client.execute_command("EVAL", script.SCRIPT, 2, *keys, *args)

        return script.decode(await self._guarded(evaluate))

    async def ready(self) -> bool:
        """False while the breaker is open; otherwise (or as the breaker's probe) whether Redis answers PING
        within the budget. Probing here matters: a server taken out of rotation for not being ready gets
        no calls, so only its readiness checks can find that Redis is back."""
        try:
            await self._guarded(lambda client: client.execute_command("PING"))
        except LimiterUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        self._closed = True
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()  # closes its pool too

    async def _guarded(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        """`operation` on the client, within the budget and the breaker's rules; any failure is a
        `LimiterUnavailable` (and opens the breaker)."""
        if self._closed:
            raise LimiterUnavailable("the Redis limiter was closed", retry_after_ms=wait_ms(self.options.timeout))
        probe = self._breaker.enter()
        try:
            async with asyncio.timeout(self._budget):
                client, slots = self._client()
                async with slots:
                    if not probe:
                        self._breaker.refuse()  # Redis may have failed while this call waited for a connection
                    result = await operation(client)
        except LimiterUnavailable:
            raise
        except Exception as exc:
            if self._breaker.failed():
                self._log.warning(
                    "Redis at %s failed (%s); refusing every call as retryable, and trying Redis again every %gs "
                    "until it answers",
                    self.options.endpoint,
                    self._describe(exc),
                    self._breaker.cooldown,
                )
            raise LimiterUnavailable(
                f"Redis at {self.options.endpoint} failed ({type(exc).__name__})",
                retry_after_ms=self._breaker.retry_after_ms(),
            ) from exc
        finally:
            if probe:
                self._breaker.probe_done()
        if self._breaker.succeeded(probe):
            self._log.info("Redis at %s answers again; calls are decided again", self.options.endpoint)
        return result

    def _client(self) -> tuple[Redis, asyncio.Semaphore]:
        if self._redis is None or self._slots is None:
            options = self.options
            self._redis = Redis(
                host=options.host,
                port=options.port,
                db=options.db,
                ssl=options.tls,
                ssl_cert_reqs="required",  # said outright: redis-py 5 did not check the host name by default
                ssl_check_hostname=True,
                username=options.username,
                password=options.password.reveal() if options.password is not None else None,
                socket_timeout=options.timeout,
                socket_connect_timeout=options.connect_timeout,
                retry=Retry(NoBackoff(), 0),
                max_connections=options.pool_size,  # never reached: `_slots` lets no more calls in at once
                client_name="qaqnuz-limiter",
                protocol=2,  # redis-py 8 speaks RESP3 by default, which Redis before 6 does not; RESP2 serves all
            )
            self._slots = asyncio.Semaphore(options.pool_size)
        return self._redis, self._slots

    def _describe(self, exc: BaseException) -> str:
        """The failure for the log: its type and redis-py's text (which names host and port), never the
        password (masked here as well as by the kernel's log filter)."""
        text = str(exc).strip()
        if not text:
            text = f"no answer within {self._budget:g}s" if isinstance(exc, TimeoutError) else "no detail"
        if self.options.password is not None and self.options.password.reveal():
            text = text.replace(self.options.password.reveal(), "[redacted]")
        return f"{type(exc).__name__}: {text[:200]}"
