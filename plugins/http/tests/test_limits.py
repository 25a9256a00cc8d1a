"""Connection and session limits over real sockets.

Measured before: with `max_connections` = N, N idle sockets turned every request, `/healthz` included, into
503 and were never timed out; `initialize` was not rate limited; and sessions had no per-key or per-brand
cap, so one key took the whole session pool and another brand got 503.
"""

from __future__ import annotations

import json
import socket
import time

import httpx

from kit import kit_config

SESSION = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
HELLO = {"protocolVersion": SESSION, "capabilities": {}, "clientInfo": {"name": "limits", "version": "1"}}


def _initialize(server, key: str, request_id: int = 1) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": HELLO}
    return httpx.post(server.url, json=body, headers={**ACCEPT, "Authorization": f"Bearer {key}"}, timeout=15)


def _idle_socket(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.transport.port), timeout=20)
    return sock


def _closed_by_server(sock: socket.socket, patience: float = 20.0) -> bool:
    """Whether the server closes the socket (reads b"" or a reset) before `patience` runs out (a hang guard)."""
    sock.settimeout(patience)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_sockets_at_max_connections_do_not_lock_out_a_new_client(http_server) -> None:
    server = http_server(max_connections=4, header_timeout="30s")
    key = server.mint()
    idle = [_idle_socket(server) for _ in range(4)]  # every slot taken by a socket that sends nothing
    try:
        time.sleep(0.2)  # the server has accepted them all
        assert httpx.get(f"{server.base}/healthz", timeout=15).status_code == 200
        assert _initialize(server, key).status_code == 200
        assert sum(_closed_by_server(sock, patience=5) for sock in idle) >= 1  # room was made by closing one
    finally:
        for sock in idle:
            sock.close()


def test_when_every_connection_is_busy_the_answer_is_503_naming_the_limit(http_server) -> None:
    server = http_server(max_connections=1)
    # One connection, busy with a request whose body never comes: there is no idle one to close.
    busy = _idle_socket(server)
    busy.sendall(
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    )
    try:
        time.sleep(0.3)
        response = httpx.get(f"{server.base}/healthz", timeout=15)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["data"] == {"limit": "max_connections"}
        assert "max_connections" in response.json()["error"]["message"]
    finally:
        busy.close()


def test_a_silent_socket_and_a_dribbling_one_are_closed_at_the_header_deadline(http_server) -> None:
    server = http_server(header_timeout="1s")
    silent = _idle_socket(server)
    dribbling = _idle_socket(server)
    dribbling.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = False
    try:
        for _ in range(60):  # a header byte every 100 ms: the head never completes
            try:
                dribbling.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        assert closed or _closed_by_server(dribbling)
        assert _closed_by_server(silent)
        assert httpx.get(f"{server.base}/healthz", timeout=15).status_code == 200  # and the server goes on
    finally:
        silent.close()
        dribbling.close()


def test_a_key_is_capped_in_sessions_and_another_brand_is_still_served(http_server) -> None:
    server = http_server(kit_config(per_key="100/60s", per_brand="100/60s"), max_sessions=4, max_sessions_per_key=3)
    hog, other = server.mint(), server.mint("other", brand="globex")
    opened = [_initialize(server, hog, i) for i in range(3)]
    assert [r.status_code for r in opened] == [200, 200, 200]
    refused = _initialize(server, hog, 7)
    assert refused.status_code == 429 and refused.headers["retry-after"]
    error = refused.json()
    assert error["id"] == 7 and error["error"]["data"] == {"limit": "max_sessions_per_key"}
    assert "max_sessions_per_key" in error["error"]["message"] and "(3:" in error["error"]["message"]
    assert _initialize(server, other).status_code == 200  # the pool still had room for another brand
    # Closing a session gives its slot back.
    ended = httpx.delete(
        server.url,
        headers={"Authorization": f"Bearer {hog}", "Mcp-Session-Id": opened[0].headers["mcp-session-id"],
                 "MCP-Protocol-Version": SESSION},
        timeout=15,
    )  # fmt: skip
    assert ended.status_code in (200, 204)
    assert _initialize(server, hog, 8).status_code == 200


def test_a_brand_is_capped_in_sessions_across_its_keys(http_server) -> None:
    server = http_server(kit_config(per_key="100/60s", per_brand="100/60s"), max_sessions_per_brand=2)
    first, second = server.mint("a"), server.mint("b")
    assert _initialize(server, first).status_code == 200
    assert _initialize(server, second).status_code == 200
    refused = _initialize(server, second)
    assert refused.status_code == 429 and refused.json()["error"]["data"] == {"limit": "max_sessions_per_brand"}
    assert _initialize(server, server.mint("g", brand="globex")).status_code == 200


def test_an_opening_that_fails_gives_its_slot_back(http_server) -> None:
    server = http_server(max_sessions_per_key=1)
    key = server.mint()
    bad = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}  # no initialize: the SDK opens nothing
    for _ in range(3):
        response = httpx.post(server.url, json=bad, headers={**ACCEPT, "Authorization": f"Bearer {key}"}, timeout=15)
        assert response.status_code != 429, response.text
    assert _initialize(server, key).status_code == 200


def test_initialize_counts_against_the_key_rate_limit(http_server) -> None:
    server = http_server(kit_config(per_key="3/60s", per_brand="100/60s"))
    key = server.mint()
    assert [_initialize(server, key, i).status_code for i in range(3)] == [200, 200, 200]
    limited = _initialize(server, key, 9)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    error = limited.json()["error"]
    assert limited.json()["id"] == 9 and error["code"] == -32003
    assert error["data"]["limit"] == "per_key/per_brand rate limit" and error["data"]["retry_after_ms"] > 0
    assert _initialize(server, server.mint("g", brand="globex")).status_code == 200  # its own bucket


def test_legacy_sse_connections_count_as_sessions(http_server) -> None:
    server = http_server(max_sessions_per_key=1)
    key = server.mint()
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", f"{server.base}/sse", headers=auth, timeout=15) as first:
        assert first.status_code == 200
        second = httpx.get(f"{server.base}/sse", headers=auth, timeout=15)
        assert second.status_code == 429
        assert json.loads(second.text)["error"]["data"] == {"limit": "max_sessions_per_key"}
    for _ in range(50):  # the stream ended: its slot comes back once the server has seen it go
        with httpx.stream("GET", f"{server.base}/sse", headers=auth, timeout=15) as again:
            if again.status_code == 200:
                break
        time.sleep(0.1)
    assert again.status_code == 200


def _alive_while_dribbling(sock: socket.socket, seconds: float, byte: bytes = b"a") -> bool:
    """Send `byte` every 0.3 s for `seconds`: False as soon as the server has closed the connection."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.sendall(byte)
        except OSError:
            return False
        sock.settimeout(0.3)
        try:
            if sock.recv(65536) == b"":
                return False
        except TimeoutError:
            pass
        except OSError:
            return False
    return True


def test_a_body_left_unread_by_an_early_answer_is_not_waited_for(http_server) -> None:
    """A request answered before its body was read (here /healthz, which reads none): the rest of the body has
    `header_timeout` to arrive, so a client cannot keep the connection by sending a huge body a byte at a time."""
    server = http_server(header_timeout="500ms", keep_alive_timeout="1s")
    sock = _idle_socket(server)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert not _alive_while_dribbling(sock, 8)
    finally:
        sock.close()


def test_a_head_dribbled_behind_a_request_in_hand_still_has_a_deadline(http_server) -> None:
    server = http_server(header_timeout="300ms", keep_alive_timeout="1s")
    key = server.mint()
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "slow", "arguments": {}, "_meta": meta},
    }
    body = json.dumps(call).encode()
    head = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        b"MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: slow\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    sock = _idle_socket(server)
    try:
        sock.sendall(head + body + b"G")  # the next request's first byte while the slow call is in hand
        assert not _alive_while_dribbling(sock, 10, b"X")
    finally:
        sock.close()


def test_a_key_whose_brand_left_the_config_opens_no_session_and_leaks_no_count(http_server) -> None:
    """Admission fails closed (403 naming the entitlement) and gives its count back: once the brand is
    back, the key opens sessions again up to its cap."""
    import sqlite3

    server = http_server(max_sessions_per_key=2)
    key = server.mint()
    store = server.folder / "qaqnuz.db"

    def move(brand: str) -> None:
        with sqlite3.connect(store) as db:
            db.execute("UPDATE keys SET brand = ?", (brand,))

    move("ghost")
    refused = [_initialize(server, key, i) for i in range(3)]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert refused[0].json()["error"]["data"] == {"limit": "entitlement"}
    move("acme")
    assert [_initialize(server, key, i).status_code for i in range(2)] == [200, 200]


def test_2026_listen_streams_count_as_sessions(http_server) -> None:
    """A `subscriptions/listen` stream stays open like a session: it counts against the key's cap while open."""
    server = http_server(max_sessions_per_key=1)
    key = server.mint()
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 3, "method": "subscriptions/listen",
            "params": {"notifications": {"toolsListChanged": True}, "_meta": meta}}  # fmt: skip
    headers = {**ACCEPT, "Authorization": f"Bearer {key}", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": "subscriptions/listen"}  # fmt: skip
    with httpx.stream("POST", server.url, json=body, headers=headers, timeout=15) as first:
        assert first.status_code == 200
        second = httpx.post(server.url, json={**body, "id": 4}, headers=headers, timeout=15)
        assert second.status_code == 429 and second.json()["error"]["data"] == {"limit": "max_sessions_per_key"}
        assert second.json()["id"] == 4
    for _ in range(50):  # the stream ended: its slot comes back once the server has seen it go
        with httpx.stream("POST", server.url, json=body, headers=headers, timeout=15) as again:
            if again.status_code == 200:
                break
        time.sleep(0.1)
    assert again.status_code == 200
