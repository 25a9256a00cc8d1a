"""Every hook a qaqnuz plugin may implement: the plugin contract.

All hooks are *startup registration hooks*: pluggy calls each one once while a kernel is being built,
collects every implementation's list, and the kernel instantiates only the providers its config selects.
They must do no I/O and return frozen `Provider` records. The request path never goes through pluggy:
`pipeline.py` awaits the selected providers in the fixed order of the governed path.

Specs only ever gain arguments (pluggy lets an implementation accept a subset), and each signature is
pinned by `tests/contract/test_hookspecs.py`.
"""

from __future__ import annotations

import pluggy

from qaqnuz.records import Provider

PROJECT = "qaqnuz"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def qaqnuz_auth_providers() -> list[Provider]:
    """Register credential verifiers.

    Called once per kernel build. Return providers whose factory builds an `AuthProvider`: it maps a raw
    credential (an API key, a token) to a `Principal` or None. Selected by `[plugins] auth = "<name>"`.
    An auth provider that must never be reachable from the network (it does not check credentials, like
    the built-in `anonymous`) sets the class attribute `loopback_only = True`.
    """


@hookspec
def qaqnuz_policies() -> list[Provider]:
    """Register call policies.

    Called once per kernel build. Return providers whose factory builds a `Policy`. Every policy named in
    `[plugins] policies = [...]` must allow a call; none configured means every call is denied.
    """


@hookspec
def qaqnuz_approvers() -> list[Provider]:
    """Register approvers: where approval requests wait for a human decision.

    Called once per kernel build. Return providers whose factory builds an `Approver`. Selected by `[plugins] approver`.
    """


@hookspec
def qaqnuz_rate_limiters() -> list[Provider]:
    """Register rate limiters.

    Called once per kernel build. Return providers whose factory builds a `RateLimiter` that admits
    per key and per brand atomically and fails closed. Selected by `[plugins] limiter`.
    """


@hookspec
def qaqnuz_transports() -> list[Provider]:
    """Register transports (stdio, HTTP, ...).

    Called once per kernel build. Return providers whose factory builds a `Transport` that serves a
    kernel until stopped. Selected by `qaqnuz serve --transport <name>` or `[server] transport`.
    A network transport must refuse to bind a non-loopback address while `kernel.loopback_only` is true
    (the selected auth provider is marked `loopback_only`, e.g. `anonymous`), and say why.
    """


@hookspec
def qaqnuz_tool_providers() -> list[Provider]:
    """Register tool provider types (tool packs).

    Called once per kernel build. Each `[packs.<pack>]` table names a provider with `type = "<name>"`;
    the rest of the table is decoded into the provider's settings struct and handed to its factory,
    which builds a `ToolProvider`. One provider type may back many packs.
    """
