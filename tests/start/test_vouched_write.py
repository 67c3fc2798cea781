"""The full check before a migration, within the integrity interval (PREFLIGHT_INTEGRITY).

A migrating start backed by a backup may rely on a full check of this very file (same
device and inode, same schema text) that passed within the interval: its backup then
skips the quick_check of the source, still compares every block and hashes the copy,
and verification checks the migrated file in full. What that gives up, and why the
database is never left worse: a page torn since the recorded check is copied into the
backup as it is; the migration then fails on it (rolled back) or passes and verification
refuses (restored from that backup: the same bytes). Either way exit 6 names the
database, the migrations are not blamed, and the next start checks in full.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import folder_state, sha, spawn
from test_integrity import CACHE, HOUR, add_notes, record_check, tear_notes_page

from preflight.storage import cache

SKIPPED = "quick_check skipped before writing: a full check of this file passed"


@pytest.fixture
def world(cli, make_db, make_migrations):
    """A database at head with notes (the cache records a full check just now) and a
    migrations folder with one more migration pending."""

    def make(sql: str = "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n"):
        db = make_db("fresh")
        folder = make_migrations({}, base=True)
        assert cli("migrate", "--db", db, "--migrations", folder).code == 0
        add_notes(db, 40)
        (folder / "006_more.sql").write_text(sql)
        return db, folder

    return make


def migrate(db: Path, folder: Path, *args: str, env: dict[str, str] | None = None):
    return spawn("migrate", "--db", db, "--migrations", folder, *args, env=env)


def backups(db: Path) -> list[Path]:
    return sorted((db.parent / "backups").glob("*.db"))


def test_a_migration_within_the_interval_relies_on_the_recorded_check(world):
    db, folder = world()
    record_check(db, 3 * HOUR)
    before = int(time.time())
    result = migrate(db, folder)
    assert result.returncode == 0, result.stderr
    integrity = result.stderr.split("integrity: ")[1].splitlines()[0]
    assert integrity.startswith(SKIPPED) and "3h ago, within PREFLIGHT_INTEGRITY=24h" in integrity
    backed_up = result.stderr.split("backup: copied")[1].splitlines()[0]
    assert "quick_check skipped (a full check" in backed_up and "every block compared" in backed_up
    assert "verify: schema at head, quick_check ok" in result.stderr  # the migrated file: in full
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM tags").fetchone() == (0,)
    conn.close()
    recorded = json.loads((db.parent / CACHE).read_text())
    assert recorded["checked_at"] >= before and recorded["checked_on"] == cache.file_id(db)
    assert len(backups(db)) == 1


def replaced_by_a_copy(db: Path) -> None:
    """The same bytes in another file (as a restore or a copy by hand makes it)."""
    shutil.copy(db, f"{db}.tmp")
    os.replace(f"{db}.tmp", db)


def schema_changed_by_hand(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE INDEX by_hand ON notes(content_hash)")
    conn.close()


@pytest.mark.parametrize(
    "setup, args",
    [
        (lambda db: record_check(db, 25 * HOUR), ()),
        (lambda db: record_check(db, 2 * HOUR), ("--integrity", "1h")),
        (lambda db: None, ("--integrity", "every-start")),
        (lambda db: None, ("--integrity", "before-writes")),
        (lambda db: (db.parent / CACHE).unlink(), ()),
        (lambda db: record_check(db, -HOUR), ()),  # in the future: the clock was set back
        (replaced_by_a_copy, ()),
        (schema_changed_by_hand, ()),
    ],
    ids=[
        "outside-the-interval",
        "outside-a-shorter-interval",
        "every-start",
        "before-writes",
        "no-cache",
        "recorded-in-the-future",
        "another-file",
        "another-schema",
    ],
)
def test_not_vouched_the_full_check_runs_before_writing(world, setup, args):
    db, folder = world()
    setup(db)
    healthy = migrate(db, folder, *args, "--backup-dir", db.parent / "healthy")
    assert healthy.returncode == 0, healthy.stderr
    assert "skipped" not in healthy.stderr
    assert "backup: copied (copy_file_range) app.db, quick_check ok" in healthy.stderr


@pytest.mark.parametrize(
    "setup, args",
    [
        (lambda db: record_check(db, 25 * HOUR), ()),
        (lambda db: None, ("--integrity", "every-start")),
        (lambda db: None, ("--integrity", "before-writes")),
        (replaced_by_a_copy, ()),
        (lambda db: None, ("--backup", "never")),  # nothing to put back: never skipped
    ],
    ids=["outside-the-interval", "every-start", "before-writes", "another-file", "no-backup"],
)
def test_not_vouched_a_torn_page_is_refused_before_anything_is_written(world, setup, args):
    db, folder = world()
    setup(db)
    tear_notes_page(db)
    state = folder_state(db.parent)
    result = migrate(db, folder, *args)
    assert result.returncode == 6, result.stderr
    assert "fails PRAGMA quick_check" in result.stderr and "before this start" not in result.stderr
    assert folder_state(db.parent) == state  # untouched, no backup


@pytest.mark.parametrize(
    "sql, how",
    [
        # The run's own quick_check, before COMMIT, refuses (docs/internals.md, "The
        # backup beside the migration"): nothing to restore.
        ("CREATE TABLE tags (id INTEGER PRIMARY KEY);\n", "rolled back"),
        ("UPDATE notes SET content_hash = content_hash || 'x';\n", "rolled back"),  # reads it
    ],
    ids=["migration-passes-verification-refuses", "migration-fails-on-the-page"],
)
def test_a_page_torn_within_the_interval_leaves_the_database_as_it_was(world, sql, how):
    db, folder = world(sql)
    record_check(db, HOUR)
    tear_notes_page(db)  # after the recorded check: the start does not know
    torn = sha(db)
    result = migrate(db, folder)
    assert result.returncode == 6, result.stderr
    assert SKIPPED in result.stderr  # the check before writing was left out...
    assert "fails PRAGMA quick_check" in result.stderr  # ...and the state it wrote on was caught
    assert "it was so before this start" in result.stderr and how in result.stderr
    assert sha(db) == torn  # the same bytes as before the start: never worse
    (kept,) = backups(db)
    assert sha(kept) == torn  # the backup holds the state it was taken of, torn page included
    assert not (db.parent / "app.db.preflight-failure.json").exists()  # not the migrations' fault
    assert not (db.parent / CACHE).exists()  # the recorded check vouches no more
    state = folder_state(db.parent)
    again = migrate(db, folder)  # the next start checks in full, before writing anything
    assert again.returncode == 6, again.stderr
    assert "fails PRAGMA quick_check" in again.stderr and SKIPPED not in again.stderr
    assert folder_state(db.parent) == state


def test_a_failed_migration_on_a_healthy_file_within_the_interval_is_the_migrations(
    make_db, make_migrations, cli
):
    """The state put back passes the check it was spared: exit 9 and a failure record."""
    db = make_db("fresh")
    folder = make_migrations({}, base=True)
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    add_notes(db, 40)
    (folder / "006_raises.py").write_text(  # on real rows only: the rehearsal passes
        "def migrate(conn):\n"
        "    if conn.execute('SELECT count(*) FROM notes').fetchone()[0]:\n"
        "        raise RuntimeError('boom')\n"
    )
    record_check(db, HOUR)
    before = sha(db)
    result = migrate(db, folder)
    assert result.returncode == 9, result.stderr
    assert SKIPPED in result.stderr and "boom" in result.stderr
    assert "it was so before this start" not in result.stderr
    assert sha(db) == before
    assert (db.parent / "app.db.preflight-failure.json").exists()
    assert migrate(db, folder).returncode == 11  # the same files are refused until fixed


def test_a_hand_backup_keeps_its_full_check_within_the_interval(world):
    db, folder = world()
    record_check(db, HOUR)
    tear_notes_page(db)
    state = folder_state(db.parent)
    result = spawn("backup", "--db", db, "--migrations", folder)
    assert result.returncode == 6, result.stderr
    assert "fails PRAGMA quick_check" in result.stderr and "skipped" not in result.stderr
    assert folder_state(db.parent) == state
