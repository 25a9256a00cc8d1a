"""`[plugins.stdio]`: how the stdio transport serves its one client."""

from __future__ import annotations

import msgspec


class StdioSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Answer plain tools/call and tools/list lines without the SDK's per-message machinery (same answers).
    fast_path: bool = True
