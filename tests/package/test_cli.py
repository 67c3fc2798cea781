"""The CLI end to end: failures and restores, read-only commands, exec, concurrency, config."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, clean_env, dump, folder_state, hold_lock, rows, spawn

from preflight.core import errors
from preflight.storage import config

# Works on an empty schema (so the pre-write rehearsal passes), fails on real rows.
FAILING = (
    "CREATE TABLE audit2 (id INTEGER PRIMARY KEY);\nCREATE UNIQUE INDEX u ON notes(published);\n"
)


def history(db: Path) -> list[tuple[int, str]]:
    return rows(db, "SELECT version, how FROM _preflight_history ORDER BY version")


@pytest.fixture
def head_db(cli, make_db) -> Path:
    db = make_db("v0.9.5")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    for old in (db.parent / "backups").iterdir():
        old.unlink()
    return db


# --- a failing migration: restored, recorded, refused next time -------------------------


def test_failing_migration_restores_then_refuses_same_set_then_retries_fixed_set(
    cli, head_db, make_migrations
):
    db = head_db
    before = dump(db)
    bad = make_migrations(
        {
            "006_add_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);",
            "007_broken.sql": FAILING,
        },
        base=True,
    )
    result = cli("migrate", "--db", db, "--migrations", bad)
    assert result.code == 9, result
    assert "007_broken.sql" in result.err and "UNIQUE constraint failed" in result.err
    # 006 and 007 are one transaction: 007 failing rolls 006 back too.
    assert "rolled back; the database was not changed" in result.err
    assert dump(db) == before
    assert history(db)[-1] == (5, "applied")
    record = json.loads((db.parent / "app.db.preflight-failure.json").read_text())
    assert record["migration"] == "007_broken.sql" and record["restored"] is True
    assert Path(record["backup"]).exists()

    # Same files again: refused at once (11), nothing changed, no new backup.
    state = folder_state(db.parent)
    again = cli("migrate", "--db", db, "--migrations", bad)
    assert again.code == 11 and "UNIQUE constraint" in again.err and "clear-failure" in again.err
    assert folder_state(db.parent) == state
    assert cli("check", "--db", db, "--migrations", bad).code == 11
    status = cli("status", "--db", db, "--migrations", bad, "--json")
    assert status.code == 11 and "status: 5 applied" in status.err
    report = json.loads(status.out)
    assert report["pending"] == ["006_add_audit.sql", "007_broken.sql"]
    assert report["failure_record"]["migration"] == "007_broken.sql"
    assert "fix the migration" not in report["failure_record"]["reason"]

    # A fixed image (another migration set) tries again and clears the record.
    fixed = make_migrations(
        {
            "006_add_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);",
            "007_broken.sql": "CREATE TABLE audit2 (id INTEGER);",
        },
        base=True,
    )
    assert cli("migrate", "--db", db, "--migrations", fixed).code == 0
    assert not (db.parent / "app.db.preflight-failure.json").exists()
    assert [v for v, _ in history(db)] == [1, 2, 3, 4, 5, 6, 7]


def test_clear_failure_lets_the_same_set_try_again(cli, head_db, make_migrations):
    bad = make_migrations({"006_broken.sql": FAILING}, base=True)
    assert cli("migrate", "--db", head_db, "--migrations", bad).code == 9
    assert cli("clear-failure", "--db", head_db, "--migrations", bad).code == 0
    assert not (head_db.parent / "app.db.preflight-failure.json").exists()
    assert cli("migrate", "--db", head_db, "--migrations", bad).code == 9  # tried, not refused


@pytest.mark.parametrize(
    "name, body, message",
    [
        (
            "006_commits.py",
            "def migrate(conn):\n    conn.execute('CREATE TABLE x (a)')\n    conn.commit()\n",
            "not authorized",
        ),
        (
            "006_raises.py",
            "def migrate(conn):\n    conn.execute('CREATE TABLE x (a)')\n"
            "    raise RuntimeError('boom')\n",
            "boom",
        ),
        (
            "006_fk.sql",
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
            "CREATE TABLE child (p INTEGER REFERENCES parent(id));\n"
            "INSERT INTO child VALUES (42);\n",
            "foreign key violation",
        ),
        (
            "006_unique.sql",
            "CREATE UNIQUE INDEX idx_notes_me ON notes(published);\n",
            "UNIQUE constraint failed",
        ),
    ],
    ids=["py-commits", "py-raises", "foreign-key", "data-dependent"],
)
def test_failing_migration_leaves_database_logically_identical(
    cli, head_db, make_migrations, name, body, message
):
    before = dump(head_db)
    folder = make_migrations({name: body}, base=True)
    result = cli("migrate", "--db", head_db, "--migrations", folder)
    assert result.code == 9, result
    assert message in result.err and name in result.err
    assert dump(head_db) == before
    assert rows(head_db, "PRAGMA integrity_check") == [("ok",)]


def test_smoke_failure_after_commit_restores_the_backup(cli, head_db, make_migrations):
    before = dump(head_db)
    folder = make_migrations(
        {"006_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);"}, base=True
    )
    smoke = (
        f'{sys.executable} -c "import os,sys,sqlite3; '
        f"sqlite3.connect(os.environ['PREFLIGHT_DB']).execute('select * from audit'); "
        f"print('app refuses to start'); sys.exit(3)\""
    )
    result = cli("migrate", "--db", head_db, "--migrations", folder, "--smoke", smoke)
    assert result.code == 9 and "smoke command exited 3: app refuses to start" in result.err
    assert dump(head_db) == before


def test_smoke_success_is_reported(cli, head_db, make_migrations):
    folder = make_migrations(
        {"006_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);"}, base=True
    )
    result = cli("migrate", "--db", head_db, "--migrations", folder, "--smoke", "true")
    assert result.code == 0 and "smoke ok" in result.err


def test_failing_migration_on_fresh_database_leaves_no_file(cli, make_db, make_migrations):
    db = make_db("fresh")
    folder = make_migrations(
        {
            "001_ok.sql": "CREATE TABLE a (x);",
            "002_bad.py": "def migrate(conn):\n    conn.execute('CREATE TABLE b (y)')\n"
            "    conn.execute('SELECT * FROM a WHERE nope')\n",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9 and "002_bad.py" in result.err
    assert not db.exists() and not Path(f"{db}-wal").exists()


def test_first_migration_failing_on_a_fresh_database_leaves_no_file(cli, make_db, make_migrations):
    db = make_db("fresh")
    # A fresh database is built directly (no in-memory rehearsal first): the migration
    # fails on the live file after creating a table, and the file must go.
    folder = make_migrations(
        {
            "001_once.py": "def migrate(conn):\n"
            "    conn.execute('CREATE TABLE a (x)')\n"
            "    raise RuntimeError('second run')\n"
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9 and "second run" in result.err
    assert not db.exists() and sorted(p.name for p in db.parent.iterdir()) == [
        "app.db.preflight-failure.json",
        "app.db.preflight.lock",
    ]


def test_migration_that_fails_on_empty_schema_is_refused_before_any_write(
    cli, head_db, make_migrations
):
    db_files = {k: v for k, v in folder_state(head_db.parent).items() if k.startswith("app.db")}
    folder = make_migrations({"006_typo.sql": "ALTER TABLE notez ADD COLUMN x TEXT;"}, base=True)
    result = cli("migrate", "--db", head_db, "--migrations", folder)
    assert result.code == 9 and "006_typo.sql" in result.err and "not touched" in result.err
    after = folder_state(head_db.parent)
    assert {k: after[k] for k in db_files} == db_files  # database files byte-identical
    assert not list((head_db.parent / "backups").iterdir())  # failed before the backup


# --- migration files against history (exit 5, nothing changed) -------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: (f / "003_add_code_verifier_to_auth_state.sql").write_text("-- edited\n"),
            "003_add_code_verifier_to_auth_state.sql: edited after it was applied",
        ),
        (
            lambda f: (f / "005_retire_starpunk_schema_migrations.sql").unlink(),
            "database is newer than these migration files: 005_retire_starpunk_schema_migrations.sql",
        ),
        (
            lambda f: (f / "003_add_code_verifier_to_auth_state.sql").rename(f / "003_renamed.sql"),
            "003_renamed.sql: migration 3 was applied as 003_add_code_verifier_to_auth_state.sql",
        ),
        (
            lambda f: (f / "bad-name.sql").write_text("SELECT 1;"),
            "bad-name.sql: not a migration name",
        ),
        (lambda f: (f / "5_dup.sql").write_text("SELECT 1;"), "share number 5"),
        (lambda f: (f / "006_latin1.sql").write_bytes(b"-- caf\xe9\nSELECT 1;"), "not UTF-8"),
        (
            lambda f: (f / "006_txn.sql").write_text(
                "CREATE TABLE s (x);\nBEGIN;\nCREATE TABLE t (x);\nCOMMIT;\n"
            ),
            "006_txn.sql: line 2: BEGIN is not allowed",
        ),
    ],
    ids=["edited", "missing", "renamed", "bad-name", "duplicate", "non-utf8", "own-transaction"],
)
def test_migration_files_that_do_not_match_history_are_refused(
    cli, head_db, make_migrations, change, message
):
    folder = make_migrations({}, base=True)
    change(folder)
    state = folder_state(head_db.parent)
    result = cli("migrate", "--db", head_db, "--migrations", folder)
    assert result.code == 5, result
    assert message in result.err
    assert folder_state(head_db.parent) == state


def test_new_file_sorting_before_the_last_applied_is_refused(cli, make_db, make_migrations):
    db = make_db("fresh")
    first = make_migrations(
        {"001_a.sql": "CREATE TABLE a (x);", "003_c.sql": "CREATE TABLE c (x);"}
    )
    assert cli("migrate", "--db", db, "--migrations", first).code == 0
    later = make_migrations(
        {
            "001_a.sql": "CREATE TABLE a (x);",
            "002_b.sql": "CREATE TABLE b (x);",
            "003_c.sql": "CREATE TABLE c (x);",
        }
    )
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", later)
    assert result.code == 5 and "002_b.sql: sorts before the last applied migration" in result.err
    assert folder_state(db.parent) == state


# --- read-only commands ----------------------------------------------------------------


def test_check_rehearses_on_a_private_copy_and_writes_nothing(cli, make_db):
    db = make_db("v0.9.5")
    wal = sqlite3.connect(db)
    wal.execute("PRAGMA journal_mode=WAL")
    wal.close()
    state = folder_state(db.parent, strict=True)
    mtimes = {p.name: p.stat().st_mtime_ns for p in db.parent.iterdir()}
    result = cli("check", "--db", db, "--migrations", MIGRATIONS, "--json")
    assert result.code == 3, result
    report = json.loads(result.out)
    assert report["exit_code"] == 3 and report["adopt"] == [
        "001_initial_schema.sql",
        "002_hash_session_tokens.py",
        "003_add_code_verifier_to_auth_state.sql",
    ]
    assert report["pending"] == [
        "004_secure_tokens_and_authorization_codes.py",
        "005_retire_starpunk_schema_migrations.sql",
    ]
    assert report["rehearsal_ms"] > 0 and "rehearse: 004_secure" in result.err
    assert "migrate:" not in result.err
    assert folder_state(db.parent, strict=True) == state
    assert {p.name: p.stat().st_mtime_ns for p in db.parent.iterdir()} == mtimes


def test_check_and_status_at_head_exit_0(cli, head_db):
    state = folder_state(head_db.parent, strict=True)
    assert cli("check", "--db", head_db, "--migrations", MIGRATIONS).code == 0
    result = cli("status", "--db", head_db, "--migrations", MIGRATIONS, "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert [a["version"] for a in report["applied"]] == [1, 2, 3, 4, 5]
    assert report["pending"] == [] and report["failure_record"] is None
    assert folder_state(head_db.parent, strict=True) == state


def test_check_reports_a_migration_that_would_fail_on_real_data(cli, head_db, make_migrations):
    folder = make_migrations(
        {"006_unique.sql": "CREATE UNIQUE INDEX u ON notes(published);"}, base=True
    )
    state = folder_state(head_db.parent, strict=True)
    result = cli("check", "--db", head_db, "--migrations", folder)
    assert result.code == 9 and "rehearsal on a private copy" in result.err
    assert folder_state(head_db.parent, strict=True) == state


def test_check_on_missing_database_says_fresh(cli, make_db):
    db = make_db("fresh")
    result = cli("check", "--db", db, "--migrations", MIGRATIONS, "--json")
    assert result.code == 3 and json.loads(result.out)["fresh"] is True
    assert not db.exists() and list(db.parent.iterdir()) == []


# --- run: exec in place ------------------------------------------------------------------


def test_run_execs_the_command_in_place_keeping_the_pid(make_db):
    db = make_db("v0.9.5")
    env = clean_env()
    env.update(PYTHONPATH=str(REPO), PREFLIGHT_DB=str(db), PREFLIGHT_MIGRATIONS=str(MIGRATIONS))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "entrypoint.py"),
            sys.executable,
            "-c",
            "import os; print(os.getpid())",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert int(out.strip()) == proc.pid
    assert "verify: schema at head" in err
    # The lock was released before exec: another guard gets it at once.
    assert (
        spawn("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0").returncode
        == 0
    )


def test_run_refuses_an_unknown_command_before_touching_anything(cli, make_db):
    db = make_db("v0.9.5")
    state = folder_state(db.parent, strict=True)
    result = cli("run", "--db", db, "--migrations", MIGRATIONS, "--", "no-such-app-binary")
    assert result.code == 7 and "no-such-app-binary" in result.err
    assert folder_state(db.parent, strict=True) == state


def test_run_does_not_exec_when_the_guard_fails(make_db):
    db = make_db("fresh")
    db.write_text("not a database")
    done = spawn("run", "--db", db, "--migrations", MIGRATIONS, "--", "echo", "APP STARTED")
    assert done.returncode == 6 and "APP STARTED" not in done.stdout


# --- concurrency and the lock -----------------------------------------------------------


def test_four_concurrent_guards_all_succeed_and_each_migration_runs_once(make_db):
    db = make_db("v0.9.5")
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "preflight",
                "migrate",
                "--db",
                str(db),
                "--migrations",
                str(MIGRATIONS),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert sum("migrate: 004_" in err for _, err in results) == 1
    assert rows(
        db, "SELECT version, count(*) FROM _preflight_log WHERE event='applied' GROUP BY version"
    ) == [(4, 1), (5, 1)]
    assert len(list((db.parent / "backups").glob("*.db"))) == 1


def test_lock_timeout_names_the_holder_and_changes_nothing(make_db):
    db = make_db("v0.9.5")
    holder = hold_lock(Path(f"{db}.preflight.lock"))
    try:
        state = folder_state(db.parent)
        done = spawn(
            "migrate", "--db", db, "--migrations", MIGRATIONS, env={"PREFLIGHT_LOCK_TIMEOUT": "0.3"}
        )
        assert done.returncode == 8, done.stderr
        assert f"pid {holder.pid}" in done.stderr and "test-holder" in done.stderr
        assert folder_state(db.parent) == state
    finally:
        holder.kill()
        holder.wait()
    # flock dies with its holder: no stale lock.
    assert (
        spawn("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0").returncode
        == 0
    )


def test_database_busy_with_another_writer_exits_8_unchanged(cli, make_db):
    db = make_db("v0.9.5")
    before = dump(db)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        result = cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0.2")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert result.code == 8 and "locked" in result.err
    assert dump(db) == before
    assert not (db.parent / "backups").exists()


# --- backups, restore, stamp -------------------------------------------------------------


def test_backup_modes_and_pruning(cli, head_db):
    backups = head_db.parent / "backups"
    assert cli("migrate", "--db", head_db, "--migrations", MIGRATIONS).code == 0
    assert not list(backups.iterdir())  # on-change: nothing changed, no backup
    assert (
        cli("migrate", "--db", head_db, "--migrations", MIGRATIONS, "--backup", "always").code == 0
    )
    assert len(list(backups.glob("*-always.db"))) == 1
    for _ in range(4):
        assert cli("backup", "--db", head_db, "--keep-backups", "3").code == 0
    names = sorted(p.name for p in backups.glob("*.db"))  # each with its .db.json record
    assert len(names) == 3 and all(n.endswith("-manual.db") for n in names)
    assert all((backups / n).stat().st_mode & 0o777 == 0o600 for n in names)


def test_prune_never_removes_the_newest_pre_migrate_backup(cli, head_db, make_migrations):
    folder = make_migrations({"006_a.sql": "CREATE TABLE a (x);"}, base=True)
    assert cli("migrate", "--db", head_db, "--migrations", folder).code == 0
    premigrate = list((head_db.parent / "backups").glob("*-pre-migrate.db"))
    assert len(premigrate) == 1
    for _ in range(3):
        assert cli("backup", "--db", head_db, "--keep-backups", "1").code == 0
    assert premigrate[0].exists()
    assert len(list((head_db.parent / "backups").glob("*.db"))) == 2


def test_restore_brings_back_a_backup_and_saves_the_current_state_first(cli, head_db):
    assert cli("backup", "--db", head_db).code == 0
    before = dump(head_db)
    conn = sqlite3.connect(head_db)
    conn.execute("DELETE FROM notes")
    conn.commit()
    conn.close()
    result = cli("restore", "--db", head_db)
    assert result.code == 0, result
    assert dump(head_db) == before
    saved = list((head_db.parent / "backups").glob("*-pre-restore.db"))
    assert len(saved) == 1 and rows(saved[0], "SELECT count(*) FROM notes") == [(0,)]


def test_restore_of_a_missing_backup_is_a_usage_error(cli, head_db):
    before = dump(head_db)
    result = cli("restore", "nope.db", "--db", head_db)
    assert result.code == 2 and "nope.db" in result.err
    assert dump(head_db) == before


def test_stamp_records_a_matching_schema_and_refuses_a_mismatch(cli, make_db):
    db = make_db("v0.4.0")
    assert cli("stamp", "3", "--db", db, "--migrations", MIGRATIONS).code == 4
    assert not rows(db, "SELECT name FROM sqlite_master WHERE name='_preflight_history'")
    assert cli("stamp", "2", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert history(db) == [(1, "stamped"), (2, "stamped")]
    assert cli("stamp", "9", "--db", db, "--migrations", MIGRATIONS).code == 2
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert history(db) == [
        (1, "stamped"),
        (2, "stamped"),
        (3, "applied"),
        (4, "applied"),
        (5, "applied"),
    ]
    # Re-stamping at head keeps the rows that were really applied.
    assert cli("stamp", "5", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert [how for _, how in history(db)][2:] == ["applied"] * 3
    # Stamping back to 2 needs --force (the schema is at head) and forgets 3..5; the log
    # keeps every stamp.
    assert cli("stamp", "2", "--db", db, "--migrations", MIGRATIONS).code == 4
    assert cli("stamp", "2", "--force", "--db", db, "--migrations", MIGRATIONS).code == 0
    assert [v for v, _ in history(db)] == [1, 2]
    assert rows(db, "SELECT count(*) FROM _preflight_log WHERE event='stamp'") == [(3,)]


# --- configuration -----------------------------------------------------------------------


def test_flag_beats_environment_beats_default(monkeypatch):
    parser = __import__("preflight.cli", fromlist=["build_parser"]).build_parser()
    args = parser.parse_args(["status"])
    defaults = config.resolve(args, {})
    assert defaults.keep_backups == 10 and defaults.backup == "on-change"
    assert defaults.backup_dir == Path("/data/backups") and defaults.db == Path("/data/app.db")
    env = {
        "PREFLIGHT_KEEP_BACKUPS": "4",
        "PREFLIGHT_BACKUP": "always",
        "PREFLIGHT_DB": "/x/a.db",
        "PREFLIGHT_STRICT": "yes",
        "PREFLIGHT_LOCK_TIMEOUT": "7.5",
    }
    from_env = config.resolve(args, env)
    assert (from_env.keep_backups, from_env.backup, from_env.strict, from_env.lock_timeout) == (
        4,
        "always",
        True,
        7.5,
    )
    assert from_env.backup_dir == Path("/x/backups")
    args = parser.parse_args(
        ["status", "--keep-backups", "2", "--backup", "never", "--no-strict", "--db", "/y/b.db"]
    )
    from_flags = config.resolve(args, env)
    assert (from_flags.keep_backups, from_flags.backup, from_flags.strict, from_flags.db) == (
        2,
        "never",
        False,
        Path("/y/b.db"),
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--", "gunicorn", "app:app"],
        ["run", "--db", "/y/b.db", "--strict", "--no-json", "--", "true", "--db", "x"],
        ["run", "--keep-backups", "lots", "--backup", "always", "--", "true"],  # resolve judges
        ["run", "--smoke", "", "--strict", "--no-strict", "--db", "a", "--db", "b", "--", "x"],
        ["run", "--", "--", "x"],
        ["run", "--accept-loss", "notes.body", "--", "x"],
    ],
    ids=["bare", "flags-then-command", "values-to-judge", "last-wins", "dashes", "accept-loss"],
)
def test_a_plain_run_reads_as_argparse_reads_it(argv):
    """A `run` the fast parser reads (a fresh build's command line) never builds argparse's
    parser: what it reads is what argparse would have parsed, option by option."""
    from preflight import cli

    plain = cli.plain_run(argv)
    parsed = cli.build_parser().parse_args(argv)
    assert plain is not None
    assert vars(plain) == vars(parsed)
    env = {"PREFLIGHT_BACKUP": "never", "PREFLIGHT_DB": "/env/app.db"}
    try:
        by_argparse = config.resolve(parsed, env)
    except errors.PreflightError as exc:  # the same message, naming the flag
        with pytest.raises(type(exc), match=re.escape(exc.message)):
            config.resolve(plain, env)
    else:
        assert config.resolve(plain, env) == by_argparse


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--db=x", "--", "true"],  # argparse's spellings
        ["run", "--d", "x", "--", "true"],
        ["run", "--db", "-x", "--", "true"],
        ["run", "true"],  # no --
        ["run", "--"],  # no command
        ["run", "--help"],
        ["status", "--db", "x"],
        ["migrate"],
    ],
)
def test_anything_else_is_left_to_argparse(argv):
    from preflight import cli

    assert cli.plain_run(argv) is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PREFLIGHT_BACKUP": "sometimes"}, "PREFLIGHT_BACKUP='sometimes' is not valid"),
        ({"PREFLIGHT_KEEP_BACKUPS": "-1"}, "PREFLIGHT_KEEP_BACKUPS='-1' is not valid"),
        ({"PREFLIGHT_LOCK_TIMEOUT": "soon"}, "PREFLIGHT_LOCK_TIMEOUT='soon' is not valid"),
        ({"PREFLIGHT_STRICT": "maybe"}, "PREFLIGHT_STRICT='maybe' is not valid"),
        ({"PREFLIGHT_LOG_FORMAT": "xml"}, "PREFLIGHT_LOG_FORMAT='xml' is not valid"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(cli, head_db, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = dump(head_db)
    result = cli("migrate", "--db", head_db, "--migrations", MIGRATIONS)
    assert result.code == 2 and message in result.err
    assert dump(head_db) == before


@pytest.mark.parametrize(
    "setup, code, message",
    [
        (lambda d: (d / "app.db").mkdir(), 2, "is a folder"),
        (lambda d: None, 7, "does not exist"),
    ],
    ids=["db-is-folder", "missing-parent"],
)
def test_environment_problems(cli, data_dir, setup, code, message):
    setup(data_dir)
    db = data_dir / "app.db" if code == 2 else data_dir / "missing" / "app.db"
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == code and message in result.err


def test_missing_migrations_folder_is_a_usage_error(cli, head_db, tmp_path):
    result = cli("migrate", "--db", head_db, "--migrations", tmp_path / "nope")
    assert result.code == 2 and "nope" in result.err and "PREFLIGHT_MIGRATIONS" in result.err


def test_json_log_format_is_one_object_per_line(cli, make_db, monkeypatch):
    monkeypatch.setenv("PREFLIGHT_LOG_FORMAT", "json")
    result = cli("migrate", "--db", make_db("fresh"), "--migrations", MIGRATIONS)
    assert result.code == 0
    lines = [json.loads(line) for line in result.err.splitlines()]
    assert {"lock", "migrate", "verify"} <= {line.get("step") for line in lines}
    assert all("ms" in line for line in lines if line.get("step") == "migrate")


def test_readme_documents_every_exit_code_variable_and_command():
    readme = (REPO / "README.md").read_text()
    for code in errors.EXIT_CODES:
        assert re.search(rf"^\| {code} \|", readme, re.M), f"exit code {code}"
    for option in config.OPTIONS:
        assert option.env in readme and option.flag in readme
    code = "".join(path.read_text() for path in (REPO / "preflight").rglob("*.py"))
    for variable in set(re.findall(r"PREFLIGHT_[A-Z][A-Z_]*", code)) - {"PREFLIGHT_FORCE"}:
        assert f"`{variable}" in readme, variable  # e.g. PREFLIGHT_FAULT, the testing aid
    for command in __import__("preflight.cli", fromlist=["COMMANDS"]).COMMANDS:
        assert f"preflight {command}" in readme


def test_an_unfinished_restore_refuses_every_migration_set_until_cleared(
    cli, head_db, make_migrations
):
    bad = make_migrations({"006_broken.sql": FAILING}, base=True)
    assert cli("migrate", "--db", head_db, "--migrations", bad).code == 9
    record_path = head_db.parent / "app.db.preflight-failure.json"
    record = json.loads(record_path.read_text())
    record["restored"] = False  # as left by a guard killed in the middle of its restore
    record_path.write_text(json.dumps(record))
    fixed = make_migrations({"006_fixed.sql": "CREATE TABLE fine (x);"}, base=True)
    state = folder_state(head_db.parent)
    result = cli("migrate", "--db", head_db, "--migrations", fixed)
    assert result.code == 11 and "did not complete its restore" in result.err
    assert f"preflight restore {record['backup']}" in result.err
    assert folder_state(head_db.parent) == state
    assert cli("restore", record["backup"], "--db", head_db).code == 0
    assert cli("clear-failure", "--db", head_db).code == 0
    assert cli("migrate", "--db", head_db, "--migrations", fixed).code == 0


def test_empty_migrations_folder_warns_and_an_applied_history_is_refused(cli, head_db, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    state = folder_state(head_db.parent)
    result = cli("migrate", "--db", head_db, "--migrations", empty)
    assert result.code == 5 and "none in" in result.err and "database is newer" in result.err
    assert folder_state(head_db.parent) == state


def test_restore_of_an_empty_file_is_refused_before_anything_changes(cli, head_db):
    empty = head_db.parent / "empty.db"
    empty.touch()
    state = folder_state(head_db.parent)
    result = cli("restore", empty, "--db", head_db)
    assert result.code == 6 and "not an SQLite database" in result.err
    assert folder_state(head_db.parent) == state  # no pre-restore backup either
