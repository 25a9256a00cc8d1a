"""A real qaqnuz server (kernel + HTTP transport on 127.0.0.1, in a thread with its own loop) with the Slack
approver and route, talking to a real fake Slack on 127.0.0.1. Uses the kernel's testkit pack."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
for folder in (ROOT / "tests" / "support", Path(__file__).parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from fakeslack import SIGNING_SECRET, TOKEN, FakeSlack  # noqa: E402

from kit import kit_config  # noqa: E402
from qaqnuz.testing import serve_in_this_thread, write_config  # noqa: E402

PLUGINS = ["http", "testkit_pack.plugin", "slack"]
ALICE, BOB, CAROL, MALLORY = "UALICE001", "UBOB00001", "UCAROL001", "UMALLORY1"
ACME_CHANNEL, GLOBEX_CHANNEL = "CACME0001", "CGLOBEX01"


def slack_config(api: str, extra: str = "") -> str:
    return f"""\
[plugins]
approver = "slack"
routes = ["slack"]

[plugins.slack]
bot_token = {{ file = "slack-token" }}
signing_secrets = [{{ file = "slack-signing-old" }}, {{ file = "slack-signing" }}]
base_url = "{api}"
timeout = "1s"
attempts = 3
backoff = "50ms"
{extra}
[plugins.slack.brands.acme]
channel = "{ACME_CHANNEL}"
approvers = ["{ALICE}", "{BOB}"]
users = {{ manager = "{BOB}" }}

[plugins.slack.brands.globex]
channel = "{GLOBEX_CHANNEL}"
approvers = ["{CAROL}"]

""" + kit_config()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@dataclass
class Server:
    folder: Path
    kernel: Any = None
    transport: Any = None
    thread: threading.Thread | None = None
    error: BaseException | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.transport.port}"

    @property
    def interactions(self) -> str:
        return f"{self.base}/slack/interactions"

    def run(self, awaitable: Any) -> Any:
        """Run one store or service operation on a loop of its own (the store is thread-safe)."""
        box: list[Any] = []

        async def go() -> Any:
            return await awaitable

        worker = threading.Thread(target=lambda: box.append(asyncio.run(go())))
        worker.start()
        worker.join()
        return box[0]

    def mint(self, name: str, *, brand: str = "acme", role: str = "manager") -> str:
        scopes = ["orders.read", "orders.write"] if role == "manager" else ["orders.read"]
        raw, _ = self.run(self.kernel.keys.mint(brand=brand, scopes=scopes, name=name, role=role))
        return str(raw)

    def approval(self, approval_id: str) -> Any:
        return self.run(self.kernel.store.get_approval(approval_id))

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stop()
        if self.thread is not None:
            self.thread.join(timeout=20)


def _serve(server: Server, config: Path) -> None:
    serve_in_this_thread(server, config, plugins=PLUGINS, overrides={"port": 0})


@pytest.fixture
def slack_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: `slack_server(config_text)` → a running server (stopped after)."""
    servers: list[Server] = []

    def start(config_text: str, folder: Path | None = None) -> Server:
        folder = folder or tmp_path / f"server{len(servers)}"
        config = write_config(folder, config_text)
        (folder / "slack-token").write_text(TOKEN)
        (folder / "slack-signing").write_text(SIGNING_SECRET)
        (folder / "slack-signing-old").write_text("an-older-signing-secret-being-rotated")
        server = Server(folder)
        server.thread = threading.Thread(target=_serve, args=(server, config), daemon=True)
        server.thread.start()
        servers.append(server)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if server.error is not None:
                raise server.error
            http = getattr(server.transport, "server", None)
            if http is not None and http.started and server.transport.port:
                return server
            time.sleep(0.02)
        raise TimeoutError("server did not start")

    yield start
    for server in servers:
        server.stop()


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll `check` until it returns something truthy (a background post is under way)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
