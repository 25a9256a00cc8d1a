"""What a `qaqnuz` subcommand is handed: the loaded plugins and the few ways to reach a config, the admin
services or a whole kernel, plus stdout/stderr helpers that keep results and diagnostics apart.

Admin commands open only what they need (`ctx.admin(config)`: store, audit sinks, key and approval
services), so they work when a tool pack's upstream is down or its secret unset; only serving and
`tools list` build a kernel.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from qaqnuz import logformat
from qaqnuz.config import Config, default_config_path, load_config
from qaqnuz.secrets import Redactor

if TYPE_CHECKING:
    from qaqnuz.admin import Admin
    from qaqnuz.kernel import Kernel
    from qaqnuz.plugins import Plugins

T = TypeVar("T")
_MASK = Redactor()
LOG_FORMAT = logformat.LOG_FORMAT


def setup_logging(level: str = "info", log_format: str = "text") -> None:
    """Logs to stderr through a redactor that masks anything shaped like an API key (tracebacks too), then a
    formatter (`[server] log_format`) that escapes whatever a client put in a record, stamped with the
    request id. uvicorn's and the SDK's loggers are bridged onto this handler by the HTTP transport; any
    other library's warning, which Python would print raw through its last-resort handler, comes here too."""
    handler = logformat.handler(log_format, sys.stderr)
    handler.addFilter(Redactor())
    root = logging.getLogger("qaqnuz")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.lastResort = handler


@attrs.frozen
class CommandContext:
    plugins: Plugins

    def config(self, args: argparse.Namespace) -> Config:
        """The config `--config` names, else `$QAQNUZ_CONFIG`, else `./qaqnuz.toml`."""
        path = getattr(args, "config", None)
        return load_config(path if path else default_config_path())

    def admin(self, config: Config) -> Admin:
        """The store, audit sinks and the key and approval services for `config` (close with `aclose`)."""
        from qaqnuz.admin import open_admin

        return open_admin(config, plugins=self.plugins)

    def with_admin(self, args: argparse.Namespace, operation: Callable[[Admin], Awaitable[T]]) -> T:
        """Open the store and audit sinks of the config `args` names, run one operation on them, close them."""
        admin = self.admin(self.config(args))

        async def main() -> T:
            try:
                return await operation(admin)
            finally:
                await admin.aclose()

        return self.run(main, inline=admin.inline)

    def kernel(self, config: Config, *, offline: bool = False) -> Kernel:
        """A whole kernel on these plugins (use `async with kernel.running()`)."""
        from qaqnuz.kernel import Kernel

        return Kernel(config, plugins=self.plugins, offline=offline)

    def run(self, main: Callable[[], Awaitable[T]], *, inline: bool = False) -> T:
        """Run a short coroutine (an admin operation) to completion.

        `inline=True` (for a store whose `runs_inline` says its coroutines never wait on I/O, like the
        built-in SQLite one) drives it without an event loop, which keeps `qaqnuz keys list` from loading
        asyncio at all; anything that does suspend then is a bug, reported as such.
        """
        if inline:
            from qaqnuz.admin import run_inline

            return run_inline(_call(main))
        import asyncio

        return asyncio.run(_call(main))

    def serve(self, main: Callable[[], Awaitable[Any]]) -> None:
        """Run a long-lived coroutine (a server) on uvloop where it is installed (it comes with qaqnuz[http])."""
        import anyio

        try:
            import uvloop  # noqa: F401
        except ImportError:
            anyio.run(main)
        else:
            anyio.run(main, backend_options={"use_uvloop": True})

    @staticmethod
    def settle() -> None:
        """Call once a server has started: what start-up allocated is moved out of the garbage collector's
        view (`gc.freeze`), and collections run less often, so each request pays less for them."""
        import gc

        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)

    @staticmethod
    def out(text: str, *, reveal: bool = False) -> None:
        """A command's result, on stdout. Anything shaped like an API key is masked unless `reveal` says this
        is the one place a key is shown (minting, rotation, the demo's own key)."""
        sys.stdout.write((text if reveal else _MASK.mask(text)) + "\n")
        sys.stdout.flush()

    @staticmethod
    def err(text: str) -> None:
        """A diagnostic, on stderr; anything shaped like an API key is masked."""
        sys.stderr.write(_MASK.mask(text) + "\n")
        sys.stderr.flush()

    @staticmethod
    def setup_logging(level: str = "info", log_format: str = "text") -> None:
        setup_logging(level, log_format)

    # A plugin's command prints the way the built-in ones do (it may not import `qaqnuz.commands`).
    @staticmethod
    def config_option(parser: argparse.ArgumentParser) -> None:
        """Add `--config` (for a command's `arguments`)."""
        from qaqnuz.commands._common import with_config

        with_config(parser)

    @staticmethod
    def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
        """Plain aligned columns, as `qaqnuz keys list` prints them."""
        from qaqnuz.commands._common import table

        return table(rows, header)

    @staticmethod
    def when(value: float | None) -> str:
        """A time as the built-in commands print it (UTC, `-` for none)."""
        from qaqnuz.commands._common import ts

        return ts(value)


async def _call(main: Callable[[], Awaitable[T]]) -> T:
    return await main()
