"""Warnings about data several brands may share by accident.

A tool of a pack is shared when two or more entitled brands expose it (enabled and exposable, the pack
serving them) through the same instance of the pack, i.e. neither has its own `[brands.<brand>.packs.<pack>]`
settings. Such a tool must bind the caller's brand (`Tool.binds_brand`: `:brand` in SQL, `{{ brand }}` in
an HTTP template), or its pack must say `shared = true` (data meant for everyone); otherwise one brand's
key may read another's rows. `config check` prints these; the server logs them at startup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qaqnuz.registry import Snapshot
    from qaqnuz.runtime import Runtime


def tenancy_warnings(runtime: Runtime, snapshot: Snapshot) -> list[str]:
    warnings: list[str] = []
    config = runtime.config
    for name, entry in snapshot.tools.items():
        pack = config.packs.get(entry.pack)
        if pack is None or pack.shared or entry.tool.binds_brand:
            continue
        sharing = sorted(
            brand
            for brand in config.brands
            if runtime.entitled(brand)
            and pack.serves(brand)
            and not runtime.own_instance(entry.pack, brand)
            and runtime.tool_settings(brand, name).enabled
            and runtime.tool_settings(brand, name).exposable
        )
        if len(sharing) >= 2:
            warnings.append(
                f"[packs.{entry.pack}] tool {name!r}: brands {', '.join(sharing)} expose it through the same "
                f"settings and it does not bind the caller's brand, so each brand's keys read the same data; "
                f"bind it (:brand in SQL, {{{{ brand }}}} in an HTTP template), give each brand its own settings "
                f"under [brands.<brand>.packs.{entry.pack}], or set shared = true in [packs.{entry.pack}] if "
                f"the data is meant for everyone"
            )
    return warnings
