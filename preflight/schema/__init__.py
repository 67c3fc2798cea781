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

TYPE_CHECKING = False  # typing's, without importing typing here
if TYPE_CHECKING:
    from preflight.schema.reader import Memo, open_memory, snapshot


def __getattr__(name: str) -> object:
    """The reader's names, imported on first use: a fresh build of SQL files reads no
    schema (nothing to compare with), so it never imports the reader or its DDL parser."""
    if name in ("Memo", "open_memory", "snapshot"):
        from preflight.schema import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IGNORED_PREFIXES", "Column", "Index", "Schema", "Table", "ignored", "normalize"]
__all__ += ["Memo", "open_memory", "snapshot"]
