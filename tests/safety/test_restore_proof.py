"""What a restore proves, on the machine's own filesystem (no clones): the recorded sha256
tree checked in the copying pass (and the plain sha256 of older records), a named WAL copy replayed on a private copy (issue 19), and the
pre-restore save kept by a hard link (`backup.restore(..., keep_in=...)`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, dump, folder_state, rows, tree_sha

from preflight.storage import backup, catalog, digest, filecopy


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_db(db: Path, n: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"base-{i}",) for i in range(n)])
    conn.close()


def count(db: Path) -> int:
    return int(rows(db, "SELECT count(*) FROM items")[0][0])


def wal_copy(tmp_path: Path) -> tuple[Path, int]:
    """A copy taken by hand as the README says (app.db and its -wal, the app running), with
    rows that are only in the copied -wal. Returns the copy and its row count."""
    live = tmp_path / "live" / "app.db"
    live.parent.mkdir()
    make_db(live, 200)
    app = sqlite3.connect(live, isolation_level=None)  # the running app: no checkpoint on close
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.executemany("INSERT INTO items (v) VALUES (?)", [(f"wal-{i}",) for i in range(300)])
    hand = tmp_path / "copy"
    hand.mkdir()
    shutil.copyfile(live, hand / "copy.db")
    shutil.copyfile(f"{live}-wal", hand / "copy.db-wal")
    app.close()
    assert os.path.getsize(hand / "copy.db-wal") > 0
    return hand / "copy.db", 500


def test_restoring_a_named_wal_copy_keeps_the_rows_in_its_wal(cli, tmp_path, data_dir):
    copy, n = wal_copy(tmp_path)
    # The rows really are only in the -wal: the main file alone has the first 200.
    ro = sqlite3.connect(f"file:{copy}?mode=ro&immutable=1", uri=True)
    assert ro.execute("SELECT count(*) FROM items").fetchone()[0] == 200
    ro.close()
    db = data_dir / "app.db"
    make_db(db, 7)
    untouched = folder_state(copy.parent, strict=True)
    result = cli("restore", copy, "--db", db)
    assert result.code == 0, result
    assert "-wal replayed into the copy" in result.err, result.err
    assert count(db) == n and rows(db, "SELECT v FROM items WHERE id = 500") == [("wal-299",)]
    assert backup.quick_check_file(db) == "ok"
    assert folder_state(copy.parent, strict=True) == untouched  # the operator's files as they were
    assert not list(data_dir.glob(".*restore.tmp*"))


def test_a_recorded_backup_with_a_wal_beside_it_is_refused_and_nothing_changes(cli, data_dir):
    db = data_dir / "app.db"
    make_db(db, 50)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (data_dir / "backups").glob("*-manual.db")
    # Someone opened the backup and wrote to it: its -wal holds rows the record never saw.
    conn = sqlite3.connect(taken, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO items (v) VALUES ('written into the backup')")
    kept = {s: Path(f"{taken}{s}").read_bytes() for s in ("", "-wal")}
    conn.close()
    for s, data in kept.items():
        Path(f"{taken}{s}").write_bytes(data)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM items WHERE id > 5")
    conn.close()
    before = dump(db)
    result = cli("restore", taken, "--db", db)
    assert result.code == 10, result
    assert f"{taken.name}-wal beside it" in result.err and "nothing was changed" in result.err
    assert dump(db) == before


def test_a_backup_changed_on_disk_is_refused_by_its_recorded_sha256_tree(cli, data_dir):
    db = data_dir / "app.db"
    make_db(db, 3000)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (data_dir / "backups").glob("*-manual.db")
    good = taken.read_bytes()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM items WHERE id > 10")
    conn.close()
    before = dump(db)
    with open(taken, "r+b") as f:  # a flipped byte in a cell: header and size unchanged
        f.seek(len(good) - 2000)
        f.write(bytes([good[len(good) - 2000] ^ 0x01]))
    result = cli("restore", taken, "--db", db)
    assert result.code == 10 and "does not match the sha256 tree recorded" in result.err, result
    assert "nothing was changed" in result.err and dump(db) == before
    taken.write_bytes(good)  # the same backup as taken: accepted
    result = cli("restore", taken, "--db", db)
    assert result.code == 0 and "sha256 tree matches the record" in result.err, result
    assert tree_sha(db) == catalog.record_of(taken)["sha256_tree"] and count(db) == 3000


def test_the_record_keeps_the_sha256_tree_of_every_kind_of_backup(tmp_path):
    for name, with_wal, fast in (("plain", False, True), ("wal", True, True), ("api", True, False)):
        db = tmp_path / name / "app.db"
        db.parent.mkdir()
        make_db(db, 400)
        if with_wal:
            app = sqlite3.connect(db, isolation_level=None)
            app.execute("PRAGMA wal_autocheckpoint=0")
            app.execute("INSERT INTO items (v) VALUES ('in the wal')")
            kept = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
            app.close()
            for s, data in kept.items():
                Path(f"{db}{s}").write_bytes(data)
        taken = backup.take(db, db.parent / "backups", "manual", fast=fast)
        record = catalog.record_of(taken)
        assert record is not None and record["sha256_tree"] == tree_sha(taken), name
        assert record["chunk_bytes"] == 8 << 20 and "sha256" not in record
        assert record["bytes"] == taken.stat().st_size
        assert count(taken) == 400 + with_wal


CHUNK = 8 << 20


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 4096])
def test_the_tree_is_the_sha256_of_every_8_mib_chunks_sha256(tmp_path, size):
    source = tmp_path / "source"
    source.write_bytes(os.urandom(size))
    data = source.read_bytes()
    assert digest.hash_file(source) == tree_sha(source)
    compared = tmp_path / "compared"  # the backup's copy: compared, then hashed chunk by chunk
    compared.touch()
    assert filecopy.copy_file(source, compared, None, 0, True, True).tree == tree_sha(source)
    assert compared.read_bytes() == data
    assert digest.hash_file(source, digest.PLAIN) == sha(source)
    for kind, expected in ((digest.TREE, tree_sha(source)), (digest.PLAIN, sha(source))):
        copy = tmp_path / f"copy-{kind}"
        fd_in = os.open(source, os.O_RDONLY)
        fd_out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            got = digest.copy_checked(fd_in, fd_out, copy, size, None, kind, CHUNK)
        finally:
            os.close(fd_in)
            os.close(fd_out)
        assert got == expected and copy.read_bytes() == data


def big_db(db: Path) -> None:
    """A database of three 8 MiB chunks and more."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [("x" * 900,) for _ in range(30000)])
    conn.execute("COMMIT")
    conn.close()
    assert db.stat().st_size > 3 * CHUNK


@pytest.mark.parametrize("record_kind", ["sha256_tree", "sha256"])
def test_a_byte_changed_in_any_chunk_is_refused_and_the_backup_as_taken_restores(
    cli, data_dir, record_kind
):
    """Records of this version keep the tree; older versions wrote the plain sha256 of the
    whole file, which a restore still checks (on one core)."""
    db = data_dir / "app.db"
    big_db(db)
    assert cli("backup", "--db", db).code == 0
    (taken,) = (data_dir / "backups").glob("*-manual.db")
    record = catalog.record_of(taken)
    assert record is not None and record["sha256_tree"] == tree_sha(taken)
    if record_kind == "sha256":  # as an older version wrote it: no tree, no stamp
        record = {k: v for k, v in record.items() if k not in ("sha256_tree", "chunk_bytes")}
        record["sha256"] = sha(taken)
        del record["stamp"]
        catalog.record_path(taken).write_text(json.dumps(record))
    kind = "sha256 tree" if record_kind == "sha256_tree" else "sha256"
    good = taken.read_bytes()
    execute(db, "DELETE FROM items WHERE id > 100")
    before = dump(db)
    for where in (100, CHUNK + 5000, len(good) - 10):  # first, a middle and the last chunk
        with open(taken, "r+b") as f:
            f.seek(where)
            f.write(bytes([good[where] ^ 0x20]))
        result = cli("restore", taken, "--db", db)
        assert result.code == 10, result
        assert f"does not match the {kind} recorded when it was taken" in result.err, result
        assert dump(db) == before and not list(data_dir.glob(".*restore*"))
        taken.write_bytes(good)
    result = cli("restore", taken, "--db", db)
    assert result.code == 0 and f"{kind} matches the record" in result.err, result
    assert sha(db) == sha(taken) and count(db) == 30000


def execute(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.close()


def test_keep_in_saves_the_current_state_by_a_hard_link(tmp_path, logged):
    db = tmp_path / "app.db"
    make_db(db, 100)
    backups = tmp_path / "backups"
    taken = backup.take(db, backups, "manual")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO items (v) VALUES ('only in the -wal of the current state')")
    kept = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
    conn.close()
    for s, data in kept.items():
        Path(f"{db}{s}").write_bytes(data)
    current = dump(db)
    inode = db.stat().st_ino
    saved = backup.restore(taken, db, keep_in=backups)
    assert saved is not None and saved.stat().st_ino == inode  # the database's own file
    assert dump(saved) == current and count(saved) == 101  # its -wal was checkpointed first
    assert any("hard link: nothing copied" in line for line in logged)
    assert sha(db) == sha(taken) and not Path(f"{db}-wal").exists()
    assert saved in [b.path for b in catalog.list_backups(backups, db)]


def test_a_kill_between_the_link_and_the_rename_leaves_the_database_and_the_next_restore_cleans_up(
    tmp_path, logged
):
    db = tmp_path / "app.db"
    make_db(db, 100)
    backups = tmp_path / "backups"
    taken = backup.take(db, backups, "manual")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM items WHERE id > 3")
    conn.close()
    before = dump(db)
    code = (
        "import sys; from pathlib import Path; from preflight.storage import backup; "
        "backup.restore(Path(sys.argv[1]), Path(sys.argv[2]), keep_in=Path(sys.argv[3]))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFLIGHT_FAULT="restore-before-rename")
    killed = subprocess.run(
        [sys.executable, "-c", code, str(taken), str(db), str(backups)], env=env, cwd=REPO
    )
    assert killed.returncode == -9
    assert dump(db) == before and backup.quick_check_file(db) == "ok"
    (stale,) = backups.glob("*-pre-restore.db")
    assert os.path.samefile(stale, db)  # a name for the live file: not a point in time
    saved = backup.restore(taken, db, keep_in=backups)
    assert not stale.exists() and not catalog.record_path(stale).exists()
    assert any("left by an interrupted restore" in line for line in logged)
    assert saved is not None and dump(saved) == before and count(db) == 100
