"""Rolling the image back without losing data: v2 stores its down steps when it upgrades, and
v1 started with PREFLIGHT_DOWNGRADE=apply runs them, verified like an upgrade; without the
variable, without a stored down step, or with one that fails, the database stays as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import folder_state, rows, sha
from downgradekit import (
    LAYOUTS,
    V1,
    V2,
    Scene,
    app_rows,
    app_schema,
    everything,
    execute,
    name_of,
)

APPLY = {"PREFLIGHT_DOWNGRADE": "apply"}


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    """A v1 database with the app's rows, upgraded by v2, with more rows written on v2."""
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    assert s.guard("v1").returncode == 0
    s.write_v1_rows()
    upgraded = s.guard("v2")
    assert upgraded.returncode == 0, upgraded.stderr
    s.write_v2_rows()
    return s


def reference_v1(tmp_path: Path, layout: str) -> Path:
    """A database v1 builds from empty: the schema a downgrade must end at."""
    other = Scene(tmp_path / "reference", layout)
    other.db.parent.mkdir(parents=True)
    assert other.guard("v1").returncode == 0
    return other.db


@pytest.mark.parametrize("layout", LAYOUTS)
def test_v1_rolls_back_v2_keeping_every_row_of_its_tables_and_v2_upgrades_again(
    tmp_path: Path, layout: str
) -> None:
    s = Scene(tmp_path / "app", layout)
    s.db.parent.mkdir(parents=True)
    assert s.guard("v1").returncode == 0
    s.write_v1_rows()
    assert s.guard("v2").returncode == 0
    s.write_v2_rows()
    users = app_rows(s.db, "users", "id, name")
    posts = app_rows(s.db, "posts", "id, user_id, title")

    down = s.guard("v1", "run", "--", "true", **APPLY)
    assert down.returncode == 0, down.stderr
    assert app_schema(s.db) == app_schema(reference_v1(tmp_path, layout))
    assert app_rows(s.db, "users", "id, name") == users  # carol, written on v2, is kept
    assert app_rows(s.db, "posts", "id, user_id, title") == posts
    undone = [name_of(stem, layout) for stem in ("004_tag_weight", "003_tags")]
    assert f"downgrade: 2 migration(s) to undo, newest first: {', '.join(undone)}" in down.stderr
    assert "downgrade: drops table tags (2 row(s))" in down.stderr
    assert "downgrade: drops column users.email (3 row(s), 2 with a value)" in down.stderr
    assert "-pre-migrate.db" in down.stderr  # a verified backup came first
    status = s.guard("v1", "status", "--json")
    assert status.returncode == 0, status.stderr  # at head, no variable needed any more
    report = json.loads(status.stdout)
    assert [a["name"] for a in report["applied"]] == report["migrations"]
    assert report["undo"] == [] and report["undoable"] == report["migrations"][::-1]

    again = s.guard("v2")
    assert again.returncode == 0, again.stderr
    assert app_rows(s.db, "users", "id, name, email") == [(i, n, None) for i, n in users]
    assert app_rows(s.db, "posts", "id, user_id, title") == posts
    assert s.guard("v2", "status").returncode == 0


def test_the_log_says_which_migrations_are_undone_and_the_cache_makes_the_next_start_a_no_op(
    scene: Scene,
) -> None:
    assert scene.guard("v1", **APPLY).returncode == 0
    log = rows(scene.db, "SELECT event, name FROM _preflight_log WHERE event = 'downgraded'")
    assert log == [("downgraded", "004_tag_weight.sql"), ("downgraded", "003_tags.sql")]
    state = folder_state(scene.db.parent)
    rerun = scene.guard("v1", "run", "--", "true", **APPLY)
    assert rerun.returncode == 0 and "as verified before" in rerun.stderr  # the quick start
    assert folder_state(scene.db.parent) == state


@pytest.mark.parametrize("how", ["default", "refuse-variable", "flag-beats-variable"])
def test_without_apply_an_older_image_refuses_and_changes_nothing(scene: Scene, how: str) -> None:
    state = folder_state(scene.db.parent)
    args: tuple[str, ...] = ("migrate",)
    extra = {}
    if how == "refuse-variable":
        extra = {"PREFLIGHT_DOWNGRADE": "refuse"}
    elif how == "flag-beats-variable":
        args, extra = ("migrate", "--downgrade", "refuse"), APPLY
    done = scene.guard("v1", *args, **extra)
    assert done.returncode == 5, done.stderr
    assert (
        "database is newer than these migration files: 003_tags.sql, 004_tag_weight.sql "
        "applied but missing" in done.stderr
    )
    assert "roll back with PREFLIGHT_DOWNGRADE=apply: their down steps are stored" in done.stderr
    assert folder_state(scene.db.parent) == state  # not even a backup


def test_the_flag_beats_the_variable_towards_apply_too(scene: Scene) -> None:
    done = scene.guard("v1", "migrate", "--downgrade", "apply", PREFLIGHT_DOWNGRADE="refuse")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"PREFLIGHT_DOWNGRADE": "yes"}, "PREFLIGHT_DOWNGRADE='yes' is not valid"),
        ({"PREFLIGHT_DOWNGRADE": "apply", "PREFLIGHT_TOOL": "alembic"}, "not --tool alembic"),
    ],
    ids=["bad-value", "with-a-tool"],
)
def test_a_bad_downgrade_setting_is_a_usage_error_before_anything(
    scene: Scene, extra: dict[str, str], message: str
) -> None:
    state = folder_state(scene.db.parent)
    for command in (("migrate",), ("run", "--", "true"), ("status",)):
        done = scene.guard("v1", *command, **extra)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert folder_state(scene.db.parent) == state


FAILURES = {
    # fails on the rows: bob has two posts on v2, and the down step wants one post a user
    "statement-fails-on-the-data": (
        "ALTER TABLE users DROP COLUMN email;\nDROP TABLE tags;\n"
        "CREATE UNIQUE INDEX one_post_a_user ON posts (user_id);\nDROP INDEX one_post_a_user;\n",
        "UNIQUE constraint failed",
    ),
    "leaves-another-schema": (
        "DROP TABLE tags;\n",  # forgets users.email
        "downgrade: the down steps leave a schema that differs from what this image's "
        "migrations make: users.email",
    ),
    # a rebuild of posts (which v1 keeps) whose copy leaves rows behind: the loss ledger
    # counts a downgrade's steps as it counts an upgrade's
    "loses-rows-of-a-table-that-stays": (
        "ALTER TABLE users DROP COLUMN email;\nDROP TABLE tags;\n"
        "CREATE TABLE posts_new (id INTEGER PRIMARY KEY,"
        " user_id INTEGER NOT NULL REFERENCES users (id), title TEXT NOT NULL);\n"
        "INSERT INTO posts_new SELECT id, user_id, title FROM posts WHERE id < 3;\n"
        "DROP TABLE posts;\nALTER TABLE posts_new RENAME TO posts;\n"
        "CREATE INDEX ix_posts_user ON posts (user_id);\n",
        "003_tags.sql: posts: 2 of 4 rows lost: no statement asked for it (a copy's WHERE or "
        "JOIN, OR IGNORE/REPLACE, a trigger or a cascade); rolled back; the database was not "
        "changed; if that loss is meant, accept it for one start "
        "(PREFLIGHT_ACCEPT_LOSS=posts, or --accept-loss); otherwise restore the pre-migrate "
        "backup taken before the upgrade instead",
    ),
    "leaves-orphans": (
        "ALTER TABLE users DROP COLUMN email;\nDROP TABLE tags;\nDELETE FROM users WHERE id = 2;\n",
        "the migrations leave 2 foreign key violation(s)",
    ),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failing_down_step_exits_9_rolled_back_and_is_not_tried_again(
    tmp_path: Path, failure: str
) -> None:
    down, message = FAILURES[failure]
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    s.release("v2", (*V1, (V2[2][0], V2[2][1], down), V2[3]))
    assert s.guard("v1").returncode == 0
    s.write_v1_rows()
    assert s.guard("v2").returncode == 0
    s.write_v2_rows()
    execute(s.db, "INSERT INTO posts (user_id, title) VALUES (2, 'bob again')")
    before, data = everything(s.db), sha(s.db)
    failed = s.guard("v1", **APPLY)
    assert failed.returncode == 9, failed.stderr
    assert message in failed.stderr
    assert "rolled back; the database was not changed" in failed.stderr
    assert everything(s.db) == before and sha(s.db) == data
    record = json.loads((s.db.parent / "app.db.preflight-failure.json").read_text())
    assert record["restored"] is True and record["migration"] == "003_tags.sql"
    again = s.guard("v1", **APPLY)
    assert again.returncode == 11 and everything(s.db) == before
    # The newer image still runs on it.
    assert s.guard("v2", "run", "--", "true").returncode == 0


def test_a_failing_smoke_command_after_the_downgrade_restores_the_backup(scene: Scene) -> None:
    before = everything(scene.db)
    failed = scene.guard("v1", "migrate", "--smoke", "exit 3", **APPLY)
    assert failed.returncode == 9, failed.stderr
    assert "smoke command exited 3" in failed.stderr
    assert "the database was restored from" in failed.stderr
    assert everything(scene.db) == before


def test_what_a_downgrade_drops_is_its_own_to_drop_even_under_strict(scene: Scene) -> None:
    """The tables and columns the older schema lacks are the downgrade's to drop: reported
    with the backup that holds them, never refused (rows lost elsewhere are: FAILURES)."""
    users = app_rows(scene.db, "users", "id, name")
    done = scene.guard("v1", "migrate", "--strict", **APPLY)
    assert done.returncode == 0, done.stderr
    lacks = "(the older release lacks it: the downgrade drops it)"
    assert f"loss: tags: 2 of 2 rows dropped with the table {lacks}" in done.stderr
    assert f"loss: users: email: 2 of 2 values dropped with the column {lacks}" in done.stderr
    assert "declared in the migration" not in done.stderr
    assert app_rows(scene.db, "users", "id, name") == users


@pytest.mark.parametrize(
    "newer",
    ["no-down-section", "empty-down-section", "python"],
)
def test_a_migration_without_a_down_step_is_refused_by_name(tmp_path: Path, newer: str) -> None:
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    v2 = s.release("v2", V2)
    if newer == "no-down-section":
        (v2 / "005_audit.sql").write_text("-- migrate:up\nCREATE TABLE audit (id INTEGER);\n")
        name = "005_audit.sql"
    elif newer == "empty-down-section":
        (v2 / "005_audit.sql").write_text(
            "-- migrate:up\nCREATE TABLE audit (id INTEGER);\n-- migrate:down\n"
        )
        name = "005_audit.sql"
    else:
        (v2 / "005_audit.py").write_text(
            "def migrate(conn):\n    conn.execute('CREATE TABLE audit (id INTEGER)')\n"
        )
        name = "005_audit.py"
    assert s.guard("v1").returncode == 0
    upgraded = s.guard("v2")
    assert upgraded.returncode == 0, upgraded.stderr
    if newer == "empty-down-section":
        assert "005_audit.sql: its down part runs no statement; not kept" in upgraded.stderr
    status = s.guard("v2", "status", "--json")
    assert json.loads(status.stdout)["undoable"] == []  # the newest cannot be undone
    state = folder_state(s.db.parent)
    done = s.guard("v1", **APPLY)
    assert done.returncode == 5, done.stderr
    assert f"cannot downgrade to 002_posts.sql: {name} applied without a down step" in done.stderr
    assert folder_state(s.db.parent) == state
    plain = s.guard("v1")
    assert plain.returncode == 5 and f"({name} has no down step stored)" in plain.stderr


def test_an_image_between_two_undoable_migrations_downgrades_to_its_own_head(scene: Scene) -> None:
    """v2 without 004: only 004 is undone, and `status` from v2 lists what can be undone."""
    status = scene.guard("v2", "status", "--json")
    assert json.loads(status.stdout)["undoable"] == [
        "004_tag_weight.sql",
        "003_tags.sql",
        "002_posts.sql",
        "001_users.sql",
    ]
    middle = scene.release("v1.5", V2[:3])
    assert middle.is_dir()
    done = scene.guard("v1.5", **APPLY)
    assert done.returncode == 0, done.stderr
    assert app_rows(scene.db, "tags", "id, post_id, tag") == [(1, 1, "greeting"), (2, 3, "new")]


def test_a_stored_down_step_that_changed_is_refused(scene: Scene) -> None:
    execute(
        scene.db, "UPDATE _preflight_down SET sql = 'DROP TABLE users;' WHERE name = '003_tags.sql'"
    )
    state = folder_state(scene.db.parent)
    done = scene.guard("v1", **APPLY)
    assert done.returncode == 5, done.stderr
    assert "003_tags.sql (stored down step): its text does not hash to the sha256" in done.stderr
    assert folder_state(scene.db.parent) == state


def test_an_edited_file_in_the_older_image_is_refused(scene: Scene) -> None:
    older = scene.release("other", V1)
    path = older / "002_posts.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    state = folder_state(scene.db.parent)
    done = scene.guard("other", **APPLY)
    assert done.returncode == 5, done.stderr
    assert "002_posts.sql: edited after it was applied" in done.stderr
    assert folder_state(scene.db.parent) == state


def test_an_image_with_a_file_the_database_never_applied_is_refused(tmp_path: Path) -> None:
    """The database went 002 -> 005 -> 006; an image with 003 is no older release of it."""
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    s.release("v2", (*V1, ("005_tags", *V2[2][1:]), ("006_tag_weight", *V2[3][1:])))
    assert s.guard("v2").returncode == 0
    s.release("other", (*V1, ("003_other", "CREATE TABLE other (x);\n", "DROP TABLE other;\n")))
    state = folder_state(s.db.parent)
    for extra in ({}, APPLY):
        done = s.guard("other", **extra)
        assert done.returncode == 5, done.stderr
        assert (
            "005_tags.sql, 006_tag_weight.sql applied but missing from the migrations folder, "
            "and 003_other.sql was never applied" in done.stderr
        )
    assert folder_state(s.db.parent) == state


def test_check_rehearses_the_downgrade_on_a_copy_and_status_shows_it(scene: Scene) -> None:
    state = folder_state(scene.db.parent)
    check = scene.guard("v1", "check", **APPLY)
    assert check.returncode == 3, check.stderr
    assert "rehearse: 2 down step(s) apply cleanly to a private copy" in check.stderr
    status = scene.guard("v1", "status", "--json", **APPLY)
    assert status.returncode == 3, status.stderr
    report = json.loads(status.stdout)
    assert report["undo"] == ["004_tag_weight.sql", "003_tags.sql"] and report["pending"] == []
    assert report["drift"].startswith("not checked: the database is above this image's")
    refused = scene.guard("v1", "status", "--json")
    assert refused.returncode == 5 and json.loads(refused.stdout)["exit_code"] == 5
    assert folder_state(scene.db.parent) == state


def test_check_reports_a_failing_down_step_and_touches_nothing(tmp_path: Path) -> None:
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    s.release("v2", (*V1, (V2[2][0], V2[2][1], "DROP TABLE tags;\n"), V2[3]))
    assert s.guard("v2").returncode == 0
    state = folder_state(s.db.parent)
    check = s.guard("v1", "check", **APPLY)
    assert check.returncode == 9, check.stderr
    assert "rehearsal on a private copy: downgrade: the down steps leave a schema" in check.stderr
    assert folder_state(s.db.parent) == state


def test_a_history_from_before_stored_down_steps_is_refused_by_name(scene: Scene) -> None:
    """A database upgraded by a guard that kept no down steps has no _preflight_down."""
    execute(scene.db, "DROP TABLE _preflight_down")
    state = folder_state(scene.db.parent)
    done = scene.guard("v1", **APPLY)
    assert done.returncode == 5
    assert "003_tags.sql, 004_tag_weight.sql applied without a down step stored" in done.stderr
    assert folder_state(scene.db.parent) == state


def test_an_older_guards_database_keeps_the_down_steps_of_its_next_upgrade(tmp_path: Path) -> None:
    """History from before stored down steps: the next upgrade creates the table in its own
    transaction, and what it applied can then be undone."""
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    assert s.guard("v1").returncode == 0
    execute(s.db, "DROP TABLE _preflight_down")  # as an older guard left it
    s.write_v1_rows()
    assert s.guard("v2").returncode == 0
    kept = rows(s.db, "SELECT name FROM _preflight_down ORDER BY version")
    assert kept == [("003_tags.sql",), ("004_tag_weight.sql",)]
    assert json.loads(s.guard("v2", "status", "--json").stdout)["undoable"] == [
        "004_tag_weight.sql",
        "003_tags.sql",
    ]
    done = s.guard("v1", **APPLY)
    assert done.returncode == 0, done.stderr
    assert app_rows(s.db, "users", "id, name") == [(1, "alice"), (2, "bob")]


def test_a_down_step_that_the_guard_would_refuse_is_not_kept(tmp_path: Path) -> None:
    s = Scene(tmp_path)
    s.db.parent.mkdir()
    s.release("v2", (*V1, (V2[2][0], V2[2][1], "DROP TABLE tags;\nVACUUM;\n")))
    upgraded = s.guard("v2")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "down step: 003_tags.sql (down): line 2: " in upgraded.stderr
    assert "not kept (an older image cannot undo it)" in upgraded.stderr
    assert rows(s.db, "SELECT version FROM _preflight_down ORDER BY version") == [(1,), (2,)]


def test_a_stamp_to_an_older_version_forgets_the_down_steps_above_it(scene: Scene) -> None:
    stamped = scene.guard("v2", "stamp", "2", "--force")
    assert stamped.returncode == 0, stamped.stderr
    assert rows(scene.db, "SELECT version FROM _preflight_down ORDER BY version") == [(1,), (2,)]
