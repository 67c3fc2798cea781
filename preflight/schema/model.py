"""The structural schema model: every user object of a database as data (its tables,
columns and indexes are `objects`; views and triggers are normalized SQL).

Objects, not SQL text: a table built by CREATE TABLE and one grown by ALTER TABLE ADD
COLUMN are the same if their columns, constraints and keys are. Views and triggers, whose
structure SQLite does not expose, are kept as normalized SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from preflight.schema.sqltext import canonical, fold, tokens

TYPE_CHECKING = False  # typing's, without importing typing here
if TYPE_CHECKING:
    from preflight.schema.objects import Index, Table

IGNORED_PREFIXES = ("sqlite_", "_litestream_", "_preflight")


def ignored(name: str) -> bool:
    """The guard's own objects, SQLite's internals and Litestream's are never drift."""
    return fold(name).startswith(IGNORED_PREFIXES)


def normalize(sql: str) -> str:
    """SQL in canonical spelling: comments, white space, identifier quoting and the case of
    keywords and ASCII letters of names do not count; string literals keep their case."""
    return canonical(tokens(sql))


@dataclass(frozen=True)
class Schema:
    """Every user object of a database, keyed by ASCII-folded name (SQLite's own rule)."""

    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)
    # (kind, folded name) -> the SQL text sqlite_master holds: not part of the meaning
    # (never compared), only adoption's last word between versions that mean the same
    texts: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def is_empty(self) -> bool:
        """True when there is no user object at all."""
        return not (self.tables or self.indexes or self.views or self.triggers)
