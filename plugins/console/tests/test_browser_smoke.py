"""The browser harness itself, against a tiny stdlib HTTP server on 127.0.0.1: a script from a file runs under
`Content-Security-Policy: script-src 'self'` (and an inline one does not), a labelled form posts, and the
`Origin` header Chromium sends depends on the page's `Referrer-Policy` -- `null` under `no-referrer`, the real
origin under `same-origin`. The console's Origin handling relies on that browser fact; this test pins it."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from browser import open_browser, require_chromium, screenshot

POLICIES = ("no-referrer", "same-origin")
CSP = "script-src 'self'"
WAIT = 10.0

APP_JS = b"""\
document.getElementById("change").addEventListener("click", () => {
  document.getElementById("status").textContent = "clicked: script from a file ran";
});
"""


def page(policy: str) -> bytes:
    return f"""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Browser smoke ({policy})</title>
<style>
  body {{ font-family: "DejaVu Sans", sans-serif; margin: 1.5rem; max-width: 40rem; }}
  form {{ display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: 1rem; }}
  input {{ flex: 1 1 12rem; padding: .4rem; }}
</style>
</head>
<body>
<main>
  <h1>Browser smoke</h1>
  <p>Referrer-Policy: <code>{policy}</code></p>
  <p id="status">waiting for a click</p>
  <button type="button" id="change">Change text</button>
  <p id="inline">inline script blocked</p>
  <script>document.getElementById("inline").textContent = "inline script ran";</script>
  <form method="post" action="/submit?policy={policy}">
    <label for="note">Note</label>
    <input id="note" name="note" required>
    <button type="submit" id="send">Send</button>
  </form>
</main>
<script src="/app.js"></script>
</body>
</html>
""".encode()


@dataclass(frozen=True)
class Received:
    path: str
    origin: str | None
    referer: str | None
    form: dict[str, list[str]]


@dataclass
class Site:
    origin: str
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post_with(self, note: str) -> Received:
        with self.lock:
            found = [r for r in self.received if r.form.get("note") == [note]]
        assert len(found) == 1, f"expected one POST carrying note={note!r}, got {found}"
        return found[0]


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
            pass

        def send(self, body: bytes, content_type: str, policy: str = "no-referrer") -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Referrer-Policy", policy)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def policy(self) -> str:
            policy = parse_qs(urlsplit(self.path).query).get("policy", ["no-referrer"])[0]
            return policy if policy in POLICIES else "no-referrer"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/page":
                self.send(page(self.policy()), "text/html; charset=utf-8", self.policy())
            elif path == "/app.js":
                self.send(APP_JS, "text/javascript; charset=utf-8")
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/submit":
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            record = Received(
                path=self.path,
                origin=self.headers.get("Origin"),
                referer=self.headers.get("Referer"),
                form=parse_qs(body.decode()),
            )
            with site.lock:
                site.received.append(record)
            self.send(b'<!doctype html><title>ok</title><p id="received">received</p>', "text/html; charset=utf-8")

    return Handler


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Site(origin=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = make_handler(state)
    thread = threading.Thread(target=server.serve_forever, name="browser-smoke-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("width", [1280, 390])
def test_script_from_file_runs_and_form_origin_follows_referrer_policy(
    site: Site, width: int, record_property: Callable[[str, object], None]
) -> None:
    require_chromium()
    expected_origin = {"no-referrer": "null", "same-origin": site.origin}
    with open_browser(width=width) as driver:
        wait = WebDriverWait(driver, WAIT)
        assert driver.execute_script("return window.innerWidth") == width
        for policy in POLICIES:
            driver.get(f"{site.origin}/page?policy={policy}")
            button = wait.until(EC.element_to_be_clickable((By.ID, "change")))
            # The page's own inline script is refused by the CSP; the same-origin file is allowed.
            assert driver.find_element(By.ID, "inline").text == "inline script blocked"
            button.click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "clicked: script from a file ran"))

            note = driver.find_element(By.ID, "note")
            assert note.accessible_name == "Note"
            value = f"{policy}-{width}-{uuid.uuid4().hex[:8]}"
            note.send_keys(value)
            screenshot(driver, f"browser-smoke-{width}-{policy}")
            driver.find_element(By.ID, "send").click()
            wait.until(EC.presence_of_element_located((By.ID, "received")))

            received = site.post_with(value)
            record_property(f"origin[{policy}]", received.origin)
            print(f"width={width} Referrer-Policy={policy}: Origin={received.origin!r} Referer={received.referer!r}")
            assert received.origin == expected_origin[policy], (policy, received)
            if policy == "no-referrer":
                assert received.referer is None
            else:
                assert received.referer == f"{site.origin}/page?policy={policy}"
