"""Starts in the wild: another writer on the database, a Litestream sidecar, a restart loop,
a volume past half full. Real processes, real files, real Litestream; nothing mocked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, clean_env, folder_state, needs_root, rows, sha, spawn
from litestreamkit import binary, config, replicating, restored_rows, wait_for

# Commits one row every few milliseconds (WAL), and counts what SQLite acknowledged.
WRITER = """
import sqlite3, sys, time
db, acked = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, isolation_level=None, timeout=30)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS ticks (n INTEGER PRIMARY KEY)")
n = 0
while True:
    n += 1
    conn.execute("INSERT INTO ticks (n) VALUES (?)", (n,))
    with open(acked + ".tmp", "w") as f:
        f.write(str(n))
    __import__("os").replace(acked + ".tmp", acked)
    time.sleep(0.005)
"""


def head(folder: Path) -> Path:
    db = folder / "app.db"
    done = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert done.returncode == 0, done.stderr
    return db


def pending(
    tmp_path: Path, sql: str = "CREATE INDEX ix_notes_path ON notes (file_path);\n"
) -> Path:
    more = tmp_path / "more"
    shutil.copytree(MIGRATIONS, more)
    (more / "006_more.sql").write_text(sql)
    return more


def writer(db: Path, acked: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(acked)])
    wait_for("the writer's first commit", acked.exists, 30)
    return proc


def test_another_writer_stops_a_migrating_start_and_loses_nothing(tmp_path: Path) -> None:
    db = head(tmp_path)
    acked = tmp_path / "acked"
    proc = writer(db, acked)
    try:
        done = spawn(
            "migrate", "--db", db, "--migrations", pending(tmp_path), "--lock-timeout", "1"
        )
        assert done.returncode == 8, done.stderr
        assert f"pid {proc.pid}" in done.stderr and "migrating refused" in done.stderr
        assert "waiting up to 1 s" in done.stderr  # it waited for the writer to let go
        # Both ways: a start with nothing to write is not refused.
        noop = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)
        assert noop.returncode == 0, noop.stderr
    finally:
        proc.terminate()
        proc.wait()
    n = int(acked.read_text())
    assert rows(db, "SELECT count(*) FROM ticks") == [(n,)] or rows(
        db, "SELECT count(*) FROM ticks"
    ) == [(n + 1,)]  # the one in flight at SIGTERM may have committed too
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(5,)]


def test_a_writer_that_starts_during_verification_keeps_every_acknowledged_row(
    tmp_path: Path,
) -> None:
    """The smoke command starts a writer that escapes its process group, then fails: the
    undo finds the writer holding the database and does not put the backup over its rows
    (exit 10, the backup named, a failure record until an operator restores)."""
    db = head(tmp_path)
    acked = tmp_path / "acked"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    pidfile = tmp_path / "writer.pid"
    smoke = (
        f"setsid {sys.executable} {script} {db} {acked} & echo $! > {pidfile}; "
        f"while [ ! -e {acked} ]; do sleep 0.05; done; sleep 0.5; exit 1"
    )
    done = spawn(
        "migrate", "--db", db, "--migrations", pending(tmp_path), env={"PREFLIGHT_SMOKE": smoke}
    )
    pid = int(pidfile.read_text())
    try:
        assert done.returncode == 10, done.stderr
        assert "was not put back" in done.stderr and "in use by" in done.stderr
        record = json.loads((tmp_path / "app.db.preflight-failure.json").read_text())
        assert record["restored"] is False and record["backup"]
        assert spawn("migrate", "--db", db, "--migrations", MIGRATIONS).returncode == 11
    finally:
        subprocess.run(["kill", str(pid)], check=False)
        time.sleep(0.3)
    n = int(acked.read_text())
    assert rows(db, "SELECT count(*) FROM ticks")[0][0] >= n  # nothing acknowledged lost


def test_a_litestream_sidecar_is_named_and_the_replica_never_holds_a_failed_change(
    tmp_path: Path,
) -> None:
    exe = binary("0.5")
    assert exe is not None, "litestream 0.5 not found: install the test extras"
    data = tmp_path / "data"
    data.mkdir()
    db = head(data)
    cfg = config(db, "file", tmp_path / "replica")
    with replicating([exe, "replicate", "-config", str(cfg)], {}, tmp_path / "sidecar.log"):
        wait_for(
            "the replica",
            lambda: (
                restored_rows(exe, cfg, db, "SELECT max(version) FROM _preflight_history") == [(5,)]
            ),
        )
        before = sha(db)
        failing = pending(tmp_path, "CREATE TABLE half (x);\n")  # the smoke test fails it
        done = spawn(
            "migrate",
            "--db",
            db,
            "--migrations",
            failing,
            env={"PREFLIGHT_SMOKE": "false", "PREFLIGHT_LOCK_TIMEOUT": "1"},
        )
        assert done.returncode == 8, done.stderr
        assert (
            "Litestream replicates" in done.stderr and "litestream replicate -exec" in done.stderr
        )
        assert sha(db) == before
        noop = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)  # nothing to write
        assert noop.returncode == 0, noop.stderr
    tables = restored_rows(exe, cfg, db, "SELECT name FROM sqlite_master WHERE name = 'half'")
    assert tables == []


def test_a_replica_of_another_database_is_refused_and_nothing_is_left_in_place(
    tmp_path: Path,
) -> None:
    """A config pointing at another database's replica (22.6): the restored file stays
    private until the plan takes it; this one is another app's, so exit 13 names the config
    and nothing is at the live path, and a start with the config fixed builds it fresh."""
    exe = binary("0.5")
    assert exe is not None, "litestream 0.5 not found: install the test extras"
    (tmp_path / "x").mkdir()
    x = head(tmp_path / "x")
    replica = tmp_path / "replica"
    cfg = config(x, "file", replica)
    with replicating([exe, "replicate", "-config", str(cfg)], {}, tmp_path / "x.log"):
        wait_for(
            "the replica of x",
            lambda: (
                restored_rows(exe, cfg, x, "SELECT max(version) FROM _preflight_history") == [(5,)]
            ),
        )
    data = tmp_path / "y"
    data.mkdir()
    y = data / "app.db"
    other = tmp_path / "other-app"
    other.mkdir()
    (other / "001_users.sql").write_text("CREATE TABLE users (id INTEGER PRIMARY KEY);\n")
    wrong = config(y, "file", replica)  # another database's replica
    env = {"PREFLIGHT_LITESTREAM_CONFIG": str(wrong), "PREFLIGHT_LITESTREAM": exe}
    done = spawn("migrate", "--db", y, "--migrations", other, env=env)
    assert done.returncode == 13, done.stderr
    assert str(wrong) in done.stderr and "does not fit these migrations" in done.stderr
    assert folder_state(data) == {}  # nothing at the live path, no temp left
    right = config(y, "file", tmp_path / "y-replica")  # fixed: its own (empty) replica
    env["PREFLIGHT_LITESTREAM_CONFIG"] = str(right)
    again = spawn("migrate", "--db", y, "--migrations", other, env=env)
    assert again.returncode == 0, again.stderr
    assert rows(y, "SELECT name FROM sqlite_master WHERE name = 'users'") == [("users",)]


@needs_root
def test_a_restart_loop_holds_a_bounded_amount_of_backup_space(tmp_path: Path, tmpfs) -> None:
    """A start that fails for a reason that says nothing against the migrations (the data
    volume full at the migration: exit 9, no failure record) is retried by `restart:
    always`; each attempt's backup is pruned on the way out, so the space stays bounded."""
    data = tmpfs(tmp_path / "data", "3m")
    backups = tmp_path / "backups"
    db = data / "app.db"
    assert spawn("migrate", "--db", db, "--migrations", MIGRATIONS).returncode == 0
    big = pending(
        tmp_path, "CREATE TABLE big (x BLOB);\nINSERT INTO big VALUES (zeroblob(8000000));\n"
    )
    env = {"PREFLIGHT_BACKUP_DIR": str(backups), "PREFLIGHT_KEEP_BACKUPS": "2"}
    for _ in range(5):
        done = spawn("migrate", "--db", db, "--migrations", big, env=env)
        assert done.returncode == 9, done.stderr
        assert "no space left" in done.stderr
        assert not (data / "app.db.preflight-failure.json").exists()  # transient: retried
        assert len(list(backups.glob("app-*.db"))) <= 2
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(5,)]
    state = folder_state(data)
    assert spawn("migrate", "--db", db, "--migrations", MIGRATIONS).returncode == 0
    assert folder_state(data) == state


def test_clean_env_is_used(tmp_path: Path) -> None:
    """The kit's environment has none of the caller's options (a guard started from a
    shell with PREFLIGHT_DB set must not leak it into these tests)."""
    env = clean_env({"PREFLIGHT_DB": str(tmp_path / "x.db")})
    assert [k for k in env if k.startswith("PREFLIGHT_")] == ["PREFLIGHT_DB"]
    assert str(REPO) not in env.get("PREFLIGHT_DB", "")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
