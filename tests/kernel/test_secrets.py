"""Secret references: resolved at load, located when missing, refused when written inline, masked in logs."""

from __future__ import annotations

import logging

import msgspec
import pytest

import qaqnuz
from qaqnuz.config import decode_settings
from qaqnuz.errors import ConfigError
from qaqnuz.testing import start_kernel, write_config

pytestmark = pytest.mark.anyio


class TokenSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: qaqnuz.SecretRef


class TokenPack:
    def __init__(self, settings: TokenSettings, ctx: qaqnuz.ProviderContext) -> None:
        self.token = ctx.secret(settings.token, "[packs.api] token")
        ctx.logger.info("connecting with %s and raw %s", self.token, self.token.reveal())

    async def list_tools(self) -> list:
        return []


class TokenPlugin:
    @qaqnuz.hookimpl
    def qaqnuz_tool_providers(self):
        return [qaqnuz.Provider("tokenpack", TokenPack, "Needs a token.", TokenSettings)]


def _config(token: str) -> str:
    return f'[packs.api]\ntype = "tokenpack"\ntoken = {token}\n'


async def test_env_reference_is_resolved_and_masked_in_logs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("API_TOKEN", "tok-super-secret-123")
    caplog.set_level(logging.INFO)
    kernel = await start_kernel(write_config(tmp_path, _config('{ env = "API_TOKEN" }')), plugins=[TokenPlugin()])
    try:
        pack = kernel.runtime.packs["api"]
        assert pack.token.reveal() == "tok-super-secret-123"
        assert "tok-super-secret-123" not in repr(pack.token) and "tok-super-secret-123" not in f"{pack.token}"
        assert "connecting with" in caplog.text
        assert "tok-super-secret-123" not in caplog.text  # even the raw value logged by mistake is masked
    finally:
        await kernel.aclose()


async def test_file_reference_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "token.txt").write_text("file-secret-456\n")
    kernel = await start_kernel(write_config(tmp_path, _config('{ file = "token.txt" }')), plugins=[TokenPlugin()])
    try:
        assert kernel.runtime.packs["api"].token.reveal() == "file-secret-456"
    finally:
        await kernel.aclose()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ('{ env = "NOT_SET_ANYWHERE" }', "[packs.api] token: environment variable NOT_SET_ANYWHERE is not set"),
        ('{ file = "missing.txt" }', "[packs.api] token: cannot read secret file"),
        ('{ env = "A", file = "b" }', "[packs.api] token: a secret reference needs exactly one of"),
        ('"tok-inline-789"', "[packs.api] token: a secret is given by reference, never written into config"),
    ],
)
async def test_missing_or_inline_secrets_are_located_config_errors(tmp_path, monkeypatch, token, message):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError) as caught:
        await start_kernel(write_config(tmp_path, _config(token)), plugins=[TokenPlugin()])
    assert any(problem.startswith(message) for problem in caught.value.problems), caught.value.problems
    assert "tok-inline-789" not in str(caught.value)


def test_a_plain_string_never_decodes_as_a_secret():
    with pytest.raises(ConfigError) as caught:
        decode_settings({"token": "abc-secret"}, TokenSettings, "[packs.x]")
    assert "abc-secret" not in str(caught.value)
