"""`qaqnuz console users ...`: add, list, remove console users and set their passwords.

A console user is a person with a role (admin, brand-admin of one brand, auditor) and either a password
(hashed with argon2id here, before it reaches the store) or none, when they sign in only through OpenID
Connect. A password never appears on a command line (where `ps` and shell history would keep it): it comes
from a file, from stdin, from `$QAQNUZ_CONSOLE_PASSWORD` (removed from the environment once read), or from a
prompt in a terminal. No output of these commands ever contains a password or its hash.

argon2 loads only when a command here runs (`passwords` is imported inside the run functions), so loading
the plugin for `qaqnuz --help` stays cheap.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qaqnuz import CONSOLE_ROLES, Command, ConsoleUser, UsageError

if TYPE_CHECKING:
    from qaqnuz import CommandContext

PASSWORD_ENV = "QAQNUZ_CONSOLE_PASSWORD"  # noqa: S105 - the variable's name, not a password

EPILOG = (
    f"The password is read from --password-file (its first line), from --password-stdin (one line), from "
    f"${PASSWORD_ENV} (removed from the environment once read), or else prompted for twice when stdin is a "
    f"terminal. It is never accepted as an argument, and never shown."
)


# -- small helpers -----------------------------------------------------------------------------------------
def _with_config(parser: argparse.ArgumentParser) -> None:
    from qaqnuz import CommandContext

    CommandContext.config_option(parser)


def _shown(name: str) -> str:
    """A user-typed name quoted for a message, unless it is odd enough to be something else pasted by mistake."""
    return repr(name) if len(name) <= 128 and name.isprintable() else "(withheld)"


def _password_sources(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-file",
        metavar="PATH",
        help="read the password from the first line of this file (keep it private, and delete it afterwards)",
    )
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )
    return group


def _first_line(text: str) -> str:
    return text.partition("\n")[0].removesuffix("\r")


def _read_password(args: argparse.Namespace, who: str) -> str:
    """The new password from the first source given (see EPILOG), checked; `UsageError` if none or refused."""
    from qaqnuz_console.passwords import check_new_password

    from_env = os.environ.pop(PASSWORD_ENV, None)  # never left behind for anything this process starts
    if args.password_file:
        try:
            password = _first_line(Path(args.password_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--password-file: cannot read {args.password_file}: {type(exc).__name__}") from None
    elif args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: standard input was empty; pipe the password in, on one line")
        password = _first_line(line)
    elif from_env is not None:
        password = from_env
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for console user {who}: ")
        if getpass.getpass("the same password again: ") != password:
            raise UsageError("the two passwords differ; run the command again")
    else:
        raise UsageError(
            f"no password given: use --password-file PATH, --password-stdin or ${PASSWORD_ENV}, or run in a "
            "terminal to be prompted (or --oidc-only for a user who signs in only through OpenID Connect)"
        )
    check_new_password(password)
    return password


def _hash(password: str) -> str:
    from qaqnuz_console.passwords import hash_password

    return hash_password(password)


# -- console users add -----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    _with_config(parser)
    parser.add_argument("name", metavar="NAME", help="the user's sign-in name (letters, digits and . _ @ + -)")
    parser.add_argument(
        "--role",
        required=True,
        choices=CONSOLE_ROLES,
        help="admin (every brand), brand-admin (one brand: give --brand) or auditor (read-only)",
    )
    parser.add_argument("--brand", help="the one brand a brand-admin manages, or an auditor may see")
    group = _password_sources(parser)
    group.add_argument(
        "--oidc-only",
        action="store_true",
        help="store no password: the user signs in through OpenID Connect only",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="change an existing user's role, brand and password (this ends their sessions)",
    )


def add(args: argparse.Namespace, ctx: CommandContext) -> int:
    name, role, brand = args.name, args.role, args.brand

    async def precheck(admin: Any) -> None:  # an Admin: its `users` is the kernel's ConsoleUserService
        users = admin.users
        users.check(name, role, brand)
        if not args.replace and await users.get(name) is not None:
            raise UsageError(f"console user {name!r} exists already; add --replace to change it")

    # Refuse a bad name, role, brand or duplicate before asking for (and hashing) a password.
    ctx.with_admin(args, precheck)
    if args.oidc_only:
        os.environ.pop(PASSWORD_ENV, None)
        password_hash = None
    else:
        password_hash = _hash(_read_password(args, name))
    user: ConsoleUser = ctx.with_admin(
        args,
        lambda admin: admin.users.add(
            name, role=role, brand=brand, password_hash=password_hash, replace=args.replace, actor=None
        ),
    )
    scope = f"brand {user.brand}" if user.brand else "every brand"
    sign_in = "a password" if user.password_hash is not None else "OpenID Connect only"
    verb = "replaced" if args.replace else "added"
    ctx.err(f"{verb} console user {user.name}: role {user.role}, {scope}; signs in with {sign_in}")
    return 0


# -- console users list ----------------------------------------------------------------------------------
def list_arguments(parser: argparse.ArgumentParser) -> None:
    _with_config(parser)
    parser.add_argument("--json", action="store_true", help="JSON output (never a password hash)")


def list_users(args: argparse.Namespace, ctx: CommandContext) -> int:
    users = ctx.with_admin(args, lambda admin: admin.users.list())
    if args.json:
        ctx.out(json.dumps([u.public() for u in users]))
        return 0
    rows = [
        [u.name, u.role, u.brand or "-", "password" if u.password_hash is not None else "oidc", ctx.when(u.created_at)]
        for u in users
    ]
    ctx.out(ctx.table(rows, ["NAME", "ROLE", "BRAND", "SIGN-IN", "CREATED"]))
    return 0


# -- console users remove --------------------------------------------------------------------------------
def name_arguments(parser: argparse.ArgumentParser) -> None:
    _with_config(parser)
    parser.add_argument("name", metavar="NAME", help="the user's sign-in name")


def remove(args: argparse.Namespace, ctx: CommandContext) -> int:
    name = args.name
    if not ctx.with_admin(args, lambda admin: admin.users.remove(name, actor=None)):
        ctx.err(f"error: no console user {_shown(name)}; `qaqnuz console users list` shows who there is")
        return 1
    ctx.err(f"removed console user {name}")
    return 0


# -- console users passwd --------------------------------------------------------------------------------
def passwd_arguments(parser: argparse.ArgumentParser) -> None:
    name_arguments(parser)
    _password_sources(parser)


def passwd(args: argparse.Namespace, ctx: CommandContext) -> int:
    name = args.name
    if ctx.with_admin(args, lambda admin: admin.users.get(name)) is None:
        ctx.err(f"error: no console user {_shown(name)}; add one with `qaqnuz console users add`")
        return 1
    password_hash = _hash(_read_password(args, name))

    async def change(admin: Any) -> ConsoleUser | None:
        users = admin.users
        user: ConsoleUser | None = await users.get(name)
        if user is None:  # removed while the password was typed
            return None
        changed: ConsoleUser = await users.add(
            name, role=user.role, brand=user.brand, password_hash=password_hash, replace=True, actor=None
        )
        return changed

    user = ctx.with_admin(args, change)
    if user is None:
        ctx.err(f"error: no console user {_shown(name)}; it was removed meanwhile")
        return 1
    ctx.err(f"changed the password of console user {user.name}; their sessions have ended")
    return 0


COMMANDS: list[Command] = [
    Command("console", "admin console tools"),
    Command("console users", "who may sign in to the admin console"),
    Command(
        "console users add",
        "add a console user with a role (and, for a brand-admin, a brand) and a password or OpenID Connect",
        add,
        add_arguments,
        EPILOG,
    ),
    Command("console users list", "list console users (never their passwords)", list_users, list_arguments),
    Command("console users remove", "remove a console user; they can no longer sign in", remove, name_arguments),
    Command(
        "console users passwd",
        "set a console user's password (keeping role and brand); this ends their sessions",
        passwd,
        passwd_arguments,
        EPILOG,
    ),
]
