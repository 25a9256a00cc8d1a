"""A real qaqnuz server (kernel + HTTP transport on 127.0.0.1, in a thread with its own loop) with the console
mounted, using the kernel's testkit pack; console users made through the same service the CLI uses."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
for folder in (ROOT / "tests" / "support", Path(__file__).parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from kit import kit_config  # noqa: E402
from qaqnuz.testing import ThreadServer, write_config  # noqa: E402
from qaqnuz_console.passwords import HashParams, hash_password  # noqa: E402

PLUGINS = ["http", "testkit_pack.plugin", "console"]
#: Cheap hashing for users made by tests (the product's default is the strong one; verifying reads the
#: parameters from the hash itself).
CHEAP = HashParams(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery staple"


def console_config(console: str = "", http: str = "") -> str:
    return f"""\
[plugins]
routes = ["console"]

[plugins.console]
{console}

[plugins.http]
{http}

""" + kit_config()


class Server(ThreadServer):
    @property
    def console(self) -> str:
        return f"{self.base}/console"

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def add_user(self, name: str, role: str, brand: str | None = None, password: str = PASSWORD) -> Any:
        users = self.kernel.admin.users
        return self.run(users.add(name, role=role, brand=brand, password_hash=hash_password(password, CHEAP)))

    def mint(self, name: str, *, brand: str = "acme", role: str = "manager") -> str:
        scopes = ["orders.read", "orders.write"] if role == "manager" else ["orders.read"]
        raw, _ = self.run(self.kernel.keys.mint(brand=brand, scopes=scopes, name=name, role=role))
        return str(raw)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def console_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: `console_server(config_text)` → a running server with the console (stopped after)."""
    servers: list[Server] = []

    def start(config_text: str | None = None, folder: Path | None = None) -> Server:
        folder = folder or tmp_path / f"server{len(servers)}"
        config = write_config(folder, config_text if config_text is not None else console_config())
        server = Server(folder)
        servers.append(server)
        server.start(config, plugins=PLUGINS)
        return server

    yield start
    for server in servers:
        server.stop()
