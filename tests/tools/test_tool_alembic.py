"""--tool alembic end to end: the example app (examples/alembic-app) with real Alembic and
SQLAlchemy, run through the guard in real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, dump, sha

EXAMPLE = REPO / "examples" / "alembic-app"
BIN = str(Path(sys.executable).parent)  # where the test environment's `alembic` is

FAILING = '''"""posts.title unique: fails on a database with two posts of the same title

Revision ID: f6
Revises: e5
"""
import sqlalchemy as sa
from alembic import op

revision = "f6"
down_revision = "e5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("posts") as batch:
        batch.create_unique_constraint("uq_posts_title", ["title"])


def downgrade() -> None:
    pass
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A private copy of the example app (the tests add revisions to it)."""
    target = tmp_path / "app"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    return target


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def guard(app: Path, db: Path, *args: object, path: str | None = None, cwd: Path | None = None):
    env = clean_env()
    env.update(PYTHONPATH=str(REPO), PATH=path if path is not None else f"{BIN}:{os.defpath}")
    command, *rest = args
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "preflight",
            str(command),
            "--tool",
            "alembic",
            "--app-dir",
            str(app),
            "--db",
            str(db),
            *map(str, rest),
        ],
        cwd=cwd or app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def alembic(app: Path, db: Path, *args: str) -> None:
    """Alembic by hand (as a developer would), against `db`."""
    env = dict(os.environ, PREFLIGHT_DATABASE_URL=f"sqlite:///{db}")
    subprocess.run([f"{BIN}/alembic", *args], cwd=app, env=env, check=True, capture_output=True)


def tables(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        conn.close()


def version(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    finally:
        conn.close()


def at(app: Path, db: Path, rev: str, rows: list[str]) -> None:
    """`db` built by Alembic up to `rev`, with the app's data in it."""
    alembic(app, db, "upgrade", rev)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO users (id, name) VALUES (1, 'ada')")
        for i, title in enumerate(rows):
            conn.execute("INSERT INTO posts (id, user_id, title) VALUES (?, 1, ?)", (i + 1, title))
    conn.close()


def test_several_heads_are_refused(app, data):
    db = data / "app.db"
    branch = FAILING.replace('"f6"', '"g7"').replace('down_revision = "e5"', 'down_revision = "d4"')
    (app / "migrations" / "versions" / "g7_branch.py").write_text(branch)
    (app / "migrations" / "versions" / "f6_other.py").write_text(FAILING)
    result = guard(app, db, "migrate")
    assert result.returncode == 5, result.stderr
    assert "2 heads" in result.stderr and not db.exists()


def test_warnings_and_prints_in_revision_files_are_no_heads(app, data):
    """Only `REV (head)` lines of stdout are heads: a warning (stderr) and a print (stdout)
    at the top of a revision file used to count as two more heads."""
    b2 = app / "migrations" / "versions" / "b2_posts.py"
    b2.write_text(
        'import warnings\nwarnings.warn("b2 is old")\nprint("loading b2 -> soon")\n'
        + b2.read_text()
    )
    db = data / "app.db"
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert version(db) == ["e5"] and "heads" not in result.stderr


def test_a_failing_batch_revision_is_named_by_its_exception_and_leaves_no_table_copy(app, data):
    """A batch operation fails inside its table copy: the error line is the exception, not
    SQLAlchemy's background link, and the copy is gone with the restore."""
    db = data / "app.db"
    at(app, db, "e5", ["same", "same"])
    (app / "migrations" / "versions" / "f6_unique_title.py").write_text(FAILING)
    before, content = sha(db), dump(db)
    result = guard(app, db, "migrate")
    assert result.returncode == 9, result.stderr
    assert (
        "exited 1: sqlite3.IntegrityError: UNIQUE constraint failed: _alembic_tmp_posts.title"
        in (result.stderr)
    )
    assert "Background on this error" not in result.stderr
    assert sha(db) == before and dump(db) == content
    assert not [t for t in tables(db) if t.startswith("_alembic_tmp_")]


EXTRA = '''"""{what}

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("{table}")
'''


def test_a_revision_in_a_second_version_location_is_applied(app, data):
    ini = app / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "script_location = %(here)s/migrations",
            "script_location = %(here)s/migrations\n"
            "version_locations = %(here)s/migrations/versions, %(here)s/extra",
        )
    )
    extra = app / "extra"
    extra.mkdir()
    (extra / "f6_tags.py").write_text(EXTRA.format(what="tags", rev="f6", down="e5", table="tags"))
    db = data / "app.db"
    first = guard(app, db, "migrate")
    assert first.returncode == 0, first.stderr
    assert version(db) == ["f6"] and "tags" in tables(db)
    assert "cache" in guard(app, db, "run", "--", "/bin/true").stderr
    (extra / "g7_labels.py").write_text(
        EXTRA.format(what="labels", rev="g7", down="f6", table="labels")
    )
    result = guard(app, db, "run", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert version(db) == ["g7"] and "labels" in tables(db)  # not a cached no-op


def test_the_light_files_follow_the_config_alembic_reads(tmp_path):
    """-c, version_locations (';', newline), and `package:path` found without importing
    the package (its __init__ raises)."""
    from preflight.fast import toolfiles

    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "mig" / "versions").mkdir(parents=True)
    (app / "mig" / "env.py").write_text("")
    (app / "mig" / "versions" / "a1.py").write_text("")
    (app / "more").mkdir()
    (app / "more" / "b2.py").write_text("")
    pkg = app / "plugin" / "revs"
    pkg.mkdir(parents=True)
    (app / "plugin" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (pkg / "c3.py").write_text("")
    (app / "conf" / "prod.ini").write_text(
        "[other]\nscript_location = nowhere\n\n[alembic]\n"
        "script_location = mig\n"
        "path_separator = ;\n"
        "version_locations = mig/versions;%(here)s/../more;plugin:revs\n"
    )
    found = toolfiles.alembic_files(str(app), "", "alembic -c conf/prod.ini upgrade head")
    names = sorted(os.path.basename(p) for p in found)
    assert names == ["a1.py", "b2.py", "c3.py", "env.py", "prod.ini"]
    # the default alembic.ini is absent: without -c there is no script folder to find
    with pytest.raises(toolfiles.HandOver):
        toolfiles.alembic_files(str(app), "", "")
    # a newline-separated list, a section chosen with -n
    (app / "conf" / "prod.ini").write_text(
        "[prod]\nscript_location = mig\npath_separator = newline\n"
        "version_locations =\n    mig/versions\n    more\n"
    )
    found = toolfiles.alembic_files(str(app), "", "alembic -c conf/prod.ini -n prod upgrade head")
    assert sorted(os.path.basename(p) for p in found) == ["a1.py", "b2.py", "env.py", "prod.ini"]


def test_heads_history_and_error_lines_are_read_structurally():
    from preflight.core import proc
    from preflight.sources import tools

    heads = (
        "/app/versions/b2.py:2: UserWarning: b2 is old\n"
        '  warnings.warn("b2 is old")\n'
        "INFO  [alembic.runtime.migration] Context impl SQLiteImpl.\n"
        "loading b2 -> soon\n"
        "e5 (head)\n"
        "x9 (feature) (effective head)\n"
    )
    assert tools._alembic_heads(heads) == ("e5", "x9")
    history = (
        "loading b2 -> soon\n"
        "c3, d4 -> e5 (head) (mergepoint), merge\n"
        "b2 -> d4, title required\n"
        "b2 -> c3, email\n"
        "a1 (z0) -> b2, posts\n"
        "<base> -> a1, users\n"
    )
    assert tools._alembic_history(history) == ("a1", "b2", "c3", "d4", "e5")
    background = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    boom()\n"
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: x\n"
        "[SQL: INSERT INTO x VALUES (1)]\n"
        "(Background on this error at: https://sqlalche.me/e/20/e3q8)\n"
    )
    assert proc.meaningful_line(background) == "sqlite3.OperationalError: no such table: x"
    assert proc.meaningful_line("INFO  start\nFAILED: Can't locate revision 'zz'\n") == (
        "FAILED: Can't locate revision 'zz'"
    )
    assert proc.meaningful_line("") == "(no output)"


# What an upgrade destroys (issue 24): a batch rebuild of posts with foreign keys on
# deletes its comments (ON DELETE CASCADE: DROP TABLE posts deletes every row first).
COMMENTS = '''"""comments on posts, deleted with their post

Revision ID: f6
Revises: e5
"""
import sqlalchemy as sa
from alembic import op

revision = "f6"
down_revision = "e5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("post_id", sa.Integer(), sa.ForeignKey("posts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("body", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("comments")
'''

SUMMARY = '''"""posts.summary, added by a batch rebuild

Revision ID: g7
Revises: f6
"""
import sqlalchemy as sa
from alembic import op

revision = "g7"
down_revision = "f6"
branch_labels = None
depends_on = None
{declare}

def upgrade() -> None:
    with op.batch_alter_table("posts", recreate="always") as batch:
        batch.add_column(sa.Column("summary", sa.Text()))


def downgrade() -> None:
    pass
'''

FOREIGN_KEYS_ON = """
from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def _foreign_keys_on(dbapi_connection, record):  # what many apps do in their env.py
    dbapi_connection.execute("PRAGMA foreign_keys = ON")
"""


def with_comments(app: Path, db: Path, foreign_keys: bool) -> None:
    """At f6 (comments) with 3 posts and 5 comments; the app's env.py turns foreign keys on."""
    versions = app / "migrations" / "versions"
    (versions / "f6_comments.py").write_text(COMMENTS)
    if foreign_keys:
        env = app / "migrations" / "env.py"
        text = env.read_text()
        env.write_text(
            text.replace("config = context.config", FOREIGN_KEYS_ON + "\nconfig = context.config")
        )
    at(app, db, "e5", ["one", "two", "three"])
    alembic(app, db, "upgrade", "f6")
    conn = sqlite3.connect(db)
    with conn:
        for i in range(1, 6):
            conn.execute("INSERT INTO comments VALUES (?, ?, ?)", (i, 1 + i % 3, f"comment {i}"))
    conn.close()


def test_a_cascade_through_a_batch_rebuild_with_foreign_keys_on_is_refused_and_restored(app, data):
    db = data / "app.db"
    with_comments(app, db, foreign_keys=True)
    (app / "migrations" / "versions" / "g7_summary.py").write_text(SUMMARY.format(declare=""))
    before, content = sha(db), dump(db)
    check = guard(app, db, "check")  # the rehearsal names it before anyone deploys
    assert check.returncode == 9, check.stderr
    assert "rehearsal on a private copy: g7: comments: 5 of 5 rows lost" in check.stderr
    result = guard(app, db, "run", "--", "touch", str(data / "app-started"))
    assert result.returncode == 9, result.stderr
    assert "g7: comments: 5 of 5 rows lost" in result.stderr
    assert "restored" in result.stderr
    assert sha(db) == before and dump(db) == content
    assert not (data / "app-started").exists()
    assert not (data / "app.db.preflight-loss.json").exists()  # undone: nothing to record
    # Accepted once, the same run goes through, and says what it lost.
    accepted = guard(app, db, "migrate", "--accept-loss", "comments")
    assert accepted.returncode == 0, accepted.stderr
    assert "loss: comments: 5 of 5 rows lost (accepted by PREFLIGHT_ACCEPT_LOSS), by g7" in (
        accepted.stderr
    )


def test_the_same_batch_rebuild_with_foreign_keys_off_keeps_every_comment(app, data):
    db = data / "app.db"
    with_comments(app, db, foreign_keys=False)
    (app / "migrations" / "versions" / "g7_summary.py").write_text(SUMMARY.format(declare=""))
    result = guard(app, db, "migrate", "--strict")
    assert result.returncode == 0, result.stderr
    assert "loss:" not in result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM comments").fetchone() == (5,)
    conn.close()


def test_a_cascade_declared_in_the_revision_runs_and_is_in_status(app, data):
    db = data / "app.db"
    with_comments(app, db, foreign_keys=True)
    declared = SUMMARY.format(declare="# preflight: loses comments")
    (app / "migrations" / "versions" / "g7_summary.py").write_text(declared)
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert "loss: comments: 5 of 5 rows lost (declared in the migration), by g7" in result.stderr
    status = guard(app, db, "status", "--json")
    [entry] = json.loads(status.stdout)["last_run_loss"]
    assert (entry["table"], entry["count"], entry["migrations"]) == ("comments", 5, ["g7"])
    # The record is beside the database: nothing of the guard's goes into the app's schema.
    assert (data / "app.db.preflight-loss.json").exists()
    assert not [t for t in tables(db) if t.startswith("_preflight")]
