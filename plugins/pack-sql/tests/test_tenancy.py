"""Two brands on one SQL pack: `:brand` binds the verified caller's brand, per-brand settings give a brand its
own database, `brands = [...]` hides a pack from everyone else. No key of one brand ever reads another's rows,
also as a property over keys, tools and arguments through the real governed path."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qaqnuz_pack_sql
from qaqnuz import ConfigError
from qaqnuz.testing import start_kernel, write_config

BRANDS = ("northwind", "southwind")
ROWS = {
    "northwind": [(1, "Printer on fire"), (2, "VPN down"), (3, "Invoice 7 wrong")],
    "southwind": [(11, "Password reset"), (12, "VPN down"), (13, "Laptop stolen")],
}

CONFIG = """\
[brands.northwind]
plan = "growth"
roles = {{ agent = ["tickets.read", "tickets.write"] }}
tools.list_tickets = {{ exposable = true }}
tools.get_ticket = {{ exposable = true }}
tools.search_tickets = {{ exposable = true }}
tools.open_ticket = {{ exposable = true }}
tools.whoami = {{ exposable = true }}

[brands.southwind]
plan = "growth"
roles = {{ agent = ["tickets.read", "tickets.write"] }}
tools.list_tickets = {{ exposable = true }}
tools.get_ticket = {{ exposable = true }}
tools.search_tickets = {{ exposable = true }}
tools.open_ticket = {{ exposable = true }}
tools.whoami = {{ exposable = true }}
{southwind_extra}

[brands.initech]
plan = "growth"
roles = {{ agent = ["tickets.read", "tickets.write"] }}
tools.list_tickets = {{ exposable = true }}
tools.get_ticket = {{ exposable = true }}

[packs.helpdesk]
type = "sql"
dsn = "sqlite:///helpdesk.db"
brands = ["northwind", "southwind"]

[[packs.helpdesk.tools]]
name = "list_tickets"
description = "The caller's tickets."
scope = "tickets.read"
sql = "SELECT id, tenant, subject FROM tickets WHERE tenant = :brand ORDER BY id"

[[packs.helpdesk.tools]]
name = "get_ticket"
description = "One ticket by id."
scope = "tickets.read"
one = true
sql = "SELECT id, tenant, subject FROM tickets WHERE id = :id AND tenant = :brand"
input = {{ id = {{ type = "integer" }} }}

[[packs.helpdesk.tools]]
name = "search_tickets"
description = "Tickets whose subject contains the text."
scope = "tickets.read"
sql = "SELECT id, tenant, subject FROM tickets WHERE tenant = :brand AND subject LIKE '%' || :text || '%' ORDER BY id"
input = {{ text = {{ type = "string", max_length = 40 }} }}

[[packs.helpdesk.tools]]
name = "open_ticket"
description = "Open a ticket for the caller's brand."
scope = "tickets.write"
side_effect = "write"
sql = "INSERT INTO tickets (tenant, subject, opened_by) VALUES (:brand, :subject, :key_id) RETURNING id, tenant"
input = {{ subject = {{ type = "string", min_length = 1, max_length = 80 }} }}

[[packs.helpdesk.tools]]
name = "whoami"
description = "The caller as the pack sees it."
scope = "tickets.read"
one = true
sql = "SELECT :brand AS brand, :key_id AS key_id, :key_name AS key_name, :role AS role"
"""


def make_db(path: Path, brands: tuple[str, ...] = BRANDS) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, subject TEXT NOT NULL, opened_by TEXT)"
        )
        for brand in brands:
            conn.executemany(
                "INSERT INTO tickets (id, tenant, subject) VALUES (?, ?, ?)", [(i, brand, s) for i, s in ROWS[brand]]
            )
        conn.commit()
    finally:
        conn.close()


def tenants(data: Any) -> set[str]:
    rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    return {row["tenant"] for row in rows if "tenant" in row}


async def keys_for(kernel: Any, brands: tuple[str, ...] = (*BRANDS, "initech"), per_brand: int = 2) -> dict[str, Any]:
    """(key → principal) for a few keys per brand."""
    out = {}
    for brand in brands:
        for i in range(per_brand):
            raw, _ = await kernel.keys.mint(
                brand=brand, role="agent", scopes=["tickets.read", "tickets.write"], name=f"{brand}-{i}"
            )
            out[raw] = await kernel.authenticate(raw)
    return out


@pytest.mark.anyio
async def test_brand_filter_keeps_each_brand_to_its_rows(tmp_path: Path) -> None:
    make_db(tmp_path / "helpdesk.db")
    kernel = await start_kernel(write_config(tmp_path, CONFIG.format(southwind_extra="")), plugins=[qaqnuz_pack_sql])
    try:
        keys = await keys_for(kernel)
        for principal in keys.values():
            host, brand = kernel.host, principal.brand
            listed = await host.call_tool(principal, "list_tickets", {}, transport="test")
            if brand == "initech":  # the pack is limited to the two brands: hidden like an unknown tool
                unknown = await host.call_tool(principal, "no_such_tool", {}, transport="test")
                assert listed.result == unknown.result and listed.text == unknown.text
                assert host.list_tools(principal).names == frozenset()
                continue
            assert [row["id"] for row in listed.result.data] == [i for i, _ in ROWS[brand]]
            other = ROWS["southwind" if brand == "northwind" else "northwind"][0][0]
            stolen = await host.call_tool(principal, "get_ticket", {"id": other}, transport="test")
            assert stolen.result.data is None
            found = await host.call_tool(principal, "search_tickets", {"text": "VPN"}, transport="test")
            assert tenants(found.result.data) == {brand}
            me = await host.call_tool(principal, "whoami", {}, transport="test")
            assert me.result.data == {
                "brand": brand,
                "key_id": principal.key_id,
                "key_name": principal.name,
                "role": "agent",
            }
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_writes_land_in_the_callers_brand_whatever_it_sends(tmp_path: Path) -> None:
    make_db(tmp_path / "helpdesk.db")
    kernel = await start_kernel(write_config(tmp_path, CONFIG.format(southwind_extra="")), plugins=[qaqnuz_pack_sql])
    try:
        keys = await keys_for(kernel, ("southwind",), per_brand=1)
        [principal] = keys.values()
        smuggled = await kernel.host.call_tool(
            principal, "open_ticket", {"subject": "hi", "brand": "northwind"}, transport="test"
        )
        assert smuggled.result.error_class == "validation"  # `brand` is no input: the schema refuses it
        opened = await kernel.host.call_tool(principal, "open_ticket", {"subject": "Desk broken"}, transport="test")
        assert opened.result.data["rows"][0]["tenant"] == "southwind"
    finally:
        await kernel.aclose()
    conn = sqlite3.connect(tmp_path / "helpdesk.db")
    try:
        assert conn.execute("SELECT tenant, opened_by FROM tickets WHERE subject = 'Desk broken'").fetchall() == [
            ("southwind", principal.key_id)
        ]
    finally:
        conn.close()


@pytest.mark.anyio
async def test_per_brand_settings_give_a_brand_its_own_database(tmp_path: Path) -> None:
    make_db(tmp_path / "helpdesk.db", ("northwind",))
    make_db(tmp_path / "southwind.db", ("southwind",))
    extra = '[brands.southwind.packs.helpdesk]\ndsn = "sqlite:///southwind.db"\n'
    kernel = await start_kernel(write_config(tmp_path, CONFIG.format(southwind_extra=extra)), plugins=[qaqnuz_pack_sql])
    try:
        assert set(kernel.runtime.brand_packs) == {("helpdesk", "southwind")}
        keys = await keys_for(kernel, BRANDS, per_brand=1)
        for principal in keys.values():
            listed = await kernel.host.call_tool(principal, "list_tickets", {}, transport="test")
            assert tenants(listed.result.data) == {principal.brand}
        southwind = next(p for p in keys.values() if p.brand == "southwind")
        await kernel.host.call_tool(southwind, "open_ticket", {"subject": "Own database"}, transport="test")
    finally:
        await kernel.aclose()
    for db, expected in (("helpdesk.db", []), ("southwind.db", [("southwind",)])):
        conn = sqlite3.connect(tmp_path / db)
        try:
            assert conn.execute("SELECT tenant FROM tickets WHERE subject = 'Own database'").fetchall() == expected
        finally:
            conn.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            '[brands.southwind.packs.helpdesk]\ncolour = "red"\n',
            "[brands.southwind.packs.helpdesk] colour: unknown key; valid keys: busy_timeout, dsn,",
        ),
        (
            '[brands.southwind.packs.helpdesk]\ndsn = "sqlite:///nowhere.db"\n',
            "[brands.southwind.packs.helpdesk] dsn: no SQLite database at",
        ),
        (
            "[brands.southwind.packs.helpdesk]\ntools = []\n",
            "[brands.southwind.packs.helpdesk] tools: cannot be set per brand; tools is defined once, in "
            "[packs.helpdesk]",
        ),
        (
            "[brands.southwind.packs.nothere]\nmax_rows = 5\n",
            "[brands.southwind.packs.nothere]: no pack named 'nothere' is configured; configured packs: helpdesk",
        ),
    ],
    ids=["unknown setting", "bad value", "tools", "unknown pack"],
)
async def test_a_bad_per_brand_setting_is_a_located_error(tmp_path: Path, override: str, expected: str) -> None:
    make_db(tmp_path / "helpdesk.db")
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, CONFIG.format(southwind_extra=override)), plugins=[qaqnuz_pack_sql])
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


@pytest.mark.anyio
async def test_settings_for_a_brand_the_pack_does_not_serve_are_an_error(tmp_path: Path) -> None:
    make_db(tmp_path / "helpdesk.db")
    text = CONFIG.format(southwind_extra="") + "\n[brands.initech.packs.helpdesk]\nmax_rows = 5\n"
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, text), plugins=[qaqnuz_pack_sql])
    assert caught.value.problems == [
        "[brands.initech.packs.helpdesk]: pack 'helpdesk' is limited to brands northwind, southwind; add 'initech' "
        "to [packs.helpdesk] brands or remove these settings"
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["brand", "key_id", "key_name", "role"])
async def test_an_input_named_like_the_caller_is_refused(tmp_path: Path, name: str) -> None:
    make_db(tmp_path / "helpdesk.db")
    text = CONFIG.format(southwind_extra="").replace(
        'input = { id = { type = "integer" } }',
        f'input = {{ id = {{ type = "integer" }}, {name} = {{ type = "string" }} }}',
    )
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, text), plugins=[qaqnuz_pack_sql])
    assert caught.value.problems == [
        f"[packs.helpdesk] tools[1] input.{name}: {name!r} is bound from the verified caller (:{name}), never taken "
        f"from input; rename the parameter"
    ]


# -- the property ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """One kernel for every example, in a loop of its own: (portal, kernel, key → principal)."""
    folder = tmp_path_factory.mktemp("tenancy")
    make_db(folder / "helpdesk.db", ("northwind",))
    make_db(folder / "southwind.db", ("southwind",))
    shared = folder / "helpdesk.db"
    conn = sqlite3.connect(shared)  # southwind's rows in the shared database too: only :brand keeps them apart
    conn.executemany(
        "INSERT INTO tickets (id, tenant, subject) VALUES (?, ?, ?)",
        [(i + 100, "southwind", s) for i, s in ROWS["southwind"]],
    )
    conn.commit()
    conn.close()
    extra = "[brands.southwind.packs.helpdesk]\nmax_rows = 50\n"  # its own instance, same database
    with anyio.from_thread.start_blocking_portal() as portal:
        kernel = portal.call(
            lambda: start_kernel(write_config(folder, CONFIG.format(southwind_extra=extra)), plugins=[qaqnuz_pack_sql])
        )
        keys = portal.call(keys_for, kernel)
        try:
            yield portal, kernel, keys
        finally:
            portal.call(kernel.aclose)


CALLS = st.one_of(
    st.tuples(st.just("list_tickets"), st.just({})),
    st.tuples(
        st.just("get_ticket"), st.fixed_dictionaries({"id": st.sampled_from([1, 2, 3, 11, 12, 13, 101, 111, 999])})
    ),
    st.tuples(st.just("search_tickets"), st.fixed_dictionaries({"text": st.sampled_from(["", "VPN", "%", "'", "o"])})),
    st.tuples(st.just("whoami"), st.just({})),
    st.tuples(st.just("get_ticket"), st.fixed_dictionaries({"id": st.just(1), "brand": st.sampled_from(BRANDS)})),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key_index=st.integers(min_value=0, max_value=5), call=CALLS)
def test_no_key_ever_reads_another_brands_rows(
    served: tuple[Any, Any, dict[str, Any]], key_index: int, call: tuple[str, dict[str, Any]]
) -> None:
    portal, kernel, keys = served
    principal = list(keys.values())[key_index]
    tool, arguments = call
    outcome = portal.call(lambda: kernel.host.call_tool(principal, tool, arguments, transport="property"))
    if principal.brand == "initech":
        assert outcome.result.error_class == "permission"
        return
    if outcome.is_error:
        assert outcome.result.error_class == "validation"  # only the smuggled `brand` argument is refused
        assert "brand" in arguments
        return
    data = outcome.result.data
    assert tenants(data) <= {principal.brand}
    if tool == "whoami":
        assert data["brand"] == principal.brand and data["key_id"] == principal.key_id


# -- config check's warning ----------------------------------------------------------------------------------
UNSCOPED = """
[[packs.helpdesk.tools]]
name = "all_tickets"
description = "Every ticket (no brand filter)."
scope = "tickets.read"
sql = "SELECT id, tenant, subject FROM tickets ORDER BY id"
"""


def warning_config(extra: str = "", pack_extra: str = "") -> str:
    text = CONFIG.format(southwind_extra=extra) + UNSCOPED
    text = text.replace('brands = ["northwind", "southwind"]', 'brands = ["northwind", "southwind"]\n' + pack_extra)
    for brand in BRANDS:
        text = text.replace(f"[brands.{brand}]\n", f"[brands.{brand}]\ntools.all_tickets = {{ exposable = true }}\n")
    return text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("extra", "pack_extra", "warned"),
    [
        ("", "", True),
        ("", "shared = true", False),
        ('[brands.southwind.packs.helpdesk]\ndsn = "sqlite:///southwind.db"\n', "", False),
        ("[brands.southwind.packs.helpdesk]\nmax_rows = 10\n", "", False),
    ],
    ids=["shared settings, no :brand", "shared = true", "own database", "own instance"],
)
async def test_tools_brands_share_without_binding_the_brand_are_warned_about(tmp_path, extra, pack_extra, warned):
    make_db(tmp_path / "helpdesk.db")
    make_db(tmp_path / "southwind.db", ("southwind",))
    kernel = await start_kernel(write_config(tmp_path, warning_config(extra, pack_extra)), plugins=[qaqnuz_pack_sql])
    try:
        warnings = kernel.warnings()
    finally:
        await kernel.aclose()
    expected = (
        "[packs.helpdesk] tool 'all_tickets': brands northwind, southwind expose it through the same settings and "
        "it does not bind the caller's brand"
    )
    assert [w.startswith(expected) for w in warnings] == ([True] if warned else [])


def test_config_check_prints_the_warning_and_still_passes(tmp_path):
    make_db(tmp_path / "helpdesk.db")
    cfg = write_config(tmp_path, warning_config())
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1", QAQNUZ_PLUGINS="pack-sql,stdio")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "qaqnuz"), "config", "check", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "warning: [packs.helpdesk] tool 'all_tickets': brands northwind, southwind" in result.stderr
    assert "set shared = true in [packs.helpdesk] if the data is meant for everyone" in result.stderr
    assert "1 warning(s)" in result.stderr


# -- a reload that moves brands between instances -----------------------------------------------------------
RELOAD_BRANDS = """
[brands.northwind]
plan = "growth"
roles = { agent = ["t.read"] }
tools.rows = { exposable = true }

[brands.southwind]
plan = "growth"
roles = { agent = ["t.read"] }
tools.rows = { exposable = true }
"""
RELOAD_TOOL = """
[[packs.shop.tools]]
name = "rows"
description = "Every row."
scope = "t.read"
sql = "SELECT tenant FROM t"
"""
BEFORE = RELOAD_BRANDS + '[packs.shop]\ntype = "sql"\ndsn = "sqlite:///sw.db"\nbrands = ["southwind"]\n' + RELOAD_TOOL
AFTER = (
    RELOAD_BRANDS
    + '[packs.shop]\ntype = "sql"\ndsn = "sqlite:///nw.db"\nbrands = ["southwind", "northwind"]\n\n'
    + '[brands.southwind.packs.shop]\ndsn = "sqlite:///sw.db"\n'
    + RELOAD_TOOL
)
DUPLICATE = """
[packs.other]
type = "sql"
dsn = "sqlite:///nw.db"

[[packs.other.tools]]
name = "rows"
description = "The same name again."
scope = "t.read"
sql = "SELECT 1 AS one"
"""


@pytest.mark.anyio
@pytest.mark.parametrize("broken", [False, True], ids=["applied", "rejected (a duplicate tool)"])
async def test_a_reload_never_runs_one_brands_old_handler_for_another(tmp_path: Path, broken: bool) -> None:
    for tenant in ("sw", "nw"):
        conn = sqlite3.connect(tmp_path / f"{tenant}.db")
        conn.execute("CREATE TABLE t (tenant TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (tenant,))
        conn.commit()
        conn.close()
    path = write_config(tmp_path, BEFORE)
    kernel = await start_kernel(path, plugins=[qaqnuz_pack_sql])
    try:
        keys = {}
        for brand in BRANDS:
            raw, _ = await kernel.keys.mint(brand=brand, role="agent", scopes=["t.read"], name=brand)
            keys[brand] = await kernel.authenticate(raw)

        async def rows(brand: str) -> Any:
            outcome = await kernel.host.call_tool(keys[brand], "rows", {}, transport="t")
            return outcome.result.error_class if outcome.is_error else outcome.result.data

        assert await rows("northwind") == "permission"
        path.write_text(AFTER + (DUPLICATE if broken else ""))
        assert await kernel.maybe_reload() is (not broken)
        expected = {"northwind": "permission", "southwind": [{"tenant": "sw"}]}
        if not broken:
            expected["northwind"] = [{"tenant": "nw"}]
        assert {b: await rows(b) for b in BRANDS} == expected  # right after the swap, before any sync
        await kernel.tick()
        assert {b: await rows(b) for b in BRANDS} == expected
    finally:
        await kernel.aclose()
