"""A migration already recorded never runs twice, whatever happened to the lock file: the
history is read again inside the write transaction (issue 10, item 3)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, clean_env, rows

WAIT_PY = """
import os, time
from pathlib import Path

def migrate(conn):
    if not conn.execute("PRAGMA database_list").fetchone()[2]:
        return  # the in-memory replay that plans: wait only on the real database
    folder = Path(os.environ["TEST_SIGNALS"])
    (folder / "inside").touch()
    deadline = time.monotonic() + 60
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def guard(db: Path, folder: Path, signals: Path) -> subprocess.Popen[str]:
    env = clean_env()
    env.update(PYTHONPATH=str(REPO), TEST_SIGNALS=str(signals))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preflight",
            "migrate",
            "--db",
            str(db),
            "--migrations",
            str(folder),
            "--lock-timeout",
            "60",
        ],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the guard never got there"
        time.sleep(0.02)


def test_a_second_guard_after_the_lock_file_was_deleted_does_not_run_a_data_migration_again(
    cli, make_db, make_migrations, tmp_path
):
    db = make_db("fresh")
    base = {"001_t.sql": "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT);"}
    assert cli("migrate", "--db", db, "--migrations", make_migrations(base)).code == 0
    folder = make_migrations(
        {**base, "002_seed.sql": "INSERT INTO t (note) VALUES ('once');", "003_slow.py": WAIT_PY}
    )
    signals = tmp_path / "signals"
    signals.mkdir()
    first = guard(db, folder, signals)
    wait_for(signals / "inside", first)  # inside its transaction, 002 already run
    Path(f"{db}.preflight.lock").unlink()  # an operator 'cleans up' the lock file
    second = guard(db, folder, signals)
    assert second.stderr is not None
    for line in second.stderr:  # it has planned from the old history: 002 and 003 pending
        assert second.poll() is None or line, "the second guard ended before planning"
        if "plan:" in line:
            assert "2 pending" in line
            break
    (signals / "go").touch()
    _, first_err = first.communicate(timeout=60)
    _, second_err = second.communicate(timeout=60)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    assert "another guard changed the history" in second_err and "planning again" in second_err
    assert rows(db, "SELECT note FROM t") == [("once",)]
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "applied"),
        (2, "applied"),
        (3, "applied"),
    ]
