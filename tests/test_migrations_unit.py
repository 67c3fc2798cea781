"""Unit tests for preflight.migrations: splitting, discovery/validation, run_body, fingerprints."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from preflight.core.errors import HISTORY, USAGE, HistoryError, UsageError
from preflight.sources import migrations

# ---------------------------------------------------------------- helpers


def write(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def sqls(text: str) -> list[str]:
    return [s.sql for s in migrations.split_statements(text, "t.sql")]


def open_tx() -> sqlite3.Connection:
    """A connection in autocommit mode with an explicit transaction open, like the guard's."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


# ---------------------------------------------------------------- split_statements


def test_split_plain_statements() -> None:
    assert sqls("CREATE TABLE a(x);\nCREATE TABLE b(y);\n") == [
        "CREATE TABLE a(x);",
        "CREATE TABLE b(y);",
    ]


@pytest.mark.parametrize(
    "text, expected_count",
    [
        ("INSERT INTO a VALUES ('x;y');", 1),
        ("INSERT INTO a VALUES ('it''s; fine');", 1),
        ('CREATE TABLE "we;ird" (x);', 1),
        ("CREATE TABLE [br;acket] (x);", 1),
        ("CREATE TABLE `back;tick` (x);", 1),
        ("CREATE TABLE a(x); -- comment; with; semicolons\nCREATE TABLE b(y);", 2),
        ("CREATE TABLE a(x /* not; a; split */);", 1),
        ("/* leading; comment */ CREATE TABLE a(x);", 1),
    ],
)
def test_semicolons_in_strings_and_comments_do_not_split(text: str, expected_count: int) -> None:
    found = sqls(text)
    assert len(found) == expected_count
    # nothing was lost: the concatenated statements hold every SQL token of the input
    assert migrations.tokens(" ".join(found)) == migrations.tokens(text)


def test_trigger_body_is_one_statement() -> None:
    text = (
        "CREATE TABLE a(x);\n"
        "CREATE TRIGGER trg AFTER INSERT ON a\n"
        "BEGIN\n"
        "  INSERT INTO b VALUES (new.x);\n"
        "  UPDATE b SET y = 'a;b' WHERE y IS NULL;\n"
        "END;\n"
        "CREATE TABLE b(y);\n"
    )
    found = migrations.split_statements(text, "t.sql")
    assert len(found) == 3
    assert found[1].sql.startswith("CREATE TRIGGER trg")
    assert found[1].sql.endswith("END;")
    assert "UPDATE b SET y = 'a;b'" in found[1].sql
    assert [s.line for s in found] == [1, 2, 7]


def test_final_statement_without_semicolon_is_kept() -> None:
    found = migrations.split_statements("CREATE TABLE a(x);\nCREATE TABLE b(y)\n", "t.sql")
    assert [s.sql for s in found] == ["CREATE TABLE a(x);", "CREATE TABLE b(y)"]
    assert found[1].line == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "-- just a comment\n",
        "-- one\n-- two;\n/* block; comment */\n",
        "/* only\n a block\n comment */",
        ";\n;;\n",
        "-- trailing ; \n ; ",
    ],
)
def test_comment_only_text_yields_no_statements(text: str) -> None:
    assert migrations.split_statements(text, "t.sql") == ()


def test_line_numbers() -> None:
    text = "CREATE TABLE a(x);\n\n\nCREATE TABLE b(\n  y\n);\n  CREATE TABLE c(z); CREATE TABLE d(w);\n"
    found = migrations.split_statements(text, "t.sql")
    assert [s.line for s in found] == [1, 4, 7, 7]
    assert found[1].sql == "CREATE TABLE b(\n  y\n);"


def test_line_number_points_at_sql_not_at_leading_comment() -> None:
    # A header comment before a statement: the line reported for the statement (used in every
    # "line N: ..." error) should be where its SQL starts, not where the comment starts.
    text = "-- header\n-- more header\n\nCREATE TABLE a(x);\n"
    (stmt,) = migrations.split_statements(text, "t.sql")
    assert stmt.line == 4


def test_forbidden_statement_after_comment_reports_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m", "001_x.sql", "CREATE TABLE a(x);\n-- now commit it\nCOMMIT;\n")
    with pytest.raises(HistoryError) as info:
        migrations.discover(path.parent)
    assert "001_x.sql" in info.value.message
    assert "line 3" in info.value.message


@pytest.mark.parametrize(
    "text, line",
    [
        ("INSERT INTO a VALUES ('oops);\n", 1),
        ("CREATE TABLE a(x);\nINSERT INTO a VALUES ('oops);\n", 2),
        ("CREATE TABLE a(x);\n\n\nINSERT INTO a VALUES ('never closed\n);\n", 4),
        ("CREATE TABLE a(x);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n  SELECT 1;\n", 2),
    ],
)
def test_incomplete_statement_raises_history_error_with_file_and_line(text: str, line: int) -> None:
    with pytest.raises(HistoryError) as info:
        migrations.split_statements(text, "007_broken.sql")
    assert info.value.code == HISTORY
    assert "007_broken.sql" in info.value.message
    assert f"line {line}:" in info.value.message


# ---------------------------------------------------------------- discover


def test_discover_orders_by_integer(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "10_ten.sql", "CREATE TABLE ten(x);")
    write(folder, "2_two.sql", "CREATE TABLE two(x);")
    write(folder, "001_one.sql", "CREATE TABLE one(x);")
    write(folder, "3_three.py", "def migrate(conn):\n    pass\n")
    found = migrations.discover(folder)
    assert [m.version for m in found] == [1, 2, 3, 10]
    assert [m.name for m in found] == ["001_one.sql", "2_two.sql", "3_three.py", "10_ten.sql"]
    assert [m.kind for m in found] == ["sql", "sql", "py", "sql"]
    assert found[2].statements == ()


def test_discover_ignores_non_migration_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "001_one.sql", "CREATE TABLE one(x);")
    write(folder, "README.md", "# notes; not SQL")
    write(folder, ".hidden.sql", "this is not sql at all (")
    write(folder, "__init__.py", "syntax error here (")
    write(folder, "notes.txt", "x")
    found = migrations.discover(folder)
    assert [m.name for m in found] == ["001_one.sql"]


def test_discover_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert migrations.discover(tmp_path / "m") == ()


@pytest.mark.parametrize("bad", ["abc.sql", "1.sql", "001-x.sql", "_x.sql", "001_.py", "x_001.sql"])
def test_invalid_names_are_history_errors(tmp_path: Path, bad: str) -> None:
    folder = tmp_path / "m"
    write(folder, "001_ok.sql", "CREATE TABLE a(x);")
    write(folder, bad, "CREATE TABLE b(y);")
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert info.value.code == HISTORY == 5
    assert bad in info.value.message


def test_folder_named_like_a_migration_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "002_dir.sql").mkdir(parents=True)
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert "002_dir.sql" in info.value.message


def test_duplicate_numbers_name_both_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "001_a.sql", "CREATE TABLE a(x);")
    write(folder, "1_b.sql", "CREATE TABLE b(x);")
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert "001_a.sql" in info.value.message
    assert "1_b.sql" in info.value.message
    assert info.value.code == HISTORY


def test_duplicate_numbers_across_kinds(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "002_a.sql", "CREATE TABLE a(x);")
    write(folder, "002_b.py", "def migrate(conn):\n    pass\n")
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert "002_a.sql" in info.value.message and "002_b.py" in info.value.message


@pytest.mark.parametrize("name", ["001_bad.sql", "001_bad.py"])
def test_non_utf8_is_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "m"
    write(folder, name, b"CREATE TABLE caf\xe9(x);\n")
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert name in info.value.message
    assert "UTF-8" in info.value.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "001_bom.sql", b"\xef\xbb\xbfCREATE TABLE a(x);\n")
    (m,) = migrations.discover(folder)
    assert [s.sql for s in m.statements] == ["CREATE TABLE a(x);"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("def migrate(conn):\n    conn.execute('x'\n", "syntax error"),
        ("import os\n\ndef migrate(conn)\n    pass\n", "line 3"),
        ("def upgrade(conn):\n    pass\n", "def migrate"),
        ("migrate = lambda conn: None\n", "def migrate"),
        ("class X:\n    def migrate(conn):\n        pass\n", "def migrate"),
        ("", "def migrate"),
    ],
)
def test_bad_python_migrations(tmp_path: Path, text: str, needle: str) -> None:
    folder = tmp_path / "m"
    write(folder, "004_code.py", text)
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert "004_code.py" in info.value.message
    assert needle.lower() in info.value.message.lower()


@pytest.mark.parametrize(
    "stmt",
    [
        "BEGIN;",
        "begin transaction;",
        "BEGIN IMMEDIATE;",
        "COMMIT;",
        "commit transaction;",
        "END;",
        "END TRANSACTION;",
        "ROLLBACK;",
        "ROLLBACK TRANSACTION;",
        "VACUUM;",
        "PRAGMA journal_mode=WAL;",
    ],
)
def test_transaction_breaking_statements_are_refused(tmp_path: Path, stmt: str) -> None:
    folder = tmp_path / "m"
    write(folder, "003_bad.sql", f"CREATE TABLE a(x);\n\n{stmt}\nCREATE TABLE b(y);\n")
    with pytest.raises(HistoryError) as info:
        migrations.discover(folder)
    assert info.value.code == HISTORY
    assert "003_bad.sql" in info.value.message
    assert "line 3:" in info.value.message
    assert "not allowed" in info.value.message


@pytest.mark.parametrize(
    "stmt",
    [
        "PRAGMA foreign_keys=ON;",
        "pragma FOREIGN_KEYS = off;",
        "PRAGMA foreign_keys = 1;",
        "PRAGMA main.foreign_keys=ON;",
        'PRAGMA "foreign_keys" = ON;',
    ],
)
def test_foreign_keys_pragma_is_skipped_in_every_spelling(tmp_path: Path, stmt: str) -> None:
    # SQLite accepts these spellings and, inside the guard's transaction, silently ignores
    # them exactly like the plain form: every spelling is skipped the same way.
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(stmt)  # valid SQL: SQLite accepts this spelling
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (0 if "off" in stmt else 1,)
    conn.close()
    folder = tmp_path / "m"
    write(folder, "003_fk.sql", f"CREATE TABLE a(x);\n{stmt}\n")
    (m,) = migrations.discover(folder)
    assert [s.action for s in m.statements] == ["run", "skip"]
    assert "no-op inside a transaction" in m.statements[1].note


def test_savepoints_are_allowed(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(
        folder,
        "001_sp.sql",
        "SAVEPOINT sp;\nCREATE TABLE a(x);\nROLLBACK TO sp;\nROLLBACK TRANSACTION TO SAVEPOINT sp;\n"
        "RELEASE sp;\nCREATE TABLE b(y);\n"
        "CREATE TRIGGER t AFTER INSERT ON b BEGIN INSERT INTO b VALUES (1); END;\n"
        "PRAGMA user_version = 3;\n",
    )
    (m,) = migrations.discover(folder)
    assert len(m.statements) == 8
    conn = open_tx()
    migrations.run_body(conn, m)
    assert conn.in_transaction
    assert table_names(conn) == {"b"}  # a was rolled back to the savepoint
    conn.execute("COMMIT")
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)


def test_missing_folder_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        migrations.discover(tmp_path / "nope")
    assert info.value.code == USAGE == 2
    assert "nope" in info.value.message


def test_file_instead_of_folder_is_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, "file", "x")
    with pytest.raises(UsageError):
        migrations.discover(path)


# ---------------------------------------------------------------- run_body


@pytest.mark.parametrize(
    "body",
    [
        "    conn.commit()",
        "    conn.execute('COMMIT')",
        "    conn.execute('END')",
        "    conn.rollback()",
        "    conn.executescript('CREATE TABLE other(z);')",
    ],
)
def test_python_migration_cannot_end_the_transaction(tmp_path: Path, body: str) -> None:
    folder = tmp_path / "m"
    write(
        folder,
        "001_sneaky.py",
        "def migrate(conn):\n    conn.execute('CREATE TABLE made(x)')\n"
        "    conn.execute('INSERT INTO made VALUES (1)')\n" + body + "\n",
    )
    (m,) = migrations.discover(folder)
    conn = open_tx()
    with pytest.raises(sqlite3.Error):
        migrations.run_body(conn, m)
    assert conn.in_transaction, "the caller must still be able to roll back"
    assert "made" in table_names(conn)
    conn.execute("ROLLBACK")
    assert table_names(conn) == set()
    conn.close()


def test_python_migration_runs_inside_callers_transaction(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(
        folder,
        "001_ok.py",
        "def migrate(conn):\n    conn.execute('CREATE TABLE made(x)')\n"
        "    conn.executemany('INSERT INTO made VALUES (?)', [(1,), (2,)])\n",
    )
    (m,) = migrations.discover(folder)
    conn = open_tx()
    migrations.run_body(conn, m)
    assert conn.in_transaction
    assert conn.execute("SELECT count(*) FROM made").fetchone() == (2,)
    conn.execute("ROLLBACK")
    assert table_names(conn) == set()
    # the authorizer is removed afterwards: the caller can commit normally
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE later(x)")
    conn.execute("COMMIT")
    assert table_names(conn) == {"later"}


def test_sql_failure_names_the_line_and_keeps_transaction(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "001_fail.sql", "CREATE TABLE made(x);\n\nINSERT INTO nowhere VALUES (1);\n")
    (m,) = migrations.discover(folder)
    conn = open_tx()
    with pytest.raises(sqlite3.Error) as info:
        migrations.run_body(conn, m)
    assert "line 3" in str(info.value)
    assert "nowhere" in str(info.value)
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert table_names(conn) == set()


@pytest.mark.parametrize(
    "text, nothing",
    [
        ("-- nothing to do here\n/* really */\n", True),
        ("", True),
        ("CREATE TABLE a(x);", False),
    ],
)
def test_executes_nothing(tmp_path: Path, text: str, nothing: bool) -> None:
    folder = tmp_path / "m"
    write(folder, "001_x.sql", text)
    (m,) = migrations.discover(folder)
    assert m.executes_nothing is nothing


def test_python_migration_never_executes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, "001_x.py", "def migrate(conn):\n    pass\n")
    (m,) = migrations.discover(folder)
    assert m.executes_nothing is False


# ---------------------------------------------------------------- fingerprints


def make_set(folder: Path) -> None:
    write(folder, "001_a.sql", "CREATE TABLE a(x);\n")
    write(folder, "002_b.py", "def migrate(conn):\n    conn.execute('CREATE TABLE b(y)')\n")
    write(folder, "003_c.sql", "CREATE INDEX ia ON a(x);\n")


def test_fingerprint_is_stable(tmp_path: Path) -> None:
    make_set(tmp_path / "one")
    make_set(tmp_path / "two")
    one = migrations.set_fingerprint(migrations.discover(tmp_path / "one"))
    two = migrations.set_fingerprint(migrations.discover(tmp_path / "two"))
    assert one == two
    assert len(one) == 64


@pytest.mark.parametrize("name", ["001_a.sql", "002_b.py", "003_c.sql"])
def test_fingerprint_changes_when_one_byte_changes(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "m"
    make_set(folder)
    before = migrations.set_fingerprint(migrations.discover(folder))
    path = folder / name
    data = bytearray(path.read_bytes())
    data[-1:] = b" "  # the trailing newline becomes a space: still valid, one byte differs
    path.write_bytes(bytes(data))
    after = migrations.set_fingerprint(migrations.discover(folder))
    assert before != after


def test_fingerprint_changes_on_rename_and_on_new_file(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    make_set(folder)
    base = migrations.set_fingerprint(migrations.discover(folder))
    (folder / "003_c.sql").rename(folder / "003_renamed.sql")
    renamed = migrations.set_fingerprint(migrations.discover(folder))
    write(folder, "004_d.sql", "-- nothing\n")
    added = migrations.set_fingerprint(migrations.discover(folder))
    assert len({base, renamed, added}) == 3


def test_sha256_is_of_the_raw_bytes(tmp_path: Path) -> None:
    import hashlib

    folder = tmp_path / "m"
    path = write(folder, "001_a.sql", "CREATE TABLE a(x);\n")
    (m,) = migrations.discover(folder)
    assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
