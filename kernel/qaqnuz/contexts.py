"""What each kind of provider factory is given: its own context, holding only what that kind needs.

Least privilege by construction: a tool pack gets its location, a logger, a clock, path resolution and a
secret resolver, never the server secret, the store or the config of other brands; only stores and auth
providers see the server secret. Contexts are frozen, so a factory cannot widen what it was handed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from qaqnuz.config import AuditConfig
from qaqnuz.secrets import Secret, SecretRef, resolve

if TYPE_CHECKING:
    from qaqnuz.calllog import CallPage, CallQuery
    from qaqnuz.config import Config
    from qaqnuz.services import ApprovalService, ConsoleUserService, KeyService
    from qaqnuz.store import Store


@attrs.frozen(kw_only=True)
class Context:
    """The parts every context has.

    `section` is the config section the instance is built for ("packs.shop", "plugins.memory",
    "brands.globex.packs.shop"), so a factory can locate its own errors (`ctx.where` gives "[packs.shop]").
    """

    section: str
    logger: logging.Logger = attrs.field(repr=False)
    clock: Callable[[], float] = attrs.field(repr=False)
    base_dir: str = "."

    @property
    def where(self) -> str:
        return f"[{self.section}]" if self.section else "[?]"

    def resolve(self, path: str) -> str:
        """A path from config, made absolute against the config file's folder."""
        return str(Path(self.base_dir, os.path.expanduser(path)))


class SecretResolver:
    """Resolves `SecretRef`s relative to the config folder and has each value masked in the logs.

    It holds no secret itself; `mask` is the kernel's hook for masking a value it just resolved.
    """

    __slots__ = ("_base_dir", "_mask")

    def __init__(self, base_dir: str, mask: Callable[[str], None]) -> None:
        self._base_dir = base_dir
        self._mask = mask

    def __call__(self, ref: SecretRef, where: str) -> Secret:
        secret = resolve(ref, where, self._base_dir)
        self._mask(secret.reveal())
        return secret

    def mask(self, value: str) -> None:
        """Mask a value derived from a secret too (an encoded credential, a header built from a token)."""
        self._mask(value)

    def __repr__(self) -> str:
        return "SecretResolver()"


@attrs.frozen(kw_only=True)
class ToolPackContext(Context):
    """A tool pack's factory context.

    `secret(ref, where)` resolves a credential now (a missing one is a `ConfigError` located at `where`).
    `brand` is set when the instance serves one brand's per-brand settings
    (`[brands.<brand>.packs.<pack>]`). `offline` is true when the kernel only needs the tool definitions
    (`qaqnuz tools list`): do not connect anywhere, and treat a secret that cannot be resolved as absent
    (`secret` then returns an empty `Secret`) rather than failing. `upstream(seconds, error)` feeds the
    pack's upstream latency and error metrics (`qaqnuz_upstream_duration_seconds{pack}`,
    `qaqnuz_upstream_errors_total{pack,error}`).
    """

    secrets: SecretResolver = attrs.field(repr=False)
    brand: str | None = None
    offline: bool = False
    #: The kernel's upstream metrics, (pack, seconds, error); packs call `upstream(...)` instead.
    upstream_sink: Callable[[str, float, str | None], None] | None = attrs.field(repr=False, default=None)

    @property
    def pack(self) -> str:
        """The pack's name in config (`[packs.<pack>]`), for a brand's instance too: the only name its metrics
        carry, so a label never depends on anything a caller sent."""
        return self.section.rpartition(".")[2]

    def upstream(self, seconds: float, error: str | None = None) -> None:
        """Report one request to the pack's upstream (an HTTP request, a query): how long it took and, if it
        failed, what kind of failure: "timeout", "connect", "status" (an HTTP error status), "query" (the
        database refused the statement) or "other". Never pass a message: it can carry a URL or a
        credential, and the vocabulary keeps the label bounded. Safe to call anywhere: it never raises, and
        does nothing when the pack was built without a kernel (tests, `qaqnuz tools list`)."""
        sink = self.upstream_sink
        if sink is None or self.offline:
            return
        try:
            sink(self.pack, seconds, error)
        except Exception as exc:  # bookkeeping never fails a call
            self.logger.debug("recording upstream metrics failed (%s)", type(exc).__name__)

    def secret(self, ref: SecretRef, where: str) -> Secret:
        if self.offline:
            from qaqnuz.errors import ConfigError

            try:
                return self.secrets(ref, where)
            except ConfigError:
                return Secret("")
        return self.secrets(ref, where)


@attrs.frozen(kw_only=True)
class StoreContext(Context):
    """A store's factory context: its URL (`[server] store`, which may hold a password: never log it) and the
    server secret (stores may encrypt); `secret(ref, where)` resolves a credential of its settings and has
    it masked in the logs.

    `dry_run` is true when the store is opened only to validate config (`qaqnuz config check`): create
    nothing that does not exist yet (no file, no schema), and answer from an empty store instead."""

    url: str = attrs.field(repr=False)
    server_secret: bytes = attrs.field(repr=False)
    secrets: SecretResolver = attrs.field(repr=False)
    dry_run: bool = False

    def secret(self, ref: SecretRef, where: str) -> Secret:
        return self.secrets(ref, where)


@attrs.frozen(kw_only=True)
class AuthContext(Context):
    """An auth provider's context: the store to look keys up in, the server secret keys are hashed with,
    and the validated config (brands, roles, the key prefix)."""

    store: Store = attrs.field(repr=False)
    server_secret: bytes = attrs.field(repr=False)
    config: Config = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class PolicyContext(Context):
    """A policy's context: the validated config (brands, their tools and roles)."""

    config: Config = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class TracerContext(Context):
    """A tracer's context: `server_name` (`[server] name`) and `version` name the service it traces;
    `secret(ref, where)` resolves a credential of its settings (an exporter's header), masked in the logs."""

    server_name: str
    version: str
    secrets: SecretResolver = attrs.field(repr=False)

    def secret(self, ref: SecretRef, where: str) -> Secret:
        return self.secrets(ref, where)


@attrs.frozen(kw_only=True)
class LimiterContext(Context):
    """A rate limiter's context: its location, logger and clock; `limiter_file`: where the built-in
    `sqlite` limiter keeps its windows (absolute; `[server] limiter_file`, by default beside the store); and
    `secret(ref, where)` for a backend's credential (a Redis password), masked in the logs once resolved."""

    secrets: SecretResolver = attrs.field(repr=False)
    limiter_file: str = ""

    def secret(self, ref: SecretRef, where: str) -> Secret:
        return self.secrets(ref, where)


@attrs.frozen(kw_only=True)
class ApproverContext(Context):
    """An approver's context: the store (where the built-in queue keeps requests), the `[approvals]`
    durations in seconds, `secret(ref, where)` for a credential (masked in the logs once resolved), and
    `notify_failed()` to count a failure to tell the humans (`qaqnuz_approval_notify_errors_total`)."""

    store: Store = attrs.field(repr=False)
    pending_ttl: float
    valid_for: float
    secrets: SecretResolver = attrs.field(repr=False)
    notify_failed: Callable[[], None] = attrs.field(repr=False, default=lambda: None)

    def secret(self, ref: SecretRef, where: str) -> Secret:
        return self.secrets(ref, where)


@attrs.frozen(kw_only=True)
class TransportContext(Context):
    """A transport's context: its location, logger and clock, and `secret(ref, where)` for a credential of its
    settings (a metrics bearer token), masked in the logs once resolved."""

    secrets: SecretResolver | None = attrs.field(repr=False, default=None)

    def secret(self, ref: SecretRef, where: str) -> Secret:
        if self.secrets is None:
            return resolve(ref, where, self.base_dir)
        return self.secrets(ref, where)


@attrs.frozen(kw_only=True)
class AuditSinkContext(Context):
    """An audit sink's context: `audit_file` is `[server] audit_file`, already absolute; `audit` is the
    `[audit]` table (durability, rotation, anchor name); `chain_key` is the HMAC key records are chained
    under, derived from the server secret (`qaqnuz.audit.chain_key`), never the secret itself."""

    audit_file: str
    audit: AuditConfig = attrs.field(factory=AuditConfig)
    chain_key: bytes = attrs.field(repr=False, default=b"")


class ServerView(Protocol):
    """What a web route may read about the server it is mounted on (the console's pages): read only, and
    the same answers the CLI gives (`tools list`, `plugins list`, `/readyz`)."""

    def brands(self) -> dict[str, dict[str, Any]]:
        """Each brand's roles with their scope ceilings, its plan and key cap: what a key may be minted with."""
        ...

    def max_key_lifetime(self) -> float:
        """`[server] max_key_lifetime` in seconds."""
        ...

    def tools(self, brand: str) -> list[dict[str, Any]]:
        """Every tool for `brand`, whether it is visible and why (as `qaqnuz tools list`), with its
        description and input schema."""
        ...

    async def status(self) -> dict[str, Any]:
        """Plugins loaded, providers selected, readiness checks, tool sync state, limiter and store health."""
        ...

    def calls(self, query: CallQuery) -> CallPage:
        """A page of tool calls from the audit file, newest first. Reads the file: call it in a worker thread."""
        ...

    def chain(self) -> dict[str, Any]:
        """The audit file's hash chain: `{"file", "lines", "intact", "problems"}` (problems: the first few).
        Reads what was appended since the last call (all of a large file the first time): call it in a worker
        thread."""
        ...


@attrs.frozen(kw_only=True)
class WebRouteContext(Context):
    """A web route's context: the key and approval services (the same ones the CLI uses), which validate and
    audit what they do. To mint and rotate keys the key service holds the store and the server secret, so a
    route is trusted like an auth provider: mount only routes of plugins you trust (`[plugins] routes`).
    Operations take `brand=` so a route serving one brand's people can never act on another's keys."""

    keys: KeyService = attrs.field(repr=False)
    approvals: ApprovalService = attrs.field(repr=False)
    server_name: str = ""
    secrets: SecretResolver | None = attrs.field(repr=False, default=None)
    #: Console users (sign-in accounts, never MCP keys), stored in the store.
    users: ConsoleUserService | None = attrs.field(repr=False, default=None)
    #: Read-only answers about the running server (tools, status, calls, the audit chain).
    view: ServerView | None = attrs.field(repr=False, default=None)
    #: `signing_key(purpose)`: a key derived from the server secret for this route and purpose (cookies,
    #: CSRF tokens); the route never sees the server secret itself, and another server's keys differ.
    signing_key: Callable[[str], bytes] | None = attrs.field(repr=False, default=None)
    #: `audit(**fields)`: one audit record (what a person did in the route, and who).
    audit: Callable[..., None] | None = attrs.field(repr=False, default=None)

    def secret(self, ref: SecretRef, where: str) -> Secret:
        """A credential of the route's settings (a signing secret), masked in the logs once resolved."""
        if self.secrets is None:
            return resolve(ref, where, self.base_dir)
        return self.secrets(ref, where)


__all__ = [
    "ApproverContext",
    "AuditSinkContext",
    "AuthContext",
    "Context",
    "LimiterContext",
    "PolicyContext",
    "SecretResolver",
    "ServerView",
    "StoreContext",
    "ToolPackContext",
    "TracerContext",
    "TransportContext",
    "WebRouteContext",
]
