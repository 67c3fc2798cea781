"""Permissions, for real: the guard runs as `nobody` against folders owned by root.

Root passes every permission check, so these tests need root to create the situation
and drop to uid 65534 for the guard (CI runs as root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MIGRATIONS, REPO, folder_state, load_fixture

NOBODY = 65534
PYTHON = "/usr/bin/python3"  # the user's interpreter may live under /root, which nobody can't read

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(PYTHON),
    reason="needs root to set up, and a system python3",
)


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder outside root's 0700 pytest tmp, with the guard and migrations copied in."""
    top = Path(tempfile.mkdtemp(prefix="preflight-perm-", dir="/tmp"))
    top.chmod(0o755)
    shutil.copytree(
        REPO / "preflight", top / "app" / "preflight", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        MIGRATIONS, top / "app" / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in [top / "app", *(top / "app").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (top / "data").mkdir(mode=0o755)
    yield top
    shutil.rmtree(top)


def as_nobody(world: Path, *args: str) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run(
        [PYTHON, "-m", "preflight", *args, "--migrations", str(world / "app" / "migrations")],
        cwd=world / "app",
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        preexec_fn=drop,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_read_only_data_folder_exits_7_naming_it_and_changes_nothing(world):
    db = load_fixture("v0.9.5", world / "data" / "app.db")
    db.chmod(0o644)
    state = folder_state(world / "data", strict=True)
    done = as_nobody(world, "migrate", "--db", str(db))
    assert done.returncode == 7, done.stderr
    assert f"{world / 'data'} is not writable by uid {NOBODY}" in done.stderr
    assert "chown" in done.stderr
    assert folder_state(world / "data", strict=True) == state


def test_check_works_on_a_folder_it_cannot_write(world):
    """`check` is read-only: a read-only volume is enough."""
    db = load_fixture("v0.9.5", world / "data" / "app.db")
    db.chmod(0o644)
    state = folder_state(world / "data", strict=True)
    done = as_nobody(world, "check", "--db", str(db), "--json")
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["pending"]
    assert folder_state(world / "data", strict=True) == state


def test_unreadable_database_exits_7(world):
    db = load_fixture("v0.9.5", world / "data" / "app.db")
    db.chmod(0o600)
    (world / "data").chmod(0o777)
    state = folder_state(world / "data", strict=True)
    done = as_nobody(world, "migrate", "--db", str(db))
    assert done.returncode == 7 and f"{db} is not readable by uid {NOBODY}" in done.stderr
    assert folder_state(world / "data", strict=True) == state


def test_backup_folder_not_writable_exits_7_before_anything_changes(world):
    data = world / "data"
    db = load_fixture("v0.9.5", data / "app.db")
    os.chown(data, NOBODY, NOBODY)
    os.chown(db, NOBODY, NOBODY)
    (data / "backups").mkdir(mode=0o755)  # owned by root
    state = folder_state(data, strict=True)
    done = as_nobody(world, "migrate", "--db", str(db))
    assert (
        done.returncode == 7 and f"backup folder {data / 'backups'} is not writable" in done.stderr
    )
    assert folder_state(data, strict=True) == state


def test_inaccessible_folder_is_not_reported_as_missing(world):
    (world / "data").chmod(0o700)
    done = as_nobody(world, "migrate", "--db", str(world / "data" / "app.db"))
    assert done.returncode == 7 and "is not accessible by uid" in done.stderr


def test_owner_can_migrate_and_backups_are_private(world):
    data = world / "data"
    db = load_fixture("v0.9.5", data / "app.db")
    os.chown(data, NOBODY, NOBODY)
    os.chown(db, NOBODY, NOBODY)
    done = as_nobody(world, "migrate", "--db", str(db))
    assert done.returncode == 0, done.stderr
    (taken, record) = sorted((data / "backups").iterdir())
    for made in (taken, record, data / "app.db.preflight-id"):
        assert made.stat().st_uid == NOBODY and made.stat().st_mode & 0o777 == 0o600


def own(data: Path, db: Path) -> None:
    os.chown(data, NOBODY, NOBODY)
    os.chown(db, NOBODY, NOBODY)


@pytest.mark.parametrize(
    "name, message",
    [
        ("app.db-wal", "app.db-wal is not readable and writable by uid 65534"),
        ("app.db-journal", "app.db-journal is not readable and writable by uid 65534"),
        ("app.db.preflight.lock", "cannot open lock file"),
    ],
    ids=["wal-owned-by-root", "journal-owned-by-root", "lock-owned-by-root"],
)
def test_a_file_beside_the_database_owned_by_another_user_exits_7(world, name, message):
    """E.g. an app once run as root left its -wal behind: the guard, as the app's user,
    must say so instead of 'database disk image is malformed'."""
    data = world / "data"
    db = load_fixture("v0.9.5", data / "app.db")
    own(data, db)
    (data / name).write_bytes(b"")
    (data / name).chmod(0o600)  # root's
    state = folder_state(data, strict=True)
    done = as_nobody(world, "migrate", "--db", str(db))
    assert done.returncode == 7, done.stderr
    line = [x for x in done.stderr.splitlines() if "error:" in x][-1]
    assert message in line and "chown" in line, line
    assert folder_state(data, strict=True) == state
