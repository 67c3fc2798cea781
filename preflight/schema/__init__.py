"""Schema understanding, as one name for its users: the structural model and its reader.

`model` holds the data (tables, columns, indexes, views, triggers), `reader` reads it from a
database; replaying migrations to get the expected schema lives beside the runner
(`replay`). Drift between two schemas is `drift`.
"""

from preflight.schema.model import (
    IGNORED_PREFIXES,
    Column,
    Index,
    Schema,
    Table,
    ignored,
    normalize,
)
from preflight.schema.reader import Memo, open_memory, snapshot

__all__ = [
    "IGNORED_PREFIXES",
    "Column",
    "Index",
    "Memo",
    "Schema",
    "Table",
    "ignored",
    "normalize",
    "open_memory",
    "snapshot",
]
