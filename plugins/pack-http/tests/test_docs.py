"""The README documents every setting, and its example config loads as written."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

import qaqnuz_pack_http
from qaqnuz import InputParam

pytestmark = pytest.mark.anyio

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    "struct", [qaqnuz_pack_http.HttpSettings, qaqnuz_pack_http.AuthConfig, qaqnuz_pack_http.HttpToolConfig, InputParam]
)
def test_every_setting_is_documented(struct):
    missing = [f.name for f in msgspec.structs.fields(struct) if f"`{f.name}`" not in README]
    assert not missing, f"undocumented {struct.__name__} keys: {missing}"


async def test_the_readme_example_loads(qaqnuz_kernel, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "crm-token-for-the-docs-test")
    example = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    kernel = await qaqnuz_kernel(example, plugins=[qaqnuz_pack_http])
    assert sorted(kernel.registry.snapshot.tools) == ["create_note", "get_contact"]
