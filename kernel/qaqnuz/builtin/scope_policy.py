"""The exact-scope policy: a call is allowed only when the key holds the tool's scope exactly and the
key's role ceiling (from the brand's current config) still contains it. Anything else is denied."""

from __future__ import annotations

from qaqnuz.hookspecs import hookimpl
from qaqnuz.records import CallRequest, Decision, Provider


class ScopePolicy:
    async def decide(self, request: CallRequest) -> Decision:
        scope = request.tool.scope
        if scope not in request.principal.scopes:
            return Decision(False, f"key lacks scope {scope}")
        if scope not in request.ceiling:
            return Decision(False, f"role {request.principal.role} ceiling lacks scope {scope}")
        return Decision(True, "scope held")


@hookimpl
def qaqnuz_policies() -> list[Provider]:
    return [
        Provider(
            "scope",
            lambda settings, ctx: ScopePolicy(),
            "Default-deny: allow only when the key holds the tool's scope exactly, within its role ceiling.",
        )
    ]
