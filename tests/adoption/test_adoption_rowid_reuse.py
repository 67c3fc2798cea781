"""Adoption evidence that SQLite's reuse of sqlite_master rowids cannot fool (issue 19.1).

SQLite gives a new schema object the rowid max(rowid) + 1 of sqlite_master: after a
migration drops the newest objects, the next one's objects get the dropped ones' rowids.
Evidence that took "rowid above the highest ever seen" as "new" missed them, and adopted a
database at 003 as 004 (a migration that only drops a view), so 004 never ran.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import dump as dump_all
from conftest import rows

from preflight import schema
from preflight.sources import evidence
from preflight.sources import migrations as mig

FILES = {
    "001_initial.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, legacy TEXT);\n"
    "CREATE TABLE import_batches (id INTEGER PRIMARY KEY, started TEXT);\n"
    "CREATE TABLE import_rows (id INTEGER PRIMARY KEY, batch_id INTEGER, raw TEXT);\n"
    "CREATE INDEX import_rows_batch ON import_rows(batch_id);\n",
    # The newest objects go: their rowids are free again.
    "002_drop_import.sql": "DROP TABLE import_rows;\nDROP TABLE import_batches;\n",
    # Create-only: these get rowids 2..5, which the dropped objects had.
    "003_tags.sql": "CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);\n"
    "CREATE INDEX tags_label ON tags(label);\n"
    "CREATE VIEW legacy_report AS SELECT id, legacy FROM items;\n"
    "CREATE TABLE item_tags (item_id INTEGER, tag_id INTEGER);\n",
    "004_drop_report.sql": "DROP VIEW legacy_report;\n",
    # Fails while the view still exists: what running 005 without 004 does.
    "005_drop_legacy.sql": "ALTER TABLE items DROP COLUMN legacy;\n",
}


def dump(db: Path) -> list[str]:
    """Schema and rows without the guard's tables (nor its log's AUTOINCREMENT row)."""
    return [line for line in dump_all(db) if "sqlite_sequence" not in line]


def plain(db: Path, upto: int, files: dict[str, str] = FILES) -> Path:
    """The app's own runner: plain sqlite3 applying 001..upto, then its rows."""
    conn = sqlite3.connect(db)
    for name in sorted(files)[:upto]:
        conn.executescript(files[name])
    conn.execute("INSERT INTO items (id, name) VALUES (1, 'kept')")
    conn.commit()
    conn.close()
    return db


def finished(db: Path, upto: int, files: dict[str, str] = FILES) -> list[str]:
    conn = sqlite3.connect(db)
    for name in sorted(files)[upto:]:
        conn.executescript(files[name])
    conn.close()
    return dump(db)


def test_the_situation_is_real_sqlite_reuses_the_dropped_rowids(tmp_path):
    db = plain(tmp_path / "app.db", 3)
    got = rows(db, "SELECT rowid, name FROM sqlite_master ORDER BY rowid")
    assert got == [
        (1, "items"),
        (2, "tags"),
        (3, "tags_label"),
        (4, "legacy_report"),
        (5, "item_tags"),
    ]


def test_a_database_at_003_is_adopted_at_003_and_004_and_005_run(cli, make_migrations, tmp_path):
    folder = make_migrations(FILES)
    db = plain(tmp_path / "app.db", 3)
    expected = finished(plain(tmp_path / "reference.db", 3), 3)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "adopted"),
        (2, "adopted"),
        (3, "adopted"),
        (4, "applied"),
        (5, "applied"),
    ]
    assert dump(db) == expected
    assert "legacy_report" not in str(rows(db, "SELECT name FROM sqlite_master"))


def test_without_a_later_migration_the_database_is_not_recorded_at_the_wrong_version(
    cli, make_migrations, tmp_path
):
    files = {k: v for k, v in FILES.items() if not k.startswith("005")}
    folder = make_migrations(files)
    db = plain(tmp_path / "app.db", 3, files)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT max(version) FROM _preflight_history WHERE how = 'adopted'") == [(3,)]
    assert rows(db, "SELECT name FROM sqlite_master WHERE type = 'view'") == []
    assert "extra:" not in result.err


def test_a_database_at_004_is_still_adopted_at_004(cli, make_migrations, tmp_path):
    folder = make_migrations(FILES)
    db = plain(tmp_path / "app.db", 4)
    expected = finished(plain(tmp_path / "reference.db", 4), 4)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT max(version) FROM _preflight_history WHERE how = 'adopted'") == [(4,)]
    assert dump(db) == expected


def test_the_ranking_finds_the_exact_version_with_no_difference(make_migrations, tmp_path):
    folder = make_migrations(FILES)
    db = plain(tmp_path / "app.db", 3)
    conn = sqlite3.connect(db)
    live = schema.snapshot(conn)
    conn.close()
    found = evidence.rank(live, mig.discover(folder))
    assert (found.best, found.tier, found.matches) == (0, (3,), (3,))


NON_ASCII = {
    "001_a.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);",
    "002_apfel.sql": 'CREATE TABLE "Äpfel" (id INTEGER PRIMARY KEY, sorte TEXT);',
    "003_b.sql": "CREATE TABLE b (id INTEGER PRIMARY KEY);",
}


def test_a_non_ascii_name_is_keyed_as_sqlite_folds_it(cli, make_migrations, tmp_path):
    """SQLite folds only ASCII letters: 'Äpfel' keyed as Python's 'äpfel' was both missing
    and extra at 002, so 001 'with an extra table' won and 002 failed on it."""
    folder = make_migrations(NON_ASCII)
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    for name in sorted(NON_ASCII)[:2]:
        conn.executescript(NON_ASCII[name])
    conn.close()
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "adopted"),
        (2, "adopted"),
        (3, "applied"),
    ]
