"""Replaying migrations into an in-memory database: the schema they should have produced.
Every migration must work on an empty database (a fresh install runs them all)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from preflight.core import signals
from preflight.core.errors import MigrationFailed, PreflightError
from preflight.core.transaction import immediate
from preflight.schema.model import Schema
from preflight.schema.reader import Memo, Stop, build, open_memory, rows
from preflight.sources.migrations import Migration, run_body


def run_one(conn: sqlite3.Connection, m: Migration, label: str) -> None:
    """One migration in its own transaction; any failure of its own is MigrationFailed."""
    try:
        with immediate(conn):
            run_body(conn, m, label)
    except PreflightError:
        raise  # e.g. Interrupted: not this migration's fault
    except Exception as exc:
        if signals.received():  # its Interrupted was lost inside SQLite
            raise signals.swallowed() from exc
        raise MigrationFailed(
            f"{m.name}: fails on an empty database: {exc}",
            "fix the migration; the live database was not touched",
        ) from exc


def replay(
    migrations: tuple[Migration, ...], stops: set[int], memo: Memo | None = None
) -> dict[int, Schema]:
    """The schema after each count in `stops`; `memo` (what was read from each SQL text) may
    be shared with other snapshots."""
    found: dict[int, Schema] = {0: Schema()} if 0 in stops else {}
    memo = {} if memo is None else memo
    before: Stop | None = None
    with closing(open_memory()) as conn:
        for count, migration in enumerate(migrations, start=1):
            run_one(conn, migration, "replay")
            if count in stops:
                before = build(conn, rows(conn), memo, before)
                found[count] = before.schema
    return found
