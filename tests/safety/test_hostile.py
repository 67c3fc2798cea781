"""Hostile inputs: each a wrong file, folder, migration or neighbour a real operator can
produce. Every one must end in its documented exit code, one clear line naming the
culprit, and a data folder that is byte-for-byte what it was.

docs/reliability.md lists these with the tests elsewhere that cover related cases.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import (
    MIGRATIONS,
    ROOT,
    dump,
    folder_state,
    load_fixture,
    plant_foreign_wal,
    remount_read_only,
    rows,
    spawn,
    started,
)


@dataclass
class World:
    """What a setup function may use; `keep` holds objects that must live during the run."""

    tmp: Path
    data: Path
    make_migrations: Callable[..., Path]
    tmpfs: Callable[..., Path]
    keep: list = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.data / "app.db"

    def v095(self) -> Path:
        return load_fixture("v0.9.5", self.db)

    def at_head(self) -> Path:
        from preflight.cli import main

        db = self.v095()
        assert main(["migrate", "--db", str(db), "--migrations", str(MIGRATIONS)]) == 0
        return db

    def migrations(self, files: dict[str, str | bytes | None]) -> Path:
        """The application's migrations plus `files` (None: a folder of that name)."""
        folder = self.make_migrations({k: v for k, v in files.items() if v is not None}, base=True)
        for name, text in files.items():
            if text is None:
                (folder / name).mkdir()
        return folder


def sidecar(db: Path, suffix: str) -> Path:
    return Path(f"{db}{suffix}")


# ----------------------------------------------------------------- the database file


def not_a_database(w: World):
    w.db.write_text("id,name\n1,alice\n" * 200)


def truncated(w: World):
    data = w.v095().read_bytes()
    w.db.write_bytes(data[: len(data) // 2])


def truncated_to_the_header(w: World):
    w.db.write_bytes(w.v095().read_bytes()[:100])


def corrupt_page(w: World):
    data = bytearray(w.v095().read_bytes())
    data[5 * 4096 : 5 * 4096 + 300] = b"\x13" * 300  # a b-tree page overwritten mid-file
    w.db.write_bytes(bytes(data))


def header_then_garbage(w: World):
    w.db.write_bytes(b"SQLite format 3\x00" + os.urandom(8000))


def database_is_a_folder(w: World):
    w.db.mkdir()


def database_is_a_fifo(w: World):
    os.mkfifo(w.db)


def missing_parent(w: World):
    return w.data / "not-mounted" / "app.db"


def dangling_symlink(w: World):
    w.db.symlink_to(w.tmp / "volume" / "app.db")  # the volume was not mounted


def dangling_symlink_same_folder(w: World):
    w.db.symlink_to(w.data / "real.db")


def read_only_folder(w: World):
    w.tmpfs(w.data, "4m")
    w.v095()
    remount_read_only(w.data)


def stale_wal_beside_rollback_database(w: World):
    """A backup copied over app.db by hand, with the live -wal of another state left beside it."""
    plant_foreign_wal(w.v095(), w.tmp, payload=True)


def foreign_wal_beside_wal_database(w: World):
    db = w.v095()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    plant_foreign_wal(db, w.tmp)


def die_mid_write(db: Path, copy_journal_to: Path | None = None) -> None:
    """A real process that dies mid-transaction on `db`, leaving its hot -journal
    (copied beside `copy_journal_to` too, when given)."""
    code = (
        "import os, shutil, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\n"
        "c.execute('BEGIN')\n"
        "c.execute('DELETE FROM notes')\n"
        'c.execute("INSERT INTO notes (slug, file_path, published) SELECT hex(randomblob(600)), '
        "hex(randomblob(8)), 1 FROM (WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 "
        'FROM r WHERE i < 200) SELECT i FROM r)")\n'
        "if len(sys.argv) > 2:\n"
        "    shutil.copy(sys.argv[1] + '-journal', sys.argv[2] + '-journal')\n"
        "os._exit(0)\n"
    )
    extra = [str(copy_journal_to)] if copy_journal_to else []
    subprocess.run([sys.executable, "-c", code, str(db), *extra], check=True)


def hot_journal_from_another_database(w: World):
    """Another database's process died mid-write; its -journal ended up beside ours."""
    db = w.v095()
    other = load_fixture("v0.3.0", w.tmp / "other.db")
    die_mid_write(other, copy_journal_to=db)
    assert sidecar(db, "-journal").stat().st_size > 0


def wal_is_a_folder(w: World):
    w.v095()
    sidecar(w.db, "-wal").mkdir()


def journal_is_a_folder(w: World):
    w.v095()
    sidecar(w.db, "-journal").mkdir()


def busy_writer(w: World):
    conn = sqlite3.connect(w.v095(), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # the old app version, mid-write
    w.keep.append(conn)


def no_history_matching_no_version(w: World):
    conn = sqlite3.connect(w.db)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('wrong database')")
    conn.commit()
    conn.close()


def drifted(w: World):
    db = w.at_head()
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX idx_tokens_me")
    conn.commit()
    conn.close()


# ----------------------------------------------------------------- files beside it


def lock_file_is_a_folder(w: World):
    w.v095()
    (w.data / "app.db.preflight.lock").mkdir()


def lock_held_by_another_guard(w: World):
    w.v095()
    fd = os.open(w.data / "app.db.preflight.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    w.keep.append(fd)


def backup_folder_is_a_file(w: World):
    w.v095()
    (w.data / "backups").write_text("not a folder")


def corrupt_failure_record(w: World):
    w.v095()
    (w.data / "app.db.preflight-failure.json").write_text('{"fingerprint": ')


# ----------------------------------------------------------------- the migrations folder


def missing_migrations_folder(w: World):
    w.v095()
    return w.db, w.tmp / "no-such-folder"


def migrations_folder_is_a_file(w: World):
    w.v095()
    (w.tmp / "migrations.tar").write_text("")
    return w.db, w.tmp / "migrations.tar"


def empty_migrations_folder_for_a_migrated_database(w: World):
    w.at_head()
    (w.tmp / "empty").mkdir()
    return w.db, w.tmp / "empty"


def migration(files: dict[str, str | bytes | None], at_head: bool = False):
    def setup(w: World):
        db = w.at_head() if at_head else w.v095()
        return db, w.migrations(files)

    return setup


def changed_applied(change: Callable[[Path], None]):
    def setup(w: World):
        db = w.at_head()
        folder = w.migrations({})
        change(folder)
        return db, folder

    return setup


PY_RAISES = "def migrate(conn):\n    raise RuntimeError('boom: refusing')\n"
PY_COMMITS = "def migrate(conn):\n    conn.execute('CREATE TABLE x (a)')\n    conn.commit()\n"
PY_EXECUTESCRIPT = "def migrate(conn):\n    conn.executescript('CREATE TABLE x (a);')\n"
PY_EXITS = "import sys\ndef migrate(conn):\n    sys.exit(3)\n"
PY_CLOSES = "def migrate(conn):\n    conn.execute('CREATE TABLE x (a)')\n    conn.close()\n"
PY_ROLLBACK = (
    "def migrate(conn):\n    conn.execute('CREATE TABLE x (a)')\n    conn.execute('ROLLBACK')\n"
)


CASES = [
    # id, setup, exit code, message fragment
    ("not-a-database", not_a_database, 6, "is not an SQLite database"),
    ("truncated", truncated, 6, "is truncated: its header counts"),
    ("truncated-to-header", truncated_to_the_header, 6, "is truncated: its header counts"),
    ("corrupt-page", corrupt_page, 6, "malformed"),
    ("header-then-garbage", header_then_garbage, 6, "app.db"),
    ("database-is-a-folder", database_is_a_folder, 2, "is a folder, not a database file"),
    ("database-is-a-fifo", database_is_a_fifo, 2, "is not a regular file"),
    ("missing-parent-folder", missing_parent, 7, "not-mounted for the database does not exist"),
    ("dangling-symlink", dangling_symlink, 7, "which does not exist; mount the volume"),
    (
        "dangling-symlink-same-folder",
        dangling_symlink_same_folder,
        7,
        "real.db, which does not exist",
    ),
    ("read-only-folder", read_only_folder, 7, "is not writable"),
    ("stale-wal-rollback-db", stale_wal_beside_rollback_database, 6, "app.db-wal is a stale WAL"),
    ("foreign-wal-wal-db", foreign_wal_beside_wal_database, 4, "matches no migration"),
    (
        "hot-journal-other-db",
        hot_journal_from_another_database,
        6,
        "app.db-journal is a hot journal",
    ),
    ("wal-is-a-folder", wal_is_a_folder, 2, "app.db-wal is not a regular file"),
    ("journal-is-a-folder", journal_is_a_folder, 2, "app.db-journal is not a regular file"),
    ("busy-writer", busy_writer, 8, "locked by another writer"),
    ("no-history-no-match", no_history_matching_no_version, 4, "matches no migration"),
    ("drifted", drifted, 4, "index idx_tokens_me"),
    ("lock-file-is-a-folder", lock_file_is_a_folder, 7, "app.db.preflight.lock: Is a directory"),
    ("lock-held", lock_held_by_another_guard, 8, "app.db.preflight.lock is held by"),
    ("backup-folder-is-a-file", backup_folder_is_a_file, 7, "backups is not a folder"),
    ("corrupt-failure-record", corrupt_failure_record, 5, "unreadable failure record"),
    ("missing-migrations-folder", missing_migrations_folder, 2, "no-such-folder does not exist"),
    ("migrations-folder-is-a-file", migrations_folder_is_a_file, 2, "is not a folder"),
    (
        "empty-migrations-folder",
        empty_migrations_folder_for_a_migrated_database,
        5,
        "database is newer than these migration files",
    ),
    (
        "bad-file-name",
        migration({"6-audit.sql": "SELECT 1;"}),
        5,
        "6-audit.sql: not a migration name",
    ),
    (
        "upper-case-suffix",
        migration({"006_audit.SQL": "SELECT 1;"}),
        5,
        "006_audit.SQL: not a migration",
    ),
    ("duplicate-number", migration({"005_again.sql": "SELECT 1;"}), 5, "share number 5"),
    ("migration-is-a-folder", migration({"006_dir.sql": None}), 5, "006_dir.sql: is not a regular"),
    (
        "sql-syntax-error",
        migration({"006_typo.sql": "CREATE TABLEE audit (x);"}),
        9,
        "syntax error; fix the migration; the live database was not touched",
    ),
    (
        "unterminated-string",
        migration({"006_open.sql": "INSERT INTO notes (slug) VALUES ('x);"}),
        5,
        "incomplete SQL statement",
    ),
    (
        "own-begin-commit",
        migration({"006_txn.sql": "CREATE TABLE s (x);\nBEGIN;\nCREATE TABLE t (x);\nCOMMIT;\n"}),
        5,
        "006_txn.sql: line 2: BEGIN is not allowed",
    ),
    ("vacuum", migration({"006_vacuum.sql": "VACUUM;"}), 5, "VACUUM is not allowed"),
    (
        "pragma-journal-mode",
        migration({"006_wal.sql": "PRAGMA journal_mode = WAL;"}),
        5,
        "PRAGMA journal_mode is not allowed",
    ),
    ("py-raises", migration({"006_raises.py": PY_RAISES}), 9, "boom: refusing"),
    ("py-commits", migration({"006_commits.py": PY_COMMITS}), 9, "not authorized"),
    ("py-executescript", migration({"006_script.py": PY_EXECUTESCRIPT}), 9, "not authorized"),
    ("py-sys-exit", migration({"006_exit.py": PY_EXITS}), 9, "called sys.exit(3)"),
    (
        "py-closes-connection",
        migration({"006_close.py": PY_CLOSES}),
        9,
        "closed the guard's connection",
    ),
    ("py-rollback", migration({"006_rb.py": PY_ROLLBACK}), 9, "not authorized"),
    (
        "py-syntax-error",
        migration({"006_bad.py": "def migrate(conn)\n    pass\n"}),
        5,
        "006_bad.py: line 1: Python syntax error",
    ),
    ("py-no-migrate", migration({"006_empty.py": ""}), 5, "has no top-level 'def migrate(conn)'"),
    (
        "not-utf8",
        migration({"006_latin1.sql": b"-- caf\xe9\nSELECT 1;"}),
        5,
        "006_latin1.sql: not UTF-8 text (byte 6)",
    ),
    (
        "nul-byte",
        migration({"006_nul.sql": b"CREATE TABLE a (x);\x00\n"}),
        5,
        "contains a NUL byte",
    ),
    (
        "data-dependent-failure",
        migration({"006_u.sql": "CREATE UNIQUE INDEX u ON notes(published);"}),
        9,
        "UNIQUE constraint failed",
    ),
    (
        "edited-applied",
        changed_applied(
            lambda f: (f / "003_add_code_verifier_to_auth_state.sql").write_text("-- edited\n")
        ),
        5,
        "003_add_code_verifier_to_auth_state.sql: edited after it was applied",
    ),
    (
        "database-newer-than-image",
        changed_applied(lambda f: (f / "005_retire_starpunk_schema_migrations.sql").unlink()),
        5,
        "database is newer than these migration files",
    ),
    (
        "renamed-applied",
        changed_applied(
            lambda f: (f / "003_add_code_verifier_to_auth_state.sql").rename(f / "003_renamed.sql")
        ),
        5,
        "migration 3 was applied as",
    ),
    (
        "inserted-before-last-applied",
        changed_applied(lambda f: (f / "004_aa_late.sql").write_text("SELECT 1;")),
        5,
        "share number 4",
    ),
]


def db_files(folder: Path) -> dict[str, str]:
    """The database and its sidecars (the -shm index holds no data and is left out)."""
    return {
        k: v
        for k, v in folder_state(folder).items()
        if k.startswith("app.db") and not k.endswith(("-shm", ".json"))
    }


@pytest.mark.parametrize("setup, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_with_its_code_and_nothing_changes(
    cli, tmp_path, data_dir, make_migrations, tmpfs, setup, code, message
):
    if setup is read_only_folder and not ROOT:
        pytest.skip("a read-only mount needs root (CI runs as root)")
    w = World(tmp_path, data_dir, make_migrations, tmpfs)
    given = setup(w)
    db, migrations = given if isinstance(given, tuple) else (given or w.db, MIGRATIONS)
    before = {k: v for k, v in folder_state(tmp_path).items() if not k.endswith("-shm")}
    try:
        result = cli("migrate", "--db", db, "--migrations", migrations, "--lock-timeout", "0.2")
    finally:
        for item in w.keep:
            item.close() if isinstance(item, sqlite3.Connection) else os.close(item)
    assert result.code == code, result
    errors = [line for line in result.err.splitlines() if "error:" in line]
    assert any(message in line for line in errors), result
    assert f"(exit {code})" in errors[-1]
    after = {k: v for k, v in folder_state(tmp_path).items() if not k.endswith("-shm")}
    if code == 9:
        # Rolled back: the database files are byte-identical; the backup and the failure
        # record (or nothing at all, when refused at the rehearsal) are the only new files.
        assert db_files(db.parent) == {
            k.split("/", 1)[1]: v for k, v in before.items() if k.startswith("data/app.db")
        }
        assert set(after) - set(before) <= {
            k for k in after if "backups/" in k or k.endswith(".json")
        }
    else:
        assert after == before


@pytest.mark.parametrize("backup_dir", [None, "deep/er/backups"])
def test_a_database_refused_by_its_backup_check_leaves_no_folder_and_no_id(
    cli, tmp_path, data_dir, make_migrations, tmpfs, backup_dir
):
    w = World(tmp_path, data_dir, make_migrations, tmpfs)
    corrupt_page(w)
    folder = tmp_path / backup_dir if backup_dir else w.data / "backups"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = cli("migrate", "--db", w.db, "--migrations", MIGRATIONS, "--backup-dir", folder)
    assert result.code == 6 and "quick_check" in result.err, result
    lock = str(w.db) + ".preflight.lock"
    assert sorted(str(p) for p in tmp_path.rglob("*") if str(p) != lock) == before


def test_at_least_forty_hostile_inputs_are_covered():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


# ----------------------------------------------------------------- accepted, not refused


def legit_hot_journal(w: World):
    """Our own app died mid-write: SQLite must roll that back, and the guard lets it."""
    db = w.v095()
    die_mid_write(db)
    assert sidecar(db, "-journal").stat().st_size > 0


@pytest.mark.parametrize(
    "setup, files, notes",
    [
        (lambda w: w.db.touch(), {}, 0),  # zero bytes: fresh
        (legit_hot_journal, {}, 12),  # rolled back: the 12 notes are back
        (lambda w: w.v095(), {"009_gap.sql": "CREATE TABLE gap (x);"}, 12),  # numbers may skip
        (lambda w: w.v095(), {"006_empty.sql": ""}, 12),  # executes nothing, recorded
        (lambda w: w.v095(), {"006_bom.sql": "\ufeffCREATE TABLE bom (x);"}, 12),
        (lambda w: w.v095(), {"README.md": "notes", "__init__.py": "", ".006_x.sql.swp": "x"}, 12),
    ],
    ids=["zero-byte", "own-hot-journal", "version-gap", "empty-sql", "utf8-bom", "other-files"],
)
def test_inputs_that_look_odd_but_are_fine(
    cli, tmp_path, data_dir, make_migrations, tmpfs, setup, files, notes
):
    w = World(tmp_path, data_dir, make_migrations, tmpfs)
    setup(w)
    result = cli("migrate", "--db", w.db, "--migrations", w.migrations(files))
    assert result.code == 0, result
    assert rows(w.db, "PRAGMA integrity_check") == [("ok",)]
    assert rows(w.db, "SELECT count(*) FROM notes") == [(notes,)]
    assert not sidecar(w.db, "-journal").exists()


# ----------------------------------------------------------------- many guards at once


def start(db: Path, migrations: Path) -> subprocess.Popen[str]:
    return started("migrate", "--db", db, "--migrations", migrations)


def test_two_images_with_different_migration_sets_race_old_image_refuses(make_db, make_migrations):
    """A rolling deploy: the new image (006) and the old one start together. Whoever goes
    first, the database ends at 006, and the old image is refused once it is there."""
    db = make_db("v0.9.5")
    newer = make_migrations(
        {"006_audit.sql": "CREATE TABLE audit (id INTEGER PRIMARY KEY);"}, base=True
    )
    procs = [start(db, newer), start(db, MIGRATIONS), start(db, newer), start(db, MIGRATIONS)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert results[0][0] == 0 and results[2][0] == 0, results
    for code, err in (results[1], results[3]):
        assert code == 0 or (
            code == 5 and "database is newer than these migration files: 006_audit.sql" in err
        ), err
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(6,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    state = folder_state(db.parent)
    done = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert done.returncode == 5 and folder_state(db.parent) == state
    assert dump(db)  # still readable


def test_a_migration_that_gets_around_the_authorizer_and_commits_is_undone_from_the_backup(
    cli, make_db, make_migrations
):
    """Only on real data (so the empty-database rehearsal passes), it removes the guard's
    authorizer and commits half the run. The guard cannot know what was kept: it restores
    the verified backup."""
    db = make_db("v0.9.5")
    before = dump(db)
    sneaky = (
        "def migrate(conn):\n"
        "    conn.execute('CREATE TABLE sneaky (x)')\n"
        "    if conn.execute('SELECT count(*) FROM notes').fetchone()[0]:\n"
        "        conn.set_authorizer(None)\n"
        "        conn.commit()\n"
    )
    folder = make_migrations({"006_sneaky.py": sneaky}, base=True)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9, result
    assert "006_sneaky.py: the migration ended the guard's transaction" in result.err
    assert "restored from" in result.err
    assert dump(db) == before and rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert not rows(
        db, "SELECT name FROM sqlite_master WHERE name IN ('sneaky', '_preflight_history')"
    )


def test_a_reader_that_keeps_commit_waiting_is_exit_8_without_a_failure_record(cli, make_db):
    """The old app still serves requests inside a read transaction: in rollback-journal mode
    COMMIT cannot write until it ends. That is not the migrations' fault: rolled back, exit
    8, no failure record, and once the reader is gone the same start succeeds."""
    db = make_db("v0.9.5")
    before = dump(db)
    files = {k: v for k, v in folder_state(db.parent).items() if k.startswith("app.db")}
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM notes").fetchall()
    try:
        result = cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0.3")
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    assert result.code == 8, result
    line = [x for x in result.err.splitlines() if "error:" in x][-1]
    assert "COMMIT: another process kept a lock on" in line and "stop the old app" in line
    assert "rolled back; the database was not changed" in line
    assert dump(db) == before
    assert {k: v for k, v in folder_state(db.parent).items() if k.startswith("app.db")} == files
    assert not (db.parent / "app.db.preflight-failure.json").exists()
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
