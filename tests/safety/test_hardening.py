"""Hardening: the lock, files the guard creates, logs, read-only commands, smoke commands,
temp folders. Each test builds the situation for real: a second process, a planted
symlink, a background child, an unusable TMPDIR.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    MIGRATIONS,
    REPO,
    clean_env,
    folder_state,
    hold_lock,
    load_fixture,
    sha,
    spawn,
    wait_until_blocked_on_lock,
)

from preflight.storage import lock


def at_head(cli, db: Path) -> Path:
    load_fixture("v0.9.5", db)
    result = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    return db


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


# ----------------------------------------------------------------------- the lock (issue 9.7)


def test_a_free_lock_is_taken_without_a_waiting_line(cli, data_dir):
    db = at_head(cli, data_dir / "app.db")
    done = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert done.returncode == 0, done.stderr
    assert "waiting for the lock" not in done.stderr


# ------------------------------------------------------- the lock file replaced (issue 10.3)

WAITER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from preflight.storage import lock
from preflight.core.errors import LockTimeout
try:
    with lock.hold(Path(sys.argv[2]), 3, "waiter"):
        print("held", flush=True)
except LockTimeout as exc:
    print(exc.message, flush=True)
"""


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_lock_file_deleted_or_replaced_while_held_never_gives_two_holders(tmp_path, how):
    path = tmp_path / "app.db.preflight.lock"
    first = hold_lock(path)
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAITER, str(REPO), str(path)], stdout=subprocess.PIPE, text=True
    )
    third = None
    try:
        wait_until_blocked_on_lock(waiter.pid, path)  # the waiter has the old file open
        if how == "deleted":
            path.unlink()
        else:
            (tmp_path / "new").write_text("")
            os.replace(tmp_path / "new", path)
        third = hold_lock(path)  # a later guard takes the file now at that name
        stop(first)  # the old file's lock is free: the waiter gets it, on a file nobody uses
        out, _ = waiter.communicate(timeout=30)
        assert out.strip() != "held"
        assert f"is held by pid {third.pid} " in out
    finally:
        stop(waiter)
        stop(first)
        if third is not None:
            stop(third)


# ------------------------------------------------------------ planted symlinks (issue 10.7)


@pytest.mark.parametrize("command", ["migrate", "run-quick-start"])
def test_a_symlink_at_the_lock_file_is_refused_and_followed_nowhere(cli, data_dir, command):
    db = at_head(cli, data_dir / "app.db")
    lock_path = Path(f"{db}.preflight.lock")
    lock_path.unlink()
    lock_path.symlink_to(db)  # a neighbour points the lock at the database
    before = folder_state(data_dir, strict=True)
    args = (
        ["run", "--db", db, "--migrations", MIGRATIONS, "--", "true"]
        if command.startswith("run")
        else ["migrate", "--db", db, "--migrations", MIGRATIONS]
    )
    done = spawn(*args)
    assert done.returncode == 7, done.stderr
    assert f"lock file {lock_path} is a symbolic link" in done.stderr
    assert folder_state(data_dir, strict=True) == before
    assert lock_path.is_symlink()


def test_a_dangling_symlink_at_the_lock_file_creates_nothing(cli, data_dir, tmp_path):
    db = at_head(cli, data_dir / "app.db")
    lock_path = Path(f"{db}.preflight.lock")
    lock_path.unlink()
    outside = tmp_path / "outside" / "planted"
    outside.parent.mkdir()
    lock_path.symlink_to(outside)
    done = spawn("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert done.returncode == 7, done.stderr
    assert not outside.exists()


@pytest.mark.parametrize("kind", ["hard link to the database", "fifo"])
def test_a_lock_file_that_is_not_a_plain_file_of_ours_is_refused(cli, data_dir, kind):
    db = at_head(cli, data_dir / "app.db")
    lock_path = Path(f"{db}.preflight.lock")
    lock_path.unlink()
    if kind == "fifo":
        os.mkfifo(lock_path)
    else:
        os.link(db, lock_path)
    before = sha(db)
    for args in (["migrate"], ["run", "--lock-timeout", "0", "--", "true"]):
        done = spawn(*args[:1], "--db", db, "--migrations", MIGRATIONS, *args[1:], timeout=30)
        assert done.returncode == 7, done.stderr
        assert f"lock file {lock_path} " in done.stderr and "refusing" in done.stderr
        assert sha(db) == before


@pytest.mark.parametrize(
    "name", [".app.db.preflight-cache.json.tmp", "app.db.preflight-cache.json"]
)
@pytest.mark.parametrize("target", ["database", "outside"])
def test_a_symlink_at_the_cache_or_its_temp_name_is_replaced_not_followed(
    cli, data_dir, tmp_path, name, target
):
    db = at_head(cli, data_dir / "app.db")
    cache = Path(f"{db}.preflight-cache.json")
    cache.unlink()  # the next start verifies in full and writes it again
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's file\n")
    pointed = db if target == "database" else outside
    (data_dir / name).unlink(missing_ok=True)
    (data_dir / name).symlink_to(pointed)
    db_before, outside_before = sha(db), sha(outside)
    done = spawn("run", "--db", db, "--migrations", MIGRATIONS, "--", "true")
    assert done.returncode == 0, done.stderr
    assert sha(db) == db_before and sha(outside) == outside_before
    assert not cache.is_symlink() and cache.read_bytes().startswith(b"{")
    assert not (data_dir / ".app.db.preflight-cache.json.tmp").exists()


def test_a_symlink_at_the_failure_records_temp_name_is_not_followed(
    cli, data_dir, tmp_path, make_migrations
):
    db = at_head(cli, data_dir / "app.db")
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's file\n")
    Path(data_dir / ".app.db.preflight-failure.json.tmp").symlink_to(outside)
    more = make_migrations({"006_more.sql": "CREATE TABLE t (x);\n"}, base=True)
    done = spawn("migrate", "--db", db, "--migrations", more, "--smoke", "false")
    assert done.returncode == 9, done.stderr
    assert outside.read_text() == "someone else's file\n"
    record = Path(f"{db}.preflight-failure.json")
    assert not record.is_symlink() and b"smoke command exited 1" in record.read_bytes()


def test_create_exclusive_refuses_anything_already_there(tmp_path):
    from preflight.core.files import create_exclusive, create_fresh

    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        create_exclusive(link)
    fd = create_fresh(link)  # removes the link, never its target
    os.write(fd, b"new")
    os.close(fd)
    assert target.read_text() == "keep" and link.read_bytes() == b"new"
    assert not link.is_symlink() and (link.stat().st_mode & 0o777) == 0o600


# ----------------------------------------------------------- log lines (issue 10.9, 10.14)


def test_a_table_name_with_a_newline_cannot_forge_a_log_line(cli, data_dir):
    db = at_head(cli, data_dir / "app.db")
    conn = sqlite3.connect(db)
    conn.execute('CREATE TABLE "x\npreflight: exec: evil" (a)')  # an extra table: a warning
    conn.close()
    for args in (["check"], ["migrate"]):
        done = spawn(*args, "--db", db, "--migrations", MIGRATIONS)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert not any(l.startswith("preflight: exec:") for l in lines), done.stderr
        assert any("x\\npreflight: exec: evil" in l for l in lines), done.stderr
        assert all(l.startswith("preflight: ") for l in lines)


def test_escape_keeps_printable_text_and_escapes_every_control_character():
    from preflight.cli import escape

    assert escape("naïve Äpfel 'x' \\n") == "naïve Äpfel 'x' \\n"
    assert escape("a\nb\rc\x1b[31md\te\u2028f\x00") == "a\\nb\\rc\\x1b[31md\\te\\u2028f\\x00"


BUG = """
import sys
sys.path.insert(0, sys.argv[1])
from preflight import cli
from preflight.commands import operations
def assess(*args, **kwargs):  # a bug in the guard: an exception it does not expect
    return {}["no such key"]
operations.assess = assess
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_level_debug_prints_the_traceback_of_an_internal_error(data_dir, fmt):
    args = [
        sys.executable,
        "-c",
        BUG,
        str(REPO),
        "status",
        "--db",
        str(data_dir / "app.db"),
        "--migrations",
        str(MIGRATIONS),
        "--log-format",
        fmt,
    ]
    quiet = subprocess.run(args, capture_output=True, text=True)
    assert quiet.returncode == 1 and "internal error: KeyError" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    loud = subprocess.run(args + ["--log-level", "debug"], capture_output=True, text=True)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr, loud.stderr
    assert "in assess" in loud.stderr
    if fmt == "text":
        assert all(l.startswith("preflight: ") for l in loud.stderr.splitlines())


# ------------------------------------------------------------- smoke commands (issue 10.11)


def test_a_smoke_command_that_leaves_a_background_child_does_not_hang_the_guard(
    cli, data_dir, make_migrations, tmp_path
):
    db = at_head(cli, data_dir / "app.db")
    more = make_migrations({"006_more.sql": "CREATE TABLE t (x);\n"}, base=True)
    pidfile = tmp_path / "child.pid"
    # The child keeps the output open for 60 s; the guard must not wait for it.
    done = spawn(
        "migrate",
        "--db",
        db,
        "--migrations",
        more,
        "--smoke",
        f"sleep 60 & echo $! > {pidfile}; echo ok",
        timeout=40,
    )
    assert done.returncode == 0, done.stderr
    assert "smoke ok" in done.stderr
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed with its process group, not left behind
        for _ in range(100):
            os.kill(child, 0)
            time.sleep(0.05)
    with lock.hold(Path(f"{db}.preflight.lock"), 0, "after"):  # released
        pass


def test_a_smoke_command_that_runs_too_long_is_killed_exit_9_and_undone(
    cli, data_dir, make_migrations, tmp_path
):
    db = at_head(cli, data_dir / "app.db")
    before = sha(db)
    more = make_migrations({"006_more.sql": "CREATE TABLE t (x);\n"}, base=True)
    done = spawn(
        "migrate",
        "--db",
        db,
        "--migrations",
        more,
        "--smoke",
        "echo starting; sleep 60",
        "--smoke-timeout",
        "1",
        timeout=40,
    )
    assert done.returncode == 9, done.stderr
    assert (
        "smoke command did not finish within 1 s (PREFLIGHT_SMOKE_TIMEOUT), killed: "
        "starting" in done.stderr
    )
    assert sha(db) == before  # restored from the verified backup
    bad = spawn(
        "migrate", "--db", db, "--migrations", more, env={"PREFLIGHT_SMOKE_TIMEOUT": "soon"}
    )
    assert bad.returncode == 2 and "PREFLIGHT_SMOKE_TIMEOUT='soon' is not valid" in bad.stderr


# ----------------------------------------------- when .py migrations run (issue 10.10)

PY_MIGRATION = """import os


def migrate(conn):
    with open(os.environ["MARKER"], "a") as f:
        f.write("ran\\n")
    conn.execute("CREATE TABLE py_made (x)")
"""


def test_status_never_runs_python_migrations_and_says_what_it_did_not_check(
    data_dir, make_migrations, tmp_path
):
    import json

    folder = make_migrations(
        {
            "001_a.sql": "CREATE TABLE a (x);\n",
            "002_b.py": PY_MIGRATION,
            "003_c.sql": "CREATE TABLE c (x);\n",
        }
    )
    db = data_dir / "app.db"
    marker = tmp_path / "marker"

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return spawn(*args, "--db", db, "--migrations", folder, env={"MARKER": str(marker)})

    assert run("migrate").returncode == 0 and marker.exists()  # a real migration runs it
    cache = Path(f"{db}.preflight-cache.json")
    cache.unlink()
    marker.unlink()
    state = folder_state(data_dir, strict=True)
    done = run("status", "--json")
    assert done.returncode == 0, done.stderr
    assert not marker.exists()  # 002_b.py's code did not run
    report = json.loads(done.stdout)
    assert report["drift"] == (
        "not checked: 002_b.py is Python code; run `preflight check` to rehearse it"
    )
    assert [a["name"] for a in report["applied"]] == ["001_a.sql", "002_b.py", "003_c.sql"]
    assert report["pending"] == [] and report["failure_record"] is None
    assert folder_state(data_dir, strict=True) == state

    # An untracked database: adoption would replay 002_b.py, so status does not adopt.
    conn = sqlite3.connect(data_dir / "untracked.db")
    conn.executescript("CREATE TABLE a (x); CREATE TABLE py_made (x);")
    conn.close()
    other = spawn(
        "status",
        "--db",
        data_dir / "untracked.db",
        "--migrations",
        folder,
        "--json",
        env={"MARKER": str(marker)},
    )
    assert other.returncode == 3 and not marker.exists(), other.stderr
    assert json.loads(other.stdout)["adopt"] is None
    assert "unknown (drift not checked) to adopt" in other.stderr

    # check rehearses on a private copy, and so runs it (documented).
    assert run("check").returncode == 0 and marker.exists()
    marker.unlink()
    # A no-op start without a cache must prove there is no drift: the replay runs it.
    assert run("migrate").returncode == 0 and marker.exists() and cache.exists()
    marker.unlink()
    # With the cache vouching for the schema, status checks drift without any replay.
    done = run("status", "--json")
    assert done.returncode == 0 and not marker.exists()
    assert json.loads(done.stdout)["drift"] == "none"


def test_status_with_only_sql_migrations_still_checks_drift(cli, data_dir, make_migrations):
    folder = make_migrations(
        {
            "001_a.sql": "CREATE TABLE a (x, y);\n",
            "002_b.sql": "CREATE TABLE b (x);\n",
            "003_c.py": "def migrate(conn):\n    conn.execute('CREATE TABLE c (x)')\n",
        }
    )
    db = data_dir / "app.db"
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    Path(f"{db}.preflight-cache.json").unlink()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE b")  # drift in what the .sql migrations made
    conn.close()
    # 003_c.py is applied: the replay would need it
    done = cli("status", "--db", db, "--migrations", folder)
    assert done.code == 0 and "drift: not checked: 003_c.py" in done.err
    # With 003 pending instead, only .sql is replayed: drift is found.
    folder2 = make_migrations(
        {"001_a.sql": "CREATE TABLE a (x, y);\n", "002_b.sql": "CREATE TABLE b (x);\n"}
    )
    db2 = data_dir / "two.db"
    assert cli("migrate", "--db", db2, "--migrations", folder2).code == 0
    conn = sqlite3.connect(db2)
    conn.execute("DROP TABLE b")
    conn.close()
    (folder2 / "003_c.py").write_text("def migrate(conn):\n    raise SystemExit('ran')\n")
    done = cli("status", "--db", db2, "--migrations", folder2)
    assert done.code == 4 and "table b" in done.err, done


# ------------------------------------------------- no usable temp folder (issue 10.13)


def no_temp_folder(data: Path, *args: object, shm: bool) -> subprocess.CompletedProcess[str]:
    """`python -m preflight ARGS` where TMPDIR, /tmp, /var/tmp and the working folder are
    read-only (a read-only root without a tmpfs), and /dev/shm too unless `shm`. Only
    `data` stays writable. A private mount namespace: nothing changes for anyone else."""
    ro = "mount --bind {0} {0} && mount -o remount,bind,ro {0}"
    script = " && ".join(
        [ro.format("/tmp"), ro.format("/var/tmp")]
        + ([] if shm else [ro.format("/dev/shm")])
        + [
            f"mount --bind {data} {data}",
            f"mount -o remount,bind,rw {data}",
            'cd /tmp && exec "$@"',
        ]
    )
    env = clean_env()
    env.update(PYTHONPATH=str(REPO), TMPDIR="/tmp", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            sys.executable,
            "-m",
            "preflight",
            *map(str, args),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode,
    reason="needs root and mount namespaces",
)


@needs_namespaces
def test_status_and_check_without_a_usable_temp_folder(cli, data_dir, make_migrations):
    db = at_head(cli, data_dir / "app.db")
    more = make_migrations({"006_more.sql": "CREATE TABLE t (x);\n"}, base=True)
    state = folder_state(data_dir, strict=True)
    for command, code in (("status", 3), ("check", 3)):
        # /dev/shm, which containers have even with a read-only root: they work.
        done = no_temp_folder(data_dir, command, "--db", db, "--migrations", more, shm=True)
        assert done.returncode == code, (command, done.stderr)
        # Nothing writable anywhere but beside the database, which they must not write.
        done = no_temp_folder(data_dir, command, "--db", db, "--migrations", more, shm=False)
        assert done.returncode == 7, (command, done.stderr)
        assert "no usable temporary folder for a private copy (TMPDIR=/tmp: " in done.stderr
        assert "set TMPDIR to a writable folder" in done.stderr
        assert folder_state(data_dir, strict=True) == state


@needs_namespaces
def test_migrate_with_a_hot_journal_and_no_temp_folder_rolls_it_back_and_succeeds(cli, data_dir):
    from test_hostile import die_mid_write

    db = load_fixture("v0.9.5", data_dir / "app.db")
    die_mid_write(db)
    assert Path(f"{db}-journal").stat().st_size > 0
    done = no_temp_folder(data_dir, "migrate", "--db", db, "--migrations", MIGRATIONS, shm=False)
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM notes").fetchone() == (12,)  # rolled back
    conn.close()
    assert not list(data_dir.glob("preflight-journal-*"))  # its rehearsal folder is gone


needs_strace = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v strace"], capture_output=True).returncode != 0,
    reason="needs strace (system-call fault injection)",
)


@needs_strace
def test_an_io_error_removing_temp_files_after_a_verified_backup_is_not_a_failure(cli, data_dir):
    db = at_head(cli, data_dir / "app.db")
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    # Every unlink fails with EIO, for real, in the kernel's answer to the system call.
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=unlink,unlinkat",
            "-e",
            "inject=unlink,unlinkat:error=EIO",
            sys.executable,
            "-m",
            "preflight",
            "backup",
            "--db",
            str(db),
            "--migrations",
            str(MIGRATIONS),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    taken = [p for p in (data_dir / "backups").glob("app-*-manual.db")]
    assert len(taken) == 1
    conn = sqlite3.connect(f"file:{taken[0]}?mode=ro", uri=True)
    assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    conn.close()


def test_a_journal_that_comes_and_goes_is_no_error(cli, data_dir):
    """An app writing in rollback mode creates and deletes its -journal all the time."""
    db = at_head(cli, data_dir / "app.db")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
                "c.execute('CREATE TABLE IF NOT EXISTS churn (x)')\n"
                "print('ready', flush=True)\n"
                "while True:\n"
                "    c.execute('INSERT INTO churn VALUES (1)')\n"
            ),
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        from preflight.fast.facts import check_environment

        for _ in range(3000):  # the -journal exists for part of each commit
            check_environment(db, None, writes=True)
            check_environment(db, data_dir / "backups", writes=False)
        for _ in range(20):
            done = cli("status", "--db", db, "--migrations", MIGRATIONS)
            assert done.code == 0, done
    finally:
        stop(writer)


def test_a_tool_report_of_megabytes_on_one_line_is_read_whole():
    """Django's report for a large app (healthchecks: 1.9 MB on one line) is read whole; a
    smoke command's output is only its tail."""
    from preflight.core import proc

    done = proc.run([sys.executable, "-c", "print('start' + 'x' * 3_000_000 + 'end')"])
    assert done.code == 0 and done.out.startswith("start") and done.out.rstrip().endswith("end")
    tail = proc.run([sys.executable, "-c", "print('start' + 'x' * 10_000)"], limit=4096)
    assert len(tail.out) == 4096 and not tail.out.startswith("start")
