"""Who else has the database open: a restore renamed over it would lose their commits.

Signs, none needing SQLite: a POSIX lock on the -shm's bytes 120..128 (every WAL
connection), or in the database file's lock range from PENDING_BYTE (a transaction, any WAL
connection); /proc/*/fd links (an idle rollback-mode connection holds no lock); a guarded
app's shared flock on `<db>.preflight.running`. Closing a descriptor on the database drops this
process's own POSIX locks on it: call `find` only with no SQLite connection to it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from preflight.core.errors import LockTimeout
from preflight.fast.facts import RUNNING, SIDECARS, open_running

log = logging.getLogger("preflight")

PENDING_BYTE = 0x40000000
LOCK_RANGE = 512  # PENDING, RESERVED and the 510 SHARED bytes
WAL_LOCKS = 120  # eight WAL lock bytes, then the dead-man switch at 128
FLOCK = "hhqqi4x"  # struct flock on Linux (64-bit off_t): type, whence, start, len, pid


@dataclass(frozen=True)
class Holder:
    """Another process with the database open: its pid (0: not visible here) and how we know."""

    pid: int
    command: str
    how: str

    def describe(self) -> str:
        who = (
            f"pid {self.pid}" if self.pid > 0 else "a process in another container or pid namespace"
        )
        return f"{who}{f' ({self.command})' if self.command else ''}: {self.how}"


def running_path(db: Path) -> Path:
    """The file a guarded app holds a shared flock on while it runs."""
    return db.with_name(db.name + RUNNING)


@contextmanager
def exclusive_running(db: Path) -> Iterator[bool]:
    """Hold `<db>.preflight.running` exclusively for the block; False: a guarded app runs."""
    fd = open_running(db)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _lock_holder(path: Path, start: int, length: int) -> int | None:
    """The pid of a process holding a POSIX lock on those bytes (0: not visible), or None."""
    try:  # never through a symlink, never blocking on a FIFO
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # missing or unreadable: nothing to learn from it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        query = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        kind, _, _, _, pid = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else max(pid, 0)


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return "".join(c if c.isprintable() else "?" for c in text)[:80]


def _openers(names: set[str]) -> dict[int, str]:
    """pid -> which file, for every visible process with one of `names` open (not us)."""
    found: dict[int, str] = {}
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or another user's (not readable without privilege)
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in names:
                found[pid] = os.path.basename(target)
                break
    return found


def running_holders(db: Path) -> list[int]:
    """pids holding a flock on the running file, from /proc/locks (0: not visible here)."""
    try:
        st = os.stat(running_path(db), follow_symlinks=False)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        fields = line.split()
        if "->" not in fields and len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
            pids.append(int(fields[4]) if fields[4].isdigit() else 0)
    return pids


def find(db: Path) -> list[Holder]:
    """Every other process seen to have `db` open, one entry per pid, signs joined."""
    signs: dict[int, list[str]] = {}

    def add(pid: int | None, how: str) -> None:
        if pid is not None and pid != os.getpid():
            signs.setdefault(pid, []).append(how)

    real = os.path.realpath(db)  # SQLite locks the real file; ours are opened O_NOFOLLOW
    add(_lock_holder(Path(f"{real}-shm"), WAL_LOCKS, 9), "holds a WAL shared-memory lock (-shm)")
    add(_lock_holder(Path(real), PENDING_BYTE, LOCK_RANGE), "holds a lock on the database file")
    for pid, name in _openers({real + s for s in ("", *SIDECARS)}).items():
        add(pid, f"has {name} open")
    return [Holder(pid, _command(pid), ", ".join(how)) for pid, how in sorted(signs.items())]


def others(db: Path, no_app: bool | None = None) -> list[Holder]:
    """`find`, and every guarded app running on it (its flock on the running file): `no_app`
    True when this process holds that exclusively, None when shared (as a start does)."""
    found = find(db)
    if no_app is False:
        pids = running_holders(db) or [0]
    elif no_app is None:
        pids = [p for p in running_holders(db) if p != os.getpid()]
    else:
        pids = []
    how = f"a guarded app is running (holds {running_path(db).name})"
    found += [
        Holder(p, _command(p), how) for p in pids if p not in {h.pid for h in found} or p == 0
    ]
    return found


def wait_for_others(db: Path, timeout: float) -> list[Holder]:
    """`others`, given up to `timeout` seconds to let go of `db`: those still holding it."""
    deadline = time.monotonic() + timeout
    found = others(db)
    if found:
        log.info("waiting up to %g s for %s to close %s", timeout, found[0].describe(), db.name)
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = others(db)
    return found


def refuse_others(db: Path, what: str, found: list[Holder]) -> None:
    """Exit 8 naming the processes that have `db` open: the one rule for every path that
    writes the database or puts a backup back."""
    if not found:
        return
    lines = "; ".join(h.describe() for h in found[:5]) + (
        f"; and {len(found) - 5} more" if len(found) > 5 else ""
    )
    sidecar = next((h for h in found if "litestream" in h.command.split(" ", 1)[0]), None)
    if sidecar is not None:
        raise LockTimeout(
            f"{what} refused: Litestream replicates {db} beside the guard ({sidecar.describe()}): "
            f"a failed change put back from the backup would leave the replica at the failed "
            f"state",
            "let the guard start Litestream ('preflight run -- litestream replicate -exec "
            '"APP"\'), or stop the sidecar for the upgrade (docs/litestream.md)',
        )
    raise LockTimeout(
        f"{what} refused: {db} is in use by {lines}",
        "stop it first (the old app: what it writes meanwhile would be lost by a restore of "
        "the backup), then start again"
        + ("; --force restores anyway" if what == "restore" else ""),
    )


def refuse_if_open(db: Path, no_app: bool, force: bool) -> None:
    """`restore`: exit 8 naming who has `db` open (or a guarded app running), unless `force`."""
    found = others(db, no_app)
    if not force:
        refuse_others(db, "restore", found)
    for h in found:
        log.warning("restore --force: %s has it open: %s", db.name, h.describe())
