"""stamp --force records what the operator accepted: later starts accept those differences and
only those; a migration that makes them go away clears them. And stamp below the evidence."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import folder_state, rows

V1 = {
    "001_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n"
    "CREATE INDEX notes_body ON notes(body);"
}
V2 = {**V1, "002_tags.sql": "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);"}
V3 = {
    **V2,
    "003_rebuild_notes.sql": "CREATE TABLE notes_new (id INTEGER PRIMARY KEY, body TEXT NOT NULL, title TEXT);\n"
    "INSERT INTO notes_new (id, body) SELECT id, coalesce(body, '') FROM notes;\n"
    "DROP TABLE notes;\nALTER TABLE notes_new RENAME TO notes;\n"
    "CREATE INDEX notes_body ON notes(body);",
}


def pre_preflight(db: Path) -> Path:
    """The app's own schema, close to 001 but without NOT NULL on body."""
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
        "CREATE INDEX notes_body ON notes(body);"
        "INSERT INTO notes VALUES (1, 'hello');"
    )
    conn.close()
    return db


def test_forced_stamp_is_not_a_dead_end(cli, make_db, make_migrations):
    db = pre_preflight(make_db("fresh"))
    refused = cli("migrate", "--db", db, "--migrations", make_migrations(V1))
    assert refused.code == 4 and "notes.body" in refused.err
    assert "'preflight stamp 1 --force'" in refused.err  # the hint...
    stamped = cli(
        "stamp", "1", "--force", "--db", db, "--migrations", make_migrations(V1), "--json"
    )
    assert stamped.code == 0, stamped
    assert json.loads(stamped.out)["accepted_differences"][0].startswith("notes.body: expected")
    # ...leads somewhere: later starts accept exactly that difference, and migrate on.
    again = cli("migrate", "--db", db, "--migrations", make_migrations(V2))
    assert again.code == 0, again
    assert "accepted (stamp --force): notes.body" in again.err
    status = cli("status", "--db", db, "--migrations", make_migrations(V2), "--json")
    assert status.code == 0, status
    assert [d.split(":")[0] for d in json.loads(status.out)["accepted_differences"]] == [
        "notes.body"
    ]
    assert "accepted by stamp --force: notes.body" in status.err


def test_a_new_difference_after_a_forced_stamp_is_still_drift(cli, make_db, make_migrations):
    db = pre_preflight(make_db("fresh"))
    assert cli("stamp", "1", "--force", "--db", db, "--migrations", make_migrations(V1)).code == 0
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX notes_body")
    conn.close()
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", make_migrations(V2))
    assert result.code == 4, result
    assert "index notes_body" in result.err
    assert "drift: notes.body" not in result.err  # the accepted one is not reported again
    assert folder_state(db.parent) == state


def test_a_migration_that_makes_an_accepted_difference_go_away_clears_it(
    cli, make_db, make_migrations
):
    db = pre_preflight(make_db("fresh"))
    assert cli("stamp", "1", "--force", "--db", db, "--migrations", make_migrations(V1)).code == 0
    result = cli("migrate", "--db", db, "--migrations", make_migrations(V3))
    assert result.code == 0, result
    assert "accepted difference gone after migrating, forgotten: notes.body" in result.err
    assert rows(db, "SELECT count(*) FROM _preflight_accepted") == [(0,)]
    status = cli("status", "--db", db, "--migrations", make_migrations(V3), "--json")
    assert json.loads(status.out)["accepted_differences"] == []
    # and the guarantee is back: that difference made again by hand is drift
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE n2 (id INTEGER PRIMARY KEY, body TEXT, title TEXT);"
        "DROP INDEX notes_body; DROP TABLE notes; ALTER TABLE n2 RENAME TO notes;"
        "CREATE INDEX notes_body ON notes(body);"
    )
    conn.close()
    assert cli("migrate", "--db", db, "--migrations", make_migrations(V3)).code == 4


def test_stamp_below_what_the_schema_shows_is_refused_without_force(cli, make_db, make_migrations):
    db = make_db("fresh")
    folder = make_migrations(V2)
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    state = folder_state(db.parent)
    result = cli("stamp", "1", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "history records 2 applied" in result.err and "'preflight stamp 2'" in result.err
    assert folder_state(db.parent) == state
    # untracked database at 2: the schema alone says 2
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE _preflight_history; DROP TABLE _preflight_log;")
    conn.close()
    result = cli("stamp", "1", "--db", db, "--migrations", folder)
    assert result.code == 4 and "schema matches 002_tags.sql" in result.err, result
    assert cli("stamp", "2", "--db", db, "--migrations", folder).code == 0
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0


def test_stamp_at_a_version_the_evidence_allows_and_forced_stamp_below_still_work(
    cli, make_db, make_migrations
):
    """Data-only migration between: 1 and 2 look the same; stamping 1 is the operator's call."""
    files = {"001_a.sql": "CREATE TABLE a (x);", "002_double.sql": "UPDATE a SET x = x * 2;"}
    db = make_db("fresh")
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE a (x); INSERT INTO a VALUES (21);")
    conn.close()
    folder = make_migrations(files)
    assert cli("stamp", "1", "--db", db, "--migrations", folder).code == 0
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    assert rows(db, "SELECT x FROM a") == [(42,)]
    assert cli("stamp", "1", "--db", db, "--migrations", folder).code == 4  # history says 2
    forced = cli("stamp", "1", "--force", "--db", db, "--migrations", folder)
    assert forced.code == 0, forced
