"""`status` and `check` say in plain words when there is no database at the configured path,
and `check` at head says so in one line: a wrong volume must not read like data loss."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MIGRATIONS, Result, folder_state


@pytest.mark.parametrize("command", ["status", "check"])
def test_no_database_is_said_in_text_and_json(
    cli: Callable[..., Result], data_dir: Path, command: str
) -> None:
    db = data_dir / "app.db"
    result = cli(command, "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 3, result
    line = f"no database at {db}: a start would create a fresh one (5 migration(s))"
    assert f"preflight: {command}: {line}" in result.err
    result = cli(command, "--db", db, "--migrations", MIGRATIONS, "--json")
    report = json.loads(result.out)
    assert report["database_exists"] is False and report["note"].startswith(line)
    assert not db.exists() and folder_state(data_dir, strict=True) == {}


def test_an_existing_database_gets_no_such_note(
    cli: Callable[..., Result], make_db: Callable, data_dir: Path
) -> None:
    db = make_db("v0.9.5")
    result = cli("status", "--db", db, "--migrations", MIGRATIONS, "--json")
    report = json.loads(result.out)
    assert report["database_exists"] is True and report["note"] is None
    assert "no database" not in result.err and "empty database" not in result.err


def test_an_empty_file_is_named_as_such(cli: Callable[..., Result], data_dir: Path) -> None:
    db = data_dir / "app.db"
    db.touch()
    result = cli("status", "--db", db, "--migrations", MIGRATIONS, "--json")
    assert json.loads(result.out)["note"].startswith(f"an empty database file at {db}: a start")


def test_check_at_head_prints_one_line(cli: Callable[..., Result], data_dir: Path) -> None:
    db = data_dir / "app.db"
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    before = folder_state(data_dir)
    result = cli("check", "--db", db, "--migrations", MIGRATIONS)
    assert result.code == 0, result
    assert result.err.splitlines() == [
        "preflight: check: at head (5 applied, last 005_retire_starpunk_schema_migrations.sql): "
        "a start would change nothing"
    ]
    assert folder_state(data_dir) == before
