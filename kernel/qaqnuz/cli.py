"""The `qaqnuz` command: subcommands come from the `qaqnuz_commands` hook (the kernel's own included).

A command's result (a new key, a table, JSON, the demo's key and client settings) goes to stdout;
diagnostics and logs go to stderr. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
No traceback ever reaches the terminal: its text could carry a secret.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from qaqnuz.command_context import CommandContext, setup_logging
from qaqnuz.errors import ConfigError, PluginError, QaqnuzError, StoreError, UsageError
from qaqnuz.plugins import FIRST_PARTY, Plugins, install_hint
from qaqnuz.records import Command
from qaqnuz.secrets import Redactor

log = logging.getLogger("qaqnuz.cli")
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def _err(text: str) -> None:
    sys.stderr.write(_REDACT.mask(text) + "\n")
    sys.stderr.flush()


class Parser(argparse.ArgumentParser):
    """argparse, but its error messages (which repeat what was typed) never show anything shaped like a key."""

    def error(self, message: str) -> NoReturn:
        super().error(_REDACT.mask(message))


_REDACT = Redactor()


def build_parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """Every registered command, nested by its words (`keys create` under `keys`)."""
    plugins = plugins if plugins is not None else Plugins()
    parser = Parser(
        prog="qaqnuz",
        description="A governed MCP server: authenticated, authorised, rate-limited and approved tool calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = {name: registered.command for name, registered in plugins.commands.items()}
    for (kind, name), (distribution, extra) in FIRST_PARTY.items():
        if kind == "command" and name not in commands:
            commands[name] = Command(
                name, f"(needs {distribution}: pip install 'qaqnuz[{extra}]')", _missing(name), _any_arguments
            )
    groups: dict[tuple[str, ...], Any] = {(): parser.add_subparsers(dest="command_0", required=True, metavar="COMMAND")}
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name in sorted(commands, key=lambda n: (len(n.split()), n)):
        words = tuple(name.split())
        parent = words[:-1]
        if parent not in groups:
            if parent not in parsers:  # a group nobody described: make it with no help of its own
                _add(groups, parsers, parent, Command(" ".join(parent), ""))
            groups[parent] = parsers[parent].add_subparsers(
                dest=f"command_{len(parent)}", required=True, metavar="COMMAND"
            )
        _add(groups, parsers, words, commands[name])
    return parser


def _add(
    groups: dict[tuple[str, ...], Any],
    parsers: dict[tuple[str, ...], argparse.ArgumentParser],
    words: tuple[str, ...],
    command: Command,
) -> None:
    sub = groups[words[:-1]].add_parser(
        words[-1], help=command.help, description=command.help, epilog=command.epilog or None
    )
    if command.arguments is not None:
        command.arguments(sub)
    if command.run is not None:
        sub.set_defaults(func=command.run)
    parsers[words] = sub


def _any_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(accepts_any=True)


def _missing(name: str) -> Any:
    def run(args: argparse.Namespace, ctx: CommandContext) -> int:
        raise UsageError(f"`qaqnuz {name}`: {install_hint('command', name)}")

    return run


def _version() -> str:
    from qaqnuz.version import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # no need to load a single plugin
        sys.stdout.write(f"qaqnuz {_version()}\n")
        return EXIT_OK
    if not logging.getLogger("qaqnuz").handlers:
        setup_logging("info")
    try:
        plugins = Plugins()
    except PluginError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    parser = build_parser(plugins)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_any", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    ctx = CommandContext(plugins)
    try:
        return int(args.func(args, ctx))
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except BaseExceptionGroup as group:  # a task group's: report its one error as itself
        only = group.exceptions[0] if len(group.exceptions) == 1 else group
        return _report(only if isinstance(only, Exception) else group)
    except Exception as exc:
        return _report(exc)


def _report(exc: BaseException) -> int:
    """The exit code for a command's failure, after one line (or one per config problem) on stderr."""
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            _err(f"config error: {problem}")
        return EXIT_USAGE
    if isinstance(exc, UsageError):
        _err(f"error: {exc}")
        return EXIT_USAGE
    if isinstance(exc, StoreError | QaqnuzError):
        _err(f"error: {exc}")
        return EXIT_RUNTIME
    # Never a traceback: its text could carry a secret.
    _err(f"error: unexpected failure ({type(exc).__name__}); see the log lines above, and please report it")
    return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
