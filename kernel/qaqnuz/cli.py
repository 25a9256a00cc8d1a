"""The `qaqnuz` command.

A command's result (a new key, a table, JSON, the demo's key and client settings) goes to stdout; diagnostics
and logs go to stderr.
Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from qaqnuz.config import Config, default_config_path, load_config, parse_duration
from qaqnuz.demo import DEFAULT_DIR as DEMO_DIR
from qaqnuz.demo import DEFAULT_HOST as DEMO_HOST
from qaqnuz.demo import DEFAULT_PORT as DEMO_PORT
from qaqnuz.errors import ConfigError, QaqnuzError, StoreError, UsageError

log = logging.getLogger("qaqnuz.cli")
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class RedactKeys(logging.Filter):
    """Defence in depth: anything shaped like an API key is masked before a log line is written."""

    _pattern = re.compile(r"\b([a-z][a-z0-9]{0,15}_(?:[a-z0-9]{1,16}_)?)([0-9A-Za-z]{12})_[0-9A-Za-z]{49}\b")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._pattern.sub(r"\1\2_[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactKeys())
    root = logging.getLogger("qaqnuz")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config if getattr(args, "config", None) else default_config_path())


def _kernel(config: Config) -> Any:
    from qaqnuz.kernel import Kernel

    return Kernel(config)


def _ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value)) if value else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


# -- init --------------------------------------------------------------------------------------------
INIT_CONFIG = """\
# qaqnuz configuration. Every option is documented in the README ("Configuration").
[server]
name = "qaqnuz-mcp"
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
audit_file = "qaqnuz-audit.jsonl"

[plugins]
limiter = "memory"
approver = "queue"

# A brand is a tenant. Keys belong to one brand and one role; a role's list is its scope ceiling.
# [brands.acme]
# plan = "growth"
# roles = { viewer = ["orders.read"], manager = ["orders.read", "orders.write"] }
# tools.get_order_status = { exposable = true }
# tools.create_order = { exposable = true, approval = true }
"""


def cmd_init(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    config_path, secret_path = folder / "qaqnuz.toml", folder / "qaqnuz.secret"
    existing = [p for p in (config_path, secret_path) if p.exists()]
    if existing and not args.force:
        raise UsageError(f"{', '.join(map(str, existing))} already exist; pass --force to overwrite")
    config_path.write_text(INIT_CONFIG, encoding="utf-8")
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    os.chmod(secret_path, 0o600)
    _err(f"wrote {config_path} and {secret_path} (mode 0600). Next: add a brand, then `qaqnuz keys create`.")
    return EXIT_OK


# -- serve -------------------------------------------------------------------------------------------
def _run_server(main: Any) -> None:
    """Run a serving coroutine on uvloop where it is installed (it comes with `qaqnuz[http]`)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        anyio.run(main)
    else:
        anyio.run(main, backend_options={"use_uvloop": True})


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    setup_logging(config.server.log_level)
    from qaqnuz.kernel import Kernel

    kernel = Kernel(config)
    name = args.transport or config.server.transport
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    transport = kernel.transport(name, overrides)

    async def run() -> None:
        try:
            await kernel.start()
            await transport.serve(kernel)
        finally:
            with anyio.CancelScope(shield=True):
                await kernel.aclose()

    _run_server(run)
    return EXIT_OK


# -- demo --------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Set up the demo folder once, print the key and client settings (the result: stdout), serve HTTP."""
    from qaqnuz import demo
    from qaqnuz.kernel import Kernel
    from qaqnuz.plugins import Plugins

    serve = not args.no_serve
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: use a port between 1 and 65535")
    plugins = Plugins()
    needs = demo.missing(plugins, serve=serve)
    if needs:
        raise UsageError(demo.describe_missing(needs))
    folder = Path(args.dir)
    created = demo.prepare(folder)
    config = load_config(folder / demo.CONFIG_FILE)
    setup_logging(config.server.log_level)
    kernel = Kernel(config, plugins=plugins)  # loads the sql pack, which generates shop.db when it is missing
    transport = kernel.transport("http", {"host": args.host, "port": args.port}) if serve else None

    async def run() -> None:
        try:
            await kernel.start()
            key, minted = await demo.demo_key(kernel, folder)
            for name in [*created, *([demo.KEY_FILE] if minted else [])]:
                _err(f"created {folder / name}")
            if not serve and demo.missing(plugins, serve=True):
                _err(f"note: serving needs the http transport (distribution qaqnuz-http): {demo.INSTALL_HINT}")
            _out(demo.instructions(folder=folder, key=key, host=args.host, port=args.port, serving=serve))
            if transport is not None:
                await transport.serve(kernel)
        finally:
            with anyio.CancelScope(shield=True):
                await kernel.aclose()

    _run_server(run)
    return EXIT_OK


# -- keys --------------------------------------------------------------------------------------------
def cmd_keys_create(args: argparse.Namespace) -> int:
    kernel = _kernel(_config(args))
    try:
        expires_in = parse_duration(args.expires_in) if args.expires_in else None
    except ValueError as exc:
        raise UsageError(f"--expires-in: {exc}") from None
    raw, record = kernel.mint_key(
        brand=args.brand, scopes=args.scope, name=args.name, role=args.role, expires_in=expires_in
    )
    kernel.store.close()
    if args.json:
        _out(json.dumps({"key": raw, **record.public()}))
    else:
        _out(raw)
        _err(f"key {record.key_id} for brand {record.brand} (role {record.role}); shown once, store it now")
    return EXIT_OK


def _audit(config: Config, **fields: Any) -> None:
    """One audit line from the CLI, chained onto the server's log (writers share the file under a lock)."""
    from qaqnuz.audit import AuditLog

    audit = AuditLog(config.resolve(config.server.audit_file))
    try:
        audit.write({"time": time.time(), **fields})
    finally:
        audit.close()


def _store(args: argparse.Namespace) -> Any:
    from qaqnuz.store import Store

    return Store(_config(args).store_path())


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    records = store.list_keys(args.brand)
    now = time.time()
    if args.json:
        _out(json.dumps([{**r.public(), "active": r.active(now)} for r in records]))
        return EXIT_OK
    rows = [
        [
            r.key_id,
            r.name,
            r.brand,
            r.role,
            ",".join(r.scopes) or "-",
            "revoked" if r.revoked_at else ("expired" if not r.active(now) else "active"),
            _ts(r.expires_at),
            _ts(r.last_used_at),
        ]
        for r in records
    ]
    _out(_table(rows, ["KEY_ID", "NAME", "BRAND", "ROLE", "SCOPES", "STATE", "EXPIRES", "LAST_USED"]))
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    config = _config(args)
    from qaqnuz.store import Store

    store = Store(config.store_path())
    record = store.get_key(args.key_id)
    if record is None:
        raise UsageError(f"no key with id {args.key_id!r}; list them with `qaqnuz keys list`")
    if not store.revoke_key(args.key_id, time.time()):
        _err(f"key {args.key_id} was already revoked")
        return EXIT_OK
    _audit(config, step="key", outcome="revoked", brand=record.brand, key_id=record.key_id)
    _err(f"revoked key {args.key_id} ({record.name}, brand {record.brand}); it fails from the next call on")
    return EXIT_OK


# -- approvals ---------------------------------------------------------------------------------------
def cmd_approvals_list(args: argparse.Namespace) -> int:
    store = _store(args)
    now = time.time()
    records = store.list_approvals(args.brand)
    if args.json:
        _out(json.dumps([_approval_dict(r, now) for r in records]))
        return EXIT_OK
    rows = [
        [r.approval_id, r.brand, r.key_id, r.tool, _effective(r, now), _ts(r.created_at), _ts(r.expires_at)]
        for r in records
    ]
    _out(_table(rows, ["APPROVAL_ID", "BRAND", "KEY_ID", "TOOL", "STATUS", "REQUESTED", "EXPIRES"]))
    return EXIT_OK


def _effective(record: Any, now: float) -> str:
    if record.status == "pending" and record.expires_at <= now:
        return "expired"
    return str(record.status)


def _approval_dict(record: Any, now: float) -> dict[str, Any]:
    return {
        "approval_id": record.approval_id,
        "brand": record.brand,
        "key_id": record.key_id,
        "tool": record.tool,
        "args_hash": record.args_hash,
        "status": _effective(record, now),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "decided_at": record.decided_at,
        "decided_by": record.decided_by,
        "reason": record.reason,
        "valid_until": record.valid_until,
    }


def cmd_approvals_decide(args: argparse.Namespace) -> int:
    from qaqnuz.store import ApprovalNotFound, ApprovalNotPending, Store

    config = _config(args)
    store = Store(config.store_path())
    approve = args.command == "approve"
    existing = store.get_approval(args.approval_id)
    if existing is None or (args.brand is not None and existing.brand != args.brand):
        raise UsageError(f"no approval {args.approval_id!r}{f' for brand {args.brand}' if args.brand else ''}")
    by = args.by or f"cli:{_user()}"
    try:
        record = store.decide_approval(
            args.approval_id,
            approve=approve,
            by=by,
            reason=args.reason,
            now=time.time(),
            valid_for=parse_duration(config.approvals.valid_for),
        )
    except ApprovalNotFound:
        raise UsageError(f"no approval {args.approval_id!r}") from None
    except ApprovalNotPending as exc:
        raise UsageError(f"approval {args.approval_id} is {exc.status}, not pending; nothing to decide") from None
    _audit(
        config,
        step="approval",
        outcome=str(record.status),
        brand=record.brand,
        key_id=record.key_id,
        tool=record.tool,
        args_hash=record.args_hash,
        approval_id=record.approval_id,
        decided_by=by,
        reason=args.reason,
    )
    verb = "approved" if approve else "denied"
    extra = f"; valid until {_ts(record.valid_until)}" if approve else ""
    _err(f"{verb} {record.approval_id} ({record.tool}, brand {record.brand}) as {by}{extra}")
    return EXIT_OK


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


# -- tools, plugins, config, audit -------------------------------------------------------------------
def cmd_tools_list(args: argparse.Namespace) -> int:
    config = _config(args)
    setup_logging("warning")
    kernel = _kernel(config)
    if args.brand is not None and args.brand not in config.brands:
        raise UsageError(
            f"unknown brand {args.brand!r}; configured brands: {', '.join(sorted(config.brands)) or 'none'}"
        )

    async def load() -> None:
        try:
            await kernel.start()
        finally:
            await kernel.aclose()

    anyio.run(load)
    from qaqnuz.explain import explain_brand

    brands = [args.brand] if args.brand else sorted(config.brands)
    rows = [row for brand in brands for row in explain_brand(kernel.runtime, kernel.registry.snapshot, brand)]
    if args.json:
        _out(json.dumps(rows))
        return EXIT_OK
    table = [
        [r["brand"], r["tool"], r["scope"], r["side_effect"], "yes" if r["visible"] else "no", r["why"]] for r in rows
    ]
    _out(_table(table, ["BRAND", "TOOL", "SCOPE", "SIDE_EFFECT", "VISIBLE", "WHY"]))
    return EXIT_OK


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from qaqnuz.plugins import Plugins

    plugins = Plugins()
    provided: dict[str, list[str]] = {}
    for kind, table in plugins.providers.items():
        for name, reg in table.items():
            provided.setdefault(reg.plugin.name, []).append(f"{kind}:{name}")
    items = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "hooks": list(i.hooks),
            "providers": provided.get(i.name, []),
            "builtin": i.builtin,
        }
        for i in plugins.infos
    ]
    if args.json:
        _out(json.dumps(items))
        return EXIT_OK
    rows = [[i["name"], i["distribution"], i["version"], ",".join(i["providers"]), ",".join(i["hooks"])] for i in items]
    _out(_table(rows, ["NAME", "DISTRIBUTION", "VERSION", "PROVIDES", "HOOKS"]))
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args)
    setup_logging("warning")
    kernel = _kernel(config)

    async def check() -> None:
        try:
            await kernel.start()
        finally:
            await kernel.aclose()

    anyio.run(check)
    _err(
        f"{config.path}: OK ({len(config.brands)} brands, {len(config.packs)} packs, "
        f"{len(kernel.registry.snapshot.tools)} tools)"
    )
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from qaqnuz.audit import verify

    if args.file:
        path = args.file
    else:
        config = _config(args)
        path = config.resolve(config.server.audit_file)
    count, problems = verify(path)
    for problem in problems:
        _err(f"{path}: {problem}")
    if problems:
        _err(f"{path}: {len(problems)} problem(s) in {count} lines; the log was altered")
        return EXIT_RUNTIME
    _err(f"{path}: OK, {count} lines, hash chain intact")
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qaqnuz",
        description="A governed MCP server: authenticated, authorised, rate-limited and approved tool calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="config file (default: $QAQNUZ_CONFIG, then ./qaqnuz.toml)")
        return p

    p = sub.add_parser("init", help="write a config and a fresh server secret (0600)")
    p.add_argument("--dir", default=".", help="folder to write qaqnuz.toml and qaqnuz.secret into (default: .)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_init)

    p = with_config(sub.add_parser("serve", help="serve MCP over a transport until stopped"))
    p.add_argument("--transport", help="stdio or http (default: [server] transport)")
    p.add_argument("--host", help="bind address for network transports (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for network transports")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        help="set up a demo brand, shop database and key once, print how to connect, serve HTTP",
        epilog="The key and the client settings are the command's result and go to stdout; logs go to stderr.",
    )
    p.add_argument("--dir", default=DEMO_DIR, help=f"demo folder, created once and reused (default: ./{DEMO_DIR})")
    p.add_argument("--host", default=DEMO_HOST, help=f"address the HTTP transport binds (default: {DEMO_HOST})")
    p.add_argument("--port", type=int, default=DEMO_PORT, help=f"port the HTTP transport binds (default: {DEMO_PORT})")
    p.add_argument("--no-serve", action="store_true", help="set up and print, but do not start the server")
    p.set_defaults(func=cmd_demo)

    keys = sub.add_parser("keys", help="mint, list and revoke API keys").add_subparsers(dest="command", required=True)
    p = with_config(keys.add_parser("create", help="mint a key; prints it once on stdout"))
    p.add_argument("--brand", required=True, help="the brand the key belongs to")
    p.add_argument("--role", default="viewer", help="role on the key (default: viewer)")
    p.add_argument("--scope", action="append", required=True, help="a scope to grant; repeat for more")
    p.add_argument("--name", required=True, help="who or what uses the key")
    p.add_argument("--expires-in", help="lifetime such as 30d or 12h (default and maximum: [server] max_key_lifetime)")
    p.add_argument("--json", action="store_true", help="print the key and its record as JSON")
    p.set_defaults(func=cmd_keys_create)
    p = with_config(keys.add_parser("list", help="list keys (never secrets), with last use"))
    p.add_argument("--brand", help="only this brand")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_keys_list)
    p = with_config(keys.add_parser("revoke", help="revoke a key; it fails from the next call on"))
    p.add_argument("key_id", metavar="KEY_ID", help="the key id (the public part shown by `keys list`)")
    p.set_defaults(func=cmd_keys_revoke)

    appr = sub.add_parser("approvals", help="list and decide approval requests").add_subparsers(
        dest="command", required=True
    )
    p = with_config(appr.add_parser("list", help="pending and approved-but-unused requests"))
    p.add_argument("--brand", help="only this brand")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_approvals_list)
    for verb in ("approve", "deny"):
        p = with_config(appr.add_parser(verb, help=f"{verb} a pending request"))
        p.add_argument(
            "approval_id", metavar="ID", help="the approval id (apr_...) from `approvals list` or the caller's error"
        )
        p.add_argument("--reason", help="why (recorded in the audit log)")
        p.add_argument("--brand", help="refuse unless the request belongs to this brand")
        p.add_argument("--by", help="who decided (default: cli:<user>)")
        p.set_defaults(func=cmd_approvals_decide)

    tools = sub.add_parser("tools", help="inspect the tool catalogue").add_subparsers(dest="command", required=True)
    p = with_config(tools.add_parser("list", help="every tool, and why it is or is not visible per brand"))
    p.add_argument("--brand", help="only this brand")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_tools_list)

    plugs = sub.add_parser("plugins", help="installed plugins").add_subparsers(dest="command", required=True)
    p = plugs.add_parser("list", help="name, distribution, version, providers and hooks of each plugin")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_plugins_list)

    conf = sub.add_parser("config", help="validate configuration").add_subparsers(dest="command", required=True)
    p = with_config(conf.add_parser("check", help="validate config, reporting every error with its location"))
    p.set_defaults(func=cmd_config_check)

    audit = sub.add_parser("audit", help="audit log tools").add_subparsers(dest="command", required=True)
    p = with_config(audit.add_parser("verify", help="check the audit log's hash chain"))
    p.add_argument("--file", help="audit file (default: [server] audit_file from config)")
    p.set_defaults(func=cmd_audit_verify)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Show each subcommand's one-line help as its description in its own `--help`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                sub = action.choices[choice.dest]
                sub.description = sub.description or choice.help
                _describe(sub)


def _version() -> str:
    from qaqnuz import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger("qaqnuz").handlers:
        setup_logging("info")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            _err(f"config error: {problem}")
        return EXIT_USAGE
    except UsageError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except (StoreError, QaqnuzError) as exc:
        _err(f"error: {exc}")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except Exception as exc:  # never a traceback: its text could carry a secret
        _err(f"error: unexpected failure ({type(exc).__name__}); see the log lines above, and please report it")
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
