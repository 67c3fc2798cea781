"""The verified whole-file copy a backup makes under SQLite's write lock.

Faster than SQLite's online backup API (which copies page by page through the pager)
and as safe: the kernel copies the files (a reflink clone where the filesystem has one,
else copy_file_range), one thread runs quick_check on the source in the very state being
copied, another flushes the copy to disk, and every copied block is compared with the
source. `backup.take` falls back to the online backup API when this returns None.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from preflight.core.errors import DatabaseUnusable, EnvironmentProblem
from preflight.core.progress import Meter
from preflight.fast.facts import quick_check, uri

log = logging.getLogger("preflight")

FICLONE = 0x40049409  # ioctl: reflink a whole file (Btrfs, XFS, bcachefs, ZFS 2.2)


def locked_copy(db: Path, tmp: Path) -> int | None:
    """Copy the database's files whole under SQLite's write lock, verified; None: do it another way.

    Verification runs beside the copy: another thread runs quick_check on the source in
    the very state being copied (nothing can commit), and each copied block is compared
    with the source. Source corrupt: DatabaseUnusable. Lock busy or a block differs
    (another process checkpointed during the copy): None, and the caller uses the
    online backup API with a quick_check of the copy.

    Under the write lock no one can commit, so the rollback-journal main file cannot
    change, and a WAL can neither grow nor be reset (only a writer or a RESTART/TRUNCATE
    checkpoint, which needs that lock, resets it). A concurrent passive checkpoint may
    still copy WAL frames into the main file, but only frames our copy of the WAL also
    holds, so replaying that WAL onto the copy gives the same committed state. The copy
    is then folded into one file; the caller fsyncs it and checks its object count.
    """
    # A read transaction held open across the copy: our writer's close below then
    # cannot checkpoint the live WAL into the main file (that needs the database to
    # itself), so the live files stay byte-identical whatever happens.
    reader = sqlite3.connect(uri(db, mode="ro"), uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")
        expected = int(reader.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
        writer = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            try:
                writer.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                log.info(
                    "backup: %s is busy (%s); copying page by page with SQLite's backup "
                    "API instead",
                    db.name,
                    exc,
                )
                return None
            wal = Path(f"{db}-wal")
            total = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
            meter = Meter("backup", total)
            checker, flusher = _Checker(db), _Flusher(tmp)
            checker.start()
            flusher.start()
            try:
                done = copy_file(db, tmp, meter, verify=True)
                if done >= 0 and wal.exists() and wal.stat().st_size > 0:
                    os.close(os.open(f"{tmp}-wal", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    done = copy_file(wal, Path(f"{tmp}-wal"), meter, done, verify=True)
            finally:
                flusher.stop()
                checker.join()
            writer.execute("ROLLBACK")
        finally:
            writer.close()
    finally:
        reader.close()
    if isinstance(checker.error, sqlite3.DatabaseError) and not isinstance(
        checker.error, sqlite3.OperationalError
    ):
        raise DatabaseUnusable(
            f"{db} cannot be read: {checker.error}", "restore a backup with 'preflight restore'"
        )
    if checker.error is not None:
        raise checker.error
    if checker.result != "ok":
        raise DatabaseUnusable(
            f"{db} fails PRAGMA quick_check: {checker.result[:200]}",
            "restore a backup with 'preflight restore'",
        )
    if done < 0:
        log.info(
            "backup: %s changed while it was copied; copying page by page with SQLite's "
            "backup API instead",
            db.name,
        )
        return None
    if Path(f"{tmp}-wal").exists():
        # Opening the copy replays its WAL; TRUNCATE and the close leave one file
        # (still marked WAL mode, like the live one, so a restore keeps the mode).
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        if busy or Path(f"{tmp}-wal").exists():
            raise EnvironmentProblem(
                f"backup {tmp}: could not fold the copied WAL into it", "check the backup folder"
            )
    return expected


class _Checker:
    """PRAGMA quick_check of the live database in a thread (sqlite3 releases the GIL)."""

    def __init__(self, db: Path) -> None:
        import threading  # only a backup needs it

        self.db, self.result = db, ""
        self.error: BaseException | None = None
        # A daemon: a signal that interrupts the caller before join() must not leave the
        # process waiting for this thread at exit (the guard reports exit 12 and goes).
        self.thread = threading.Thread(target=self._run, name="preflight-quick-check", daemon=True)

    def _run(self) -> None:
        try:
            # Read-only: closing it cannot checkpoint the live WAL.
            conn = sqlite3.connect(uri(self.db, mode="ro"), uri=True)
            try:
                self.result = quick_check(conn)
            finally:
                conn.close()
        except BaseException as exc:  # re-raised by the caller
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()


class _Flusher:
    """fdatasync a file being written, over and over, until stopped.

    The disk then writes the copy while the CPU compares it and checks the source,
    instead of all at once in the final fsync (which the caller still does).
    """

    def __init__(self, path: Path) -> None:
        import threading  # only a backup needs it

        self.path, self.done = path, threading.Event()
        # A daemon, like _Checker: an interruption before stop() must not hang the exit.
        self.thread = threading.Thread(target=self._run, name="preflight-flush", daemon=True)

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # the final fsync reports any real problem
        try:
            while not self.done.wait(0.1):
                os.fdatasync(fd)
        except OSError:
            pass  # only an early flush: the caller's final fsync reports a real failure
        finally:
            os.close(fd)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _same(fin: int, fout: int, start: int, length: int) -> bool:
    """True when `length` bytes at `start` are equal in both files."""
    # Two reused 1 MiB buffers: fresh bytes objects per block would cost a page fault
    # per 4 KiB and run at a third of the speed.
    block = 1 << 20
    a, b = bytearray(block), bytearray(block)
    for pos in range(start, start + length, block):
        want = min(block, start + length - pos)
        n, m = os.preadv(fin, [a], pos), os.preadv(fout, [b], pos)
        # bytearray == is memcmp; memoryview == would compare byte objects one by one
        if n != want or m != want or (a != b if n == block else a[:n] != b[:n]):
            return False
    return True


def copy_file(
    src: Path, dst: Path, meter: Meter | None = None, offset: int = 0, verify: bool = False
) -> int:
    """Copy `src` over the existing `dst` in the kernel; returns bytes copied plus `offset`.

    A reflink clone (FICLONE) where the filesystem has one (instant, copy-on-write),
    else copy_file_range (no round trip through Python), else plain reads and writes.
    With `verify`, each block is compared with the source after copying: -1 if one differs.
    """
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fout.truncate(0)
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            if verify and not _same(fin.fileno(), fout.fileno(), 0, size):
                return -1
            if meter:
                meter.update(offset + size, "cloned")
            return offset + size
        except OSError:
            pass  # no reflinks here (ext4, tmpfs, another filesystem): copy the bytes
        copied, step = 0, 32 << 20
        kernel = hasattr(os, "copy_file_range")
        while copied < size:
            n = 0
            if kernel:
                try:
                    n = os.copy_file_range(
                        fin.fileno(), fout.fileno(), min(step, size - copied), copied, copied
                    )
                except OSError:
                    kernel = False
            if not kernel:
                fin.seek(copied)
                block = fin.read(min(step, size - copied))
                fout.seek(copied)
                fout.write(block)
                n = len(block)
            if n == 0:
                break  # the file shrank under us; the verification will say so
            if verify and not _same(fin.fileno(), fout.fileno(), copied, n):
                return -1
            copied += n
            if meter:
                meter.update(offset + copied)
        if verify and (copied != size or os.fstat(fin.fileno()).st_size != size):
            return -1
    return offset + copied
