"""`with immediate(conn):` the one way the guard writes a transaction. BEGIN IMMEDIATE takes
the write lock at once (a DEFERRED one could fail half-way, at its first write)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


def is_open(conn: sqlite3.Connection) -> bool:
    """Whether `conn` is inside a transaction (False once something closed it)."""
    try:
        return conn.in_transaction
    except sqlite3.ProgrammingError:  # a .py migration closed the connection
        return False


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT around the block; ROLLBACK when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        if is_open(conn):
            conn.execute("COMMIT")
    except BaseException:
        if is_open(conn):
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error that got here is the one to report
        raise
