"""The `[packs.<name>]` table of an `http` pack, as msgspec structs (unknown keys are located errors)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from qaqnuz import SecretRef, ToolConfig

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[packs.<name>.auth]`: the server-held credential every request of the pack carries."""

    type: Literal["bearer", "header", "basic"]
    token: SecretRef | None = None  # bearer
    header: str | None = None  # header: the header's name, e.g. "X-Api-Key"
    value: SecretRef | None = None  # header: its value
    username: str | None = None  # basic
    password: SecretRef | None = None  # basic


class HttpToolConfig(ToolConfig, forbid_unknown_fields=True, kw_only=True):
    """One `[[packs.<name>.tools]]` entry: the shared tool fields plus the request to send."""

    path: str
    method: Method = "GET"
    query: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: Any = None


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[packs.<name>] type = "http"`."""

    base_url: str
    variables: dict[str, str] = msgspec.field(default_factory=dict)
    auth: AuthConfig | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: str = "10s"
    connect_timeout: str | None = None
    max_response_bytes: int = 1024 * 1024
    allow_private: bool = False
    retries: int = 1
    max_retry_wait: str = "5s"
    max_connections: int = 10
    tools: list[HttpToolConfig] = msgspec.field(default_factory=list)
