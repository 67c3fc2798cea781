"""An I/O error at COMMIT is the disk's fault, not the migrations': exit 7, no failure record,
and the next fault-free start migrates (issue 10, item 14)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, dump, rows


def chattr(flag: str, folder: Path) -> bool:
    return (
        subprocess.run(["chattr", flag, str(folder)], check=False, capture_output=True).returncode
        == 0
    )


@pytest.mark.skipif(not ROOT, reason="chattr +a needs root (CI runs as root)")
def test_disk_io_error_at_commit_is_exit_7_without_a_failure_record(
    cli, make_db, make_migrations, tmp_path
):
    db = make_db("fresh")
    backups = tmp_path / "backups"
    v1 = {"001_a.sql": "CREATE TABLE a (x);"}
    assert (
        cli(
            "migrate", "--db", db, "--migrations", make_migrations(v1), "--backup-dir", backups
        ).code
        == 0
    )
    before = dump(db)
    folder = make_migrations({**v1, "002_seed.sql": "INSERT INTO a VALUES (1);"})
    # The database's id file (which ties backups to it) is written by its first backup,
    # beside the database: take one before the folder becomes append-only.
    assert cli("backup", "--db", db, "--migrations", folder, "--backup-dir", backups).code == 0
    # An append-only folder: SQLite can create the rollback journal but not delete it,
    # which is how a rollback-journal COMMIT ends: a real SQLITE_IOERR at COMMIT.
    if not chattr("+a", db.parent):
        pytest.skip("this file system does not support chattr +a")
    try:
        failed = cli("migrate", "--db", db, "--migrations", folder, "--backup-dir", backups)
    finally:
        chattr("-a", db.parent)
    assert failed.code == 7, failed
    assert "COMMIT: I/O error" in failed.err and "fix the migration" not in failed.err
    assert not (db.parent / "app.db.preflight-failure.json").exists()
    # The half-done COMMIT left a hot journal: the next opener rolls it back.
    assert (db.parent / "app.db-journal").stat().st_size > 0
    again = cli("migrate", "--db", db, "--migrations", folder, "--backup-dir", backups)
    assert again.code == 0, again
    assert rows(db, "SELECT x FROM a") == [(1,)]
    assert dump(db) != before
