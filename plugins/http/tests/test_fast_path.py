"""The fast path answers well-formed tools/call and tools/list itself; the SDK answers everything else. The
differential test sends the same requests, in both eras, to a server with the fast path and one without,
and holds every answer equal (status and JSON-RPC message, ids of approvals and incidents aside). The
fast server must have answered the well-formed ones itself (one `application/json` body, where the SDK
streams SSE), so the comparison is between two different paths, not one path twice."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from kit import kit_config

MODERN = "2026-07-28"
SESSION = "2025-11-25"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
CONFIG = (
    kit_config(per_key="1000/60s", per_brand="1000/60s").replace(
        "tools.create_order = { exposable = true, approval = true }\n",
        "tools.create_order = { exposable = true, approval = true }\n"
        "tools.test_image_content = { exposable = true }\n"
        "tools.test_multiple_content_types = { exposable = true }\n"
        "tools.test_tool_with_logging = { exposable = true }\n",
        1,
    )
    + '\n[packs.conformance]\ntype = "conformance"\nscope = "orders.read"\n'
)
#: Ids minted per server (approvals, incidents, audit references): equal in shape, not in value.
_MINTED = re.compile(r"\b(apr|inc|req|call|aud)[_-][A-Za-z0-9_-]+|\b[0-9a-f]{32}\b|\b[0-9a-f-]{36}\b")


class Peer:
    """One server as one client sees it: keys minted alike, a session of its own for the session era."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.keys = {
            "viewer": server.mint("viewer"),
            "manager": server.mint("manager", role="manager", scopes=("orders.read", "orders.write")),
            "globex": server.mint("globex", brand="globex"),
        }
        self.session: str | None = None

    def post(self, body: Any, headers: dict[str, str], key: str = "viewer") -> httpx.Response:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **headers}
        if key:
            headers["Authorization"] = f"Bearer {self.keys[key]}" if key in self.keys else f"Bearer {key}"
        return httpx.post(self.server.url, headers=headers, content=json.dumps(body).encode(), timeout=15)

    def open_session(self, key: str = "viewer") -> str:
        hello = {"protocolVersion": SESSION, "capabilities": {}, "clientInfo": {"name": "diff", "version": "1"}}
        response = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}, {}, key)
        assert response.status_code == 200, response.text
        session = response.headers["mcp-session-id"]
        done = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, _session_headers(session), key)
        assert done.status_code == 202
        return session


def _session_headers(session: str) -> dict[str, str]:
    return {"Mcp-Session-Id": session, "MCP-Protocol-Version": SESSION}


def _modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def answer(response: httpx.Response) -> tuple[int, str, Any]:
    """(status, how it was framed, the JSON-RPC message or the body) with minted ids blanked."""
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "text/event-stream":
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and
                    line[5:].strip()]  # fmt: skip
        body: Any = [m for m in messages if "id" in m and ("result" in m or "error" in m)]
        body = body[-1] if body else messages
    else:
        try:
            body = response.json()
        except ValueError:
            body = response.text
    return response.status_code, kind, json.loads(_MINTED.sub("<id>", json.dumps(body, sort_keys=True)))


def modern_cases() -> list[tuple[str, dict[str, Any], dict[str, str], str, bool]]:
    """(label, body, headers, key, whether the fast path answers it) for the 2026-07-28 era."""

    def call(name: Any, arguments: Any = None, *, meta: Any = META, request_id: Any = 7) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name, "_meta": meta}
        if arguments is not None:
            params["arguments"] = arguments
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

    listing = {"jsonrpc": "2.0", "id": "list-1", "method": "tools/list", "params": {"_meta": META}}
    h = _modern_headers
    return [
        ("list", listing, h("tools/list"), "viewer", True),
        ("list as manager", listing, h("tools/list"), "manager", True),
        ("list as another brand", listing, h("tools/list"), "globex", True),
        ("call", call("echo", {"message": "hi", "times": 2}), h("tools/call", "echo"), "viewer", True),
        ("string id", call("echo", {"message": "hi"}, request_id="abc"), h("tools/call", "echo"), "viewer", True),
        ("no arguments", call("beta_echo"), h("tools/call", "beta_echo"), "viewer", True),
        ("invalid arguments", call("echo", {"message": 5}), h("tools/call", "echo"), "viewer", True),
        ("unknown tool", call("nope", {}), h("tools/call", "nope"), "viewer", True),
        ("hidden tool", call("hidden_tool", {}), h("tools/call", "hidden_tool"), "viewer", True),
        ("other brand's tool", call("beta_echo", {}), h("tools/call", "beta_echo"), "globex", True),
        ("missing scope", call("write_tool", {}), h("tools/call", "write_tool"), "viewer", True),
        ("disabled", call("disabled_tool", {}), h("tools/call", "disabled_tool"), "viewer", True),
        ("raises", call("boom", {}), h("tools/call", "boom"), "viewer", True),
        ("upstream fails", call("flaky_upstream", {}), h("tools/call", "flaky_upstream"), "viewer", True),
        ("truncated", call("big", {}), h("tools/call", "big"), "viewer", True),
        ("times out", call("slow", {}), h("tools/call", "slow"), "viewer", True),
        (
            "needs approval",
            call("create_order", {"sku": "a", "qty": 1}),
            h("tools/call", "create_order"),
            "manager",
            True,
        ),
        ("content blocks", call("test_image_content", {}), h("tools/call", "test_image_content"), "viewer", True),
        (
            "several blocks",
            call("test_multiple_content_types", {}),
            h("tools/call", "test_multiple_content_types"),
            "viewer",
            True,
        ),
        # Left to the SDK on both servers:
        (
            "interactive tool",
            call("test_tool_with_logging", {}),
            h("tools/call", "test_tool_with_logging"),
            "viewer",
            False,
        ),
        (
            "progress token",
            call("echo", {"message": "p"}, meta={**META, "progressToken": 1}),
            h("tools/call", "echo"),
            "viewer",
            False,
        ),
        ("Mcp-Name differs", call("echo", {"message": "x"}), h("tools/call", "beta_echo"), "viewer", False),
        ("no Mcp-Method", call("echo", {"message": "x"}), {"MCP-Protocol-Version": MODERN}, "viewer", False),
        ("no _meta", call("echo", {"message": "x"}, meta=None), h("tools/call", "echo"), "viewer", False),
        ("name not a string", call(5, {}), h("tools/call", "5"), "viewer", False),
        ("arguments not an object", call("echo", [1]), h("tools/call", "echo"), "viewer", False),
        ("boolean id", call("echo", {"message": "x"}, request_id=True), h("tools/call", "echo"), "viewer", False),
        ("cursor", {**listing, "params": {"_meta": META, "cursor": "x"}}, h("tools/list"), "viewer", False),
        (
            "other method",
            {"jsonrpc": "2.0", "id": 3, "method": "resources/list", "params": {"_meta": META}},
            h("resources/list"),
            "viewer",
            False,
        ),
        ("bad key", call("echo", {"message": "x"}), h("tools/call", "echo"), "qz_nope", False),
    ]


def session_cases() -> list[tuple[str, dict[str, Any], str, bool]]:
    """(label, body, key, whether the fast path answers it) for requests on a session-era session."""

    def call(name: Any, arguments: Any = None, meta: Any = None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        if meta is not None:
            params["_meta"] = meta
        return {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": params}

    return [
        ("list", {"jsonrpc": "2.0", "id": 10, "method": "tools/list"}, "viewer", True),
        ("list with empty params", {"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {}}, "viewer", True),
        ("call", call("echo", {"message": "hi"}), "viewer", True),
        ("invalid arguments", call("echo", {"message": 5}), "viewer", True),
        ("unknown tool", call("nope", {}), "viewer", True),
        ("hidden tool", call("hidden_tool", {}), "viewer", True),
        ("raises", call("boom", {}), "viewer", True),
        ("content blocks", call("test_multiple_content_types", {}), "viewer", True),
        ("interactive tool", call("test_tool_with_logging", {}), "viewer", False),
        ("progress token", call("echo", {"message": "p"}, {"progressToken": "t"}), "viewer", False),
        ("another key's session", call("echo", {"message": "x"}), "manager", False),
    ]


def servers(http_server: Any) -> tuple[Peer, Peer]:
    fast, sdk = http_server(CONFIG, ("conformance",)), http_server(CONFIG, ("conformance",), fast_path=False)
    assert fast.transport.built.fast is not None and sdk.transport.built.fast is None
    return Peer(fast), Peer(sdk)


def answered_fast(peer: Peer) -> int:
    """Requests the fast path answered, each written on the connection itself (below the ASGI stack): the
    two counters move together for a request sent whole, as these are."""
    built = peer.server.transport.built
    assert built.direct.answered == built.fast.answered
    return int(built.fast.answered)


def test_both_paths_give_equal_answers_in_the_2026_07_28_era(http_server):
    fast, sdk = servers(http_server)
    for label, body, headers, key, fast_one in modern_cases():
        before = answered_fast(fast)
        got, want = answer(fast.post(body, headers, key)), answer(sdk.post(body, headers, key))
        assert (got[0], got[2]) == (want[0], want[2]), label
        assert answered_fast(fast) - before == int(fast_one), label
        if fast_one:
            assert got[1] == "application/json", label


def test_both_paths_give_equal_answers_on_a_session(http_server):
    fast, sdk = servers(http_server)
    sessions = {id(fast): fast.open_session(), id(sdk): sdk.open_session()}
    for label, body, key, fast_one in session_cases():
        before = answered_fast(fast)
        responses = [peer.post(body, _session_headers(sessions[id(peer)]), key) for peer in (fast, sdk)]
        got, want = answer(responses[0]), answer(responses[1])
        assert (got[0], got[2]) == (want[0], want[2]), label
        assert answered_fast(fast) - before == int(fast_one), label
        if fast_one:
            assert got[1] == "application/json" and want[1] == "text/event-stream", label
            assert responses[0].headers["mcp-session-id"] == sessions[id(fast)], label
        else:
            assert got[1] == want[1], label
    for peer in (fast, sdk):  # an unknown session is the SDK's 404 on both
        response = peer.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, _session_headers("f" * 32))
        assert response.status_code == 404


def test_the_fast_path_finds_the_sdks_session_table():
    """The session era relies on the pinned SDK's session manager internals: an upgrade that moves them fails
    here (the server would then leave session-era requests to the SDK, slower but correct)."""
    from mcp.server import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from qaqnuz_http.fastpath import session_support

    assert session_support(StreamableHTTPSessionManager(app=Server("probe")))


def test_fast_path_requests_keep_a_session_alive_and_an_idle_one_still_ends(http_server):
    import time

    peer = Peer(http_server(CONFIG, ("conformance",), session_idle_timeout="3s"))
    session = peer.open_session()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x"}},
    }
    before = answered_fast(peer)
    for _ in range(6):  # 6 s of a call a second: twice the idle timeout
        assert peer.post(body, _session_headers(session)).status_code == 200
        time.sleep(1)
    assert answered_fast(peer) - before == 6  # every one on the fast path, which kept the session open
    time.sleep(4.5)
    assert peer.post(body, _session_headers(session)).status_code == 404  # idle past its timeout: gone


def test_a_short_session_idle_timeout_is_kept_alive_too(http_server):
    import time

    peer = Peer(http_server(CONFIG, ("conformance",), session_idle_timeout="800ms"))
    session = peer.open_session()
    params = {"name": "echo", "arguments": {"message": "x"}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    for _ in range(7):  # 2.1 s of a call every 0.3 s against a 0.8 s timeout
        assert peer.post(body, _session_headers(session)).status_code == 200
        time.sleep(0.3)
    time.sleep(1.5)
    assert peer.post(body, _session_headers(session)).status_code == 404
