"""Docs live next to the code: every config key and every command is in the README."""

from __future__ import annotations

from pathlib import Path

import msgspec

from qaqnuz import config
from qaqnuz.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_config_key_is_documented():
    structs = [
        config.ServerConfig,
        config.PluginsConfig,
        config.PlanConfig,
        config.BrandConfig,
        config.ApprovalsConfig,
        config.AuditConfig,
        config.ToolSettingsConfig,
        config.LimitsConfig,
    ]
    missing = [
        f"{s.__name__}.{f.name}" for s in structs for f in msgspec.structs.fields(s) if f"`{f.name}`" not in README
    ]
    assert not missing, f"undocumented config keys: {missing}"
    for section in config.TOP_LEVEL:
        assert f"[{section}" in README, section


def test_every_command_is_documented_with_help():
    parser = build_parser()
    groups = parser._subparsers._group_actions[0].choices  # argparse keeps no public accessor
    for group, sub in groups.items():
        assert sub.description or sub.format_help(), group
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        commands = [f"qaqnuz {group} {name}" for a in nested for name in a.choices] or [f"qaqnuz {group}"]
        for command in commands:
            assert f"`{command}" in README, f"{command} is not in the README's command table"


def _settings_structs() -> list[tuple[Path, list[type]]]:
    from qaqnuz.packkit import InputParam
    from qaqnuz_console.settings import ConsoleSettings, OidcSettings
    from qaqnuz_otel.settings import OtelSettings
    from qaqnuz_pack_conformance import ConformanceSettings
    from qaqnuz_pack_http.settings import AuthConfig, HttpSettings, HttpToolConfig
    from qaqnuz_pack_sql.pack import SqlSettings, SqlToolConfig
    from qaqnuz_pack_weather import WeatherSettings
    from qaqnuz_toolpack_template import TemplateSettings

    return [
        (ROOT / "plugins/console/README.md", [ConsoleSettings, OidcSettings]),
        (ROOT / "plugins/otel/README.md", [OtelSettings]),
        (ROOT / "plugins/pack-sql/README.md", [SqlSettings, SqlToolConfig, InputParam]),
        (ROOT / "plugins/pack-http/README.md", [HttpSettings, AuthConfig, HttpToolConfig, InputParam]),
        (ROOT / "contrib/pack-weather/README.md", [WeatherSettings]),
        (ROOT / "contrib/toolpack-template/README.md", [TemplateSettings]),
        (ROOT / "contrib/pack-conformance/README.md", [ConformanceSettings]),
    ]


def test_every_pack_setting_is_documented_in_its_readme():
    missing = []
    for readme, structs in _settings_structs():
        text = readme.read_text()
        for struct in structs:
            missing += [
                f"{readme.parent.name}: {struct.__name__}.{f.name}"
                for f in msgspec.structs.fields(struct)
                if f"`{f.name}`" not in text
            ]
    assert not missing, f"undocumented pack settings: {missing}"


def test_every_hook_and_pack_table_key_is_documented():
    from qaqnuz import hookspecs

    hooks = [name for name in dir(hookspecs) if name.startswith("qaqnuz_")]
    assert len(hooks) >= 10
    missing = [name for name in hooks if f"`{name}`" not in README]
    assert not missing, f"hooks missing from the README: {missing}"
    for field in msgspec.structs.fields(config.PackConfig):
        if field.name == "settings":  # not a key: the rest of the table, the provider's own settings
            continue
        assert f"`{field.name}`" in README, f"[packs.<pack>] {field.name}"


def test_ci_runs_the_type_checks():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "mypy --strict kernel/qaqnuz" in ci
    assert 'mypy "${packages[@]}"' in ci  # every plugin's src, one package each
