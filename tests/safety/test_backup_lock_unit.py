"""Unit tests for preflight.backup and preflight.lock on real files and real processes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sha

from preflight.core.errors import LOCK_TIMEOUT, RESTORE_FAILED, LockTimeout, RestoreFailed
from preflight.storage import backup, catalog, config, lock

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


def rows(db: Path, table: str = "items") -> list[tuple]:
    """Rows of `table`, read without leaving anything beside `db` (immutable)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


def rows_live(db: Path, table: str = "items") -> list[tuple]:
    """Rows of `table` through a normal connection (reads -wal if there is one)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


def make_db(db: Path, values: list[str], wal: bool = True) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    if wal:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO items(v) VALUES (?)", [(v,) for v in values])
    conn.close()


@pytest.fixture
def wal_writer(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """data/app.db in WAL mode, with an open writer whose last rows are only in the -wal."""
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "app.db"
    make_db(db, ["checkpointed-1", "checkpointed-2"])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items(v) VALUES (?)", [(f"wal-only-{i}",) for i in range(200)])
    conn.execute("COMMIT")
    wal = Path(f"{db}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    # the main file alone does not have the new rows
    assert len(rows(db)) == 2
    try:
        yield db, conn
    finally:
        conn.close()


def backup_name(stamp: str, reason: str, stem: str = "app") -> str:
    return f"{stem}-{stamp}-{reason}.db"


def fake_backup(folder: Path, stamp: str, reason: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / backup_name(stamp, reason)
    path.write_bytes(b"not really a database")
    return path


def stale_wal_of(db: Path, values: list[str]) -> tuple[bytes, bytes]:
    """The -wal and -shm a writer on `db` leaves behind when killed after writing `values`.

    `db` itself is left as such a writer leaves it: the main file without those rows.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executemany("INSERT INTO items(v) VALUES (?)", [(v,) for v in values])
    main = db.read_bytes()
    wal = Path(f"{db}-wal").read_bytes()
    shm = Path(f"{db}-shm").read_bytes()
    conn.close()  # checkpoints; put the files back as the killed writer would have left them
    db.write_bytes(main)
    assert len(wal) > 0
    return wal, shm


# ---------------------------------------------------------------- take


def test_take_includes_rows_still_in_the_wal(
    wal_writer: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    db, writer = wal_writer
    expected = writer.execute("SELECT * FROM items ORDER BY id").fetchall()
    assert len(expected) == 202
    backups = tmp_path / "backups"
    path = backup.take(db, backups, "pre-migrate")
    assert path.parent == backups
    assert rows(path) == expected
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert backup.quick_check_file(path) == "ok"
    # no temp file left; the side record beside it
    assert sorted(p.name for p in backups.iterdir()) == [path.name, f"{path.name}.json"]
    (listed,) = catalog.list_backups(backups, db)
    assert listed.path == path and listed.reason == "pre-migrate"
    # the live WAL is still there: taking a backup did not checkpoint the writer's frames away
    assert Path(f"{db}-wal").stat().st_size > 0


def test_take_removes_temp_files_left_by_a_crash_of_this_database_only(tmp_path: Path) -> None:
    # issue 19.1: the folder may be shared with another app.db, whose guard holds
    # another lock and may be writing its own temp file and record right now.
    db = tmp_path / "app.db"
    make_db(db, ["a"])
    backups = tmp_path / "backups"
    backups.mkdir()
    mine, other = catalog.ensure_identity(db, backups), "f" * 32
    crashed, theirs, whole, others = (
        backup_name("20240101T000000.000Z", "manual"),
        backup_name("20240102T000000.000Z", "manual"),
        backup_name("20240105T000000.000Z", "pre-migrate"),
        backup_name("20240106T000000.000Z", "pre-migrate"),
    )
    ours = [
        backups / f".{crashed}.{mine}.tmp",
        backups / f".{crashed}.{mine}.tmp-wal",
        backups / f".{crashed}.{mine}.tmp-journal",
        backups / f"{crashed}.json",  # our record whose backup never arrived
        backups / f".{whole}.json.tmp",  # killed while stamping our whole backup's record
    ]
    kept = [
        backups / f".{theirs}.{other}.tmp",  # the other database's, in flight
        backups / f"{theirs}.json",  # its record, written before its rename
        backups / f".{backup_name('20240103T000000.000Z', 'manual')}.tmp",  # no id, recent
        backups / f".{backup_name('20240103T000000.000Z', 'manual')}.json.tmp",
        backups / f".{backup_name('20240103T000000.000Z', 'manual', stem='app-x')}.{mine}.tmp",
        backups / f".{others}.json.tmp",  # the other database's, stamping its record
    ]
    stale = [  # no id, a day old: a version before ids crashed here
        backups / f".{backup_name('20240104T000000.000Z', 'manual')}.tmp",
        backups / f".{backup_name('20240104T000000.000Z', 'manual')}.tmp-shm",
        backups / f".{backup_name('20240104T000000.000Z', 'manual')}.json.tmp",
        backups / f"{backup_name('20240104T000000.000Z', 'manual')}.json",  # cut short
    ]
    for path in ours + kept + stale:
        path.write_bytes(b"half a backup")
    backups_of = [backups / n for n in (whole, f"{whole}.json", others, f"{others}.json")]
    for path, owner in ((ours[3], mine), (kept[1], other), *zip(backups_of[1::2], (mine, other))):
        path.write_text(json.dumps({"database": "/x/app.db", "database_id": owner}))
    for path in backups_of[::2]:
        path.write_bytes(b"a whole backup")
    for path in stale:
        os.utime(path, (1e9, 1e9))
    before = {p: sha(p) for p in kept}
    path = backup.take(db, backups, "manual")
    assert not any(p.exists() for p in ours + stale)
    assert {p: sha(p) for p in kept} == before
    assert sorted(backups.iterdir()) == sorted(
        [path, catalog.record_path(path), *kept, *backups_of]
    )
    assert rows(path) == [(1, "a")]


# ---------------------------------------------------------------- list_backups


def test_list_backups_ignores_temp_files_and_foreign_names(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    folder = tmp_path / "backups"
    newer = fake_backup(folder, "20240102T000000.000Z", "manual")
    older = fake_backup(folder, "20240101T000000.000Z", "pre-migrate")
    for name in [
        f".{backup_name('20240103T000000.000Z', 'manual')}.tmp",
        backup_name("20240103T000000.000Z", "manual") + ".tmp",
        backup_name("20240104T000000.000Z", "manual", stem="other"),
        backup_name("20240104T000000.000Z", "weird"),
        "app-latest.db",
        "app-20240104T000000Z-manual.db",
        "app.db",
        "README.txt",
    ]:
        (folder / name).write_text("x")
    found = catalog.list_backups(folder, db)
    assert [b.path for b in found] == [older, newer]
    assert [b.reason for b in found] == ["pre-migrate", "manual"]
    assert found[0].taken_at == "20240101T000000.000Z"


def test_list_backups_of_missing_folder_is_empty(tmp_path: Path) -> None:
    assert catalog.list_backups(tmp_path / "nope", tmp_path / "app.db") == []


# ---------------------------------------------------------------- prune

STAMPS = [f"2024010{d}T000000.000Z" for d in range(1, 7)]


@pytest.mark.parametrize(
    "reasons, keep, survivors",
    [
        # the newest pre-migrate backup survives even when it is older than the `keep` newest
        (["pre-migrate", "manual", "manual", "manual", "manual", "manual"], 2, [0, 4, 5]),
        # only the newest pre-migrate is protected
        (["pre-migrate", "pre-migrate", "manual", "manual", "manual", "manual"], 2, [1, 4, 5]),
        # the newest pre-migrate is already among the kept ones
        (["pre-migrate", "manual", "manual", "manual", "manual", "pre-migrate"], 3, [3, 4, 5]),
        (["manual", "manual", "manual", "always", "pre-restore", "manual"], 1, [5]),
        (["manual", "manual", "manual", "manual", "manual", "manual"], 6, [0, 1, 2, 3, 4, 5]),
        (["manual", "manual", "manual", "manual", "manual", "manual"], 0, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_prune(tmp_path: Path, reasons: list[str], keep: int, survivors: list[int]) -> None:
    db = tmp_path / "app.db"
    folder = tmp_path / "backups"
    paths = [fake_backup(folder, stamp, reason) for stamp, reason in zip(STAMPS, reasons)]
    mine = catalog.ensure_identity(db, folder)
    for path in paths:  # records of this database, as backup.take writes them
        catalog.record_path(path).write_text(
            json.dumps({"database": str(db.resolve()), "database_id": mine, "version": 0})
        )
    foreign = folder / "someone-else.db"
    foreign.write_text("keep me")
    tmp = folder / f".{backup_name('20240109T000000.000Z', 'manual')}.tmp"
    tmp.write_text("in flight")
    removed = catalog.prune(folder, db, keep)
    assert sorted(removed) == sorted(p for i, p in enumerate(paths) if i not in survivors)
    assert [b.path for b in catalog.list_backups(folder, db)] == [paths[i] for i in survivors]
    assert all(not p.exists() for p in removed)
    assert foreign.exists() and tmp.exists()


# ---------------------------------------------------------------- restore


def test_restore_removes_stale_sidecars_and_is_byte_identical(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db, ["a", "b"])
    good = backup.take(db, tmp_path / "backups", "pre-migrate")
    expected = rows(good)
    # the database moves on, and a killed writer leaves its -wal/-shm behind
    make_db(db, ["c"])
    wal, shm = stale_wal_of(db, ["d", "e", "f"])
    Path(f"{db}-wal").write_bytes(wal)
    Path(f"{db}-shm").write_bytes(shm)
    assert len(rows(db)) == 3  # d, e, f exist only in the stale -wal
    probe = tmp_path / "probe"
    probe.mkdir()
    for suffix in ("", "-wal", "-shm"):
        (probe / f"app.db{suffix}").write_bytes(Path(f"{db}{suffix}").read_bytes())
    assert len(rows_live(probe / "app.db")) == 6  # SQLite would replay that -wal

    backup.restore(good, db)

    for suffix in backup.SIDECARS:
        assert not Path(f"{db}{suffix}").exists(), suffix
    assert sha(db) == sha(good)
    assert backup.quick_check_file(db) == "ok"
    assert rows_live(db) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file


def test_restore_ignores_a_stale_wal_from_another_database(tmp_path: Path) -> None:
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    make_db(db, ["mine-1", "mine-2"])
    good = backup.take(db, tmp_path / "backups", "manual")
    expected = rows(good)
    # another database with the same table and page size leaves a WAL full of its own frames
    other = tmp_path / "other" / "other.db"
    other.parent.mkdir()
    make_db(other, ["theirs-1"])
    wal, shm = stale_wal_of(other, [f"theirs-{i}" for i in range(2, 300)])
    Path(f"{db}-wal").write_bytes(wal)
    Path(f"{db}-shm").write_bytes(shm)

    backup.restore(good, db)

    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    assert sha(db) == sha(good)
    assert rows_live(db) == expected
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_restore_into_missing_database(tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    make_db(src, ["x"], wal=False)
    good = backup.take(src, tmp_path / "backups", "manual")
    db = tmp_path / "fresh" / "src.db"
    db.parent.mkdir()
    Path(f"{db}-journal").write_bytes(b"stale hot journal")
    backup.restore(good, db)
    assert sha(db) == sha(good)
    assert not Path(f"{db}-journal").exists()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_restore_keeps_the_database_file_mode(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db, ["a"])
    good = backup.take(db, tmp_path / "backups", "manual")
    os.chmod(db, 0o640)
    backup.restore(good, db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    assert sha(db) == sha(good)


@pytest.mark.parametrize(
    "content",
    [
        b"garbage, not sqlite" * 100,
        b"SQLite format 3\x00" + b"\xff" * 4080,  # a header, then nonsense
    ],
)
def test_restore_from_a_bad_backup_fails_and_leaves_the_database(
    tmp_path: Path, content: bytes
) -> None:
    db = tmp_path / "app.db"
    make_db(db, ["a"], wal=False)
    before = sha(db)
    bad = fake_backup(tmp_path / "backups", "20240101T000000.000Z", "manual")
    bad.write_bytes(content)
    with pytest.raises(RestoreFailed) as info:
        backup.restore(bad, db)
    assert info.value.code == RESTORE_FAILED == 10
    assert str(bad) in info.value.message
    assert sha(db) == before
    assert rows(db) == [(1, "a")]


@pytest.mark.parametrize("content", [b"", b"not a database" * 100], ids=["empty", "foreign"])
def test_restore_refuses_a_backup_that_is_not_a_database(tmp_path: Path, content: bytes) -> None:
    # the guard never writes an empty backup; an empty or foreign file must not replace data
    db = tmp_path / "app.db"
    make_db(db, ["a"], wal=False)
    before = db.read_bytes()
    bad = fake_backup(tmp_path / "backups", "20240101T000000.000Z", "manual")
    bad.write_bytes(content)
    with pytest.raises(RestoreFailed, match="not an SQLite database"):
        backup.restore(bad, db)
    assert db.read_bytes() == before


# ---------------------------------------------------------------- snapshot


def test_snapshot_copies_db_and_wal_and_writes_nothing_beside_it(
    wal_writer: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    db, writer = wal_writer
    expected = writer.execute("SELECT * FROM items ORDER BY id").fetchall()
    before = sorted(p.name for p in db.parent.iterdir())
    private = tmp_path / "private"
    private.mkdir()
    copy = backup.snapshot(db, private)
    assert copy == private / db.name
    assert sorted(p.name for p in db.parent.iterdir()) == before
    assert Path(f"{copy}-wal").read_bytes() == Path(f"{db}-wal").read_bytes()
    assert copy.read_bytes() == db.read_bytes()
    assert rows_live(copy) == expected


def test_snapshot_of_missing_database_is_none(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir()
    assert backup.snapshot(tmp_path / "nope.db", folder) is None
    assert list(folder.iterdir()) == []
    assert not (tmp_path / "nope.db").exists()


def test_snapshot_replaces_an_old_copy(tmp_path: Path) -> None:
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    make_db(db, ["a"], wal=False)
    private = tmp_path / "private"
    private.mkdir()
    (private / "app.db-wal").write_bytes(b"left over from an earlier snapshot")
    copy = backup.snapshot(db, private)
    assert copy is not None
    assert not Path(f"{copy}-wal").exists()
    assert rows_live(copy) == [(1, "a")]


# ---------------------------------------------------------------- lock

HOLDER = """
import sys, time
from pathlib import Path
from preflight.storage import lock
with lock.hold(Path(sys.argv[1]), 5, "holder-command"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    path = tmp_path / "app.db.preflight.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else ""
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_lock_held_by_another_process_times_out_naming_it(
    holder_process: tuple[subprocess.Popen, Path],
) -> None:
    proc, path = holder_process
    with pytest.raises(LockTimeout) as info:
        with lock.hold(path, 0.2, "second"):
            pytest.fail("the lock was taken twice")
    assert info.value.code == LOCK_TIMEOUT == 8
    assert f"pid {proc.pid} " in info.value.message
    assert "holder-command" in info.value.message
    assert str(path) in info.value.message


def test_lock_is_free_at_once_after_the_holder_is_killed(
    holder_process: tuple[subprocess.Popen, Path],
) -> None:
    proc, path = holder_process
    with pytest.raises(LockTimeout):
        with lock.hold(path, 0, "second"):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert path.exists()  # the file stays; the lock does not
    entered = False
    with lock.hold(path, 0, "after-kill"):  # timeout 0: must succeed on the first try
        entered = True
        assert f"pid {os.getpid()} " in lock.describe(path.read_bytes())
        assert "after-kill" in lock.describe(path.read_bytes())
    assert entered
    assert lock.describe(path.read_bytes()) == "unknown holder"  # released: holder info is cleared


def test_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with lock.hold(path, 0, "first"):
        with pytest.raises(LockTimeout):
            with lock.hold(path, 0, "second"):
                pass
    with lock.hold(path, 0, "third"):
        assert "third" in lock.describe(path.read_bytes())


def test_lock_file_is_never_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db, ["a"], wal=False)
    before = sha(db)
    settings = config.resolve(argparse.Namespace(db=str(db)), {})
    assert settings.db == db
    assert settings.lock_path != settings.db
    assert settings.lock_path.parent == db.parent
    assert not settings.lock_path.name.startswith(db.name + "-")  # not a SQLite sidecar name
    with lock.hold(settings.lock_path, 0, "test"):
        # SQLite can still lock and write the database while the guard's lock is held
        conn = sqlite3.connect(db, isolation_level=None, timeout=0)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO items(v) VALUES ('b')")
        conn.execute("ROLLBACK")
        conn.close()
        assert sha(db) == before
        assert settings.lock_path.exists()
    assert rows(db) == [(1, "a")]
    assert sha(db) == before
