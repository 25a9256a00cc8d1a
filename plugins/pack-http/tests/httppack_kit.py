"""Test kit for the http pack: a real HTTP server on 127.0.0.1 (stdlib, in a thread) that records every
request it receives, and config builders."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SECRET_BODY = "upstream-internal-detail: stack trace at /srv/app/secret.py"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []
        self.huge_sent = 0
        self.counters: dict[str, int] = {}
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that hung up: expected here
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return self.server_address[1]

    def everything(self) -> str:
        """All the server saw, as one string (to search for values that must never arrive)."""
        return json.dumps(self.requests)


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        record = {
            "method": self.command,
            "target": self.path,
            "path": split.path,
            "query": parse_qsl(split.query, keep_blank_values=True),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        with self.server.lock:
            self.server.requests.append(record)
            count = self.server.counters[split.path] = self.server.counters.get(split.path, 0) + 1
        parts = split.path.split("/")
        if "status" in parts:
            code = int(parts[parts.index("status") + 1])
            return self._send(code, SECRET_BODY.encode(), "text/plain")
        if "slow" in parts:
            time.sleep(1.5)
            return self._send(200, b'{"slow": true}')
        if "huge" in parts:
            return self._huge()
        if "declared-huge" in parts:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"[")
            return None
        if "text" in parts:
            return self._send(200, "plain text, ünïcode".encode(), "text/plain; charset=utf-8")
        if "empty" in parts:
            return self._send(204, b"")
        if "redirect" in parts:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if "flaky" in parts:  # 429 with Retry-After: 1 the first time, then fine
            if count == 1:
                return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            return self._send(200, b'{"attempt": %d}' % count)
        if "busy" in parts:
            return self._send(503, b"busy", "text/plain", {"Retry-After": "120"})
        payload = {k: record[k] for k in ("method", "target", "path", "query", "body")}
        return self._send(200, json.dumps(payload).encode())

    def _send(self, code: int, body: bytes, ctype: str = "application/json", extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _huge(self) -> None:
        """64 MiB of JSON-ish bytes with no Content-Length; counts what actually left the server."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b"[" + b"1," * 32767 + b"1"
        try:
            for _ in range(1024):
                self.wfile.write(chunk)
                self.server.huge_sent += len(chunk)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


BRAND = """\
[brands.acme]
plan = "growth"
roles = {{ viewer = ["api.read", "api.write"] }}
{exposed}
"""


def config(pack: str, tools: list[str]) -> str:
    """A config with brand acme exposing `tools`, plus the given pack text."""
    exposed = "\n".join(f"tools.{t} = {{ exposable = true }}" for t in tools)
    return BRAND.format(exposed=exposed) + "\n" + pack


def echo_pack(base_url: str, auth: str = "", extra: str = "") -> str:
    """A minimal pack with one `echo` tool (GET /echo?q=...)."""
    return f"""\
[packs.api]
type = "http"
base_url = "{base_url}"
allow_private = true
{extra}
{auth}

[[packs.api.tools]]
name = "echo"
description = "Echo."
scope = "api.read"
path = "/echo"
query = {{ q = "{{{{ q }}}}" }}
input = {{ q = {{ type = "string" }} }}
"""
