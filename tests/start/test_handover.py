"""A quick start that hands over hands on what it proved: the held lock, the files'
hashes, a passed quick_check; the full pipeline does none of it twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, clean_env, folder_state, rows

from preflight import cli
from preflight.fast import facts, quickstart
from preflight.sources import migrations


class Exec(Exception):
    pass


@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_exec(file: str, args: list[str]) -> None:
        raise Exec(args)

    monkeypatch.setattr(os, "execvp", fake_exec)


def _lock_free(lock: Path) -> bool:
    """Whether another process could take the lock now (a real second process)."""
    probe = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError: sys.exit(1)"
    )
    return subprocess.run([sys.executable, "-c", probe, str(lock)], check=False).returncode == 0


def _args(db: Path, folder: Path, *extra: str) -> list[str]:
    return ["run", "--db", str(db), "--migrations", str(folder), *extra, "--", "true"]


def test_a_hand_over_passes_on_the_held_lock_and_the_pipeline_releases_it(
    cli_run, make_db, make_migrations, no_exec
):
    db = make_db("fresh")
    folder = make_migrations({}, base=True)
    assert cli_run("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    (folder / "006_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    proof = quickstart.start(_args(db, folder), {}, hand_on=True)
    assert proof is not None
    lock = db.with_name(db.name + ".preflight.lock")
    assert not _lock_free(lock)  # held from the quick start on, never let go in between
    with pytest.raises(Exec):
        cli.main(_args(db, folder), proof)
    assert proof.take_lock() == -1  # the pipeline took it (and closed it)
    assert _lock_free(lock)
    assert lock.read_bytes() == b""  # the holder's note is gone too
    assert rows(db, "SELECT name FROM sqlite_master WHERE name = 'more'") == [("more",)]


def test_without_hand_on_nothing_is_held(cli_run, make_db, make_migrations):
    db = make_db("fresh")
    folder = make_migrations({}, base=True)
    assert cli_run("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    (folder / "006_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    assert quickstart.start(_args(db, folder), {}) is None
    assert _lock_free(db.with_name(db.name + ".preflight.lock"))


def test_a_proof_for_another_database_is_not_used(cli_run, make_db, make_migrations, no_exec):
    db = make_db("fresh")
    other = db.with_name("other.db")
    folder = make_migrations({}, base=True)
    assert cli_run("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    (folder / "006_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    proof = quickstart.start(_args(db, folder), {}, hand_on=True)
    assert proof is not None and proof.db == str(db)
    with pytest.raises(Exec):
        cli.main(_args(other, folder), proof)
    assert not _lock_free(db.with_name(db.name + ".preflight.lock"))  # still the caller's
    proof.release()
    assert _lock_free(db.with_name(db.name + ".preflight.lock"))


def test_the_pipeline_reuses_a_hash_only_for_an_unchanged_file(make_migrations):
    folder = make_migrations({"001_a.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);\n"})
    seen: dict[str, tuple[tuple[int, ...], str]] = {}
    found = facts.files(str(folder), seen)
    path = str(folder / "001_a.sql")
    assert seen[path][1] == found[0][2]
    # Reused as handed on (a marked hash shows it was not recomputed)...
    marked = {path: (seen[path][0], "f" * 64)}
    assert migrations.discover(folder, known=marked)[0].sha256 == "f" * 64
    # ...and never for a file changed since: same size, new bytes.
    (folder / "001_a.sql").write_text("CREATE TABLE b (id INTEGER PRIMARY KEY);\n")
    fresh = migrations.discover(folder, known=marked)[0]
    assert fresh.sha256 == facts.sha256_of(path)[0] != "f" * 64


def test_a_quick_check_passed_under_the_lock_is_not_run_again(
    cli_run, make_db, make_migrations, no_exec
):
    db = make_db("fresh")
    folder = make_migrations({}, base=True)
    assert cli_run("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    (folder / "006_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    proof = quickstart.start(_args(db, folder, "--integrity", "every-start"), {}, hand_on=True)
    assert proof is not None and proof.checked
    err = _run(db, folder, proof)
    assert "quick_check ok (by the quick start" in err.split("inspect:")[1].splitlines()[0]
    assert "integrity:" not in err  # no separate check before writing either


def test_a_quick_check_not_run_by_the_quick_start_is_run_by_the_pipeline(
    cli_run, make_db, make_migrations, no_exec
):
    db = make_db("fresh")
    folder = make_migrations({}, base=True)
    assert cli_run("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    (folder / "006_more.sql").write_text("CREATE TABLE more (id INTEGER PRIMARY KEY);\n")
    # No full check recorded (else one within the interval would vouch for this write).
    cached = db.parent / f"{db.name}.preflight-cache.json"
    cached.write_text(json.dumps(dict(json.loads(cached.read_text()), checked_at=0)))
    proof = quickstart.start(_args(db, folder, "--integrity", "24h"), {}, hand_on=True)
    assert proof is not None and not proof.checked
    err = _run(db, folder, proof, "--integrity", "24h")
    inspected = err.split("inspect:")[1].splitlines()[0]
    assert "header and size ok" in inspected and "quick start" not in inspected
    # The start writes, so its backup checks the very state it copies: that is the check.
    backed_up = err.split("backup: copied")[1].splitlines()[0]
    assert "quick_check ok, every block compared" in backed_up and "integrity:" not in err


def test_a_corrupt_database_handed_over_is_refused_unchanged(cli_run, make_db, no_exec):
    db = make_db("fresh")
    assert cli_run("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    with open(db, "r+b") as f:
        f.seek(4096 + 8)
        f.write(b"\xff" * 64)
    state = folder_state(db.parent)
    proof = quickstart.start(_args(db, MIGRATIONS, "--integrity", "every-start"), {}, True)
    assert proof is not None and not proof.checked
    assert cli.main(_args(db, MIGRATIONS, "--integrity", "every-start"), proof) == 6
    proof.release()
    after = folder_state(db.parent)
    after.pop("app.db.preflight.running", None)
    state.pop("app.db.preflight.running", None)
    assert after == state


def _run(db: Path, folder: Path, proof: facts.Proof, *extra: str) -> str:
    import io
    from contextlib import redirect_stderr

    buffer = io.StringIO()
    with redirect_stderr(buffer), pytest.raises(Exec):
        cli.main(_args(db, folder, *extra), proof)
    return buffer.getvalue()


@pytest.fixture
def cli_run(cli):
    return cli


def test_python_m_preflight_runs_the_entry_function(make_db):
    db = make_db("fresh")
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
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
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "migrate" in done.stderr or "applied" in done.stderr
