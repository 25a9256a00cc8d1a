"""The qaqnuz admin console: keys, approvals, calls, tools and status in a web page, mounted by the HTTP
transport at `/console` (`[plugins] routes = ["console"]`), behind its own sign-in (local users, OpenID
Connect); and `qaqnuz console users ...` to manage who may sign in.

This module only registers them: the web app, its templates and the password hasher load when a kernel
builds the route or a command runs. See README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qaqnuz import Command, WebRoute, WebRouteContext, hookimpl
from qaqnuz_console.settings import ConsoleSettings, OidcSettings

if TYPE_CHECKING:
    from qaqnuz_console.app import Console

__all__ = ["ConsoleSettings", "OidcSettings", "qaqnuz_commands", "qaqnuz_web_routes"]


def _console(settings: ConsoleSettings, ctx: WebRouteContext) -> Console:
    from qaqnuz_console.app import build_console

    return build_console(settings, ctx)


@hookimpl
def qaqnuz_web_routes() -> list[WebRoute]:
    return [
        WebRoute(
            "console",
            "/console",
            _console,
            "The admin console: keys, approvals, calls, tools and status, behind its own sign-in.",
            ConsoleSettings,
        )
    ]


@hookimpl
def qaqnuz_commands() -> list[Command]:
    from qaqnuz_console.commands import COMMANDS

    return list(COMMANDS)
