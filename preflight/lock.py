"""One guard at a time per database: fcntl.flock on a lock file beside it.

Never on the database file itself: SQLite uses POSIX advisory locks there, and any
close() of another descriptor on that file would silently drop SQLite's locks.
flock locks die with the process, so a killed guard never leaves a stale lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import EnvironmentProblem, LockTimeout
from .history import now


def holder(path: Path) -> str:
    """Who holds the lock, as the holder wrote it: 'pid 12 on host web-1 since ...'."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "unknown holder"
    if not info:
        return "unknown holder"
    return f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')} " \
           f"({info.get('command')})"


@contextmanager
def hold(path: Path, timeout: float, command: str) -> Iterator[None]:
    """Hold the exclusive lock for the duration of the block, waiting up to `timeout` s."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot open lock file {path}: {exc.strerror}",
                                 f"remove {path} (it must be a plain file)"
                                 if os.path.isdir(path) else
                                 "fix its owner or mode (chown/chmod)" if os.path.exists(path) else
                                 "make the database folder writable by this user") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{path} is held by {holder(path)}; waited {timeout:g} s",
                                      "wait for that guard to finish, or raise "
                                      "PREFLIGHT_LOCK_TIMEOUT") from None
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.25)
        # os.uname().nodename is what socket.gethostname() returns, without importing socket
        info = {"pid": os.getpid(), "host": os.uname().nodename, "since": now(),
                "command": command}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without its note of who holds it
        try:
            yield
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # a full disk: the holder note stays; the flock below is what counts
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
