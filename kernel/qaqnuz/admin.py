"""What admin commands need, and nothing more: the server secret, the store, the audit sinks, and the key
and approval services on top of them.

Building this never builds a tool pack, a limiter or a transport, so `qaqnuz keys ...`, `approvals ...`
and `audit ...` work when a pack's upstream secret is unset or its database is down. The kernel builds
the same pieces the same way, so the server and the CLI always agree on where keys and audit records live.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import attrs

from qaqnuz.assembly import build, build_selected
from qaqnuz.audit import chain_key
from qaqnuz.config import Config, store_credentials
from qaqnuz.contexts import AuditSinkContext, SecretResolver, StoreContext
from qaqnuz.errors import ConfigError, PluginError
from qaqnuz.plugins import Plugins
from qaqnuz.records import AuditSink, ProviderKind
from qaqnuz.secrets import Redactor
from qaqnuz.services import ApprovalService, Auditor, ConsoleUserService, KeyService
from qaqnuz.store import Store

log = logging.getLogger("qaqnuz.kernel")
T = TypeVar("T")


def load_secret(config: Config) -> bytes:
    """The server secret: `$QAQNUZ_SECRET`, else the secret file named in config."""
    from_env = os.environ.pop("QAQNUZ_SECRET", None)  # not inherited by anything the server starts
    if from_env:
        if len(from_env) < 32:
            raise ConfigError(["env QAQNUZ_SECRET: too short; use at least 32 random characters"])
        return from_env.encode("utf-8")
    path = Path(config.resolve(config.server.secret_file))
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(
            [f"[server] secret_file: {path} does not exist; create it with `qaqnuz init` or set QAQNUZ_SECRET"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"[server] secret_file: cannot read {path} ({exc.strerror})"]) from None
    if len(secret) < 32:
        raise ConfigError([f"[server] secret_file: {path} holds fewer than 32 bytes; regenerate it"])
    if path.stat().st_mode & 0o077:
        log.warning("secret file %s is readable by group or others; chmod 600 it", path)
    return secret


def build_store(
    config: Config,
    plugins: Plugins,
    secret: bytes,
    clock: Callable[[], float],
    *,
    dry_run: bool = False,
    mask: Callable[[str], None] | None = None,
) -> Store:
    """The store `[server] store` names by its scheme, built from `[plugins.<scheme>]`."""
    if not config.store_scheme:
        raise ConfigError([])  # the URL itself is invalid, and already reported where it was read

    def context(section: str) -> StoreContext:
        return StoreContext(
            section=section,
            logger=logging.getLogger(f"qaqnuz.store.{config.store_scheme}"),
            clock=clock,
            base_dir=config.base_dir,
            url=config.store_url,
            server_secret=secret,
            secrets=SecretResolver(config.base_dir, mask or _unmasked),
            dry_run=dry_run,
        )

    store: Store = build_selected(
        plugins, ProviderKind.STORE, config.store_scheme, config.plugin_settings, "[server] store", context
    )
    return store


def _unmasked(value: str) -> None:
    """A command's store credential needs no masking hook: the command's log handler masks keys, and a store
    never logs its credential."""


def build_audit_sinks(
    config: Config, plugins: Plugins, clock: Callable[[], float], secret: bytes
) -> list[tuple[str, AuditSink]]:
    """Every sink `[plugins] audit` names, in order; all problems reported together."""
    key = chain_key(secret)
    problems: list[str] = []
    sinks: list[tuple[str, AuditSink]] = []

    def context(section: str) -> AuditSinkContext:
        return AuditSinkContext(
            section=section,
            logger=logging.getLogger("qaqnuz.audit"),
            clock=clock,
            base_dir=config.base_dir,
            audit_file=config.resolve(config.server.audit_file),
            audit=config.audit,
            chain_key=key,
        )

    for name in config.plugins.audit:
        try:
            registered = plugins.provider(ProviderKind.AUDIT, name, "[plugins] audit")
            sink, _ = build(registered, config.plugin_settings.get(name, {}), f"plugins.{name}", context)
            sinks.append((name, sink))
        except ConfigError as exc:
            problems.extend(exc.problems)
        except PluginError as exc:
            problems.append(str(exc))
    if problems:
        for _, sink in sinks:
            sink.close()
        raise ConfigError(problems)
    return sinks


@attrs.frozen
class Admin:
    """The store, the audit sinks and the services on them, for one config."""

    config: Config
    store: Store
    audit: Auditor
    keys: KeyService
    approvals: ApprovalService
    users: ConsoleUserService
    #: Masks the store's credentials in a command's log lines (a kernel masks them with its own).
    redactor: Redactor | None = None
    #: The audit chain's key (`qaqnuz.audit.chain_key`), for `audit verify`.
    chain_key: bytes = attrs.field(repr=False, default=b"")

    @property
    def inline(self) -> bool:
        """Whether the store's operations never wait for I/O (`runs_inline`), so they need no event loop."""
        return getattr(self.store, "runs_inline", False) is True

    async def aclose(self) -> None:
        self.audit.settle()
        # what this process wrote is on disk and anchored before it goes
        await self.audit.anchor(self.store, in_thread=not self.inline)
        self.audit.close()
        try:
            await self.store.aclose()
        finally:
            if self.redactor is not None:
                self.redactor.release()

    def close_now(self) -> None:
        """Close without an event loop, where the store allows it (`runs_inline`); used on a failed start."""
        self.audit.close()
        if self.inline:
            run_inline(self.store.aclose())
        if self.redactor is not None:
            self.redactor.release()


def open_admin(
    config: Config,
    *,
    plugins: Plugins | None = None,
    secret: bytes | None = None,
    clock: Callable[[], float] = time.time,
    current: Callable[[], Config] | None = None,
    on_audit_error: Callable[[], None] | None = None,
    dry_run: bool = False,
    mask: Callable[[str], None] | None = None,
) -> Admin:
    """Build the admin pieces. `current` returns the config in force (a server's may reload); `dry_run`
    (config check) creates no store that does not exist yet."""
    plugins = plugins if plugins is not None else Plugins()
    secret = secret if secret is not None else load_secret(config)
    redactor: Redactor | None = None
    if mask is None:  # a command, not a kernel: mask what the store resolves in this process's log lines
        redactor = Redactor()
        redactor.guard([logging.getLogger(), logging.getLogger("qaqnuz")])
        mask = redactor.add
    if config.store_secret is not None:  # a store URL given by reference holds a credential
        for value in store_credentials(config.store_secret.reveal()):
            mask(value)
    audit = Auditor(build_audit_sinks(config, plugins, clock, secret), clock, on_audit_error, config.audit)
    try:
        store = build_store(config, plugins, secret, clock, dry_run=dry_run, mask=mask)
    except BaseException:
        audit.close()
        if redactor is not None:
            redactor.release()
        raise
    source = current or (lambda: config)
    return Admin(
        config=config,
        store=store,
        audit=audit,
        keys=KeyService(config=source, store=store, secret=secret, audit=audit, clock=clock),
        approvals=ApprovalService(config=source, store=store, audit=audit, clock=clock),
        users=ConsoleUserService(config=source, store=store, audit=audit, clock=clock),
        redactor=redactor,
        chain_key=chain_key(secret),
    )


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits for I/O (an inline store's operation) to its end, without a loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("an inline store operation waited for I/O; the store must not set runs_inline")
