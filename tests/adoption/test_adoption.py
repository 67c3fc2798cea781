"""Databases without preflight history: adopted at exactly one version, or refused."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import MIGRATIONS, REPO, dump, folder_state, rows


def build(db: Path, sql: str) -> Path:
    conn = sqlite3.connect(db)
    conn.executescript(sql)
    conn.close()
    return db


def test_versions_indistinguishable_but_nothing_executes_between_picks_the_highest(
    cli, make_db, make_migrations
):
    folder = make_migrations(
        {
            "001_a.sql": "CREATE TABLE a (x);",
            "002_note.sql": "-- documentation only: nothing to run\n",
            "003_b.sql": "CREATE TABLE b (y);",
        }
    )
    db = build(make_db("fresh"), "CREATE TABLE a (x); INSERT INTO a VALUES (1);")
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "execute no statement" in result.err and "choosing 002_note.sql" in result.err
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "adopted"),
        (2, "adopted"),
        (3, "applied"),
    ]


def test_versions_indistinguishable_with_a_data_migration_between_is_refused(
    cli, make_db, make_migrations
):
    folder = make_migrations(
        {"001_a.sql": "CREATE TABLE a (x);", "002_double.sql": "UPDATE a SET x = x * 2;"}
    )
    db = build(make_db("fresh"), "CREATE TABLE a (x); INSERT INTO a VALUES (21);")
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "matches several versions equally" in result.err and "preflight stamp" in result.err
    assert folder_state(db.parent) == state
    # The operator knows: it is at 001. Stamp, then the data migration runs exactly once.
    assert cli("stamp", "1", "--db", db, "--migrations", folder).code == 0
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    assert rows(db, "SELECT x FROM a") == [(42,)]


def test_starpunk_v1_database_without_history_asks_for_stamp(cli, make_db):
    """Schema after 004 with StarPunk's tracker: 004 and 005 look alike, 005 drops a table."""
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    build(
        db,
        "DROP TABLE _preflight_history; DROP TABLE _preflight_log;"
        "CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "migration_name TEXT UNIQUE NOT NULL, applied_at TIMESTAMP NOT NULL "
        "DEFAULT CURRENT_TIMESTAMP);",
    )
    before = dump(db)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 4 and "004_secure" in result.err and "005_retire" in result.err
    assert dump(db) == before
    assert cli("stamp", "4", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert not rows(db, "SELECT name FROM sqlite_master WHERE name='schema_migrations'")


def test_status_reports_extra_objects_as_warnings(cli, make_db):
    db = make_db("v0.9.5")
    result = cli("check", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 3
    assert "warning: extra: table schema_migrations" in result.err
    # status does not run the .py migrations that adoption must replay: it says so
    result = cli("status", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 3 and "drift: not checked: 002_hash_session_tokens.py" in result.err


def test_strict_makes_extra_objects_errors(cli, make_db):
    db = make_db("v0.9.5")  # StarPunk's schema_migrations is an extra table
    before = dump(db)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--strict")
    assert result.code == 4 and "schema_migrations" in result.err
    assert dump(db) == before


def test_backup_never_rolls_back_before_commit_and_is_exit_10_after_it(
    cli, make_db, make_migrations
):
    db = make_db("v0.9.5")
    before = dump(db)
    folder = make_migrations(
        {"006_unique.sql": "CREATE UNIQUE INDEX u ON notes(published);"}, base=True
    )
    result = cli("migrate", "--db", db, "--migrations", folder, "--backup", "never")
    # Adoption and 004-006 are one transaction: 006 failing rolls all of it back.
    assert result.code == 9, result
    assert "rolled back; the database was not changed" in result.err
    assert dump(db) == before
    assert not rows(db, "SELECT name FROM sqlite_master WHERE name='_preflight_history'")
    assert cli("clear-failure", "--db", db).code == 0
    # A failure after COMMIT (the smoke test) needs a backup to undo: without one, exit 10.
    result = cli(
        "migrate", "--db", db, "--migrations", MIGRATIONS, "--backup", "never", "--smoke", "false"
    )
    assert result.code == 10, result
    assert "no backup (PREFLIGHT_BACKUP=never)" in result.err
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(5,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert not (db.parent / "backups").exists()


def test_readme_run_command_works_as_written(tmp_path):
    """The README's command without a container (the container one: test_container.py)."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"Without a container:\n\n```sh\n(.*?)```", readme, re.S)[1]
    (tmp_path / "migrations").symlink_to(MIGRATIONS)
    for line in block.strip().splitlines():
        argv = shlex.split(line)
        if argv[0] == "python3":
            argv[0] = sys.executable
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "app started"
    assert "exec: " in done.stderr
    assert rows(tmp_path / "data" / "app.db", "SELECT count(*) FROM _preflight_history") == [(5,)]
