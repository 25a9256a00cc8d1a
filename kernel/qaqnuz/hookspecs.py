"""Every hook a qaqnuz plugin may implement: the plugin contract.

All hooks are *registration hooks*: pluggy calls each one once while a kernel (or the `qaqnuz` command)
is being assembled, collects every implementation's list, and the kernel instantiates only what its config
selects. Implementations must do no I/O and import nothing heavy at module level (the command line loads
every plugin to find its commands), and return frozen records. The request path never goes through
pluggy: `pipeline.py` awaits the selected providers in the fixed order of the governed path.

The kernel calls hooks only through pluggy (`pm.hook.<name>(...)`), so a spec may gain an argument and an
implementation that accepts fewer keeps working. Specs only ever gain arguments, and each signature is
pinned by `tests/contract/test_hookspecs.py`.
"""

from __future__ import annotations

import pluggy

from qaqnuz.records import Command, Provider, WebRoute

PROJECT = "qaqnuz"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def qaqnuz_auth_providers() -> list[Provider]:
    """Register credential verifiers.

    Called once per kernel build. Return providers whose factory, given `(settings, AuthContext)`, builds an
    `AuthProvider`: it maps a raw credential (an API key, a token) to a `Principal` or None. Selected by
    `[plugins] auth = "<name>"`. An auth provider that must never be reachable from the network (it does
    not check credentials, like the built-in `anonymous`) sets the class attribute `loopback_only = True`.

    Example::

        @hookimpl
        def qaqnuz_auth_providers():
            return [Provider("oidc", build_oidc, "OpenID Connect access tokens.", OidcSettings)]
    """


@hookspec
def qaqnuz_policies() -> list[Provider]:
    """Register call policies.

    Called once per kernel build. Return providers whose factory, given `(settings, PolicyContext)`, builds
    a `Policy`. Every policy named in `[plugins] policies = [...]` must allow a call; none configured means
    every call is denied; an exception inside a policy is a denial.

    Example::

        @hookimpl
        def qaqnuz_policies():
            return [Provider("office_hours", lambda s, ctx: OfficeHours(ctx.clock), "Deny writes at night.")]
    """


@hookspec
def qaqnuz_approvers() -> list[Provider]:
    """Register approvers: where approval requests wait for a human decision.

    Called once per kernel build. Return providers whose factory, given `(settings, ApproverContext)`,
    builds an `Approver`. Selected by `[plugins] approver`. The approver stores the call's masked arguments
    for the human and refuses (`PendingCapReached`) past the per-key pending cap.

    Example::

        @hookimpl
        def qaqnuz_approvers():
            return [Provider("slack", build_slack_approver, "Approve in Slack.", SlackSettings)]
    """


@hookspec
def qaqnuz_rate_limiters() -> list[Provider]:
    """Register rate limiters.

    Called once per kernel build. Return providers whose factory, given `(settings, LimiterContext)`,
    builds a `RateLimiter` that admits per key and per brand atomically and fails closed. Selected by
    `[plugins] limiter`.

    Example::

        @hookimpl
        def qaqnuz_rate_limiters():
            return [Provider("redis", build_redis_limiter, "Shared windows in Redis.", RedisSettings)]
    """


@hookspec
def qaqnuz_transports() -> list[Provider]:
    """Register transports (stdio, HTTP, ...).

    Called once per kernel build. Return providers whose factory, given `(settings, TransportContext)`,
    builds a `Transport` that serves a running kernel's `Host` until stopped. Selected by
    `qaqnuz serve --transport <name>` or `[server] transport`; `[plugins.<name>]` is validated by
    `config check` whether or not it is selected. A network transport must refuse to bind a non-loopback
    address while `host.loopback_only` is true, and say why.

    Example::

        @hookimpl
        def qaqnuz_transports():
            return [Provider("http", build_http, "Streamable HTTP at /mcp.", HttpSettings)]
    """


@hookspec
def qaqnuz_tool_providers() -> list[Provider]:
    """Register tool provider types (tool packs).

    Called once per kernel build. Return providers; each `[packs.<pack>]` table names one with
    `type = "<name>"`; the rest of the table (without the kernel's own `brands` and `shared`) is decoded into
    the provider's settings struct and handed to its factory with a `ToolPackContext`, which builds a `ToolProvider`.
    One provider type may back many packs, and one pack gets one more instance per brand that has
    `[brands.<brand>.packs.<pack>]` settings. A tool learns whose call it runs from
    `qaqnuz.current_call().caller`.

    Example::

        @hookimpl
        def qaqnuz_tool_providers():
            return [Provider("crm", build_crm_pack, "Contacts from the CRM.", CrmSettings)]
    """


@hookspec
def qaqnuz_stores() -> list[Provider]:
    """Register stores: where keys, approvals, usage and last-used times live.

    Called once per kernel build and by every admin command. Return providers whose name is the URL scheme
    they serve: `[server] store = "<name>://..."` selects one, and its factory gets `(settings, StoreContext)`
    with the URL and the server secret, and builds a `qaqnuz.Store`. A store plugin runs the shared
    contract tests (`qaqnuz.store_contract.StoreContract`) against itself.

    Example::

        @hookimpl
        def qaqnuz_stores():
            return [Provider("postgresql", build_pg_store, "PostgreSQL store.", PgStoreSettings)]
    """


@hookspec
def qaqnuz_audit_sinks() -> list[Provider]:
    """Register audit sinks: where every audit record goes.

    Called once per kernel build and by every admin command that writes audit records. Return providers
    whose factory, given `(settings, AuditSinkContext)`, builds an `AuditSink`. Every sink named in
    `[plugins] audit = [...]` receives every record (default: the built-in hash-chained `file`).

    Example::

        @hookimpl
        def qaqnuz_audit_sinks():
            return [Provider("syslog", build_syslog_sink, "Audit records to syslog.", SyslogSettings)]
    """


@hookspec
def qaqnuz_tracers() -> list[Provider]:
    """Register tracers: where each MCP request's trace goes (OpenTelemetry, for one).

    Called once per kernel build. Return providers whose factory, given `(settings, TracerContext)`, builds a
    `Tracer`; every tracer named in `[plugins] tracing = [...]` gets a `CallTrace` of each tools/call and
    tools/list after its answer is known, with one step per governance step. Nothing is traced by default.

    Example::

        @hookimpl
        def qaqnuz_tracers():
            return [Provider("otel", build_otel_tracer, "OpenTelemetry traces over OTLP.", OtelSettings)]
    """


@hookspec
def qaqnuz_commands() -> list[Command]:
    """Register `qaqnuz` subcommands.

    Called once each time the `qaqnuz` command starts. Return `Command` records; `name` is the command's
    words after `qaqnuz` ("demo", "slack manifest"). A name already taken (by the kernel or another plugin)
    is an error naming both distributions. Keep the module light: heavy imports belong inside `run`.

    Example::

        @hookimpl
        def qaqnuz_commands():
            return [Command("slack manifest", "print the Slack app manifest", run=print_manifest)]
    """


@hookspec
def qaqnuz_web_routes() -> list[WebRoute]:
    """Register web routes: ASGI apps the HTTP transport mounts beside `/mcp`.

    Called once per kernel build. Return `WebRoute` records; a route is mounted only when its name is in
    `[plugins] routes = [...]`, at its `path` (a prefix that must not clash with the transport's own
    endpoints). Each route authenticates its own requests; an MCP key is never accepted on it unless it
    sets `mcp_key = True` (the transport then authenticates the key and passes the principal).

    Example::

        @hookimpl
        def qaqnuz_web_routes():
            return [WebRoute("slack", "/slack", build_slack_app, "Slack interactivity endpoint.")]
    """
