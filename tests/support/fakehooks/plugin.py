"""A third-party-style plugin implementing each of the newer hooks: a store (`jsonstore://path`), an audit
sink (`jsonlines`), a command (`qaqnuz fake hello`) and two web routes (`/fake`, with its own auth; and
`/fake-keyed`, which takes MCP keys). Loaded in tests as `QAQNUZ_PLUGINS=fakehooks.plugin`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from qaqnuz import (
    AuditSinkContext,
    Command,
    CommandContext,
    ConfigError,
    Provider,
    StoreContext,
    WebRoute,
    WebRouteContext,
    hookimpl,
)

from .store import JsonStore


class JsonStoreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.jsonstore]`."""

    note: str = ""


def build_store(settings: JsonStoreSettings, ctx: StoreContext) -> JsonStore:
    path = ctx.url.removeprefix("jsonstore://")
    if not path:
        raise ConfigError([f"[server] store: write jsonstore://path/to/file.json (got {ctx.url!r})"])
    return JsonStore(ctx.resolve(path))


class LinesSink:
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=True) + "\n")

    def close(self) -> None:
        pass


class LinesSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    file: str = "audit-copy.jsonl"


def build_sink(settings: LinesSettings, ctx: AuditSinkContext) -> LinesSink:
    return LinesSink(ctx.resolve(settings.file))


def hello_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--who", default="world", help="whom to greet")


def hello(args: argparse.Namespace, ctx: CommandContext) -> int:
    ctx.out(f"hello, {args.who}")
    ctx.err(f"plugins loaded: {len(ctx.plugins.infos)}")
    return 0


class RouteSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    password: str = "open-sesame"


def echo_app(settings: RouteSettings, ctx: WebRouteContext) -> Any:
    """An ASGI app that answers with what it was handed: headers, query string, the principal (if any)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = {k.decode(): v.decode() for k, v in scope.get("headers", ())}
        principal = scope.get("qaqnuz.principal")
        pending = await ctx.approvals.list()
        body = json.dumps(
            {
                "path": scope.get("path"),
                "authorization": headers.get("authorization"),
                "query": scope.get("query_string", b"").decode(),
                "own_auth": headers.get("x-route-password") == settings.password,
                "principal": None if principal is None else {"brand": principal.brand, "key_id": principal.key_id},
                "scope_keys": sorted(k for k in scope if k.startswith("qaqnuz.")),
                "pending": len(pending),
                "server": ctx.server_name,
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


@hookimpl
def qaqnuz_stores() -> list[Provider]:
    return [Provider("jsonstore", build_store, "Keys and approvals in one JSON file (tests).", JsonStoreSettings)]


@hookimpl
def qaqnuz_audit_sinks() -> list[Provider]:
    return [Provider("jsonlines", build_sink, "A plain copy of every audit record (tests).", LinesSettings)]


@hookimpl
def qaqnuz_commands() -> list[Command]:
    return [
        Command("fake", "commands of the fake plugin"),
        Command("fake hello", "say hello (a plugin's command)", hello, hello_arguments),
    ]


@hookimpl
def qaqnuz_web_routes() -> list[WebRoute]:
    return [
        WebRoute("fakeroute", "/fake", echo_app, "Echoes what it sees; its own password header.", RouteSettings),
        WebRoute("fakekeyed", "/fake-keyed", echo_app, "Echoes what it sees; takes MCP keys.", RouteSettings, True),
    ]
