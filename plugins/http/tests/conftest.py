"""Real servers for the HTTP transport's tests: uvicorn on 127.0.0.1 with a free port.

`http_server(...)` runs the kernel and `HttpTransport.serve` in a thread with its own event loop (so a
test can block, or run subprocesses, without stalling the server); `serve_subprocess(...)` runs
`qaqnuz serve --transport http` as users do. Both use the kernel's testkit pack from tests/support.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qaqnuz.testing import serve_in_this_thread, write_config

ROOT = Path(__file__).resolve().parents[3]
SUPPORT = ROOT / "tests" / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from httpkit import PLUGINS, server_env  # noqa: E402

from kit import kit_config  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Running:
    folder: Path
    kernel: Any = None
    transport: Any = None
    thread: threading.Thread | None = None
    error: BaseException | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.transport.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def mint(self, name: str = "agent", *, brand: str = "acme", scopes: tuple[str, ...] = ("orders.read",),
             role: str = "viewer", expires_in: float | None = None) -> str:  # fmt: skip
        minted = self.kernel.keys.mint(brand=brand, scopes=list(scopes), name=name, role=role, expires_in=expires_in)
        raw, _ = self.call(minted)
        return raw

    def call(self, awaitable: Any) -> Any:
        """Run one store or service operation to completion on a loop of its own (the store is thread-safe),
        whether or not the calling test is itself async."""
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, asyncio.run(_awaited(awaitable))))
            except BaseException as exc:
                outcome.append((False, exc))

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stop()
        if self.thread is not None:
            self.thread.join(timeout=20)
            assert not self.thread.is_alive(), "server did not stop"


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _run_in_thread(running: Running, config: Path, settings: dict[str, Any], plugins: list[str]) -> None:
    serve_in_this_thread(running, config, plugins=plugins, overrides=settings)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Factory: `http_server(config_text=None, extra_plugins=(), **plugin_http_settings)` → a Running server
    (stopped after)."""
    servers: list[Running] = []

    def start(config_text: str | None = None, extra_plugins: tuple[str, ...] = (), **settings: Any) -> Running:
        folder = tmp_path / f"server{len(servers)}"
        config = write_config(folder, config_text or kit_config())
        running = Running(folder)
        settings.setdefault("port", 0)
        running.thread = threading.Thread(
            target=_run_in_thread, args=(running, config, settings, [*PLUGINS, *extra_plugins]), daemon=True
        )
        running.thread.start()
        servers.append(running)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            server = getattr(running.transport, "server", None)
            if running.error is not None:
                raise running.error
            if server is not None and server.started and running.transport.port:
                return running
            time.sleep(0.02)
        raise TimeoutError("server did not start")

    yield start
    for running in servers:
        running.stop()


@dataclass
class Subprocess:
    process: subprocess.Popen[str]
    port: int
    config: Path
    stderr_lines: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@pytest.fixture
def serve_subprocess(tmp_path: Path) -> Iterator[Callable[..., Subprocess]]:
    """Factory: `serve_subprocess(config_text)` → `qaqnuz serve --transport http --port 0` running."""
    procs: list[Subprocess] = []

    def start(config_text: str, folder: Path | None = None) -> Subprocess:
        config = write_config(folder or tmp_path / "sub", config_text)
        process = subprocess.Popen(
            [sys.executable, "-m", "qaqnuz.cli", "serve", "--transport", "http", "--host", "127.0.0.1",
             "--port", "0"],
            env=server_env(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: list[str] = []
        port_box: list[int] = []

        def pump() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line)
                found = re.search(r"serving MCP over HTTP at http://127\.0\.0\.1:(\d+)/mcp", line)
                if found:
                    port_box.append(int(found.group(1)))

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 20
        while not port_box:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("server did not start:\n" + "".join(lines))
            time.sleep(0.05)
        sub = Subprocess(process, port_box[0], config, lines)
        procs.append(sub)
        return sub

    yield start
    for sub in procs:
        if sub.process.poll() is None:
            sub.process.kill()
            sub.process.wait(timeout=10)
