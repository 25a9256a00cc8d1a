"""The stdio plugin as users install it: registered through its entry point, refusing bad keys."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import qaqnuz_stdio
from qaqnuz import ProviderKind, UsageError
from qaqnuz.plugins import Plugins

pytestmark = pytest.mark.anyio

CONFIG = """\
[brands.acme]
plan = "growth"
roles = { viewer = ["demo.read"] }
"""


def test_entry_point_registers_the_stdio_transport():
    plugins = Plugins(autoload=False, explicit=["stdio"])  # loaded by entry-point name
    registered = plugins.providers[ProviderKind.TRANSPORT]["stdio"]
    assert registered.plugin.distribution == "qaqnuz-stdio"
    assert registered.plugin.version == "0.1.0"
    assert qaqnuz_stdio.qaqnuz_transports()[0].name == "stdio"
    assert registered.provider.settings_type is qaqnuz_stdio.StdioSettings


def test_every_setting_is_documented_with_an_example():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for field in msgspec.structs.fields(qaqnuz_stdio.StdioSettings):
        assert f"`{field.name}`" in readme, field.name
        assert f"\n{field.name} = " in readme, f"{field.name} has no line in the README's example"


@pytest.mark.parametrize("key", [None, "", "qx_live_nope", "not-a-key"])
async def test_bad_key_refuses_to_serve(qaqnuz_kernel, monkeypatch, key):
    kernel = await qaqnuz_kernel(CONFIG, plugins=["stdio"])
    if key is None:
        monkeypatch.delenv("QAQNUZ_API_KEY", raising=False)
    else:
        monkeypatch.setenv("QAQNUZ_API_KEY", key)
    transport = kernel.transport("stdio")
    with pytest.raises(UsageError, match="QAQNUZ_API_KEY is missing, malformed, unknown, expired or revoked"):
        await transport.serve(kernel)


async def test_host_and_port_do_not_apply(qaqnuz_kernel):
    kernel = await qaqnuz_kernel(CONFIG, plugins=["stdio"])
    with pytest.raises(UsageError, match="--port does not apply to the stdio transport"):
        kernel.transport("stdio", {"port": 8080})
