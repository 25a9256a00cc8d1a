"""The kernel's own `qaqnuz` subcommands, registered through `qaqnuz_commands` like any plugin's.

Each module holds one group; they import nothing heavy at module level (the command line loads every
plugin to find its commands), so `qaqnuz keys list` starts fast.
"""

from __future__ import annotations

from qaqnuz.commands import approvals, audit, config_check, init, keys, plugin_list, serve, store, tools
from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import Command


@hookimpl
def qaqnuz_commands() -> list[Command]:
    return [
        *init.COMMANDS,
        *serve.COMMANDS,
        *keys.COMMANDS,
        *approvals.COMMANDS,
        *tools.COMMANDS,
        *plugin_list.COMMANDS,
        *config_check.COMMANDS,
        *audit.COMMANDS,
        *store.COMMANDS,
    ]
