"""Restore never pulls the database from under a process that has it open (issue 10, items 1,
5, 7, 8, 14): real second processes, real symlinks, real modes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, clean_env, dump, folder_state, rows, spawn

from preflight.core.errors import LockTimeout
from preflight.storage import backup, holders

OPENER = """
import sqlite3, sys, time
db, mode, state = sys.argv[1:4]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute(f"PRAGMA journal_mode={mode}")
conn.execute("SELECT count(*) FROM notes").fetchone()
if state == "writing":
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE notes SET slug = slug")
elif state == "exclusive":
    conn.execute("BEGIN EXCLUSIVE")
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def head_db(cli, make_db) -> Path:
    """A StarPunk database migrated to head (no backups yet)."""
    db = make_db("v0.9.5")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup", "never").code == 0
    return db


@pytest.fixture
def opener() -> Iterator[Callable[[Path, str, str], subprocess.Popen[str]]]:
    """opener(db, 'wal'|'delete', 'idle'|'writing'|'exclusive'): a real process with db open."""
    started: list[subprocess.Popen[str]] = []

    def start(db: Path, mode: str, state: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", OPENER, str(db), mode, state],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def backed_up(cli, db: Path) -> list[str]:
    """Take a backup, then change the database: what a restore would bring back."""
    assert cli("backup", "--db", db).code == 0
    before = dump(db)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM sessions")
    conn.commit()
    conn.close()
    return before


@pytest.mark.parametrize(
    "mode, state", [("wal", "idle"), ("wal", "writing"), ("delete", "writing"), ("delete", "idle")]
)
def test_restore_refuses_while_another_process_has_the_database_open(
    cli, head_db, opener, mode, state
):
    backed_up(cli, head_db)
    proc = opener(head_db, mode, state)
    state_before = folder_state(head_db.parent)
    done = spawn("restore", "--db", head_db, "--lock-timeout", "0")
    assert done.returncode == 8, done.stderr
    assert f"is in use by pid {proc.pid}" in done.stderr and "--force" in done.stderr
    assert "python" in done.stderr  # its command line, from /proc
    assert folder_state(head_db.parent) == state_before  # not even a pre-restore backup
    stop(proc)


def test_restore_force_restores_while_a_process_has_it_open(cli, head_db, opener):
    before = backed_up(cli, head_db)
    proc = opener(head_db, "delete", "idle")
    done = spawn("restore", "--db", head_db, "--force")
    assert done.returncode == 0, done.stderr
    assert f"restore --force: app.db has it open: pid {proc.pid}" in done.stderr
    assert dump(head_db) == before
    stop(proc)


def test_restore_with_nobody_attached_restores(cli, head_db, opener):
    before = backed_up(cli, head_db)
    stop(opener(head_db, "wal", "idle"))  # was open, is closed again: nothing holds it
    done = spawn("restore", "--db", head_db)
    assert done.returncode == 0, done.stderr
    assert dump(head_db) == before


@pytest.mark.parametrize("path", ["full", "quick"])
def test_restore_refuses_while_a_guarded_app_runs_even_when_it_never_opens_the_db(
    cli, head_db, path
):
    before = backed_up(cli, head_db)
    # An app that never touches the database: only the guard's running file tells.
    app = [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"]
    options = ["--log-format", "json"] if path == "full" else []  # the quick start hands over
    if path == "quick":
        assert cli("migrate", "--db", head_db, "--migrations", MIGRATIONS).code == 0
    env = clean_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preflight",
            "run",
            "--db",
            str(head_db),
            "--migrations",
            str(MIGRATIONS),
            *options,
            "--",
            *app,
        ],
        cwd=REPO,
        env=dict(env, PYTHONPATH=str(REPO)),
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        assert holders.find(head_db) == []  # no SQLite sign at all
        state_before = folder_state(head_db.parent)
        done = spawn("restore", "--db", head_db, "--lock-timeout", "0")
        assert done.returncode == 8, done.stderr
        assert f"pid {proc.pid}" in done.stderr and "a guarded app is running" in done.stderr
        assert folder_state(head_db.parent) == state_before
    finally:
        stop(proc)
    done = spawn("restore", "--db", head_db)  # the app has exited: free
    assert done.returncode == 0, done.stderr
    assert dump(head_db) == before


def test_the_pipelines_own_restore_after_a_failed_smoke_test_still_works(
    cli, head_db, make_migrations
):
    before = dump(head_db)
    folder = make_migrations({"006_a.sql": "CREATE TABLE a (x);"}, base=True)
    result = cli("migrate", "--db", head_db, "--migrations", folder, "--smoke", "exit 1")
    assert result.code == 9 and "restored" in result.err, result
    assert dump(head_db) == before and rows(
        head_db, "SELECT count(*) FROM sqlite_master WHERE name = 'a'"
    ) == [(0,)]


def test_a_symlink_planted_at_the_restore_temp_name_is_never_followed(cli, head_db, tmp_path):
    before = backed_up(cli, head_db)
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    planted = head_db.with_name(f".{head_db.name}.restore.tmp")
    planted.symlink_to(outside)
    result = cli("restore", "--db", head_db)
    assert result.code == 0, result
    assert outside.read_text() == "not yours"
    assert not head_db.is_symlink() and stat.S_ISREG(head_db.lstat().st_mode)
    assert dump(head_db) == before and not os.path.lexists(planted)


def test_the_raw_copy_of_a_damaged_database_is_private(cli, head_db):
    assert cli("backup", "--db", head_db).code == 0
    os.chmod(head_db, 0o644)
    with open(head_db, "r+b") as f:  # the pages after the first: sqlite_master survives
        f.seek(4096)
        f.write(b"\xff" * 4096 * 4)
    old = os.umask(0o022)
    try:
        result = cli("restore", "--db", head_db)
    finally:
        os.umask(old)
    assert result.code == 0, result
    # Its current state kept by the restore: a hard link as a -pre-restore save (in the
    # rotation), private like every backup.
    (damaged,) = (head_db.parent / "backups").glob("*-pre-restore.db")
    assert stat.S_IMODE(damaged.stat().st_mode) == 0o600
    assert stat.S_IMODE(head_db.stat().st_mode) == 0o644  # the database keeps its own mode


def test_a_private_snapshot_is_0600_and_never_follows_a_link(head_db, tmp_path):
    folder = tmp_path / "snap"
    folder.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (folder / "app.db").symlink_to(outside)
    old = os.umask(0o022)
    try:
        snap = backup.snapshot(head_db, folder)
    finally:
        os.umask(old)
    assert snap is not None and not snap.is_symlink() and outside.read_text() == "not yours"
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600


def test_a_backup_blocked_by_another_process_lock_is_exit_8_not_disk_space(
    head_db, opener, tmp_path
):
    proc = opener(head_db, "delete", "exclusive")
    with pytest.raises(LockTimeout) as caught:
        backup.take(head_db, tmp_path / "backups", "manual")
    assert caught.value.code == 8
    assert "locked" in caught.value.message and f"pid {proc.pid}" in caught.value.message
    assert "space" not in str(caught.value)
    assert not (tmp_path / "backups").exists()  # nothing left behind, not even the folder
    stop(proc)


def test_restore_through_a_database_symlink_still_sees_the_holder(cli, head_db, opener, tmp_path):
    backed_up(cli, head_db)
    link = tmp_path / "link.db"
    link.symlink_to(head_db)
    proc = opener(head_db, "wal", "idle")
    done = spawn(
        "restore", "--db", link, "--backup-dir", head_db.parent / "backups", "--lock-timeout", "0"
    )
    assert done.returncode == 8 and f"pid {proc.pid}" in done.stderr, done.stderr
    stop(proc)
