"""Who may see and do what in the console: one place, used by the pages and the JSON API alike.

`admin` sees and changes everything; `brand-admin` sees and changes one brand's keys and approvals;
`auditor` only reads (every brand, or one when it has a brand). Every check here is also made again by the
key and approval services (`brand=`), so a mistake in a page cannot reach another brand's data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qaqnuz import ConsoleUser
from qaqnuz_console.sessions import Session


@dataclass(frozen=True)
class Viewer:
    """A signed-in person on one request."""

    user: ConsoleUser
    session: Session
    csrf: str

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"console:{self.user.name}"

    @property
    def can_write(self) -> bool:
        return self.user.role in ("admin", "brand-admin")

    @property
    def only_brand(self) -> str | None:
        """The one brand they are limited to (None: every brand)."""
        return None if self.user.role == "admin" else self.user.brand

    def brands(self, configured: Iterable[str]) -> list[str]:
        """The configured brands they may see, sorted."""
        mine = self.only_brand
        return sorted(b for b in configured if mine is None or b == mine)

    def may_see(self, brand: str | None) -> bool:
        return brand is not None and (self.only_brand is None or brand == self.only_brand)
