"""Backups, restores and private snapshots, with litestream's discipline.

A backup is written to a temp file, fsynced, verified, and only then renamed into
place, so a name in the backup folder is always a complete, verified copy. A restore
never lands next to a stale -wal/-shm/-journal: SQLite would replay them into the
restored file and silently corrupt it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from preflight.core import faults
from preflight.core.errors import EnvironmentProblem, LockTimeout, RestoreFailed
from preflight.core.files import create_fresh, fsync_dir, fsync_file, remove_quietly, write_atomic
from preflight.fast.facts import DATA_SIDECARS, SIDECARS, quick_check, uri
from preflight.storage import catalog

__all__ = ["fsync_dir", "uri", "write_atomic"]  # re-exported for callers of old

log = logging.getLogger("preflight")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def db_size(db: Path) -> int:
    """Bytes in the database and its WAL (what a backup has to hold)."""
    total = 0
    for path in (db, Path(f"{db}-wal")):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def quick_check_file(path: Path) -> str:
    """PRAGMA quick_check of a file opened immutable: reads it, creates no -wal/-shm."""
    conn = sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True)
    try:
        return quick_check(conn)
    finally:
        conn.close()


def copy_private(source: Path, target: Path, sync: bool = True) -> None:
    """Copy `source` to a new private file `target` (see files.create_fresh); fsync it if `sync`."""
    with open(source, "rb") as src:
        fd = create_fresh(target)
        try:
            # sendfile: the kernel copies, as shutil.copyfile would (and it cannot do O_EXCL)
            while os.sendfile(fd, src.fileno(), None, 1 << 26) > 0:
                pass
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """Write `path` (0600) by a private temp file and a rename (see files.write_atomic)."""
    write_atomic(path, data)


def free_bytes(folder: Path) -> int:
    """Bytes this user may still write on the file system holding `folder` (or its nearest parent)."""
    while not folder.exists():
        folder = folder.parent
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def room_for_backup(db: Path, backup_dir: Path) -> None:
    """EnvironmentProblem (exit 7) unless the backup folder has room for a backup of `db`."""
    needed = db_size(db) * 11 // 10 + (1 << 20)
    free = free_bytes(backup_dir)
    if free < needed:
        raise EnvironmentProblem(
            f"backup folder {backup_dir} has {free >> 10} KiB free, a "
            f"backup needs {needed >> 10} KiB",
            f"free space on {backup_dir} or set PREFLIGHT_BACKUP_DIR to a larger disk",
        )


def take(db: Path, backup_dir: Path, reason: str, fast: bool = True) -> Path:
    """A verified, consistent copy of `db` (WAL content included) in `backup_dir`, mode 0600.

    `fast`: copy the files whole under SQLite's write lock (see `filecopy`); when the
    lock is not free at once, or with `fast=False`, SQLite's online backup API. Room is
    demanded here, where a backup is taken, and nowhere else: a start that writes nothing
    needs none.
    """
    room_for_backup(db, backup_dir)
    backup_dir.mkdir(parents=True, exist_ok=True)
    when = datetime.now(timezone.utc)
    final = backup_dir / f"{db.stem}-{catalog.stamp(when)}-{reason}.db"
    tmp: Path | None = None
    record: Path | None = None  # once claimed: written before the rename, ours to remove
    try:
        database_id = catalog.ensure_identity(db, backup_dir)
        # Left by a crash of ours (we hold the lock); never another database's: its guard
        # may be writing into a shared folder right now.
        for stale in catalog.leftovers(backup_dir, db, database_id):
            stale.unlink(missing_ok=True)
        tmp = catalog.temp_path(final, database_id)
        os.close(create_fresh(tmp))
        expected = None
        if fast:
            from preflight.storage.filecopy import (
                locked_copy,  # not needed by a start that writes nothing
            )

            expected = locked_copy(db, tmp)
        if expected is not None:
            faults.point("backup-temp-written")
            # Verified already: the source passed quick_check in the state we copied,
            # and the copy was compared with it byte for byte (see filecopy).
            fsync_file(tmp)
            result, copied = "ok", _object_count(tmp)
        else:
            for leftover in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            os.truncate(tmp, 0)
            expected = _copy_online(db, tmp)
            faults.point("backup-temp-written")
            result, copied = _verify_while_syncing(tmp)
        if result != "ok" or copied != expected:
            raise EnvironmentProblem(
                f"backup {tmp} failed verification ({result}; {copied}/{expected} schema objects)",
                "check the disk holding the backup folder",
            )
        version, migration = catalog.held_version(tmp)
        # The record goes first: a name in the folder without one would be taken for
        # a backup from before records, listed for any database of this file name.
        final, record = catalog.claim(
            backup_dir,
            db,
            when,
            reason,
            {
                "database": os.path.realpath(db),
                "database_id": database_id,
                "reason": reason,
                "version": version,
                "migration": migration,
            },
        )
        faults.point("backup-before-rename")
        os.replace(tmp, final)
        fsync_dir(backup_dir)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise EnvironmentProblem(
                f"backup to {backup_dir} failed: {exc.strerror} (the disk is full)",
                f"free space on {backup_dir} (or set PREFLIGHT_BACKUP_DIR to a larger disk)",
            ) from None
        raise EnvironmentProblem(
            f"backup to {backup_dir} failed: {exc.strerror or exc}", _os_hint(exc)
        ) from None
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            from preflight.storage.holders import find  # only this message needs it

            who = "; ".join(h.describe() for h in find(db)[:3]) or "another process"
            raise LockTimeout(
                f"backup of {db} failed: the database is locked by {who} ({exc})",
                "wait for that process's transaction to end (or stop it), then back up again",
            ) from None
        raise EnvironmentProblem(
            f"backup to {backup_dir} failed: {exc}",
            f"free space on {backup_dir} (or set PREFLIGHT_BACKUP_DIR to a "
            f"larger disk) and check its permissions",
        ) from None
    finally:
        if tmp is not None:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                remove_quietly(leftover, "backup")  # after a success, an I/O error is no failure
        if record is not None and not final.exists():
            remove_quietly(record, "backup")
    return final


def _copy_online(db: Path, tmp: Path) -> int:
    """Copy with SQLite's online backup API, page by page; returns the source's object count."""
    # Read-only source: closing it cannot checkpoint, so a failed backup (exit 7)
    # leaves the database byte-identical. (inspect already recovered a hot journal.)
    src = sqlite3.connect(uri(db, mode="ro"), uri=True)
    dst = sqlite3.connect(tmp)
    try:
        # The online backup API copies a consistent snapshot that includes
        # frames still in the WAL; copying the main file alone would lose them.
        src.backup(dst)
        return int(src.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    finally:
        dst.close()
        src.close()


def _object_count(path: Path) -> int:
    conn = sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    finally:
        conn.close()


def _verify_while_syncing(tmp: Path) -> tuple[str, int]:
    """quick_check and object count of `tmp`, while another thread fsyncs it.

    Both only need the finished file: reading it from the page cache and flushing it
    to disk can overlap. The caller renames only after both have succeeded.
    """
    import threading  # only a backup needs it

    failed: list[BaseException] = []

    def sync() -> None:
        try:
            fsync_file(tmp)
        except BaseException as exc:  # re-raised in the caller's thread below
            failed.append(exc)

    syncer = threading.Thread(target=sync, name="preflight-fsync")
    syncer.start()
    try:
        result = quick_check_file(tmp)
        copied = _object_count(tmp)
    finally:
        syncer.join()
    if failed:
        raise failed[0]
    return result, copied


def _os_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "free space there or set PREFLIGHT_BACKUP_DIR to a larger disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable by this user, or set PREFLIGHT_BACKUP_DIR"
    return "check the backup folder"


def backup_problem(path: Path) -> str | None:
    """Why `path` cannot be restored (not SQLite, empty, fails quick_check), or None."""
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            # We never write an empty backup; an empty or foreign file is not one.
            return f"backup {path} is not an SQLite database (empty or foreign)"
    result = quick_check_file(path)
    return None if result == "ok" else f"backup {path} fails quick_check: {result[:200]}"


def restore(backup: Path, db: Path) -> None:
    """Put `backup` in place of `db`, byte for byte, and confirm it.

    Order matters for crash safety: the backup is copied beside the database first, so
    running out of space changes nothing; the live WAL is checkpointed and emptied next,
    so removing the sidecars loses nothing even if we die before the rename; the
    sidecars go before the rename, so the restored file never meets a stale WAL.
    """
    tmp = db.with_name(f".{db.name}.restore.tmp")
    try:
        problem = backup_problem(backup)
        if problem:
            raise RestoreFailed(problem, "choose another backup")
        mode = db.stat().st_mode & 0o777 if db.exists() else 0o600
        import shutil  # only a restore copies this way

        # Private and new: a link planted at the temp name is removed, never followed,
        # so the rename below can only ever put a regular file in place of the database.
        with open(backup, "rb") as src, open(create_fresh(tmp), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            os.fchmod(dst.fileno(), mode)  # the database keeps its own mode
            dst.flush()
            os.fsync(dst.fileno())
        faults.point("restore-temp-written")
        # Copied before touching the live files: no room for the copy fails with the
        # database exactly as it was.
        if db.exists():
            try:
                conn = sqlite3.connect(db, isolation_level=None)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                # A damaged database is about to be replaced; its WAL goes with it.
                log.debug("restore: checkpoint of %s failed (%s); replacing it anyway", db, exc)
        for suffix in SIDECARS:
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        fsync_dir(db.parent)
        faults.point("restore-before-rename")
        os.replace(tmp, db)
        fsync_dir(db.parent)
        if sha256_file(db) != sha256_file(backup) or quick_check_file(db) != "ok":
            raise RestoreFailed(
                f"restored {db} does not match backup {backup}",
                f"stop the app and copy {backup} over {db} by hand",
            )
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise RestoreFailed(
                f"no space on {db.parent} to restore {db} from {backup}",
                f"free space on {db.parent}, then 'preflight restore {backup}'",
            ) from None
        raise RestoreFailed(
            f"restoring {db} from {backup} failed: {exc}",
            f"stop the app, delete {db}-wal/-shm/-journal and copy {backup} over {db} by hand",
        ) from None
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; a failed copy must not fill the disk


def snapshot(db: Path, folder: Path, tries: int = 5) -> Path | None:
    """A private copy of `db` (with its WAL or hot journal) in `folder`, writing nothing beside it.

    Opening the live database, even read-only, can create -wal/-shm files; `check` must
    not. So this copies the files and proves the copy consistent: nothing changed
    (size, mtime) in any of them while they were copied, else it tries again.
    """
    if not db.exists():
        return None
    target = folder / db.name

    def state() -> list[tuple[int, int] | None]:
        out: list[tuple[int, int] | None] = []
        for suffix in ("", *DATA_SIDECARS):
            try:
                st = os.stat(f"{db}{suffix}")
                out.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return out

    for attempt in range(tries):
        before = state()
        for suffix in ("", *DATA_SIDECARS):
            dest = Path(f"{target}{suffix}")
            dest.unlink(missing_ok=True)
            if Path(f"{db}{suffix}").exists():
                try:
                    copy_private(Path(f"{db}{suffix}"), dest, sync=False)
                except FileNotFoundError:
                    pass  # a checkpoint removed it mid-copy; the state check below retries
        if state() == before:
            return target
        time.sleep(0.05 * (attempt + 1))
    # A busy app commits faster than the files can be copied. It has the database open,
    # so its -wal/-shm (WAL) already exist and a read-only reader creates nothing (rollback
    # mode never does): SQLite's own read lock gives one consistent state instead.
    for suffix in ("", *DATA_SIDECARS):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.close(create_fresh(target))
    try:
        src = sqlite3.connect(uri(db, mode="ro"), uri=True, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # one step: the whole copy under one read transaction
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise EnvironmentProblem(
            f"{db} kept changing while it was copied for a private snapshot ({exc})",
            "try again when the application is idle",
        ) from None
    return target
