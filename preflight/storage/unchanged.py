"""Whether the live database is unchanged since a backup was taken of it or restored from it,
and whether a backup is unchanged since it was verified (its inode stamp).

A retry of a failed start (a restart loop) need not copy the database again when it can
prove, cheaply, that the database still holds what its newest backup holds. The proof is
the live file's state, kept in that backup's side record (`live`) at two moments: when
the backup was taken (under SQLite's write lock: nothing could commit) and right after a
restore put it in place. Equal now means unchanged:

- the same file (device, inode), size and mtime. Any write moves the mtime, provided the
  recorded one is from a clock tick that had passed when it was recorded (a write in
  that same tick would keep it): a state whose mtime is not yet in the past is unsure,
  and a restore sets its new file's mtime just before now before it is put in place;
- the same 100-byte SQLite header (its change counter moves on every commit in
  rollback-journal mode, its page count when the file grows or shrinks);
- no `-wal` or `-journal` with anything in it, then and now (in WAL mode a commit goes
  to the `-wal`, and the change counter does not move).

Anything else is unsure (a `-wal` with frames, no record, a backup touched since it was
verified): the start takes a new backup. Not seen: a write whose mtime is then set back
by hand to the very nanosecond (`touch -d`); the ctime would show it, but a `chown` on
every start (as some entrypoints do) moves the ctime too, so it is not compared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from preflight.core.files import write_atomic
from preflight.storage import catalog, digest

log = logging.getLogger("preflight")

# time.CLOCK_REALTIME_COARSE, which Python does not name: the clock file times are taken
# from (Linux's current_time()), one tick behind the fine clock at most.
_COARSE = 5


STAMPED = "same inode, size, mtime and ctime as recorded"


def stamp_of(st: os.stat_result) -> dict[str, int]:
    """What a backup file's inode looks like: any write, truncate, chmod or link changes
    its ctime, which no one can set back, so an equal stamp is the same, untouched file."""
    return {
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def coarse_now() -> int:
    try:
        return time.clock_gettime_ns(_COARSE)
    except OSError:  # not Linux: the fine clock is never behind a file time
        return time.time_ns()


def state(db: Path) -> dict[str, Any] | None:
    """The live files' state as a backup record keeps it, or None when it cannot vouch."""
    for suffix in ("-wal", "-journal"):
        try:
            if os.stat(f"{db}{suffix}").st_size > 0:
                return None
        except FileNotFoundError:
            pass
    try:
        fd = os.open(db, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        header = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    if len(header) < 100 or st.st_mtime_ns >= coarse_now():
        return None
    return {
        "device": st.st_dev,
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "header_sha256": hashlib.sha256(header).hexdigest(),
    }


def settle(fd: int) -> None:
    """Set a new file's mtime just before now, before it is renamed into place: every
    later write, even in this clock tick, then moves it (see `state`)."""
    st = os.fstat(fd)
    os.utime(fd, ns=(st.st_atime_ns, coarse_now() - 1))


def remember(backup: Path, db: Path) -> None:
    """After `backup` was restored into `db`: keep the restored file's state in its record,
    for a backup of this database that carries a fingerprint (see `reusable`)."""
    record = catalog.record_of(backup)
    if (
        record is None
        or record.get("database_id") != catalog.read_identity(db)
        or digest.recorded(record) is None
    ):
        return
    now = state(db)
    if now is None:
        record.pop("live", None)
    else:
        record.update(live=now, live_since="it was restored")
    try:
        write_atomic(catalog.record_path(backup), json.dumps(record, indent=1).encode())
    except OSError as exc:
        log.debug("backup: %s not updated (%s); a retry takes a new backup", backup, exc)


def reusable(db: Path, backup_dir: Path) -> tuple[Path, str] | None:
    """(the newest backup of `db`, since when) if `db` is unchanged since that backup was
    taken or restored from, and the backup untouched since it was verified; else None."""
    mine = catalog.read_identity(db)
    listed = [b for b in catalog.list_backups(backup_dir, db) if b.record and b.database_id == mine]
    if mine is None or not listed:
        return None
    newest = listed[-1].path
    record = catalog.record_of(newest)
    if (
        record is None
        or digest.recorded(record) is None
        or not isinstance(record.get("live"), dict)
    ):
        return None
    try:
        if record.get("stamp") != stamp_of(os.stat(newest)):
            return None  # written, chmod-ed or replaced since it was verified
    except OSError:
        return None
    if record["live"] != state(db):
        return None
    return newest, str(record.get("live_since", "it was taken"))
