"""`[plugins.stdio]`: how the stdio transport serves its one client."""

from __future__ import annotations

import msgspec


class StdioSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Answer plain tools/call and tools/list lines without the SDK's per-message machinery (same answers).
    fast_path: bool = True
    #: Longest message line accepted from the client; a longer one is dropped as it arrives (never held whole)
    #: and answered with a JSON-RPC -32600 error.
    max_message_bytes: int = 8 * 1024 * 1024
