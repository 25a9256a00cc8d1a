"""The newer hooks, each implemented by a fake third-party plugin (tests/support/fakehooks): a store selected
by its URL scheme and used by `keys create` and by a served call, an audit sink, a command, and how the
kernel calls hooks (through pluggy: a spec may gain an argument, wrappers see the calls). Web routes are
mounted by the HTTP transport and tested in plugins/http/tests/test_web_routes.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pluggy
import pytest

from fakehooks.store import JsonStore
from kit import kit_config, server_env
from qaqnuz import Provider, hookimpl
from qaqnuz.errors import PluginError
from qaqnuz.plugins import Plugins
from qaqnuz.records import ProviderKind
from qaqnuz.store_contract import StoreContract
from qaqnuz.testing import write_config
from stdio_harness import stdio_session

QAQNUZ = str(Path(sys.executable).parent / "qaqnuz")


class TestJsonStorePlugin(StoreContract):
    """The plugin's store passes the same contract the built-in one does."""

    @pytest.fixture
    async def store(self, tmp_path):
        store = JsonStore(tmp_path / "store.json")
        yield store
        await store.aclose()


def plugin_env(config: Path, key: str | None = None) -> dict[str, str]:
    env = server_env(config, key)
    env["QAQNUZ_PLUGINS"] += ",fakehooks.plugin"
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QAQNUZ, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.anyio
async def test_a_store_plugin_chosen_by_its_scheme_serves_keys_create_and_a_call(tmp_path):
    text = kit_config().replace('store = "sqlite:///qaqnuz.db"', 'store = "jsonstore://state/keys.json"')
    cfg = write_config(tmp_path, text)
    env = plugin_env(cfg)
    created = cli(env, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "json")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    stored = json.loads((tmp_path / "state" / "keys.json").read_text())
    assert list(stored["keys"]) == [key.split("_")[2]]  # the key id, in the plugin's file
    assert not (tmp_path / "qaqnuz.db").exists()  # the built-in store was never opened
    before = int((tmp_path / "state" / "keys.used").read_text())
    async with stdio_session(plugin_env(cfg, key)) as client:
        result = await client.call_tool("echo", {"message": "through the json store"})
    assert result.is_error is False, result.structured_content
    assert int((tmp_path / "state" / "keys.used").read_text()) > before  # the server authenticated against it
    listed = cli(env, "keys", "list", "--json")
    assert [row["name"] for row in json.loads(listed.stdout)] == ["json"]
    assert json.loads(listed.stdout)[0]["last_used_at"] is not None  # flushed into the plugin's store


def test_an_unknown_store_scheme_lists_the_installed_ones(tmp_path):
    text = kit_config().replace('store = "sqlite:///qaqnuz.db"', 'store = "mongodb://db/qaqnuz"')
    cfg = write_config(tmp_path, text)
    result = cli(plugin_env(cfg), "keys", "list")
    assert result.returncode == 2
    assert "[server] store: unknown store provider 'mongodb'; valid names: jsonstore, sqlite" in result.stderr


@pytest.mark.anyio
async def test_an_audit_sink_plugin_gets_every_record_the_file_gets(tmp_path):
    text = kit_config().replace("[brands.acme]", '[plugins]\naudit = ["file", "jsonlines"]\n\n[brands.acme]', 1)
    cfg = write_config(tmp_path, text)
    env = plugin_env(cfg)
    key = cli(env, "keys", "create", "--brand", "acme", "--scope", "orders.read", "--name", "a").stdout.strip()
    async with stdio_session(plugin_env(cfg, key)) as client:
        await client.call_tool("echo", {"message": "audited twice"})
        await client.call_tool("boom", {})
    chained = [json.loads(line) for line in (tmp_path / "qaqnuz-audit.jsonl").read_text().splitlines()]
    copied = [json.loads(line) for line in (tmp_path / "audit-copy.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in r.items() if k not in ("prev", "hash", "seq")} for r in chained]
    assert strip == copied
    assert [(r.get("tool"), r["outcome"]) for r in copied] == [
        (None, "minted"),
        ("echo", "executed"),
        ("boom", "failed"),
    ]


def test_a_plugin_command_runs_and_is_listed(tmp_path):
    cfg = write_config(tmp_path, kit_config())
    env = plugin_env(cfg)
    hello = cli(env, "fake", "hello", "--who", "operators")
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout == "hello, operators\n"
    assert cli(env, "fake", "hello", "--help").stdout.startswith("usage: qaqnuz fake hello")
    listed = {p["name"]: p for p in json.loads(cli(env, "plugins", "list", "--json").stdout)}
    assert listed["fakehooks.plugin"]["commands"] == ["fake hello"]
    assert listed["fakehooks.plugin"]["providers"] == ["store:jsonstore", "audit:jsonlines", "route:fakeroute",
                                                       "route:fakekeyed"]  # fmt: skip
    assert set(listed["fakehooks.plugin"]["hooks"]) == {
        "qaqnuz_stores",
        "qaqnuz_audit_sinks",
        "qaqnuz_commands",
        "qaqnuz_web_routes",
    }


def test_a_command_name_taken_twice_names_both_plugins():
    other = types.ModuleType("other_commands")
    exec(
        textwrap.dedent(
            """
            from qaqnuz import Command, hookimpl

            @hookimpl
            def qaqnuz_commands():
                return [Command("keys list", "mine", lambda args, ctx: 0)]
            """
        ),
        other.__dict__,
    )
    with pytest.raises(
        PluginError,
        match=r"duplicate command `qaqnuz keys list`: registered by plugin 'commands' \(qaqnuz\) and plugin",
    ):
        Plugins(autoload=False, explicit=[other])


# -- how hooks are called ------------------------------------------------------------------------------
class _Old:
    """A plugin written against today's spec: no arguments."""

    @hookimpl
    def qaqnuz_policies(self) -> list[Provider]:
        return [Provider("old_policy", lambda s, c: None, "Written before the spec gained an argument.")]


class _New:
    """A plugin written against the grown spec: it uses the new argument."""

    seen: list[str] = []

    @hookimpl
    def qaqnuz_policies(self, kernel_version: str) -> list[Provider]:
        self.seen.append(kernel_version)
        return [Provider(f"new_policy_{kernel_version}", lambda s, c: None, "Uses the new argument.")]


def _grown_specs() -> types.ModuleType:
    """The kernel's hook specs, with `qaqnuz_policies` grown by one argument."""
    from qaqnuz import hookspecs

    grown = types.ModuleType("grown_specs")
    marker = pluggy.HookspecMarker("qaqnuz")
    for name, value in vars(hookspecs).items():
        if name.startswith("qaqnuz_"):
            setattr(grown, name, value)

    @marker
    def qaqnuz_policies(kernel_version: str) -> list[Provider]:
        """Register call policies (grown: the kernel now passes its version)."""

    grown.qaqnuz_policies = qaqnuz_policies  # type: ignore[attr-defined]
    return grown


def test_a_spec_may_gain_an_argument_without_breaking_older_plugins():
    plugins = Plugins(
        autoload=False, explicit=[_Old(), _New()], specs=_grown_specs(), hook_args={"kernel_version": "9"}
    )
    assert {"old_policy", "new_policy_9", "scope"} <= set(plugins.providers[ProviderKind.POLICY])
    assert _New.seen[-1] == "9"


class _Wrapper:
    calls: list[str] = []

    @hookimpl(wrapper=True)
    def qaqnuz_rate_limiters(self):  # type: ignore[no-untyped-def]
        result = yield
        self.calls.append("wrapped")
        return result


def test_hooks_are_called_through_pluggy_so_wrappers_see_each_call():
    _Wrapper.calls.clear()
    plugins = Plugins(autoload=False, explicit=[_Wrapper()])
    assert "memory" in plugins.providers[ProviderKind.LIMITER]
    # the built-in limiters' two plain implementations (memory, sqlite), each call wrapped
    assert _Wrapper.calls == ["wrapped", "wrapped"]
