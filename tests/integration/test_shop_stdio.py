"""The demo shop (examples/shop) through the full governed path over stdio (issue 3 acceptance).

A real `qaqnuz-mcp` subprocess serves the example config (copied into tmp_path, with the shop database made by
the generator) with only the stdio transport and the SQL pack loaded; the real `mcp` client drives it.
Approvals are decided with the real `qaqnuz` CLI, and the database is checked directly.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import sys
from pathlib import Path

import anyio
import mcp.types as mt
import pytest

import qaqnuz_pack_sql
from qaqnuz.testing import start_kernel
from qaqnuz_demo import shop as demo_shop
from stdio_harness import stdio_session

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "qaqnuz.toml"
QAQNUZ = Path(sys.executable).parent / "qaqnuz"
WAIT_S = 15
SCOPES = ["orders.read", "contacts.read", "orders.write"]
ORDER = {"contact_id": 12, "total": 99.5, "reference": "PO-approval-test"}


async def provision(folder: Path, *, sync: str = "5s") -> tuple[Path, str]:
    """The example config and its state in `folder`; returns (config path, a manager key)."""
    text = EXAMPLE.read_text()
    assert 'sync_interval = "5s"' in text
    cfg = folder / "qaqnuz.toml"
    cfg.write_text(text.replace('sync_interval = "5s"', f'sync_interval = "{sync}"', 1))
    state = folder / ".state"
    state.mkdir(mode=0o700)
    (state / "qaqnuz.secret").write_text(secrets.token_urlsafe(48))
    (state / "qaqnuz.secret").chmod(0o600)
    demo_shop.create(state / "shop.db")
    kernel = await start_kernel(cfg, plugins=[qaqnuz_pack_sql])
    try:
        key, _ = await kernel.keys.mint(brand="acme", role="manager", scopes=SCOPES, name="shop-stdio")
    finally:
        await kernel.aclose()
    return cfg, key


def env_for(cfg: Path, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(
        QAQNUZ_CONFIG=str(cfg),
        QAQNUZ_API_KEY=key,
        QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1",
        QAQNUZ_PLUGINS="stdio,pack-sql",
    )
    return env


def shop_rows(cfg: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(cfg.parent / ".state" / "shop.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def approve(cfg: Path, approval_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    proc = await anyio.run_process(
        [str(QAQNUZ), "approvals", "approve", approval_id, "--config", str(cfg)], env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()


def approval_id_of(result) -> str:
    answer = result.structured_content
    assert result.is_error is True and answer["error_class"] == "permission", answer
    assert answer["approval_id"].startswith("apr_")
    assert "requires approval" in answer["sanitized_error"]
    return answer["approval_id"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_demo_tools_and_create_order_approval(tmp_path, mode):
    cfg, key = await provision(tmp_path)
    orders_before = shop_rows(cfg, "SELECT count(*) FROM orders")[0][0]
    status_1001 = shop_rows(cfg, "SELECT status FROM orders WHERE id = 'ord_1001'")[0][0]
    async with stdio_session(env_for(cfg, key), mode=mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        status = await client.call_tool("get_order_status", {"order_id": "ord_1001"})
        contacts = await client.call_tool("search_contacts", {"query": "acme", "limit": 2})
        first = await client.call_tool("create_order", ORDER)
        again = await client.call_tool("create_order", ORDER)
        first_id = approval_id_of(first)
        assert approval_id_of(again) == first_id  # pending: the same request, no duplicate
        assert shop_rows(cfg, "SELECT count(*) FROM orders")[0][0] == orders_before  # nothing ran yet
        await approve(cfg, first_id)
        executed = await client.call_tool("create_order", ORDER)
        third = await client.call_tool("create_order", ORDER)

    assert names == ["create_order", "get_order_status", "search_contacts"]
    assert status.is_error is False
    assert json.loads(status.content[0].text) == {"order_id": "ord_1001", "status": status_1001}
    assert len(contacts.structured_content["data"]) == 2
    assert all(c["company"] == "Acme Corp" for c in contacts.structured_content["data"])

    assert executed.is_error is False, executed.structured_content
    assert executed.structured_content["data"] == {
        "rowcount": 1,
        "rows": [{"order_id": "ord_1301", "status": "pending"}],
    }
    third_id = approval_id_of(third)  # the approval was consumed: the next identical call asks again
    assert third_id != first_id
    assert shop_rows(cfg, "SELECT count(*) FROM orders")[0][0] == orders_before + 1  # exactly one order
    assert shop_rows(
        cfg, "SELECT id, contact_id, status, total, reference FROM orders WHERE reference = 'PO-approval-test'"
    ) == [("ord_1301", 12, "pending", 99.5, "PO-approval-test")]


async def test_editing_a_pack_tool_description_is_announced(tmp_path):
    cfg, key = await provision(tmp_path, sync="1s")
    heard = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, mt.ToolListChangedNotification):
            heard.set()

    old = 'description = "Look up the status of an order by its id."'
    new = 'description = "Look up an order\'s status (edited while running)."'
    async with stdio_session(env_for(cfg, key), mode="legacy", message_handler=on_message) as client:
        before = {t.name: t.description for t in (await client.list_tools()).tools}
        text = cfg.read_text()
        assert old in text
        tmp = cfg.with_name("qaqnuz.toml.tmp")
        tmp.write_text(text.replace(old, new, 1))
        os.replace(tmp, cfg)  # atomic: the server never reads half a file
        with anyio.fail_after(WAIT_S):
            await heard.wait()
        after = {t.name: t.description for t in (await client.list_tools()).tools}
        still = await client.call_tool("get_order_status", {"order_id": "ord_1002"})
    assert before["get_order_status"] == "[stable] Look up the status of an order by its id."
    assert after["get_order_status"] == "[stable] Look up an order's status (edited while running)."
    assert set(after) == set(before)
    assert still.structured_content["data"]["order_id"] == "ord_1002"  # the rebuilt pack serves calls
