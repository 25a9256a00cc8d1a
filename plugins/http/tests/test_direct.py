"""Fast-path requests answered on the connection (below the ASGI stack), over raw sockets to a real server:
what HTTP/1.1 promises a client (keep-alive, pipelining, `Connection: close`, HTTP/1.0) holds, and whatever
the connection-level answer does not take reaches the ASGI app with its body and is answered there."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from qaqnuz.audit import chain_key, verify

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def call_body(request_id: int, message: str = "hi") -> bytes:
    params = {"name": "echo", "arguments": {"message": message}, "_meta": META}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()


def request(server: Any, key: str, body: bytes, *, target: str = "/mcp", extra: str = "", version: str = "1.1",
            host: str | None = None) -> bytes:  # fmt: skip
    head = (
        f"POST {target} HTTP/{version}\r\nHost: {host or f'127.0.0.1:{server.transport.port}'}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n"
        f"MCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response from the socket (Content-Length framed); what follows it stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def connect(server: Any) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.transport.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def counters(server: Any) -> tuple[int, int]:
    built = server.transport.built
    return built.direct.answered, built.fast.answered


def echoed(body: bytes) -> str:
    return str(json.loads(json.loads(body)["result"]["content"][0]["text"])["message"])


def test_keep_alive_and_pipelined_requests_are_answered_in_order_on_the_connection(http_server):
    server = http_server()
    key = server.mint()
    with connect(server) as sock:
        buffer = bytearray()
        sock.sendall(request(server, key, call_body(1, "one")))
        status, headers, body = read_response(sock, buffer)
        assert status == 200 and headers["content-type"] == "application/json" and echoed(body) == "one"
        assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
        assert "date" in headers and "connection" not in headers
        # three requests in one write: three answers, in order, on the same connection
        sock.sendall(b"".join(request(server, key, call_body(i, f"m{i}")) for i in (2, 3, 4)))
        answers = [read_response(sock, buffer) for _ in range(3)]
        assert [json.loads(b)["id"] for _, _, b in answers] == [2, 3, 4]
        assert [echoed(b) for _, _, b in answers] == ["m2", "m3", "m4"]
    assert counters(server) == (4, 4)


def test_connection_close_and_http_1_0_close_after_the_answer(http_server):
    server = http_server()
    key = server.mint()
    for extra, version in (("Connection: close\r\n", "1.1"), ("", "1.0")):
        with connect(server) as sock:
            buffer = bytearray()
            sock.sendall(request(server, key, call_body(1), extra=extra, version=version))
            status, headers, body = read_response(sock, buffer)
            assert status == 200 and echoed(body) == "hi"
            assert headers["connection"] == "close"
            assert sock.recv(1) == b""  # the server closed its side
    assert counters(server) == (2, 2)


def test_a_body_sent_after_its_head_is_awaited_and_a_stalled_one_gets_408(http_server):
    server = http_server(request_timeout="1s")
    key = server.mint()
    whole = request(server, key, call_body(9, "late"))
    head, _, body = whole.partition(b"\r\n\r\n")
    with connect(server) as sock:
        buffer = bytearray()
        sock.sendall(head + b"\r\n\r\n" + body[:10])
        time.sleep(0.3)
        sock.sendall(body[10:])
        status, _, answer = read_response(sock, buffer)
        assert status == 200 and echoed(answer) == "late"
        sock.sendall(head + b"\r\n\r\n" + body[:10])  # and then nothing more
        started = time.monotonic()
        status, _, answer = read_response(sock, buffer)
        assert status == 408 and answer == b"Request timeout" and time.monotonic() - started < 5
    assert counters(server) == (1, 1)


def test_what_the_connection_does_not_take_goes_to_the_asgi_app(http_server):
    server = http_server()
    key = server.mint()
    port = server.transport.port
    cases = [
        ("a foreign Host", {"host": "evil.example"}, 421),
        ("a key in the query", {"target": f"/mcp?token={key}"}, 200),
    ]
    for label, options, status in cases:
        with connect(server) as sock:
            buffer = bytearray()
            target = options.get("target", "/mcp")
            sent = request(server, key, call_body(5), target=target, host=options.get("host"))
            if target != "/mcp":  # the key travels in the query only
                sent = sent.replace(f"Authorization: Bearer {key}\r\n".encode(), b"")
            sock.sendall(sent)
            got, _, _ = read_response(sock, buffer)
            assert got == status, label
    assert counters(server) == (0, 1), port  # the query-token call: answered by the fast path, via ASGI


def test_a_refused_key_is_answered_on_the_connection_once_counted(http_server):
    server = http_server()
    registry = server.kernel.metrics.registry
    with connect(server) as sock:
        buffer = bytearray()
        sock.sendall(request(server, "qz_live_nope", call_body(1)))
        status, headers, body = read_response(sock, buffer)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"] == "invalid_token"
    assert server.transport.built.direct.refused == 1
    assert registry.get_sample_value("qaqnuz_auth_failures_total", {"transport": "http"}) == 1


def test_the_audit_line_is_written_before_the_answer_leaves(http_server):
    server = http_server()
    key = server.mint()
    audit = server.folder / "qaqnuz-audit.jsonl"
    with connect(server) as sock:
        buffer = bytearray()
        for i in range(20):
            sock.sendall(request(server, key, call_body(i, f"n{i}")))
            status, _, _ = read_response(sock, buffer)
            assert status == 200
            executed = [json.loads(line) for line in audit.read_text().splitlines()]
            assert sum(1 for r in executed if r.get("tool") == "echo" and r.get("step") == "execution") == i + 1
    assert verify(audit, chain_key((server.folder / "qaqnuz.secret").read_bytes().strip())).problems == []


def test_uvicorn_still_has_what_the_connection_level_answers_rely_on():
    """The protocol relies on uvicorn's request cycle; an upgrade that moves it fails here (the server would
    then answer everything through the ASGI stack, slower but correct)."""
    from qaqnuz_http.direct import direct_support

    assert direct_support()


def test_keep_alive_closes_an_idle_connection_and_never_a_busy_one(http_server):
    server = http_server(keep_alive_timeout="1s")
    key = server.mint()
    with connect(server) as busy, connect(server) as idle:
        buffers = {id(busy): bytearray(), id(idle): bytearray()}
        for sock in (busy, idle):
            sock.sendall(request(server, key, call_body(1)))
            assert read_response(sock, buffers[id(sock)])[0] == 200
        started = time.monotonic()
        for i in range(7):  # 2.8 s of a request every 0.4 s: well past the 1 s timeout
            time.sleep(0.4)
            busy.sendall(request(server, key, call_body(i)))
            assert read_response(busy, buffers[id(busy)])[0] == 200
        assert idle.recv(1) == b""  # the idle one was closed meanwhile
        busy.settimeout(5)
        assert busy.recv(1) == b""  # and the busy one, once idle for its second
        assert time.monotonic() - started < 6


def test_the_head_and_the_key_are_judged_before_any_body_is_awaited(http_server):
    """A refused key or Host is answered at once, not after a body that never comes (nor is it buffered)."""
    server = http_server(request_timeout="3s")
    key = server.mint()
    registry = server.kernel.metrics.registry
    cases = [("qz_live_nope", None, 401), (key, "evil.example", 421)]
    for credential, host, status in cases:
        head = request(server, credential, call_body(1), host=host).partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        with connect(server) as sock:
            started = time.monotonic()
            sock.sendall(head)  # and no body
            got, headers, _ = read_response(sock, bytearray())
            assert got == status and time.monotonic() - started < 1.5, (status, time.monotonic() - started)
            assert headers["cache-control"] == "no-store"
    assert registry.get_sample_value("qaqnuz_auth_failures_total", {"transport": "http"}) == 1  # counted once


def test_a_stalled_body_gets_408_with_the_usual_headers_and_a_large_one_goes_to_the_app(http_server):
    server = http_server(request_timeout="1s")
    key = server.mint()
    head = request(server, key, call_body(1)).partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head + b"{")
        status, headers, body = read_response(sock, bytearray())
    assert (status, body) == (408, b"Request timeout")
    assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
    big = call_body(2, "x" * 70_000)  # over the 64 KiB awaited on the connection: the app reads it
    with connect(server) as sock:
        sock.sendall(request(server, key, big))
        status, _, body = read_response(sock, bytearray())
    assert status == 200 and json.loads(body)["id"] == 2
    assert counters(server) == (0, 1)  # answered by the fast path, through the ASGI stack


def test_a_direct_answer_carries_its_request_id_to_the_client_the_access_line_and_the_audit_record(http_server, caplog):
    import logging

    server = http_server()
    key = server.mint()
    audit = server.folder / "qaqnuz-audit.jsonl"
    with caplog.at_level(logging.INFO, logger="qaqnuz.http.access"), connect(server) as sock:
        buffer = bytearray()
        sock.sendall(request(server, key, call_body(1, "one")))
        status, headers, _ = read_response(sock, buffer)
    assert status == 200 and server.transport.built.direct.answered == 1
    request_id = headers["x-request-id"]
    (line,) = [r for r in caplog.records if r.name == "qaqnuz.http.access"]
    assert line.request_id == request_id and line.method == "tools/call" and line.tool == "echo"
    assert line.route == "POST /mcp" and line.status == 200 and line.client.startswith("127.0.0.1:")
    executed = [json.loads(text) for text in audit.read_text().splitlines()]
    assert [r.get("request_id") for r in executed if r.get("step") == "execution"] == [request_id]
