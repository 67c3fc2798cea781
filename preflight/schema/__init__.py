"""Schema understanding: the structural model (`model`) and its reader (`reader`)."""

from __future__ import annotations

from preflight.schema.model import IGNORED_PREFIXES, Schema, ignored, normalize

TYPE_CHECKING = False  # typing's, without importing typing here
if TYPE_CHECKING:
    import sqlite3

    from preflight.schema.reader import Memo

# The reader (with its DDL parser) is imported on first use: a fresh build of SQL files
# has nothing to compare with, so it reads no schema.


def snapshot(conn: sqlite3.Connection, memo: Memo | None = None) -> Schema:
    """A structural description of every user object in `conn`'s main database."""
    from preflight.schema import reader

    return reader.snapshot(conn, memo)


def open_memory() -> sqlite3.Connection:
    """An empty in-memory database set up the way the guard runs migrations."""
    from preflight.schema import reader

    return reader.open_memory()


__all__ = ["IGNORED_PREFIXES", "Schema", "ignored", "normalize"]
__all__ += ["open_memory", "snapshot"]
