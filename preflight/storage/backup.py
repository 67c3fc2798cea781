"""Backups, restores and private snapshots (how: docs/internals.md, steps 9 and 12).

A name in the backup folder is always a complete, verified copy; a restore never lands
next to a stale -wal/-shm/-journal (SQLite would replay them into the restored file).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from preflight.core import faults, signals
from preflight.core.errors import (
    DatabaseUnusable,
    EnvironmentProblem,
    LockTimeout,
    MigrationFailed,
    RestoreFailed,
)
from preflight.core.files import create_fresh, fsync_dir, fsync_file, remove_quietly, write_atomic
from preflight.fast.facts import DATA_SIDECARS, SIDECARS, quick_check, uri
from preflight.storage import catalog, digest, unchanged
from preflight.storage.digest import TREE, Fingerprint
from preflight.storage.steps import step

log = logging.getLogger("preflight")
T = TypeVar("T")


def quick_check_file(path: Path) -> str:
    """PRAGMA quick_check of a file opened immutable: reads it, creates no -wal/-shm."""
    with _frozen(path) as conn:
        return quick_check(conn)


def _frozen(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True))


def _objects(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])


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


def free_bytes(folder: Path) -> int:
    """Bytes this user may still write on the file system holding `folder` (or its nearest parent)."""
    while not folder.exists():
        folder = folder.parent
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def room_for_backup(db: Path, backup_dir: Path) -> None:
    """EnvironmentProblem (exit 7) unless the backup folder has room for a backup of `db`."""
    size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
    needed = size * 11 // 10 + (1 << 20)
    free = free_bytes(backup_dir)
    if free < needed:
        raise EnvironmentProblem(
            f"backup folder {backup_dir} has {free >> 10} KiB free, a "
            f"backup needs {needed >> 10} KiB",
            f"free space on {backup_dir} or set PREFLIGHT_BACKUP_DIR to a larger disk",
        )


def _claim(
    backup_dir: Path, db: Path, held: Path, database_id: str, reason: str, **extra: object
) -> tuple[Path, Path]:
    """`catalog.claim` a name for a backup holding what `held` holds, `extra` in its record."""
    version, migration = catalog.held_version(held)
    fields: dict[str, object] = {"database": os.path.realpath(db), "database_id": database_id}
    fields.update(reason=reason, version=version, migration=migration, **extra)
    return catalog.claim(backup_dir, db, datetime.now(timezone.utc), reason, fields)


def take(
    db: Path,
    backup_dir: Path,
    reason: str,
    fast: bool = True,
    vouched: str = "",
    held: threading.Event | None = None,
) -> Path:
    """A verified, consistent copy of `db` (WAL content included) in `backup_dir`, mode 0600.

    `fast`: copied whole under SQLite's write lock (`filecopy`), else (or when the lock is
    busy) by SQLite's online backup API. Room is demanded here only: a start that writes
    nothing needs none. The state copied fails quick_check: DatabaseUnusable (exit 6),
    nothing left. `vouched` (why, for the log): the full check `cache.vouching` recorded
    stands in for quick_check; the copy is still compared and hashed. `held`: see `Beside`.
    """
    room_for_backup(db, backup_dir)
    # What this call creates goes again when it fails: a refused start leaves no trace.
    created = [] if catalog.read_identity(db) else [catalog.identity_path(db)]
    created += [p for p in (backup_dir, *backup_dir.parents) if not p.exists()]
    backup_dir.mkdir(parents=True, exist_ok=True)
    final = backup_dir / f"{db.stem}-{catalog.stamp(datetime.now(timezone.utc))}-{reason}.db"
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
            from preflight.storage.filecopy import locked_copy  # not for a start writing nothing

            locked = locked_copy(db, tmp, not vouched, held)
        if locked is not None:
            faults.point("backup-temp-written")
            # Verified already: quick_check of the state copied (or `vouched`), and the
            # copy compared with it block by block, or a clone made under the same lock.
            fsync_file(tmp)
            with _frozen(tmp) as conn:
                result, copied, sha = "ok", _objects(conn), locked.tree
            expected, how, live = locked.expected, locked.method, locked.live
        else:
            for leftover in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            os.truncate(tmp, 0)
            expected, live = _copy_online(db, tmp), None
            faults.point("backup-temp-written")
            result, copied, sha = _while_syncing(tmp, lambda: _verify(tmp))
            how = "copied (SQLite backup API)"
            if result != "ok":
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
        # The record goes first: a name in the folder without one would be taken for
        # a backup from before records, listed for any database of this file name. It
        # keeps what a restore checks the copy against, and the live files as copied (a
        # retry finding them so reuses this backup).
        fields = Fingerprint(TREE, sha, tmp.stat().st_size).fields()
        if live:
            fields.update(live=live, live_since="it was taken")
        final, record = _claim(backup_dir, db, tmp, database_id, reason, **fields)
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
        denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        raise EnvironmentProblem(
            f"backup to {backup_dir} failed: {exc.strerror or exc}",
            "make the folder writable by this user, or set PREFLIGHT_BACKUP_DIR"
            if denied
            else "check the backup folder",
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


class Beside:
    """The pre-migrate backup taken in a thread beside an atomic run (`source.Beside`), and
    the run's quick_check while the copy goes on (docs/internals.md, "The backup beside
    the migration"). The run commits only once both passed."""

    def __init__(self, db: Path, backup_dir: Path, vouched: str, timeout: float) -> None:
        self.db, self.timeout = db, timeout
        self.held = threading.Event()
        self.path: Path | None = None
        self.error: BaseException | None = None
        self.stack = contextlib.ExitStack()
        self.thread = threading.Thread(
            target=self._run, args=(backup_dir, vouched), name="preflight-backup", daemon=True
        )

    def _run(self, backup_dir: Path, vouched: str) -> None:
        try:
            self.path = take(self.db, backup_dir, "pre-migrate", vouched=vouched, held=self.held)
        except BaseException as exc:  # raised again in the caller's thread by join()
            self.error = exc
        finally:
            self.held.set()  # a copy that failed before taking its read lock frees the caller

    def begin(self, conn: sqlite3.Connection) -> None:
        # A rollback journal's spill of a full page cache into the main file waits for the
        # copy's read lock: a busy wait as long as a slow copy (the default gives up after
        # the lock timeout and lets the cache grow), and a cache that rarely needs it.
        size = self.db.stat().st_size
        wait = self.timeout + size / (10 << 20)
        conn.execute(f"PRAGMA busy_timeout = {min(int(wait * 1000), 2**31 - 1)}")
        conn.execute("PRAGMA cache_size = -65536")  # for this run only: closed after COMMIT
        self.info = self.stack.enter_context(step("backup"))
        signals.start(self.thread)
        self.held.wait()
        if self.error is not None:
            self.join()

    def end(self, conn: sqlite3.Connection) -> None:
        # With the cache still large: a cache full of the run's pages would spill to read,
        # and wait for the copy.
        result = quick_check(conn)  # what the run made, uncommitted, while the copy goes on
        self.join()
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")  # COMMIT's own wait
        if result != "ok":
            raise MigrationFailed(f"verification: quick_check: {result[:200]}", "")

    def join(self) -> Path | None:
        """The backup, verified and in its folder (None: never begun); or its own error
        (exit 6, 7 or 8), the run then rolled back."""
        if self.thread.ident is None:
            return None
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.path is not None:
            self.info["what"] = f"{self.path.stat().st_size / (1 << 20):.1f} MiB, beside the run"
            self.info["tail"] = f" -> {self.path}"
            self.stack.close()  # the step's line, timed from begin (once)
        return self.path


def _stamp_record(final: Path, record: Path) -> None:
    """Add the renamed backup's inode stamp (`unchanged.stamp_of`) to its record: a restore
    by clone of the same untouched inode then needs no read. After the rename (it moves the
    ctime); a crash before leaves no stamp, and that restore hashes the clone instead."""
    try:
        data = json.loads(record.read_bytes())
        data["stamp"] = unchanged.stamp_of(os.stat(final))
        write_atomic(record, json.dumps(data, indent=1).encode())
    except (OSError, ValueError) as exc:
        log.debug("backup: no stamp in %s (%s); a restore hashes it instead", record, exc)


def _check_source(db: Path) -> None:
    """DatabaseUnusable (exit 6) if the live database fails quick_check (read-only)."""
    try:
        with contextlib.closing(sqlite3.connect(uri(db, mode="ro"), uri=True)) as conn:
            result = quick_check(conn)
    except sqlite3.DatabaseError as exc:
        result = str(exc)
    if result != "ok":
        raise DatabaseUnusable.failed_check(db, result)


def _copy_online(db: Path, tmp: Path) -> int:
    """Copy with SQLite's online backup API (WAL frames included); the source's object count."""
    # Read-only source: closing it cannot checkpoint, so a failed backup (exit 7)
    # leaves the database byte-identical. (inspect already recovered a hot journal.)
    with (
        contextlib.closing(sqlite3.connect(uri(db, mode="ro"), uri=True)) as src,
        contextlib.closing(sqlite3.connect(tmp)) as dst,
    ):
        src.backup(dst)
        return _objects(src)


def _verify(tmp: Path) -> tuple[str, int, str]:
    with _frozen(tmp) as conn:
        result, copied = quick_check(conn), _objects(conn)
    return result, copied, digest.hash_file(tmp)


def _while_syncing(tmp: Path, work: Callable[[], T]) -> T:
    """`work` (reading the finished `tmp`) while another thread fsyncs it: both only need
    the finished file. The caller renames only after both have succeeded."""
    import threading  # only a backup or restore needs it

    failed: list[BaseException] = []

    def sync() -> None:
        try:
            fsync_file(tmp)
        except BaseException as exc:  # re-raised in the caller's thread below
            failed.append(exc)

    syncer = threading.Thread(target=sync, name="preflight-fsync")
    signals.start(syncer)
    try:
        done = work()
    finally:
        syncer.join()
    if failed:
        raise failed[0]
    return done


def _foreign(path: Path) -> str:
    """Why `path` cannot be a backup of ours (empty, or no SQLite header), or ""."""
    with open(path, "rb") as f:
        if f.read(16) == b"SQLite format 3\x00":
            return ""
    return f"backup {path} is not an SQLite database (empty or foreign)"


def backup_problem(path: Path) -> str | None:
    """Why `path` cannot be restored (not SQLite, empty, changed, fails quick_check), or None.

    A backup whose record keeps its fingerprint is proven by `restore` itself, in the pass
    that copies it: here only its header and size. A -wal or hot -journal beside an
    unrecorded file is first replayed by `restore` on a private copy, then checked.
    """
    if problem := _foreign(path):
        return problem
    recorded = digest.recorded(catalog.record_of(path))
    if recorded is not None:
        size = path.stat().st_size
        if size != recorded.size:
            return (
                f"backup {path} is {size} bytes, its record says {recorded.size}: "
                f"it changed after it was taken"
            )
        return None
    if unchanged.sidecars(path):
        return None
    result = quick_check_file(path)
    return None if result == "ok" else f"backup {path} fails quick_check: {result[:200]}"


def restore(backup: Path, db: Path, keep_in: Path | None = None) -> Path | None:
    """Put `backup` in place of `db`, proven to be the backup as it was verified; with
    `keep_in`, the current state is kept there first (`keep_current`): its path, else None.

    Crash safety is in the order: the copy is written, proven and fsynced beside the
    database first (a bad backup or no room changes nothing); the live WAL is checkpointed
    next, so removing the sidecars loses nothing; the sidecars go before the rename, so
    the restored file never meets a stale WAL.
    """
    tmp = db.with_name(f".{db.name}.restore.tmp")
    saved, linked = None, False
    try:
        mode = db.stat().st_mode & 0o777 if db.exists() else 0o600
        how = _prepare(backup, tmp, mode)
        faults.point("restore-temp-written")
        if db.exists():
            try:
                with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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

    if problem := _foreign(backup):
        raise RestoreFailed(f"{problem}; nothing was changed", "choose another backup")
    # No fingerprint: a backup taken before records kept one, or a save that was never read.
    record = catalog.record_of(backup)
    fingerprint = digest.recorded(record)
    beside = unchanged.sidecars(backup)
    if beside and fingerprint is not None:
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
            stamp = record.get("stamp") if record else None  # unchanged.stamp_of, if kept
            how, sha = copy_hashed(backup, tmp, fd, meter, fingerprint, stamp)
        finally:
            flusher.stop()
        unchanged.settle(fd)  # a later write to the restored file moves its mtime
        if fingerprint is not None and not sha:
            os.fsync(fd)  # a clone of the very file that was hashed (see copy_hashed)
            return f"{how},"
        if fingerprint is not None:
            kind = "sha256" if fingerprint.kind == digest.PLAIN else "sha256 tree"
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
        result = _while_syncing(tmp, lambda: quick_check_file(tmp))
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
    with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
        _objects(conn)  # recovers a journal
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    for suffix in DATA_SIDECARS:
        leftover = Path(f"{tmp}{suffix}")
        if busy or (leftover.exists() and leftover.stat().st_size > 0):
            raise RestoreFailed(
                f"could not replay the {suffix} copied beside {tmp}; nothing was changed",
                "open the backup with sqlite3 to let it recover, then restore it",
            )
        leftover.unlink(missing_ok=True)
    Path(f"{tmp}-shm").unlink(missing_ok=True)


def keep_current(db: Path, backup_dir: Path) -> tuple[Path, bool]:
    """The database as it is now, kept in `backup_dir` before a restore: (path, linked).

    A hard link where it can, called with the live WAL checkpointed (the database keeps its
    name until the restore's rename: a rename away, then a crash, and the next start would
    build an empty one); its record keeps no fingerprint (nothing was read). Else a verified
    copy (`take`), or for a database too damaged for that, its raw files (`-damaged`).
    """
    backup_dir.mkdir(parents=True, exist_ok=True)
    if not unchanged.sidecars(db):
        _drop_stale_links(db, backup_dir)
        database_id = catalog.ensure_identity(db, backup_dir)
        final, record = _claim(backup_dir, db, db, database_id, "pre-restore", kept_by="hard link")
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
        return take(db, backup_dir, "pre-restore"), False
    except (EnvironmentProblem, DatabaseUnusable) as exc:
        # Its raw files aside, as private (0600) new files, outside the rotation.
        raw = backup_dir / f"{db.stem}-{catalog.stamp(datetime.now(timezone.utc))}-damaged.db"
        for suffix in ("", *DATA_SIDECARS):
            with contextlib.suppress(FileNotFoundError):
                copy_private(Path(f"{db}{suffix}"), Path(f"{raw}{suffix}"))
        fsync_dir(backup_dir)
        log.warning("backup: %s; kept the raw files as %s", exc.message, raw)
        return raw, False


def _drop_stale_links(db: Path, backup_dir: Path) -> None:
    """Remove saves that are still the live database's own inode: left by a crash between
    `keep_current`'s link and the restore's rename (the database holds that state anyway)."""
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


def snapshot(db: Path, folder: Path) -> Path | None:
    """A private copy of `db` (with its WAL or hot journal) in `folder`, writing nothing beside it.

    Opening the live database, even read-only, can create -wal/-shm files; `check` must
    not. So the files are copied, and the copy is consistent when nothing changed (size,
    mtime) in any of them meanwhile; else it tries again.
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

    for attempt in range(5):
        before = state()
        for suffix in ("", *DATA_SIDECARS):
            dest = Path(f"{target}{suffix}")
            dest.unlink(missing_ok=True)
            try:
                copy_private(Path(f"{db}{suffix}"), dest, sync=False)
            except FileNotFoundError:
                pass  # none, or a checkpoint removed it mid-copy (the state check retries)
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
        with (
            contextlib.closing(sqlite3.connect(uri(db, mode="ro"), uri=True, timeout=30)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)  # one step: the whole copy under one read transaction
    except sqlite3.Error as exc:
        raise EnvironmentProblem(
            f"{db} kept changing while it was copied for a private snapshot ({exc})",
            "try again when the application is idle",
        ) from None
    return target
