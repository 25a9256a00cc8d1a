"""Checklist 47: no secret, no caller key and no query-string value appears in any log output."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from httppack_kit import config

import qaqnuz_pack_http
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio

TOKEN = "tok-CANARY-5f1d0c9e77"
QUERY_VALUE = "qval-CANARY-31337"
PATH_VALUE = "pathval-CANARY-4242"


def pack(base_url: str) -> str:
    return f"""\
[packs.api]
type = "http"
base_url = "{base_url}/v1"
allow_private = true
timeout = "500ms"
max_response_bytes = 4096
auth = {{ type = "bearer", token = {{ env = "QZ_LOG_TOKEN" }} }}

[[packs.api.tools]]
name = "lookup"
description = "Look up."
scope = "api.read"
path = "/{{{{ where }}}}/{{{{ code }}}}"
query = {{ q = "{{{{ q }}}}" }}
headers = {{ X-Q = "{{{{ q }}}}" }}
input = {{ where = {{ type = "string" }}, code = {{ type = "integer" }}, q = {{ type = "string" }} }}
"""


CALLS = [  # success, 404, 500, oversized, timeout
    {"where": PATH_VALUE, "code": 1, "q": QUERY_VALUE},
    {"where": "status", "code": 404, "q": QUERY_VALUE},
    {"where": "status", "code": 500, "q": QUERY_VALUE},
    {"where": "huge", "code": 1, "q": QUERY_VALUE},
    {"where": "slow", "code": 1, "q": QUERY_VALUE},
]


def assert_clean(text: str, key: str) -> None:
    for canary in (TOKEN, QUERY_VALUE, PATH_VALUE, key):
        assert canary not in text
    assert "[redacted]" not in text  # nothing even tried to log the token (the kernel would have masked it)
    assert "?q=" not in text and "127.0.0.1" not in text


async def test_caplog_at_debug_finds_no_secret_or_query_value(
    qaqnuz_kernel, qaqnuz_client, upstream, monkeypatch, caplog
):
    monkeypatch.setenv("QZ_LOG_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    kernel = await qaqnuz_kernel(config(pack(upstream.url), ["lookup"]), plugins=[qaqnuz_pack_http])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
    async with qaqnuz_client(kernel, key) as client:
        results = [await client.call_tool("lookup", args) for args in CALLS]
    assert [r.structured_content.get("error_class") for r in results] == [
        None,
        "terminal",
        "dependency",
        "terminal",
        "dependency",
    ]
    assert upstream.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"  # it was really sent
    text = caplog.text
    assert "GET lookup -> 200" in text and "GET lookup -> 404" in text  # the pack does log: method, tool, status
    assert_clean(text, key)


async def test_stdio_server_stderr_finds_no_secret_or_query_value(tmp_path, upstream):
    cfg = write_config(tmp_path, '[server]\nlog_level = "debug"\n' + config(pack(upstream.url), ["lookup"]))
    os.environ["QZ_LOG_TOKEN"] = TOKEN
    try:
        kernel = await start_kernel(cfg, plugins=[qaqnuz_pack_http])
        key, _ = await kernel.keys.mint(brand="acme", scopes=["api.read"], name="t")
        await kernel.aclose()
    finally:
        del os.environ["QZ_LOG_TOKEN"]
    from mcp import Client, StdioServerParameters, stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(
        QAQNUZ_CONFIG=str(cfg),
        QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1",
        QAQNUZ_PLUGINS="stdio,pack-http",
        QAQNUZ_API_KEY=key,
        QZ_LOG_TOKEN=TOKEN,
    )
    binary = Path(sys.executable).parent / "qaqnuz-mcp"
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        params = StdioServerParameters(command=str(binary), args=[], env=env)
        async with Client(stdio_client(params, errlog=err)) as client:
            results = [await client.call_tool("lookup", args) for args in CALLS]
    assert not results[0].is_error and results[1].is_error
    assert upstream.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    text = errlog.read_text()
    assert "GET lookup -> 200" in text  # the subprocess logged at debug to stderr, and we captured it
    assert_clean(text, key)


def test_config_check_output_never_shows_a_resolved_secret(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from qaqnuz.testing import write_config

    secret = "tok-config-check-7f3a9c"
    path = write_config(
        tmp_path,
        """\
        [brands.acme]
        plan = "growth"
        roles = { viewer = ["api.read"] }

        [packs.api]
        type = "http"
        base_url = "https://api.example.com"
        auth = { type = "bearer", token = { env = "CHECK_TOKEN" } }

        [[packs.api.tools]]
        name = "ping"
        description = "Ping the API."
        scope = "api.read"
        method = "GET"
        path = "/ping"
        """,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env.update(CHECK_TOKEN=secret, QAQNUZ_DISABLE_PLUGIN_AUTOLOAD="1", QAQNUZ_PLUGINS="pack-http")
    qaqnuz = str(Path(sys.executable).parent / "qaqnuz")
    ok = subprocess.run([qaqnuz, "config", "check", "--config", str(path)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    broken = path.read_text().replace('path = "/ping"', 'path = "/ping/{{ nope }}"')
    path.write_text(broken)
    bad = subprocess.run([qaqnuz, "config", "check", "--config", str(path)], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown placeholder" in bad.stderr
    for result in (ok, bad):
        assert secret not in result.stdout and secret not in result.stderr
