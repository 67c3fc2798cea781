"""A retry reuses the previous attempt's backup when the database is unchanged (issue 22).

Under `restart: always` a start that keeps failing for a reason that says nothing against
its migrations (stopped mid-migration, a full volume) used to copy the whole database
again on every attempt. Now a start about to take its pre-migrate backup first asks
whether the database still holds what its newest backup holds: the live file's state,
kept in that backup's record when it was taken and right after a restore from it
(storage/unchanged.py). Both directions, with real processes: unchanged reuses it (no new
file), any write in between (a commit by another process, in rollback or WAL mode, a
touch, a WAL left behind) takes a new backup.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MIGRATIONS, dump, rows, sha, spawn, started

from preflight.storage import backup, catalog

PENDING = "CREATE INDEX ix_notes_path ON notes (file_path);\n"


def at_head(tmp_path: Path, wal: bool = False) -> Path:
    """A StarPunk database at head with a few notes (WAL mode if asked), and no backups."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    assert spawn("migrate", "--db", db, "--migrations", MIGRATIONS).returncode == 0
    conn = sqlite3.connect(db, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executemany(
        "INSERT INTO notes (slug, file_path, content_hash) VALUES (?, ?, ?)",
        [(f"n{i}", f"notes/n{i}.md", "x" * 40) for i in range(50)],
    )
    conn.close()
    shutil.rmtree(db.parent / "backups", ignore_errors=True)
    return db


def migrations(tmp_path: Path, name: str = "more", sql: str = PENDING) -> Path:
    folder = tmp_path / name
    shutil.copytree(MIGRATIONS, folder)
    (folder / "006_more.sql").write_text(sql)
    return folder


def stopped_start(db: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    """`migrate`, stopped after its first migration statement (inside the transaction),
    then sent SIGTERM as `docker stop` would: exit 12, rolled back."""
    proc = started(
        "migrate", "--db", db, "--migrations", folder, env={"PREFLIGHT_FAULT": "statement:stop"}
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "T":
                    break
            assert time.monotonic() < deadline, "the guard never reached its fault point"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 12 and "rolled back" in err, err
    return done


def backups_of(db: Path) -> list[Path]:
    return sorted((db.parent / "backups").glob("app-*.db"))


def test_a_restart_loop_of_stopped_starts_keeps_one_backup_and_it_restores(tmp_path):
    db = at_head(tmp_path)
    before = dump(db)
    more = migrations(tmp_path)
    stopped_start(db, more)
    (first,) = backups_of(db)
    kept = (first.stat().st_ino, sha(first))
    for _ in range(5):
        done = stopped_start(db, more)
        assert f"backup: reused {first} (database unchanged since it was taken)" in done.stderr
        assert backups_of(db) == [first] and (first.stat().st_ino, sha(first)) == kept
        assert dump(db) == before
    done = spawn("migrate", "--db", db, "--migrations", more)
    assert done.returncode == 0 and f"backup: reused {first}" in done.stderr, done.stderr
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(6,)]
    # The reused backup is the state before that migration, as a backup taken now would be.
    backup.restore(first, db)
    assert dump(db) == before


def commit(db: Path) -> None:
    """Another process commits one row and closes (in WAL mode its close checkpoints the
    -wal into the file and removes it: only the file's mtime shows the commit)."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute(\"INSERT INTO notes (slug, file_path, content_hash) VALUES ('w', 'w', 'w')\"); "
        "c.commit(); c.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True)


def commit_and_die(db: Path) -> None:
    """Another process commits in WAL mode and is killed: its -wal stays, frames in it."""
    code = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute(\"INSERT INTO notes (slug, file_path, content_hash) VALUES ('w', 'w', 'w')\"); "
        "c.commit(); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=False)
    assert Path(f"{db}-wal").stat().st_size > 0


def touch(db: Path) -> None:
    subprocess.run(["touch", str(db)], check=True)


@pytest.mark.parametrize(
    ("wal", "write", "row"),
    [
        (False, commit, 1),
        (True, commit, 1),
        (False, touch, 0),
        (True, commit_and_die, 1),
    ],
    ids=["a commit", "a commit in WAL mode", "a touch", "a WAL left behind"],
)
def test_any_write_between_two_attempts_takes_a_new_backup(tmp_path, wal, write, row):
    db = at_head(tmp_path, wal=wal)
    more = migrations(tmp_path)
    stopped_start(db, more)
    (first,) = backups_of(db)
    write(db)
    done = stopped_start(db, more)
    assert "reused" not in done.stderr, done.stderr
    assert len(backups_of(db)) == 2 and backups_of(db)[0] == first, done.stderr
    newest = backups_of(db)[-1]  # holds what was written in between (a touch writes no row)
    assert rows(newest, "SELECT count(*) FROM notes WHERE slug = 'w'") == [(row,)]


def failed_smoke(db: Path, folder: Path) -> None:
    """A start whose migration commits and whose smoke command fails: restored, exit 9."""
    done = spawn("migrate", "--db", db, "--migrations", folder, env={"PREFLIGHT_SMOKE": "false"})
    assert done.returncode == 9 and "restored from" in done.stderr, done.stderr


def test_a_fixed_start_after_a_restore_reuses_the_backup_it_was_restored_from(tmp_path):
    db = at_head(tmp_path)
    before = dump(db)
    failed_smoke(db, migrations(tmp_path, "broken"))
    (first,) = backups_of(db)
    record = catalog.record_of(first)
    assert record is not None and record["live_since"] == "it was restored"
    assert record["live"]["inode"] == db.stat().st_ino  # the restored file, not the old one
    fixed = migrations(tmp_path, "fixed", PENDING + "-- fixed\n")
    done = spawn("migrate", "--db", db, "--migrations", fixed)
    assert done.returncode == 0, done.stderr
    assert f"backup: reused {first} (database unchanged since it was restored)" in done.stderr
    assert backups_of(db) == [first]
    backup.restore(first, db)
    assert dump(db) == before


def test_a_commit_after_a_restore_takes_a_new_backup(tmp_path):
    db = at_head(tmp_path)
    failed_smoke(db, migrations(tmp_path, "broken"))
    commit(db)
    fixed = migrations(tmp_path, "fixed", PENDING + "-- fixed\n")
    done = spawn("migrate", "--db", db, "--migrations", fixed)
    assert done.returncode == 0 and "reused" not in done.stderr, done.stderr
    newest = backups_of(db)[-1]
    assert len(backups_of(db)) == 2
    assert rows(newest, "SELECT count(*) FROM notes WHERE slug = 'w'") == [(1,)]


def test_a_backup_touched_since_it_was_verified_is_not_reused(tmp_path):
    db = at_head(tmp_path)
    more = migrations(tmp_path)
    stopped_start(db, more)
    (first,) = backups_of(db)
    first.chmod(0o600)  # same bytes, same mode: only its ctime moves, and its stamp with it
    done = stopped_start(db, more)
    assert "reused" not in done.stderr and len(backups_of(db)) == 2


def test_a_record_without_the_live_state_is_never_reused(tmp_path):
    """A record as versions before this one wrote it: unsure, so a new backup."""
    db = at_head(tmp_path)
    more = migrations(tmp_path)
    stopped_start(db, more)
    (first,) = backups_of(db)
    path = catalog.record_path(first)
    record = json.loads(path.read_text())
    del record["live"], record["live_since"]
    path.write_text(json.dumps(record))
    done = stopped_start(db, more)
    assert "reused" not in done.stderr and len(backups_of(db)) == 2
