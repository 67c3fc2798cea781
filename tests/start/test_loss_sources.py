"""What an upgrade destroys, once for the guard's own files and once for Alembic, through the
same start: rows vanishing from a table the run never touches are refused and the database
put back; declared or accepted, the same upgrade runs and the loss is reported in the log
and in `status --json`; a dropped column's values are reported, and refused under --strict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import dump, rows, sha
from sourcekit import Kit, execute, make_kit

SOURCES = ["files", "alembic"]
TRIGGER = (
    "CREATE TRIGGER users_renamed AFTER UPDATE OF name ON users "
    "BEGIN DELETE FROM posts WHERE user_id = new.id; END"
)


def add(kit: Kit, name: str, statement: str, declare: str = "") -> str:
    """A migration running one statement (which may hold semicolons), declaring `declare`."""
    if kit.name == "files":
        head = f"-- preflight: loses {declare}\n" if declare else ""
        return kit.add(name, f"{head}{statement};\n")
    head = f"# preflight: loses {declare}\n" if declare else ""
    return kit.add(name, python=f"{head}op.execute({statement!r})")


@pytest.fixture(params=SOURCES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Kit:
    """A source at head with 3 users, 7 posts, and a trigger (in the history) that deletes a
    user's posts when the user is renamed."""
    kit = make_kit(request.param, tmp_path)
    add(kit, "trigger", TRIGGER)
    first = kit.guard("migrate")
    assert first.returncode == 0, first.stderr
    execute(
        kit.db,
        *(f"INSERT INTO users (id, name) VALUES ({i}, 'user {i}')" for i in (1, 2, 3)),
        *(
            f"INSERT INTO posts (id, user_id, title) VALUES ({i}, {1 + i % 3}, 'post {i}')"
            for i in range(1, 8)
        ),
    )
    return kit


def failure_record(kit: Kit) -> Path:
    return kit.db.parent / "app.db.preflight-failure.json"


def test_rows_vanishing_from_a_table_the_run_never_touches_are_refused(kit: Kit) -> None:
    name = add(kit, "capitalize", "UPDATE users SET name = upper(name)")
    before = (sha(kit.db), dump(kit.db))
    done = kit.guard("migrate")
    assert done.returncode == 9, done.stderr
    assert f"{name}: posts: 7 of 7 rows lost" in done.stderr
    assert (sha(kit.db), dump(kit.db)) == before
    assert json.loads(failure_record(kit).read_text())["loss"] == ["posts"]


def test_declared_in_the_migration_the_same_loss_runs_and_is_reported(kit: Kit) -> None:
    name = add(kit, "capitalize", "UPDATE users SET name = upper(name)", declare="posts")
    done = kit.guard("migrate")
    assert done.returncode == 0, done.stderr
    assert f"loss: posts: 7 of 7 rows lost (declared in the migration), by {name}" in done.stderr
    assert rows(kit.db, "SELECT count(*) FROM posts") == [(0,)]
    status = kit.guard("status", "--json")
    assert status.returncode == 0, status.stderr
    [entry] = json.loads(status.stdout)["last_run_loss"]
    assert (entry["table"], entry["kind"], entry["count"], entry["accepted"]) == (
        "posts",
        "lost",
        7,
        "declared",
    )
    assert rows(Path(entry["backup"]), "SELECT count(*) FROM posts") == [(7,)]


def test_accept_loss_runs_the_refused_upgrade_once(kit: Kit) -> None:
    add(kit, "capitalize", "UPDATE users SET name = upper(name)")
    assert kit.guard("migrate").returncode == 9
    assert kit.guard("migrate").returncode == 11
    done = kit.guard("migrate", PREFLIGHT_ACCEPT_LOSS="posts")
    assert done.returncode == 0, done.stderr
    assert "7 of 7 rows lost (accepted by PREFLIGHT_ACCEPT_LOSS)" in done.stderr
    assert not failure_record(kit).exists()


def test_a_dropped_column_is_reported_and_refused_under_strict(kit: Kit) -> None:
    if kit.name == "files":
        name = kit.add("drop_title", "ALTER TABLE posts DROP COLUMN title;\n")
    else:
        name = kit.add("drop_title", python='op.drop_column("posts", "title")')
    before = (sha(kit.db), dump(kit.db))
    strict = kit.guard("migrate", "--strict")
    assert strict.returncode == 9, strict.stderr
    assert "posts: title: 7 of 7 values dropped with the column" in strict.stderr
    assert (sha(kit.db), dump(kit.db)) == before
    failure_record(kit).unlink()
    done = kit.guard("migrate")
    assert done.returncode == 0, done.stderr
    assert f"loss: posts: title: 7 of 7 values dropped with the column, by {name}" in done.stderr
    status = json.loads(kit.guard("status", "--json").stdout)
    assert [(e["kind"], e["column"], e["count"]) for e in status["last_run_loss"]] == [
        ("column", "title", 7)
    ]


def test_an_upgrade_that_loses_nothing_reports_nothing(kit: Kit) -> None:
    add(kit, "title_index", "CREATE INDEX ix_posts_title ON posts (title)")
    done = kit.guard("migrate", "--strict")
    assert done.returncode == 0, done.stderr
    assert "loss:" not in done.stderr
    assert json.loads(kit.guard("status", "--json").stdout)["last_run_loss"] == []
