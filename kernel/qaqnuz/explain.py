"""Why each tool is or is not visible for a brand: the operator's view of `pipeline.visibility`.

Built on the same function the governed path uses, with a principal per role holding that role's whole
ceiling, so this report can never disagree with what keys actually see.
"""

from __future__ import annotations

from typing import Any

from qaqnuz.pipeline import visibility
from qaqnuz.records import Principal


def explain_brand(runtime: Any, snapshot: Any, brand: str) -> list[dict[str, Any]]:
    cfg = runtime.config.brands[brand]
    rows = []
    for name, entry in snapshot.tools.items():
        tool = entry.tool
        roles = []
        why = ""
        for role, ceiling in sorted(cfg.roles.items()):
            principal = Principal(key_id="-", brand=brand, role=role, scopes=frozenset(ceiling))
            reason = visibility(runtime, snapshot, entry, principal)
            if reason is None:
                roles.append(role)
            elif not why or reason.startswith("key lacks"):
                why = why or reason
        if not cfg.roles:
            why = (
                visibility(runtime, snapshot, entry, Principal("-", brand, "-", frozenset({tool.scope})))
                or "no roles defined"
            )
        if roles:
            why = f"visible to keys holding {tool.scope} with role {', '.join(roles)}"
        elif why.startswith(("key lacks", "role ")):
            why = f"no role's ceiling holds scope {tool.scope}"
        rows.append(
            {
                "brand": brand,
                "tool": name,
                "pack": entry.pack,
                "scope": tool.scope,
                "side_effect": str(tool.side_effect),
                "stability": str(tool.stability),
                "visible": bool(roles),
                "roles": roles,
                "why": why,
            }
        )
    return rows
