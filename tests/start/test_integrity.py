"""Integrity checks by cost and by risk (--integrity / PREFLIGHT_INTEGRITY).

Cheap checks (header, page size x page count against the file, sidecars, schema hash,
history) on every start; a full PRAGMA quick_check before anything is written; on a start
with nothing to write, the full check by policy. Both directions for each rule: what is
corrupt is caught when the policy says so, what is healthy is never refused.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import MIGRATIONS, folder_state, spawn

from preflight.fast import facts
from preflight.fast.facts import check_due, integrity_policy, probe
from preflight.storage import backup, cache

CACHE = "app.db.preflight-cache.json"
HOUR = 3600


@pytest.fixture
def head(cli, make_db) -> Path:
    """A database at head with a few notes; the cache records a full check just now."""
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    add_notes(db, 5)
    return db


def add_notes(db: Path, count: int, size: int = 20, prefix: str = "n") -> None:
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO notes (slug, file_path, content_hash) VALUES (?, ?, ?)",
        [(f"{prefix}{i}", f"notes/{prefix}{i}.md", "x" * size) for i in range(count)],
    )
    conn.commit()
    conn.close()


def tear_notes_page(db: Path) -> None:
    """Overwrite the cell pointers of the notes table's leaf page (data, not the schema)."""
    conn = sqlite3.connect(db)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'notes'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        assert f.read(1) == b"\x0d"  # a table leaf page
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * 16)
    try:
        assert backup.quick_check_file(db) != "ok"  # SQLite's own verdict: corrupt
    except sqlite3.DatabaseError:
        pass  # "database disk image is malformed": corrupt too


def record_check(db: Path, seconds_ago: int) -> None:
    """Set the time of the last full check recorded in the cache."""
    path = db.parent / CACHE
    data = json.loads(path.read_text())
    cache.write(
        path,
        cache.Verified(
            data["key"],
            data["schema_hash"],
            tuple(data["warnings"]),
            int(time.time()) - seconds_ago,
            data.get("checked_on", ""),  # the file the check read: kept
        ),
    )


def start(db: Path, *args: str, env: dict[str, str] | None = None, command: str = "run"):
    extra = ("--", "true") if command == "run" else ()
    return spawn(command, "--db", db, "--migrations", MIGRATIONS, *args, *extra, env=env)


def checked_at(db: Path) -> int:
    return json.loads((db.parent / CACHE).read_text())["checked_at"]


# ---------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    "text, policy",
    [
        ("every-start", "every-start"),
        ("before-writes", "before-writes"),
        (" Every-Start ", "every-start"),
        ("24h", 86400),
        ("7d", 7 * 86400),
        ("30m", 1800),
        ("3600s", 3600),
        ("3600", 3600),
    ],
)
def test_integrity_values_parse(text, policy):
    assert integrity_policy(text) == policy


@pytest.mark.parametrize("text", ["", "0", "0h", "-1h", "1w", "weekly", "1.5h", "h", "²h"])
def test_a_bad_integrity_value_is_refused_naming_the_variable(head, text):
    state = folder_state(head.parent)
    result = start(head, env={"PREFLIGHT_INTEGRITY": text})
    assert result.returncode == 2, result.stderr
    assert "PREFLIGHT_INTEGRITY" in result.stderr
    assert folder_state(head.parent) == state


def test_check_due():
    now = 1_800_000_000
    assert check_due("every-start", now, now)
    assert not check_due("before-writes", 0, now)
    assert check_due(3600, 0, now)  # none recorded
    assert not check_due(3600, now - 3599, now)
    assert check_due(3600, now - 3600, now)
    assert check_due(3600, now + 60, now)  # recorded in the future: the clock was set back


# ---------------------------------------------------------------- a torn data page


@pytest.mark.parametrize("command", ["run", "migrate"])
def test_every_start_catches_a_torn_data_page_on_every_start(head, command):
    tear_notes_page(head)
    state = folder_state(head.parent)
    for _ in range(2):
        result = start(head, "--integrity", "every-start", command=command)
        assert result.returncode == 6, result.stderr
        assert "fails PRAGMA quick_check" in result.stderr
        assert folder_state(head.parent) == state


@pytest.mark.parametrize("command", ["run", "migrate"])
def test_an_interval_skips_the_full_check_within_it_and_runs_it_once_it_passed(head, command):
    tear_notes_page(head)
    record_check(head, 23 * HOUR)
    state = folder_state(head.parent)
    within = start(head, command=command)  # the default: 24h
    # The torn page is not reported: proof that no full check ran on this start.
    assert within.returncode == 0, within.stderr
    assert "header and size ok" in within.stderr and "quick_check ok" not in within.stderr
    assert folder_state(head.parent) == state  # nothing written, the cache included
    record_check(head, 25 * HOUR)
    state = folder_state(head.parent)
    after = start(head, command=command)
    assert after.returncode == 6, after.stderr
    assert "fails PRAGMA quick_check" in after.stderr
    assert folder_state(head.parent) == state


def test_a_missing_or_future_record_is_due(head):
    tear_notes_page(head)
    record_check(head, -HOUR)  # a clock set back
    assert start(head).returncode == 6
    (head.parent / CACHE).unlink()
    assert start(head).returncode == 6


def test_before_writes_never_runs_the_full_check_on_a_no_op_start(head):
    tear_notes_page(head)
    record_check(head, 365 * 86400)
    for command in ("run", "migrate"):
        result = start(head, "--integrity", "before-writes", command=command)
        assert result.returncode == 0, result.stderr
        assert "quick_check only before writes" in result.stderr or command == "migrate"


@pytest.mark.parametrize("backup_mode", ["never", "on-change"])
def test_before_writes_still_checks_before_a_migration(head, make_migrations, backup_mode):
    tear_notes_page(head)
    folder = make_migrations({"006_x.sql": "CREATE TABLE x (id INTEGER PRIMARY KEY);"}, base=True)
    state = folder_state(head.parent)
    result = spawn(
        "run",
        "--db",
        head,
        "--migrations",
        folder,
        "--",
        "true",
        env={"PREFLIGHT_INTEGRITY": "before-writes", "PREFLIGHT_BACKUP": backup_mode},
    )
    assert result.returncode == 6, result.stderr
    assert "fails PRAGMA quick_check" in result.stderr
    assert folder_state(head.parent) == state


@pytest.mark.parametrize(
    "args, env, caught",
    [
        ((), {}, False),  # default 24h, recorded 2h ago
        ((), {"PREFLIGHT_INTEGRITY": "1h"}, True),  # the variable beats the default
        (("--integrity", "7d"), {"PREFLIGHT_INTEGRITY": "1h"}, False),  # the flag beats it
        (("--integrity", "every-start"), {"PREFLIGHT_INTEGRITY": "before-writes"}, True),
    ],
    ids=["default", "variable", "flag-over-variable", "flag-every-start"],
)
@pytest.mark.parametrize("command", ["run", "migrate"])
def test_flag_beats_variable_beats_default(head, args, env, caught, command):
    tear_notes_page(head)
    record_check(head, 2 * HOUR)
    result = start(head, *args, env=env, command=command)
    assert result.returncode == (6 if caught else 0), result.stderr


# ---------------------------------------------------------------- recording the full check


def test_a_due_check_that_passes_is_recorded_and_not_repeated(head):
    record_check(head, 25 * HOUR)
    before = int(time.time())
    first = start(head)
    assert first.returncode == 0, first.stderr
    assert "quick_check ok" in first.stderr
    assert checked_at(head) >= before
    state = folder_state(head.parent)
    second = start(head)
    assert second.returncode == 0 and "header and size ok" in second.stderr
    assert folder_state(head.parent) == state


@pytest.mark.parametrize("policy", ["every-start", "before-writes"])
def test_other_policies_never_rewrite_the_cache_on_a_no_op_start(head, policy):
    record_check(head, 25 * HOUR)
    state = folder_state(head.parent)
    for command in ("run", "migrate"):
        assert start(head, "--integrity", policy, command=command).returncode == 0
    assert folder_state(head.parent) == state


def test_recording_keeps_the_warnings_of_extra_objects(cli, head):
    conn = sqlite3.connect(head)
    conn.execute("CREATE INDEX extra_idx ON notes(content_hash)")
    conn.close()
    assert cli("migrate", "--db", head, "--migrations", MIGRATIONS).code == 0
    warnings = json.loads((head.parent / CACHE).read_text())["warnings"]
    assert warnings and "extra_idx" in warnings[0]
    record_check(head, 25 * HOUR)
    result = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert result.code == 0 and "quick_check ok" in result.err and "extra_idx" in result.err
    data = json.loads((head.parent / CACHE).read_text())
    assert data["warnings"] == warnings and data["checked_at"] > int(time.time()) - HOUR


# ---------------------------------------------------------------- the size check


def test_a_truncated_file_is_refused_by_the_cheap_check_on_every_start(head):
    add_notes(head, 200, size=200, prefix="t")  # several pages of data
    size = head.stat().st_size
    with open(head, "r+b") as f:
        f.truncate(size - 4096)
    assert probe(str(head))[0] == "short"
    with pytest.raises(sqlite3.DatabaseError):  # SQLite agrees: malformed
        backup.quick_check_file(head)
    state = folder_state(head.parent)
    for policy in ("24h", "before-writes", "every-start"):
        for command in ("run", "migrate"):
            result = start(head, "--integrity", policy, command=command)
            assert result.returncode == 6, result.stderr
            assert "is truncated: its header counts" in result.stderr
            assert folder_state(head.parent) == state


def test_a_file_longer_than_its_header_says_is_healthy(head):
    with open(head, "ab") as f:
        f.write(bytes(8192))  # as an app's SQLITE_FCNTL_CHUNK_SIZE preallocates
    assert probe(str(head))[0] == "ok"
    assert backup.quick_check_file(head) == "ok"  # SQLite agrees: it ignores the tail
    for policy in ("24h", "every-start"):
        result = start(head, "--integrity", policy)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "content, why",
    [
        (b"SQLite format 3\x00" + bytes(20), "100-byte header"),
        (b"not a database at all" * 10, "not an SQLite database"),
    ],
)
def test_the_probe_refuses_what_is_not_a_database(tmp_path, content, why):
    db = tmp_path / "x.db"
    db.write_bytes(content)
    verdict, message = probe(str(db))
    assert verdict == "bad" and why in message


def wal_mid_checkpoint(db: Path, scratch: Path) -> Path:
    """A copy of `db` as a crash in the middle of a checkpoint leaves it: the WAL holds
    new pages, and page 1 (written first, it counts them) is already back in the main
    file, the pages after it are not. Healthy: SQLite reads them from the WAL."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO notes (slug, file_path, content_hash) VALUES (?, ?, ?)",
        [(f"w{i}", f"notes/w{i}.md", "y" * 300) for i in range(300)],
    )
    conn.execute("COMMIT")
    crash = scratch / "crash"
    crash.mkdir()
    for name in (db.name, f"{db.name}-wal", CACHE):  # the files as a crash leaves them
        shutil.copy(db.parent / name, crash / name)
    conn.close()
    copy = crash / db.name
    wal = Path(f"{copy}-wal").read_bytes()
    page_size = int.from_bytes(wal[8:12], "big")
    page_one = None
    for offset in range(32, len(wal) - 24 - page_size + 1, 24 + page_size):
        if int.from_bytes(wal[offset : offset + 4], "big") == 1:
            page_one = wal[offset + 24 : offset + 24 + page_size]
    assert page_one is not None
    with open(copy, "r+b") as f:
        f.write(page_one)
    return copy


def test_a_healthy_wal_database_with_pending_frames_is_never_refused(head, tmp_path):
    copy = wal_mid_checkpoint(head, tmp_path)
    assert probe(str(copy))[0] == "unsure"  # shorter than its header says, the WAL holds the rest
    for policy in ("24h", "before-writes", "every-start"):
        for command in ("run", "migrate"):
            result = start(copy, "--integrity", policy, command=command)
            assert result.returncode == 0, result.stderr
            assert "quick_check ok" in result.stderr  # the cheap check could not vouch
    conn = sqlite3.connect(copy)
    assert conn.execute("SELECT count(*) FROM notes").fetchone() == (305,)
    conn.close()


def test_the_same_short_file_without_its_wal_is_refused(head, tmp_path):
    copy = wal_mid_checkpoint(head, tmp_path)
    Path(f"{copy}-wal").unlink()
    Path(f"{copy}-shm").unlink(missing_ok=True)
    assert probe(str(copy))[0] == "short"
    state = folder_state(copy.parent)
    result = start(copy)
    assert result.returncode == 6, result.stderr
    assert "is truncated" in result.stderr and "put back" in result.stderr
    assert folder_state(copy.parent) == state


def test_quick_start_and_cache_agree_on_the_recorded_time(tmp_path):
    path = tmp_path / "c.json"
    cache.write(path, cache.Verified("k" * 64, "h" * 64, (), 1767225600))
    text = path.read_bytes()
    assert facts.cache_checked(text) == (1767225600, "")
    with pytest.raises(facts.Unproven):
        facts.cache_checked(text.replace(b"1767225600", b"-1"))
