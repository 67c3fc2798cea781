"""One guarded start, whatever the migration source: every promise below runs once for the
guard's own files and once for Alembic, through the same code (`preflight.guard`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import clean_env, folder_state, sha
from litestreamkit import binary, config, replicating, restored_rows, wait_for
from sourcekit import Kit, execute, make_kit

SOURCES = ["files", "alembic"]


@pytest.fixture(params=SOURCES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Kit:
    """A source at head with one user and one post."""
    kit = make_kit(request.param, tmp_path)
    first = kit.guard("migrate")
    assert first.returncode == 0, first.stderr
    execute(
        kit.db,
        "INSERT INTO users (id, name) VALUES (1, 'ada')",
        "INSERT INTO posts (id, user_id, title) VALUES (1, 1, 'hello')",
    )
    return kit


def untouched(kit: Kit) -> dict[str, str]:
    """The database folder as "nothing changed" means it: a tool's scratch cache (what its
    new migration set builds on a private database) may be written; nothing else."""
    state = folder_state(kit.db.parent)
    state.pop("app.db.preflight-tool.json", None)
    return state


def test_strict_refuses_a_database_that_already_holds_an_orphan(kit: Kit) -> None:
    execute(kit.db, "INSERT INTO posts (id, user_id, title) VALUES (2, 99, 'orphan')")
    kit.add("title_index", "CREATE INDEX ix_posts_title ON posts (title)")
    before = untouched(kit)
    done = kit.guard("migrate", "--strict")
    assert done.returncode == 4, done.stderr
    assert "posts" in done.stderr and "--strict" in done.stderr
    assert untouched(kit) == before
    # Both ways: without --strict the old orphan is a warning and the migration runs.
    again = kit.guard("migrate")
    assert again.returncode == 0, again.stderr
    assert "already present before this run" in again.stderr or "foreign key" in again.stderr


def test_status_json_has_one_shape(kit: Kit) -> None:
    name = kit.add("title_index", "CREATE INDEX ix_posts_title ON posts (title)")
    done = kit.guard("status", "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    expected = {
        "command",
        "database",
        "tool",
        "migrations",
        "database_id",
        "backups",
        "failure_record",
        "fresh",
        "database_exists",
        "note",
        "recorded",
        "head",
        "applied",
        "drift",
        "adopt",
        "pending",
        "warnings",
        "accepted_differences",
        "foreign_key_violation_count",
        "foreign_key_violations",
        "undo",
        "undoable",
        "last_run_loss",
        "exit_code",
    }
    assert set(report) == expected
    assert report["tool"] == kit.name
    assert report["pending"] == [name]  # a list of names in every mode
    assert report["head"] == name and report["migrations"][-1] == name
    assert report["database_exists"] is True and report["fresh"] is False
    assert len(report["applied"]) == len(report["migrations"]) - 1 or kit.name == "alembic"


def test_a_failing_migration_is_restored_recorded_and_not_tried_again(kit: Kit) -> None:
    kit.add("bad", "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1)")
    before = sha(kit.db)
    failed = kit.guard("migrate")
    assert failed.returncode == 9, failed.stderr
    assert "no such table" in failed.stderr
    assert sha(kit.db) == before
    record = json.loads((kit.db.parent / "app.db.preflight-failure.json").read_text())
    assert record["restored"] is True and record["exit_code"] == 9
    again = kit.guard("migrate")
    assert again.returncode == 11, again.stderr
    assert sha(kit.db) == before


def test_a_smoke_command_that_outlives_its_timeout_is_named_and_undone(kit: Kit) -> None:
    kit.add("title_index", "CREATE INDEX ix_posts_title ON posts (title)")
    before = sha(kit.db)
    done = kit.guard("migrate", PREFLIGHT_SMOKE="sleep 30", PREFLIGHT_SMOKE_TIMEOUT="1")
    assert done.returncode == 9, done.stderr
    assert "smoke command did not finish within 1 s (PREFLIGHT_SMOKE_TIMEOUT)" in done.stderr
    assert "exited None" not in done.stderr
    assert sha(kit.db) == before


def test_a_lost_volume_is_restored_from_the_litestream_replica(kit: Kit, tmp_path: Path) -> None:
    exe = binary("0.5")
    assert exe is not None, "litestream 0.5 not found: install the test extras"
    cfg = config(kit.db, "file", tmp_path / "replica")
    extra = {"PREFLIGHT_LITESTREAM_CONFIG": str(cfg), "PREFLIGHT_LITESTREAM": exe}
    with replicating([exe, "replicate", "-config", str(cfg)], {}, tmp_path / "replicate.log"):
        wait_for(
            "the post in the replica",
            lambda: restored_rows(exe, cfg, kit.db, "SELECT title FROM posts") == [("hello",)],
        )
    shutil.rmtree(kit.db.parent)  # the volume is lost: a new, empty one is mounted
    kit.db.parent.mkdir()
    done = kit.guard("migrate", **extra)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stderr
    conn = sqlite3.connect(kit.db)
    try:
        assert conn.execute("SELECT title FROM posts").fetchall() == [("hello",)]
    finally:
        conn.close()


def _wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the guard ended first: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def test_a_start_killed_mid_migration_comes_back_as_it_was(kit: Kit, tmp_path: Path) -> None:
    """SIGKILL to the guard and everything it started, in the middle of the change: the next
    start finds the database as before the killed one (files: never committed; a tool that
    commits as it goes: the backup named by the run-in-progress record is put back)."""
    marker = tmp_path / "started"
    dump_before = _dump(kit.db)
    if kit.name == "files":
        kit.add("slow", "ALTER TABLE users ADD COLUMN nick TEXT")
        killed = kit.guard("migrate", PREFLIGHT_FAULT="statement")  # SIGKILLs itself there
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    else:
        kit.add(
            "slow",
            python=(
                "op.add_column('users', __import__('sqlalchemy').Column('nick', "
                "__import__('sqlalchemy').Text()))\n"
                f"if __import__('os').environ['PREFLIGHT_DB'] == {str(kit.db)!r}:\n"
                f"    open({str(marker)!r}, 'w').close()\n"
                "    __import__('time').sleep(60)"
            ),
        )
        env = clean_env()
        env.update(kit.env(), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "preflight", "migrate"],
            cwd=kit.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        _wait_for_file(marker, proc)
        assert "nick" in " ".join(_dump(kit.db))  # half applied: Alembic committed the column
        _kill_tree(proc.pid)
        proc.wait()
    kit.added.pop()  # the slow one is fixed: a plain ADD COLUMN
    for f in list(kit.folder.rglob("*slow*")):
        if f.suffix in (".sql", ".py"):
            f.unlink()
    kit.add("nick", "ALTER TABLE users ADD COLUMN nick TEXT")
    again = kit.guard("migrate")
    assert again.returncode == 0, again.stderr
    conn = sqlite3.connect(kit.db)
    try:
        assert conn.execute("SELECT id, name, nick FROM users").fetchall() == [(1, "ada", None)]
    finally:
        conn.close()
    assert [s for s in dump_before if "INSERT" in s and "posts" in s] == [
        s for s in _dump(kit.db) if "INSERT" in s and "posts" in s
    ]


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant, as `docker kill` does to a container."""
    victims = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            if _descends(int(entry), pid):
                victims.append(int(entry))
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
    return False
