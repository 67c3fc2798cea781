"""Schema understanding: the structural model (`model`) and its reader (`reader`)."""

from __future__ import annotations

from preflight.core import TYPE_CHECKING
from preflight.schema.model import Schema, ignored, normalize

if TYPE_CHECKING:
    import sqlite3

    from preflight.schema.reader import Memo

# The reader is imported on first use: a fresh build of SQL files reads no schema.


def snapshot(conn: sqlite3.Connection, memo: Memo | None = None) -> Schema:
    from preflight.schema import reader

    return reader.snapshot(conn, memo)


def open_memory() -> sqlite3.Connection:
    from preflight.schema import reader

    return reader.open_memory()


__all__ = ["Schema", "ignored", "normalize", "open_memory", "snapshot"]
