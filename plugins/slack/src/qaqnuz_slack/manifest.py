"""`qaqnuz slack manifest --url https://...`: the Slack app manifest to create the app from (bot scope
`chat:write`, interactivity at `<url>/slack/interactions`), printed as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from qaqnuz import UsageError


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the server's public base URL, e.g. https://mcp.example.com")
    parser.add_argument("--name", default="qaqnuz approvals", help="the app's name in Slack")
    parser.add_argument(
        "--user-groups",
        action="store_true",
        help="also ask for usergroups:read (needed when a brand lists approver_groups)",
    )


def manifest(url: str, name: str = "qaqnuz approvals", *, user_groups: bool = False) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"--url must be an https:// base URL (Slack calls only https), not {url!r}")
    if not 1 <= len(name) <= 35:
        raise UsageError("--name must be 1 to 35 characters (Slack's limit)")
    return {
        "display_information": {"name": name, "description": "Approve or deny governed MCP tool calls."},
        "features": {"bot_user": {"display_name": name, "always_online": False}},
        "oauth_config": {"scopes": {"bot": ["chat:write", *(["usergroups:read"] if user_groups else [])]}},
        "settings": {
            "interactivity": {"is_enabled": True, "request_url": url.rstrip("/") + "/slack/interactions"},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }


def run(args: argparse.Namespace, context: Any) -> int:
    sys.stdout.write(json.dumps(manifest(args.url, args.name, user_groups=args.user_groups), indent=2) + "\n")
    return 0
