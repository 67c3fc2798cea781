"""The pre-migrate backup taken beside the migration (docs/internals.md, "The backup beside
the migration"): whatever the run writes while the copy goes on, the backup holds the
state before it, and the run commits only once that backup is whole and verified.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import MIGRATIONS, dump, rows, sha, started

from preflight.live.database import connect
from preflight.storage import backup, catalog

SERIES = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"


def filled(db: Path, journal: str) -> None:
    """~40 MiB of `bulk`, then the 300 `items` a run rewrites, last in the file: the copy
    reaches them last. In WAL mode the last 30 items are still only in the -wal."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    conn.execute(f"INSERT INTO bulk (v) {SERIES} SELECT randomblob(4000) FROM n", (10000,))
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    conn.execute(f"INSERT INTO items (v) {SERIES} SELECT randomblob(3000) FROM n", (270,))
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"INSERT INTO items (v) {SERIES} SELECT randomblob(3000) FROM n", (30,))
    files = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal") if Path(f"{db}{s}").exists()}
    conn.close()  # checkpoints; put the files back as a killed writer would leave them
    for s, data in files.items():
        Path(f"{db}{s}").write_bytes(data)


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_run_that_overflows_its_page_cache_beside_the_copy_leaves_the_backup_as_before(
    tmp_path, journal, logged
):
    db = tmp_path / "app.db"
    filled(db, journal)
    before, main_file = dump(db), sha(db)
    conn = connect(db, 5)
    conn.execute("PRAGMA synchronous = OFF")  # no fsync per spill: a test's speed
    conn.execute("BEGIN IMMEDIATE")
    # Vouched (no quick_check of the source): only the copy's own read lock holds the file.
    beside = backup.Beside(db, tmp_path / "backups", "vouched", 5)
    beside.begin(conn)
    # A 20-page cache: a rollback journal's run must spill into the main file, and may
    # only once the copy let go of it.
    conn.execute("PRAGMA cache_size = 20")
    conn.execute("UPDATE items SET v = randomblob(3100)")
    conn.execute("DELETE FROM items WHERE id % 3 = 0")
    beside.end(conn)
    conn.execute("COMMIT")
    conn.close()
    taken = beside.join()
    assert taken is not None and taken.parent == tmp_path / "backups"
    assert dump(taken) == before != dump(db)
    assert rows(taken, "PRAGMA integrity_check") == [("ok",)]
    assert rows(db, "SELECT count(*) FROM items") == [(200,)]
    if journal == "delete":
        assert sha(taken) == main_file  # the very bytes: nothing reached the file before
    assert catalog.record_of(taken) is not None
    assert not any("backup API" in line for line in logged)  # no block differed meanwhile


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_run_killed_before_commit_has_its_backup_whole_and_the_database_as_before(
    make_db, journal, cli
):
    db = make_db("v0.9.5")
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.close()
    before = dump(db)
    proc = started(
        "migrate", "--db", db, "--migrations", MIGRATIONS, env={"PREFLIGHT_FAULT": "before-commit"}
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert "MiB, beside the run in" in err  # the backup finished before COMMIT was reached
    (taken,) = (db.parent / "backups").glob("*-pre-migrate.db")
    assert dump(taken) == before and backup.backup_problem(taken) is None
    assert dump(db) == before  # the hot journal (or the -wal) of the run rolls back
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0").code == 0
    assert dump(db) != before and rows(db, "SELECT count(*) FROM _preflight_history") == [(5,)]


def blocked(tid: int) -> set[int] | None:
    """The signals thread `tid` of this process blocks (/proc's SigBlk mask); None: gone."""
    try:
        status = Path(f"/proc/self/task/{tid}/status").read_text()
    except FileNotFoundError:
        return None
    mask = int(
        next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16
    )
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_only_the_main_thread_takes_sigterm_while_the_copy_runs_beside(tmp_path):
    """The kernel hands a process's SIGTERM to any thread not blocking it, and Python runs
    its handler in the main thread only: the copy's threads block it, so a `docker stop`
    wakes the main thread whatever it waits on (a `.py` migration's sleep, a join)."""
    db = tmp_path / "app.db"
    filled(db, "wal")
    tasks = lambda: {int(t) for t in os.listdir("/proc/self/task")}  # noqa: E731
    before = tasks()
    conn = connect(db, 5)
    conn.execute("BEGIN IMMEDIATE")
    beside = backup.Beside(db, tmp_path / "backups", "", 5)  # not vouched: its checker runs too
    beside.begin(conn)
    masks = {t: blocked(t) for t in tasks() - before}
    beside.end(conn)
    conn.execute("COMMIT")
    conn.close()
    assert beside.join() is not None
    seen = [m for m in masks.values() if m is not None]
    assert len(seen) >= 2, masks  # the copy, and its checker, flusher or hashers
    assert all({signal.SIGTERM, signal.SIGINT} <= m for m in seen), masks
    assert not {signal.SIGTERM, signal.SIGINT} & (blocked(threading.get_native_id()) or {0})
