"""Down steps: kept in the database when a migration is applied, so that an older image
(without the newer files) can run them when asked. docs/internals.md, "Downgrades"."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from itertools import takewhile
from pathlib import Path

from preflight import schema
from preflight.core import TYPE_CHECKING
from preflight.core.errors import HistoryError, HistoryMoved, MigrationFailed
from preflight.core.targets import Target
from preflight.fast.facts import connect_ro, sha256_bytes
from preflight.live import history
from preflight.live.database import Inspection
from preflight.schema.sqltext import fold, quote
from preflight.schema.statements import RUN, Statement, classify, split_statements
from preflight.sources import planner
from preflight.sources.migrations import Migration, set_fingerprint, up_section
from preflight.sources.source import Plan
from preflight.storage.config import Settings
from preflight.storage.steps import step

if TYPE_CHECKING:
    from typing import Any

    from preflight.live.records import Stored
    from preflight.sources.functions import AppFunctions

log = logging.getLogger("preflight")

DOWN = "_preflight_down"
_DDL = f"""CREATE TABLE IF NOT EXISTS {DOWN} (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    migration_sha256 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    sql TEXT NOT NULL,
    stored_at TEXT NOT NULL
)"""
NOT_CHECKED = (
    "not checked: the database is above this image's last migration (a downgrade); "
    "run `preflight check` to rehearse it"
)


def _sha(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def text_of(m: Migration) -> str | None:
    """`m`'s dbmate/goose down section, else the `.down.sql` beside its `.up.sql` or `.sql`
    (golang-migrate, sqlx), or `down.sql` beside `up.sql` (diesel); or None."""
    if m.kind != "sql":
        return None
    _, end = up_section(m.source, m.name)
    if end < len(m.source):  # the down marker's line starts at `end`
        after = m.source.find("\n", end)
        return "" if after < 0 else m.source[after + 1 :]
    if m.path.name == "up.sql":
        beside = m.path.with_name("down.sql")
    else:  # `X.up.sql` or a plain `X.sql`: `X.down.sql` beside it
        stem = m.path.name.removesuffix(".sql").removesuffix(".up")
        beside = m.path.with_name(stem + ".down.sql")
    try:
        return beside.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("down step: %s: unreadable (%s); not kept", beside.name, exc)
        return None


def _statements(text: str, label: str) -> tuple[Statement, ...]:
    return classify(label, split_statements(text, label, 0, len(text)))


def _problem(text: str, m: Migration) -> tuple[int, str] | None:
    """Why a down step cannot be kept (with the log level to say it at), or None."""
    try:
        body = _statements(text, f"{m.name} (down)")
    except HistoryError as exc:
        return logging.WARNING, exc.message
    if not m.executes_nothing and not any(s.action == RUN for s in body):
        return logging.INFO, f"{m.name}: its down part runs no statement"  # left empty
    return None


def keep(conn: sqlite3.Connection, m: Migration) -> None:
    """Store `m`'s down step, inside the transaction that applies `m`. One that could not run
    there, or runs nothing while `m` does, is not kept: an older image then refuses to undo `m`."""
    text = text_of(m)
    problem = None if text is None else _problem(text, m)
    if text is None or problem:
        if problem:
            level, why = problem
            log.log(level, "down step: %s; not kept (an older image cannot undo it)", why)
        if _exists(conn):
            conn.execute(f"DELETE FROM {DOWN} WHERE version = ?", (m.version,))
        return
    conn.execute(_DDL)
    conn.execute(
        f"INSERT OR REPLACE INTO {DOWN} VALUES (?, ?, ?, ?, ?, ?)",
        (m.version, m.name, m.sha256, _sha(text), text, history.now()),
    )


def forget_after(conn: sqlite3.Connection, version: int) -> None:
    if _exists(conn):
        conn.execute(f"DELETE FROM {DOWN} WHERE version > ?", (version,))


def _exists(conn: sqlite3.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (DOWN,)
        ).fetchone()
    )


def stored(conn: sqlite3.Connection) -> dict[int, Stored]:
    if not _exists(conn):
        return {}
    from preflight.live.records import Stored  # a database that kept down steps only

    rows = conn.execute(f"SELECT version, name, migration_sha256, sha256, sql FROM {DOWN}")
    return {row[0]: Stored(*row) for row in rows}


def _read(insp: Inspection) -> dict[int, Stored]:
    """`stored` from the file inspected, read-only (a refusal leaves it byte-identical)."""
    with closing(connect_ro(insp.file or insp.path)) as conn:
        return stored(conn)


def undoable(insp: Inspection) -> tuple[str, ...]:
    """The applied migrations an older image can undo, newest first: those above the newest
    one without its down step stored (`status`)."""
    if insp.fresh or not insp.applied:
        return ()
    kept = _read(insp)
    fit = takewhile(lambda a: a.version in kept and kept[a.version].fits(a), reversed(insp.applied))
    return tuple(a.name for a in fit)


def plan(
    settings: Settings, insp: Inspection, migrations: tuple[Migration, ...], run_code: bool = True
) -> Plan | None:
    """The downgrade to this image's last migration; None when the history is not above it.
    With `run_code` False (`status`), a `.py` migration is not replayed: no expected schema."""
    applied = insp.applied
    if insp.trusted or insp.fresh or not applied or not migrations:
        # No files at all: the usual "newer" refusal (a wrong PREFLIGHT_MIGRATIONS is far
        # likelier than a rollback to an empty schema).
        return None
    above = tuple(a for a in applied if a.version > migrations[-1].version)
    if not above:
        return None
    below = applied[: len(applied) - len(above)]
    newer = ", ".join(a.name for a in above)
    unapplied = history.pending(below, migrations)  # edited, renamed, missing: exit 5
    if unapplied:
        raise HistoryError(
            f"database is newer than these migration files: {newer} applied but missing "
            f"from the migrations folder, and {unapplied[0].name} was never applied: "
            f"these files are not the first ones the database applied",
            "run the image that applied them, or restore a backup taken before them",
        )
    kept = _read(insp)
    missing = [a for a in above if a.version not in kept or not kept[a.version].fits(a)]
    if settings.downgrade != "apply":
        raise HistoryError(
            f"database is newer than these migration files: {newer} applied but missing "
            f"from the migrations folder",
            "run the image that applied them, or restore an older backup"
            + (
                f" ({missing[-1].name} has no down step stored)"
                if missing
                else "; or roll back with PREFLIGHT_DOWNGRADE=apply: their down steps are "
                "stored (README, Rollback runbook)"
            ),
        )
    if missing:
        raise HistoryError(
            f"cannot downgrade to {migrations[-1].name}: {', '.join(a.name for a in missing)} "
            f"applied without a down step stored (none in its file, a .py migration, or "
            f"applied before the guard kept them)",
            "run the image that applied it, or restore the pre-migrate backup taken "
            "before it (README, Rollback runbook)",
        )
    steps = tuple(_step(kept[a.version], migrations[0].functions) for a in reversed(above))
    log.info(
        "downgrade: %d migration(s) to undo, newest first: %s (back to %s)",
        len(steps),
        ", ".join(m.name for m in steps),
        migrations[-1].name,
    )
    head = None
    if run_code or all(m.kind == "sql" for m in migrations):
        from preflight.sources.replay import replay  # only a downgrade replays

        head = replay(migrations, {len(migrations)})[len(migrations)]
        # What the older schema lacks is the downgrade's to drop: the steps declare it, so
        # the ledger reports it and refuses only rows lost from what stays.
        dropping = _say_losses(insp, head)
        steps = tuple(replace(m, loses=dropping) for m in steps)
    return Plan(
        set_fingerprint(migrations),
        (),
        (),
        head,
        migrations[-1].name,
        accepted=insp.accepted,
        steps=steps,
        undo=planner.names(steps),
        based_on=planner.history_key(applied),
    )


def _step(s: Stored, functions: AppFunctions | None) -> Migration:
    """A stored down step as a migration to run, its text proven to be what was stored."""
    label = f"{s.name} (stored down step)"
    if _sha(s.sql) != s.sha256:
        raise HistoryError(
            f"{label}: its text does not hash to the sha256 stored with it "
            f"({s.sha256[:12]}): it changed after it was stored; nothing was run",
            "restore the pre-migrate backup taken before it (README, Rollback runbook)",
        )
    body = _statements(s.sql, label)
    return Migration(s.version, s.name, Path(s.name), "sql", s.sha256, body, s.sql, functions)


def _say_losses(insp: Inspection, head: schema.Schema) -> tuple[Target, ...]:
    """Log (and return) the tables and columns the older schema lacks, with their rows."""
    live = insp.live_schema
    lines: list[str] = []
    dropping: list[Target] = []
    with closing(connect_ro(insp.file or insp.path)) as conn:
        for key, table in sorted(live.tables.items()):
            old = head.tables.get(key)
            if old is None:
                lines.append(f"table {table.name} ({_count(conn, table.name, None)})")
                dropping.append((fold(table.name), None))
                continue
            kept = {fold(c.name) for c in old.columns}
            for c in table.columns:
                if fold(c.name) not in kept and c.hidden not in (2, 3):
                    lines.append(
                        f"column {table.name}.{c.name} ({_count(conn, table.name, c.name)})"
                    )
                    dropping.append((fold(table.name), fold(c.name)))
    if not lines:
        log.info("downgrade: the older schema has every table and column of this one")
    for line in lines:
        log.warning("downgrade: drops %s", line)
    return tuple(dropping)


def _count(conn: sqlite3.Connection, table: str, column: str | None) -> str:
    try:
        if column is None:
            (n,) = conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()
            return f"{n} row(s)"
        n, filled = conn.execute(
            f"SELECT count(*), count({quote(column)}) FROM {quote(table)}"
        ).fetchone()
        return f"{n} row(s), {filled} with a value"
    except sqlite3.Error as exc:  # a virtual table whose module this SQLite lacks
        return f"rows not counted: {exc}"


def run(
    conn: sqlite3.Connection,
    p: Plan,
    run_one: Callable[[Migration], float],
    progress: dict[str, Any],
    label: str,
    strict: bool,
) -> None:
    """The down steps of `p`, newest first, inside apply's open transaction; the schema after
    them must equal this image's head (a downgrade never commits a schema in between)."""
    now = stored(conn)
    undo: tuple[Migration, ...] = p.steps
    for m in undo:
        s = now.get(m.version)
        if s is None or s.sha256 != m.sha256 or _sha(s.sql) != m.sha256:
            raise HistoryMoved(
                f"the stored down step of {m.name} changed after this guard planned; "
                f"nothing was run",
                "start again",
            )
    for m in undo:
        progress["running"].append(m.name)
        with step(label) as info:
            ms = run_one(m)
            history.log(conn, "downgraded", m.version, m.name, f"{ms:.1f} ms")
            info["what"] = f"{m.name}: undone by its stored down step"
    below = undo[-1].version - 1
    history.forget_after(conn, below)
    forget_after(conn, below)
    assert p.expected_head is not None
    from preflight.schema import drift  # a downgrade's, never a fresh build's

    found = drift.diff(p.expected_head, schema.snapshot(conn))
    errors, _ = planner.accepted_part(drift.errors(found, strict), p.accepted)
    if errors:
        raise MigrationFailed(
            f"downgrade: the down steps leave a schema that differs from what this image's "
            f"migrations make: {errors[0].message()} (+{len(errors) - 1} more)",
            "restore the pre-migrate backup taken before the upgrade instead "
            "(README, Rollback runbook)",
            details=(f"drift: {d.message()}" for d in errors),
        )
