"""--tool django end to end: the example project (examples/django-app: the notes app and
Django's contrib apps) with real Django, run through the guard in real subprocesses."""

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

EXAMPLE = REPO / "examples" / "django-app"
BIN = str(Path(sys.executable).parent)  # where the test environment's `python` is
HEAD = 22  # migrations in the plan: 18 of Django's contrib apps, 4 of the notes app

# Passes on an empty database (the scratch build), fails on the live one's notes: the
# third of three pending migrations (0003 and 0004 commit before it).
FAILING = """from django.db import migrations


def check(apps, schema_editor):
    if apps.get_model("notes", "Note").objects.exists():
        raise RuntimeError("notes cannot be migrated")


class Migration(migrations.Migration):
    dependencies = [("notes", "0004_tags")]

    operations = [migrations.RunPython(check, migrations.RunPython.noop)]
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A private copy of the example project (the tests add migrations to it)."""
    target = tmp_path / "app"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    return target


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def environment(path: str | None = None) -> dict[str, str]:
    env = clean_env()
    env.update(PYTHONPATH=str(REPO), PATH=path if path is not None else f"{BIN}:{os.defpath}")
    return env


def argv(app: Path, db: Path, command: object, *rest: object) -> list[str]:
    return [
        sys.executable,
        "-m",
        "preflight",
        str(command),
        "--tool",
        "django",
        "--app-dir",
        str(app),
        "--db",
        str(db),
        *map(str, rest),
    ]


def guard(app: Path, db: Path, *args: object, path: str | None = None):
    return subprocess.run(
        argv(app, db, *args),
        cwd=app,
        env=environment(path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def manage(app: Path, db: Path, *args: str) -> None:
    """manage.py by hand (as a developer would), against `db`."""
    env = dict(os.environ, PREFLIGHT_DB=str(db))
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=app, env=env, check=True, capture_output=True
    )


def applied(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [f"{a}.{n}" for a, n in conn.execute("SELECT app, name FROM django_migrations")]
    finally:
        conn.close()


def with_notes(app: Path, db: Path, target: str, notes: list[tuple[str, str]]) -> None:
    """`db` migrated by Django to notes `target` (only what it depends on), with a user
    and `notes` (title, body) in it."""
    manage(app, db, "migrate", "notes", target)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO auth_user (id, password, is_superuser, username, first_name, "
            "last_name, email, is_staff, is_active, date_joined, last_login) "
            "VALUES (1, '!', 0, 'ada', '', '', '', 0, 1, '2024-01-01', '2024-01-01')"
        )
        for i, (title, body) in enumerate(notes):
            conn.execute(
                "INSERT INTO notes_note (id, author_id, title, body) VALUES (?, 1, ?, ?)",
                (i + 1, title, body),
            )
    conn.close()


def test_an_upgrade_from_a_recorded_set_that_is_no_plan_prefix_keeps_every_row(app, data):
    """The notes app migrated alone (Django's contrib apps not yet): the guard plans from
    that set, runs the data migration and the table rebuild, and keeps every note."""
    db = data / "app.db"
    with_notes(app, db, "0001", [("first", ""), ("second", "kept")])
    assert "admin.0001_initial" not in applied(db)  # a recorded set that is no plan prefix
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert len(applied(db)) == HEAD
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, title, body FROM notes_note ORDER BY id").fetchall() == [
        (1, "first", "first"),
        (2, "second", "kept"),
    ]
    assert (
        "varchar(200)"
        in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'notes_note'").fetchone()[0]
    )
    conn.close()
    assert list((data / "backups").glob("app-*.db")), "a verified backup before Django ran"


def test_djangos_own_tables_are_part_of_the_expected_schema(app, data):
    db = data / "app.db"
    manage(app, db, "migrate")
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE django_session")
    conn.close()
    result = guard(app, db, "migrate")
    assert result.returncode == 4 and "django_session" in result.stderr


def test_stamp_records_the_plan_up_to_a_migration_of_another_app(app, data):
    db = data / "app.db"
    manage(app, db, "migrate")
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM django_migrations")
    conn.close()
    refused = guard(app, db, "stamp", "notes.0001_initial")  # not its schema
    assert refused.returncode == 4, refused.stderr
    result = guard(app, db, "stamp", "sessions.0001_initial")
    assert result.returncode == 0, result.stderr
    assert len(applied(db)) == HEAD
    assert list((data / "backups").glob("app-*.db"))


def test_the_no_op_fingerprint_covers_every_installed_distribution():
    """Third-party apps live in site-packages, outside --app-dir: their version (METADATA of
    each distribution beside Django) is part of what a no-op start compares."""
    from preflight.fast import toolfiles

    found = toolfiles.django_installed()
    metadata = [p for p in found if p.endswith(os.path.join(".dist-info", "METADATA"))]
    assert any(os.path.basename(os.path.dirname(p)).lower().startswith("django-") for p in metadata)
    assert len(metadata) > 1  # not Django's alone: every distribution installed beside it


def test_the_default_command_runs_under_the_guards_interpreter(app, data, tmp_path):
    """Another `python` first on PATH (one without Django) is not used: the default
    command is the guard's own interpreter running manage.py."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    marker = tmp_path / "fake-ran"
    (fake / "python").write_text(
        f"#!/bin/sh\necho ran > {marker}\necho 'No module named django' >&2\nexit 1\n"
    )
    (fake / "python").chmod(0o755)
    db = data / "app.db"
    result = guard(app, db, "migrate", path=f"{fake}:{BIN}:{os.defpath}")
    assert result.returncode == 0, result.stderr
    assert len(applied(db)) == HEAD and not marker.exists()
    assert f"{sys.executable} manage.py migrate" in result.stderr


def test_migration_modules_outside_the_app_folder_are_fingerprinted(app, data, tmp_path):
    """MIGRATION_MODULES points the notes app at a package outside --app-dir: the scratch
    run reports its folder, the no-op start hashes it, a new migration there is applied."""
    ext = tmp_path / "ext"
    shutil.move(str(app / "notes" / "migrations"), str(ext / "notes_history"))
    settings = app / "site_config" / "settings.py"
    settings.write_text(
        settings.read_text()
        + f"\nimport sys\nsys.path.insert(0, {str(ext)!r})\n"
        + 'MIGRATION_MODULES = {"notes": "notes_history"}\n'
    )
    db = data / "app.db"
    assert guard(app, db, "migrate").returncode == 0
    assert len(applied(db)) == HEAD
    record = (data / "app.db.preflight-tool-paths").read_text().splitlines()
    assert str((ext / "notes_history").resolve()) in record[2:]
    guard(app, db, "migrate")
    quiet = guard(app, db, "run", "--", "/bin/true")
    assert quiet.returncode == 0 and "as verified before (cache)" in quiet.stderr
    (ext / "notes_history" / "0005_check.py").write_text(
        FAILING.replace("exists()", "none().exists()")
    )
    result = guard(app, db, "run", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert "notes.0005_check" in applied(db)  # not a cached no-op


SHELF = """from django.db import models


class Book(models.Model):
    title = models.CharField(max_length={length})
{more}"""


@pytest.fixture(scope="module")
def shelf(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The example project plus a `shelf` app whose migrations 0001-0003 were squashed by
    Django's squashmigrations, and a 0004 made after the squash: (the project without the
    squash and 0004, {file name: text} of those two)."""
    root = tmp_path_factory.mktemp("shelf") / "app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    settings = root / "site_config" / "settings.py"
    settings.write_text(
        settings.read_text().replace('    "notes",\n', '    "notes",\n    "shelf",\n')
    )
    (root / "shelf" / "migrations").mkdir(parents=True)
    (root / "shelf" / "__init__.py").write_text("")
    (root / "shelf" / "migrations" / "__init__.py").write_text("")
    scratch = root.parent / "gen.db"
    steps = [
        ("50", "", "initial"),
        ("50", '    isbn = models.CharField(max_length=13, default="")\n', "isbn"),
        ("200", '    isbn = models.CharField(max_length=13, default="")\n', "longer_title"),
    ]
    for length, more, name in steps:
        (root / "shelf" / "models.py").write_text(SHELF.format(length=length, more=more))
        manage(root, scratch, "makemigrations", "shelf", "--name", name)
    folder = root / "shelf" / "migrations"
    before = set(os.listdir(folder))
    manage(root, scratch, "squashmigrations", "shelf", "0003", "--no-input")
    (root / "shelf" / "models.py").write_text(
        SHELF.format(
            length="200",
            more='    isbn = models.CharField(max_length=13, default="")\n'
            "    pages = models.IntegerField(default=0)\n",
        )
    )
    manage(root, scratch, "makemigrations", "shelf", "--name", "pages")
    added = {n: (folder / n).read_text() for n in set(os.listdir(folder)) - before}
    for n in added:
        (folder / n).unlink()
    assert sorted(added) == ["0001_squashed_0003_longer_title.py", "0004_pages.py"]
    assert "replaces = " in added["0001_squashed_0003_longer_title.py"]
    return root, added


def shelf_state(db: Path) -> tuple[list[str], list[str], list[tuple]]:
    """Schema, applied migrations and the books: what must equal Django's own migrate."""
    conn = sqlite3.connect(db)
    try:
        sql = [
            r[0]
            for r in conn.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
            )
        ]
        names = sorted(
            f"{a}.{n}" for a, n in conn.execute("SELECT app, name FROM django_migrations")
        )
        books = conn.execute("SELECT * FROM shelf_book ORDER BY id").fetchall()
        return sql, names, books
    finally:
        conn.close()


@pytest.mark.parametrize("before", ["fresh", "all-replaced", "part-replaced"])
def test_squashed_migrations_follow_djangos_rule(shelf, before, tmp_path):
    """The squash is used when none or all of the migrations it replaces are applied, the
    replaced ones otherwise; the result equals `manage.py migrate` alone on a copy."""
    template, added = shelf
    app = tmp_path / "app"
    shutil.copytree(template, app)
    data = tmp_path / "data"
    data.mkdir()
    db = data / "app.db"
    if before != "fresh":
        manage(app, db, "migrate", "shelf", "0003" if before == "all-replaced" else "0001")
        conn = sqlite3.connect(db)
        with conn:
            if before == "all-replaced":
                conn.execute("INSERT INTO shelf_book (id, title, isbn) VALUES (1, 'dune', '')")
            else:
                conn.execute("INSERT INTO shelf_book (id, title) VALUES (1, 'dune')")
        conn.close()
    for name, text in added.items():
        (app / "shelf" / "migrations" / name).write_text(text)
    plain = tmp_path / "plain.db"
    if db.exists():
        shutil.copyfile(db, plain)
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    manage(app, plain, "migrate")
    assert shelf_state(db) == shelf_state(plain)
    names = applied(db)
    assert "shelf.0004_pages" in names and "shelf.0002_isbn" in names
    if before != "fresh":
        assert shelf_state(db)[2][0][:2] == (1, "dune")
        # Django rebuilt shelf_book for 0003 (AlterField): its columns keep the order of
        # the replaced migrations, not the squash's; the guard expected exactly that
        assert "one by one" in result.stderr
    again = guard(app, db, "run", "--", "/bin/true")
    assert again.returncode == 0, again.stderr


def test_an_upgrade_after_prepare_builds_only_the_recorded_set(app, data):
    """The plan built into the image (`prepare`): an upgrade whose recorded set is no plan
    prefix (new migrations fall inside the plan) builds that one set, never the whole plan
    again; one start without `prepare` builds the plan once."""
    done = guard(app, data / "unused.db", "prepare")
    assert done.returncode == 0, done.stderr
    db = data / "app.db"
    with_notes(app, db, "0001", [("first", "")])
    assert "admin.0001_initial" not in applied(db)  # a recorded set that is no plan prefix
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert "expected schemas from the image" in result.stderr
    assert "the recorded set built by Django" in result.stderr
    assert "migration(s) built by Django" not in result.stderr  # the plan was not rebuilt
    assert len(applied(db)) == HEAD


# What an upgrade destroys (issue 24): Django's statements are not seen; rows vanishing from
# a table the run did not alter are refused unless declared in the migration's file.
DROP_DRAFTS = """from django.db import migrations
{declare}

class Migration(migrations.Migration):
    dependencies = [("notes", "0004_tags")]

    operations = [
        migrations.RunSQL("DELETE FROM notes_note WHERE title LIKE 'draft%'", migrations.RunSQL.noop)
    ]
"""

REMOVE_BODY = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0004_tags")]

    operations = [migrations.RemoveField(model_name="note", name="body")]
"""


def test_rows_a_data_migration_deletes_from_a_table_it_does_not_alter_are_refused(app, data):
    db = data / "app.db"
    with_notes(app, db, "0004", [("draft one", "a"), ("kept", "b"), ("draft two", "c")])
    (app / "notes" / "migrations" / "0005_drop_drafts.py").write_text(
        DROP_DRAFTS.format(declare="")
    )
    before, content = sha(db), dump(db)
    result = guard(app, db, "migrate")
    assert result.returncode == 9, result.stderr
    assert "notes_note: 2 of 3 rows lost" in result.stderr and "restored" in result.stderr
    assert "# preflight: loses notes_note" in result.stderr
    assert sha(db) == before and dump(db) == content


def test_the_same_data_migration_declared_in_its_file_runs_and_is_reported(app, data):
    db = data / "app.db"
    with_notes(app, db, "0004", [("draft one", "a"), ("kept", "b"), ("draft two", "c")])
    declared = DROP_DRAFTS.format(declare="# preflight: loses notes_note\n")
    (app / "notes" / "migrations" / "0005_drop_drafts.py").write_text(declared)
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert "loss: notes_note: 2 of 3 rows lost (declared in the migration)" in result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT title FROM notes_note").fetchall() == [("kept",)]
    conn.close()


def test_a_removed_field_with_values_is_reported_and_strict_refuses_it(app, data):
    db = data / "app.db"
    with_notes(app, db, "0004", [("one", "a body"), ("two", "another")])
    manage(app, db, "migrate")  # Django's own apps too: contenttypes drops a column of its own
    (app / "notes" / "migrations" / "0005_remove_body.py").write_text(REMOVE_BODY)
    before = sha(db)
    strict = guard(app, db, "migrate", "--strict")
    assert strict.returncode == 9, strict.stderr
    assert "notes_note: body: 2 of 2 values dropped with the column" in strict.stderr
    assert sha(db) == before
    (data / "app.db.preflight-failure.json").unlink()
    result = guard(app, db, "migrate")
    assert result.returncode == 0, result.stderr
    assert "loss: notes_note: body: 2 of 2 values dropped with the column" in result.stderr
    status = guard(app, db, "status", "--json")
    assert [(e["kind"], e["column"]) for e in json.loads(status.stdout)["last_run_loss"]] == [
        ("column", "body")
    ]
