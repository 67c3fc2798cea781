"""--tool flask-migrate end to end: the example shop (examples/flask-app) with real Flask,
Flask-SQLAlchemy and Flask-Migrate; every step of the guard is `flask db ...` with the
app's FLASK_APP (or `--app` in --tool-cmd)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

EXAMPLE = REPO / "examples" / "flask-app"
BIN = str(Path(sys.executable).parent)
FLASK_APP = "shop:create_app"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    return target


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def environment(flask_app: str | None = FLASK_APP, path: str | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFLIGHT_", "FLASK_", "ALEMBIC_"))
    }
    env.update(PYTHONPATH=str(REPO), PATH=path if path is not None else f"{BIN}:{os.defpath}")
    if flask_app:
        env["FLASK_APP"] = flask_app
    return env


def guard(app: Path, db: Path, *args: object, flask_app: str | None = FLASK_APP, path=None):
    command, *rest = args
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "preflight",
            str(command),
            "--tool",
            "flask-migrate",
            "--app-dir",
            str(app),
            "--db",
            str(db),
            *map(str, rest),
        ],
        cwd=app,
        env=environment(flask_app, path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def flask_db(app: Path, db: Path, *args: str) -> None:
    """`flask db ...` by hand, as a developer would (no guard), against `db`."""
    env = dict(environment(), PREFLIGHT_DATABASE_URL=f"sqlite:///{db}")
    subprocess.run(
        [sys.executable, "-m", "flask", "db", *args],
        cwd=app,
        env=env,
        check=True,
        capture_output=True,
    )


def version(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    finally:
        conn.close()


def test_every_step_uses_the_app_given_in_the_tool_command(app, data):
    """No FLASK_APP: `--app` in --tool-cmd reaches heads, history and the scratch upgrades
    too (plain `alembic` could neither find migrations/alembic.ini nor load env.py)."""
    db = data / "app.db"
    bare = guard(app, db, "migrate", flask_app=None)
    assert bare.returncode != 0 and not db.exists()
    result = guard(
        app, db, "migrate", "--tool-cmd", f"flask --app {FLASK_APP} db upgrade", flask_app=None
    )
    assert result.returncode == 0, result.stderr
    assert version(db) == ["c3"]


def test_a_migrations_folder_given_with_directory_reaches_every_step(app, data):
    shutil.move(str(app / "migrations"), str(app / "db_migrations"))
    db = data / "app.db"
    cmd = ("--tool-cmd", "flask db upgrade --directory db_migrations")
    result = guard(app, db, "migrate", *cmd)
    assert result.returncode == 0, result.stderr
    assert version(db) == ["c3"]
    assert "cache" in guard(app, db, "run", *cmd, "--", "/bin/true").stderr
    from preflight.fast import toolfiles

    found = toolfiles.flask_migrate_files(str(app), str(db), "flask db upgrade -d db_migrations")
    assert str(app / "db_migrations" / "versions" / "c3_orders_and_skus.py") in found
