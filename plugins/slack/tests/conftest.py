"""A real qaqnuz server (kernel + HTTP transport on 127.0.0.1, in a thread with its own loop) with the Slack
approver and route, talking to a real fake Slack on 127.0.0.1. Uses the kernel's testkit pack."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
for folder in (ROOT / "tests" / "support", Path(__file__).parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from fakeslack import SIGNING_SECRET, TOKEN, FakeSlack  # noqa: E402

from kit import kit_config  # noqa: E402
from qaqnuz.testing import ThreadServer, write_config  # noqa: E402

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


class Server(ThreadServer):
    @property
    def interactions(self) -> str:
        return f"{self.base}/slack/interactions"

    def mint(self, name: str, *, brand: str = "acme", role: str = "manager") -> str:
        scopes = ["orders.read", "orders.write"] if role == "manager" else ["orders.read"]
        raw, _ = self.run(self.kernel.keys.mint(brand=brand, scopes=scopes, name=name, role=role))
        return str(raw)

    def approval(self, approval_id: str) -> Any:
        return self.run(self.kernel.store.get_approval(approval_id))


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
        servers.append(server)
        server.start(config, plugins=PLUGINS)
        return server

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
