"""Foreign-key baseline: a run fails only for violations it introduced and left; orphans
that were already there (SQLite enforces nothing unless asked) are warned about and listed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import dump, folder_state, rows

BASE = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n"
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER "
    "REFERENCES users(id), body TEXT);",
}


def app_writes(db: Path, sql: str) -> None:
    """The app's own connection: plain sqlite3, foreign keys off (SQLite's default)."""
    conn = sqlite3.connect(db)
    conn.executescript(sql)
    conn.close()


def at_001_with_an_orphan(cli, make_db, make_migrations) -> Path:
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", make_migrations(BASE)).code == 0
    app_writes(
        db,
        "INSERT INTO users VALUES (1, 'ann');"
        "INSERT INTO posts VALUES (1, 1, 'ok'), (2, 42, 'orphan');",
    )
    return db


def test_a_pre_existing_orphan_does_not_fail_the_upgrade_and_is_warned_about(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert (
        "foreign keys: 1 foreign key violation(s): posts rowid 2 (user_id=42) -> users"
        in result.err
        and "already present before this run" in result.err
    )
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(2,)]


def test_status_and_check_list_pre_existing_violations_in_text_and_json(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    state = folder_state(db.parent)
    for command in ("status", "check"):
        result = cli(command, "--db", db, "--migrations", folder, "--json")
        assert result.code == 3, result
        report = json.loads(result.out)
        assert report["foreign_key_violation_count"] == 1
        assert report["foreign_key_violations"] == [
            {
                "table": "posts",
                "rowid": 2,
                "parent": "users",
                "columns": ["user_id"],
                "values": [42],
            }
        ]
        assert "posts rowid 2 (user_id=42) -> users" in result.err
    assert folder_state(db.parent) == state


def test_strict_makes_pre_existing_violations_errors_and_changes_nothing(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", folder, "--strict")
    assert result.code == 4, result
    assert "posts rowid 2 (user_id=42) -> users" in result.err and "--strict" in result.err
    assert folder_state(db.parent) == state
    assert cli("check", "--db", db, "--migrations", folder, "--strict").code == 4


def test_an_untracked_database_with_orphans_is_adopted_and_upgraded(cli, make_db, make_migrations):
    db = make_db("fresh")
    app_writes(db, BASE["001_users.sql"] + "INSERT INTO posts VALUES (7, 99, 'orphan');")
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "adopted"),
        (2, "applied"),
    ]


def test_a_violation_made_by_one_migration_and_removed_by_a_later_one_is_fine(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations(
        {
            **BASE,
            "002_staging.sql": "CREATE TABLE staging (id INTEGER PRIMARY KEY, "
            "post_id INTEGER REFERENCES posts(id));\n"
            "INSERT INTO staging VALUES (1, 1000);",
            "003_drop_staging.sql": "DROP TABLE staging;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(3,)]


def test_a_violation_the_run_introduces_and_leaves_fails_it_naming_the_row(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    before = dump(db)
    folder = make_migrations({**BASE, "002_bad.sql": "INSERT INTO posts VALUES (3, 77, 'new');"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9, result
    assert "1 foreign key violation(s): posts rowid 3 (user_id=77) -> users" in result.err
    assert "rowid 2" not in result.err.split("the migrations leave")[1].split("\n")[0]
    assert dump(db) == before


def test_a_rebuilt_table_keeps_its_old_orphans_old(cli, make_db, make_migrations):
    """The 12-step rebuild renumbers rowids: a violation is its row's values, not its rowid."""
    db = make_db("fresh")
    files = {
        "001_c.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE c (name TEXT, p_id INTEGER REFERENCES p(id));"
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(files)).code == 0
    app_writes(db, "INSERT INTO p VALUES (1); INSERT INTO c VALUES ('a', 1), ('b', 5), ('c', 1);")
    folder = make_migrations(
        {
            **files,
            "002_rebuild.sql": "CREATE TABLE c_new (name TEXT NOT NULL, p_id INTEGER "
            "REFERENCES p(id));\n"
            "INSERT INTO c_new SELECT name, p_id FROM c ORDER BY name DESC;\n"
            "DROP TABLE c;\nALTER TABLE c_new RENAME TO c;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT rowid FROM c WHERE p_id = 5") == [(2,)]


def test_without_rowid_tables_are_compared_by_count(cli, make_db, make_migrations):
    db = make_db("fresh")
    files = {
        "001_c.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE c (k TEXT PRIMARY KEY, p_id INTEGER REFERENCES p(id)) "
        "WITHOUT ROWID;"
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(files)).code == 0
    app_writes(db, "INSERT INTO c VALUES ('old', 5);")
    fine = make_migrations({**files, "002_x.sql": "CREATE TABLE x (id INTEGER PRIMARY KEY);"})
    assert cli("migrate", "--db", db, "--migrations", fine).code == 0
    before = dump(db)
    bad = make_migrations(
        {
            **files,
            "002_x.sql": "CREATE TABLE x (id INTEGER PRIMARY KEY);",
            "003_more.sql": "INSERT INTO c VALUES ('new', 6);",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", bad)
    assert result.code == 9, result
    assert "a WITHOUT ROWID row -> p" in result.err
    assert dump(db) == before


def test_a_foreign_key_sqlite_cannot_check_is_skipped_with_a_warning(cli, make_db, make_migrations):
    """REFERENCES a column that is not unique: PRAGMA foreign_key_check raises 'mismatch'."""
    db = make_db("fresh")
    app_writes(
        db,
        "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE c (x TEXT REFERENCES p(name)); INSERT INTO c VALUES ('a');",
    )
    folder = make_migrations(
        {
            "001_p.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT);\n"
            "CREATE TABLE c (x TEXT REFERENCES p(name));",
            "002_q.sql": "CREATE TABLE q (id INTEGER PRIMARY KEY);",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "cannot check c: foreign key mismatch" in result.err


def test_renaming_the_parent_or_the_child_column_keeps_old_orphans_old(
    cli, make_db, make_migrations
):
    """ALTER TABLE ... RENAME rewrites the child's REFERENCES (and a renamed column keeps its
    values): the orphan moves under new names, the run introduced nothing."""
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations(
        {
            **BASE,
            "002_rename.sql": "ALTER TABLE users RENAME TO accounts;\n"
            "ALTER TABLE posts RENAME COLUMN user_id TO account_id;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "posts rowid 2 (user_id=42) -> users already present" in result.err  # warned, not blamed
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(2,)]


def test_orphaning_rows_under_new_names_is_still_introduced(cli, make_db, make_migrations):
    """The loose match is by the dangling values: deleting a parent that rows pointed at
    makes values dangle that did not before, renamed or not."""
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    before = dump(db)
    folder = make_migrations(
        {
            **BASE,
            "002_rename_and_purge.sql": "ALTER TABLE users RENAME TO accounts;\n"
            "DELETE FROM accounts WHERE id = 1;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9, result
    assert "1 foreign key violation(s): posts rowid 1 (user_id=1) -> accounts" in result.err
    assert dump(db) == before
