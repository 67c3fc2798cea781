"""What an upgrade destroys, with the guard's own files: counted inside the one transaction,
on the real data, before COMMIT. Lost rows nobody asked for are refused (exit 9, the
database byte-identical, the app not started); declared or accepted losses run and are
reported; a cleanup is decided by the rows themselves. Every rule both ways.

Real SQLite files, the real command in a subprocess (`conftest.spawn`).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import dump, folder_state, rows, sha, spawn

HISTORY = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "email TEXT, active INTEGER NOT NULL DEFAULT 1);\n",
    "002_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, "
    "user_id INTEGER REFERENCES users (id), title TEXT, body TEXT);\n",
    "003_tokens.sql": "CREATE TABLE tokens (id INTEGER PRIMARY KEY, "
    "user_id INTEGER REFERENCES users (id), token TEXT NOT NULL);\n",
}

# The 12-step rebuild with a WHERE left over from testing: keeps 47 of the 113 notes.
REBUILD = """PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE notes_new (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id),
    title TEXT, body TEXT);
INSERT INTO notes_new (id, user_id, title, body)
    SELECT id, user_id, title, body FROM notes WHERE user_id < 5;
DROP TABLE notes;
ALTER TABLE notes_new RENAME TO notes;
COMMIT;
PRAGMA foreign_keys = ON;
"""


@dataclass
class App:
    """An app's data folder and migrations; `guard` runs the real command on it."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "data" / "app.db"

    @property
    def folder(self) -> Path:
        return self.root / "migrations"

    @property
    def started(self) -> Path:
        return self.root / "app-started"

    def add(self, name: str, text: str) -> str:
        number = len(list(self.folder.glob("*"))) + 1
        file = f"{number:03d}_{name}.{'py' if text.startswith('def ') else 'sql'}"
        (self.folder / file).write_text(text)
        return file

    def guard(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return spawn(
            *args,
            env={"PREFLIGHT_DB": str(self.db), "PREFLIGHT_MIGRATIONS": str(self.folder), **env},
        )

    def start(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`preflight run ARGS -- touch app-started`: the app starts only if the guard lets it."""
        return self.guard("run", *args, "--", "touch", str(self.started), **env)

    def execute(self, *sql: str) -> None:
        conn = sqlite3.connect(self.db)
        with conn:
            for s in sql:
                conn.execute(s)
        conn.close()

    def count(self, table: str) -> int:
        return int(rows(self.db, f"SELECT count(*) FROM {table}")[0][0])

    def unchanged(self) -> tuple[str, list[str]]:
        return sha(self.db), dump(self.db)

    def strict_then_plain(
        self,
    ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        """`--strict` refuses the pending upgrade and changes nothing; without it, it runs."""
        before = self.unchanged()
        strict = self.start("--strict")
        assert strict.returncode == 9, strict.stderr
        assert self.unchanged() == before and not self.started.exists()
        (self.db.parent / "app.db.preflight-failure.json").unlink()
        done = self.start()
        assert done.returncode == 0, done.stderr
        return strict, done

    def status(self) -> dict[str, object]:
        done = self.guard("status", "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture
def app(tmp_path: Path) -> App:
    """At head with 10 users (4 of them below id 5), 113 notes (47 by users below 5) and 20
    tokens."""
    app = App(tmp_path)
    app.folder.mkdir()
    (tmp_path / "data").mkdir()
    for name, text in HISTORY.items():
        (app.folder / name).write_text(text)
    done = app.guard("migrate")
    assert done.returncode == 0, done.stderr
    app.execute(
        *(
            f"INSERT INTO users VALUES ({i}, 'user {i}', 'u{i}@example.org', {i % 2})"
            for i in range(1, 11)
        ),
        *(
            f"INSERT INTO notes VALUES ({i}, {1 + (i - 1) % 4 if i <= 47 else 5 + (i - 48) % 6}, "
            f"'title {i}', 'body {i}')"
            for i in range(1, 114)
        ),
        *(f"INSERT INTO tokens VALUES ({i}, {1 + i % 10}, 'token {i}')" for i in range(1, 21)),
    )
    return app


def test_a_leftover_where_in_a_rebuild_is_refused_and_nothing_changes(app: App) -> None:
    name = app.add("rebuild_notes", REBUILD)
    before = app.unchanged()
    done = app.start()
    assert done.returncode == 9, done.stderr
    error = done.stderr.splitlines()[-1]
    assert f"{name}: notes: 66 of 113 rows lost" in error
    assert "rolled back; the database was not changed" in error
    assert "-- preflight: loses notes" in error and "PREFLIGHT_ACCEPT_LOSS=notes" in error
    assert app.unchanged() == before
    assert not app.started.exists()
    record = json.loads((app.db.parent / "app.db.preflight-failure.json").read_text())
    assert record["loss"] == ["notes"] and record["exit_code"] == 9


def test_the_same_rebuild_declared_in_its_file_runs_and_reports_the_count(app: App) -> None:
    name = app.add("rebuild_notes", "-- preflight: loses notes\n" + REBUILD)
    done = app.start()
    assert done.returncode == 0, done.stderr
    assert app.started.exists() and app.count("notes") == 47
    line = next(x for x in done.stderr.splitlines() if "loss: notes" in x)
    assert "66 of 113 rows lost (declared in the migration)" in line and name in line
    backup = line.split("the backup ")[1].split(" holds")[0]
    assert rows(Path(backup), "SELECT count(*) FROM notes") == [(113,)]
    lost = app.status()["last_run_loss"]
    assert lost == [
        {
            "table": "notes",
            "kind": "lost",
            "count": 66,
            "of": 113,
            "migrations": [name],
            "column": None,
            "why": "",
            "accepted": "declared",
            "backup": backup,
        }
    ]
    # The run record is in the database's history log, and only the last run's is shown.
    assert rows(app.db, "SELECT count(*) FROM _preflight_log WHERE event = 'loss'") == [(1,)]
    app.add("index", "CREATE INDEX notes_user ON notes (user_id);")
    assert app.start().returncode == 0
    assert app.status()["last_run_loss"] == []


def test_accept_loss_runs_the_refused_upgrade_once(app: App) -> None:
    app.add("rebuild_notes", REBUILD)
    assert app.start().returncode == 9
    assert app.start().returncode == 11  # the failure record stops the same files
    done = app.start(PREFLIGHT_ACCEPT_LOSS="notes")
    assert done.returncode == 0, done.stderr
    assert "failure record: the loss it refused (notes) is accepted now" in done.stderr
    assert "66 of 113 rows lost (accepted by PREFLIGHT_ACCEPT_LOSS)" in done.stderr
    assert app.count("notes") == 47 and app.started.exists()
    assert not (app.db.parent / "app.db.preflight-failure.json").exists()
    # Left set on the next start, it is said, and accepts nothing.
    again = app.start(PREFLIGHT_ACCEPT_LOSS="notes")
    assert again.returncode == 0, again.stderr
    assert "nothing to run, nothing accepted; unset it" in again.stderr


def test_accept_loss_does_not_cover_another_table(app: App) -> None:
    app.add("rebuild_notes", REBUILD)
    before = app.unchanged()
    done = app.start(PREFLIGHT_ACCEPT_LOSS="tokens")
    assert done.returncode == 9, done.stderr
    assert "notes: 66 of 113 rows lost" in done.stderr
    assert "accepted nothing in tokens" not in done.stderr  # refused before that is said
    assert app.unchanged() == before


@pytest.mark.parametrize(
    ("flag", "variable", "runs"),
    [
        (None, None, False),  # the default accepts nothing
        (None, "notes", True),
        ("notes", "users", True),  # the flag beats the variable
        ("users", "notes", False),
    ],
)
def test_accept_loss_flag_beats_variable_beats_default(
    app: App, flag: str | None, variable: str | None, runs: bool
) -> None:
    app.add("rebuild_notes", REBUILD)
    args = ("--accept-loss", flag) if flag else ()
    env = {"PREFLIGHT_ACCEPT_LOSS": variable} if variable else {}
    done = app.start(*args, **env)
    assert done.returncode == (0 if runs else 9), done.stderr
    assert app.count("notes") == (47 if runs else 113)


@pytest.mark.parametrize("value", ["notez", "notes.bdy", "notes.", "notes users..x"])
def test_accept_loss_naming_no_table_is_exit_2(app: App, value: str) -> None:
    app.add("rebuild_notes", REBUILD)
    before = app.unchanged()
    done = app.start(PREFLIGHT_ACCEPT_LOSS=value)
    assert done.returncode == 2, done.stderr
    assert "PREFLIGHT_ACCEPT_LOSS" in done.stderr.splitlines()[-1]
    assert app.unchanged() == before and not app.started.exists()


def test_check_names_the_loss_before_deploying(app: App) -> None:
    app.add("rebuild_notes", REBUILD)
    before = folder_state(app.db.parent)
    done = app.guard("check")
    assert done.returncode == 9, done.stderr
    assert (
        "rehearsal on a private copy" in done.stderr and "notes: 66 of 113 rows lost" in done.stderr
    )
    assert folder_state(app.db.parent) == before
    # Accepted, the rehearsal passes (3: pending, clean) and its report names the loss.
    done = app.guard("check", "--json", PREFLIGHT_ACCEPT_LOSS="notes")
    assert done.returncode == 3, done.stderr
    loss = json.loads(done.stdout)["rehearsal_loss"]
    assert [(e["table"], e["kind"], e["count"], e["accepted"]) for e in loss] == [
        ("notes", "lost", 66, "PREFLIGHT_ACCEPT_LOSS")
    ]
    assert folder_state(app.db.parent) == before


def test_a_rebuild_that_copies_everything_reports_nothing(app: App) -> None:
    app.add("rebuild_notes", REBUILD.replace(" WHERE user_id < 5", ""))
    done = app.start("--strict")
    assert done.returncode == 0, done.stderr
    assert "loss:" not in done.stderr and app.count("notes") == 113


def test_an_orphan_cleanup_runs_and_is_reported(app: App) -> None:
    app.execute(*(f"INSERT INTO notes VALUES ({i}, 99, 'orphan', 'x')" for i in range(200, 205)))
    app.add(
        "drop_orphans",
        REBUILD.replace("WHERE user_id < 5", "WHERE user_id IN (SELECT id FROM users)"),
    )
    done = app.start()
    assert done.returncode == 0, done.stderr
    assert "5 of 118 rows that could not live in the new table (broke the foreign key to users" in (
        done.stderr
    )
    assert app.count("notes") == 113
    assert app.status()["last_run_loss"][0]["kind"] == "cleanup"  # type: ignore[index]


def test_a_cleanup_that_also_drops_a_row_that_could_stay_is_refused(app: App) -> None:
    app.execute(*(f"INSERT INTO notes VALUES ({i}, 99, 'orphan', 'x')" for i in range(200, 205)))
    app.add(
        "drop_orphans",
        REBUILD.replace("WHERE user_id < 5", "WHERE user_id IN (SELECT id FROM users) AND id != 7"),
    )
    before = app.unchanged()
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert "notes: 1 of 118 rows lost" in done.stderr
    assert app.unchanged() == before


def test_rows_that_break_a_new_check_constraint_are_a_cleanup(app: App) -> None:
    app.execute("UPDATE notes SET title = '' WHERE id IN (1, 2, 3)")
    app.add(
        "title_required",
        REBUILD.replace(
            "title TEXT, body TEXT);", "title TEXT CHECK (length(title) > 0), body TEXT);"
        ).replace("WHERE user_id < 5", "WHERE length(title) > 0"),
    )
    done = app.start()
    assert done.returncode == 0, done.stderr
    assert "3 of 113 rows that could not live in the new table (failed a CHECK constraint" in (
        done.stderr
    )


def test_without_a_backup_a_cleanup_cannot_be_told_from_a_loss(app: App) -> None:
    app.execute(*(f"INSERT INTO notes VALUES ({i}, 99, 'orphan', 'x')" for i in range(200, 205)))
    app.add(
        "drop_orphans",
        REBUILD.replace("WHERE user_id < 5", "WHERE user_id IN (SELECT id FROM users)"),
    )
    before = app.unchanged()
    done = app.start(PREFLIGHT_BACKUP="never")
    assert done.returncode == 9, done.stderr
    assert "notes: 5 of 118 rows lost" in done.stderr and "PREFLIGHT_BACKUP=never" in done.stderr
    assert app.unchanged() == before


def test_drop_column_with_values_is_reported_and_strict_refuses_it_unless_declared(
    app: App,
) -> None:
    name = app.add("drop_body", "ALTER TABLE notes DROP COLUMN body;")
    strict, done = app.strict_then_plain()
    assert "notes: body: 113 of 113 values dropped with the column" in strict.stderr
    assert "nothing declares it (--strict)" in strict.stderr
    assert f"loss: notes: body: 113 of 113 values dropped with the column, by {name}" in done.stderr
    [entry] = app.status()["last_run_loss"]  # type: ignore[misc]
    assert (entry["kind"], entry["column"], entry["count"]) == ("column", "body", 113)


def test_drop_column_declared_passes_strict(app: App) -> None:
    app.add("drop_body", "-- preflight: loses notes.body\nALTER TABLE notes DROP COLUMN body;")
    done = app.start("--strict")
    assert done.returncode == 0, done.stderr
    assert "body: 113 of 113 values dropped with the column (declared in the migration)" in (
        done.stderr
    )


def test_drop_column_without_values_loses_nothing(app: App) -> None:
    app.execute("UPDATE notes SET body = NULL")
    app.add("drop_body", "ALTER TABLE notes DROP COLUMN body;")
    done = app.start("--strict")
    assert done.returncode == 0, done.stderr
    assert "loss:" not in done.stderr


def test_a_copy_that_leaves_a_column_out_is_reported_and_refused_under_strict(app: App) -> None:
    leaves_body_out = REBUILD.replace(" WHERE user_id < 5", "").replace(
        "(id, user_id, title, body)\n    SELECT id, user_id, title, body",
        "(id, user_id, title)\n    SELECT id, user_id, title",
    )
    app.add("rebuild_notes", leaves_body_out)
    strict, done = app.strict_then_plain()
    assert "notes: body: 113 of 113 values lost from a column that stays" in strict.stderr
    assert "loss: notes: body: 113 of 113 values lost from a column that stays" in done.stderr
    assert app.count("notes") == 113


def test_a_boolean_spelled_as_text_that_empties_users_is_refused(app: App) -> None:
    name = app.add(
        "rebuild_users",
        """CREATE TABLE users_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT,
    active BOOLEAN NOT NULL DEFAULT 1);
INSERT INTO users_new SELECT id, name, email, active FROM users WHERE active = 'true';
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
""",
    )
    before = app.unchanged()
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert f"{name}: users: 10 of 10 rows lost" in done.stderr
    assert app.unchanged() == before
    # Spelled as the app stores it, nothing is lost.
    (app.db.parent / "app.db.preflight-failure.json").unlink()
    (app.folder / name).write_text(
        (app.folder / name).read_text().replace(" WHERE active = 'true'", "")
    )
    assert app.start().returncode == 0 and app.count("users") == 10


@pytest.mark.parametrize("conflict", ["OR IGNORE", "OR REPLACE"])
def test_duplicates_dropped_by_a_new_unique_key_are_refused(app: App, conflict: str) -> None:
    migration = f"""CREATE TABLE users_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    email TEXT UNIQUE, active INTEGER NOT NULL DEFAULT 1);
INSERT {conflict} INTO users_new SELECT * FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
"""
    app.add("unique_email", migration)
    app.execute("UPDATE users SET email = 'shared@example.org' WHERE id IN (3, 4)")
    before = app.unchanged()
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert "users: 1 of 10 rows lost" in done.stderr
    assert app.unchanged() == before
    # Without duplicates the same file keeps every row.
    (app.db.parent / "app.db.preflight-failure.json").unlink()
    app.execute("UPDATE users SET email = 'u4@example.org' WHERE id = 4")
    assert app.start().returncode == 0 and app.count("users") == 10


def test_rows_a_trigger_deletes_are_refused(app: App) -> None:
    app.add(
        "tokens_reset",
        "CREATE TRIGGER users_renamed AFTER UPDATE OF name ON users "
        "BEGIN DELETE FROM tokens WHERE user_id = new.id; END;\n",
    )
    assert app.guard("migrate").returncode == 0
    name = app.add("capitalize", "UPDATE users SET name = upper(name);")
    before = app.unchanged()
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert f"{name}: tokens: 20 of 20 rows lost" in done.stderr
    assert app.unchanged() == before


def test_rows_a_trigger_deletes_with_their_parent_are_a_cleanup(app: App) -> None:
    app.add(
        "tokens_go_with_users",
        "CREATE TRIGGER users_gone AFTER DELETE ON users "
        "BEGIN DELETE FROM tokens WHERE user_id = old.id; END;\n",
    )
    assert app.guard("migrate").returncode == 0
    app.add("delete_user", "DELETE FROM notes WHERE user_id = 3; DELETE FROM users WHERE id = 3;")
    done = app.start("--strict", PREFLIGHT_ACCEPT_LOSS="users,notes")
    assert done.returncode == 0, done.stderr
    assert "tokens: 2 of 20 rows that could not live in the new table (broke the foreign key" in (
        done.stderr
    )
    assert "users: 1 of 10 rows deleted (accepted by PREFLIGHT_ACCEPT_LOSS)" in done.stderr


def test_explicit_deletes_and_drops_are_reported_and_strict_refuses_them(app: App) -> None:
    name = app.add("prune", "DELETE FROM notes WHERE user_id = 1;\nDROP TABLE tokens;")
    _, done = app.strict_then_plain()
    assert f"loss: notes: 12 of 113 rows deleted, by {name}" in done.stderr
    assert f"loss: tokens: 20 of 20 rows dropped with the table, by {name}" in done.stderr


def test_a_delete_beside_a_leftover_where_is_still_refused(app: App) -> None:
    app.add(
        "prune_and_rebuild", REBUILD.replace("BEGIN;", "BEGIN;\nDELETE FROM notes WHERE id = 100;")
    )
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert "notes: 65 of 113 rows lost" in done.stderr  # 66 gone, 1 of them deleted


def test_a_rename_away_rebuild_is_followed(app: App) -> None:
    app.add(
        "rebuild_notes",
        """ALTER TABLE notes RENAME TO notes_old;
CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id),
    title TEXT, body TEXT);
INSERT INTO notes SELECT * FROM notes_old WHERE user_id < 5;
DROP TABLE notes_old;
""",
    )
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert "notes: 66 of 113 rows lost" in done.stderr


def test_a_renamed_table_keeps_its_rows(app: App) -> None:
    app.add("rename", "ALTER TABLE tokens RENAME TO api_tokens;")
    done = app.start("--strict")
    assert done.returncode == 0, done.stderr
    assert "loss:" not in done.stderr and app.count("api_tokens") == 20


def test_a_python_migration_is_counted_too(app: App) -> None:
    name = app.add(
        "rebuild_notes",
        "def migrate(conn):\n"
        "    conn.execute('CREATE TABLE notes_new AS SELECT * FROM notes WHERE user_id < 5')\n"
        "    conn.execute('DROP TABLE notes')\n"
        "    conn.execute('ALTER TABLE notes_new RENAME TO notes')\n",
    )
    done = app.start()
    assert done.returncode == 9, done.stderr
    assert f"{name}: notes: 66 of 113 rows lost" in done.stderr


@pytest.mark.parametrize(
    ("comment", "why"),
    [
        ("-- preflight: lose notes", "is not a preflight declaration"),
        ("-- preflight: loses", "malformed loss declaration"),
        ("-- preflight: loses notes.", "malformed loss declaration"),
    ],
)
def test_a_malformed_declaration_is_exit_5_naming_file_and_line(
    app: App, comment: str, why: str
) -> None:
    name = app.add("rebuild_notes", "-- rebuild notes\n" + comment + "\n" + REBUILD)
    before = app.unchanged()
    done = app.start()
    assert done.returncode == 5, done.stderr
    assert f"{name}: line 2:" in done.stderr and why in done.stderr
    assert app.unchanged() == before and not app.started.exists()


def test_a_fresh_build_has_nothing_to_lose(tmp_path: Path) -> None:
    app = App(tmp_path)
    app.folder.mkdir()
    (tmp_path / "data").mkdir()
    for name, text in HISTORY.items():
        (app.folder / name).write_text(text)
    app.add("seed", "INSERT INTO users VALUES (1, 'a', NULL, 1), (9, 'b', NULL, 1);")
    app.add("prune_seed", "DELETE FROM users WHERE id > 5;")
    done = app.start("--strict")
    assert done.returncode == 0, done.stderr
    assert "loss:" not in done.stderr


def test_values_an_update_clears_are_reported_and_refused_under_strict(app: App) -> None:
    app.add("clear_bodies", "UPDATE notes SET body = NULL WHERE id <= 10;")
    strict, done = app.strict_then_plain()
    assert "notes: body: 10 of 113 values lost from a column that stays" in strict.stderr
    assert "loss: notes: body: 10 of 113 values lost from a column that stays" in done.stderr


def test_without_a_backup_values_are_counted_when_the_run_begins(app: App) -> None:
    app.add("drop_body", "ALTER TABLE notes DROP COLUMN body;")
    done = app.start(PREFLIGHT_BACKUP="never")
    assert done.returncode == 0, done.stderr
    assert "loss: notes: body: 113 of 113 values dropped with the column" in done.stderr
    assert "no backup holds it (PREFLIGHT_BACKUP=never)" in done.stderr


def test_values_a_trigger_clears_in_another_table_are_reported(app: App) -> None:
    app.add(
        "hide_bodies",
        "CREATE TRIGGER users_renamed AFTER UPDATE OF name ON users "
        "BEGIN UPDATE notes SET body = NULL WHERE user_id = new.id; END;\n",
    )
    assert app.guard("migrate").returncode == 0
    name = app.add("capitalize", "UPDATE users SET name = upper(name) WHERE id = 1;")
    _, done = app.strict_then_plain()
    assert f"loss: notes: body: 12 of 113 values lost from a column that stays, by {name}" in (
        done.stderr
    )
