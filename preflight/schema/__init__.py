"""Schema understanding: the structural model (`model`) and its reader (`reader`)."""

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

__all__ = ["IGNORED_PREFIXES", "Column", "Index", "Schema", "Table", "ignored", "normalize"]
__all__ += ["Memo", "open_memory", "snapshot"]
