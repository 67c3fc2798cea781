"""The statement classifier (issue 9 class 3): files written the way SQLite's documentation
and common runners write them are accepted in every mode and end exactly where plain
sqlite3 ends; what cannot be made safe inside the guard's one transaction is refused
(exit 5, the file and line named, nothing changed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import MIGRATIONS, dump, folder_state, rows, spawn
from hypothesis import given, settings
from hypothesis import strategies as st

from preflight.core.errors import HistoryError
from preflight.sources import migrations, statements
from preflight.sources.statements import RUN, SKIP, Statement

BASE = (
    "CREATE TABLE author (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
    "CREATE TABLE post (id INTEGER PRIMARY KEY, author_id INTEGER REFERENCES author(id), "
    "title TEXT);\n"
    "INSERT INTO author VALUES (1, 'ann'), (2, 'bob');\n"
    "INSERT INTO post VALUES (10, 1, 'hello'), (11, 2, 'again');\n"
)
BRACKETED = (
    "BEGIN TRANSACTION;\n"
    "CREATE TABLE tag (id INTEGER PRIMARY KEY, label TEXT UNIQUE);\n"
    "INSERT INTO tag (label) VALUES ('a;b'), ('c');\n"
    "ALTER TABLE author ADD COLUMN email TEXT;\n"
    "END TRANSACTION;\n"
)
# SQLite's documented 12-step rebuild (https://sqlite.org/lang_altertable.html#otheralter)
REBUILD = (
    "PRAGMA foreign_keys=OFF;\n"
    "BEGIN IMMEDIATE;\n"
    "CREATE TABLE new_post (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL "
    "REFERENCES author(id), title TEXT NOT NULL DEFAULT '');\n"
    "INSERT INTO new_post SELECT id, author_id, coalesce(title, '') FROM post;\n"
    "DROP TABLE post;\n"
    "ALTER TABLE new_post RENAME TO post;\n"
    "CREATE INDEX post_author ON post(author_id);\n"
    "PRAGMA foreign_key_check;\n"
    "COMMIT;\n"
    "PRAGMA foreign_keys=ON;\n"
)
DRIZZLE = (
    "CREATE TABLE comment (id INTEGER PRIMARY KEY, post_id INTEGER, body TEXT);\n"
    "--> statement-breakpoint\n"
    "COMMIT;--> statement-breakpoint\n"
    "BEGIN;--> statement-breakpoint\n"
    "INSERT INTO comment VALUES (1, 10, 'first');\n"
    "--> statement-breakpoint\n"
    "CREATE INDEX comment_post ON comment(post_id);\n"
    "--> statement-breakpoint\n"
    "ALTER TABLE author ADD COLUMN bio TEXT;\n"
)
PRAGMAS = (
    "PRAGMA legacy_alter_table=ON;\n"
    "PRAGMA defer_foreign_keys = ON;\n"
    "CREATE TRIGGER post_title AFTER INSERT ON post BEGIN\n"
    "  UPDATE post SET title = upper(new.title) WHERE id = new.id;\n"
    "END;\n"
    "ALTER TABLE tag ADD COLUMN color TEXT;\n"
    "PRAGMA user_version = 5;\n"
)  # legacy_alter_table left ON: the guard restores it
RENAME = (
    "CREATE VIEW titles AS SELECT title FROM tag_view_src;\n"
    "ALTER TABLE tag_view_src RENAME TO tag_source;\n"
)
HISTORY = {
    "001_base.sql": BASE,
    "002_tags.sql": BRACKETED,
    "003_rebuild.sql": REBUILD,
    "004_drizzle.sql": DRIZZLE,
    "005_pragmas.sql": PRAGMAS,
    "006_rename.sql": "CREATE TABLE tag_view_src (title TEXT);\n" + RENAME,
}


def plain_sqlite3(db: Path, files: dict[str, str]) -> None:
    """What `sqlite3 app.db < file` does for each file in order (a new connection each)."""
    for name in sorted(files):
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            if name.startswith("004"):  # drizzle: one transaction, split at the breakpoints
                conn.execute("BEGIN")
                for chunk in files[name].split("--> statement-breakpoint"):
                    if chunk.strip():
                        conn.execute(chunk)
                conn.execute("COMMIT")
            else:
                conn.executescript(files[name])
        finally:
            conn.close()


def content(db: Path) -> list[str]:
    """dump() without sqlite_sequence (the guard's history table uses AUTOINCREMENT)."""
    return [line for line in dump(db) if "sqlite_sequence" not in line]


def user_version(db: Path) -> int:
    return rows(db, "PRAGMA user_version")[0][0]


# ---------------------------------------------------------------- accepted, every mode


def test_runner_style_files_build_a_fresh_database_like_plain_sqlite3(
    cli, data_dir, tmp_path, make_migrations
):
    folder = make_migrations(HISTORY)
    db = data_dir / "app.db"
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    reference = tmp_path / "plain.db"
    plain_sqlite3(reference, HISTORY)
    assert content(db) == content(reference)
    assert user_version(db) == user_version(reference) == 5
    # the rename in 006 ran with legacy_alter_table back OFF: the view follows the table
    assert "tag_source" in rows(db, "SELECT sql FROM sqlite_master WHERE name='titles'")[0][0]
    assert rows(db, "SELECT name FROM _preflight_history ORDER BY version") == [
        (n,) for n in sorted(HISTORY)
    ]
    restart = spawn("run", "--db", db, "--migrations", folder, "--", "true")
    assert restart.returncode == 0, restart.stderr  # a no-op restart: nothing pending, no drift
    assert content(db) == content(reference)


@pytest.mark.parametrize("at", [1, 2, 3, 4, 5])
def test_untracked_database_built_by_plain_sqlite3_is_adopted_and_upgraded(
    cli, data_dir, tmp_path, make_migrations, at
):
    folder = make_migrations(HISTORY)
    db = data_dir / "app.db"
    plain_sqlite3(db, {k: v for k, v in HISTORY.items() if int(k[:3]) <= at})
    reference = tmp_path / "plain.db"
    plain_sqlite3(reference, HISTORY)
    state = folder_state(data_dir)
    checked = cli("check", "--db", db, "--migrations", folder)
    assert checked.code == 3, checked  # pending migrations would apply cleanly (rehearsed)
    assert folder_state(data_dir) == state
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert content(db) == content(reference)
    assert cli("check", "--db", db, "--migrations", folder).code == 0


def test_connection_pragmas_are_restored_after_each_migration() -> None:
    (m,) = [
        migrations.Migration(
            1,
            "001_x.sql",
            Path("001_x.sql"),
            "sql",
            "0" * 64,
            migrations.split_statements(PRAGMAS, "001_x.sql"),
        )
    ]
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE post (id INTEGER PRIMARY KEY, title TEXT)")
    conn.execute("CREATE TABLE tag (id INTEGER PRIMARY KEY)")
    conn.execute("PRAGMA recursive_triggers = ON")
    conn.execute("BEGIN IMMEDIATE")
    migrations.run_body(conn, m)
    assert conn.execute("PRAGMA legacy_alter_table").fetchone() == (0,)
    assert conn.execute("PRAGMA recursive_triggers").fetchone() == (1,)  # its own value kept
    assert conn.execute("PRAGMA user_version").fetchone() == (5,)
    conn.execute("ROLLBACK")
    assert conn.execute("PRAGMA user_version").fetchone() == (0,)  # transactional


@pytest.mark.parametrize(
    "text, actions",
    [
        (BRACKETED, [SKIP, RUN, RUN, RUN, SKIP]),
        ("begin;\nSELECT 1;\ncommit;", [SKIP, RUN, SKIP]),
        ("BEGIN DEFERRED TRANSACTION;\nSELECT 1;\nEND;", [SKIP, RUN, SKIP]),
        (
            "BEGIN EXCLUSIVE;\nSELECT 1;\nCOMMIT TRANSACTION;\nPRAGMA user_version = 2;",
            [SKIP, RUN, SKIP, RUN],
        ),
        (REBUILD, [SKIP, SKIP] + [RUN] * 6 + [SKIP, SKIP]),
        (DRIZZLE, [RUN, SKIP, SKIP, RUN, RUN, RUN]),
        (
            "BEGIN;\nSELECT 1;\nCOMMIT;\nPRAGMA foreign_keys=ON;\nBEGIN;\nSELECT 2;\nCOMMIT;",
            [SKIP, RUN, SKIP, SKIP, SKIP, RUN, SKIP],
        ),
        (PRAGMAS, [RUN, SKIP, RUN, RUN, RUN]),
        ("SAVEPOINT a;\nSELECT 1;\nROLLBACK TO a;\nRELEASE a;", [RUN] * 4),
        ("PRAGMA journal_mode;\nPRAGMA main.foreign_key_check;", [RUN, RUN]),
        ("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END;\nSELECT 2;", [RUN, RUN]),
    ],
    ids=[
        "bracket",
        "lower-case",
        "deferred-end",
        "exclusive-then-pragma",
        "12-step",
        "drizzle",
        "two-brackets",
        "pragmas",
        "savepoints",
        "harmless-queries",
        "trigger-begin-end",
    ],
)
def test_each_statement_gets_its_treatment(text: str, actions: list[str]) -> None:
    found = statements.classify("t.sql", statements.split_statements(text, "t.sql"))
    assert [s.action for s in found] == actions
    assert all(s.note for s in found if s.action == SKIP)


def test_a_file_that_only_brackets_nothing_executes_nothing(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "001_empty.sql").write_text("BEGIN;\n-- nothing yet\nCOMMIT;\n")
    (m,) = migrations.discover(tmp_path / "m")
    assert m.executes_nothing


def test_the_authorizer_still_denies_transaction_control_that_executes() -> None:
    # A statement the classifier would never let run, forced to RUN: SQLite must refuse it.
    m = migrations.Migration(
        1,
        "001_x.sql",
        Path("001_x.sql"),
        "sql",
        "0" * 64,
        (Statement("CREATE TABLE a (x);", 1), Statement("COMMIT;", 2, RUN)),
    )
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.Error, match="line 2: not authorized"):
        migrations.run_body(conn, m)
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


# ---------------------------------------------------------------- refused, every mode

REFUSED = [
    ("vacuum", "CREATE TABLE z (x);\nVACUUM;\n", "line 2: VACUUM is not allowed"),
    (
        "journal-mode",
        "PRAGMA journal_mode = WAL;\nCREATE TABLE z (x);\n",
        "line 1: PRAGMA journal_mode is not allowed",
    ),
    ("attach", "ATTACH DATABASE 'other.db' AS other;\n", "line 1: ATTACH is not allowed"),
    ("detach", "CREATE TABLE z (x);\nDETACH other;\n", "line 2: DETACH is not allowed"),
    (
        "rollback",
        "CREATE TABLE z (x);\nROLLBACK;\nCREATE TABLE y (x);\n",
        "line 2: ROLLBACK is not allowed",
    ),
    (
        "rollback-in-bracket",
        "BEGIN;\nCREATE TABLE z (x);\nROLLBACK TRANSACTION;\n",
        "line 3: ROLLBACK is not allowed",
    ),
    (
        "begin-after-statements",
        "CREATE TABLE z (x);\nBEGIN;\nCREATE TABLE y (x);\nCOMMIT;\n",
        "line 2: BEGIN is not allowed",
    ),
    ("begin-without-commit", "BEGIN;\nCREATE TABLE z (x);\n", "line 1: BEGIN is not allowed"),
    (
        "statement-after-commit",
        "BEGIN;\nCREATE TABLE z (x);\nCOMMIT;\nCREATE TABLE y (x);\n",
        "line 1: BEGIN is not allowed",
    ),
    (
        "commit-in-the-middle",
        "CREATE TABLE z (x);\nCOMMIT;\nCREATE TABLE y (x);\n",
        "line 2: COMMIT is not allowed",
    ),
    ("trailing-commit", "CREATE TABLE z (x);\nCOMMIT;\n", "line 2: COMMIT is not allowed"),
    (
        "statement-between-commit-and-begin",
        "BEGIN;\nCREATE TABLE z (x);\nCOMMIT;\nCREATE TABLE y (x);\nBEGIN;\nSELECT 1;\nCOMMIT;\n",
        "line 3: COMMIT is not allowed",
    ),
    (
        "nested-begin",
        "BEGIN;\nBEGIN;\nCREATE TABLE z (x);\nCOMMIT;\n",
        "line 2: BEGIN is not allowed",
    ),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_what_cannot_be_made_safe_is_refused_before_loading(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "006_x.sql").write_text(text)
    with pytest.raises(HistoryError) as info:
        migrations.discover(tmp_path / "m")
    assert f"006_x.sql: {message} in a migration (" in info.value.message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["migrate", "check", "status"])
@pytest.mark.parametrize(
    "text, message",
    [REFUSED[0][1:], REFUSED[6][1:], REFUSED[4][1:]],
    ids=["vacuum", "begin-after-statements", "rollback"],
)
def test_refusal_is_exit_5_in_every_mode_and_changes_nothing(
    cli, make_db, make_migrations, command, text, message
):
    db = make_db("v0.9.5")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    folder = make_migrations({"006_x.sql": text}, base=True)
    state = folder_state(db.parent)
    result = cli(command, "--db", db, "--migrations", folder)
    assert result.code == 5, result
    assert f"006_x.sql: {message}" in result.err
    assert folder_state(db.parent) == state


def test_refusal_on_a_fresh_build_creates_no_database(cli, data_dir, make_migrations):
    folder = make_migrations({"001_a.sql": BASE, "002_b.sql": "CREATE TABLE z (x);\nVACUUM;\n"})
    result = cli("migrate", "--db", data_dir / "app.db", "--migrations", folder)
    assert result.code == 5, result
    assert "002_b.sql: line 2: VACUUM is not allowed" in result.err
    assert folder_state(data_dir) == {}


# ---------------------------------------------------------------- linear splitting


def test_big_inputs_split_correctly() -> None:
    literal = "x; -- not a comment /* nor this */ it''s\n" * 50_000  # ~2 MB in one string
    inserts = "".join(f"INSERT INTO t VALUES ({i}, 'row; {i}');\n" for i in range(20_000))
    text = f"CREATE TABLE t (a, b);\n{inserts}INSERT INTO t VALUES (0, '{literal}');\nSELECT 1;"
    found = migrations.split_statements(text, "big.sql")
    assert len(found) == 20_003
    assert [s.line for s in found[:3]] == [1, 2, 3]
    assert found[20_001].line == 20_002 and found[20_001].sql.endswith("');")
    assert found[20_002].line == 20_003 + 50_000 and found[20_002].sql == "SELECT 1;"
    assert len(found[20_001].sql) == len(literal) + len("INSERT INTO t VALUES (0, '');")


FRAGMENTS = [
    "CREATE TABLE a(x)",
    "SELECT 1",
    ";",
    ";",
    "'",
    "''",
    '"',
    "`",
    "[",
    "]",
    "--",
    "/*",
    "*/",
    "\n",
    " ",
    "x",
    "BEGIN",
    "END",
    "CREATE TRIGGER t AFTER INSERT ON a ",
    "CASE WHEN 1 THEN 2 END",
    "é",
]


def naive_split(text: str) -> list[tuple[str, int]] | None:
    """The definition: a statement ends at each ';' where sqlite3.complete_statement agrees
    (quadratic, the old splitter); None where the tail is incomplete."""
    found, start = [], 0
    for i, ch in enumerate(text):
        if ch == ";" and sqlite3.complete_statement(text[start : i + 1]):
            found.append((start, i + 1))
            start = i + 1
    out = []
    for begin, end in found + ([(start, len(text))] if text[start:].strip() else []):
        chunk = text[begin:end]
        first = next(
            (
                m.start()
                for m in statements._significant(text, begin, end)
                if text[m.start()] != ";"
            ),
            None,
        )
        if first is None:
            continue
        if end == len(text) and begin == start and not sqlite3.complete_statement(chunk + ";"):
            return None
        out.append((chunk.strip(), text.count("\n", 0, first) + 1))
    return out


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join))
@settings(max_examples=400, deadline=None, database=None)
def test_linear_split_equals_sqlites_own_judgement_at_every_semicolon(text: str) -> None:
    expected = naive_split(text)
    try:
        got = [(s.sql, s.line) for s in migrations.split_statements(text, "t.sql")]
    except HistoryError:
        got = None
    assert got == expected
