"""Configs using the testkit pack, and environments for `qaqnuz-mcp` subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

SUPPORT = Path(__file__).parent

BASE_CONFIG = """\
[server]
store = "sqlite:///qaqnuz.db"
secret_file = "qaqnuz.secret"
sync_interval = "{sync}"

[plans.growth]
limits = {{ per_key = "{per_key}", per_brand = "{per_brand}" }}

[brands.acme]
plan = "growth"
roles = {{ viewer = ["orders.read"], manager = ["orders.read", "orders.write"] }}
tools.echo = {{ exposable = true }}
tools.beta_echo = {{ exposable = true }}
tools.secret_dump = {{ exposable = true }}
tools.disabled_tool = {{ exposable = true, enabled = false }}
tools.write_tool = {{ exposable = true }}
tools.boom = {{ exposable = true }}
tools.flaky_upstream = {{ exposable = true }}
tools.big = {{ exposable = true }}
tools.slow = {{ exposable = true }}
tools.create_order = {{ exposable = true, approval = true }}

[brands.globex]
plan = "growth"
roles = {{ viewer = ["orders.read"], manager = ["orders.read", "orders.write"] }}
tools.echo = {{ exposable = true }}
tools.create_order = {{ exposable = true, approval = true }}

[brands.tiny]
plan = "{tiny_plan}"
roles = {{ viewer = ["orders.read"] }}
tools.echo = {{ exposable = true }}

[approvals]
pending_ttl = "{pending_ttl}"
valid_for = "{valid_for}"

[packs.kit]
type = "testkit"
shared = true
description_file = "echo-description.txt"
"""


def kit_config(
    sync: str = "5s",
    per_key: str = "60/60s",
    per_brand: str = "300/60s",
    *,
    tiny_plan: str = "starter",
    pending_ttl: str = "24h",
    valid_for: str = "1h",
) -> str:
    """The testkit config. `tiny_plan` lets a test mint a key for `tiny` under an entitled plan first."""
    return BASE_CONFIG.format(
        sync=sync,
        per_key=per_key,
        per_brand=per_brand,
        tiny_plan=tiny_plan,
        pending_ttl=pending_ttl,
        valid_for=valid_for,
    )


def server_env(config: Path, key: str | None) -> dict[str, str]:
    """Environment for a `qaqnuz-mcp` subprocess using the testkit pack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(
        QAQNUZ_CONFIG=str(config),
        QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1",
        QAQNUZ_PLUGINS="stdio,testkit_pack.plugin",
        PYTHONPATH=os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    if key is not None:
        env["QAQNUZ_API_KEY"] = key
    return env
