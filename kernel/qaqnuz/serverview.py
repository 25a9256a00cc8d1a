"""The read-only face of a running kernel that web routes get (`WebRouteContext.view`): the console's Tools,
Calls and Status pages. Each answer is built from what the CLI uses for the same question, so the page and
`qaqnuz tools list` / `plugins list` / `/readyz` never disagree."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from qaqnuz.audit import ChainCheck, chain_key
from qaqnuz.calllog import CallPage, CallQuery, read_calls
from qaqnuz.config import parse_duration
from qaqnuz.explain import explain_brand

if TYPE_CHECKING:
    from qaqnuz.kernel import Kernel

#: How many chain problems a page shows (`qaqnuz audit verify` lists them all).
_PROBLEMS_SHOWN = 5


class KernelView:
    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._chain: ChainCheck | None = None
        self._chain_lock = threading.Lock()  # pages may check it from worker threads at once

    def __repr__(self) -> str:
        return "KernelView()"

    @property
    def _audit_file(self) -> str | None:
        config = self._kernel.config
        return config.resolve(config.server.audit_file) if "file" in config.plugins.audit else None

    def brands(self) -> dict[str, dict[str, Any]]:
        config = self._kernel.config
        out: dict[str, dict[str, Any]] = {}
        for name, brand in sorted(config.brands.items()):
            plan = config.plans[brand.plan]
            out[name] = {
                "roles": {role: sorted(scopes) for role, scopes in sorted(brand.roles.items())},
                "plan": brand.plan,
                "entitled": plan.entitled,
                "max_keys": plan.max_keys,
            }
        return out

    def max_key_lifetime(self) -> float:
        return parse_duration(self._kernel.config.server.max_key_lifetime)

    def tools(self, brand: str) -> list[dict[str, Any]]:
        kernel = self._kernel
        if brand not in kernel.config.brands:
            return []
        snapshot = kernel.registry.snapshot
        rows = explain_brand(kernel.runtime, snapshot, brand)
        for row in rows:
            tool = snapshot.brand_tools.get((brand, row["tool"])) or snapshot.tools[row["tool"]].tool
            row["description"] = tool.description
            row["input_schema"] = dict(tool.input_schema)
        return rows

    async def status(self) -> dict[str, Any]:
        kernel = self._kernel
        config = kernel.config
        readiness = await kernel.readiness()
        snapshot = kernel.registry.snapshot
        synced_at, sync_result = kernel.last_sync
        return {
            "server": config.server.name,
            "version": kernel.version,
            "ready": all(readiness.values()),
            "readiness": readiness,
            "plugins": [
                {"name": i.name, "distribution": i.distribution, "version": i.version, "builtin": i.builtin}
                for i in kernel.plugins.infos
            ],
            "selected": {
                "store": config.store_scheme,
                "auth": config.plugins.auth,
                "policies": list(config.plugins.policies),
                "limiter": config.plugins.limiter,
                "approver": config.plugins.approver,
                "audit": list(config.plugins.audit),
                "routes": list(config.plugins.routes),
            },
            "tools": {
                "registered": len(snapshot.tools),
                "catalogue_version": snapshot.version,
                "last_sync": synced_at,
                "last_sync_result": sync_result,
                "sync_interval": config.server.sync_interval,
            },
            "limiter": {"name": config.plugins.limiter, "ready": readiness.get("limiter", False)},
            "store": {"scheme": config.store_scheme, "answering": readiness.get("store", False)},
        }

    # `calls` and `chain` read the audit file: a web route calls them off its event loop (the first chain
    # check of a large file reads all of it once; later ones read only what was appended).
    def calls(self, query: CallQuery) -> CallPage:
        path = self._audit_file
        return CallPage([], None) if path is None else read_calls(path, query)

    def chain(self) -> dict[str, Any]:
        path = self._audit_file
        if path is None:
            return {"file": None, "lines": 0, "intact": None, "problems": ["the file audit sink is not configured"]}
        with self._chain_lock:
            if self._chain is None or str(self._chain.path) != path:
                self._chain = ChainCheck(path, chain_key(self._kernel.secret))
            lines, problems = self._chain.check()
        if problems == [f"{path}: no such audit file"]:
            return {"file": path, "lines": 0, "intact": True, "problems": []}
        return {"file": path, "lines": lines, "intact": not problems, "problems": problems[:_PROBLEMS_SHOWN],
                "problem_count": len(problems)}  # fmt: skip
