"""Backups belong to the database they came from, and say which migration they hold
(issue 10 item 2, issue 11): two databases of one file name sharing a backup folder."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import dump, folder_state, rows

from preflight.storage import catalog

V1 = {"001_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"}
V2 = {**V1, "002_tags.sql": "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);"}


def write(db: Path, body: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO notes (body) VALUES (?)", (body,))
    conn.commit()
    conn.close()


@pytest.fixture
def twins(cli, tmp_path: Path, make_migrations) -> tuple[Path, Path, Path, Path]:
    """/a/app.db and /b/app.db, each with one note, both at 001, one shared backup folder."""
    folder = make_migrations(V1)
    shared = tmp_path / "shared-backups"
    made = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        db = tmp_path / name / "app.db"
        assert cli("migrate", "--db", db, "--migrations", folder, "--backup-dir", shared).code == 0
        write(db, f"from {name}")
        made.append(db)
    return made[0], made[1], shared, folder


def test_restore_takes_this_databases_backup_never_the_others(cli, twins):
    a, b, shared, _ = twins
    assert cli("backup", "--db", a, "--backup-dir", shared).code == 0
    wanted = dump(a)
    assert cli("backup", "--db", b, "--backup-dir", shared).code == 0  # b's is the newest
    write(a, "after the backup")
    assert cli("restore", "--db", a, "--backup-dir", shared).code == 0
    assert dump(a) == wanted and ("from a",) in rows(a, "SELECT body FROM notes")
    assert ("from b",) not in rows(a, "SELECT body FROM notes")


def test_pruning_one_database_never_deletes_the_others_backups(cli, twins):
    a, b, shared, _ = twins
    assert cli("backup", "--db", a, "--backup-dir", shared).code == 0
    (kept,) = [x.path for x in catalog.list_backups(shared, a)]
    for _ in range(3):
        assert cli("backup", "--db", b, "--backup-dir", shared, "--keep-backups", "1").code == 0
    assert kept.exists() and [x.path for x in catalog.list_backups(shared, a)] == [kept]
    assert len(catalog.list_backups(shared, b)) == 1  # b's own were pruned to one


def test_status_lists_only_this_databases_backups_with_time_size_and_version(cli, twins):
    a, b, shared, _ = twins
    assert cli("backup", "--db", a, "--backup-dir", shared).code == 0
    assert cli("backup", "--db", b, "--backup-dir", shared).code == 0
    result = cli("status", "--db", a, "--backup-dir", shared, "--migrations", twins[3], "--json")
    report = json.loads(result.out)
    (listed,) = report["backups"]
    assert listed["database_id"] == report["database_id"] == catalog.read_identity(a)
    assert listed["version"] == 1 and listed["migration"] == "001_notes.sql"
    assert listed["bytes"] == Path(listed["path"]).stat().st_size > 0
    assert listed["reason"] == "manual" and listed["taken_at"].endswith("Z")
    text = cli("status", "--db", a, "--backup-dir", shared, "--migrations", twins[3]).err
    assert "status: 1 backup(s)" in text and "version 1 (001_notes.sql)" in text
    assert "MiB" in text and listed["taken_at"] in text


def test_old_backups_without_a_record_are_restorable_and_never_pruned(cli, twins):
    a, b, shared, _ = twins
    old = shared / "app-20200101T000000.000Z-manual.db"
    shared.mkdir(exist_ok=True)
    shutil.copyfile(a, old)  # as an older guard wrote them: no side record
    wanted = dump(a)
    write(a, "later")
    for db in (a, b):
        assert old in [x.path for x in catalog.list_backups(shared, db)]
    for _ in range(3):
        assert cli("backup", "--db", b, "--backup-dir", shared, "--keep-backups", "1").code == 0
        assert cli("backup", "--db", a, "--backup-dir", shared, "--keep-backups", "1").code == 0
    assert old.exists()
    assert cli("restore", old.name, "--db", a, "--backup-dir", shared).code == 0
    assert dump(a) == wanted


def test_a_lost_id_file_is_recovered_from_the_records_of_this_path(cli, twins):
    a, _, shared, _ = twins
    assert cli("backup", "--db", a, "--backup-dir", shared).code == 0
    mine = catalog.read_identity(a)
    catalog.identity_path(a).unlink()
    assert catalog.identity(a, shared) == mine
    assert cli("backup", "--db", a, "--backup-dir", shared).code == 0
    assert catalog.read_identity(a) == mine and len(catalog.list_backups(shared, a)) == 2


def test_a_restore_onto_an_empty_volume_continues_the_backups_lineage(cli, twins):
    a, _, shared, _ = twins
    assert cli("backup", "--db", a, "--backup-dir", shared).code == 0
    mine, wanted = catalog.read_identity(a), dump(a)
    for path in a.parent.iterdir():
        path.unlink()  # the volume was lost; the backups were elsewhere
    assert cli("restore", "--db", a, "--backup-dir", shared).code == 0
    assert dump(a) == wanted and catalog.read_identity(a) == mine


def test_a_backup_named_explicitly_may_come_from_another_database(cli, twins):
    a, b, shared, _ = twins
    assert cli("backup", "--db", b, "--backup-dir", shared).code == 0
    (theirs,) = catalog.list_backups(shared, b)
    result = cli("restore", theirs.path, "--db", a, "--backup-dir", shared)
    assert result.code == 0 and f"is a backup of {b}" in result.err
    assert ("from b",) in rows(a, "SELECT body FROM notes")
    assert catalog.read_identity(a) != catalog.read_identity(b)  # a keeps its own lineage


def test_status_writes_no_id_file(cli, twins):
    a, _, shared, folder = twins
    state = folder_state(a.parent, strict=True)
    assert cli("status", "--db", a, "--backup-dir", shared, "--migrations", folder).code == 0
    assert folder_state(a.parent, strict=True) == state


@pytest.fixture
def versions(cli, tmp_path: Path, make_migrations) -> Callable[..., object]:
    """A database with a backup at version 1 (pre-migrate) and one at version 2 (manual)."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    assert cli("migrate", "--db", db, "--migrations", make_migrations(V1)).code == 0
    write(db, "at one")
    assert cli("migrate", "--db", db, "--migrations", make_migrations(V2)).code == 0
    write(db, "at two")
    assert cli("backup", "--db", db).code == 0
    write(db, "later")
    return db


def test_restore_by_version_takes_the_newest_backup_at_that_version(cli, versions):
    db = versions
    assert [(b.version, b.reason) for b in catalog.list_backups(db.parent / "backups", db)] == [
        (1, "pre-migrate"),
        (2, "manual"),
    ]
    assert cli("restore", "--version", "1", "--db", db).code == 0
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(1,)]
    assert rows(db, "SELECT body FROM notes") == [("at one",)]
    # The newest at version 2 is now the state the first restore saved (pre-restore).
    assert cli("restore", "--version", "2", "--db", db).code == 0
    assert rows(db, "SELECT body FROM notes") == [("at one",), ("at two",), ("later",)]


def test_restore_by_a_version_no_backup_holds_is_a_usage_error_and_changes_nothing(cli, versions):
    db = versions
    state = folder_state(db.parent)
    result = cli("restore", "--version", "3", "--db", db)
    assert result.code == 2 and "no backup of app.db at version 3" in result.err
    assert "backups hold: 1, 2" in result.err
    assert cli("restore", "x.db", "--version", "1", "--db", db).code == 2
    assert folder_state(db.parent) == state


def test_old_backups_beyond_keep_do_not_stop_the_quick_start(
    cli, tmp_path, make_migrations, monkeypatch
):
    import os

    from preflight.fast import quickstart

    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    folder = make_migrations(V1)
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    (db.parent / "backups").mkdir()
    for day in range(1, 4):  # more than --keep-backups 2, none prunable
        shutil.copyfile(db, db.parent / "backups" / f"app-2020010{day}T000000.000Z-manual.db")
    execs = []
    monkeypatch.setattr(os, "execvp", lambda file, args: execs.append(args))
    args = [
        "run",
        "--db",
        str(db),
        "--migrations",
        str(folder),
        "--keep-backups",
        "2",
        "--",
        "true",
    ]
    quickstart.start(args, {})
    assert execs == [["true"]]
    for _ in range(3):  # records of this database beyond keep: pruned by the full pipeline
        assert cli("backup", "--db", db, "--keep-backups", "0").code == 0
    quickstart.start(args, {})
    assert execs == [["true"]]  # handed over
