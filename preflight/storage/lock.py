"""One guard at a time per database: fcntl.flock on a lock file beside it (docs/internals.md).
The lock is on an inode, not a name: the guard checks that the name still leads to the inode
it locked, and starts again if not (a file deleted or replaced is one nobody else looks at).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from preflight.core.errors import LockTimeout
from preflight.fast.facts import let_go, open_lock, write_note

log = logging.getLogger("preflight")


def describe(note: bytes) -> str:
    """Who holds the lock, from the holder's note: 'pid 12 on host web-1 since ... (run)'."""
    try:
        info = json.loads(note.decode("utf-8") or "{}")
    except ValueError:
        return "unknown holder"
    if not isinstance(info, dict) or not info:
        return "unknown holder"
    return (
        f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')} "
        f"({info.get('command')})"
    )


def _same_file(fd: int, path: Path) -> bool:
    """True if `path` still names the inode open as `fd` (not deleted, not replaced)."""
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def acquire(path: Path, timeout: float) -> int:
    """The fd of the lock file at `path`, flock'ed exclusively; waits up to `timeout` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    waiting = False
    fd = open_lock(path)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = describe(os.pread(fd, 4096, 0))
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path} is held by {who}; waited {timeout:g} s",
                        "wait for that guard to finish, or raise PREFLIGHT_LOCK_TIMEOUT",
                    ) from None
                if not waiting:
                    waiting = True
                    log.info("lock: waiting for the lock held by %s (up to %g s)", who, timeout)
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.25)
                continue
            if _same_file(fd, path):
                return fd
            # Deleted or replaced while someone held it: this lock protects nothing.
            log.debug("lock: %s was removed or replaced while held; opening it again", path)
            os.close(fd)
            fd = -1
            fd = open_lock(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


@contextmanager
def hold(path: Path, timeout: float, command: str, held: int = -1) -> Iterator[None]:
    """Hold the exclusive lock for the block, waiting up to `timeout` s. `held`: this lock,
    already flock'ed by the quick start: used while `path` still names it."""
    if held >= 0 and not _same_file(held, path):
        os.close(held)
        held = -1
    fd = held if held >= 0 else acquire(path, timeout)
    try:
        write_note(fd, command)
    except OSError:
        pass  # a full disk: the lock holds without its note of who holds it
    try:
        yield
    finally:
        if not _same_file(fd, path):
            log.warning(
                "lock: %s was removed or replaced while this guard held it; another "
                "guard may have run at the same time (leave the lock file alone)",
                path,
            )
        let_go(fd)
