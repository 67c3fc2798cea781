"""Backups and restores on a real copy-on-write filesystem: XFS with reflinks, loop-mounted.

The clone path is proven by the log line that names it, by the free space a clone does not
use, by kills at the fault points, and by writes after the fact: a clone shares blocks
with its source until one of them is written, and a write to either must never show in
the other. These tests need root (CI runs as root); without it they fail, never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import xfskit
from conftest import MIGRATIONS, dump, load_fixture, rows, spawn, tree_sha

from preflight.storage import backup, catalog

pytestmark = pytest.mark.reflink


@pytest.fixture(scope="session")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with ExitStack() as stack:
        try:
            mnt = stack.enter_context(xfskit.mounted(tmp_path_factory.mktemp("xfs")))
        except xfskit.NoReflinkFilesystem as exc:
            pytest.fail(f"no reflink filesystem for this test: {exc}")
        yield mnt


@pytest.fixture
def here(xfs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder on the XFS mount for one test, removed afterwards."""
    folder = xfs / request.node.name.replace("[", "-").replace("]", "")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_db(db: Path, rows_: int = 2000, in_wal: int = 0) -> None:
    """A WAL database of `rows_` rows (about 1 KiB each), `in_wal` more left in its -wal."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE INDEX items_v ON items(v)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO items (v) VALUES (?)", [(f"{i:08d}" * 128,) for i in range(rows_)]
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if in_wal:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"w{i}",) for i in range(in_wal)])
        files = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
        conn.close()  # checkpoints; put the files back as a running app leaves them
        for s, data in files.items():
            Path(f"{db}{s}").write_bytes(data)
    else:
        conn.close()


def execute(db: Path, *sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in sql:
            conn.execute(statement)
    finally:
        conn.close()


def count(db: Path) -> int:
    return int(rows(db, "SELECT count(*) FROM items")[0][0])


def free_bytes(folder: Path) -> int:
    os.sync()
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def test_a_backup_on_xfs_is_a_clone_verified_and_hashed(cli, here):
    db = here / "app.db"
    make_db(db, rows_=8000)  # ~8 MiB
    size = db.stat().st_size
    before = free_bytes(here)
    result = cli("backup", "--db", db)
    assert result.code == 0, result
    assert "backup: cloned (FICLONE) app.db" in result.err, result.err
    (taken,) = (here / "backups").glob("*.db")
    # A clone shares the database's blocks: the backup took almost no space.
    assert before - free_bytes(here) < size // 4, (before - free_bytes(here), size)
    assert taken.read_bytes() == db.read_bytes()
    record = catalog.record_of(taken)
    assert record is not None and record["sha256_tree"] == tree_sha(taken)
    assert record["bytes"] == size
    assert backup.quick_check_file(taken) == "ok"
    assert stat.S_IMODE(taken.stat().st_mode) == 0o600


def test_a_clone_backup_of_a_wal_database_holds_the_wal_rows_and_its_hash(cli, here):
    db = here / "app.db"
    make_db(db, rows_=500, in_wal=300)
    live = {s: sha(Path(f"{db}{s}")) for s in ("", "-wal")}
    result = cli("backup", "--db", db)
    assert result.code == 0 and "backup: cloned (FICLONE)" in result.err, result
    (taken,) = (here / "backups").glob("*.db")
    assert count(taken) == 800  # the -wal's rows were replayed into the clone
    assert {s: sha(Path(f"{db}{s}")) for s in ("", "-wal")} == live  # live files untouched
    assert catalog.record_of(taken)["sha256_tree"] == tree_sha(taken)


def test_a_restore_on_xfs_clones_and_is_byte_identical(cli, here):
    db = here / "app.db"
    make_db(db, rows_=3000)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (here / "backups").glob("*-manual.db")
    execute(db, "DELETE FROM items WHERE id > 10")
    result = cli("restore", taken, "--db", db)
    assert result.code == 0, result
    # The backup's inode is as its record stamped it after the rename: nothing to read.
    assert "restore: cloned (FICLONE), unchanged since it was verified" in result.err, result.err
    assert sha(db) == sha(taken) and tree_sha(db) == catalog.record_of(taken)["sha256_tree"]
    assert count(db) == 3000 and backup.quick_check_file(db) == "ok"


@pytest.mark.parametrize("leaves", [8 << 20, 1 << 20], ids=["as-taken", "other-leaves"])
def test_a_clone_of_a_backup_touched_since_it_was_taken_is_hashed_before_use(cli, here, leaves):
    """Hashed by the leaves its record names (`chunk_bytes`), not by this version's."""
    db = here / "app.db"
    make_db(db, rows_=3000)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (here / "backups").glob("*-manual.db")
    record = catalog.record_of(taken)
    record.update(chunk_bytes=leaves, sha256_tree=tree_sha(taken, leaves))
    catalog.record_path(taken).write_text(json.dumps(record))
    stamp = record["stamp"]
    assert stamp["inode"] == taken.stat().st_ino and stamp["ctime_ns"] == taken.stat().st_ctime_ns
    os.chmod(taken, 0o600)  # same mode, same bytes: only the ctime moves
    assert taken.stat().st_ctime_ns != stamp["ctime_ns"]
    execute(db, "DELETE FROM items")
    result = cli("restore", taken, "--db", db)
    assert result.code == 0, result
    assert "restore: cloned (FICLONE), sha256 tree matches the record" in result.err, result.err
    assert sha(db) == sha(taken) and count(db) == 3000


def test_no_shared_block_carries_a_write_from_one_file_into_the_other(cli, here):
    db = here / "app.db"
    make_db(db, rows_=3000)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (here / "backups").glob("*-manual.db")
    assert cli("restore", taken, "--db", db).code == 0
    kept = sha(taken)
    assert sha(db) == kept
    # A write to the restored database, on every page: the backup must not change.
    execute(
        db,
        "UPDATE items SET v = upper(v) || 'x'",
        "INSERT INTO items (v) VALUES ('after the restore')",
        "PRAGMA wal_checkpoint(TRUNCATE)",
    )
    assert sha(taken) == kept and tree_sha(taken) == catalog.record_of(taken)["sha256_tree"]
    assert cli("restore", taken, "--db", db).code == 0  # still restorable: proven by its hash
    assert sha(db) == kept
    # And the other way: a write to the backup (in place) never shows in the database.
    restored = sha(db)
    with open(taken, "r+b") as f:
        f.seek(taken.stat().st_size // 2)
        f.write(b"\xab" * 8192)
        os.fsync(f.fileno())
    assert sha(db) == restored and count(db) == 3000
    result = cli("restore", taken, "--db", db)  # and the changed backup is refused
    assert result.code == 10 and "does not match the sha256 tree recorded" in result.err, result
    assert sha(db) == restored


def test_a_migrating_start_on_xfs_backs_up_by_clone(cli, here):
    db = load_fixture("v0.9.5", here / "app.db")
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    assert "backup: cloned (FICLONE) app.db" in result.err, result.err
    (taken,) = (here / "backups").glob("*-pre-migrate.db")
    assert catalog.record_of(taken)["sha256_tree"] == tree_sha(taken)


@pytest.mark.parametrize(
    ("command", "fault"),
    [
        ("backup", "backup-temp-written"),
        ("backup", "backup-before-rename"),
        ("restore", "restore-temp-written"),
        ("restore", "restore-before-rename"),
    ],
)
def test_a_kill_in_the_middle_of_a_clone_leaves_the_database_intact(cli, here, command, fault):
    db = here / "app.db"
    make_db(db, rows_=2000, in_wal=100)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (here / "backups").glob("*-manual.db")
    execute(db, "INSERT INTO items (v) VALUES ('newer than the backup')")
    before = dump(db)
    args = ["restore", taken] if command == "restore" else ["backup"]
    killed = spawn(*args, "--db", db, env={"PREFLIGHT_FAULT": fault})
    assert killed.returncode == -9, killed
    assert dump(db) == before and backup.quick_check_file(db) == "ok"
    for b in catalog.list_backups(here / "backups", db):  # every listed name is whole
        assert backup.quick_check_file(b.path) == "ok", b.path
        record = catalog.record_of(b.path)
        assert record is None or record.get("sha256_tree") in (None, tree_sha(b.path))
    again = spawn(*args, "--db", db, "--lock-timeout", "0")
    assert again.returncode == 0, again
    assert "cloned (FICLONE)" in again.stderr, again.stderr
    if command == "restore":
        assert sha(db) == sha(taken)
    else:
        assert dump(db) == before
    assert not list(here.glob(".*.tmp*")) and not list((here / "backups").glob(".*tmp*"))


def test_keep_current_links_on_the_same_filesystem_and_the_save_restores(here):
    db = here / "app.db"
    make_db(db, rows_=1000)
    taken = backup.take(db, here / "backups", "manual")
    execute(db, "INSERT INTO items (v) VALUES ('only in the current state')")
    current = sha(db)
    saved = backup.restore(taken, db, keep_in=here / "backups")
    assert saved is not None and saved.name.endswith("-pre-restore.db")
    assert sha(saved) == current and sha(db) == sha(taken)
    assert saved.stat().st_nlink == 1 and not os.path.samefile(saved, db)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    record = catalog.record_of(saved)
    assert record is not None and "sha256_tree" not in record
    assert record["kept_by"] == "hard link"
    backup.restore(saved, db)  # no recorded hash: quick_check of the copy
    assert sha(db) == current


def test_keep_current_copies_when_the_backup_folder_is_on_another_filesystem(tmp_path, here):
    db = tmp_path / "app.db"  # ext4 (or the test's own temp filesystem); backups on XFS
    make_db(db, rows_=500)
    other = here / "backups"
    taken = backup.take(db, other, "manual")
    current = sha(db)
    execute(db, "DELETE FROM items")
    current = sha(db)
    saved = backup.restore(taken, db, keep_in=other)
    assert saved is not None and sha(saved) != sha(db)
    assert count(saved) == 0 and count(db) == 500
    record = json.loads(catalog.record_path(saved).read_text())
    assert record["sha256_tree"] == tree_sha(saved)  # a verified copy, hashed like any backup
    assert current  # the state that was replaced is what the save holds


def test_keep_current_sets_a_damaged_database_aside_raw_when_it_can_neither_link_nor_copy(
    tmp_path, here
):
    db = tmp_path / "app.db"  # backups on XFS: no hard link across filesystems
    make_db(db, rows_=500)
    taken = backup.take(db, here / "backups", "manual")
    with open(db, "r+b") as f:  # the pages after the first: sqlite_master survives
        f.seek(4096)
        f.write(b"\xff" * 4096 * 4)
    damaged = sha(db)
    old = os.umask(0o022)
    try:
        saved = backup.restore(taken, db, keep_in=here / "backups")
    finally:
        os.umask(old)
    # Too damaged for a verified copy: its raw files aside, private, outside the rotation.
    assert saved is not None and saved.name.endswith("-damaged.db")
    assert sha(saved) == damaged and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert saved not in [b.path for b in catalog.list_backups(here / "backups", db)]
    assert sha(db) == sha(taken) and count(db) == 500
