"""Two real HTTP servers on 127.0.0.1 standing in for Open-Meteo's geocoding and forecast APIs.

They serve hand-written fixtures in the documented response shapes (tests/fixtures/*.json) and record
every request, so tests can check what was asked. No network is used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GEOCODING = {
    "Berlin": "geocoding_berlin.json",
    "Zürich": "geocoding_zurich.json",
}
FORECASTS = {"52.52437": "forecast_berlin.json", "47.36667": "forecast_zurich_fahrenheit.json"}


class FakeOpenMeteo(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Handler(BaseHTTPRequestHandler):
    server: FakeOpenMeteo

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query))
        self.server.requests.append({"path": split.path, "query": query, "target": self.path})
        if split.path == "/v1/search":
            name = query.get("name", "")
            if name == "Brokenville":  # a result without coordinates: the upstream is broken
                return self._json(200, {"results": [{"id": 1, "name": "Brokenville"}], "generationtime_ms": 0.1})
            if name == "Downville":  # geocodes fine; its forecast fails upstream
                return self._json(200, {"results": [{"name": "Downville", "latitude": 1.5, "longitude": 1.5}]})
            return self._file(GEOCODING.get(name, "geocoding_none.json"))
        if split.path == "/v1/forecast":
            if query.get("latitude") == "1.5":
                return self._json(500, {"error": True, "reason": "internal upstream failure at /srv/forecast"})
            fixture = FORECASTS.get(query.get("latitude", ""))
            if fixture is None:
                return self._json(400, {"error": True, "reason": "Latitude must be in range of -90 to 90°."})
            return self._file(fixture)
        return self._json(404, {"error": True, "reason": "Not Found"})

    def _file(self, name: str) -> None:
        self._send(200, (FIXTURES / name).read_bytes())

    def _json(self, code: int, payload: Any) -> None:
        self._send(code, json.dumps(payload).encode())

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve() -> Iterator[FakeOpenMeteo]:
    server = FakeOpenMeteo()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def geocoding() -> Iterator[FakeOpenMeteo]:
    yield from _serve()


@pytest.fixture
def forecast() -> Iterator[FakeOpenMeteo]:
    yield from _serve()
