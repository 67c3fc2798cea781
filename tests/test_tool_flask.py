"""--tool flask-migrate end to end: the example shop (examples/flask-app) with real Flask,
Flask-SQLAlchemy and Flask-Migrate; every step of the guard is `flask db ...` with the
app's FLASK_APP (or `--app` in --tool-cmd)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, dump

pytest.importorskip("flask_migrate")
pytest.importorskip("flask_sqlalchemy")

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


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def at_a1_with_rows(app: Path, db: Path) -> None:
    flask_db(app, db, "upgrade", "a1")
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO products (id, name) VALUES (?, ?)", [(1, "tea"), (2, "cake")])
    conn.close()


def test_a_fresh_database_equals_flask_db_upgrade_alone(app, data, tmp_path):
    db = data / "app.db"
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert "flask db upgrade" in result.stderr
    plain = tmp_path / "plain.db"
    flask_db(app, plain, "upgrade")
    assert version(db) == version(plain) == ["c3"]
    assert dump(db) == dump(plain)  # schema, alembic_version and rows
    again = guard(app, db, "run", "--", "/bin/true")
    assert again.returncode == 0, again.stderr
    assert "as verified before (cache)" in again.stderr


def test_an_upgrade_with_rows_equals_flask_db_upgrade_alone(app, data, tmp_path):
    db = data / "app.db"
    at_a1_with_rows(app, db)
    plain = tmp_path / "plain.db"
    shutil.copyfile(db, plain)
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert list((data / "backups").glob("app-*.db"))  # verified backup before the tool ran
    flask_db(app, plain, "upgrade")
    assert version(db) == ["c3"]
    assert dump(db) == dump(plain)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, name, price_cents FROM products ORDER BY id").fetchall() == [
        (1, "tea", 0),
        (2, "cake", 0),
    ]
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


def test_a_new_revision_is_seen_by_the_no_op_start(app, data):
    db = data / "app.db"
    assert guard(app, db, "migrate").returncode == 0
    (app / "migrations" / "versions" / "d4_note.py").write_text(
        '"""orders.note\n\nRevision ID: d4\nRevises: c3\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        'revision = "d4"\ndown_revision = "c3"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade():\n"
        '    op.add_column("orders", sa.Column("note", sa.String(200), nullable=True))\n\n\n'
        "def downgrade():\n    pass\n"
    )
    result = guard(app, db, "run", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert version(db) == ["d4"]


def test_an_app_that_migrates_itself_when_created_is_named(app, data):
    db = data / "app.db"
    flask_db(app, db, "upgrade", "a1")
    init = app / "shop" / "__init__.py"
    init.write_text(
        init.read_text().replace(
            "    return app\n",
            "    with app.app_context():\n"
            "        from flask_migrate import upgrade\n\n"
            "        upgrade()\n"
            "    return app\n",
        )
    )
    before = sha(db)
    result = guard(app, db, "migrate")
    assert result.returncode == 2, result.stderr
    assert "the app migrates its database when it is imported" in result.stderr
    assert "create_app()" in result.stderr and " heads (" not in result.stderr
    assert sha(db) == before and version(db) == ["a1"]


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
