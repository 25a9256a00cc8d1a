"""The composition root: a kernel assembles config, plugins, store, audit sinks, providers, registry and
metrics, and owns one lifecycle, `async with kernel.running() as host`, used by every transport and command.

Nothing here is global, so tests (and one process) can run several kernels side by side. Transports see
only the kernel's `Host` (authenticate, list, call, readiness, metrics, web routes), never its internals.
The selected providers and the config they were built from form an immutable `Runtime`; a config reload
builds a new one, validates it whole and swaps it in atomically, or keeps the running one and logs why not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from qaqnuz.admin import load_secret, open_admin
from qaqnuz.config import Config, load_config, parse_duration
from qaqnuz.envelope import Outcome
from qaqnuz.errors import ConfigError, CredentialsUnavailable, PluginError
from qaqnuz.metrics import Metrics
from qaqnuz.pipeline import Pipeline
from qaqnuz.plugins import Plugins
from qaqnuz.records import ChangeListener, Channel, Host, MountedRoute, Principal, ToolList
from qaqnuz.registry import PacksUnavailable, Registry, Snapshot
from qaqnuz.runtime import Builder, Runtime, build_routes, check_references, close_all
from qaqnuz.secrets import Redactor
from qaqnuz.sink import Bookkeeper
from qaqnuz.tenancy import tenancy_warnings

log = logging.getLogger("qaqnuz.kernel")


class Kernel:
    """One assembled server. `offline=True` builds tool packs only to describe their tools (`tools list`):
    they must not connect anywhere, and an unresolvable secret is not an error."""

    def __init__(
        self,
        config: Config,
        *,
        plugins: Plugins | None = None,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        offline: bool = False,
    ) -> None:
        from qaqnuz.version import __version__

        self.clock = clock
        self.version = __version__
        self.plugins = plugins if plugins is not None else Plugins()
        self.secret = secret if secret is not None else load_secret(config)
        self.metrics = Metrics(__version__, tool_limit=config.server.metrics_tool_limit)
        self.redactor = Redactor()
        self.redactor.guard([logging.getLogger(), logging.getLogger("qaqnuz")])
        self._config = config
        self._runtime: Runtime | None = None
        self.admin = open_admin(
            config,
            plugins=self.plugins,
            secret=self.secret,
            clock=clock,
            current=lambda: self.config,
            on_audit_error=self.metrics.audit_errors.inc,
            mask=self.redactor.add,
        )
        self.store, self.audit, self.keys, self.approvals = (
            self.admin.store,
            self.admin.audit,
            self.admin.keys,
            self.admin.approvals,
        )
        self.registry = Registry()
        self.sink = Bookkeeper(metrics=self.metrics, audit=self.audit, store=self.store, config=lambda: self.config,
                               clock=clock)  # fmt: skip
        self.pipeline = Pipeline(self._current, self.sink)
        self.builder = Builder(
            self.plugins,
            self.store,
            self.secret,
            clock,
            self.redactor.add,
            offline,
            notify_failed=self.metrics.approval_notify_errors.inc,
            upstream=self.metrics.upstream,
        )
        self._listeners: list[ChangeListener] = []
        self._retiring: list[tuple[float, Runtime]] = []  # (when to close, a runtime a reload replaced)
        self._routes: list[MountedRoute] = []
        self._config_stamp = _stamp(config.path)
        self._started = False
        self._auth_down = False  # the auth provider's last call raised (logged once per outage)
        #: (when, "changed" | "unchanged" | "error") of the last periodic tool sync (0.0, "") before one ran.
        self.last_sync: tuple[float, str] = (0.0, "")
        self.host: Host = KernelHost(self)
        try:
            self._runtime = self.builder.runtime(config, previous=None)
        except BaseException:
            self.redactor.release()
            self.admin.close_now()
            raise

    # -- state -----------------------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None
        return self._runtime

    @property
    def config(self) -> Config:
        return self._runtime.config if self._runtime is not None else self._config

    def _current(self) -> tuple[Runtime, Snapshot]:
        return self.runtime, self.registry.snapshot

    @property
    def loopback_only(self) -> bool:
        """True while the selected auth provider is marked `loopback_only` (e.g. the built-in `anonymous`).

        A network transport must then refuse to bind any address but a loopback one. A reload never switches
        a running kernel to such a provider, so checking at bind time is enough.
        """
        return _loopback_only(self.runtime.auth)

    def transport(self, name: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """Build the transport `name` from `[plugins.<name>]`, with command-line overrides on top."""
        return self.builder.transport(self.config, name, overrides or {})

    def warnings(self) -> list[str]:
        """What is allowed but probably wrong (tools several brands share without binding the brand)."""
        return tenancy_warnings(self.runtime, self.registry.snapshot)

    # -- lifecycle -------------------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self, *, background: bool = True, strict: bool = True) -> AsyncIterator[Host]:
        """Start (first sync), yield the `Host`, and always close. With `background`, tool sync, config
        reload, approval expiry and last-used flushes run while the body does. `strict=False` (for
        describing tools) logs what would stop a server instead of raising it."""
        try:
            await self.start(strict=strict)
            if background:
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self.run_background)
                        try:
                            yield self.host
                        finally:
                            tg.cancel_scope.cancel()
                except BaseExceptionGroup as group:  # the body's own error, not wrapped by our task group
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            else:
                yield self.host
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def start(self, *, strict: bool = True) -> None:
        """First sync; strict: a broken pack, a duplicate or a dangling reference stops startup."""
        if self._started:
            return
        runtime = self.runtime
        await self.registry.sync(runtime.packs, runtime.brand_packs, strict=strict)
        problems = check_references(runtime.config, set(self.registry.snapshot.tools))
        routes: list[MountedRoute] = []
        try:
            from qaqnuz.serverview import KernelView

            routes = build_routes(
                runtime.config,
                self.plugins,
                self.keys,
                self.approvals,
                self.clock,
                self.redactor.add,
                users=self.admin.users,
                view=KernelView(self),
                secret=self.secret,
                audit=self.audit.record,
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems and strict:
            raise ConfigError(problems)
        for problem in problems:
            log.warning("%s", problem)
        self._routes = routes
        self._started = True
        for warning in self.warnings():
            log.warning("%s", warning)
        self.metrics.tools_registered.set(len(self.registry.snapshot.tools))
        await self.sink.refresh_pending()
        self.sink.publish_quotas()
        self._audit_at_start()
        log.info(
            "kernel ready: %d tools from %d packs, %d brands",
            len(self.registry.snapshot.tools),
            len(runtime.packs),
            len(runtime.config.brands),
        )

    async def run_background(self) -> None:
        """Sync tools and reload config every sync period; flush last-used on its own period. First, an
        approver with work of its own (posting what never went out) gets its `start()`."""
        starter = getattr(self.runtime.approver, "start", None)
        if starter is not None:
            try:
                await starter()
            except Exception as exc:
                log.error("starting the approver failed (%s)", type(exc).__name__)
        sync_every = parse_duration(self.config.server.sync_interval)
        flush_every = parse_duration(self.config.server.last_used_flush)
        next_flush = time.monotonic() + flush_every
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._anchor_audit)
            while True:
                await anyio.sleep(sync_every)
                await self.tick()
                if time.monotonic() >= next_flush:
                    await self.flush()
                    next_flush = time.monotonic() + flush_every

    async def _anchor_audit(self) -> None:
        """Every `[audit] fsync_interval`: the audit file to disk (in a thread) and its newest record anchored
        in the store, so the serving loop never waits on the disk for a call (`fsync = "batch"`)."""
        interval = parse_duration(self.config.audit.fsync_interval)
        while True:
            await anyio.sleep(interval)
            self.audit.resume()
            if not await self.audit.anchor(self.store):
                self.metrics.store_errors.labels("anchor").inc()

    def _audit_at_start(self) -> None:
        """Try the audit sinks now, not at the first call, and say loudly, once, if a failing sink will not
        stop calls."""
        self.audit.probe()
        if self.config.audit.on_error == "continue":
            log.warning('[audit] on_error = "continue": calls are served even when audit records cannot be '
                        "written; each lost record is counted in qaqnuz_audit_errors_total")  # fmt: skip

    async def tick(self) -> None:
        """One sync period: reload the config if its file changed, sync every pack, expire approvals."""
        changed = await self.maybe_reload()
        await self._close_retired()
        runtime = self.runtime
        try:
            synced = await self.registry.sync(runtime.packs, runtime.brand_packs)
            self.metrics.tool_sync.labels("changed" if synced else "unchanged").inc()
            self.last_sync = (self.clock(), "changed" if synced else "unchanged")
        except Exception as exc:
            self.metrics.tool_sync.labels("error").inc()
            self.last_sync = (self.clock(), "error")
            log.error("tool sync failed (%s)", type(exc).__name__)
            synced = False
        self.metrics.tools_registered.set(len(self.registry.snapshot.tools))
        try:
            await self.store.expire_approvals(self.clock())
        except Exception as exc:
            self.metrics.store_errors.labels("expire").inc()
            log.error("expiring approvals failed (%s)", type(exc).__name__)
        await self.sink.refresh_pending()
        if changed or synced:
            log.info("tool catalogue or config changed; notifying clients")
            await self.notify_changed()

    async def maybe_reload(self) -> bool:
        path = self.config.path
        stamp = _stamp(path)
        if path is None or stamp == self._config_stamp:
            return False
        runtime: Runtime | None = None
        try:
            config = load_config(path)
            problems = _restart_only(self.config, config)
            if problems:
                raise ConfigError(problems)
            runtime = self.builder.runtime(config, previous=self.runtime)
            # The new catalogue is synced whole, strictly, before anything is swapped: a brand never runs a
            # handler of the old config under the permissions of the new one, or the other way round.
            staging = self.registry.successor()
            await staging.sync(runtime.packs, runtime.brand_packs, strict=True)
            problems = check_references(config, set(staging.snapshot.tools))
            if _loopback_only(runtime.auth) and not self.loopback_only:
                # The transport checked its bind address against the auth at startup; it cannot now.
                problems.append(
                    f"[plugins] auth: {config.plugins.auth!r} is loopback only and can be chosen only at startup; "
                    f"restart the server to use it"
                )
            if problems:
                raise ConfigError(problems)
        except PacksUnavailable as exc:  # transient (a pack could not list its tools): try again next period
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload failed, keeping the running config; retrying:\n%s", exc)
            await self._close_unused(runtime, keep=self.runtime)
            return False
        except (ConfigError, PluginError) as exc:
            self._config_stamp = stamp  # this file is wrong as written: wait for the next edit
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            await self._close_unused(runtime, keep=self.runtime)
            return False
        except Exception as exc:  # transient (a pack could not list its tools): try again next period
            self.metrics.config_reloads.labels("rejected").inc()
            log.error("config reload failed (%s), keeping the running config; retrying", type(exc).__name__)
            await self._close_unused(runtime, keep=self.runtime)
            return False
        previous, served = self.runtime, self.registry.snapshot
        self._runtime, self.registry = runtime, staging  # one step: no request sees one without the other
        self._config_stamp = stamp
        # Calls that started under the old runtime keep its providers: close them after the longest tool
        # timeout it served (capped at five minutes), not now.
        longest = max((entry.tool.timeout_s for entry in served.tools.values()), default=0.0)
        self._retiring.append((time.monotonic() + min(longest + 5.0, 300.0), previous))
        self.sink.publish_quotas()
        self.metrics.set_tool_limit(config.server.metrics_tool_limit)
        self.metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded from %s", path)
        return True

    async def _close_retired(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        due = [r for deadline, r in self._retiring if everything or deadline <= now]
        self._retiring = [(d, r) for d, r in self._retiring if not (everything or d <= now)]
        for runtime in due:
            await self._close_unused(runtime, keep=self.runtime)

    async def _close_unused(self, runtime: Runtime | None, *, keep: Runtime) -> None:
        """Close the stateful providers of `runtime` that `keep` does not reuse."""
        if runtime is None:
            return
        kept = {id(p) for p in keep.stateful()}
        await close_all(p for p in runtime.stateful() if id(p) not in kept)

    def add_change_listener(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def notify_changed(self) -> None:
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception as exc:
                log.warning("a change listener failed (%s)", type(exc).__name__)

    async def flush(self) -> None:
        await self.sink.flush()

    async def aclose(self) -> None:
        await self.flush()
        await self._close_retired(everything=True)
        await close_all(self.runtime.stateful())
        await close_all(route.app for route in self._routes)
        await self.admin.aclose()
        self.redactor.release()
        if self._started:  # a kernel built only to check config or to bind a socket served nothing
            log.info("kernel stopped; last-used times flushed")

    # -- the hot path's entry --------------------------------------------------------------------------
    async def authenticate(self, credential: str | None, *, transport: str = "") -> Principal | None:
        """A principal for the credential, or None for a credential refused. When it cannot be checked at all
        (the auth provider raised: the store is down) it raises `CredentialsUnavailable`: refused too, but
        answered as retryable, not as a bad key."""
        try:
            principal = await self.runtime.auth.authenticate(credential)
        except Exception as exc:
            self.metrics.store_errors.labels("auth").inc()
            if not self._auth_down:  # once per outage: a dead store would otherwise log every request
                self._auth_down = True
                log.error("auth provider failed (%s); refusing requests as retryable until it answers",
                          type(exc).__name__)  # fmt: skip
            else:
                log.debug("auth provider failed (%s); refusing as retryable", type(exc).__name__)
            self.sink.auth_failed(transport)  # counted and audited like any refused credential
            raise CredentialsUnavailable("credentials cannot be checked right now") from None
        if self._auth_down:
            self._auth_down = False
            log.info("auth provider answers again")
        if not isinstance(principal, Principal):
            self.sink.auth_failed(transport)
            return None
        self.sink.used(principal.key_id)
        return principal

    async def readiness(self) -> dict[str, bool]:
        """Store answering, limiter present (and answering its own `ready()` if it has one), tools synced."""
        checks = {"store": False, "limiter": False, "registry": False}
        try:
            await self.store.ping()
            checks["store"] = True
        except Exception as exc:
            self.metrics.store_errors.labels("ping").inc()
            log.warning("readiness: store not answering (%s)", type(exc).__name__)
        limiter = self.runtime.limiter
        try:
            ready = getattr(limiter, "ready", None)
            checks["limiter"] = limiter is not None and (ready is None or bool(await ready()))
        except Exception as exc:
            log.warning("readiness: limiter not ready (%s)", type(exc).__name__)
        checks["registry"] = self.registry.snapshot.version > 0
        checks["audit"] = not self.audit.refusing
        return checks


class KernelHost:
    """The `Host` a transport gets: a narrow face of one kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    @property
    def server_name(self) -> str:
        return self._kernel.config.server.name

    @property
    def version(self) -> str:
        return self._kernel.version

    @property
    def loopback_only(self) -> bool:
        return self._kernel.loopback_only

    @property
    def metrics_registry(self) -> Any:
        return self._kernel.metrics.exposition

    async def authenticate(self, credential: str | None, *, transport: str) -> Principal | None:
        return await self._kernel.authenticate(credential, transport=transport)

    def list_tools(self, principal: Principal) -> ToolList:
        return self._kernel.pipeline.list_tools(principal)

    def hold_audit(self) -> None:
        self._kernel.audit.hold_on(asyncio.get_running_loop())

    def settle_audit(self) -> None:
        self._kernel.audit.settle()

    async def call_tool(
        self,
        principal: Principal,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        transport: str,
        channel: Channel | None = None,
    ) -> Outcome:
        return await self._kernel.pipeline.call_tool(principal, name, arguments, transport=transport, channel=channel)

    async def admit_session(self, principal: Principal) -> Outcome | None:
        """A new session counted against the key's and brand's rate limits (see `Pipeline.admit_session`):
        None when admitted, else the refusal to answer with."""
        return await self._kernel.pipeline.admit_session(principal)

    async def readiness(self) -> dict[str, bool]:
        checks = await self._kernel.readiness()
        self._kernel.metrics.readiness(checks)  # what a probe saw, for alerts (`qaqnuz_ready{check}`)
        return checks

    def session_opened(self, transport: str) -> None:
        """Count an MCP session (or legacy connection) now open on `transport` (`qaqnuz_sessions_open`);
        each call is matched by one `session_closed` when it ends, however it ends."""
        self._kernel.metrics.session_opened(transport)

    def session_closed(self, transport: str) -> None:
        self._kernel.metrics.session_closed(transport)

    def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        return self._kernel.add_change_listener(listener)

    def web_routes(self) -> Sequence[MountedRoute]:
        return tuple(self._kernel._routes)


def _loopback_only(auth: Any) -> bool:
    return getattr(auth, "loopback_only", False) is True


def _stamp(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


#: Settings the kernel reads once, at start: a reload that changes one is refused (restart to apply it).
_RESTART_ONLY = (
    ("[server] store", lambda c: c.server.store),
    ("[server] secret_file", lambda c: c.server.secret_file),
    ("[server] audit_file", lambda c: c.server.audit_file),
    ("[server] limiter_file", lambda c: c.server.limiter_file),
    # a new limiter starts with empty windows (a burst over every limit), and workers need a shared one
    ("[plugins] limiter", lambda c: c.plugins.limiter),
    ("[plugins] audit", lambda c: c.plugins.audit),
    ("[audit]", lambda c: c.audit),
    ("[server] log_format", lambda c: c.server.log_format),
    ("[plugins] routes", lambda c: c.plugins.routes),
    ("[plugins.<store>, audit sink or route>]", lambda c: _startup_tables(c)),
)


def _startup_tables(config: Config) -> dict[str, Any]:
    names = {config.store_scheme, *config.plugins.audit, *config.plugins.routes}
    return {name: config.plugin_settings.get(name) for name in sorted(names)}


def _restart_only(running: Config, edited: Config) -> list[str]:
    return [
        f"{where}: changed; it is read once, at start: restart the server to apply it"
        for where, read in _RESTART_ONLY
        if read(running) != read(edited)
    ]
