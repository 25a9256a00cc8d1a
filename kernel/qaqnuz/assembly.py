"""Building one provider instance from config: decode its settings, call its factory, name what failed.

Shared by the kernel (the runtime's providers, per-brand packs, transports, web routes) and the admin
commands (the store and the audit sinks), so every factory failure reads the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from qaqnuz.config import decode_settings
from qaqnuz.errors import ConfigError, PluginError, StoreError
from qaqnuz.plugins import Plugins, Registered, RegisteredRoute
from qaqnuz.records import ProviderKind


def build(
    registered: Registered | RegisteredRoute,
    raw: Mapping[str, Any],
    section: str,
    context: Callable[[str], Any],
) -> tuple[Any, Any]:
    """(instance, settings): `raw` decoded against the provider's settings struct (located at `[section]`)
    and handed to its factory with `context(section)`.

    A factory explains itself with `ConfigError`; any other exception becomes a `PluginError` naming the
    provider and its distribution, with the exception's type only (its text can carry a DSN or a secret).
    """
    item = registered.provider if isinstance(registered, Registered) else registered.route
    settings = decode_settings(raw, item.settings_type, f"[{section}]")
    try:
        instance = item.factory(settings, context(section))
    except (ConfigError, PluginError, StoreError):
        raise
    except Exception as exc:
        raise PluginError(
            f"[{section}]: provider {item.name!r} from {registered.plugin.distribution} failed to "
            f"start ({type(exc).__name__}); a factory should raise qaqnuz.ConfigError to explain itself"
        ) from None
    if instance is None:
        raise PluginError(f"[{section}]: provider {item.name!r} built nothing; its plugin is broken")
    return instance, settings


def build_selected(
    plugins: Plugins,
    kind: ProviderKind,
    name: str,
    settings: Mapping[str, Mapping[str, Any]],
    selected_at: str,
    context: Callable[[str], Any],
) -> Any:
    """The provider `name` of `kind` chosen at `selected_at`, built from `[plugins.<name>]`."""
    registered = plugins.provider(kind, name, selected_at)
    instance, _ = build(registered, settings.get(name, {}), f"plugins.{name}", context)
    return instance
