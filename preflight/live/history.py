"""The database's migration history and append-only run log (tables, written in the
transaction that makes the change), and the failure record (a file: it survives a restore)."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, fields, replace
from pathlib import Path

from preflight.core import TYPE_CHECKING
from preflight.core.errors import HistoryError
from preflight.core.files import fsync_dir, write_atomic
from preflight.fast.facts import now as now

if TYPE_CHECKING:
    from typing import Protocol, TypeVar

    from preflight.live.records import Applied, FailureRecord
    from preflight.schema.drift import Difference

HISTORY = "_preflight_history"
LOG = "_preflight_log"
ACCEPTED = "_preflight_accepted"

_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {HISTORY} (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        applied_at TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        how TEXT NOT NULL CHECK (how IN ('applied', 'adopted', 'stamped'))
    )""",
    f"""CREATE TABLE IF NOT EXISTS {LOG} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        version INTEGER,
        name TEXT,
        detail TEXT,
        host TEXT,
        pid INTEGER
    )""",
    f"""CREATE TRIGGER IF NOT EXISTS {LOG}_append_only_update BEFORE UPDATE ON {LOG}
        BEGIN SELECT RAISE(ABORT, '{LOG} is append-only'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {LOG}_append_only_delete BEFORE DELETE ON {LOG}
        BEGIN SELECT RAISE(ABORT, '{LOG} is append-only'); END""",
)


def read(conn: sqlite3.Connection) -> tuple[Applied, ...] | None:
    """The applied migrations in order (None: no history table)."""
    if not has_table(conn, HISTORY):
        return None
    from preflight.live.records import Applied  # a database with a history only

    rows = conn.execute(
        f"SELECT version, name, sha256, applied_at, duration_ms, how FROM {HISTORY} ORDER BY version"
    )
    return tuple(Applied(*row) for row in rows)


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
    return found.fetchone() is not None


if TYPE_CHECKING:  # for the type checker: nothing asks for it at run time

    class Identity(Protocol):
        """What the history knows of a `migrations.Migration`."""

        @property
        def version(self) -> int: ...

        @property
        def name(self) -> str: ...

        @property
        def sha256(self) -> str: ...

    M = TypeVar("M", bound=Identity)


def pending(applied: tuple[Applied, ...], migrations: tuple[M, ...]) -> tuple[M, ...]:
    """The migrations still to apply; exit 5 for an applied file changed or gone, or a new one
    sorting before the last applied."""
    files = {m.version: m for m in migrations}
    gone = [a.name for a in applied if a.version not in files]
    if gone:
        raise HistoryError(
            f"database is newer than these migration files: {', '.join(gone)} "
            f"applied but missing from the migrations folder",
            "run the image that applied them, or restore an older backup",
        )
    for a in applied:
        m = files[a.version]
        if m.name != a.name:
            raise HistoryError(
                f"{m.name}: migration {a.version} was applied as {a.name}",
                "rename the file back; a new change needs a new number",
            )
        if m.sha256 != a.sha256:
            raise HistoryError(
                f"{m.name}: edited after it was applied (sha256 {a.sha256[:12]} in "
                f"history, {m.sha256[:12]} on disk)",
                "restore the original file and put the change in a new migration",
            )
    last = applied[-1].version if applied else 0
    done = {a.version for a in applied}
    late = [m.name for m in migrations if m.version < last and m.version not in done]
    if late:
        raise HistoryError(
            f"{', '.join(late)}: sorts before the last applied migration "
            f"{applied[-1].name} but was never applied",
            "renumber it after the last applied migration",
        )
    return tuple(m for m in migrations if m.version > last)


def ensure_tables(conn: sqlite3.Connection) -> None:
    for ddl in _DDL:
        conn.execute(ddl)


def record(conn: sqlite3.Connection, migration: Identity, how: str, duration_ms: float) -> None:
    """Record one migration as applied/adopted/stamped, and log it."""
    conn.execute(
        f"INSERT OR REPLACE INTO {HISTORY} VALUES (?, ?, ?, ?, ?, ?)",
        (migration.version, migration.name, migration.sha256, now(), duration_ms, how),
    )
    log(conn, how, migration.version, migration.name, f"{duration_ms:.1f} ms")


def forget_after(conn: sqlite3.Connection, version: int) -> int:
    """Remove history rows above `version` (stamp to an older version): how many."""
    return conn.execute(f"DELETE FROM {HISTORY} WHERE version > ?", (version,)).rowcount


def log(
    conn: sqlite3.Connection,
    event: str,
    version: int | None = None,
    name: str | None = None,
    detail: str | None = None,
) -> None:
    conn.execute(
        f"INSERT INTO {LOG} (at, event, version, name, detail, host, pid) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now(), event, version, name, detail, os.uname().nodename, os.getpid()),
    )


def difference_key(d: Difference) -> tuple[str, str, str | None, str | None]:
    return (d.object, d.kind, d.expected, d.actual)


def read_accepted(conn: sqlite3.Connection) -> tuple[Difference, ...]:
    """The differences an operator accepted with `stamp --force`."""
    if not has_table(conn, ACCEPTED):
        return ()
    from preflight.schema.drift import Difference  # only after a forced stamp

    rows = conn.execute(f"SELECT object, kind, expected, actual FROM {ACCEPTED} ORDER BY id")
    return tuple(Difference(*row) for row in rows)


def accept(conn: sqlite3.Connection, version: int, diffs: list[Difference]) -> None:
    """Record exactly `diffs` as accepted at `version` (its table made only when needed)."""
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {ACCEPTED} (
        id INTEGER PRIMARY KEY,
        object TEXT NOT NULL,
        kind TEXT NOT NULL,
        expected TEXT,
        actual TEXT,
        version INTEGER NOT NULL,
        accepted_at TEXT NOT NULL
    )""")
    conn.execute(f"DELETE FROM {ACCEPTED}")
    at = now()
    conn.executemany(
        f"INSERT INTO {ACCEPTED} (object, kind, expected, actual, version, "
        f"accepted_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(*difference_key(d), version, at) for d in diffs],
    )


def keep_accepted(conn: sqlite3.Connection, keep: list[Difference]) -> int:
    """Forget accepted differences not in `keep` (gone after a migration): how many."""
    wanted = {difference_key(d) for d in keep}
    rows = conn.execute(f"SELECT id, object, kind, expected, actual FROM {ACCEPTED}").fetchall()
    gone = [(r[0],) for r in rows if tuple(r[1:]) not in wanted]
    conn.executemany(f"DELETE FROM {ACCEPTED} WHERE id = ?", gone)
    return len(gone)


def read_failure(path: Path) -> FailureRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"a JSON object expected, not {type(data).__name__}")
        from preflight.live.records import FailureRecord  # a record was there

        # A newer guard's record may carry more: its meaning is in the fields we know.
        known = {f.name for f in fields(FailureRecord)}
        record = FailureRecord(**{k: v for k, v in data.items() if k in known})
        return replace(record, loss=tuple(record.loss))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise HistoryError(
            f"{path}: unreadable failure record ({exc})",
            "inspect it, then run 'preflight clear-failure'",
        ) from None


def write_failure(path: Path, record: FailureRecord) -> None:
    data = asdict(record)
    if not data["loss"]:
        del data["loss"]  # the record as guards before it wrote (and read) one
    write_atomic(path, json.dumps(data, indent=2).encode() + b"\n")


def clear_failure(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True
