"""Which backups are whose: the database's id, side records, listing, pruning. Databases of
one file name can share a folder: every operation considers only backups carrying its id.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from preflight.core.files import create_exclusive, fsync_dir, read_small, write_atomic
from preflight.fast.facts import ID, backup_name, uri


def identity_path(db: Path) -> Path:
    """A random id beside the database (not in it: a read-only command must not write it),
    carried by its backups; a restore never touches it."""
    return db.with_name(db.name + ID)


def _valid_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def read_identity(db: Path) -> str | None:
    """The id written beside `db`, or None (never backed up since backups carried one)."""
    text = (read_small(identity_path(db), 64) or b"").decode("ascii", "replace").strip()
    return text if _valid_id(text) else None


def identity(db: Path, backup_dir: Path) -> str | None:
    """The id `db` has, or would adopt: its lost id file, recovered from records of this path."""
    found = read_identity(db)
    if found:
        return found
    real = os.path.realpath(db)
    ids = {
        r.get("database_id") for r in records(backup_dir, db).values() if r.get("database") == real
    }
    return ids.pop() if len(ids) == 1 else None


def ensure_identity(db: Path, backup_dir: Path, given: str | None = None) -> str:
    """The id of `db` (or `given`, a record's), written beside it first if missing. Only
    with the guard's lock held."""
    found = read_identity(db)
    if found:
        return found
    new = given or identity(db, backup_dir) or os.urandom(16).hex()
    write_atomic(identity_path(db), f"{new}\n".encode())
    return new


@dataclass(frozen=True)
class BackupFile:
    """A complete backup. `version`: the last applied migration's number (0: none; None:
    unreadable). `record` False: taken before side records (listed by name, never pruned)."""

    path: Path
    taken_at: str
    reason: str
    bytes: int = 0
    version: int | None = None
    migration: str | None = None
    database_id: str | None = None
    record: bool = False

    def summary(self) -> dict[str, Any]:
        """The JSON form `status` prints (the fields but `record`)."""
        found = {**asdict(self), "path": str(self.path)}
        del found["record"]
        return found


def record_path(backup: Path) -> Path:
    """The side record of a backup, written before the backup is renamed in."""
    return backup.with_name(backup.name + ".json")


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_small(path, 1 << 16) or b"null")
    except ValueError:
        return None
    return data if isinstance(data, dict) and _valid_id(str(data.get("database_id"))) else None


def records(backup_dir: Path, db: Path) -> dict[str, dict[str, Any]]:
    """Backup name -> its side record, for names of this database's pattern."""
    if not backup_dir.is_dir():
        return {}
    found = {}
    for path in backup_dir.iterdir():
        if path.name.endswith(".db.json") and backup_name(path.name[:-5], db.stem):
            record = _read_record(path)
            if record is not None:
                found[path.name[:-5]] = record
    return found


# Files that name no database (temp files of versions before ids, a record cut short by
# a power cut) are removed by any guard once this old: no backup is that long in flight.
STALE = 24 * 3600.0
_TEMP_TAILS = (".tmp", ".tmp-wal", ".tmp-shm", ".tmp-journal")


def stamp(when: datetime) -> str:
    """A backup name's time: `YYYYMMDDTHHMMSS.mmmZ` (UTC)."""
    return when.strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"


def temp_path(backup: Path, database_id: str) -> Path:
    """Where `backup` is written before its rename: hidden, with the id telling whose it is."""
    return backup.with_name(f".{backup.name}.{database_id}.tmp")


def _temp_owner(name: str, stem: str) -> str | None:
    """The id a backup temp file of `stem` carries; "" for one that carries none; None: not one."""
    tail = next((t for t in _TEMP_TAILS if name.endswith(t)), None)
    if not name.startswith(".") or tail is None:
        return None
    base = name[1 : -len(tail)]
    if backup_name(base, stem) or (
        tail == ".tmp" and base.endswith(".json") and backup_name(base[:-5], stem)
    ):
        return ""  # a backup's or a record's temp file from a version before ids
    rest, _, ident = base.rpartition(".")
    return ident if _valid_id(ident) and backup_name(rest, stem) else None


def leftovers(backup_dir: Path, db: Path, database_id: str) -> list[Path]:
    """What crashed backups of this database left (temp files, records with no backup); files
    naming no database once `STALE`. Only with the guard's lock held."""
    if not backup_dir.is_dir():
        return []
    found = []
    for path in backup_dir.iterdir():
        name = path.name
        owner = _temp_owner(name, db.stem)
        if owner is None and name.endswith(".db.json") and backup_name(name[:-5], db.stem):
            if os.path.lexists(path.with_name(name[:-5])):
                continue  # the record of a backup
            record = _read_record(path)
            owner = str(record["database_id"]) if record else ""
        elif owner == "" and name.endswith(".json.tmp"):  # a record's rewrite (its stamp)
            record = _read_record(path.with_name(name[1:-4]))
            owner = str(record["database_id"]) if record else ""
        if owner == database_id or (owner == "" and _stale(path)):
            found.append(path)
    return found


def _stale(path: Path) -> bool:
    try:
        return path.lstat().st_mtime < time.time() - STALE
    except FileNotFoundError:
        return False


def claim(
    backup_dir: Path, db: Path, when: datetime, reason: str, fields: dict[str, Any]
) -> tuple[Path, Path]:
    """A backup's name, claimed by creating its side record exclusively: (backup, record).
    Another database's guard that took the same millisecond moves the next one along."""
    for _ in range(1000):
        taken_at = stamp(when)
        backup = backup_dir / f"{db.stem}-{taken_at}-{reason}.db"
        record = record_path(backup)
        when += timedelta(milliseconds=1)
        if os.path.lexists(backup):
            continue  # a backup from before records: no record claims its name
        try:
            fd = create_exclusive(record)
        except FileExistsError:
            continue
        try:
            with open(fd, "wb") as f:
                f.write(json.dumps({**fields, "taken_at": taken_at}, indent=1).encode())
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            record.unlink(missing_ok=True)
            raise
        fsync_dir(backup_dir)
        return backup, record
    raise FileExistsError(f"no free backup name in {backup_dir} near {stamp(when)}")


def held_version(path: Path) -> tuple[int | None, str | None]:
    """(number, name) of the last migration recorded in an SQLite file; (0, None) if none."""
    try:
        with closing(sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True)) as conn:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_preflight_history'"
            ).fetchone():
                return 0, None
            row = conn.execute(
                "SELECT version, name FROM _preflight_history ORDER BY version DESC LIMIT 1"
            ).fetchone()
            return (int(row[0]), str(row[1])) if row else (0, None)
    except (sqlite3.Error, ValueError, TypeError):
        return None, None


def list_backups(backup_dir: Path, db: Path) -> list[BackupFile]:
    """This database's complete backups, oldest first: records with its id (or path while
    the id file is missing), and unrecorded files of its name (from before records)."""
    if not backup_dir.is_dir():
        return []
    recorded = records(backup_dir, db)
    mine = identity(db, backup_dir)
    found = []
    for path in backup_dir.iterdir():
        match = backup_name(path.name, db.stem)
        if not match:
            continue
        record = recorded.get(path.name)
        if record is not None and record.get("database_id") != mine:
            continue
        try:
            size = path.stat().st_size
        except OSError:
            continue  # pruned by another guard while listing
        if record is not None and isinstance(record.get("version"), int):
            version, name = record["version"], record.get("migration")
        else:
            version, name = held_version(path)
        ident = record.get("database_id") if record else None
        found.append(BackupFile(path, *match, size, version, name, ident, record is not None))
    return sorted(found, key=lambda b: b.taken_at)


def record_of(backup: Path) -> dict[str, Any] | None:
    """A backup's side record (database, database_id, version...), or None."""
    return _read_record(record_path(backup))


def prune(backup_dir: Path, db: Path, keep: int) -> list[Path]:
    """Delete this database's oldest recorded backups beyond `keep` (0 keeps all), never the
    newest pre-migrate one."""
    mine = read_identity(db)
    backups = [b for b in list_backups(backup_dir, db) if b.record and b.database_id == mine]
    if keep <= 0 or len(backups) <= keep or mine is None:
        return []
    premigrate = [b for b in backups if b.reason == "pre-migrate"]
    protected = premigrate[-1].path if premigrate else None
    removed = []
    for b in backups[:-keep]:
        if b.path != protected:
            b.path.unlink()
            record_path(b.path).unlink(missing_ok=True)
            removed.append(b.path)
    if removed:
        fsync_dir(backup_dir)
    return removed
