"""The application's own SQL functions (issue 9 class 4): `--functions` / PREFLIGHT_FUNCTIONS
names a module with register(conn), used on every connection that runs or replays
migrations; a bad module is exit 2 naming it, with nothing changed."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import folder_state, rows

from preflight.fast import facts, quickstart
from preflight.sources import migrations

FUNCTIONS = """\
import base64
import re


def slugify(text):
    return None if text is None else re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def b64(text):
    return None if text is None else base64.b64encode(text.encode()).decode()


def register(conn):
    conn.create_function("slugify", 1, slugify, deterministic=True)
    conn.create_function("b64", 1, b64, deterministic=True)
"""
HISTORY = {
    "001_post.sql": "CREATE TABLE post (id INTEGER PRIMARY KEY, title TEXT);\n"
    "INSERT INTO post VALUES (1, 'Hello World!'), (2, 'Ca va?');\n",
    "002_slug.sql": "ALTER TABLE post ADD COLUMN slug TEXT;\n"
    "UPDATE post SET slug = slugify(title);\n"
    "CREATE TRIGGER post_slug AFTER INSERT ON post BEGIN\n"
    "  UPDATE post SET slug = slugify(new.title) WHERE id = new.id;\nEND;\n"
    "INSERT INTO post (id, title) VALUES (3, 'From The Migration');\n",
    "003_token.sql": "ALTER TABLE post ADD COLUMN token TEXT;\nUPDATE post SET token = b64(slug);\n",
}
EXPECTED = [
    (1, "hello-world", "aGVsbG8td29ybGQ="),
    (2, "ca-va", "Y2EtdmE="),
    (3, "from-the-migration", "ZnJvbS10aGUtbWlncmF0aW9u"),
]


@pytest.fixture
def app(tmp_path: Path, make_migrations):
    """(migrations folder, functions file) of an app whose migrations call its functions."""
    functions = tmp_path / "app" / "appsql.py"
    functions.parent.mkdir()
    functions.write_text(FUNCTIONS)
    return make_migrations(HISTORY), functions


def plain_sqlite3_at(db: Path, count: int) -> None:
    """The app's own runner: its connection has the functions, no preflight history."""
    namespace: dict[str, object] = {}
    exec(FUNCTIONS, namespace)
    conn = sqlite3.connect(db)
    namespace["register"](conn)  # type: ignore[operator]
    for name in sorted(HISTORY)[:count]:
        conn.executescript(HISTORY[name])
    conn.close()


def test_fresh_build_replay_and_check_call_the_apps_functions(cli, app, data_dir):
    folder, functions = app
    db = data_dir / "app.db"
    result = cli("migrate", "--db", db, "--migrations", folder, "--functions", functions)
    assert result.code == 0, result
    assert rows(db, "SELECT id, slug, token FROM post ORDER BY id") == EXPECTED
    state = folder_state(data_dir)
    assert cli("check", "--db", db, "--migrations", folder, "--functions", functions).code == 0
    assert cli("status", "--db", db, "--migrations", folder, "--functions", functions).code == 0
    assert folder_state(data_dir) == state


@pytest.mark.parametrize("at", [1, 2])
def test_adoption_and_rehearsal_call_the_apps_functions(cli, app, data_dir, monkeypatch, at):
    folder, functions = app
    db = data_dir / "app.db"
    plain_sqlite3_at(db, at)
    monkeypatch.setenv("PREFLIGHT_FUNCTIONS", str(functions))  # the variable form
    state = folder_state(data_dir)
    checked = cli("check", "--db", db, "--migrations", folder)
    assert checked.code == 3, checked  # rehearsed on a private copy: would apply cleanly
    assert folder_state(data_dir) == state
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT id, slug, token FROM post ORDER BY id") == EXPECTED


def test_without_the_functions_a_migration_that_calls_them_fails_and_changes_nothing(
    cli, app, data_dir
):
    folder, functions = app
    db = data_dir / "app.db"
    plain_sqlite3_at(db, 1)
    assert cli("stamp", "1", "--db", db, "--migrations", folder, "--functions", functions).code == 0
    state = folder_state(data_dir)
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9, result
    assert "no such function: slugify" in result.err
    after = folder_state(data_dir)
    # The one failure-record policy, for every source: a migration that fails before
    # anything was touched is recorded as restored (the database as it was), and the same
    # set is not tried again; giving the functions changes the set (their sha256 is in it).
    record = json.loads((data_dir / "app.db.preflight-failure.json").read_text())
    assert after.pop("app.db.preflight-failure.json") and record["restored"] is True
    assert after == state
    assert cli("migrate", "--db", db, "--migrations", folder).code == 11
    again = cli("migrate", "--db", db, "--migrations", folder, "--functions", functions)
    assert again.code == 0, again


def test_a_module_name_importable_from_the_working_directory(cli, app, data_dir, monkeypatch):
    folder, functions = app
    monkeypatch.chdir(functions.parent)
    monkeypatch.delitem(sys.modules, "appsql", raising=False)
    result = cli(
        "migrate", "--db", data_dir / "app.db", "--migrations", folder, "--functions", "appsql"
    )
    sys.modules.pop("appsql", None)
    assert result.code == 0, result
    assert rows(data_dir / "app.db", "SELECT id, slug, token FROM post ORDER BY id") == EXPECTED


@pytest.mark.parametrize(
    "source, spec, message",
    [
        (None, "missing.py", "cannot be read"),
        ("def other(conn):\n    pass\n", "f.py", "defines no register(conn) function"),
        (
            "import no_such_module_anywhere\n",
            "f.py",
            "failed to load: ModuleNotFoundError: No module named 'no_such_module_anywhere'",
        ),
        (
            "def register(conn):\n    raise ValueError('boom')\n",
            "f.py",
            "register(conn) failed: ValueError: boom",
        ),
        ("import sys\nsys.exit(3)\n", "f.py", "called sys.exit(3) while loading"),
        ("def register(conn:\n", "f.py", "failed to load: SyntaxError"),
        (None, "no_such_module_anywhere", "failed to load: ModuleNotFoundError"),
    ],
    ids=[
        "missing-file",
        "no-register",
        "import-fails",
        "register-raises",
        "sys-exit",
        "syntax",
        "unknown-module",
    ],
)
def test_a_bad_functions_module_is_exit_2_naming_it(
    cli, app, data_dir, tmp_path, source, spec, message
):
    folder, _ = app
    db = data_dir / "app.db"
    plain_sqlite3_at(db, 1)
    if source is not None:
        (tmp_path / spec).write_text(source)
    given = str(tmp_path / spec) if spec.endswith(".py") else spec
    state = folder_state(data_dir)
    for command in ("migrate", "check"):
        result = cli(command, "--db", db, "--migrations", folder, "--functions", given)
        assert result.code == 2, result
        assert f"PREFLIGHT_FUNCTIONS {given!r}: {message}" in result.err
    assert folder_state(data_dir) == state


def test_the_set_fingerprint_and_the_quick_start_follow_the_functions_file(
    cli, app, data_dir, monkeypatch
):
    folder, functions = app
    db = data_dir / "app.db"
    assert cli("migrate", "--db", db, "--migrations", folder, "--functions", functions).code == 0
    before = migrations.set_fingerprint(migrations.discover(folder, str(functions)))
    assert before != migrations.set_fingerprint(migrations.discover(folder))
    named = [(n, s) for _, n, s in facts.files(str(folder))]
    with_functions = named + [
        ("<functions>", migrations.discover(folder, str(functions))[0].functions.sha256)
    ]
    assert facts.set_fingerprint(with_functions) == before

    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, args: execs.append(args))

    def quick(spec: str) -> bool:
        count = len(execs)
        quickstart.start(
            [
                "run",
                "--db",
                str(db),
                "--migrations",
                str(folder),
                "--functions",
                spec,
                "--",
                "true",
            ],
            {},
        )
        return len(execs) > count

    assert quick(str(functions))  # as verified before: the fast path
    functions.write_text(FUNCTIONS + "\n# changed\n")
    assert migrations.set_fingerprint(migrations.discover(folder, str(functions))) != before
    assert not quick(str(functions))  # a changed module: the full pipeline re-verifies
    assert not quick("appsql")  # a module name: the import machinery decides, not the quick start
