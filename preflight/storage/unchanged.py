"""Whether the live database is unchanged since a backup was taken of it or restored from it
(docs/internals.md, step 9), and whether a backup is untouched since it was verified.

Unchanged: the same device, inode, size, mtime and 100-byte header (its change counter),
and no -wal or -journal holding anything, then and now. Any write moves the mtime if the
recorded one was already in the past (a write in the same clock tick keeps it): a state
whose mtime is not yet past is unsure. Not seen: an mtime set back by hand to the very
nanosecond; the ctime would show it, but a `chown` on every start moves it too.
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
from preflight.fast.facts import DATA_SIDECARS
from preflight.storage import catalog, digest

log = logging.getLogger("preflight")

# time.CLOCK_REALTIME_COARSE, which Python does not name: the clock file times are taken
# from (Linux's current_time()), one tick behind the fine clock at most.
_COARSE = 5
STAMPED = "same inode, size, mtime and ctime as recorded"


def stamp_of(st: os.stat_result) -> dict[str, int]:
    """A backup file's inode: any write, chmod or link moves its ctime, which no one can set
    back, so an equal stamp is the same, untouched file."""
    return dict(inode=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def coarse_now() -> int:
    try:
        return time.clock_gettime_ns(_COARSE)
    except OSError:  # not Linux: the fine clock is never behind a file time
        return time.time_ns()


def sidecars(path: Path) -> list[str]:
    """The suffixes of a non-empty -wal or -journal beside `path` (SQLite would replay them)."""
    found = []
    for suffix in DATA_SIDECARS:
        try:
            if os.stat(f"{path}{suffix}").st_size > 0:
                found.append(suffix)
        except FileNotFoundError:
            pass
    return found


def state(db: Path) -> dict[str, Any] | None:
    """The live files' state as a backup record keeps it, or None when it cannot vouch."""
    if sidecars(db):
        return None
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


def _fingerprinted(backup: Path, db: Path) -> dict[str, Any] | None:
    """`backup`'s record if it is of `db` (its id) and keeps a fingerprint, else None."""
    record = catalog.record_of(backup)
    if record is None or digest.recorded(record) is None:
        return None
    return record if record.get("database_id") == catalog.read_identity(db) else None


def remember(backup: Path, db: Path) -> None:
    """After `backup` was restored into `db`: keep the restored file's state in its record,
    for a backup of this database that carries a fingerprint (see `reusable`)."""
    record = _fingerprinted(backup, db)
    if record is None:
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
    record = _fingerprinted(listed[-1].path, db) if listed and mine else None
    if record is None or not isinstance(record.get("live"), dict):
        return None
    newest = listed[-1].path
    try:
        if record.get("stamp") != stamp_of(os.stat(newest)):
            return None  # written, chmod-ed or replaced since it was verified
    except OSError:
        return None
    if record["live"] != state(db):
        return None
    return newest, str(record.get("live_since", "it was taken"))
