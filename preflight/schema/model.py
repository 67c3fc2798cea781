"""The structural schema: a table made by CREATE TABLE equals one grown by ALTER TABLE if
its columns, constraints and keys do (`objects`); views and triggers are normalized SQL."""

from __future__ import annotations

from dataclasses import dataclass, field

from preflight.core import TYPE_CHECKING
from preflight.schema.sqltext import canonical, fold, tokens

if TYPE_CHECKING:
    from preflight.schema.objects import Index, Table


def ignored(name: str) -> bool:
    """SQLite's, Litestream's and the guard's own objects: never drift."""
    return fold(name).startswith(("sqlite_", "_litestream_", "_preflight"))


def normalize(sql: str) -> str:
    return canonical(tokens(sql))


@dataclass(frozen=True)
class Schema:
    """Every user object of a database, keyed by ASCII-folded name (SQLite's own rule)."""

    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)
    # (kind, folded name) -> sqlite_master's SQL: never compared, adoption's last word only
    texts: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def is_empty(self) -> bool:
        return not (self.tables or self.indexes or self.views or self.triggers)
