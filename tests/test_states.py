"""Every state a real StarPunk install can be in, upgraded (or refused) with data kept."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import MIGRATIONS, dump, folder_state, load_fixture, rows, sha256_hex, spawn

HEAD = 5
HEAD_TABLES = {"notes", "sessions", "tokens", "auth_state", "authorization_codes"}


def user_tables(db: Path) -> set[str]:
    return {
        r[0]
        for r in rows(
            db,
            "SELECT name FROM sqlite_master WHERE type='table' "
            "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_preflight%'",
        )
    }


def applied_versions(db: Path) -> list[tuple[int, str]]:
    return rows(db, "SELECT version, how FROM _preflight_history ORDER BY version")


def old_content(db: Path) -> dict[str, list]:
    """What must survive: notes, the sessions' and tokens' identities, auth_state."""
    conn = sqlite3.connect(db)
    session_cols = [r[1] for r in conn.execute("PRAGMA table_info(sessions)")]
    out = {
        "notes": conn.execute(
            "SELECT id, slug, file_path, published, created_at, updated_at, "
            "deleted_at, content_hash FROM notes ORDER BY id"
        ).fetchall(),
        "sessions": conn.execute(
            "SELECT id, session_token, me, expires_at FROM sessions ORDER BY id"
        ).fetchall()
        if "session_token" in session_cols
        else conn.execute(
            "SELECT id, session_token_hash, me, expires_at FROM sessions ORDER BY id"
        ).fetchall(),
        "tokens": conn.execute(
            "SELECT token, me, client_id, scope, created_at, expires_at FROM tokens ORDER BY token"
        ).fetchall(),
        "auth_state": conn.execute(
            "SELECT state, expires_at FROM auth_state ORDER BY state"
        ).fetchall(),
    }
    conn.close()
    return out


def assert_upgraded(db: Path, before: dict[str, list], hashed_sessions: bool) -> None:
    assert user_tables(db) == HEAD_TABLES
    assert [v for v, _ in applied_versions(db)] == list(range(1, HEAD + 1))
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    notes = rows(
        db,
        "SELECT id, slug, file_path, published, created_at, updated_at, deleted_at, "
        "content_hash FROM notes ORDER BY id",
    )
    assert notes == before["notes"] and len(notes) >= 12
    sessions = rows(db, "SELECT id, session_token_hash, me, expires_at FROM sessions ORDER BY id")
    expected_sessions = [
        (i, tok if hashed_sessions else sha256_hex(tok), me, exp)
        for i, tok, me, exp in before["sessions"]
    ]
    assert sessions == expected_sessions and sessions
    tokens = rows(db, "SELECT token_hash, me, client_id, scope, created_at, expires_at FROM tokens")
    expected_tokens = []
    for token, me, client, scope, created, expires in before["tokens"]:
        if expires is None:
            expires = rows(db, f"SELECT datetime('{created}', '+90 days')")[0][0]
        expected_tokens.append((sha256_hex(token), me, client, scope, created, expires))
    assert sorted(tokens) == sorted(expected_tokens) and len(tokens) == 5
    assert (
        rows(db, "SELECT state, expires_at FROM auth_state ORDER BY state") == before["auth_state"]
    )


@pytest.mark.parametrize(
    "state, adopted, hashed",
    [("v0.3.0", 1, False), ("v0.4.0", 2, True), ("v0.9.5", 3, True), ("rc1-crashed", 3, True)],
)
def test_released_database_upgrades_to_head_with_every_row(cli, make_db, state, adopted, hashed):
    db = make_db(state)
    before = old_content(db)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    assert (
        f"schema matches {sorted(p.name for p in MIGRATIONS.iterdir())[adopted - 1]}" in result.err
    )
    assert applied_versions(db) == [(v, "adopted") for v in range(1, adopted + 1)] + [
        (v, "applied") for v in range(adopted + 1, HEAD + 1)
    ]
    assert_upgraded(db, before, hashed)
    backups = list((db.parent / "backups").glob("app-*-pre-migrate.db"))
    assert len(backups) == 1 and dump(backups[0]) == dump(load_fixture(state, db.parent / "x.db"))
    assert backups[0].stat().st_mode & 0o777 == 0o600
    # A second start is a no-op: nothing written, no new backup.
    state_before = folder_state(db.parent)
    again = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert again.code == 0 and "0 pending" in again.err
    assert folder_state(db.parent) == state_before


def test_fresh_database_is_built_from_001(cli, make_db):
    db = make_db("fresh")
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    assert user_tables(db) == HEAD_TABLES
    assert applied_versions(db) == [(v, "applied") for v in range(1, HEAD + 1)]
    assert not (db.parent / "backups").exists() or not any((db.parent / "backups").iterdir())


def test_zero_byte_database_is_fresh(cli, make_db):
    db = make_db("fresh")
    db.touch()
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert user_tables(db) == HEAD_TABLES


def test_done_when_v095_via_python_m_preflight(make_db):
    db = make_db("v0.9.5")
    before = old_content(db)
    done = spawn("migrate", "--db", db, "--migrations", "migrations")
    assert done.returncode == 0, done.stderr
    assert_upgraded(db, before, hashed_sessions=True)
    assert "schema_migrations" not in user_tables(db)


def test_rc3_partial_is_refused_untouched_then_recovers_after_dropping_the_column(cli, make_db):
    db = make_db("rc3-partial")
    before = old_content(db)
    codes_before = rows(db, "SELECT * FROM authorization_codes ORDER BY id")
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 4
    assert "tokens.token_hash" in result.err and "stamp 3 --force" in result.err
    assert folder_state(db.parent) == state
    # stamp refuses too: the schema does not match 003, and --force would not hide the
    # drift from the next start either.
    assert cli("stamp", "3", "--db", db, "--migrations", MIGRATIONS).code == 4
    assert folder_state(db.parent) == state
    # The README's recipe: the hotfix's column is derivable from `token`; drop it.
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE tokens DROP COLUMN token_hash")
    conn.close()
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    assert "extra: table authorization_codes" in result.err
    assert_upgraded(db, before, hashed_sessions=True)
    assert rows(db, "SELECT * FROM authorization_codes ORDER BY id") == codes_before


def drifted(cli, make_db) -> Path:
    """History at head, but tokens rebuilt by hand without token_hash."""
    db = make_db("v0.9.5")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE tokens_old AS SELECT * FROM tokens;
        DROP TABLE tokens;
        CREATE TABLE tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, me TEXT NOT NULL,
            client_id TEXT, scope TEXT DEFAULT 'create',
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            expires_at TIMESTAMP NOT NULL, last_used_at TIMESTAMP, revoked_at TIMESTAMP);
        INSERT INTO tokens SELECT id, me, client_id, scope, created_at, expires_at, last_used_at,
            revoked_at FROM tokens_old;
        DROP TABLE tokens_old;
        CREATE INDEX idx_tokens_me ON tokens(me);
        CREATE INDEX idx_tokens_expires ON tokens(expires_at);
    """)
    conn.close()
    for old in (db.parent / "backups").iterdir():
        old.unlink()
    return db


def test_drifted_database_is_refused_naming_the_column_and_its_migration(cli, make_db):
    db = drifted(cli, make_db)
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 4
    assert (
        "drift: tokens.token_hash: expected column TEXT UNIQUE NOT NULL "
        "(from 004_secure_tokens_and_authorization_codes.py), missing in database"
    ) in result.err
    assert "index idx_tokens_hash" in result.err
    assert folder_state(db.parent) == state
    assert cli("check", "--db", db, "--migrations", MIGRATIONS).code == 4
    assert folder_state(db.parent) == state


def test_refusal_leaves_a_crashed_wal_database_byte_identical(cli, make_db, tmp_path):
    """The app died with writes still in the -wal; the guard refuses (drift) and must not
    even checkpoint them into the main file."""
    db = drifted(cli, make_db)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO notes (slug, file_path, published) VALUES ('late', 'late.md', 1)")
    for suffix in ("", "-wal"):  # a copy taken while the writer is alive: a crash image
        (crashed / f"app.db{suffix}").write_bytes(Path(f"{db}{suffix}").read_bytes())
    writer.close()
    db = crashed / "app.db"
    assert Path(f"{db}-wal").stat().st_size > 0
    before = {k: v for k, v in folder_state(crashed).items() if not k.endswith("-shm")}
    for command in ("migrate", "status", "check"):
        result = cli(command, "--db", db, "--migrations", MIGRATIONS)
        if command == "status":  # runs no .py migration: drift is not checked, and says so
            assert result.code == 0 and "drift: not checked" in result.err, result
        else:
            assert result.code == 4, (command, result)
        after = {k: v for k, v in folder_state(crashed).items() if not k.endswith("-shm")}
        assert after == before, command
    assert rows(db, "SELECT count(*) FROM notes WHERE slug='late'") == [(1,)]


def test_wal_database_with_uncheckpointed_writes_keeps_them(cli, make_db):
    db = make_db("v0.9.5")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO notes (slug, file_path, published) VALUES ('late', 'late.md', 1)")
    assert Path(f"{db}-wal").stat().st_size > 0
    try:
        result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    finally:
        writer.close()
    assert result.code == 0, result
    assert rows(db, "SELECT count(*) FROM notes WHERE slug='late'") == [(1,)]
    backup = next((db.parent / "backups").glob("*-pre-migrate.db"))
    assert rows(backup, "SELECT count(*) FROM notes WHERE slug='late'") == [(1,)]


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "garbage-after-header"],
)
def test_not_a_database_is_refused_untouched(cli, make_db, content):
    db = make_db("fresh")
    db.write_bytes(content)
    state = folder_state(db.parent)
    for command in ("migrate", "check", "status"):
        result = cli(command, "--db", db, "--migrations", MIGRATIONS)
        assert result.code == 6, (command, result)
        assert str(db) in result.err
    assert folder_state(db.parent) == state


def test_database_path_with_uri_characters(cli, data_dir):
    folder = data_dir / "odd ?name#1"
    folder.mkdir()
    db = load_fixture("v0.9.5", folder / "app?.db")
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    assert [v for v, _ in applied_versions(db)] == [1, 2, 3, 4, 5]
    assert cli("check", "--db", db, "--migrations", MIGRATIONS).code == 0


def test_symlinked_database_is_migrated_and_restored_through_the_link(
    cli, data_dir, make_migrations
):
    real = load_fixture("v0.9.5", data_dir / "real.db")
    link = data_dir / "app.db"
    link.symlink_to(real)
    assert cli("migrate", "--db", link, "--migrations", MIGRATIONS).code == 0
    before = dump(real)
    bad = make_migrations({"006_bad.sql": "CREATE UNIQUE INDEX u ON notes(published);"}, base=True)
    assert cli("migrate", "--db", link, "--migrations", bad).code == 9
    assert link.is_symlink() and link.resolve() == real
    assert dump(real) == before


def test_fifo_where_the_database_should_be_is_refused_without_blocking(cli, data_dir):
    fifo = data_dir / "app.db"
    os.mkfifo(fifo)
    result = cli("migrate", "--db", fifo, "--migrations", MIGRATIONS)
    assert result.code == 2 and "not a regular file" in result.err
