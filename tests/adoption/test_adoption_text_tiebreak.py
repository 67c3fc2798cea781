"""False "several versions match" (issue 19.3): versions whose schemas mean the same but
whose SQL text differs (a table rebuilt to the same structure comes back as
`CREATE TABLE "users"`, quoted by SQLite's RENAME) tied, and a rehearsal that ended in a
different database (an AUTOINCREMENT counter, data a rebuild rewrote) made the tie "real",
though exactly one version matched the database's schema text exactly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import dump as dump_all
from conftest import folder_state, rows

REBUILD = (
    "CREATE TABLE users2 (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);\n"
    "INSERT INTO users2 SELECT id, {expr} FROM users;\n"
    "DROP TABLE users;\n"
    "ALTER TABLE users2 RENAME TO users;\n"
)

FILES = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);",
    # Same structure: only the text (and the AUTOINCREMENT counter) changes.
    "002_rebuild_users.sql": REBUILD.format(expr="name"),
    "003_posts.sql": "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER, body TEXT);",
    # Same structure again, written on two lines, and the data is rewritten on the way.
    "004_trim_names.sql": REBUILD.replace("users2", "users_trimmed")
    .replace("AUTOINCREMENT, ", "AUTOINCREMENT,\n    ")
    .format(expr="trim(name)"),
}


def dump(db: Path) -> list[str]:
    return [line for line in dump_all(db) if "_preflight" not in line]


def plain(db: Path, upto: int, files: dict[str, str] = FILES) -> Path:
    """The app: plain sqlite3 to `upto`, users written and one deleted (counter > max id)."""
    conn = sqlite3.connect(db)
    for name in sorted(files)[:upto]:
        conn.executescript(files[name])
    conn.executescript(
        "INSERT INTO users (name) VALUES (' ada '), (' bob '), ('carl');"
        "DELETE FROM users WHERE name = 'carl';"
    )
    conn.close()
    return db


def finished(db: Path, upto: int, files: dict[str, str] = FILES) -> list[str]:
    conn = sqlite3.connect(db)
    for name in sorted(files)[upto:]:
        conn.executescript(files[name])
    conn.close()
    return dump(db)


def adopted(db: Path) -> int:
    return rows(db, "SELECT max(version) FROM _preflight_history WHERE how = 'adopted'")[0][0]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_the_version_whose_text_matches_exactly_is_adopted(cli, make_migrations, tmp_path, k):
    folder = make_migrations(FILES)
    db = plain(tmp_path / "app.db", k)
    expected = finished(plain(tmp_path / "reference.db", k), k)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert adopted(db) == k
    assert dump(db) == expected


def test_without_an_exact_text_match_a_real_tie_still_refuses(cli, make_migrations, tmp_path):
    """Written by hand in yet another spelling: no version matches the text, and upgrading
    from 001 or from 002 ends differently (the counter): refused, nothing changed."""
    files = {k: v for k, v in FILES.items() if not k.startswith("004")}
    folder = make_migrations(files)
    hand = {
        "x.sql": "create table USERS (ID integer primary key autoincrement, NAME text not null);"
    }
    db = plain(tmp_path / "app.db", 1, hand)
    state = folder_state(tmp_path)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "matches several versions equally" in result.err
    assert "'preflight stamp 1'" in result.err and "'preflight stamp 2'" in result.err
    assert folder_state(tmp_path) == state


def test_the_same_text_and_meaning_with_different_data_is_a_real_tie(
    cli, make_migrations, tmp_path
):
    """004 rebuilds with exactly 002's text: at 3 or at 4 the schema is the same, text and
    all; only whether 004's trim ran tells them apart. Refused, listing both, untouched."""
    files = dict(FILES)
    files["004_trim_names.sql"] = REBUILD.replace("users2", "users_trimmed").format(
        expr="trim(name)"
    )
    folder = make_migrations(files)
    db = plain(tmp_path / "app.db", 3, files)
    state = folder_state(tmp_path)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "matches several versions equally" in result.err
    assert "'preflight stamp 3'" in result.err and "'preflight stamp 4'" in result.err
    assert "'preflight stamp 2'" not in result.err
    assert folder_state(tmp_path) == state
