"""Backups, restores and private snapshots, with litestream's discipline.

A backup is written to a temp file, fsynced, verified, and only then renamed into
place, so a name in the backup folder is always a complete, verified copy. A restore
never lands next to a stale -wal/-shm/-journal: SQLite would replay them into the
restored file and silently corrupt it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from preflight.core import faults
from preflight.core.errors import DatabaseUnusable, EnvironmentProblem, LockTimeout, RestoreFailed
from preflight.core.files import create_fresh, fsync_dir, fsync_file, remove_quietly, write_atomic
from preflight.fast.facts import DATA_SIDECARS, SIDECARS, quick_check, uri
from preflight.storage import catalog, digest, unchanged
from preflight.storage.digest import TREE, Fingerprint
from preflight.storage.unchanged import reusable

__all__ = ["fsync_dir", "reusable", "uri", "write_atomic"]  # re-exported for callers of old

log = logging.getLogger("preflight")


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


def take(db: Path, backup_dir: Path, reason: str, fast: bool = True, vouched: str = "") -> Path:
    """A verified, consistent copy of `db` (WAL content included) in `backup_dir`, mode 0600.

    `fast`: copy the files whole under SQLite's write lock (see `filecopy`); when the
    lock is not free at once, or with `fast=False`, SQLite's online backup API. Room is
    demanded here, where a backup is taken, and nowhere else: a start that writes nothing
    needs none. The state copied passes quick_check, else DatabaseUnusable (exit 6) and
    nothing is left: a start's full check before it writes. `vouched` (why, for the log):
    a migrating start within the integrity interval relies on the full check recorded
    for this file (`cache.vouching`) instead; the copy is still compared and hashed.
    """
    room_for_backup(db, backup_dir)
    # What this call creates goes again when it fails: a refused start leaves no trace.
    created = [] if catalog.read_identity(db) else [catalog.identity_path(db)]
    created += [p for p in (backup_dir, *backup_dir.parents) if not p.exists()]
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
        locked = None
        if fast:
            from preflight.storage.filecopy import (
                locked_copy,  # not needed by a start that writes nothing
            )

            locked = locked_copy(db, tmp, check=not vouched)
        if locked is not None:
            faults.point("backup-temp-written")
            # Verified already: the source passed quick_check in the state we copied
            # (or, `vouched`, within the integrity interval), and the copy was compared
            # with it byte for byte, or is a clone of it made under the same lock.
            fsync_file(tmp)
            result, copied, sha = "ok", _object_count(tmp), locked.tree
            expected, how, live = locked.expected, locked.method, locked.live
        else:
            for leftover in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            os.truncate(tmp, 0)
            expected, live = _copy_online(db, tmp), None
            faults.point("backup-temp-written")
            result, copied, sha = _verify_while_syncing(tmp)
            how = "copied (SQLite backup API)"
        if result != "ok" and locked is None:
            _check_source(db)  # the copy is SQLite's own of the live state: corrupt there?
        if result != "ok" or copied != expected:
            raise EnvironmentProblem(
                f"backup {tmp} failed verification ({result}; {copied}/{expected} schema objects)",
                "check the disk holding the backup folder",
            )
        compared = locked is not None and not how.startswith("cloned")
        skipped = vouched and locked is not None
        checked = (f"quick_check skipped ({vouched})" if skipped else "quick_check ok") + (
            ", every block compared" if compared else ""
        )
        log.info("backup: %s %s, %s, sha256 tree %s", how, db.name, checked, sha[:16])
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
                # What a restore checks the backup against, in the pass that copies it.
                **Fingerprint(TREE, sha, tmp.stat().st_size).fields(),
                # The live files as copied: a retry finding them so reuses this backup.
                **({"live": live, "live_since": "it was taken"} if live else {}),
            },
        )
        faults.point("backup-before-rename")
        os.replace(tmp, final)
        fsync_dir(backup_dir)
        _stamp_record(final, record)
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
        if not final.exists():
            for path in created:
                with contextlib.suppress(OSError):  # a folder others filled meanwhile stays
                    path.rmdir() if path.is_dir() else path.unlink()
    return final


def _stamp_record(final: Path, record: Path) -> None:
    """Add the renamed backup's inode stamp (see unchanged.stamp_of) to its record.

    A restore by clone then needs no read: the same inode, untouched since, holds the
    hashed bytes. The rename changed the ctime, hence after it; a crash before this
    leaves the record without a stamp, and that restore hashes the clone instead.
    """
    try:
        data = json.loads(record.read_bytes())
        data["stamp"] = unchanged.stamp_of(os.stat(final))
        write_new(record, json.dumps(data, indent=1).encode())
    except (OSError, ValueError) as exc:
        log.debug("backup: no stamp in %s (%s); a restore hashes it instead", record, exc)


def _check_source(db: Path) -> None:
    """DatabaseUnusable (exit 6) if the live database fails quick_check (read-only)."""
    conn = sqlite3.connect(uri(db, mode="ro"), uri=True)
    try:
        result = quick_check(conn)
    except sqlite3.DatabaseError as exc:
        result = str(exc)
    finally:
        conn.close()
    if result != "ok":
        raise DatabaseUnusable(
            f"{db} fails PRAGMA quick_check: {result[:200]}",
            "restore a backup with 'preflight restore'",
        )


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


def _verify_while_syncing(tmp: Path) -> tuple[str, int, str]:
    """quick_check, object count and sha256 tree of `tmp`, while another thread fsyncs it.

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
        sha = digest.hash_file(tmp)
    finally:
        syncer.join()
    if failed:
        raise failed[0]
    return result, copied, sha


def _os_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "free space there or set PREFLIGHT_BACKUP_DIR to a larger disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable by this user, or set PREFLIGHT_BACKUP_DIR"
    return "check the backup folder"


def _recorded(backup: Path) -> tuple[Fingerprint, object] | None:
    """(fingerprint, inode stamp or None) its record keeps from when it was verified; None
    for a backup taken before records kept one, or a save that was never read."""
    record = catalog.record_of(backup)
    found = digest.recorded(record)
    return None if found is None or record is None else (found, record.get("stamp"))


def _sidecars(path: Path) -> list[str]:
    """The suffixes of a non-empty -wal or -journal beside `path` (SQLite would replay them)."""
    found = []
    for suffix in ("-wal", "-journal"):
        try:
            if os.stat(f"{path}{suffix}").st_size > 0:
                found.append(suffix)
        except FileNotFoundError:
            pass
    return found


def backup_problem(path: Path) -> str | None:
    """Why `path` cannot be restored (not SQLite, empty, changed, fails quick_check), or None.

    A backup whose record keeps its fingerprint is proven by `restore` itself, in the pass
    that copies it (a mismatch changes nothing): here only its header and size, not a
    second read. Any other file gets quick_check, unless a -wal or hot -journal beside it must
    first be replayed: `restore` does that on a private copy and checks the result.
    """
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            # We never write an empty backup; an empty or foreign file is not one.
            return f"backup {path} is not an SQLite database (empty or foreign)"
    recorded = _recorded(path)
    if recorded is not None:
        size = path.stat().st_size
        if size != recorded[0].size:
            return (
                f"backup {path} is {size} bytes, its record says {recorded[0].size}: "
                f"it changed after it was taken"
            )
        return None
    if _sidecars(path):
        return None
    result = quick_check_file(path)
    return None if result == "ok" else f"backup {path} fails quick_check: {result[:200]}"


def restore(backup: Path, db: Path, keep_in: Path | None = None) -> Path | None:
    """Put `backup` in place of `db`, proven to be the backup as it was verified.

    With `keep_in`, the current state is kept there as a `-pre-restore` backup first (see
    `keep_current`), right before the rename; its path is returned (else None).

    The proof: a backup whose record keeps a fingerprint (`digest`: a sha256 tree, or the
    plain sha256 of older records) is hashed in the pass that copies it (a clone: in one
    read of the clone), so the bytes put in place are the bytes verified when it was
    taken. Any other file (an older backup, a copy named by hand) is checked with
    quick_check once copied, its -wal or hot -journal replayed into the private copy first
    (the operator's files are never opened for writing). The restored file's state is
    then kept in the backup's record (`unchanged.remember`): a start finding it so reuses
    the backup.

    Order matters for crash safety: the copy is written, proven and fsynced beside the
    database first, so a bad backup or no room changes nothing; the live WAL is
    checkpointed and emptied next, so removing the sidecars loses nothing even if we die
    before the rename; the sidecars go before the rename, so the restored file never
    meets a stale WAL.
    """
    tmp = db.with_name(f".{db.name}.restore.tmp")
    saved, linked = None, False
    try:
        mode = db.stat().st_mode & 0o777 if db.exists() else 0o600
        how = _prepare(backup, tmp, mode)
        faults.point("restore-temp-written")
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
        if keep_in is not None and db.exists() and db.stat().st_size > 0:
            saved, linked = keep_current(db, keep_in)
        for suffix in SIDECARS:
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        fsync_dir(db.parent)
        faults.point("restore-before-rename")
        os.replace(tmp, db)
        fsync_dir(db.parent)
        if saved is not None and linked:
            os.chmod(saved, 0o600)  # its own inode now: private like every backup
        log.info("restore: %s %s into %s", how, backup, db.name)
        unchanged.remember(backup, db)
    except (OSError, sqlite3.Error) as exc:
        kept = ""
        if saved is not None and linked and not tmp.exists():
            kept = f"; the state it replaced is kept as {saved}"
        elif saved is not None and linked:
            # Not replaced: the save is still a second name of the live database.
            saved.unlink(missing_ok=True)
            catalog.record_path(saved).unlink(missing_ok=True)
        elif saved is not None:
            kept = f"; the state before is kept as {saved}"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise RestoreFailed(
                f"no space on {db.parent} to restore {db} from {backup}{kept}",
                f"free space on {db.parent}, then 'preflight restore {backup}'",
            ) from None
        raise RestoreFailed(
            f"restoring {db} from {backup} failed: {exc}{kept}",
            f"stop the app, delete {db}-wal/-shm/-journal and copy {backup} over {db} by hand",
        ) from None
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{s}") for s in SIDECARS)):
            leftover.unlink(missing_ok=True)  # a failed copy must not fill the disk
    return saved


def _prepare(backup: Path, tmp: Path, mode: int) -> str:
    """Write `tmp` (new, private, `mode`) as `backup`'s proven content, fsynced; how it was copied."""
    from preflight.core.progress import Meter
    from preflight.storage.filecopy import _Flusher, copy_hashed  # only restores need them

    with open(backup, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise RestoreFailed(
                f"backup {backup} is not an SQLite database (empty or foreign); nothing was "
                f"changed",
                "choose another backup",
            )
    recorded = _recorded(backup)
    beside = _sidecars(backup)
    if beside and recorded is not None:
        raise RestoreFailed(
            f"backup {backup} has a non-empty {backup.name}{beside[0]} beside it: it was "
            f"written to after it was taken, so its recorded hash no longer vouches for "
            f"it; nothing was changed",
            f"remove {backup}{beside[0]} to restore the backup as taken",
        )
    # Private and new: a link planted at the temp name is removed, never followed,
    # so the rename can only ever put a regular file in place of the database.
    fd = create_fresh(tmp)
    try:
        os.fchmod(fd, mode)  # the database keeps its own mode
        flusher = _Flusher(tmp)  # the disk writes the copy while it is made and hashed
        flusher.start()
        try:
            meter = Meter("restore", backup.stat().st_size)
            fingerprint, stamp = recorded if recorded else (None, None)
            how, sha = copy_hashed(backup, tmp, fd, meter, fingerprint, stamp)
        finally:
            flusher.stop()
        unchanged.settle(fd)  # a later write to the restored file moves its mtime
        if fingerprint is not None and not sha:
            os.fsync(fd)  # a clone of the very file that was hashed (see copy_hashed)
            return f"{how},"
        if fingerprint is not None:
            kind = fingerprint.describe()
            if sha != fingerprint.hex:
                raise RestoreFailed(
                    f"backup {backup} does not match the {kind} recorded when it was taken "
                    f"({sha[:16]}, recorded {fingerprint.hex[:16]}): it changed on disk; "
                    f"nothing was changed",
                    "choose another backup ('preflight status' lists them)",
                )
            os.fsync(fd)
            return f"{how}, {kind} matches the record,"
        if beside:
            # A copy taken with its -wal (or mid-transaction with its journal): SQLite
            # replays it into our private copy, never into the operator's files.
            for suffix in beside:
                copy_private(Path(f"{backup}{suffix}"), Path(f"{tmp}{suffix}"), sync=False)
            _replay(tmp)
            how += f", {'/'.join(beside)} replayed into the copy,"
        result = _check_while_syncing(tmp)
        if result != "ok":
            raise RestoreFailed(
                f"backup {backup} fails quick_check: {result[:200]}; nothing was changed",
                "choose another backup",
            )
        return f"{how}, quick_check ok,"
    finally:
        os.close(fd)


def _replay(tmp: Path) -> None:
    """Let SQLite replay `tmp`'s copied -wal (or roll back its hot -journal): one file."""
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # recovers a journal
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    for suffix in ("-wal", "-journal"):
        leftover = Path(f"{tmp}{suffix}")
        if busy or (leftover.exists() and leftover.stat().st_size > 0):
            raise RestoreFailed(
                f"could not replay the {suffix} copied beside {tmp}; nothing was changed",
                "open the backup with sqlite3 to let it recover, then restore it",
            )
        leftover.unlink(missing_ok=True)
    Path(f"{tmp}-shm").unlink(missing_ok=True)


def _check_while_syncing(tmp: Path) -> str:
    """quick_check of `tmp` while another thread fsyncs it (both need only the finished file)."""
    import threading  # only a restore of an unrecorded file needs it

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
    finally:
        syncer.join()
    if failed:
        raise failed[0]
    return result


def keep_current(db: Path, backup_dir: Path, reason: str = "pre-restore") -> tuple[Path, bool]:
    """The database as it is now, kept in `backup_dir` before a restore: (path, linked).

    A hard link where the folder is on the database's filesystem: nothing is copied,
    and the database keeps its name until the rename that replaces it (a rename away
    would leave no database if we died before the restore's rename, and the next start
    would build an empty one). Nothing was read, so its record keeps no sha256: a
    restore of it runs quick_check. Call it with the live WAL checkpointed and empty,
    right before the rename. Otherwise (a -wal or hot -journal still holding data, another
    filesystem, links refused) a verified copy (`take`), or for a database too damaged for
    that, its raw files (`-damaged`, outside the rotation).
    """
    backup_dir.mkdir(parents=True, exist_ok=True)
    if not _sidecars(db):
        _drop_stale_links(db, backup_dir)
        database_id = catalog.ensure_identity(db, backup_dir)
        version, migration = catalog.held_version(db)
        final, record = catalog.claim(
            backup_dir,
            db,
            datetime.now(timezone.utc),
            reason,
            {
                "database": os.path.realpath(db),
                "database_id": database_id,
                "reason": reason,
                "version": version,
                "migration": migration,
                "kept_by": "hard link",  # no sha256: a restore of it runs quick_check
            },
        )
        try:
            os.link(db, final)
        except OSError as exc:
            record.unlink(missing_ok=True)
            log.info("backup: cannot link %s into %s (%s); copying it", db.name, backup_dir, exc)
        else:
            fsync_dir(backup_dir)
            log.info("backup: current state kept as %s (a hard link: nothing copied)", final)
            return final, True
    try:
        return take(db, backup_dir, reason), False
    except (EnvironmentProblem, DatabaseUnusable) as exc:
        raw = keep_raw(db, backup_dir)
        log.warning("backup: %s; kept the raw files as %s", exc.message, raw)
        return raw, False


def _drop_stale_links(db: Path, backup_dir: Path) -> None:
    """Remove saves that are still the live database's own inode: left by a crash between
    `keep_current`'s link and the restore's rename (the database holds that state anyway,
    and the app's writes would have changed it)."""
    live = os.stat(db)
    for name in catalog.records(backup_dir, db):
        path = backup_dir / name
        try:
            if os.path.samestat(os.stat(path), live):
                path.unlink()
                catalog.record_path(path).unlink(missing_ok=True)
                log.info("backup: removed %s, a save left by an interrupted restore", path)
        except FileNotFoundError:
            pass


def keep_raw(db: Path, backup_dir: Path) -> Path:
    """The damaged database's raw files aside, as private (0600) new files, outside the rotation."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    target = backup_dir / f"{db.stem}-{stamp}-damaged.db"
    backup_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-journal"):
        source = Path(f"{db}{suffix}")
        if source.exists():
            copy_private(source, Path(f"{target}{suffix}"))
    fsync_dir(backup_dir)
    return target


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
