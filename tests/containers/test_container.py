"""End to end in real containers: the image, its volume, gunicorn as PID 1, a real engine.

Each test has volumes of its own. The app image is built once per session (from the base
image scripts/docker-ready provides); CI runs these for real, and a failure to get an
engine is a test error, never a skip. Deselect locally with `-m "not docker"`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, dump, load_fixture, spawn
from dockerkit import (
    APP_UID,
    FAST_HEALTH,
    LABEL,
    Docker,
    Volume,
    build,
    build_derived,
    engine,
    http_get,
    logs,
    wait_exit,
    wait_healthy,
)

pytestmark = pytest.mark.docker

# Passes the guard's rehearsal on an empty schema, fails on real rows: only the live run
# can find that out, so the guard must undo and leave a failure record.
FAILING = {
    "006_one_note_per_slug_prefix.sql": (
        "ALTER TABLE notes ADD COLUMN prefix TEXT;\n"
        "UPDATE notes SET prefix = 'note';\n"
        "CREATE UNIQUE INDEX idx_notes_prefix ON notes(prefix);\n"
    )
}

# A release after the image's: a new table and a column, with the down step that an older
# image runs to roll back while keeping the rows written since (PREFLIGHT_DOWNGRADE=apply).
TAGS = {
    "006_note_tags.sql": (
        "-- migrate:up\n"
        "CREATE TABLE note_tags (id INTEGER PRIMARY KEY,"
        " note_id INTEGER NOT NULL REFERENCES notes (id), tag TEXT NOT NULL);\n"
        "ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;\n\n"
        "-- migrate:down\n"
        "ALTER TABLE notes DROP COLUMN pinned;\n"
        "DROP TABLE note_tags;\n"
    )
}

# A migration that takes long enough for `docker stop` to arrive while it runs.
SLOW = {
    "006_add_note_mood_slowly.py": (
        "import sys, time\n\n\n"
        "def migrate(conn):\n"
        "    conn.execute('ALTER TABLE notes ADD COLUMN mood TEXT')\n"
        "    print('006: working', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
    )
}


@pytest.fixture(scope="session")
def docker_engine() -> tuple:
    return engine()


@pytest.fixture(scope="session")
def app_image(docker_engine: tuple) -> str:
    client, base = docker_engine
    return build(client, base, "preflight-app:test")


@pytest.fixture(scope="session")
def failing_image(docker_engine: tuple, app_image: str) -> str:
    return build_derived(docker_engine[0], app_image, "preflight-app:test-failing", FAILING)


@pytest.fixture(scope="session")
def slow_image(docker_engine: tuple, app_image: str) -> str:
    return build_derived(docker_engine[0], app_image, "preflight-app:test-slow", SLOW)


@pytest.fixture(scope="session")
def tags_image(docker_engine: tuple, app_image: str) -> str:
    return build_derived(docker_engine[0], app_image, "preflight-app:test-tags", TAGS)


@pytest.fixture
def dk(docker_engine: tuple, app_image: str) -> Iterator[Docker]:
    kit = Docker(docker_engine[0], app_image)
    yield kit
    kit.cleanup()


@pytest.fixture
def seed(tmp_path: Path) -> Callable[[str], Path]:
    """seed('v0.9.5') / seed('head') -> a database file on this host, to copy into a volume."""

    def make(state: str) -> Path:
        db = tmp_path / f"{state}-{uuid.uuid4().hex[:6]}.db"
        if state == "head":
            done = spawn("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup", "never")
            assert done.returncode == 0, done.stderr
        else:
            load_fixture(state, db)
        return db

    return make


def counts(volume: Volume) -> tuple[int, int, int]:
    return tuple(
        volume.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("notes", "sessions", "tokens")
    )


# 1. fresh volume ---------------------------------------------------------------------------


def test_fresh_volume_becomes_healthy_at_head_with_the_images_own_healthcheck(dk: Docker) -> None:
    volume = dk.volume()
    c = dk.start(volume, health=None)  # the Dockerfile's HEALTHCHECK, as shipped
    wait_healthy(c, timeout=60)
    status, body = http_get(c, "/health")
    assert status == 200
    assert json.loads(body) == {
        "status": "ok",
        "database": "/data/app.db",
        "version": 5,
        "migration": "005_retire_starpunk_schema_migrations.sql",
    }
    status, page = http_get(c, "/")
    assert status == 200 and b"0 published" in page
    assert "plan: 5 pending" in logs(c) and "exec: gunicorn" in logs(c)
    assert [r[0] for r in volume.query("SELECT version FROM _preflight_history")] == [1, 2, 3, 4, 5]
    # An operator's check on the live volume, beside the running app: at head, nothing changed.
    before = volume.state()
    code, out, err = dk.oneshot(volume, "check", "--json")
    assert code == 0 and json.loads(out)["pending"] == [], err
    assert volume.state() == before
    assert http_get(c, "/health")[0] == 200
    # A restart on a database at head is the quick start: proven from the verified-state
    # cache with a handful of imports, then gunicorn again.
    c.restart(timeout=10)
    wait_healthy(c, timeout=60)
    assert "schema as verified before (cache)" in logs(c)
    assert http_get(c, "/health")[0] == 200


# 2. an existing v0.9.5 install ------------------------------------------------------------


def test_v095_volume_is_upgraded_with_every_row_kept_and_a_backup(dk: Docker, seed) -> None:
    source = seed("v0.9.5")
    volume = dk.volume(seed=source)
    before = counts(volume)
    published = volume.query(
        "SELECT count(*) FROM notes WHERE published = 1 AND deleted_at IS NULL"
    )
    c = dk.start(volume)
    wait_healthy(c)
    assert json.loads(http_get(c, "/health")[1])["version"] == 5
    status, page = http_get(c, "/")
    assert status == 200 and f"{published[0][0]} published".encode() in page
    c.stop(timeout=10)
    assert counts(volume) == before
    assert volume.query("SELECT count(*) FROM tokens WHERE token_hash IS NULL") == [(0,)]
    backups = sorted((volume.path / "backups").glob("app-*-pre-migrate.db"))
    assert len(backups) == 1
    assert dump(backups[0]) == dump(source)
    assert backups[0].stat().st_uid == APP_UID and backups[0].stat().st_mode & 0o777 == 0o600


# 3. drift ---------------------------------------------------------------------------------


def test_drifted_volume_exits_4_without_gunicorn_and_the_database_is_byte_identical(
    dk: Docker, seed
) -> None:
    volume = dk.volume(seed=seed("rc3-partial"))
    before = volume.db.read_bytes()
    c = dk.start(volume)
    assert wait_exit(c) == 4
    text = logs(c)
    assert "tokens.token_hash" in text
    assert "gunicorn" not in text.replace("exec: gunicorn", "")
    assert "exec:" not in text and "Booting worker" not in text
    assert volume.db.read_bytes() == before
    assert not (volume.path / "backups").exists()


# 4. a failing migration -------------------------------------------------------------------


def test_failing_migration_exits_9_restores_and_the_next_start_exits_11(
    dk: Docker, seed, failing_image: str
) -> None:
    volume = dk.volume(seed=seed("v0.9.5"))
    before = volume.dump()
    c = dk.start(volume, image=failing_image)
    assert wait_exit(c) == 9
    text = logs(c)
    assert "006_one_note_per_slug_prefix.sql" in text and "UNIQUE constraint failed" in text
    assert "Booting worker" not in text
    assert volume.dump() == before
    assert volume.query("PRAGMA integrity_check") == [("ok",)]
    assert (volume.path / "app.db.preflight-failure.json").exists()
    state = volume.state()

    again = dk.start(volume, image=failing_image)
    assert wait_exit(again, timeout=15) == 11
    assert "the same migration set failed" in logs(again)
    assert "migrate: " not in logs(again)
    # check and status on the failed volume: 11 too, and nothing changes
    code, out, err = dk.oneshot(volume, "status", "--json", image=failing_image)
    record = json.loads(out)["failure_record"]
    assert code == 11 and record["migration"] == "006_one_note_per_slug_prefix.sql"
    assert record["restored"] is True and record["exit_code"] == 9
    assert dk.oneshot(volume, "check", image=failing_image)[0] == 11
    assert volume.state() == state


# 4b. an image rolled back, keeping what was written since the upgrade --------------------


def test_an_older_image_rolls_back_with_downgrade_apply_keeping_rows_written_since(
    dk: Docker, seed, tags_image: str
) -> None:
    volume = dk.volume(seed=seed("v0.9.5"))
    upgraded = dk.start(volume, image=tags_image)
    wait_healthy(upgraded)
    upgraded.stop(timeout=10)
    # What the app writes on the new release: a note (pinned) and a tag on it.
    conn = sqlite3.connect(volume.db)
    with conn:
        conn.execute(
            "INSERT INTO notes (slug, file_path, published, created_at, updated_at, pinned)"
            " VALUES ('since', 'since.md', 1, '2026-12-07', '2026-12-07', 1)"
        )
        conn.execute("INSERT INTO note_tags (note_id, tag) SELECT id, 'kept' FROM notes")
    conn.close()
    for item in volume.path.rglob("*"):
        os.chown(item, APP_UID, APP_UID)
    notes = volume.query("SELECT id, slug FROM notes ORDER BY id")
    state = volume.state()

    refused = dk.start(volume)  # the older image, without the operator's word
    assert wait_exit(refused) == 5
    assert "PREFLIGHT_DOWNGRADE=apply" in logs(refused) and "Booting worker" not in logs(refused)
    assert volume.state() == state

    rolled_back = dk.start(volume, environment={"PREFLIGHT_DOWNGRADE": "apply"})
    wait_healthy(rolled_back)
    assert json.loads(http_get(rolled_back, "/health")[1])["version"] == 5
    rolled_back.stop(timeout=10)
    assert volume.query("SELECT id, slug FROM notes ORDER BY id") == notes
    assert "pinned" not in {row[1] for row in volume.query("PRAGMA table_info(notes)")}
    assert volume.query("SELECT name FROM sqlite_master WHERE name = 'note_tags'") == []
    assert volume.query("PRAGMA integrity_check") == [("ok",)]
    assert len(sorted((volume.path / "backups").glob("app-*-pre-migrate.db"))) == 2

    again = dk.start(volume, image=tags_image)  # and forward again
    wait_healthy(again)
    again.stop(timeout=10)
    assert volume.query("SELECT id, slug FROM notes ORDER BY id") == notes
    assert volume.query("SELECT count(*) FROM note_tags") == [(0,)]


# 5. operators' one-shots on each kind of volume --------------------------------------------


@pytest.mark.parametrize(
    "state, code, pending, status_code",
    [
        ("fresh", 3, 5, 3),
        # Untracked StarPunk databases: which version to adopt (and any drift) is found by
        # replaying 002/004, which are .py; status runs no migration code, says so, exits 3.
        ("v0.9.5", 3, 2, 3),
        ("head", 0, 0, 0),
        ("rc3-partial", 4, None, 3),
    ],
)
def test_check_and_status_json_give_the_right_code_and_change_nothing(
    dk: Docker, seed, state: str, code: int, pending: int | None, status_code: int
) -> None:
    volume = dk.volume(seed=None if state == "fresh" else seed(state))
    before = volume.state()
    got, out, err = dk.oneshot(volume, "check")
    assert got == code, err
    if pending is not None and code == 3:
        assert f"{pending} migration(s) apply cleanly" in err
    got, out, err = dk.oneshot(volume, "status", "--json")
    assert got == status_code, err
    report = json.loads(out)
    assert report["command"] == "status" and report["database"] == "/data/app.db"
    if state in ("v0.9.5", "rc3-partial"):
        assert report["drift"].startswith("not checked: 002_") and report["adopt"] is None
    elif pending is not None:
        assert len(report["pending"]) == pending
    assert volume.state() == before
    assert not volume.db.exists() if state == "fresh" else volume.db.exists()


def test_every_subcommand_works_through_entrypoint_preflight(dk: Docker, seed) -> None:
    volume = dk.volume(seed=seed("head"))
    code, out, err = dk.oneshot(volume, "--version")
    assert code == 0 and out.startswith("preflight ")
    assert dk.oneshot(volume, "migrate")[0] == 0
    code, out, err = dk.oneshot(volume, "backup")
    assert code == 0 and "backup:" in err
    made = list((volume.path / "backups").glob("app-*-manual.db"))
    assert len(made) == 1
    code, out, err = dk.oneshot(volume, "restore", f"/data/backups/{made[0].name}")
    assert code == 0, err
    assert dk.oneshot(volume, "stamp", "5")[0] == 0
    assert dk.oneshot(volume, "clear-failure")[0] == 0
    assert volume.query("PRAGMA integrity_check") == [("ok",)]


# 6. docker stop --------------------------------------------------------------------------


def test_docker_stop_reaches_gunicorn_as_pid_1_and_exits_0(dk: Docker) -> None:
    c = dk.start(dk.volume())
    wait_healthy(c)
    # The guard exec'd gunicorn: PID 1 in the container is gunicorn itself, not a wrapper.
    pid1 = c.exec_run(["python3", "-c", "print(open('/proc/1/cmdline').read())"]).output
    assert b"/opt/venv/bin/gunicorn\x00--bind" in pid1, pid1
    start = time.monotonic()
    c.stop(timeout=20)
    # Had SIGTERM been ignored (a shell or the guard as PID 1), Docker would SIGKILL after
    # the 20 s grace period and the exit code would be 137.
    assert time.monotonic() - start < 20
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 0
    assert "Handling signal: term" in logs(c) and "Shutting down: Master" in logs(c)


def test_docker_stop_during_a_migration_rolls_back_and_exits_12(
    dk: Docker, seed, slow_image: str
) -> None:
    volume = dk.volume(seed=seed("v0.9.5"))
    before = volume.dump()
    c = dk.start(volume, image=slow_image)
    deadline = time.monotonic() + 60
    while "006: working" not in logs(c):
        assert time.monotonic() < deadline, logs(c)
        time.sleep(0.1)
    c.stop(timeout=20)  # SIGTERM to the guard, PID 1, in the middle of the transaction
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 12, logs(c)
    assert "Booting worker" not in logs(c)
    assert volume.dump() == before
    assert volume.query("PRAGMA integrity_check") == [("ok",)]
    assert not (volume.path / "app.db.preflight-failure.json").exists()
    # Interrupted is not failed: the next start (without the slow migration) just migrates.
    again = dk.start(volume)
    wait_healthy(again)
    assert volume.query("SELECT max(version) FROM _preflight_history") == [(5,)]


# 7. two replicas on one volume ------------------------------------------------------------


def test_two_containers_started_together_migrate_once_and_both_become_healthy(
    dk: Docker, seed
) -> None:
    volume = dk.volume(seed=seed("v0.9.5"))
    first, second = (
        dk.client.containers.create(
            dk.image,
            volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            healthcheck=FAST_HEALTH,
            labels={LABEL: "1"},
        )
        for _ in range(2)
    )
    dk.containers += [first, second]
    threads = [threading.Thread(target=c.start) for c in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_healthy(first)
    wait_healthy(second)
    applied = volume.query(
        "SELECT version, count(*) FROM _preflight_log WHERE event = 'applied' GROUP BY version"
    )
    assert applied == [(4, 1), (5, 1)]
    plans = [logs(c) for c in (first, second)]
    assert sorted("2 pending" in text for text in plans) == [False, True]
    assert sum("0 pending" in text for text in plans) == 1
    assert len(list((volume.path / "backups").glob("*.db"))) == 1


# 8. non-root ------------------------------------------------------------------------------


def test_runs_as_the_non_root_app_user(dk: Docker) -> None:
    c = dk.start(dk.volume())
    wait_healthy(c)
    status = c.exec_run(["python3", "-c", "print(open('/proc/1/status').read())"]).output.decode()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(APP_UID)] * 4
    c.reload()
    assert c.attrs["Config"]["User"] == "app"


def test_a_volume_the_user_cannot_write_exits_7_and_changes_nothing(dk: Docker, seed) -> None:
    volume = dk.volume(seed=seed("v0.9.5"), owner=0)  # an install made by a root container
    os.chmod(volume.path, 0o755)
    os.chmod(volume.db, 0o644)
    before = volume.state()
    c = dk.start(volume)
    assert wait_exit(c) == 7
    text = logs(c)
    assert "/data" in text and "not writable" in text, text
    assert "Booting worker" not in text
    assert volume.state() == before


# 9. read-only root filesystem ------------------------------------------------------------


def test_read_only_root_filesystem_with_tmpfs_tmp(dk: Docker, seed) -> None:
    volume = dk.volume(seed=seed("v0.9.5"))
    c = dk.start(volume, read_only=True, tmpfs={"/tmp": "rw,size=16m"})
    wait_healthy(c)
    assert http_get(c, "/health")[0] == 200
    assert http_get(c, "/")[0] == 200
    assert volume.query("SELECT max(version) FROM _preflight_history") == [(5,)]


BIG_INDEX = {
    # Sorting this many keys spills past SQLite's page cache into temp files.
    "006_index_every_note_path.sql": "CREATE INDEX idx_notes_path_slug ON notes(file_path, slug);\n"
}


@pytest.fixture(scope="session")
def big_index_image(docker_engine: tuple, app_image: str) -> str:
    return build_derived(docker_engine[0], app_image, "preflight-app:test-big-index", BIG_INDEX)


def test_read_only_root_filesystem_without_a_tmpfs_still_sorts_a_big_index(
    dk: Docker, seed, big_index_image: str
) -> None:
    """`docker run --read-only` and no tmpfs at /tmp: SQLite's temp files (the sorter of a
    CREATE INDEX on a big table) go to a private folder beside the database, not /tmp."""
    db = seed("head")
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO notes (slug, file_path, published) VALUES (?, ?, 1)",
            ((f"note-{i:07d}-{'x' * 60}", f"notes/{i:07d}-{'y' * 60}.md") for i in range(300_000)),
        )
    conn.close()
    volume = dk.volume(seed=db)
    c = dk.start(volume, image=big_index_image, read_only=True)
    wait_healthy(c, timeout=180)
    assert http_get(c, "/health")[0] == 200
    assert volume.query("SELECT max(version) FROM _preflight_history") == [(6,)]
    assert not (volume.path / "app.db.preflight-tmp").exists()


# the README's run command ---------------------------------------------------------------


def test_readme_run_command_serves_health(docker_engine: tuple, app_image: str) -> None:
    project = f"pftest{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        COMPOSE_PROJECT_NAME=project,
        PORT="18765",
        APP_IMAGE=f"preflight-app:{project}",
        BASE_IMAGE=docker_engine[1],
    )
    readme = (REPO / "README.md").read_text()
    command = re.search(r"## Run it\n\n.*?```sh\n(.*?)```", readme, re.S)[1].strip()
    assert command == "scripts/up"
    try:
        done = subprocess.run(
            shlex.split(command), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["version"] == 5
        # compose.yaml's one-shot migrate service, beside the running app: nothing to do.
        compose = (
            ["docker", "compose"]
            if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
            else ["docker-compose"]
        )
        migrate = subprocess.run(
            [*compose, "run", "--rm", "migrate"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        assert "0 pending" in migrate.stderr
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "up"), "down", "-v", "--rmi", "all"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=300,
        )
