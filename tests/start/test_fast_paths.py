"""The fast paths keep every safety property: the verified-state cache, the locked backup
copy, the fresh build without a rehearsal, and progress reporting (correctness, not timing)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import MIGRATIONS, folder_state, plant_foreign_wal, rows, sha256_hex, spawn

from preflight.core import progress
from preflight.core.errors import DatabaseUnusable, EnvironmentProblem
from preflight.fast import facts, quickstart
from preflight.sources import migrations
from preflight.storage import backup, cache, config, filecopy, lock

CACHE = "app.db.preflight-cache.json"


@pytest.fixture
def head(cli, make_db) -> Path:
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    return db


# ---------------------------------------------------------------- verified-state cache


def test_a_verified_start_writes_the_cache_and_the_next_no_op_start_uses_it(cli, head):
    data = json.loads((head.parent / CACHE).read_text())
    assert set(data) == {"key", "schema_hash", "warnings", "checked_on", "checked_at"}
    assert data["checked_at"] > 0  # the migration's verification ran quick_check
    assert stat.S_IMODE((head.parent / CACHE).stat().st_mode) == 0o600
    state = folder_state(head.parent)
    again = spawn("run", "--db", head, "--migrations", MIGRATIONS, "--", "true")
    assert again.returncode == 0, again.stderr
    assert "schema as verified before (cache), header and size ok" in again.stderr
    assert "exec: true" in again.stderr
    assert folder_state(head.parent) == state  # a no-op start writes nothing, cache included


def test_the_cache_never_hides_drift(cli, head):
    conn = sqlite3.connect(head)
    conn.execute("ALTER TABLE notes ADD COLUMN surprise TEXT")
    conn.close()
    result = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert result.code == 4 and "notes.surprise" in result.err
    assert "(cache)" not in result.err


def test_the_cache_never_skips_the_history_check(cli, head):
    conn = sqlite3.connect(head)
    conn.execute("UPDATE _preflight_history SET sha256 = 'f00d' WHERE version = 3")
    conn.commit()
    conn.close()
    result = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert result.code == 5 and "edited after it was applied" in result.err


def test_a_cache_for_another_set_or_mode_is_ignored_and_replaced(cli, head, make_migrations):
    strict = cli("migrate", "--db", head, "--migrations", MIGRATIONS, "--strict")
    assert strict.code == 0 and "(cache)" not in strict.err
    folder = make_migrations(
        {"006_more.sql": "CREATE TABLE more (id INTEGER PRIMARY KEY);"}, base=True
    )
    grown = cli("migrate", "--db", head, "--migrations", folder)
    assert grown.code == 0 and "(cache)" not in grown.err and "006_more.sql" in grown.err
    again = cli("migrate", "--db", head, "--migrations", folder)
    assert again.code == 0 and "(cache)" in again.err


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"key": 1}', b"[]"])
def test_an_unreadable_cache_is_ignored_and_rewritten(cli, head, content):
    (head.parent / CACHE).write_bytes(content)
    result = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert result.code == 0 and "(cache)" not in result.err
    assert json.loads((head.parent / CACHE).read_text())["schema_hash"]


def test_a_cache_vouches_only_for_the_exact_schema_text_it_hashed(cli, head):
    data = json.loads((head.parent / CACHE).read_text())
    conn = sqlite3.connect(head)
    conn.execute("DROP INDEX idx_notes_slug")
    data["schema_hash"] = cache.schema_hash(conn)  # a cache made for this other schema...
    conn.execute("CREATE INDEX idx_notes_slug ON notes(slug)")
    conn.execute("ALTER TABLE notes ADD COLUMN surprise TEXT")
    conn.commit()
    conn.close()
    (head.parent / CACHE).write_text(json.dumps(data))
    result = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert result.code == 4 and "notes.surprise" in result.err  # ...cannot cover this one


def test_extra_objects_are_still_warned_about_on_a_cache_hit(cli, head):
    conn = sqlite3.connect(head)
    conn.execute("CREATE TABLE notes_archive (id INTEGER PRIMARY KEY)")
    conn.close()
    first = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert first.code == 0 and "extra: table notes_archive" in first.err
    second = cli("migrate", "--db", head, "--migrations", MIGRATIONS)
    assert second.code == 0 and "(cache)" in second.err
    assert "extra: table notes_archive" in second.err


def test_schema_hash_ignores_rootpage_but_not_sql(tmp_path):
    db = tmp_path / "a.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE a (x)")
    conn.execute("CREATE TABLE b (y)")
    conn.execute("INSERT INTO a VALUES (1)")
    before = cache.schema_hash(conn)
    conn.execute("DROP TABLE a")
    conn.execute("CREATE TABLE a (x)")  # same text, another root page
    assert cache.schema_hash(conn) == before
    conn.execute("CREATE INDEX b_y ON b(y)")
    assert cache.schema_hash(conn) != before
    conn.close()


# ---------------------------------------------------------------- fresh build


def test_fresh_build_needs_no_rehearsal_and_is_verified(cli, make_db):
    db = make_db("fresh")
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0
    assert "schema built from empty, quick_check ok, foreign keys ok" in result.err
    assert rows(db, "SELECT count(*) FROM _preflight_history") == [(5,)]


# ---------------------------------------------------------------- locked backup copy


def wal_db(db: Path, committed: int, in_wal: int) -> None:
    """`db` in WAL mode with `in_wal` rows only in its -wal, and no connection open."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE INDEX items_v ON items(v)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"c{i}",) for i in range(committed)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(f"w{i}",) for i in range(in_wal)])
    files = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
    conn.close()  # checkpoints; put the files back as a killed writer would leave them
    for s, data in files.items():
        Path(f"{db}{s}").write_bytes(data)


def test_locked_copy_includes_the_wal_and_leaves_the_live_files_byte_identical(tmp_path, logged):
    db = tmp_path / "app.db"
    wal_db(db, 500, 300)
    before = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
    backups = tmp_path / "backups"
    path = backup.take(db, backups, "manual")
    assert {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")} == before
    assert rows(path, "SELECT count(*) FROM items") == [(800,)]
    assert backup.quick_check_file(path) == "ok"
    assert path.read_bytes()[18:20] == b"\x02\x02"  # still WAL mode: a restore keeps the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in backups.iterdir()) == [path.name, f"{path.name}.json"]
    assert not any("backup API" in line for line in logged)


def test_locked_copy_of_a_rollback_journal_database(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO items (v) VALUES (?)", [(str(i),) for i in range(1000)])
    conn.commit()
    conn.close()
    path = backup.take(db, tmp_path / "backups", "manual")
    assert path.read_bytes() == db.read_bytes()


@pytest.mark.parametrize("where", [0, 5000, (8 << 20) + 100, (8 << 20) + 9999])
def test_the_backups_compare_finds_a_byte_that_differs_from_the_source(tmp_path, where):
    """What makes a backup fall back to the API when the source changed under the copy:
    every chunk read back from the source and compared with the copy as it lies."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = bytearray(os.urandom((8 << 20) + 10000))  # a full chunk and a short one
    src.write_bytes(data)
    data[where] ^= 0x01
    dst.write_bytes(data)
    chunk = 8 << 20
    start, length = (0, chunk) if where < chunk else (chunk, len(data) - chunk)
    buffer = bytearray(chunk)
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        assert not filecopy._same(fin.fileno(), fout.fileno(), start, length, buffer)
        other = chunk if start == 0 else 0  # the chunk without the changed byte
        assert filecopy._same(
            fin.fileno(), fout.fileno(), other, min(chunk, len(data) - other), buffer
        )


def test_a_busy_database_is_backed_up_with_the_backup_api(tmp_path, logged):
    db = tmp_path / "app.db"
    wal_db(db, 100, 50)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO items (v) VALUES ('uncommitted')")
    try:
        path = backup.take(db, tmp_path / "backups", "manual")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert any("busy" in line and "backup API" in line for line in logged)
    assert rows(path, "SELECT count(*) FROM items") == [(150,)]  # committed rows only


def test_fast_and_online_backups_hold_the_same_rows(tmp_path):
    db = tmp_path / "app.db"
    wal_db(db, 200, 100)
    fast = backup.take(db, tmp_path / "fast", "manual")
    slow = backup.take(db, tmp_path / "slow", "manual", fast=False)
    query = "SELECT * FROM items ORDER BY id"
    assert rows(fast, query) == rows(slow, query)


def test_a_corrupt_source_is_refused_and_leaves_no_backup(tmp_path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX items_v ON items(v)")
    conn.executemany(
        "INSERT INTO items (v) VALUES (?)", [(f"value-{i:06d}",) for i in range(20000)]
    )
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='items_v'").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:  # the index's root page: keep its header, scramble its cells
        f.seek((root - 1) * 4096 + 100)
        f.write(b"\x17" * 3000)
    backups = tmp_path / "backups"
    with pytest.raises((DatabaseUnusable, EnvironmentProblem)):
        backup.take(db, backups, "manual")
    assert not backups.exists()  # nor the folder it made, nor the id beside the database
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_copy_file_copies_and_reports_progress(tmp_path, logged):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(bytes(range(256)) * 40000)
    dst.write_bytes(b"old content that must go")
    meter = progress.Meter("backup", src.stat().st_size, after=0, every=0)
    assert filecopy.copy_file(src, dst, meter, verify=True).end == src.stat().st_size
    assert dst.read_bytes() == src.read_bytes()
    assert meter.lines >= 1 and any(line.startswith("backup: 100% ") for line in logged)


# ---------------------------------------------------------------- progress


def test_meter_is_silent_at_first_then_at_most_once_per_interval(logged):
    now = [0.0]
    meter = progress.Meter("backup", 1024 << 20, after=2.0, every=1.0, clock=lambda: now[0])
    for t, done in ((0.5, 100), (1.9, 200), (2.0, 512), (2.5, 600), (2.99, 700), (3.0, 1024)):
        now[0] = t
        meter.update(done << 20)
    assert logged == [
        "backup: 50% 512.0/1024.0 MiB at 256 MiB/s",
        "backup: 100% 1024.0/1024.0 MiB at 341 MiB/s",
    ]


def test_meter_without_a_total_says_what_it_is_doing(logged):
    now = [0.0]
    meter = progress.Meter("migrate: 006_big.sql", after=0, every=1, clock=lambda: now[0])
    now[0] = 3.0
    meter.update(doing="statement 2/3 (line 4)")
    assert logged == ["migrate: 006_big.sql: statement 2/3 (line 4), running for 3 s"]


def test_a_long_migration_statement_reports_progress(tmp_path, logged):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_slow.sql").write_text(
        "CREATE TABLE n (x);\n"
        "INSERT INTO n WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
        "WHERE i < 300000) SELECT i FROM c;\n"
    )
    (m,) = migrations.discover(folder)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    meter = progress.Meter("migrate: 001_slow.sql", after=0, every=0)
    migrations.run_body(conn, m, meter=meter)
    conn.execute("COMMIT")
    assert meter.lines >= 2
    assert any("statement 2/2 (line 2)" in line for line in logged)
    assert conn.execute("SELECT count(*) FROM n").fetchone() == (300000,)


# ---------------------------------------------------------------- quick start


class Exec(Exception):
    """os.execvp, caught: the quick start proved a no-op start."""


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch, cli, head):
    """start(args, env) -> True if the quick start would exec, False if it hands over."""

    def fake_exec(file: str, args: list[str]) -> None:
        raise Exec(args)

    monkeypatch.setattr(os, "execvp", fake_exec)

    def attempt(*args: object, env: dict[str, str] | None = None) -> bool:
        try:
            quickstart.start(
                [
                    "run",
                    "--db",
                    str(head),
                    "--migrations",
                    str(MIGRATIONS),
                    *map(str, args),
                    "--",
                    "true",
                ],
                env or {},
            )
        except Exec:
            return True
        return False

    assert cli("migrate", "--db", head, "--migrations", MIGRATIONS).code == 0  # cache current
    return attempt


def test_quick_start_knows_every_option_the_cli_knows():
    flags = {**facts.FLAGS, **facts.SWITCHES}
    assert {(o.flag, o.dest, o.env) for o in config.OPTIONS} == {
        (flag, dest, env) for flag, (dest, env) in flags.items()
    }
    assert {o.dest: o.default for o in config.OPTIONS if not o.is_switch} == {
        k: None
        if v == ""
        else (
            int(v)
            if k == "keep_backups"
            else float(v)
            if k in ("lock_timeout", "smoke_timeout", "litestream_timeout")
            else facts.integrity_policy(v)
            if k == "integrity"
            else v
        )
        for k, _, _, v, _ in facts.OPTIONS
        if k not in ("strict", "json")
    }


def test_quick_start_and_cache_share_one_file_format_and_fingerprint(tmp_path):
    path = tmp_path / "c.json"
    for checked_at, checked_on in ((0, ""), (1, "2049:12"), (1767225600, cache.file_id(path))):
        written = cache.Verified("k" * 64, "h" * 64, (), checked_at, checked_on)
        cache.write(path, written)
        text = path.read_bytes()
        assert text == facts.cache_text("k" * 64, "h" * 64, checked_at, checked_on)
        assert facts.cache_checked(text) == (checked_at, checked_on)
        assert cache.read(path, "k" * 64) == written
    found = migrations.discover(MIGRATIONS)
    assert facts.set_fingerprint(
        [(n, s) for _, n, s in facts.files(str(MIGRATIONS))]
    ) == migrations.set_fingerprint(found)


def test_quick_start_execs_a_proven_no_op_start_and_writes_nothing(quick, head, capsys):
    state = folder_state(head.parent, strict=True)
    assert quick()
    # The lock file is empty again; the file the running app holds a shared flock on
    # (see holders) exists, empty.
    state["app.db.preflight.running"] = sha256_hex("")
    assert folder_state(head.parent, strict=True) == state
    err = capsys.readouterr().err
    assert "as verified before" in err and "exec: true" in err


@pytest.mark.parametrize(
    "args, env",
    [
        (("--log-format", "json"), {}),
        (("--json",), {}),
        (("--backup", "always"), {}),
        (("--keep-backups", "lots"), {}),
        (("--lock-timeout", "nan"), {}),
        (("--strict",), {}),  # another cache key
        (("--db=elsewhere",), {}),
        ((), {"PREFLIGHT_STRICT": "maybe"}),
        ((), {"PREFLIGHT_BACKUP": "always"}),
        ((), {"PREFLIGHT_DOWNGRADE": "yes"}),
    ],
    ids=[
        "json-logs",
        "json-report",
        "backup-always",
        "bad-number",
        "nan",
        "strict",
        "equals-form",
        "bad-bool",
        "env-backup-always",
        "bad-downgrade",
    ],
)
def test_quick_start_hands_over_options_it_does_not_prove(quick, args, env):
    assert not quick(*args, env=env)


def test_quick_start_judges_the_downgrade_option_as_the_cli_does():
    """What the full start refuses (exit 2) the quick start never proves."""
    for args, env, proven in [
        (["--downgrade", "apply"], {}, True),
        ([], {"PREFLIGHT_DOWNGRADE": "refuse"}, True),
        ([], {"PREFLIGHT_DOWNGRADE": "Apply"}, False),
        (["--downgrade", "apply", "--tool", "alembic"], {}, False),
        (["--tool", "django"], {"PREFLIGHT_DOWNGRADE": "apply"}, False),
    ]:
        try:
            facts.run_options([*args, "--", "true"], env)
        except facts.Unproven:
            assert not proven, (args, env)
        else:
            assert proven, (args, env)


def test_quick_start_hands_over_when_anything_changed(quick, head, make_migrations, tmp_path):
    assert quick()
    (head.parent / "app.db.preflight-failure.json").write_text("{}")
    assert not quick()
    (head.parent / "app.db.preflight-failure.json").unlink()
    conn = sqlite3.connect(head)
    conn.execute("CREATE INDEX extra_idx ON notes(content_hash)")
    conn.close()
    assert not quick()  # schema text differs from what the cache vouches for
    conn = sqlite3.connect(head)
    conn.execute("DROP INDEX extra_idx")
    conn.close()
    assert quick()
    with lock.hold(head.with_name("app.db.preflight.lock"), 1, "test"):
        assert not quick()  # another guard holds the lock: the full pipeline waits
    backups = head.parent / "backups"
    backups.mkdir(exist_ok=True)
    for i in range(11):
        (backups / f"app-20260101T0000{i:02d}.000Z-manual.db").write_bytes(b"x")
    assert quick()  # without side records: never pruned, so no reason to hand over
    for i in range(11):
        (backups / f"app-20260101T0000{i:02d}.000Z-manual.db.json").write_bytes(b"{}")
    assert not quick()  # more than --keep-backups: the full pipeline prunes
    assert quick("--keep-backups", "0")


def test_quick_start_hands_over_a_corrupt_database(quick, head):
    assert quick("--integrity", "every-start")
    with open(head, "r+b") as f:
        f.seek(4096 + 8)
        f.write(b"\xff" * 64)  # a btree page of the first table
    assert not quick("--integrity", "every-start")


def test_quick_start_hands_over_odd_sidecars(quick, head, tmp_path):
    assert quick()
    plant_foreign_wal(head, tmp_path)
    assert not quick()  # a stale WAL beside a rollback-mode database
    Path(f"{head}-wal").unlink()
    assert quick()
    Path(f"{head}-shm").mkdir()
    assert not quick()  # a sidecar that is not a file


def test_a_run_with_a_stale_wal_is_refused_even_with_a_current_cache(cli, head, tmp_path):
    assert cli("migrate", "--db", head, "--migrations", MIGRATIONS).code == 0  # cache current
    plant_foreign_wal(head, tmp_path)
    state = folder_state(head.parent)
    done = spawn("run", "--db", head, "--migrations", MIGRATIONS, "--", "true")
    assert done.returncode == 6, done.stderr
    assert "stale WAL" in done.stderr
    assert folder_state(head.parent) == state


def test_quick_start_hands_over_a_changed_migration_set(quick, head, make_migrations):
    folder = make_migrations({"006_x.sql": "CREATE TABLE x (id INTEGER PRIMARY KEY);"}, base=True)
    try:
        quickstart.start(["run", "--db", str(head), "--migrations", str(folder), "--", "true"], {})
    except Exec:
        pytest.fail("a pending migration must go through the full pipeline")


def test_quick_start_ignores_other_commands_and_missing_commands(quick, head):
    quickstart.start(["migrate", "--db", str(head)], {})
    quickstart.start(
        [
            "run",
            "--db",
            str(head),
            "--migrations",
            str(MIGRATIONS),
            "--",
            "no-such-command-anywhere",
        ],
        {},
    )
    quickstart.start(["run", "--db", str(head), "--migrations", str(MIGRATIONS)], {})
