"""qaqnuz approvals in Slack: the `slack` approver (requests posted to the brand's channel), the `slack`
web route (`/slack/interactions`, where clicks arrive), and the Slack app manifest builder
(`qaqnuz slack manifest`).

This module only registers them (the command line loads every plugin on each start): the approver, the
route and the HTTP client load when a kernel builds them. See README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qaqnuz import ApproverContext, Command, Provider, WebRoute, WebRouteContext, hookimpl
from qaqnuz_slack.settings import BrandSettings, SlackSettings, load

if TYPE_CHECKING:
    from qaqnuz_slack.approver import SlackApprover
    from qaqnuz_slack.client import SlackClient
    from qaqnuz_slack.route import SlackRoute

__all__ = ["BrandSettings", "SlackSettings", "qaqnuz_approvers", "qaqnuz_commands", "qaqnuz_web_routes"]


def _client(options: Any, ctx: ApproverContext | WebRouteContext) -> SlackClient:
    from qaqnuz_slack.client import SlackClient

    return SlackClient(
        options.base_url,
        options.bot_token,
        timeout=options.timeout,
        attempts=options.attempts,
        backoff=options.backoff,
        logger=ctx.logger,
        on_error=ctx.notify_failed if isinstance(ctx, ApproverContext) else (lambda: None),
    )


def _approver(settings: SlackSettings, ctx: ApproverContext) -> SlackApprover:
    from qaqnuz_slack.approver import SlackApprover

    options = load(settings, ctx)
    return SlackApprover(ctx.store, ctx.clock, ctx.pending_ttl, options, _client(options, ctx), ctx.logger)


def _route(settings: SlackSettings, ctx: WebRouteContext) -> SlackRoute:
    from qaqnuz_slack.route import SlackRoute

    options = load(settings, ctx)
    return SlackRoute(options, _client(options, ctx), ctx)


@hookimpl
def qaqnuz_approvers() -> list[Provider]:
    return [
        Provider(
            "slack",
            _approver,
            "Requests wait in the store and are posted to the brand's Slack channel; decided with a click.",
            SlackSettings,
        )
    ]


@hookimpl
def qaqnuz_commands() -> list[Command]:
    from qaqnuz_slack import manifest

    return [
        Command("slack", "Slack approvals tools"),
        Command(
            "slack manifest",
            "print the Slack app manifest (bot scope chat:write, interactivity URL) to create the app from",
            manifest.run,
            manifest.arguments,
        ),
    ]


@hookimpl
def qaqnuz_web_routes() -> list[WebRoute]:
    return [WebRoute("slack", "/slack", _route, "Slack interactivity: Approve / Deny clicks.", SlackSettings)]
