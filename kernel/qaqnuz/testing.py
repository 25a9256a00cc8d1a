"""pytest plugin for plugin authors: a real kernel from the plugins you name, a minted key, a client.

Installed with qaqnuz (entry point `pytest11`), so a third-party pack's tests can write::

    async def test_my_tool(qaqnuz_kernel, qaqnuz_client):
        kernel = await qaqnuz_kernel(CONFIG, plugins=[my_pack.plugin])
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="test")
        async with qaqnuz_client(kernel, key) as client:
            result = await client.call_tool("my_tool", {"id": "1"})

A store plugin runs the shared store contract against itself: subclass
`qaqnuz.store_contract.StoreContract` in a test module and give it a `store` fixture.

Everything is real: the store is SQLite in the test's tmp_path, calls go through the governed
pipeline and the `mcp` SDK's in-memory transport (both protocol eras: pass `mode="legacy"`).
Async tests use anyio's pytest plugin (`@pytest.mark.anyio`).

`qaqnuz_postgres` (one cluster per session; `create_database` gives each test its own) and `qaqnuz_redis`
(one server per test, free to kill or pause) are real servers from the machine's binaries
(`qaqnuz.testservers`); without the binaries they skip, and under `CI` they fail.
"""

from __future__ import annotations

import asyncio
import secrets
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from qaqnuz import testservers
from qaqnuz.config import load_config
from qaqnuz.kernel import Kernel
from qaqnuz.plugins import Plugins

T = TypeVar("T")

MINIMAL_CONFIG = """\
[server]
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
"""


def write_config(folder: Path, text: str) -> Path:
    """Write `qaqnuz.toml` (dedented) and a fresh 0600 secret into `folder`; returns the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "qaqnuz.secret"
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(48))
        secret.chmod(0o600)
    path = folder / "qaqnuz.toml"
    path.write_text(textwrap.dedent(text))
    return path


async def start_kernel(
    config_path: Path, *, plugins: Iterable[str | ModuleType | object] = (), autoload: bool = False
) -> Kernel:
    """A started kernel with only the built-ins plus `plugins` (autoload off unless asked)."""
    kernel = Kernel(load_config(config_path), plugins=Plugins(autoload=autoload, explicit=plugins))
    await kernel.start()
    return kernel


@asynccontextmanager
async def connect(kernel: Kernel, key: str | None, *, mode: str = "auto", **client_options: Any) -> AsyncIterator[Any]:
    """An `mcp.Client` talking to `kernel` in memory, authenticated as `key`.

    `client_options` go to `mcp.Client` (e.g. `sampling_callback`, `elicitation_callback`,
    `logging_callback`, `message_handler`).
    """
    from mcp import Client

    from qaqnuz.server import Binding

    binding = Binding(kernel.host, lambda ctx: key, transport="memory")
    try:
        async with Client(binding.server, mode=mode, **client_options) as client:
            yield client
    finally:
        binding.close()


def serve_in_this_thread(
    holder: Any, config_path: Path, *, plugins: Iterable[Any] = (), transport: str = "http",
    overrides: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    """Run a whole server (a started kernel and one transport) on a loop of this thread until the transport
    is stopped: the body of a test's server thread. `holder` gets `kernel` and `transport` as soon as they
    exist (the test stops the server with `holder.transport.stop()`), and `error` if it failed."""

    async def main() -> None:
        kernel = await start_kernel(config_path, plugins=plugins)
        try:
            holder.kernel = kernel
            holder.transport = kernel.transport(transport, dict(overrides or {}))
        except BaseException:
            await kernel.aclose()
            raise
        async with kernel.running() as host:
            await holder.transport.serve(host)

    import anyio

    try:
        anyio.run(main)
    except BaseException as exc:  # surfaced by the test that started the thread
        holder.error = exc


class ThreadServer:
    """A whole server (kernel + HTTP transport on 127.0.0.1, port chosen by the system) on its own thread and
    loop: what a test drives with real clients (a browser, httpx, the MCP SDK) from the test's thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.kernel: Any = None
        self.transport: Any = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.transport.port}"

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run one store or service operation to its end on a loop of its own (the stores are thread-safe)."""
        box: list[Any] = []

        async def go() -> Any:
            return await awaitable

        worker = threading.Thread(target=lambda: box.append(asyncio.run(go())))
        worker.start()
        worker.join()
        return box[0]  # type: ignore[no-any-return]

    def start(self, config_path: Path, *, plugins: Iterable[Any], timeout: float = 15.0) -> None:
        options = {"plugins": plugins, "overrides": {"port": 0}}
        self.thread = threading.Thread(
            target=serve_in_this_thread, args=(self, config_path), kwargs=options, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            http = getattr(self.transport, "server", None)
            if http is not None and http.started and self.transport.port:
                return
            time.sleep(0.02)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stop()
        if self.thread is not None:
            self.thread.join(timeout=20)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def qaqnuz_kernel(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Kernel]]]:
    """Factory: `await qaqnuz_kernel(config_text, plugins=[...])` → a started Kernel, closed after."""
    kernels: list[Kernel] = []

    async def make(
        config_text: str = MINIMAL_CONFIG, *, plugins: Iterable[Any] = (), folder: Path | None = None
    ) -> Kernel:
        path = write_config(folder or tmp_path, config_text)
        kernel = await start_kernel(path, plugins=plugins)
        kernels.append(kernel)
        return kernel

    yield make
    for kernel in kernels:
        await kernel.aclose()


@pytest.fixture
def qaqnuz_client() -> Callable[..., AbstractAsyncContextManager[Any]]:
    """Factory: `async with qaqnuz_client(kernel, key, mode="legacy") as client:`."""
    return connect


def _missing(exc: testservers.ServerMissing) -> None:
    import os

    if os.environ.get("CI"):
        pytest.fail(str(exc))  # in CI a missing server is a broken setup, never a silent skip
    pytest.skip(str(exc))


@contextmanager
def postgres_cluster(
    configure: Callable[[testservers.PostgresServer], None] | None = None,
) -> Iterator[testservers.PostgresServer]:
    """A running PostgreSQL cluster of the caller's own (free to stop, start or reconfigure), removed after;
    `configure` sees it initialised and not yet started (to edit `pg_hba.conf`, say). Skips without the
    binaries, fails under `CI`."""
    try:
        server = testservers.PostgresServer()
    except testservers.ServerMissing as exc:
        _missing(exc)
        raise
    try:
        if configure is not None:
            configure(server)
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def qaqnuz_postgres() -> Iterator[testservers.PostgresServer]:
    """A running PostgreSQL cluster for the session (`.create_database(name)` → a DSN)."""
    with postgres_cluster() as server:
        yield server


@pytest.fixture
def qaqnuz_redis() -> Iterator[testservers.RedisServer]:
    """A running redis-server of this test alone (`.url`; `.kill()`, `.start()`, `.pause()`, `.resume()`)."""
    try:
        server = testservers.RedisServer()
    except testservers.ServerMissing as exc:
        _missing(exc)
        raise
    try:
        server.start()
        yield server
    finally:
        server.close()
