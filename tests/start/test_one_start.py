"""One guarded start, whatever the migration source: every promise below runs once for each
source (the guard's own files, Alembic, Flask-Migrate, Django: one app over each, see
`sourcekit`), through the same code (`preflight.commands.guard`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import dump, folder_state, hold_lock, rows, sha
from litestreamkit import binary, config, replicating, restored_rows, wait_for
from sourcekit import SOURCES, Kit, execute


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
    if kit.name == "django":
        # Django's own schema editor checks every foreign key after each migration: the
        # tool refuses the orphan itself, and the guard puts the database back.
        assert again.returncode == 9 and "a value '99'" in again.stderr, again.stderr
        assert untouched(kit)["app.db"] == before["app.db"]
    else:
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
    assert [a["name"] for a in report["applied"]] == kit.recorded()


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


def test_a_failure_record_written_by_a_newer_guard_still_stops_the_same_set(kit: Kit) -> None:
    kit.add("bad", "INSERT INTO no_such_table VALUES (1)")
    assert kit.guard("migrate").returncode == 9
    path = kit.db.parent / "app.db.preflight-failure.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "written_by": "a newer guard", "extra": [1]}))
    again = kit.guard("migrate")
    assert again.returncode == 11 and "unreadable" not in again.stderr, again.stderr
    del record["exit_code"]  # a required field missing is still unreadable
    path.write_text(json.dumps(record))
    broken = kit.guard("migrate")
    assert broken.returncode == 5 and "unreadable failure record" in broken.stderr


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


def _wait_for_file(path: Path, proc, timeout: float = 120) -> None:
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
    dump_before = dump(kit.db)
    kit.add("nick", "ALTER TABLE users ADD COLUMN nick TEXT")
    if kit.name == "files":
        killed = kit.guard("migrate", PREFLIGHT_FAULT="statement")  # SIGKILLs itself there
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    else:
        kit.add(
            "slow",
            python=(
                f"if __import__('os').environ['PREFLIGHT_DB'] == {str(kit.db)!r}:\n"
                f"    open({str(marker)!r}, 'w').close()\n"
                "    __import__('time').sleep(60)"
            ),
        )
        proc = kit.popen("migrate")
        _wait_for_file(marker, proc)
        assert "nick" in " ".join(dump(kit.db))  # half applied: the tool committed the column
        _kill_tree(proc.pid)
        proc.communicate()
        kit.remove_last()  # the slow one is gone: the plain ADD COLUMN stays
    again = kit.guard("migrate")
    assert again.returncode == 0, again.stderr
    assert rows(kit.db, "SELECT id, name, nick FROM users") == [(1, "ada", None)]
    assert [s for s in dump_before if "INSERT" in s and "posts" in s] == [
        s for s in dump(kit.db) if "INSERT" in s and "posts" in s
    ]


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


def test_a_fresh_database_is_built_to_head_and_the_next_start_is_cached(
    fresh: Kit, tmp_path: Path
) -> None:
    first = fresh.guard("migrate")
    assert first.returncode == 0, first.stderr
    assert fresh.runs in first.stderr
    assert fresh.recorded() == fresh.head
    plain = tmp_path / "plain.db"
    fresh.alone(plain)
    assert fresh.dump() == fresh.dump(plain)  # the schema, indexes and rows the source makes
    again = fresh.guard("migrate")
    assert again.returncode == 0 and "cache" in again.stderr
    assert fresh.runs not in again.stderr
    quick = fresh.guard("run", "--", "/bin/true")
    assert quick.returncode == 0 and "as verified before (cache)" in quick.stderr
    # no database the app would make by default (Django's db.sqlite3, an app.db)
    assert not [p for p in fresh.folder.rglob("*") if p.suffix in (".db", ".sqlite3")]


def test_an_upgrade_through_a_table_rebuild_keeps_every_row_as_the_source_alone_does(
    fresh: Kit, tmp_path: Path
) -> None:
    fresh.at(3)  # users, posts, users.email; the title NOT NULL rebuild and the index pending
    execute(
        fresh.db,
        "INSERT INTO users (id, name) VALUES (1, 'ada')",
        "INSERT INTO posts (id, user_id, title) VALUES (1, 1, 'hello')",
        "INSERT INTO posts (id, user_id, title) VALUES (2, 1, NULL)",
    )
    plain = tmp_path / "plain.db"
    shutil.copyfile(fresh.db, plain)
    result = fresh.guard("migrate")
    assert result.returncode == 0, result.stderr
    assert fresh.recorded() == fresh.head
    assert rows(fresh.db, "SELECT id, title FROM posts ORDER BY id") == [
        (1, "hello"),
        (2, "(untitled)"),
    ]
    assert list((fresh.db.parent / "backups").glob("app-*.db")), "a verified backup first"
    fresh.alone(plain, start=3)
    assert fresh.dump() == fresh.dump(plain)


def test_a_migration_failing_on_the_apps_data_leaves_the_database_exactly_as_before(
    kit: Kit,
) -> None:
    """It passes on an empty database (the tools' scratch build), fails on the live rows;
    a tool committed the migration before it, which is undone too."""
    execute(kit.db, "INSERT INTO posts (id, user_id, title) VALUES (2, 1, 'hello')")
    recorded = kit.recorded()
    kit.add("tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY)")
    kit.add("unique_title", "CREATE UNIQUE INDEX ux_posts_title ON posts (title)")
    before, content = sha(kit.db), dump(kit.db)
    result = kit.guard("migrate")
    assert result.returncode == 9, result.stderr
    assert "UNIQUE constraint failed: posts.title" in result.stderr
    assert ("rolled back" if kit.name == "files" else "restored from") in result.stderr
    assert sha(kit.db) == before and dump(kit.db) == content
    assert kit.recorded() == recorded
    assert (kit.db.parent / "app.db.preflight-failure.json").exists()
    again = kit.guard("migrate")
    assert again.returncode == 11 and sha(kit.db) == before


def test_drift_is_refused_and_nothing_changes(kit: Kit) -> None:
    execute(kit.db, "ALTER TABLE users ADD COLUMN nickname TEXT")  # by hand, outside any migration
    if kit.name != "files":
        (kit.versions / "__init__.py").touch()  # a harmless extra file beside the migrations
    before = untouched(kit)
    result = kit.guard("migrate")
    assert result.returncode == 4, result.stderr
    assert "nickname" in result.stderr
    assert untouched(kit) == before


def test_check_rehearses_on_a_private_copy_and_writes_nothing(kit: Kit) -> None:
    kit.add("tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY)")
    recorded = kit.recorded()
    before = folder_state(kit.db.parent, strict=True)
    result = kit.guard("check")
    assert result.returncode == 3, result.stderr
    assert "rehearse" in result.stderr
    status = kit.guard("status")
    assert status.returncode == 3, status.stderr
    assert folder_state(kit.db.parent, strict=True) == before  # not even a tool's scratch cache
    assert kit.recorded() == recorded


def test_a_new_migration_is_seen_by_the_no_op_start(kit: Kit) -> None:
    quiet = kit.guard("run", "--", "/bin/true")
    assert quiet.returncode == 0 and "as verified before (cache)" in quiet.stderr
    name = kit.add("tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY)")
    result = kit.guard("run", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert "as verified before (cache)" not in result.stderr
    assert kit.recorded() == kit.head and name in kit.recorded()


def test_four_concurrent_starts_all_succeed_and_migrate_once(kit: Kit) -> None:
    kit.add("tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY)")
    kit.add("labels", "CREATE TABLE labels (id INTEGER PRIMARY KEY)")
    procs = [kit.popen("migrate") for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e for _, e in outs]
    assert sum(kit.runs in e for _, e in outs) == 1
    assert kit.recorded() == kit.head
    assert len(list((kit.db.parent / "backups").glob("app-*.db"))) == 1
    assert rows(kit.db, "PRAGMA integrity_check") == [("ok",)]
    if kit.name == "files":  # each migration logged as applied once
        assert rows(
            kit.db,
            "SELECT version, count(*) FROM _preflight_log WHERE event='applied' AND version > 5 "
            "GROUP BY version",
        ) == [(6, 1), (7, 1)]


def test_an_untracked_database_is_adopted_at_the_version_it_matches(kit: Kit) -> None:
    at = kit.names[-1]
    kit.forget()
    kit.add("tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY)")
    result = kit.guard("migrate")
    assert result.returncode == 0, result.stderr
    assert "adopt" in result.stderr and at.split(".")[-1] in result.stderr
    assert kit.recorded() == kit.head
    assert rows(kit.db, "SELECT title FROM posts") == [("hello",)]
    if kit.name == "django":
        assert "--fake" in result.stderr  # recorded by Django itself


def test_an_untracked_database_matching_no_version_is_refused_with_the_stamp_command(
    fresh: Kit,
) -> None:
    execute(fresh.db, "CREATE TABLE other (id INTEGER PRIMARY KEY)")
    before = sha(fresh.db)
    result = fresh.guard("migrate")
    assert result.returncode == 4 and "matches no" in result.stderr
    stamp = {
        "files": "preflight stamp 1 --force",
        "alembic": "alembic stamp e5",
        "flask-migrate": "flask db stamp e5",
        "django": "manage.py migrate blog 0005_post_index --fake",
    }
    assert stamp[fresh.name] in result.stderr
    assert sha(fresh.db) == before


def test_stamp_records_a_version_after_a_backup(kit: Kit) -> None:
    kit.forget()
    refused = kit.guard("stamp", kit.version(1))  # not its schema
    assert refused.returncode == 4, refused.stderr
    assert not list((kit.db.parent / "backups").glob("app-*.db"))
    result = kit.guard("stamp", kit.version(len(kit.names)))
    assert result.returncode == 0, result.stderr
    assert kit.recorded() == kit.head
    assert list((kit.db.parent / "backups").glob("app-*.db"))


def test_a_waiting_start_leaves_the_holders_note_and_names_the_holder(kit: Kit) -> None:
    """The quick start and the full one only write the lock file once they hold it: a
    waiting start keeps the holder's note intact."""
    lock_path = Path(f"{kit.db}.preflight.lock")
    holder = hold_lock(lock_path)
    try:
        note = lock_path.read_bytes()
        assert b'"test-holder"' in note
        done = kit.guard("run", "--lock-timeout", "0.5", "--", "true")
        assert done.returncode == 8, done.stderr
        assert lock_path.read_bytes() == note  # the waiting guards never wrote to it
        assert f"held by pid {holder.pid} on host {os.uname().nodename} since " in done.stderr
        assert "(test-holder)" in done.stderr
        waiting = [l for l in done.stderr.splitlines() if "waiting for the lock held by" in l]
        assert len(waiting) == 1 and f"pid {holder.pid}" in waiting[0], done.stderr
    finally:
        holder.kill()
        holder.wait()
