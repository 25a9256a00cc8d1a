"""The plugin manager against fake installed distributions (dist-info folders on sys.path, in a
test-only entry-point group), and `qaqnuz plugins list` against the real installation."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import qaqnuz
from qaqnuz.config import load_config
from qaqnuz.errors import ConfigError, PluginError
from qaqnuz.kernel import Kernel
from qaqnuz.plugins import BUILTINS, PluginInfo, Plugins
from qaqnuz.records import ProviderKind
from qaqnuz.testing import connect, write_config

GROUP = "qaqnuz_test"
QAQNUZ = Path(sys.executable).parent / "qaqnuz"

LIMITER_PLUGIN = """
from qaqnuz import Admission, Provider, hookimpl

class Limiter:
    async def admit(self, key_id, key_limit, brand, brand_limit):
        return Admission(True)

@hookimpl
def qaqnuz_rate_limiters():
    return [Provider({name!r}, lambda settings, ctx: Limiter(), "A limiter from a fake distribution.")]
"""

TOOLS_PLUGIN = """
from qaqnuz import Provider, SideEffect, Tool, hookimpl

class Tools:
    async def list_tools(self):
        return [Tool("fake_tool", "A tool from a fake distribution.", {{"type": "object"}}, "orders.read",
                     SideEffect.READ, self.run)]

    async def run(self, args):
        return {{"from": {dist!r}}}

@hookimpl
def qaqnuz_tool_providers():
    return [Provider("fake_pack", lambda settings, ctx: Tools(), "Tools from a fake distribution.")]
"""


def make_dist(root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution: `<dist>-<version>.dist-info` plus top-level modules."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = [f"[{GROUP}]", *(f"{name} = {target}" for name, target in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A fresh site folder on sys.path; modules imported from it are forgotten afterwards."""
    for name in ("QAQNUZ_DISABLE_PLUGIN_AUTOLOAD", "QAQNUZ_PLUGINS", "QAQNUZ_BLOCK_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if name.startswith("fake_"):
            del sys.modules[name]


def two_limiter_dists(site: Path) -> None:
    make_dist(
        site,
        "qaqnuz-fake-alpha",
        "1.2.3",
        {"alpha": "fake_alpha"},
        {"fake_alpha": LIMITER_PLUGIN.format(name="alpha_limiter")},
    )
    make_dist(
        site,
        "qaqnuz-fake-beta",
        "4.5.6",
        {"beta": "fake_beta"},
        {"fake_beta": LIMITER_PLUGIN.format(name="beta_limiter")},
    )


def entry_point_names(plugins: Plugins) -> set[str]:
    return {info.name for info in plugins.infos if not info.builtin}


def test_a_plugin_loads_and_is_listed_with_distribution_version_and_hooks(site) -> None:
    make_dist(
        site,
        "qaqnuz-fake-alpha",
        "1.2.3",
        {"alpha": "fake_alpha"},
        {"fake_alpha": LIMITER_PLUGIN.format(name="alpha_limiter")},
    )
    plugins = Plugins(group=GROUP, autoload=True)
    assert PluginInfo("alpha", "qaqnuz-fake-alpha", "1.2.3", ("qaqnuz_rate_limiters",), False) in plugins.infos
    registered = plugins.providers[ProviderKind.LIMITER]["alpha_limiter"]
    assert registered.plugin.distribution == "qaqnuz-fake-alpha"
    assert registered.provider.description == "A limiter from a fake distribution."
    # built-ins are loaded first, from the explicit tuple, attributed to the kernel distribution
    assert [i.name for i in plugins.infos[: len(BUILTINS)]] == [name for name, _ in BUILTINS]
    assert all(i.builtin and i.distribution == "qaqnuz" for i in plugins.infos[: len(BUILTINS)])
    assert set(plugins.providers[ProviderKind.LIMITER]) == {"memory", "sqlite", "alpha_limiter"}


@pytest.mark.anyio
async def test_a_tool_pack_from_a_fake_distribution_serves_a_kernel(site, tmp_path) -> None:
    make_dist(
        site,
        "qaqnuz-fake-pack",
        "0.9.0",
        {"fakepack": "fake_pack"},
        {"fake_pack": TOOLS_PLUGIN.format(dist="qaqnuz-fake-pack")},
    )
    cfg = write_config(
        tmp_path / "cfg",
        """
        [server]
        store = "sqlite:///qaqnuz.db"
        secret_file = "qaqnuz.secret"
        [brands.acme]
        plan = "growth"
        roles = { viewer = ["orders.read"] }
        tools.fake_tool = { exposable = true }
        [packs.mine]
        type = "fake_pack"
        """,
    )
    kernel = Kernel(load_config(cfg), plugins=Plugins(group=GROUP, autoload=True))
    await kernel.start()
    try:
        key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="t")
        async with connect(kernel, key) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("fake_tool", {})
        assert names == ["fake_tool"]
        assert result.structured_content == {"ok": True, "data": {"from": "qaqnuz-fake-pack"}, "truncated": False}
    finally:
        await kernel.aclose()


def test_duplicate_provider_name_names_both_distributions(site) -> None:
    make_dist(
        site, "qaqnuz-fake-alpha", "1.0", {"alpha": "fake_alpha"}, {"fake_alpha": LIMITER_PLUGIN.format(name="twin")}
    )
    make_dist(site, "qaqnuz-fake-beta", "2.0", {"beta": "fake_beta"}, {"fake_beta": LIMITER_PLUGIN.format(name="twin")})
    with pytest.raises(PluginError) as caught:
        Plugins(group=GROUP, autoload=True)
    message = str(caught.value)
    assert "'twin'" in message
    assert "qaqnuz-fake-alpha" in message
    assert "qaqnuz-fake-beta" in message


def test_provider_name_clashing_with_a_builtin_names_the_kernel(site) -> None:
    make_dist(
        site, "qaqnuz-fake-alpha", "1.0", {"alpha": "fake_alpha"}, {"fake_alpha": LIMITER_PLUGIN.format(name="memory")}
    )
    with pytest.raises(PluginError, match=r"'memory'.*\(qaqnuz\).*\(qaqnuz-fake-alpha\)"):
        Plugins(group=GROUP, autoload=True)


def test_duplicate_entry_point_name_names_both_distributions(site) -> None:
    make_dist(
        site, "qaqnuz-fake-alpha", "1.0", {"clash": "fake_alpha"}, {"fake_alpha": LIMITER_PLUGIN.format(name="a")}
    )
    make_dist(site, "qaqnuz-fake-beta", "2.0", {"clash": "fake_beta"}, {"fake_beta": LIMITER_PLUGIN.format(name="b")})
    with pytest.raises(PluginError) as caught:
        Plugins(group=GROUP, autoload=True)
    message = str(caught.value)
    assert "'clash'" in message
    assert "qaqnuz-fake-alpha" in message
    assert "qaqnuz-fake-beta" in message


def test_import_failure_stops_loading_with_plugin_name_and_distribution(site) -> None:
    make_dist(
        site,
        "qaqnuz-fake-broken",
        "0.0.1",
        {"broken": "fake_broken"},
        {"fake_broken": "raise RuntimeError('kaboom at import')\n"},
    )
    with pytest.raises(PluginError) as caught:
        Plugins(group=GROUP, autoload=True)
    message = str(caught.value)
    assert "'broken'" in message
    assert "qaqnuz-fake-broken" in message
    assert "failed to import" in message


def test_a_hook_qaqnuz_does_not_define_is_an_error(site) -> None:
    make_dist(
        site,
        "qaqnuz-fake-typo",
        "1.0",
        {"typo": "fake_typo"},
        {"fake_typo": "from qaqnuz import hookimpl\n\n@hookimpl\ndef qaqnuz_rate_limitres():\n    return []\n"},
    )
    with pytest.raises(PluginError, match=r"'typo'.*does not define"):
        Plugins(group=GROUP, autoload=True)


def test_autoload_kill_switch_loads_only_the_explicit_list(site, monkeypatch) -> None:
    two_limiter_dists(site)
    make_dist(
        site,
        "qaqnuz-fake-broken",
        "0.0.1",
        {"broken": "fake_broken"},
        {"fake_broken": "raise RuntimeError('kaboom at import')\n"},
    )
    monkeypatch.setenv("QAQNUZ_DISABLE_PLUGIN_AUTOLOAD", "1")
    nothing = Plugins(group=GROUP)  # the broken plugin is not even imported
    assert entry_point_names(nothing) == set()
    assert set(nothing.providers[ProviderKind.LIMITER]) == {"memory", "sqlite"}
    assert "fake_broken" not in sys.modules

    only_beta = Plugins(group=GROUP, explicit=["beta"])
    assert entry_point_names(only_beta) == {"beta"}
    assert set(only_beta.providers[ProviderKind.LIMITER]) == {"memory", "sqlite", "beta_limiter"}

    monkeypatch.setenv("QAQNUZ_PLUGINS", "alpha")
    assert entry_point_names(Plugins(group=GROUP)) == {"alpha"}

    monkeypatch.setenv("QAQNUZ_PLUGINS", "gamma")
    with pytest.raises(PluginError, match="not installed: gamma"):
        Plugins(group=GROUP)

    monkeypatch.delenv("QAQNUZ_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.delenv("QAQNUZ_PLUGINS")
    with pytest.raises(PluginError, match="'broken'"):  # the switch was what kept it out
        Plugins(group=GROUP)


def test_block_list_skips_a_plugin(site, monkeypatch) -> None:
    two_limiter_dists(site)
    assert entry_point_names(Plugins(group=GROUP, autoload=True, block=["beta"])) == {"alpha"}
    monkeypatch.setenv("QAQNUZ_BLOCK_PLUGINS", "alpha")
    assert entry_point_names(Plugins(group=GROUP, autoload=True)) == {"beta"}
    assert entry_point_names(Plugins(group=GROUP, autoload=True, allow=["alpha", "beta"])) == {"beta"}


def test_block_list_skips_a_plugin_that_would_fail_to_import(site) -> None:
    make_dist(
        site,
        "qaqnuz-fake-broken",
        "0.0.1",
        {"broken": "fake_broken"},
        {"fake_broken": "raise RuntimeError('kaboom at import')\n"},
    )
    plugins = Plugins(group=GROUP, autoload=True, block=["broken"])
    assert entry_point_names(plugins) == set()


def test_unknown_provider_name_in_config_lists_the_valid_names(site, tmp_path) -> None:
    two_limiter_dists(site)
    cfg = write_config(
        tmp_path / "cfg",
        """
        [server]
        store = "sqlite:///qaqnuz.db"
        secret_file = "qaqnuz.secret"
        [plugins]
        limiter = "gamma_limiter"
        """,
    )
    plugins = Plugins(group=GROUP, autoload=True)
    with pytest.raises(ConfigError) as caught:
        Kernel(load_config(cfg), plugins=plugins)
    message = str(caught.value)
    assert "plugins" in message  # located in the config's [plugins] table
    assert "'gamma_limiter'" in message
    assert "valid names: alpha_limiter, beta_limiter, memory, sqlite" in message


def test_cli_plugins_list_json(tmp_path) -> None:
    # The real group `qaqnuz`, in a subprocess: the installed built-ins and stdio, plus a fake
    # third-party distribution put on PYTHONPATH for that process only.
    site = tmp_path / "site"
    site.mkdir()
    info = site / "qaqnuz_fake_thirdparty-3.1.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qaqnuz-fake-thirdparty\nVersion: 3.1.4\n")
    (info / "entry_points.txt").write_text("[qaqnuz]\nthirdparty = fake_thirdparty\n")
    (site / "fake_thirdparty.py").write_text(textwrap.dedent(LIMITER_PLUGIN.format(name="third_limiter")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAQNUZ_")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [str(QAQNUZ), "plugins", "list", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    listed = {item["name"]: item for item in json.loads(proc.stdout)}
    for name, _ in BUILTINS:
        assert listed[name]["distribution"] == "qaqnuz"
        assert listed[name]["version"] == qaqnuz.__version__
        assert listed[name]["builtin"] is True
        assert listed[name]["hooks"]
    assert listed["memory"]["hooks"] == ["qaqnuz_rate_limiters"]
    assert listed["memory"]["providers"] == ["limiter:memory"]
    assert listed["stdio"]["distribution"] == "qaqnuz-stdio"
    assert listed["stdio"]["version"] == md.version("qaqnuz-stdio")
    assert listed["stdio"]["hooks"] == ["qaqnuz_transports"]
    assert listed["stdio"]["builtin"] is False
    assert listed["thirdparty"] == {
        "name": "thirdparty",
        "distribution": "qaqnuz-fake-thirdparty",
        "version": "3.1.4",
        "hooks": ["qaqnuz_rate_limiters"],
        "providers": ["limiter:third_limiter"],
        "commands": [],
        "builtin": False,
    }
