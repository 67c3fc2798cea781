"""A full disk, for real: small tmpfs mounts for the database folder and the backup folder.

Running out of space during the backup, the migration or the restore ends in a documented
exit code with one line naming the folder and saying to free space there, and the
database whole. Mounting needs root (CI runs as root).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    MIGRATIONS,
    REPO,
    clean_env,
    dump,
    folder_state,
    load_fixture,
    needs_root,
    rows,
    spawn,
    wait_until_blocked_on_lock,
)

pytestmark = needs_root

BIG = (
    "CREATE TABLE attachments (id INTEGER PRIMARY KEY, body BLOB);\n"
    "INSERT INTO attachments (body) SELECT randomblob(4000) FROM (WITH RECURSIVE r(i) AS "
    "(SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1500) SELECT i FROM r);\n"
)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system under `folder` completely, then give back about `leave` bytes."""
    filler = folder / "filler"
    # Unbuffered: a buffered file would try to flush its unwritten tail again on close.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def error_line(err: str) -> str:
    line = [line for line in err.splitlines() if "error:" in line][-1]
    return line


def test_backup_folder_without_room_is_refused_before_anything_changes(
    cli, make_db, tmpfs, tmp_path
):
    db = make_db("v0.9.5")
    backups = tmpfs(tmp_path / "backups", "1m")
    state = folder_state(tmp_path)
    for command in ("migrate", "backup"):
        result = cli(command, "--db", db, "--migrations", MIGRATIONS, "--backup-dir", backups)
        assert result.code == 7, result
        assert f"backup folder {backups} has" in error_line(result.err)
        assert f"free space on {backups} or set PREFLIGHT_BACKUP_DIR" in error_line(result.err)
        assert folder_state(tmp_path) == state


def test_backup_folder_out_of_inodes_fails_the_backup_cleanly(cli, make_db, tmpfs, tmp_path):
    db = make_db("v0.9.5")
    backups = tmpfs(tmp_path / "backups", "8m", "nr_inodes=1")  # the root folder takes it
    before = dump(db)
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup-dir", backups)
    assert result.code == 7, result
    assert f"backup to {backups} failed: No space left on device" in error_line(result.err)
    assert f"free space on {backups}" in error_line(result.err)
    assert folder_state(db.parent) == state and dump(db) == before
    assert list(backups.iterdir()) == []


def test_backup_folder_filling_up_during_the_backup_leaves_no_partial_backup(
    make_db, tmpfs, tmp_path
):
    """The disk fills while the guard waits for another guard's lock: room is demanded right
    before the backup (never earlier: a start with nothing to write needs none), so it is
    refused there, naming the folder, with nothing written."""
    db = make_db("v0.9.5")
    backups = tmpfs(tmp_path / "backups", "2m")
    lock = Path(f"{db}.preflight.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preflight",
            "migrate",
            "--db",
            str(db),
            "--migrations",
            str(MIGRATIONS),
            "--backup-dir",
            str(backups),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_blocked_on_lock(proc.pid, lock)
        before = dump(db)
        state = folder_state(db.parent)
        filler = fill(backups, leave=40 * 1024)  # less than the 90 KiB backup
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    line = error_line(err)
    assert f"backup folder {backups} has" in line and "free space" in line, line
    assert [p.name for p in backups.iterdir()] == [filler.name]  # no temp file, no backup
    assert folder_state(db.parent) == state and dump(db) == before


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_database_folder_filling_up_during_the_migration_rolls_back_exit_9(
    cli, tmpfs, tmp_path, make_migrations, journal
):
    data = tmpfs(tmp_path / "data", "1m")
    db = load_fixture("v0.9.5", data / "app.db")
    if journal == "wal":
        conn = __import__("sqlite3").connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    folder = make_migrations({"006_attachments.sql": BIG}, base=True)
    before = dump(db)
    files = {
        k: v
        for k, v in folder_state(data).items()
        if k.startswith("app.db") and not k.endswith("-shm")
    }
    result = cli(
        "migrate", "--db", db, "--migrations", folder, "--backup-dir", tmp_path / "backups"
    )
    assert result.code == 9, result
    line = error_line(result.err)
    assert f"no space left on {data}" in line and f"free space on {data}" in line, line
    assert "rolled back; the database was not changed" in line
    assert dump(db) == before and rows(db, "PRAGMA integrity_check") == [("ok",)]
    after = {
        k: v
        for k, v in folder_state(data).items()
        if k.startswith("app.db") and not k.endswith("-shm")
    }
    assert after == files
    # A full disk says nothing against the migrations: no failure record, so once there
    # is room the same image simply starts.
    assert not (data / "app.db.preflight-failure.json").exists()
    subprocess.run(["mount", "-o", "remount,size=16m", str(data)], check=True)
    assert (
        cli(
            "migrate", "--db", db, "--migrations", folder, "--backup-dir", tmp_path / "backups"
        ).code
        == 0
    )
    assert rows(db, "SELECT count(*) FROM attachments") == [(1500,)]


def test_restore_command_without_room_is_refused_before_anything_changes(cli, tmpfs, tmp_path):
    data = tmpfs(tmp_path / "data", "2m")
    db = load_fixture("v0.9.5", data / "app.db")
    backups = tmp_path / "backups"
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup-dir", backups).code == 0
    fill(data, leave=20 * 1024)
    state = folder_state(tmp_path)
    result = cli("restore", "--db", db, "--backup-dir", backups)
    assert result.code == 7, result
    line = error_line(result.err)
    assert f"{data} has" in line and f"free space on {data}" in line, line
    assert folder_state(tmp_path) == state


def test_restore_after_a_failed_smoke_test_with_the_disk_full_is_exit_10_database_whole(
    cli, tmpfs, tmp_path, make_db
):
    """The smoke test fills the disk and fails: no room to put the backup back. The
    database stays whole (the committed new state), and the message says what to do."""
    data = tmpfs(tmp_path / "data", "2m")
    db = load_fixture("v0.9.5", data / "app.db")
    clean = load_fixture("v0.9.5", tmp_path / "clean.db")
    assert (
        cli(
            "migrate",
            "--db",
            clean,
            "--migrations",
            MIGRATIONS,
            "--backup-dir",
            tmp_path / "clean-backups",
        ).code
        == 0
    )
    old, new = dump(db), dump(clean)
    smoke = (
        f'{sys.executable} -c "import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); '
        f"from test_disk_full import fill; from pathlib import Path; "
        f'fill(Path({str(data)!r})); sys.exit(1)"'
    )
    backups = tmp_path / "backups"
    result = cli(
        "migrate", "--db", db, "--migrations", MIGRATIONS, "--backup-dir", backups, "--smoke", smoke
    )
    assert result.code == 10, result
    line = error_line(result.err)
    assert f"no space on {data} to restore" in line and f"free space on {data}" in line, line
    assert rows(db, "PRAGMA integrity_check") == [("ok",)] and dump(db) == new
    (premigrate,) = backups.glob("*.db")
    assert f"preflight restore {premigrate}" in line
    (data / "filler").unlink()
    assert cli("restore", premigrate, "--db", db, "--backup-dir", backups).code == 0
    assert dump(db) == old
    record = data / "app.db.preflight-failure.json"
    if record.exists():  # written only if there was room for it
        assert json.loads(record.read_text())["restored"] is False


def test_a_no_op_start_on_a_full_data_disk_still_starts(cli, tmpfs, tmp_path):
    """Nothing to migrate: a full disk (the app's own logs, say) must not stop the app from
    starting; the lock works without its note of who holds it."""
    data = tmpfs(tmp_path / "data", "2m")
    db = load_fixture("v0.9.5", data / "app.db")
    backups = tmp_path / "backups"
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup-dir", backups).code == 0
    (data / "app.db.preflight.lock").unlink()
    fill(data)
    before = dump(db)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup-dir", backups)
    assert result.code == 0, result
    assert dump(db) == before


def test_a_start_with_nothing_to_write_needs_no_room_for_a_backup(cli, tmpfs, tmp_path):
    """Backups beside the database (the default) and the database past half its volume: a
    no-op start (quick or full) is not refused for room it will not use; an upgrade is."""
    data = tmpfs(tmp_path / "data", "4m")
    db = data / "app.db"
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    execute = sqlite3.connect(db)
    with execute:
        execute.execute("CREATE TABLE filler (x BLOB)")
        execute.execute("INSERT INTO filler VALUES (zeroblob(2500000))")
    execute.close()
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0  # verified again
    state = folder_state(data)
    quick = spawn("run", "--db", db, "--migrations", MIGRATIONS, "--", "true")
    assert quick.returncode == 0, quick.stderr
    full = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert full.returncode == 0, full.stderr
    assert folder_state(data) == state
    # Both ways: a start that would write still needs the room, and says so.
    more = tmp_path / "more"
    shutil.copytree(MIGRATIONS, more)
    (more / "006_index.sql").write_text("CREATE INDEX ix_notes_slug_again ON notes (slug);\n")
    refused = spawn("migrate", "--db", db, "--migrations", more)
    assert refused.returncode == 7, refused.stderr
    assert "has" in refused.stderr and "KiB free" in refused.stderr
    assert folder_state(data) == state
