"""Hardening: the lock, files the guard creates, logs, read-only commands, smoke commands,
temp folders. Each test builds the situation for real: a second process, a planted
symlink, a background child, an unusable TMPDIR.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (MIGRATIONS, REPO, folder_state, hold_lock, load_fixture, run_process,
                      wait_until_blocked_on_lock)
from preflight import lock
from preflight.errors import EnvironmentProblem, LockTimeout


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def at_head(cli, db: Path) -> Path:
    load_fixture("v0.9.5", db)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    return db


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


# ----------------------------------------------------------------------- the lock (issue 9.7)

def test_a_waiting_quick_start_leaves_the_holders_note_and_names_the_holder(cli, data_dir):
    db = at_head(cli, data_dir / "app.db")
    lock_path = Path(f"{db}.preflight.lock")
    holder = hold_lock(lock_path)
    try:
        note = lock_path.read_bytes()
        assert b'"test-holder"' in note
        # python -m preflight: the quick start first, then the full pipeline.
        done = run_process("run", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout",
                           "0.5", "--", "true")
        assert done.returncode == 8, done.stderr
        assert lock_path.read_bytes() == note  # the waiting guards never wrote to it
        assert f"held by pid {holder.pid} on host {os.uname().nodename} since " in done.stderr
        assert "(test-holder)" in done.stderr
        waiting = [l for l in done.stderr.splitlines() if "waiting for the lock held by" in l]
        assert len(waiting) == 1 and f"pid {holder.pid}" in waiting[0], done.stderr
    finally:
        stop(holder)


def test_a_free_lock_is_taken_without_a_waiting_line(cli, data_dir):
    db = at_head(cli, data_dir / "app.db")
    done = run_process("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert done.returncode == 0, done.stderr
    assert "waiting for the lock" not in done.stderr


# ------------------------------------------------------- the lock file replaced (issue 10.3)

WAITER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from preflight import lock
from preflight.errors import LockTimeout
try:
    with lock.hold(Path(sys.argv[2]), 3, "waiter"):
        print("held", flush=True)
except LockTimeout as exc:
    print(exc.message, flush=True)
"""


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_lock_file_deleted_or_replaced_while_held_never_gives_two_holders(tmp_path, how):
    path = tmp_path / "app.db.preflight.lock"
    first = hold_lock(path)
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(REPO), str(path)],
                              stdout=subprocess.PIPE, text=True)
    third = None
    try:
        wait_until_blocked_on_lock(waiter.pid, path)  # the waiter has the old file open
        if how == "deleted":
            path.unlink()
        else:
            (tmp_path / "new").write_text("")
            os.replace(tmp_path / "new", path)
        third = hold_lock(path)  # a later guard takes the file now at that name
        stop(first)  # the old file's lock is free: the waiter gets it, on a file nobody uses
        out, _ = waiter.communicate(timeout=30)
        assert out.strip() != "held"
        assert f"is held by pid {third.pid} " in out
    finally:
        stop(waiter)
        stop(first)
        if third is not None:
            stop(third)
