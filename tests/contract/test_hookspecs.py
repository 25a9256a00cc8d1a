"""Hook specs only ever gain arguments: each signature and its docstring presence is pinned here."""

from __future__ import annotations

import inspect

from qaqnuz import hookspecs
from qaqnuz.plugins import COMMANDS_HOOK, HOOK_FOR_KIND, WEB_ROUTES_HOOK
from qaqnuz.records import ProviderKind

PINNED = {
    "qaqnuz_auth_providers": "() -> 'list[Provider]'",
    "qaqnuz_policies": "() -> 'list[Provider]'",
    "qaqnuz_approvers": "() -> 'list[Provider]'",
    "qaqnuz_rate_limiters": "() -> 'list[Provider]'",
    "qaqnuz_transports": "() -> 'list[Provider]'",
    "qaqnuz_tool_providers": "() -> 'list[Provider]'",
    "qaqnuz_stores": "() -> 'list[Provider]'",
    "qaqnuz_audit_sinks": "() -> 'list[Provider]'",
    "qaqnuz_tracers": "() -> 'list[Provider]'",
    "qaqnuz_commands": "() -> 'list[Command]'",
    "qaqnuz_web_routes": "() -> 'list[WebRoute]'",
}


def _specs() -> dict[str, object]:
    return {n: f for n, f in vars(hookspecs).items() if n.startswith("qaqnuz_") and callable(f)}


def test_every_spec_is_pinned_and_unchanged():
    specs = _specs()
    assert set(specs) == set(PINNED), "a hook was added or removed: pin it here (specs may only gain arguments)"
    for name, fn in specs.items():
        assert str(inspect.signature(fn)) == PINNED[name], name


def test_every_spec_documents_when_it_is_called_what_it_returns_and_an_example():
    for name, fn in _specs().items():
        doc = inspect.getdoc(fn) or ""
        assert "Called once" in doc, name
        assert "Return" in doc, name
        assert "Example::" in doc and "@hookimpl" in doc and f"def {name}():" in doc, name


def test_one_registration_hook_per_provider_kind_plus_commands_and_web_routes():
    assert set(HOOK_FOR_KIND) == set(ProviderKind)
    assert {*HOOK_FOR_KIND.values(), COMMANDS_HOOK, WEB_ROUTES_HOOK} == set(PINNED)


def test_one_name_everywhere():
    assert hookspecs.PROJECT == "qaqnuz"
    assert hookspecs.hookimpl.project_name == "qaqnuz"
    assert all(name.startswith(hookspecs.PROJECT + "_") for name in PINNED)
