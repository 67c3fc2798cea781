"""A downgrade killed anywhere (SIGKILL at each fault point) leaves the database as v2 left it
or exactly downgraded, never in between, with its history and stored down steps moving with
the schema; the next start finishes the job. The same for the upgrade that stores them.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import dump, rows
from downgradekit import Scene, execute

APPLY = {"PREFLIGHT_DOWNGRADE": "apply"}


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def upgraded(root: Path) -> Scene:
    """v1 with rows, upgraded by v2, with rows written on v2."""
    s = Scene(root)
    s.db.parent.mkdir(parents=True)
    assert s.guard("v1").returncode == 0
    s.write_v1_rows()
    assert s.guard("v2").returncode == 0
    s.write_v2_rows()
    return s


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The two acceptable outcomes: as v2 left it ('v2'), and downgraded to v1 ('v1')."""
    s = upgraded(tmp_path_factory.mktemp("reference"))
    before = dump(s.db)
    assert s.guard("v1", **APPLY).returncode == 0
    return {"v2": before, "v1": dump(s.db)}


def outcome(db: Path, states: dict[str, list[str]]) -> str:
    """'v2' or 'v1' after proving the database whole; fails on anything in between."""
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    which = [name for name, d in states.items() if d == dump(db)]
    assert which, "the database is neither as v2 left it nor downgraded"
    history = [v for (v,) in rows(db, "SELECT version FROM _preflight_history ORDER BY version")]
    kept = [v for (v,) in rows(db, "SELECT version FROM _preflight_down ORDER BY version")]
    expected = [1, 2, 3, 4] if which[0] == "v2" else [1, 2]
    assert history == expected and kept == expected  # they move with the schema
    return which[0]


def no_leftovers(db: Path) -> None:
    assert not any(p.name.startswith(".") for p in (db.parent / "backups").iterdir())
    assert not list(db.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    "fault, command, expect",
    [
        ("backup-temp-written", "migrate", "v2"),
        ("backup-before-rename", "migrate", "v2"),
        ("statement", "migrate", "v2"),  # after 004's first down statement (DROP INDEX)
        ("statement@3", "migrate", "v2"),  # after 003's first (the column dropped)
        ("statement@4", "migrate", "v2"),  # after the last down statement
        ("before-commit", "migrate", "v2"),
        ("after-commit", "migrate", "v1"),
        ("before-exec", "run", "v1"),
    ],
)
def test_a_downgrade_killed_at_a_fault_point_leaves_v2_or_v1_and_the_next_start_finishes(
    tmp_path: Path, states: dict[str, list[str]], fault: str, command: str, expect: str
) -> None:
    s = upgraded(tmp_path)
    args = (command, "--", "true") if command == "run" else (command,)
    code, err = finish(s.start("v1", *args, PREFLIGHT_FAULT=fault, **APPLY))
    assert code == -signal.SIGKILL, err
    assert outcome(s.db, states) == expect
    again = s.guard("v1", "migrate", "--lock-timeout", "0", **APPLY)
    assert again.returncode == 0, again.stderr  # no stale lock, no failure record
    assert outcome(s.db, states) == "v1"
    no_leftovers(s.db)
    # And v2 upgrades it again.
    assert s.guard("v2").returncode == 0


def test_a_downgrade_killed_while_restoring_after_a_failed_smoke_refuses_until_restored(
    tmp_path: Path, states: dict[str, list[str]]
) -> None:
    s = upgraded(tmp_path)
    code, err = finish(
        s.start(
            "v1", "migrate", "--smoke", "false", PREFLIGHT_FAULT="restore-before-rename", **APPLY
        )
    )
    assert code == -signal.SIGKILL, err
    assert outcome(s.db, states) == "v1"  # committed, then killed before the rename
    record = json.loads((s.db.parent / "app.db.preflight-failure.json").read_text())
    assert record["restored"] is False and record["backup"]
    again = s.guard("v1", "migrate", "--lock-timeout", "0", **APPLY)
    assert again.returncode == 11 and "did not complete its restore" in again.stderr
    assert s.guard("v1", "restore", record["backup"]).returncode == 0
    assert outcome(s.db, states) == "v2"
    assert s.guard("v1", "clear-failure").returncode == 0
    assert s.guard("v1", **APPLY).returncode == 0
    assert outcome(s.db, states) == "v1"


@pytest.mark.parametrize("fault", ["statement@2", "before-commit"])
def test_an_upgrade_killed_before_commit_stores_no_down_step(tmp_path: Path, fault: str) -> None:
    """On a database whose history predates stored down steps: the table that keeps them is
    created in the upgrade's own transaction, and dies with it."""
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    assert s.guard("v1").returncode == 0
    s.write_v1_rows()
    execute(s.db, "DROP TABLE _preflight_down")  # as a guard before stored down steps left it
    before = dump(s.db)
    code, err = finish(s.start("v2", PREFLIGHT_FAULT=fault))
    assert code == -signal.SIGKILL, err
    assert dump(s.db) == before
    assert rows(s.db, "SELECT name FROM sqlite_master WHERE name = '_preflight_down'") == []
    assert s.guard("v2", "migrate", "--lock-timeout", "0").returncode == 0
    assert rows(s.db, "SELECT name FROM _preflight_down ORDER BY version") == [
        ("003_tags.sql",),
        ("004_tag_weight.sql",),
    ]
