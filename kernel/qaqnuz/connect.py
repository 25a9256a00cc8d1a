"""Ready-to-paste client settings for an MCP URL and a key: what `qaqnuz demo` prints and the console's
Connect page shows. One place, so both always tell people the same thing.

Clients that only speak stdio (Claude Code's stdio servers, Claude Desktop, Cursor) go through
`mcp-remote`; curl shows one sessionless request of the current protocol.
"""

from __future__ import annotations

import json
import shlex

#: The protocol revision the curl line speaks (sessionless, one request).
MODERN_PROTOCOL = "2026-07-28"


def mcp_remote_command(url: str, key: str) -> str:
    return f'npx -y mcp-remote {url} --header "Authorization: Bearer {key}"'


def client_json(url: str, key: str) -> str:
    """Claude Desktop's `claude_desktop_config.json` and Cursor's `mcp.json` take the same shape."""
    server = {"command": "npx", "args": ["-y", "mcp-remote", url, "--header", f"Authorization: Bearer {key}"]}
    return json.dumps({"mcpServers": {"qaqnuz": server}}, indent=2)


def curl_line(url: str, key: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN_PROTOCOL,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    headers = [
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        f"MCP-Protocol-Version: {MODERN_PROTOCOL}",
        "Mcp-Method: tools/list",
    ]
    parts = [
        "curl",
        "-sS",
        url,
        *[f"-H {shlex.quote(h)}" for h in headers],
        "-d",
        shlex.quote(json.dumps(body, separators=(",", ":"))),
    ]
    return " ".join(parts)


def client_settings(url: str, key: str) -> dict[str, str]:
    """{"claude_code", "claude_desktop", "cursor", "curl"}: each a text to paste as it is."""
    block = client_json(url, key)
    return {
        "claude_code": f"claude mcp add --transport stdio qaqnuz -- {mcp_remote_command(url, key)}",
        "claude_desktop": block,
        "cursor": block,
        "curl": curl_line(url, key),
    }
