"""Two databases backing up into one folder at the same time (issue 19 defect 1).

/a/app.db and /b/app.db, PREFLIGHT_BACKUP_DIR the same: their guards hold different
locks, so they back up concurrently. One guard's backup used to delete the other's
in-flight temp file (exit 7, "check the backup folder") and its side record (a backup
without a record is listed for any app.db: a restore could take the other database's).
Real guards in real processes; a fault point stops (SIGSTOP) or kills (SIGKILL) one of
them at an exact step while the other backs up.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import REPO, clean_env, folder_state, rows, spawn

from preflight.storage import backup, catalog

POINTS = ["backup-temp-written", "backup-before-rename"]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """/a/app.db and /b/app.db, each saying which it is, and one shared backup folder."""
    made = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        db = tmp_path / name / "app.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE origin (name TEXT)")
        conn.execute("INSERT INTO origin VALUES (?)", (name,))
        # 2 MiB: each backup takes long enough for the other guard to run into it
        conn.execute("CREATE TABLE filler (b BLOB)")
        conn.executemany("INSERT INTO filler VALUES (randomblob(4096))", [()] * 512)
        conn.commit()
        conn.close()
        made.append(db)
    return made[0], made[1], tmp_path / "shared"


def start(db: Path, shared: Path, fault: str | None = None, keep: int = 0) -> subprocess.Popen[str]:
    """`python -m preflight backup --db DB` with the shared folder, not waited for."""
    env = clean_env()
    env.update(
        PYTHONPATH=str(REPO), PREFLIGHT_BACKUP_DIR=str(shared), PREFLIGHT_KEEP_BACKUPS=str(keep)
    )
    if fault:
        env["PREFLIGHT_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "preflight", "backup", "--db", str(db)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def back_up(db: Path, shared: Path) -> None:
    done = spawn("backup", "--db", db, env={"PREFLIGHT_BACKUP_DIR": str(shared)})
    assert done.returncode == 0, done.stderr


def wait_stopped(proc: subprocess.Popen[str]) -> None:
    """Until `proc` is stopped at its fault point (state T in /proc)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError("the guard never reached its fault point")


def assert_backups_of(db: Path, shared: Path, count: int) -> None:
    """`count` whole backups of `db`, each recorded as db's (path and id), holding db's rows."""
    listed = catalog.list_backups(shared, db)
    assert len(listed) == count, [b.path.name for b in listed]
    for b in listed:
        record = catalog.record_of(b.path)
        assert record is not None, b.path
        assert record["database"] == os.path.realpath(db)
        assert record["database_id"] == catalog.read_identity(db) is not None
        assert record["taken_at"] == b.taken_at
        assert backup.backup_problem(b.path) is None
        assert rows(b.path, "SELECT name FROM origin") == [(db.parent.name,)]


def assert_only_backups(shared: Path, count: int) -> None:
    """Nothing in the folder but `count` backups and their records: no temp file left."""
    names = sorted(p.name for p in shared.iterdir())
    backups = [n for n in names if n.endswith(".db")]
    assert len(backups) == count and names == sorted(backups + [f"{n}.json" for n in backups])


@pytest.mark.parametrize("point", POINTS)
def test_a_backup_in_flight_is_untouched_by_the_other_databases_backup(
    pair: tuple[Path, Path, Path], point: str
) -> None:
    a, b, shared = pair
    first = start(a, shared, f"{point}:stop")
    try:
        wait_stopped(first)  # a's temp file written (and, before the rename, its record)
        in_flight = folder_state(shared, strict=True)
        assert in_flight and all(".tmp" in n or n.endswith(".json") for n in in_flight)
        back_up(b, shared)
        now = folder_state(shared, strict=True)
        assert {n: now.get(n) for n in in_flight} == in_flight  # b removed none of a's files
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert_backups_of(a, shared, 1)
    assert_backups_of(b, shared, 1)
    assert_only_backups(shared, 2)


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_guards_leftovers_are_cleaned_by_its_own_next_backup_never_the_others(
    pair: tuple[Path, Path, Path], point: str
) -> None:
    a, b, shared = pair
    killed = start(a, shared, point)
    _, err = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, err
    left = folder_state(shared, strict=True)
    assert left and catalog.list_backups(shared, a) == []  # a temp file, maybe a record
    for _ in range(2):
        back_up(b, shared)
    now = folder_state(shared, strict=True)
    assert {n: now.get(n) for n in left} == left  # b's backups keep a's leftovers
    assert_backups_of(b, shared, 2)
    back_up(a, shared)
    assert not any(n in left for n in os.listdir(shared))  # a's own next backup cleans them
    assert_backups_of(a, shared, 1)
    assert_backups_of(b, shared, 2)
    assert_only_backups(shared, 3)


def test_two_databases_backing_up_and_pruning_at_once_many_times(
    pair: tuple[Path, Path, Path],
) -> None:
    a, b, shared = pair
    rounds, keep = 12, 4  # each also prunes its own backups beyond 4 while the other works
    for _ in range(rounds):
        procs = [start(a, shared, keep=keep), start(b, shared, keep=keep)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    assert_backups_of(a, shared, keep)
    assert_backups_of(b, shared, keep)
    assert_only_backups(shared, 2 * keep)


def test_a_name_taken_in_the_same_millisecond_moves_to_the_next(tmp_path: Path) -> None:
    # Both guards may pick one name (same file name, same millisecond): the record,
    # written first and exclusively, claims it; the second takes the next millisecond.
    shared = tmp_path / "shared"
    shared.mkdir()
    when = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
    theirs = shared / "app-20260102T030405.006Z-manual.db.json"
    theirs.write_text('{"database": "/b/app.db", "database_id": "' + "b" * 32 + '"}')
    old = shared / "app-20260102T030405.007Z-manual.db"  # a backup from before records
    old.write_bytes(b"old")
    before = folder_state(shared, strict=True)
    fields = {"database": "/a/app.db", "database_id": "a" * 32}
    final, record = catalog.claim(shared, tmp_path / "a" / "app.db", when, "manual", fields)
    assert final.name == "app-20260102T030405.008Z-manual.db" and not final.exists()
    assert catalog.record_of(final) == {**fields, "taken_at": "20260102T030405.008Z"}
    assert record == catalog.record_path(final)
    now = folder_state(shared, strict=True)
    assert {n: now[n] for n in before} == before
