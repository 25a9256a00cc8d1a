"""`qaqnuz demo`: the real command in a subprocess, set up once, reused on every re-run.

Only the demo, the stdio transport and the SQL pack are loaded (`QAQNUZ_DISABLE_PLUGIN_AUTOLOAD=1`), so
these tests use `--no-serve`; the printed key is proven with `qaqnuz config check` and a real stdio session
through `qaqnuz-mcp`. Serving over HTTP is tested in tests/integration/test_demo_http.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qaqnuz_demo import demo
from stdio_harness import stdio_session

BIN = Path(sys.executable).parent
QAQNUZ = str(BIN / "qaqnuz")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "shop" / "qaqnuz.toml"
KEY_RE = re.compile(r"qx_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}")
PORT = 18931
URL = f"http://127.0.0.1:{PORT}/mcp"
FILES = ("qaqnuz.toml", "qaqnuz.secret", "shop.db", "demo.key")
HINT = "pip install 'qaqnuz[demo]'"


def env_with(plugins: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1", QAQNUZ_PLUGINS=plugins)
    return env


ENV = env_with("demo,stdio,pack-sql")


def qaqnuz(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QAQNUZ, *args], env=env, capture_output=True, text=True, timeout=120)


def run_demo(folder: Path, *extra: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return qaqnuz("demo", "--dir", str(folder), "--port", str(PORT), *extra, env=env)


def json_blocks(text: str) -> list[dict]:
    """Every block from a line that is `{` to the next line that is `}`, parsed."""
    blocks, current = [], None
    for line in text.splitlines():
        if line == "{":
            current = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                blocks.append(json.loads("\n".join(current)))
                current = None
    return blocks


def stamps(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {name: ((folder / name).stat().st_mtime_ns, (folder / name).read_bytes()) for name in FILES}


@pytest.fixture(scope="module")
def twice(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], dict]:
    """`qaqnuz demo --no-serve` run twice on a fresh folder; the files' (mtime, bytes) after the first run."""
    folder = tmp_path_factory.mktemp("demo") / "qaqnuz-demo"
    first = run_demo(folder, "--no-serve")
    assert first.returncode == 0, first.stderr
    after_first = stamps(folder)
    second = run_demo(folder, "--no-serve")
    assert second.returncode == 0, second.stderr
    return folder, first, second, after_first


def test_first_run_creates_config_secret_database_and_key(twice):
    folder, first, _, _ = twice
    for name in FILES:
        assert (folder / name).is_file(), name
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "qaqnuz.secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "demo.key").stat().st_mode) == 0o600
    assert len((folder / "qaqnuz.secret").read_text().strip()) >= 32
    config = tomllib.loads((folder / "qaqnuz.toml").read_text())
    assert config["server"]["transport"] == "http"
    key = (folder / "demo.key").read_text().strip()
    assert KEY_RE.fullmatch(key)
    assert KEY_RE.findall(first.stdout) and set(KEY_RE.findall(first.stdout)) == {key}
    for name in FILES:
        assert f"created {folder / name}" in first.stderr


def test_the_printed_commands_are_ready_to_paste(twice):
    folder, first, _, _ = twice
    out = first.stdout
    key = (folder / "demo.key").read_text().strip()
    header = f"Authorization: Bearer {key}"
    assert f'claude mcp add --transport stdio qaqnuz -- npx -y mcp-remote {URL} --header "{header}"' in out
    blocks = json_blocks(out)
    assert len(blocks) == 2  # Claude Desktop, then Cursor
    for block in blocks:
        assert block == {
            "mcpServers": {"qaqnuz": {"command": "npx", "args": ["-y", "mcp-remote", URL, "--header", header]}}
        }
    [curl] = [line.strip() for line in out.splitlines() if line.strip().startswith("curl ")]
    words = shlex.split(curl)
    headers = [words[i + 1] for i, word in enumerate(words) if word == "-H"]
    assert URL in words
    assert header in headers
    assert "MCP-Protocol-Version: 2026-07-28" in headers and "Mcp-Method: tools/list" in headers
    body = json.loads(words[words.index("-d") + 1])
    assert body["method"] == "tools/list"
    meta = body["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert f"qaqnuz approvals approve APPROVAL_ID --config {folder / 'qaqnuz.toml'}" in out
    assert " INFO " not in out and "kernel ready" in first.stderr  # logs go to stderr, the result to stdout
    assert "qaqnuz-http" in first.stderr  # --no-serve without the http transport: a note, not an error


def test_second_run_reuses_the_same_key_and_rewrites_nothing(twice):
    folder, first, second, after_first = twice
    assert second.stdout == first.stdout
    assert stamps(folder) == after_first
    assert "created" not in second.stderr


@pytest.mark.anyio
async def test_the_printed_key_works(twice):
    folder, _, _, _ = twice
    checked = qaqnuz("config", "check", "--config", str(folder / "qaqnuz.toml"))
    assert checked.returncode == 0, checked.stderr
    assert "3 tools" in checked.stderr
    assert "LIKE pattern" not in checked.stderr  # the pack's warning about an argument joined into a pattern
    key = (folder / "demo.key").read_text().strip()
    env = {**ENV, "QAQNUZ_CONFIG": str(folder / "qaqnuz.toml"), "QAQNUZ_API_KEY": key}
    async with stdio_session(env) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        status = await client.call_tool("get_order_status", {"order_id": "ord_1001"})
        found = await client.call_tool("search_contacts", {"query": "acme"})
        wildcard = await client.call_tool("search_contacts", {"query": "%"})  # once every contact
    assert names == ["create_order", "get_order_status", "search_contacts"]
    assert status.is_error is False, status.structured_content
    assert status.structured_content["data"]["order_id"] == "ord_1001"
    assert found.structured_content["data"], found.structured_content
    assert wildcard.structured_content["ok"] is True and wildcard.structured_content["data"] == []


def test_without_the_demo_plugin_the_command_says_what_to_install(tmp_path):
    result = run_demo(tmp_path / "d", "--no-serve", env=env_with("stdio,pack-sql"))
    assert result.returncode == 2
    assert "qaqnuz-demo" in result.stderr and HINT in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "d").exists()


def test_a_missing_sql_pack_is_exit_2_naming_the_distribution(tmp_path):
    result = run_demo(tmp_path / "d", "--no-serve", env=env_with("demo,stdio"))
    assert result.returncode == 2
    assert "qaqnuz-pack-sql" in result.stderr and HINT in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "d").exists()  # nothing written


def test_serving_without_the_http_transport_is_exit_2_naming_it(tmp_path):
    result = run_demo(tmp_path / "d")
    assert result.returncode == 2
    assert "`http` transport (distribution qaqnuz-http)" in result.stderr and HINT in result.stderr
    assert "qaqnuz-pack-sql" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "d").exists()


def test_a_revoked_demo_key_is_reported_not_replaced(tmp_path):
    folder = tmp_path / "d"
    assert run_demo(folder, "--no-serve").returncode == 0
    key = (folder / "demo.key").read_text().strip()
    revoked = qaqnuz("keys", "revoke", key.split("_")[2], "--config", str(folder / "qaqnuz.toml"))
    assert revoked.returncode == 0, revoked.stderr
    again = run_demo(folder, "--no-serve")
    assert again.returncode == 2
    assert f"delete {folder / 'demo.key'}" in again.stderr
    assert (folder / "demo.key").read_text().strip() == key
    assert key not in again.stdout


def test_a_bad_port_is_a_usage_error(tmp_path):
    result = qaqnuz("demo", "--dir", str(tmp_path / "d"), "--port", "70000", "--no-serve")
    assert result.returncode == 2 and "--port" in result.stderr


def test_the_demo_config_is_the_example_shop():
    """The demo's brand and tools stay those of examples/shop/qaqnuz.toml; its state stays in its folder."""
    ours, example = tomllib.loads(demo.CONFIG), tomllib.loads(EXAMPLE.read_text())
    assert ours["brands"] == example["brands"]
    assert ours["packs"]["shop"]["tools"] == example["packs"]["shop"]["tools"]
    assert ours["plugins"] == example["plugins"]
    assert ours["server"]["transport"] == "http"
    assert "create" not in ours["packs"]["shop"]
    paths = [ours["server"][k] for k in ("store", "secret_file", "audit_file")] + [ours["packs"]["shop"]["dsn"]]
    assert all("/" not in p.removeprefix("sqlite:///") and ".." not in p for p in paths), paths
