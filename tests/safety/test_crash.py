"""Crash safety, for real: the guard SIGKILLs itself at each named fault point, or is
SIGKILLed (or SIGTERMed) at random moments, and the next start must find the old state
or the new one, never a mix, with every row, a clean integrity_check, no half backup
taken for a whole one, and no stale lock.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    MIGRATIONS,
    REPO,
    dump,
    hold_lock,
    load_fixture,
    rows,
    sha256_hex,
    started,
    tree_sha,
    wait_until_blocked_on_lock,
)

from preflight.core import faults
from preflight.storage import backup, catalog

# Three statements after the application's migrations: more places for `statement@N`.
EXTRA = {
    "006_note_audit.sql": "CREATE TABLE note_audit (id INTEGER PRIMARY KEY, note_id INTEGER,"
    " slug TEXT);\n"
    "INSERT INTO note_audit (note_id, slug) SELECT id, slug FROM notes;\n"
    "CREATE INDEX idx_note_audit_note ON note_audit(note_id);\n"
}


def guard(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m preflight ARGS` started (not waited for), stderr captured."""
    return started(*args, env=env)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.fixture(scope="module")
def crash_migrations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash-migrations")
    for path in MIGRATIONS.glob("[0-9]*"):
        shutil.copy(path, folder / path.name)
    for name, text in EXTRA.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def states(
    tmp_path_factory: pytest.TempPathFactory, crash_migrations: Path
) -> dict[str, list[str]]:
    """The two acceptable outcomes: v0.9.5 untouched, and v0.9.5 cleanly migrated to head."""
    folder = tmp_path_factory.mktemp("clean")
    db = load_fixture("v0.9.5", folder / "app.db")
    old = dump(db)
    from preflight.cli import main

    assert main(["migrate", "--db", str(db), "--migrations", str(crash_migrations)]) == 0
    return {"old": old, "new": dump(db)}


def outcome(db: Path, states: dict[str, list[str]], original: Path) -> str:
    """'old' or 'new' after proving the database whole; fails on anything in between."""
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    content = dump(db)
    which = [name for name, d in states.items() if d == content]
    assert which, "the database is neither the old state nor the new one"
    versions = (
        [v for (v,) in rows(db, "SELECT version FROM _preflight_history ORDER BY version")]
        if rows(db, "SELECT 1 FROM sqlite_master WHERE name='_preflight_history'")
        else []
    )
    tokens = [t for (t,) in rows(original, "SELECT token FROM tokens")]
    if which[0] == "old":
        assert versions == []  # history and schema move together
        assert sorted(t for (t,) in rows(db, "SELECT token FROM tokens")) == sorted(tokens)
    else:
        assert versions == list(range(1, 7))
        assert sorted(t for (t,) in rows(db, "SELECT token_hash FROM tokens")) == sorted(
            sha256_hex(t) for t in tokens
        )
    assert rows(db, "SELECT id, slug, content_hash FROM notes ORDER BY id") == rows(
        original, "SELECT id, slug, content_hash FROM notes ORDER BY id"
    )
    assert len(rows(db, "SELECT id FROM sessions")) == 4
    return which[0]


def assert_backups_whole(db: Path) -> list[Path]:
    """Every name in the backup folder that restore or prune would use is a complete backup."""
    folder = db.parent / "backups"
    listed = [b.path for b in catalog.list_backups(folder, db)]
    for path in folder.iterdir() if folder.exists() else ():
        if path.name.startswith("."):
            assert path not in listed  # a crash's temp file is never taken for a backup
            continue
        if path.name.endswith(".db.json"):  # a side record, written before its backup
            continue
        assert path in listed, path
        assert backup.backup_problem(path) is None, path
        # backup_problem trusts a recorded hash to the restore: check both here.
        assert backup.quick_check_file(path) == "ok", path
        record = catalog.record_of(path)
        if record is not None and record.get("kept_by") != "hard link":
            assert record["sha256_tree"] == tree_sha(path), path
    return listed


@pytest.fixture
def original(tmp_path: Path) -> Path:
    return load_fixture("v0.9.5", tmp_path / "original.db")


@pytest.fixture
def victim(make_db) -> Path:
    return make_db("v0.9.5")


@pytest.mark.parametrize(
    "fault, command, expect",
    [
        ("backup-temp-written", "migrate", "old"),
        ("backup-before-rename", "migrate", "old"),
        ("statement", "migrate", "old"),  # after 004 (a .py migration)
        ("statement@2", "migrate", "old"),  # after 005's one statement
        ("statement@3", "migrate", "old"),
        ("statement@5", "migrate", "old"),  # after the last statement of 006
        ("before-commit", "migrate", "old"),
        ("after-commit", "migrate", "new"),
        ("before-exec", "run", "new"),
        ("backup-before-rename,statement@2", "migrate", "old"),  # the first armed point wins
    ],
)
def test_kill_at_a_fault_point_leaves_old_or_new_and_the_next_start_succeeds(
    cli, victim, original, states, crash_migrations, fault, command, expect
):
    argv = [command, "--db", victim, "--migrations", crash_migrations]
    if command == "run":
        argv += ["--", "true"]
    code, err = finish(guard(*argv, env={"PREFLIGHT_FAULT": fault}))
    assert code == -signal.SIGKILL, err
    assert outcome(victim, states, original) == expect
    assert_backups_whole(victim)
    # The next start: no stale lock (timeout 0), no failure record, finishes the job.
    result = cli("migrate", "--db", victim, "--migrations", crash_migrations, "--lock-timeout", "0")
    assert result.code == 0, result
    assert outcome(victim, states, original) == "new"
    assert len(assert_backups_whole(victim)) >= 1
    assert not any(p.name.startswith(".") for p in (victim.parent / "backups").iterdir())


@pytest.mark.parametrize("fault", ["restore-temp-written", "restore-before-rename"])
def test_kill_during_the_restore_after_a_failed_smoke_test_refuses_until_restored(
    cli, victim, original, states, crash_migrations, fault
):
    code, err = finish(
        guard(
            "migrate",
            "--db",
            victim,
            "--migrations",
            crash_migrations,
            "--smoke",
            "false",
            env={"PREFLIGHT_FAULT": fault},
        )
    )
    assert code == -signal.SIGKILL, err
    # Killed mid-restore: still the committed new state, whole; the record says so.
    assert outcome(victim, states, original) == "new"
    (premigrate,) = assert_backups_whole(victim)
    record = json.loads((victim.parent / "app.db.preflight-failure.json").read_text())
    assert record["restored"] is False and record["backup"] == str(premigrate)
    result = cli("migrate", "--db", victim, "--migrations", crash_migrations, "--lock-timeout", "0")
    assert result.code == 11 and "did not complete its restore" in result.err
    # What the message tells the operator to do works.
    assert cli("restore", premigrate, "--db", victim).code == 0
    assert outcome(victim, states, original) == "old"
    assert not list(victim.parent.glob(".*restore.tmp"))
    assert cli("clear-failure", "--db", victim).code == 0
    assert cli("migrate", "--db", victim, "--migrations", crash_migrations).code == 0
    assert outcome(victim, states, original) == "new"


@pytest.mark.parametrize("fault", ["restore-temp-written", "restore-before-rename"])
def test_kill_during_the_restore_command_leaves_one_state_or_the_other(
    cli, victim, original, states, crash_migrations, fault
):
    assert cli("migrate", "--db", victim, "--migrations", crash_migrations).code == 0
    (premigrate,) = assert_backups_whole(victim)
    code, err = finish(guard("restore", premigrate, "--db", victim, env={"PREFLIGHT_FAULT": fault}))
    assert code == -signal.SIGKILL, err
    assert outcome(victim, states, original) == "new"  # the rename never happened
    assert_backups_whole(victim)
    assert cli("restore", premigrate, "--db", victim, "--lock-timeout", "0").code == 0
    assert outcome(victim, states, original) == "old"


# --------------------------------------------------------------- kills at random moments


def bulk(db: Path, tokens: int, notes: int) -> None:
    """More rows, so backup and migration 004 (which rehashes every token) take a while."""
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO tokens (token, me, client_id, scope, created_at, expires_at) "
        "VALUES (?, 'https://me.example', 'client', 'create', "
        "'2024-01-01 00:00:00', NULL)",
        ((f"bulk-token-{i:07d}",) for i in range(tokens)),
    )
    conn.executemany(
        "INSERT INTO notes (slug, file_path, published, content_hash) VALUES (?, ?, 1, ?)",
        ((f"bulk-{i}", f"2024/01/bulk-{i}.md", sha256_hex(str(i))) for i in range(notes)),
    )
    conn.commit()
    conn.close()


def content(db: Path) -> str:
    """A digest of every user row (a dump of 100k rows per kill would be slow)."""
    conn = sqlite3.connect(db)
    try:
        names = [
            n
            for (n,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                "AND name NOT LIKE '\\_preflight%' ESCAPE '\\' "
                "ORDER BY name"
            )
        ]
        digest = []
        for name in names:
            cur = conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid')
            digest.append(sha256_hex(name + repr(cur.fetchall())))
        return sha256_hex("".join(digest))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def bulky(tmp_path_factory: pytest.TempPathFactory, crash_migrations: Path) -> dict:
    """v0.9.5 with 20 000 more tokens and 1 000 more notes; its digests before and after a
    clean run, and how long that run took."""
    folder = tmp_path_factory.mktemp("bulky")
    seed = load_fixture("v0.9.5", folder / "seed.db")
    bulk(seed, tokens=20000, notes=1000)
    clean = folder / "clean" / "app.db"
    clean.parent.mkdir()
    shutil.copy(seed, clean)
    start = time.monotonic()
    code, err = finish(guard("migrate", "--db", clean, "--migrations", crash_migrations))
    assert code == 0, err
    return {
        "seed": seed,
        "took": time.monotonic() - start,
        "old": content(seed),
        "new": content(clean),
    }


@pytest.mark.parametrize(
    "signum, runs", [(signal.SIGKILL, 12), (signal.SIGTERM, 8)], ids=["SIGKILL", "SIGTERM"]
)
def test_a_signal_at_a_random_moment_never_leaves_a_state_in_between(
    tmp_path, cli, bulky, crash_migrations, signum, runs
):
    rng = random.Random(4)  # seeded: a failure reproduces
    seen = []
    for n in range(runs):
        folder = tmp_path / f"run{n}"
        folder.mkdir()
        db = folder / "app.db"
        shutil.copy(bulky["seed"], db)
        proc = guard("migrate", "--db", db, "--migrations", crash_migrations)
        time.sleep(rng.uniform(0.05, bulky["took"] * 1.1))
        proc.send_signal(signum)
        code, err = finish(proc)
        last = (err.strip().splitlines() or ["(before the first log line)"])[-1]
        assert rows(db, "PRAGMA integrity_check") == [("ok",)], last
        state = {bulky["old"]: "old", bulky["new"]: "new"}.get(content(db))
        assert state, f"signal {n} after {last!r} left a state in between"
        seen.append((code, state))
        if signum == signal.SIGTERM:
            # Outside the guard's handlers (Python starting, or exiting once done) it dies of
            # it (-15); inside, exit 12, undone unless verification had finished.
            assert code in (0, 12, -signal.SIGTERM), err
            assert state == "new" if code == 0 else state == "old" or "verify: " in err, err
            assert not (folder / "app.db.preflight-failure.json").exists()
        assert_backups_whole(db)
        result = cli("migrate", "--db", db, "--migrations", crash_migrations, "--lock-timeout", "0")
        assert result.code == 0, (n, last, result)
        assert content(db) == bulky["new"]
        assert_backups_whole(db)
    print(f"{signum.name} at random moments over {bulky['took']:.2f} s: {seen}")


# --------------------------------------------------------------- SIGTERM

SLOW = (
    "import sys, time\n"
    "def migrate(conn):\n"
    "    conn.execute('CREATE TABLE slow (x)')\n"
    "    if conn.execute('SELECT count(*) FROM notes').fetchone()[0]:\n"
    "        print('slow migration running', file=sys.stderr, flush=True)\n"
    "        time.sleep(30)\n"
)


# SQLite calls a Python function per row; a signal's exception raised inside it comes out
# of SQLite only as 'user-defined function raised exception'.
SLOW_FUNCTION = (
    "import sys, time\n"
    "def slow(value):\n"
    "    print('slow migration running', file=sys.stderr, flush=True)\n"
    "    time.sleep(0.5)\n"
    "    return value\n"
    "def migrate(conn):\n"
    "    conn.create_function('slow', 1, slow)\n"
    "    conn.execute('CREATE TABLE slow AS SELECT slow(slug) AS s FROM notes')\n"
)


@pytest.mark.parametrize(
    "signum, body",
    [(signal.SIGTERM, SLOW), (signal.SIGINT, SLOW), (signal.SIGTERM, SLOW_FUNCTION)],
    ids=["SIGTERM", "SIGINT", "SIGTERM-inside-sqlite"],
)
def test_sigterm_during_a_migration_rolls_back_releases_the_lock_and_exits_12(
    cli, victim, original, states, make_migrations, signum, body
):
    slow = make_migrations({"006_slow.py": body}, base=True)
    before = dump(victim)
    proc = guard("migrate", "--db", victim, "--migrations", slow)
    for line in proc.stderr:
        if "slow migration running" in line:
            break
    else:
        pytest.fail(f"the migration never started: {proc.wait()}")
    sent = time.monotonic()
    proc.send_signal(signum)
    code, err = finish(proc, timeout=10)
    assert time.monotonic() - sent < 5  # it did not wait for the 30 s sleep
    assert code == 12, err
    if body is SLOW_FUNCTION:
        assert "interrupted by SIGTERM or SIGINT before the app started (inside a migration)" in err
    else:
        assert f"interrupted by {signal.Signals(signum).name} before the app started" in err
    assert "rolled back; the database was not changed" in err
    assert dump(victim) == before
    assert rows(victim, "PRAGMA integrity_check") == [("ok",)]
    assert not (victim.parent / "app.db.preflight-failure.json").exists()
    assert_backups_whole(victim)
    # Lock released, no record: the real migrations go ahead at once.
    assert (
        cli("migrate", "--db", victim, "--migrations", MIGRATIONS, "--lock-timeout", "0").code == 0
    )


def test_sigterm_after_commit_restores_the_backup_and_exits_12(cli, victim, make_migrations):
    before = dump(victim)
    smoke = (
        f"{sys.executable} -c \"import sys, time; print('smoke running', file=sys.stderr, "
        f'flush=True); time.sleep(30)"'
    )
    proc = guard("migrate", "--db", victim, "--migrations", MIGRATIONS, "--smoke", smoke)
    # The smoke command's output is captured by the guard, so wait for the commit line.
    for line in proc.stderr:
        if "in one transaction" in line:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc, timeout=40)
    assert code == 12, err
    assert "restored from" in err
    assert dump(victim) == before
    assert not (victim.parent / "app.db.preflight-failure.json").exists()


def test_sigterm_while_waiting_for_the_lock_exits_12_at_once(victim):
    holder = hold_lock(Path(f"{victim}.preflight.lock"))
    try:
        before = dump(victim)
        proc = guard("migrate", "--db", victim, "--migrations", MIGRATIONS)
        wait_until_blocked_on_lock(proc.pid, Path(f"{victim}.preflight.lock"))
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, timeout=10)
        assert code == 12 and "interrupted by SIGTERM" in err, err
        assert dump(victim) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_app_gets_default_signal_handlers_after_exec(victim):
    probe = (
        "import signal; print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "
        "signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None))"
    )
    proc = guard(
        "run", "--db", victim, "--migrations", MIGRATIONS, "--", sys.executable, "-c", probe
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split() == ["True", "True"]


def test_fault_points_cost_nothing_when_unset_and_count_down_when_armed(monkeypatch):
    monkeypatch.delenv(faults.VARIABLE, raising=False)
    faults.point("statement")  # unset: returns
    monkeypatch.setenv(faults.VARIABLE, "before-commit,statement@3")
    faults.point("statement")
    faults.point("statement")
    assert os.environ[faults.VARIABLE] == "before-commit,statement@1"
    faults.point("after-commit")  # not armed
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from preflight.core import faults; faults.point('statement')",
            str(REPO),
        ],
        env={"PREFLIGHT_FAULT": "statement"},
    ).returncode
    assert code == -signal.SIGKILL


@pytest.mark.parametrize("state", ["v0.3.0", "v0.4.0", "rc1-crashed", "v0.9.5-wal"])
@pytest.mark.parametrize(
    "fault, expect", [("statement", "old"), ("before-commit", "old"), ("after-commit", "new")]
)
def test_every_released_state_is_old_or_new_after_a_kill(
    cli, make_db, tmp_path, state, fault, expect
):
    """Adoption rows and every pending migration commit together, from any release, in
    rollback-journal and in WAL mode (where recovery replays or drops the -wal)."""
    db = make_db(state.removesuffix("-wal"))
    if state.endswith("-wal"):
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    old = dump(db)
    clean = load_fixture(state.removesuffix("-wal"), tmp_path / "clean.db")
    assert (
        cli(
            "migrate",
            "--db",
            clean,
            "--migrations",
            MIGRATIONS,
            "--backup-dir",
            tmp_path / "clean-backups",
        ).code
        == 0
    )
    new = dump(clean)
    code, err = finish(
        guard("migrate", "--db", db, "--migrations", MIGRATIONS, env={"PREFLIGHT_FAULT": fault})
    )
    assert code == -signal.SIGKILL, err
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert dump(db) == (old if expect == "old" else new)
    history = rows(db, "SELECT count(*) FROM sqlite_master WHERE name='_preflight_history'")
    assert history == [(0 if expect == "old" else 1,)]
    assert_backups_whole(db)
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0").code == 0
    assert dump(db) == new


@pytest.mark.parametrize("fault", ["statement@3", "before-commit", "after-commit"])
def test_a_fresh_install_killed_while_building_is_empty_or_complete(cli, make_db, fault):
    db = make_db("fresh")
    code, err = finish(
        guard("migrate", "--db", db, "--migrations", MIGRATIONS, env={"PREFLIGHT_FAULT": fault})
    )
    assert code == -signal.SIGKILL, err
    left = sorted(p.name for p in db.parent.iterdir())
    # Inspected on a copy: opening the original would roll its hot journal back before
    # the guard sees it.
    side = db.parent.parent / "inspect"
    side.mkdir()
    for name in left:
        if name.startswith("app.db") and (db.parent / name).is_file():
            shutil.copy(db.parent / name, side / name)
    tables = (
        rows(
            side / "app.db",
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'",
        )
        if db.exists()
        else []
    )
    # Built whole or not at all (a file SQLite left behind holds nothing yet).
    assert tables == [] or fault == "after-commit", left
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS, "--lock-timeout", "0").code == 0
    assert rows(db, "SELECT count(*) FROM _preflight_history") == [(5,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("fault", ["backup-temp-written", "backup-before-rename"])
def test_a_killed_manual_backup_is_never_listed_and_the_next_one_cleans_up(cli, victim, fault):
    code, err = finish(guard("backup", "--db", victim, env={"PREFLIGHT_FAULT": fault}))
    assert code == -signal.SIGKILL, err
    backups = victim.parent / "backups"
    assert assert_backups_whole(victim) == [] and any(backups.iterdir())  # only a hidden temp
    assert cli("restore", "--db", victim).code == 2  # "no backups": the temp is not one
    assert cli("backup", "--db", victim, "--lock-timeout", "0").code == 0
    (taken,) = backups.glob("*.db")
    assert sorted(backups.iterdir()) == [taken, catalog.record_path(taken)]  # orphans cleaned
    assert assert_backups_whole(victim) == [taken]


def test_every_fault_point_is_placed_in_the_code_and_documented():
    code = "".join(
        p.read_text() for p in (REPO / "preflight").rglob("*.py") if p.name != "faults.py"
    )
    readme = (REPO / "README.md").read_text()
    for name in faults.POINTS:
        assert f'faults.point("{name}")' in code, name
        assert f"`{name}`" in readme, name
