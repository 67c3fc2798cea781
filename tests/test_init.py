"""`preflight init`: adopt a database made by plain sqlite3, writing migration 001 from it.

Both directions: a schema SQL can rebuild is written, proven and adopted (and the guard
then starts on it with nothing to do); one it cannot is refused with nothing written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Result, dump, folder_state, rows, sha

from preflight import schema
from preflight.commands import adopt
from preflight.core.errors import DriftError
from preflight.schema import drift
from preflight.sources.migrations import load, tokens

# What a Flask app's init_db() might have grown into over the years, made by plain sqlite3.
LEGACY = """
CREATE TABLE notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL DEFAULT '',
    deleted_at TEXT
);
CREATE TABLE tags (note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
                   tag TEXT NOT NULL COLLATE NOCASE, PRIMARY KEY (note_id, tag)) WITHOUT ROWID;
CREATE INDEX idx_notes_live ON notes(slug) WHERE deleted_at IS NULL;
CREATE VIRTUAL TABLE notes_fts USING fts5(slug, body, content='notes', content_rowid='id');
CREATE TABLE notes_fts_archive (slug TEXT, body TEXT);
CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN
    INSERT INTO notes_fts(rowid, slug, body) VALUES (new.id, new.slug, new.body);
END;
CREATE VIEW recent_live AS SELECT slug FROM live_notes ORDER BY id DESC LIMIT 5;
CREATE VIEW live_notes AS SELECT * FROM notes WHERE deleted_at IS NULL;
CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);
INSERT INTO notes (slug, body) VALUES ('first', 'hello'), ('second', 'world');
INSERT INTO tags VALUES (1, 'greeting');
ANALYZE;
"""


@pytest.fixture
def legacy(data_dir: Path) -> Path:
    """A database made without preflight: AUTOINCREMENT, FTS5, a view on a view declared
    before the view it reads, a trigger, a partial index, sqlite_stat1, Litestream's table."""
    db = data_dir / "app.db"
    conn = sqlite3.connect(db)
    conn.executescript(LEGACY)
    conn.close()
    names = {n for (n,) in rows(db, "SELECT name FROM sqlite_master")}
    assert {"sqlite_sequence", "sqlite_stat1", "notes_fts_data", "notes_fts_config"} <= names
    return db


def test_init_writes_001_from_the_schema_proves_it_and_adopts_at_001(
    cli: Callable[..., Result], legacy: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"  # created by init: its parent exists
    before = dump(legacy)
    result = cli("init", "--db", legacy, "--migrations", folder)
    assert result.code == 0, result
    written = folder / "001_initial_schema.sql"
    assert sorted(p.name for p in folder.iterdir()) == [written.name]
    text = written.read_text()
    # SQLite's own objects, the FTS shadow tables and Litestream's table are not written;
    # a user table whose name merely starts like a shadow table is.
    for absent in (
        "sqlite_sequence",
        "sqlite_stat",
        "notes_fts_data",
        "notes_fts_idx",
        "notes_fts_content",
        "notes_fts_docsize",
        "notes_fts_config",
        "_litestream",
        "_preflight",
    ):
        assert absent not in text, absent
    assert "CREATE VIRTUAL TABLE notes_fts USING fts5" in text
    assert "CREATE TABLE notes_fts_archive" in text
    # Replayable order: tables, then indexes, then views (a view after the view it reads),
    # then triggers.
    at = {
        key: text.index(key)
        for key in (
            "CREATE TABLE notes (",
            "CREATE INDEX idx_notes_live",
            "CREATE VIEW live_notes",
            "CREATE VIEW recent_live",
            "CREATE TRIGGER notes_ai",
        )
    }
    assert list(at.values()) == sorted(at.values())
    # Adopted in the database, in one history row naming this exact file.
    assert rows(legacy, "SELECT version, name, sha256, how FROM _preflight_history") == [
        (1, written.name, sha(written), "adopted")
    ]
    assert [r[0] for r in rows(legacy, "SELECT event FROM _preflight_log")] == ["adopted", "init"]
    assert dump(legacy) == before  # every row kept
    # A verified backup of the state before init.
    backups = sorted((legacy.parent / "backups").glob("app-*-pre-migrate.db"))
    assert len(backups) == 1 and dump(backups[0]) == before
    assert not rows(backups[0], "SELECT name FROM sqlite_master WHERE name LIKE '_preflight%'")
    # The guard now starts on it with nothing to do.
    result = cli("migrate", "--db", legacy, "--migrations", folder)
    assert result.code == 0 and "0 pending, history and schema verified" in result.err, result
    # A fresh install built from the written file has the adopted database's schema, and
    # its views work (live_notes exists before recent_live reads it).
    fresh = tmp_path / "fresh.db"
    assert cli("migrate", "--db", fresh, "--migrations", folder).code == 0
    live, built = (schema.snapshot(sqlite3.connect(p)) for p in (legacy, fresh))
    assert drift.diff(built, live) == []
    conn = sqlite3.connect(fresh)
    conn.execute("INSERT INTO notes (slug) VALUES ('x')")
    assert conn.execute("SELECT slug FROM recent_live").fetchall() == [("x",)]
    assert conn.execute("SELECT rowid FROM notes_fts WHERE notes_fts MATCH 'x'").fetchall() == [
        (1,)
    ]
    conn.close()


def test_init_refuses_a_schema_sql_cannot_rebuild_and_writes_nothing(
    cli: Callable[..., Result], data_dir: Path, tmp_path: Path
) -> None:
    # An index on a function only the app defines: the schema text is fine, but an empty
    # database (a fresh install) cannot be built from it.
    db = data_dir / "app.db"
    conn = sqlite3.connect(db)
    conn.create_function("slugify", 1, lambda s: s.lower(), deterministic=True)
    conn.executescript(
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT);"
        "CREATE INDEX idx_posts_slug ON posts(slugify(title));"
        "INSERT INTO posts (title) VALUES ('Hello');"
    )
    conn.close()
    folder = tmp_path / "migrations"
    folder.mkdir()
    before, files = folder_state(data_dir, strict=True), folder_state(folder, strict=True)
    result = cli("init", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "cannot be rebuilt from SQL alone" in result.err and "slugify" in result.err
    assert "nothing was written" in result.err
    assert folder_state(folder, strict=True) == files == {}
    after = folder_state(data_dir)
    assert after == {k: v for k, v in before.items() if not k.endswith(".lock")}
    assert not (data_dir / "backups").exists()


def test_a_written_schema_that_differs_from_the_live_one_is_refused(data_dir: Path) -> None:
    db = data_dir / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x INTEGER, y TEXT NOT NULL)")
    live = schema.snapshot(conn)
    conn.close()
    with pytest.raises(DriftError) as info:
        adopt._prove("CREATE TABLE t (x INTEGER);\n", "001_initial_schema.sql", live, db)
    assert "1 difference(s)" in info.value.message
    assert info.value.details == (
        "drift: t.y: database has column TEXT NOT NULL, which no migration made",
    )
    # The same text plus the missing column is accepted: the check is exact, not strict.
    proven = adopt._prove(
        "CREATE TABLE t (x INTEGER, y TEXT NOT NULL);\n", "001_initial_schema.sql", live, db
    )
    assert proven.version == 1 and len(proven.statements) == 1


def test_init_refuses_a_folder_with_migrations_unless_given_a_number_below_them(
    cli: Callable[..., Result], legacy: Path, make_migrations: Callable[..., Path]
) -> None:
    folder = make_migrations(
        {
            "002_note_titles.sql": "ALTER TABLE notes ADD COLUMN title TEXT;\n",
            "README.md": "not a migration\n",
        }
    )
    before, files = dump(legacy), folder_state(folder)
    for args, needle in (
        ((), "already has migrations (002_note_titles.sql)"),
        (("--number", "2"), "already has 002_note_titles.sql, numbered 2 or below"),
        (("--number", "0"), "migration numbers start at 1"),
    ):
        result = cli("init", "--db", legacy, "--migrations", folder, *args)
        assert result.code == 2 and needle in result.err, result
        assert folder_state(folder) == files and dump(legacy) == before
        assert not rows(legacy, "SELECT name FROM sqlite_master WHERE name LIKE '_preflight%'")
    result = cli("init", "--db", legacy, "--migrations", folder, "--number", "1")
    assert result.code == 0, result
    assert (folder / "001_initial_schema.sql").exists()
    # The migration written ahead of adoption applies on the next start.
    result = cli("migrate", "--db", legacy, "--migrations", folder)
    assert result.code == 0 and "1 pending" in result.err, result
    assert [r[:2] for r in rows(legacy, "SELECT version, how FROM _preflight_history")] == [
        (1, "adopted"),
        (2, "applied"),
    ]


@pytest.mark.parametrize("state", ["missing", "empty", "managed"])
def test_init_refuses_what_it_cannot_adopt(
    cli: Callable[..., Result], data_dir: Path, tmp_path: Path, state: str
) -> None:
    db = data_dir / "app.db"
    if state == "empty":
        db.touch()
    elif state == "managed":
        (tmp_path / "first").mkdir()
        (tmp_path / "first" / "001_a.sql").write_text("CREATE TABLE a (x);\n")
        assert cli("migrate", "--db", db, "--migrations", tmp_path / "first").code == 0
    folder = tmp_path / "migrations"
    folder.mkdir()
    before = folder_state(data_dir)
    result = cli("init", "--db", db, "--migrations", folder)
    assert result.code == 2, result
    needle = (
        "already managed by preflight (001_a.sql)" if state == "managed" else "nothing to adopt"
    )
    assert needle in result.err
    assert folder_state(folder) == {} and folder_state(data_dir) == before


def test_the_written_file_loads_as_any_migration(legacy: Path) -> None:
    conn = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True)
    text = adopt.render(conn, legacy, 1)
    conn.close()
    assert sqlite3.complete_statement(text)
    path = legacy.parent / "001_initial_schema.sql"
    path.write_text(text)
    migration = load(path)
    assert {tokens(s.sql)[0].upper() for s in migration.statements} == {"CREATE"}
