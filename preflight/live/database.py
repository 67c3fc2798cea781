"""Opening and inspecting the live database, and the checks around it: all read-only."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from preflight import schema
from preflight.core import TYPE_CHECKING
from preflight.core.errors import DatabaseUnusable, EnvironmentProblem, LockTimeout
from preflight.core.files import private_folder
from preflight.fast.facts import (
    DATA_SIDECARS,
    SQLITE_TMP,
    connect_ro,
    probe,
    quick_check,
    recorded_in,
    size_of,
)
from preflight.live import history
from preflight.storage import cache

if TYPE_CHECKING:
    from preflight.live.records import Applied
    from preflight.schema import drift


def connect(db: Path, timeout: float) -> sqlite3.Connection:
    """Autocommit (we BEGIN/COMMIT), FKs off here (a no-op inside a transaction)."""
    conn = sqlite3.connect(db, timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


@dataclass(frozen=True)
class Inspection:
    path: Path
    existed: bool  # a file was there (possibly zero bytes)
    size: int  # bytes in the main file when inspected
    fresh: bool  # no file, zero bytes, or no objects and no history
    applied: tuple[Applied, ...] | None  # None: no history table
    live: schema.Schema | None  # None only when `trusted` (not read)
    schema_hash: str = ""  # cache.schema_hash of the live schema ("" when fresh)
    accepted: tuple[drift.Difference, ...] = ()  # drift.Difference rows accepted by `stamp --force`
    file: Path | None = None  # the file read (a private snapshot when `path` is shown instead)
    checked: bool = False  # a full PRAGMA quick_check ran and passed
    trusted: bool = False  # the schema text hashed to what the cache vouches for: not read
    recorded: tuple[str, ...] | None = None  # the version the source's table records, as text

    @property
    def live_schema(self) -> schema.Schema:
        if self.live is None:
            raise ValueError(f"{self.path}: schema trusted by the cache, not read")
        return self.live


def inspect(
    db: Path,
    shown: Path | None = None,
    trust: Callable[[tuple[str, ...] | None], str | None] | None = None,
    quick_check: bool = True,
    source: str = "files",
) -> Inspection:
    """Fresh or not, the cheap checks, `quick_check`, history, live schema. `shown`: the path
    named in messages when `db` is a private snapshot. A schema text hashing to what `trust`
    vouches for at the version `source` records is not read (`trusted`). `quick_check=False`:
    the full check only when the cheap checks cannot vouch (a hot journal, a short file)."""
    if not db.exists() or db.stat().st_size == 0:
        return Inspection(shown or db, db.exists(), 0, True, None, schema.Schema())
    size = db.stat().st_size
    real, db = db, shown or db
    verdict, why = probe(str(real))
    if verdict == "bad":
        raise DatabaseUnusable(
            f"{db} {why}", "point PREFLIGHT_DB at the right file or restore a backup"
        )
    # Read-only, so closing cannot checkpoint the WAL into the main file: a refusal leaves
    # the database byte-identical. A hot rollback journal needs a writable connection,
    # because SQLite must roll it back before anything can be read.
    if header_mode(real) == 1 and size_of(f"{real}-wal") > 0:
        # SQLite replays a -wal even into a database in rollback mode: one left beside a
        # restored or copied file would overwrite it with another database's pages.
        raise DatabaseUnusable(
            f"{db}-wal is a stale WAL: {db} is not in WAL mode, so it is left "
            f"over from another database or an older copy, and SQLite "
            f"would replay it into this one",
            f"move {db}-wal and {db}-shm away (keep them), then start again",
        )
    hot = size_of(f"{real}-journal") > 0
    if verdict == "short":
        raise DatabaseUnusable(
            f"{db} {why}: part of it is lost",
            DatabaseUnusable.RESTORE
            + (f", or put back the {db}-wal that went with it" if header_mode(real) == 2 else ""),
        )
    if hot:
        _rehearse_rollback(real, db)
    checked = quick_check or hot or verdict != "ok"
    try:
        conn = sqlite3.connect(real, isolation_level=None) if hot else connect_ro(real)
        with closing(conn):
            if checked:
                full_check(conn, db)
            applied = history.read(conn)
            accepted = history.read_accepted(conn)
            rec = recorded_in(conn, source)
            text_hash = cache.schema_hash(conn)
            vouched = trust(rec) if trust is not None else None
            trusted = vouched is not None and text_hash == vouched
            live = None if trusted else schema.snapshot(conn)
    except sqlite3.DatabaseError as exc:
        raise _unreadable(db, exc) from None
    fresh = applied is None and live is not None and live.is_empty()
    return Inspection(
        db, True, size, fresh, applied, live, text_hash, accepted, real, checked, trusted, rec
    )


def _unreadable(db: Path, exc: sqlite3.DatabaseError) -> LockTimeout | DatabaseUnusable:
    if "locked" in str(exc) or "busy" in str(exc):
        return LockTimeout(
            f"{db} is locked by another process: {exc}", "stop the other writer, then start again"
        )
    return DatabaseUnusable(f"{db} cannot be read: {exc}", DatabaseUnusable.RESTORE)


def full_check(conn: sqlite3.Connection, db: Path) -> None:
    """PRAGMA quick_check reads every page: DatabaseUnusable (exit 6) unless it says ok."""
    try:
        result = quick_check(conn)
    except sqlite3.DatabaseError as exc:  # a page too broken to report on: SQLite gives up
        if "locked" in str(exc) or "busy" in str(exc):
            raise
        result = str(exc)
    if result != "ok":
        raise DatabaseUnusable.failed_check(db, result)


def check_before_writing(db: Path) -> None:
    """The full check, for a write the inspection did not check for (--integrity)."""
    try:
        with closing(connect_ro(db)) as conn:
            full_check(conn, db)
    except sqlite3.DatabaseError as exc:
        raise _unreadable(db, exc) from None


def header_mode(db: Path) -> int:
    """The journal mode the header promises: 1 rollback journal, 2 WAL (bytes 18-19)."""
    with open(db, "rb") as f:
        head = f.read(20)
    return head[18] if len(head) == 20 else 0


def _rehearse_rollback(real: Path, db: Path) -> None:
    """Roll a hot journal back on a private copy first: one from another database would
    corrupt this one, and a rollback cannot be undone."""
    # The fallback: the database's folder under `migrate`, the private copy's under check.
    from preflight.storage.backup import snapshot  # only for a hot journal

    with private_folder("preflight-journal-", fallback=real.parent) as tmp:
        try:
            copy = snapshot(real, tmp)
        except (OSError, EnvironmentProblem):
            return  # no room to rehearse: SQLite rolls it back as any opener would
        if copy is None:
            return  # gone meanwhile: nothing to roll back
        try:
            with closing(sqlite3.connect(copy, isolation_level=None)) as conn:
                result = quick_check(conn)
        except sqlite3.DatabaseError as exc:
            result = str(exc)
    if result != "ok":
        raise DatabaseUnusable(
            f"{db}-journal is a hot journal that would roll {db} back into a "
            f"corrupt database ({result[:100]}): it is probably from another "
            f"database",
            f"move {db}-journal away (keep it) and start again, or restore a backup",
        )


def assert_not_busy(db: Path, timeout: float) -> None:
    """Fail early (exit 8, nothing changed) if another process holds the write lock."""
    if not db.exists():
        return
    with closing(sqlite3.connect(db, timeout=timeout, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise LockTimeout(
                f"{db} is locked by another writer ({exc}) after {timeout:g} s",
                "stop the process writing to it (the old app?), then start again",
            ) from None


def live_state(db: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """Size, mtime and inode of `db` and its sidecars: what any write changes."""
    out: list[tuple[int, int, int] | None] = []
    for suffix in ("", *DATA_SIDECARS):
        try:
            st = os.stat(f"{db}{suffix}")
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def recorded(db: Path, source: str) -> tuple[str, ...] | None:
    """The version `source` records in `db`, after a write (before it: `inspect`)."""
    if not db.exists() or db.stat().st_size == 0:
        return None
    with closing(connect_ro(db)) as conn:
        return recorded_in(conn, source)


@contextmanager
def sqlite_temp_folder(db: Path) -> Iterator[Path]:
    """SQLite's temp files (a big CREATE INDEX's sorter, a rebuild's copy) in a private folder
    beside the database, not in /tmp, which a read-only root may not have."""
    folder = db.with_name(db.name + SQLITE_TMP)
    if folder.is_symlink() or folder.is_file():
        folder.unlink()  # planted or left: never followed
    _remove(folder)  # a killed start's
    folder.mkdir(mode=0o700)
    _temp_directory(str(folder))
    try:
        yield folder
    finally:
        _temp_directory("")
        _remove(folder)


def _remove(folder: Path) -> None:
    """rmtree, importing shutil (~2 ms of a fresh build) only for a killed start's leftovers:
    SQLite unlinks its temp files as it opens them."""
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _temp_directory(path: str) -> None:
    """Where every connection of this process puts its temp files ('': SQLite's default)."""
    with closing(sqlite3.connect(":memory:")) as conn:
        quoted = path.replace("'", "''")
        conn.execute(f"PRAGMA temp_store_directory = '{quoted}'")
