"""Adoption by evidence: an untracked database built by plain sqlite3 at every version of a
history is adopted at that version (or refused, listing exactly the real candidates)."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import dump as dump_all
from conftest import folder_state, rows

from preflight import schema
from preflight.sources import evidence
from preflight.sources import migrations as mig


def plain(db: Path, files: dict[str, str], upto: int, data: str = "") -> Path:
    """What a real app did: its own runner applied files 1..upto with sqlite3, FKs off."""
    conn = sqlite3.connect(db)
    for name in sorted(files)[:upto]:
        conn.executescript(files[name])
    if data:
        conn.executescript(data)
    conn.close()
    return db


def reference(tmp: Path, files: dict[str, str], upto: int, data: str = "") -> list[str]:
    """plain sqlite3 applying the rest of the files to the same database: the right answer."""
    db = plain(tmp / f"reference-{upto}.db", files, upto, data)
    conn = sqlite3.connect(db)
    for name in sorted(files)[upto:]:
        conn.executescript(files[name])
    conn.close()
    return dump(db)


def dump(db: Path) -> list[str]:
    """Schema and rows, without the guard's tables (its log's AUTOINCREMENT row included)."""
    return [line for line in dump_all(db) if "sqlite_sequence" not in line]


def stamp_versions(err: str) -> set[int]:
    return {int(v) for v in re.findall(r"'preflight stamp (\d+)'", err)}


CREATE_ONLY = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);",
    "002_posts.sql": "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL "
    "REFERENCES users(id), body TEXT);",
    "003_posts_idx.sql": "CREATE INDEX posts_user ON posts(user_id);",
    "004_tags.sql": "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);\n"
    "CREATE TABLE post_tags (post_id INTEGER REFERENCES posts(id), "
    "tag_id INTEGER REFERENCES tags(id), PRIMARY KEY (post_id, tag_id)) "
    "WITHOUT ROWID;",
    "005_view.sql": "CREATE VIEW recent AS SELECT id, body FROM posts ORDER BY id DESC;",
    "006_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT);\n"
    "CREATE TRIGGER posts_audit AFTER INSERT ON posts BEGIN "
    "INSERT INTO audit (at) VALUES ('x'); END;",
    "007_settings.sql": "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT);",
}

ROWS = {
    1: "INSERT INTO users VALUES (1, 'a@example.org');",
    2: "INSERT INTO posts VALUES (1, 1, 'hello'); INSERT INTO posts VALUES (2, 99, 'orphan');",
    4: "INSERT INTO tags VALUES (1, 't'); INSERT INTO post_tags VALUES (1, 1);",
}


def data_upto(k: int) -> str:
    return " ".join(sql for v, sql in ROWS.items() if v <= k)


@pytest.mark.parametrize("k", range(1, len(CREATE_ONLY) + 1))
def test_create_only_history_is_adopted_at_exactly_its_version(
    cli, make_db, make_migrations, tmp_path, k
):
    folder = make_migrations(CREATE_ONLY)
    db = plain(make_db("fresh"), CREATE_ONLY, k, data_upto(k))
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (v, "adopted" if v <= k else "applied") for v in range(1, len(CREATE_ONLY) + 1)
    ]
    assert dump(db) == reference(tmp_path, CREATE_ONLY, k, data_upto(k))


DROPS = {
    "001_a.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY, x TEXT);",
    "002_b.sql": "CREATE TABLE b (id INTEGER PRIMARY KEY, y TEXT);",
    "003_drop_b.sql": "DROP TABLE b;",
    "004_c.sql": "CREATE TABLE c (id INTEGER PRIMARY KEY, z TEXT);",
    "005_c_idx.sql": "CREATE INDEX c_z ON c(z);",
    "006_drop_c_idx.sql": "DROP INDEX c_z;",
}


@pytest.mark.parametrize("k", range(1, len(DROPS) + 1))
def test_history_with_drops_is_adopted_at_every_version_with_the_plain_sqlite3_result(
    cli, make_db, make_migrations, tmp_path, k
):
    """v1 = v3 and v4 = v6 look alike; upgrading from either gives the same database."""
    folder = make_migrations(DROPS)
    data = "INSERT INTO a VALUES (1, 'kept');" + (
        " INSERT INTO b VALUES (1, 'b');" if k == 2 else ""
    )
    db = plain(make_db("fresh"), DROPS, k, data)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert dump(db) == reference(tmp_path, DROPS, k, data)
    adopted = rows(db, "SELECT max(version) FROM _preflight_history WHERE how='adopted'")[0][0]
    assert adopted == {1: 3, 3: 3, 4: 6, 6: 6}.get(k, k)


DATA = {
    "001_settings.sql": "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT);",
    "002_theme.sql": "INSERT INTO settings VALUES ('theme', 'dark');",
    "003_upper.sql": "UPDATE settings SET v = upper(v);",
    "004_t.sql": "CREATE TABLE t (id INTEGER PRIMARY KEY);",
    "005_seed.sql": "INSERT INTO t VALUES (1);",
}


@pytest.mark.parametrize(
    "k, outcome", [(1, {1, 2, 3}), (2, {2, 3}), (3, {2, 3}), (4, {4, 5}), (5, 5)]
)
def test_history_with_data_migrations_lists_exactly_the_real_candidates(
    cli, make_db, make_migrations, tmp_path, k, outcome
):
    """Same schema at 1, 2 and 3: a candidate whose pending INSERT fails here is none; the
    others are the same only when upgrading from them gives the same database (not here:
    the app wrote a lower-case row after 003, which 003 would upper-case)."""
    folder = make_migrations(DATA)
    data = "INSERT INTO settings VALUES ('lang', 'en');"
    db = plain(make_db("fresh"), DATA, k, data)
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", folder)
    if isinstance(outcome, set):
        assert result.code == 4, result
        assert "matches several versions equally" in result.err
        assert stamp_versions(result.err) == outcome
        assert folder_state(db.parent) == state
        # The way out works: stamp the real version, then the upgrade is plain sqlite3's.
        assert cli("stamp", k, "--db", db, "--migrations", folder).code == 0
        assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    else:
        assert result.code == 0, result
        assert rows(db, "SELECT max(version) FROM _preflight_history WHERE how='adopted'") == [
            (outcome,)
        ]
    assert dump(db) == reference(tmp_path, DATA, k, data)


def test_a_candidate_whose_pending_migration_cannot_apply_is_no_candidate(
    cli, make_db, make_migrations
):
    """Version 1 'with an extra table' would run 002's CREATE TABLE on a table that exists."""
    folder = make_migrations(
        {
            "001_a.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);",
            "002_cache.sql": "CREATE TABLE cache (k TEXT PRIMARY KEY, v BLOB);",
        }
    )
    db = plain(
        make_db("fresh"),
        {"x.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);CREATE TABLE cache (k TEXT);"},
        1,
    )
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "002_cache.sql" in result.err and "already exists" in result.err
    assert "preflight stamp" in result.err and "--force" in result.err
    assert folder_state(db.parent) == state


def test_an_extra_table_a_later_migration_does_not_make_is_still_only_a_warning(
    cli, make_db, make_migrations
):
    folder = make_migrations(
        {
            "001_a.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);",
            "002_b.sql": "CREATE TABLE b (id INTEGER PRIMARY KEY);",
        }
    )
    db = plain(
        make_db("fresh"),
        {"x.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);CREATE TABLE app_own (x);"},
        1,
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "extra: table app_own" in result.err
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "adopted"),
        (2, "applied"),
    ]


def test_drift_at_the_closest_version_is_refused_not_adopted_lower(cli, make_db, make_migrations):
    """A column added by hand at version 3 must not make 'version 1 with extra tables' win."""
    files = {
        "001_a.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        "002_b.sql": "CREATE TABLE b (id INTEGER PRIMARY KEY);",
        "003_c.sql": "CREATE TABLE c (id INTEGER PRIMARY KEY);",
    }
    folder = make_migrations(files)
    db = plain(make_db("fresh"), files, 3, "ALTER TABLE b ADD COLUMN surprise TEXT;")
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 4, result
    assert "closest is 003_c.sql" in result.err and "b.surprise" in result.err
    assert folder_state(db.parent) == state


def _files(folder: Path, count: int) -> dict[str, str]:
    return {
        f"{i:04d}_t{i}.sql": f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT);\n"
        f"CREATE INDEX t{i}_v ON t{i}(v);"
        for i in range(1, count + 1)
    }


def test_adoption_diffs_only_the_closest_versions_not_every_one(tmp_path, caplog):
    """Not quadratic: 300 migrations, database at 150: a handful of versions diffed."""
    folder = tmp_path / "m"
    folder.mkdir()
    files = _files(folder, 300)
    for name, text in files.items():
        (folder / name).write_text(text)
    db = plain(tmp_path / "app.db", files, 150)
    conn = sqlite3.connect(db)
    live = schema.snapshot(conn)
    conn.close()
    caplog.set_level(logging.DEBUG, logger="preflight")
    found = evidence.rank(live, mig.discover(folder))
    assert found.matches == (150,) and found.best == 0
    assert len(found.diffs) <= 3  # 149, 150, 151
