"""The verified whole-file copy a backup makes under SQLite's write lock (docs/internals.md,
step 9): faster than the online backup API, which copies page by page through the pager.
`copy_hashed` is the restore's copy, hashed as written (`digest`).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preflight.core import signals
from preflight.core.errors import DatabaseUnusable, EnvironmentProblem
from preflight.core.progress import Meter
from preflight.fast.facts import quick_check, uri
from preflight.storage import digest, unchanged
from preflight.storage.digest import Fingerprint

log = logging.getLogger("preflight")

FICLONE = 0x40049409  # ioctl: reflink a whole file (Btrfs, XFS, bcachefs, ZFS 2.2)

# How a file was copied: the log lines name it.
CLONE = "cloned (FICLONE)"
KERNEL = "copied (copy_file_range)"
BYTES = "copied (read/write)"


@dataclass(frozen=True)
class Locked:
    """What `locked_copy` made (`live`: `unchanged.state` as copied, None: unsure)."""

    expected: int
    tree: str
    method: str
    live: dict[str, Any] | None = None


def locked_copy(
    db: Path, tmp: Path, check: bool = True, held: threading.Event | None = None
) -> Locked | None:
    """Copy the database's files whole under SQLite's write lock, verified; None: do it another way.

    Another thread runs quick_check (unless `check=False`: `cache.vouching`) on the source
    in the very state copied; each copied block is compared with the source (a FICLONE
    clone shares the source's blocks as they were under the lock: nothing to compare).
    Source corrupt: DatabaseUnusable. Lock busy or a block differs: None.

    Under the write lock no one can commit, and a WAL can neither grow nor be reset (a
    RESTART/TRUNCATE checkpoint needs that lock). A concurrent passive checkpoint copies
    into the main file only frames our copy of the WAL also holds, so replaying that WAL
    onto the copy gives the same committed state.

    `held`: the caller holds that lock in its own transaction and migrates beside this copy
    (docs/internals.md, "The backup beside the migration"). The WAL is copied first and
    `held` set once our read lock is taken: from then on the caller's uncommitted writes
    reach only its WAL or its page cache (a rollback journal's spill waits for our read
    lock), never the main file copied, and it commits only after this returns.
    """
    # A read transaction held open across the copy: our writer's close below then
    # cannot checkpoint the live WAL into the main file (that needs the database to
    # itself), so the live files stay byte-identical whatever happens.
    with closing(
        sqlite3.connect(uri(db, mode="ro"), uri=True, isolation_level=None, check_same_thread=False)
    ) as reader:
        reader.execute("BEGIN")
        expected = int(reader.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
        with closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as writer:
            if held is None:
                try:
                    writer.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    _instead(f"{db.name} is busy ({exc})")
                    return None
            wal = Path(f"{db}-wal")
            has_wal = wal.exists() and wal.stat().st_size > 0
            total = db.stat().st_size + (wal.stat().st_size if has_wal else 0)
            meter = Meter("backup", total)
            # The read lock taken: the checker reads the very state copied through it.
            checker, flusher = _Checker(db, check, reader if held else None), _Flusher(tmp)
            checker.start()
            flusher.start()
            try:
                start = 0
                if has_wal:  # first: a held lock's writer may reset the WAL once it writes
                    os.close(os.open(f"{tmp}-wal", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    start = copy_file(wal, Path(f"{tmp}-wal"), meter, 0, True).end
                live = unchanged.state(db)  # as copied: no one else can write meanwhile
                if held is not None:
                    held.set()
                # Without a WAL to fold in, the copy's chunks are hashed as they are compared.
                done = copy_file(db, tmp, meter, max(start, 0), True, not has_wal)
                sha = ""
                if done.end >= 0 and start >= 0:
                    # Beside the source's quick_check, still running in the other thread.
                    if has_wal:
                        _fold(tmp)
                    sha = done.tree or digest.hash_file(tmp)
            finally:
                flusher.stop()
                checker.join()
            if held is None:
                writer.execute("ROLLBACK")
    error = checker.error
    # A page too broken for quick_check to report on: said as the full check says it.
    broken = isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error, sqlite3.OperationalError
    )
    if error is not None and not broken:
        raise error
    result = str(error) if broken else checker.result
    if result != "ok":
        raise DatabaseUnusable.failed_check(db, result)
    if done.end < 0 or start < 0:
        _instead(f"{db.name} changed while it was copied")
        return None
    return Locked(expected, sha, done.method, live)


def _instead(why: str) -> None:
    log.info("backup: %s; copying page by page with SQLite's backup API instead", why)


def _fold(tmp: Path) -> None:
    """Replay the copied WAL into the copy: one file, still marked WAL mode like the live one."""
    with closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy or Path(f"{tmp}-wal").exists():
        raise EnvironmentProblem(
            f"backup {tmp}: could not fold the copied WAL into it", "check the backup folder"
        )


def copy_hashed(
    src: Path,
    dst: Path,
    fd_out: int,
    meter: Meter | None,
    recorded: Fingerprint | None,
    stamp: object = None,
) -> tuple[str, str]:
    """Copy `src` into the empty file `dst` open as `fd_out`: (how, hex of `dst` in
    `recorded`'s kind, or "").

    A clone is hashed, unless `src` still carries `stamp` (`unchanged.stamp_of`) after it:
    then it is the very file hashed when it was verified ("", `how` says so). Else, with a
    `recorded` fingerprint, `digest.copy_checked`; else a plain kernel copy.
    """
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fin).st_size
        if clone(fin, fd_out):
            if meter:
                meter.update(size, "cloned")
            if recorded is None:
                return CLONE, ""
            # After the clone: a write before or during it shows in the ctime now.
            if stamp is not None and stamp == unchanged.stamp_of(os.fstat(fin)):
                return f"{CLONE}, unchanged since it was verified ({unchanged.STAMPED})", ""
            return CLONE, digest.hash_file(dst, recorded.kind, recorded.chunk)
        if recorded is not None:
            how = f"{KERNEL[:-1]}, each chunk hashed as written)"
            return how, digest.copy_checked(
                fin, fd_out, dst, size, meter, recorded.kind, recorded.chunk
            )
        copied, kernel = 0, hasattr(os, "copy_file_range")
        while copied < size:
            n, kernel = digest.copy_range(fin, fd_out, copied, min(32 << 20, size - copied), kernel)
            if n == 0:
                break
            copied += n
            if meter:
                meter.update(copied)
        if copied != size:
            raise OSError(f"{src} changed size while it was copied")
        return KERNEL, ""
    finally:
        os.close(fin)


def clone(fin: int, fout: int) -> bool:
    """Reflink `fout` to `fin`'s blocks (FICLONE); False where the filesystem cannot."""
    try:
        fcntl.ioctl(fout, FICLONE, fin)
        return True
    except OSError:
        return False  # no reflinks here (ext4, tmpfs), another filesystem, or unsupported


class _Checker:
    """PRAGMA quick_check of the live database in a thread (sqlite3 releases the GIL)."""

    def __init__(
        self, db: Path, wanted: bool = True, conn: sqlite3.Connection | None = None
    ) -> None:
        self.db, self.result, self.wanted, self.conn = db, "" if wanted else "ok", wanted, conn
        self.error: BaseException | None = None
        # A daemon: a signal that interrupts the caller before join() must not leave the
        # process waiting for this thread at exit (the guard reports exit 12 and goes).
        self.thread = threading.Thread(target=self._run, name="preflight-quick-check", daemon=True)

    def _run(self) -> None:
        try:
            if self.conn is not None:  # the copy's reader, in the state copied
                self.result = quick_check(self.conn)
                return
            # read-only: closing it cannot checkpoint the live WAL
            with closing(sqlite3.connect(uri(self.db, mode="ro"), uri=True)) as conn:
                self.result = quick_check(conn)
        except BaseException as exc:  # re-raised by the caller
            self.error = exc

    def start(self) -> None:
        if self.wanted:
            signals.start(self.thread)

    def join(self) -> None:
        if self.wanted:
            self.thread.join()


class _Flusher:
    """fdatasync a file being written, over and over, until stopped: the disk writes the copy
    while it is compared and checked, not all at once in the caller's final fsync."""

    def __init__(self, path: Path) -> None:
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
        signals.start(self.thread)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _same(fin: int, fout: int, start: int, length: int, buffer: bytearray) -> bool:
    """True when `length` bytes at `start` are equal in both files; `buffer` (at least that
    long) then holds them. The source is read (never mapped: another process may truncate
    the live file), the copy, ours alone, is compared where it lies in the page cache."""
    view = memoryview(buffer)[:length]
    if length == 0:
        return True
    if os.preadv(fin, [view], start) != length:
        return False
    mine = buffer if length == len(buffer) else buffer[:length]  # bytearray ==: memcmp
    try:
        with mmap.mmap(fout, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=start) as copy:
            with memoryview(copy) as theirs:
                return mine == theirs
    except (OSError, ValueError):  # no mmap on this filesystem: read the copy too
        other = bytearray(length)
        return os.preadv(fout, [other], start) == length and mine == other


@dataclass(frozen=True)
class Copied:
    end: int  # bytes copied plus the offset; -1: a block differed from the source
    method: str  # CLONE, KERNEL or BYTES
    tree: str = ""  # the copy's sha256 tree, when asked for and every byte was compared


def copy_file(
    src: Path,
    dst: Path,
    meter: Meter | None = None,
    offset: int = 0,
    verify: bool = False,
    hashed: bool = False,
) -> Copied:
    """Copy `src` over the existing `dst`: a clone, else in the kernel, else by reads and
    writes, chunk by chunk. With `verify`, each copied chunk (a clone has none) is compared
    with the source; with `hashed` too, hashed by another thread into the copy's tree."""
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fout.truncate(0)
        if clone(fin.fileno(), fout.fileno()):
            if meter:
                meter.update(offset + size, "cloned")
            return Copied(offset + size, CLONE)
        kernel = hasattr(os, "copy_file_range")
        leaves = digest.Leaves(fout.fileno(), threads=1) if verify and hashed else None
        buffer = bytearray(digest.CHUNK) if verify else None
        copied = 0
        try:
            while copied < size:
                want = min(digest.CHUNK, size - copied)
                n, kernel = digest.copy_range(fin.fileno(), fout.fileno(), copied, want, kernel)
                if n == 0:
                    break  # the file shrank under us; the verification will say so
                if buffer is not None:
                    if not _same(fin.fileno(), fout.fileno(), copied, n, buffer):
                        return Copied(-1, KERNEL if kernel else BYTES)
                    if leaves:
                        leaves.add(copied, n)
                copied += n
                if meter:
                    meter.update(offset + copied)
            if verify and (copied != size or os.fstat(fin.fileno()).st_size != size):
                return Copied(-1, KERNEL if kernel else BYTES)
            tree = leaves.hex() if leaves else ""
        finally:
            if leaves:
                leaves.stop()
    return Copied(offset + copied, KERNEL if kernel else BYTES, tree)
