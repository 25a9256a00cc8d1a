"""Configuration errors and environment overrides (SPEC §10, §11).

The error table runs the real `qaqnuz config check --config F` in a subprocess: every bad config must exit 2
and name the location of the problem on stderr, with nothing on stdout.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kit import kit_config, server_env
from qaqnuz.config import load_config
from qaqnuz.errors import ConfigError
from qaqnuz.testing import start_kernel, write_config
from stdio_harness import stdio_session

BIN = Path(sys.executable).parent
QAQNUZ = str(BIN / "qaqnuz")
GOOD = kit_config()


def config_check(config: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**server_env(config, None), **extra_env}
    return subprocess.run(
        [QAQNUZ, "config", "check", "--config", str(config)], env=env, capture_output=True, text=True, timeout=60
    )


def error_lines(stderr: str) -> list[str]:
    return [line.removeprefix("config error: ") for line in stderr.splitlines() if line.startswith("config error: ")]


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def prepend(extra: str) -> Callable[[str], str]:
    return lambda text: extra + text


# (id, edit of the good kit config, the start of the located error line, further text it must hold)
CASES = [
    ("unknown-section", prepend("[bogus]\nx = 1\n"), "{path}: [bogus]: unknown section", "valid sections"),
    (
        "unknown-server-key",
        replace_once("[server]\n", '[server]\ncolour = "red"\n'),
        "[server] colour: unknown key",
        "valid keys",
    ),
    (
        "wrong-type",
        replace_once("[plans.growth]\n", '[plans.growth]\nmax_keys = "five"\n'),
        "[plans.growth] max_keys:",
        "int",
    ),
    (
        "negative-cap",
        replace_once("[plans.growth]\n", "[plans.growth]\nmax_keys = -1\n"),
        "[plans.growth] max_keys:",
        "0 or more",
    ),
    (
        "undefined-plan",
        replace_once('plan = "growth"', 'plan = "platinum"'),
        "[brands.acme] plan:",
        "undefined plan 'platinum'",
    ),
    (
        "bad-role-scope",
        replace_once('viewer = ["orders.read"]', 'viewer = ["orders.*"]'),
        "[brands.acme] roles.viewer:",
        "invalid scope 'orders.*'",
    ),
    ("invalid-brand-name", replace_once("[brands.globex]", "[brands.Globex]"), "[brands.Globex]:", "lower case"),
    ("bad-rate", lambda _: kit_config(per_key="lots"), "[plans.growth.limits] per_key:", "'lots' is not a rate"),
    ("bad-duration", lambda _: kit_config(sync="soon"), "[server] sync_interval:", "'soon' is not a duration"),
    (
        "bad-store-url",
        replace_once('store = "sqlite:///qaqnuz.db"', 'store = "qaqnuz.db"'),
        "[server] store:",
        "is not a store URL; write e.g. sqlite:///qaqnuz.db",
    ),
    (
        "store-plugin-not-installed",
        replace_once('store = "sqlite:///qaqnuz.db"', 'store = "postgresql://db/qaqnuz"'),
        "[server] store:",
        "unknown store provider 'postgresql'; valid names: sqlite; 'postgresql' comes with the distribution "
        "qaqnuz-postgres, which is not installed: pip install 'qaqnuz[postgres]'",
    ),
    (
        "unknown-provider",
        prepend('[plugins]\nlimiter = "nope"\n'),
        "[plugins] limiter:",
        "unknown limiter provider 'nope'; valid names: memory",
    ),
    (
        "unknown-provider-settings",
        prepend("[plugins.nosuch]\nx = 1\n"),
        "[plugins.nosuch]:",
        "no installed provider or web route is named 'nosuch'",
    ),
    ("pack-without-type", replace_once('type = "testkit"\n', ""), "[packs.kit] type:", "missing"),
    (
        "pack-type-unknown",
        replace_once('type = "testkit"', 'type = "nope"'),
        "[packs.kit] type:",
        "unknown tools provider 'nope'; valid names: testkit",
    ),
    (
        "unknown-pack-key",
        replace_once('type = "testkit"\n', 'type = "testkit"\ncolour = "red"\n'),
        "[packs.kit] colour: unknown key",
        "description_file",
    ),
    (
        "unknown-tool-setting",
        replace_once("tools.echo = { exposable = true }", "tools.echo = { exposable = true, shown = true }"),
        "[brands.acme.tools.echo] shown: unknown key",
        "exposable",
    ),
    (
        "tool-no-pack-provides",
        replace_once("[brands.globex]\n", "tools.nonexistent = { exposable = true }\n\n[brands.globex]\n"),
        "[brands.acme] tools.nonexistent:",
        "no pack provides a tool named 'nonexistent'",
    ),
    ("invalid-toml", lambda text: text + "\n[[[\n", "{path}: not valid TOML", "line"),
    (
        "missing-secret-file",
        replace_once('secret_file = "qaqnuz.secret"', 'secret_file = "missing.secret"'),
        "[server] secret_file:",
        "does not exist",
    ),
]


def test_the_good_config_passes(tmp_path):
    config = write_config(tmp_path, GOOD)
    result = config_check(config)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("edit", "location", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_reported_with_its_location(tmp_path, edit, location, detail):
    config = write_config(tmp_path, GOOD)
    config.write_text(edit(GOOD))
    result = config_check(config)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    problems = error_lines(result.stderr)
    assert len(problems) == 1, result.stderr  # exactly the one planted error
    assert problems[0].startswith(location.format(path=config)), problems
    assert detail in problems[0]


def test_several_errors_are_all_reported(tmp_path):
    config = write_config(tmp_path, GOOD)
    text = GOOD
    for _, edit, *_ in [
        c for c in CASES if c[0] in {"unknown-section", "unknown-server-key", "undefined-plan", "bad-role-scope"}
    ]:
        text = edit(text)
    text = text.replace('per_key = "60/60s"', 'per_key = "lots"')
    config.write_text(text)
    result = config_check(config)
    assert result.returncode == 2
    problems = error_lines(result.stderr)
    for location in [
        "[bogus]: unknown section",
        "[server] colour: unknown key",
        "[brands.acme] plan:",
        "[brands.acme] roles.viewer:",
        "[plans.growth.limits] per_key:",
    ]:
        assert any(location in p for p in problems), (location, problems)
    assert len(problems) == 5, problems


def test_provider_errors_are_reported_together(tmp_path):
    config = write_config(tmp_path, GOOD)
    config.write_text('[plugins]\nlimiter = "nope"\n' + GOOD.replace('type = "testkit"', 'type = "nope"'))
    result = config_check(config)
    assert result.returncode == 2
    problems = error_lines(result.stderr)
    assert any(p.startswith("[plugins] limiter:") for p in problems), problems
    assert any(p.startswith("[packs.kit] type:") for p in problems), problems


# -- environment overrides ---------------------------------------------------------------------------
def test_env_overrides_file_values(tmp_path):
    config = write_config(tmp_path, GOOD.replace("[server]\n", '[server]\nname = "from-file"\n'))
    assert load_config(config, env={}).server.name == "from-file"
    overridden = load_config(
        config,
        env={
            "QAQNUZ_SERVER__NAME": "from-env",
            "QAQNUZ_PLANS__GROWTH__MAX_KEYS": "2",
            "QAQNUZ_PLANS__GROWTH__LIMITS__PER_KEY": "7/60s",
            "QAQNUZ_CONFIG": "ignored (no section)",
        },
    )
    assert overridden.server.name == "from-env"
    assert overridden.plans["growth"].max_keys == 2
    assert overridden.plans["growth"].limits.per_key == "7/60s"


@pytest.mark.anyio
async def test_env_override_reaches_the_running_server(tmp_path):
    config = write_config(tmp_path, GOOD)
    kernel = await start_kernel(config, plugins=["testkit_pack.plugin"])
    try:
        raw, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="env")
    finally:
        await kernel.aclose()
    env = {**server_env(config, raw), "QAQNUZ_SERVER__NAME": "renamed-by-env"}
    async with stdio_session(env, mode="legacy") as client:
        assert client.server_info.name == "renamed-by-env"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("QAQNUZ_SERVER__SYNC_INTERVAL", "soon", "env QAQNUZ_SERVER__SYNC_INTERVAL: [server] sync_interval:"),
        ("QAQNUZ_SERVER__COLOUR", "red", "env QAQNUZ_SERVER__COLOUR: [server] colour: unknown key"),
        ("QAQNUZ_PLANS__GROWTH__MAX_KEYS", "many", "env QAQNUZ_PLANS__GROWTH__MAX_KEYS: [plans.growth] max_keys:"),
        ("QAQNUZ_SERVER__", "x", "env QAQNUZ_SERVER__: empty section or key"),
    ],
)
def test_bad_env_override_is_reported_with_its_variable(tmp_path, name, value, expected):
    config = write_config(tmp_path, GOOD)
    result = config_check(config, **{name: value})
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert any(p.startswith(expected) for p in error_lines(result.stderr)), result.stderr


def test_a_store_url_with_a_password_is_refused_without_quoting_it(tmp_path):
    path = write_config(
        tmp_path, kit_config().replace('store = "sqlite:///qaqnuz.db"', 'store = "postgresql://app:hunter2@db/q"')
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (problem,) = caught.value.problems
    assert problem.startswith("[server] store: the URL carries a password") and 'env = "QAQNUZ_STORE_URL"' in problem
    assert "hunter2" not in problem


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db/q?password=hunter2",
        "postgresql:///q?host=db&password=hunter2",
        "Postgresql://db/q?password=hunter2",
    ],
)
def test_no_store_url_problem_quotes_a_password(tmp_path, url):
    path = write_config(tmp_path, kit_config().replace('store = "sqlite:///qaqnuz.db"', f'store = "{url}"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (problem,) = caught.value.problems
    assert problem.startswith("[server] store: the URL") and "hunter2" not in problem


def test_a_store_url_by_reference_is_resolved_and_never_shown(tmp_path, monkeypatch):
    url = "postgresql://app:hunter2@db.internal:5432/qaqnuz"
    path = write_config(
        tmp_path, kit_config().replace('store = "sqlite:///qaqnuz.db"', 'store = { env = "STORE_URL" }')
    )
    monkeypatch.setenv("STORE_URL", url)
    config = load_config(path, env={})
    assert config.store_scheme == "postgresql" and config.store_url == url
    assert "hunter2" not in repr(config)
    monkeypatch.setenv("STORE_URL", "hunter2")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems[0].startswith("[server] store: the URL its reference holds is not a store URL")
    assert "hunter2" not in caught.value.problems[0]
    monkeypatch.delenv("STORE_URL")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems[0].startswith("[server] store: environment variable STORE_URL is not set")
