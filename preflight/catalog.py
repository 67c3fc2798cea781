"""Which backups are whose, and what each holds: the database's id, side records, listing, pruning.

Each backup `<stem>-<time>-<reason>.db` has a side record `<backup>.json` written before
it is renamed into place: the database's real path and id, the migration it holds.
Two databases of one file name can then share a backup folder: listing, pruning and
restore only ever consider the backups whose record carries this database's id.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .facts import BACKUP_REASONS, backup_name, uri
from .files import fsync_dir
from .files import write_atomic as write_new

REASONS = BACKUP_REASONS


def identity_path(db: Path) -> Path:
    """A random id beside the database: its backups carry it, so no other database's match.

    Beside it, not in it: tagging the database would write it on a read-only command or
    change its schema; a restore never touches this file, so the id survives restores.
    """
    return db.with_name(db.name + ".preflight-id")


def _valid_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def read_identity(db: Path) -> str | None:
    """The id written beside `db`, or None (never backed up since backups carried one)."""
    try:
        fd = os.open(identity_path(db), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
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
    """The id of `db`, written beside it first if missing. Only with the guard's lock held."""
    found = read_identity(db)
    if found:
        return found
    new = given if given and _valid_id(given) else identity(db, backup_dir) or secrets.token_hex(16)
    write_new(identity_path(db), f"{new}\n".encode())
    fsync_dir(db.parent)
    return new


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class BackupFile:
    """A complete backup: when, why, its size, the migration it holds and whose it is.

    `version` is the last applied migration's number (0: none; None: unreadable).
    `record` is False for backups taken before backups carried a side record: those
    are listed for the database whose file name matches, and never pruned.
    """

    path: Path
    taken_at: str
    reason: str
    size: int = 0
    version: int | None = None
    migration: str | None = None
    database_id: str | None = None
    record: bool = False

    def summary(self) -> dict[str, Any]:
        """The JSON form `status` prints."""
        return {
            "path": str(self.path),
            "taken_at": self.taken_at,
            "reason": self.reason,
            "bytes": self.size,
            "version": self.version,
            "migration": self.migration,
            "database_id": self.database_id,
        }


def record_path(backup: Path) -> Path:
    """The side record of a backup: `<backup>.json`, written before the backup is renamed in."""
    return backup.with_name(backup.name + ".json")


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            data = json.loads(f.read(1 << 16) or b"null")
    except (OSError, ValueError):
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


def held_version(path: Path) -> tuple[int | None, str | None]:
    """(number, name) of the last migration recorded in an SQLite file; (0, None) if none."""
    try:
        conn = sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True)
        try:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_preflight_history'"
            ).fetchone():
                return 0, None
            row = conn.execute(
                "SELECT version, name FROM _preflight_history ORDER BY version DESC LIMIT 1"
            ).fetchone()
            return (int(row[0]), str(row[1])) if row else (0, None)
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, TypeError):
        return None, None


def list_backups(backup_dir: Path, db: Path) -> list[BackupFile]:
    """This database's backups, oldest first (only complete ones: temp files never match).

    A backup is this database's when its record carries this database's id (or, while
    the id file is missing, this path), or when it has no record and the file name
    matches (made before records existed).
    """
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
        found.append(
            BackupFile(
                path,
                match[0],
                match[1],
                size,
                version,
                name,
                record.get("database_id") if record else None,
                record is not None,
            )
        )
    return sorted(found, key=lambda b: b.taken_at)


def record_of(backup: Path) -> dict[str, Any] | None:
    """A backup's side record (database, database_id, version...), or None."""
    return _read_record(record_path(backup))


def owner(backup: Path) -> str | None:
    """The database a backup's record says it came from, or None (no record)."""
    record = record_of(backup)
    return str(record.get("database")) if record else None


def prune(backup_dir: Path, db: Path, keep: int) -> list[Path]:
    """Delete this database's oldest backups beyond `keep` (0 keeps all).

    Only backups whose record carries this database's id: never another database's,
    never one from before records (whose it is cannot be told), never the newest
    pre-migrate one.
    """
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
