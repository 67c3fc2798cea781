"""Unit tests for preflight.schema: snapshot, diff, errors, origins and replay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from preflight import schema
from preflight.core.errors import MIGRATION_FAILED, MigrationFailed
from preflight.schema import drift
from preflight.sources import migrations, replay

# ---------------------------------------------------------------- helpers


def build(*statements: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for stmt in statements:
        conn.execute(stmt)
    return conn


def snap(*statements: str) -> schema.Schema:
    conn = build(*statements)
    try:
        return schema.snapshot(conn)
    finally:
        conn.close()


def diff(expected: list[str], actual: list[str]) -> list[drift.Difference]:
    return drift.diff(snap(*expected), snap(*actual))


def objects(diffs: list[drift.Difference]) -> set[tuple[str, str]]:
    return {(d.object, d.kind) for d in diffs}


def write_migrations(folder: Path, files: dict[str, str]) -> tuple[migrations.Migration, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return migrations.discover(folder)


# ---------------------------------------------------------------- same schema, built differently

SAME = [
    pytest.param(
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', n INT)"],
        [
            "CREATE TABLE t(id INTEGER PRIMARY KEY)",
            "ALTER TABLE t ADD COLUMN name TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE t ADD COLUMN n INT",
        ],
        id="alter-add-column",
    ),
    pytest.param(
        [
            "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
            "CREATE INDEX users_email ON users(email)",
        ],
        [
            'create   table "Users" (\n  "ID" integer primary key,\n  [Email] text not null unique\n)',
            'CREATE INDEX "users_email" ON "Users" ( "Email" )',
        ],
        id="whitespace-quoting-case",
    ),
    pytest.param(
        [
            "CREATE TABLE t(a INT, b TEXT)",
            "CREATE INDEX ti ON t(a)",
            "CREATE VIEW v AS SELECT a FROM t",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
        ],
        [
            "CREATE TABLE IF NOT EXISTS t(a INT, b TEXT)",
            "CREATE INDEX IF NOT EXISTS ti ON t(a)",
            "CREATE VIEW IF NOT EXISTS v AS SELECT a FROM t",
            "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN SELECT 1; END",
        ],
        id="if-not-exists",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b INT, UNIQUE(a, b))"],
        ["CREATE TABLE t(a INT, b INT, CONSTRAINT u_ab UNIQUE (a,b))"],
        id="named-table-constraint",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT CHECK (a > 0))"],
        ['CREATE TABLE t(a INT CHECK ("a">0))'],
        id="check-quoting",
    ),
    pytest.param(
        ["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p INT REFERENCES p(id))"],
        ["CREATE TABLE c(p INT REFERENCES p(id))", "CREATE TABLE p(id INTEGER PRIMARY KEY)"],
        id="creation-order",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b INT)", "CREATE INDEX i ON t(a) WHERE b > 0"],
        ["CREATE TABLE t(a INT, b INT)", "CREATE INDEX i ON t ( a )\n  where  B>0"],
        id="partial-index-formatting",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b TEXT)", "CREATE TABLE u(x INT)", "ALTER TABLE u RENAME TO t2"],
        ["CREATE TABLE t2(x INT)", "CREATE TABLE t(a INT)", "ALTER TABLE t ADD b TEXT"],
        id="renamed-table",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b INT)", "CREATE INDEX i ON t(a)"],
        ["CREATE TABLE t(a INT, b INT)", "CREATE INDEX I ON t(a)"],
        id="index-name-case",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b TEXT COLLATE NOCASE, c TEXT)"],
        [
            "CREATE TABLE t(a INT)",
            'ALTER TABLE t ADD COLUMN b TEXT collate "nocase"',
            "ALTER TABLE t ADD c TEXT",
        ],
        id="collation-via-alter",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, c INT GENERATED ALWAYS AS (a + 1) VIRTUAL, d DECIMAL(10, 2))"],
        ['CREATE TABLE t(a INT, c INT AS ("a"+1), d decimal(10,  2))'],
        id="generated-formatting",
    ),
]


@pytest.mark.parametrize("expected, actual", SAME)
def test_same_schema_built_differently_has_no_differences(
    expected: list[str], actual: list[str]
) -> None:
    diffs = diff(expected, actual)
    assert diffs == [], [d.message() for d in diffs]
    assert diff(actual, expected) == []


def test_snapshot_of_empty_database_is_empty() -> None:
    assert snap().is_empty()
    assert not snap("CREATE TABLE t(a)").is_empty()


# ---------------------------------------------------------------- each kind of difference

BASE = "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT 'x', b INT)"

DIFFERENT = [
    pytest.param([BASE, "CREATE TABLE u(x)"], [BASE], ("table u", "missing"), id="missing-table"),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT 'x')"],
        ("t.b", "missing"),
        id="missing-column",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT 'x', b TEXT)"],
        ("t.b", "different"),
        id="column-type",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT DEFAULT 'x', b INT)"],
        ("t.a", "different"),
        id="not-null",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT 'y', b INT)"],
        ("t.a", "different"),
        id="default-value",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT NOT NULL, b INT)"],
        ("t.a", "different"),
        id="default-dropped",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER, a TEXT NOT NULL DEFAULT 'x', b INT)"],
        ("t.id", "different"),
        id="primary-key-dropped",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER, a TEXT NOT NULL DEFAULT 'x', b INT, PRIMARY KEY(id, b))"],
        ("t.b", "different"),
        id="primary-key-widened",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT 'x', b INT UNIQUE)"],
        ("t.b", "different"),
        id="unique-column",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b INT, UNIQUE(a, b))"],
        ["CREATE TABLE t(a INT, b INT)"],
        ("t", "missing"),
        id="unique-table-constraint",
    ),
    pytest.param(
        [BASE],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, b INT, a TEXT NOT NULL DEFAULT 'x')"],
        ("t", "different"),
        id="column-order",
    ),
    pytest.param(
        [BASE], [BASE, "ALTER TABLE t ADD COLUMN c BLOB"], ("t.c", "unexpected"), id="extra-column"
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a)"], [BASE], ("index t_a", "missing"), id="missing-index"
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a)"],
        [BASE, "CREATE INDEX t_a ON t(b)"],
        ("index t_a", "different"),
        id="index-columns",
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a, b)"],
        [BASE, "CREATE INDEX t_a ON t(b, a)"],
        ("index t_a", "different"),
        id="index-column-order",
    ),
    pytest.param(
        [BASE, "CREATE UNIQUE INDEX t_a ON t(a)"],
        [BASE, "CREATE INDEX t_a ON t(a)"],
        ("index t_a", "different"),
        id="index-uniqueness",
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a DESC)"],
        [BASE, "CREATE INDEX t_a ON t(a ASC)"],
        ("index t_a", "different"),
        id="index-desc",
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a COLLATE NOCASE)"],
        [BASE, "CREATE INDEX t_a ON t(a)"],
        ("index t_a", "different"),
        id="index-collation",
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a) WHERE b > 0"],
        [BASE, "CREATE INDEX t_a ON t(a) WHERE b > 1"],
        ("index t_a", "different"),
        id="partial-index-where",
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(a) WHERE b > 0"],
        [BASE, "CREATE INDEX t_a ON t(a)"],
        ("index t_a", "different"),
        id="partial-index-dropped",
    ),
    pytest.param(
        [BASE, "CREATE INDEX t_a ON t(lower(a))"],
        [BASE, "CREATE INDEX t_a ON t(upper(a))"],
        ("index t_a", "different"),
        id="expression-index",
    ),
    pytest.param(
        ["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p INT REFERENCES p(id))"],
        ["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p INT)"],
        ("c", "missing"),
        id="foreign-key-missing",
    ),
    pytest.param(
        ["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p INT)"],
        ["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p INT REFERENCES p(id))"],
        ("c", "unexpected"),
        id="foreign-key-added",
    ),
    pytest.param(
        [
            "CREATE TABLE p(id INTEGER PRIMARY KEY)",
            "CREATE TABLE c(p INT REFERENCES p(id) ON DELETE CASCADE)",
        ],
        ["CREATE TABLE p(id INTEGER PRIMARY KEY)", "CREATE TABLE c(p INT REFERENCES p(id))"],
        ("c", "missing"),
        id="foreign-key-on-delete",
    ),
    pytest.param(
        [
            "CREATE TABLE p(id INTEGER PRIMARY KEY, k INT UNIQUE)",
            "CREATE TABLE c(p INT REFERENCES p(id))",
        ],
        [
            "CREATE TABLE p(id INTEGER PRIMARY KEY, k INT UNIQUE)",
            "CREATE TABLE c(p INT REFERENCES p(k))",
        ],
        ("c", "missing"),
        id="foreign-key-target",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT CHECK (a > 0))"],
        ["CREATE TABLE t(a INT CHECK (a >= 0))"],
        ("t", "missing"),
        id="check-changed",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT CHECK (a > 0))"],
        ["CREATE TABLE t(a INT)"],
        ("t", "missing"),
        id="check-dropped",
    ),
    pytest.param(
        [BASE, "CREATE VIEW v AS SELECT a FROM t"],
        [BASE, "CREATE VIEW v AS SELECT a, b FROM t"],
        ("view v", "different"),
        id="view-sql",
    ),
    pytest.param(
        [BASE, "CREATE VIEW v AS SELECT a FROM t WHERE a = 'X'"],
        [BASE, "CREATE VIEW v AS SELECT a FROM t WHERE a = 'x'"],
        ("view v", "different"),
        id="view-string-literal-case",
    ),
    pytest.param(
        [BASE, "CREATE VIEW v AS SELECT a FROM t"], [BASE], ("view v", "missing"), id="missing-view"
    ),
    pytest.param(
        [BASE, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET b = 1; END"],
        [BASE, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET b = 2; END"],
        ("trigger tr", "different"),
        id="trigger-sql",
    ),
    pytest.param(
        [BASE, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END"],
        [BASE, "CREATE TRIGGER tr BEFORE INSERT ON t BEGIN SELECT 1; END"],
        ("trigger tr", "different"),
        id="trigger-timing",
    ),
    pytest.param(
        [BASE, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END"],
        [BASE],
        ("trigger tr", "missing"),
        id="missing-trigger",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, c INT GENERATED ALWAYS AS (a + 1) VIRTUAL)"],
        ["CREATE TABLE t(a INT, c INT)"],
        ("t.c", "different"),
        id="generated-vs-plain",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, c INT GENERATED ALWAYS AS (a + 1) VIRTUAL)"],
        ["CREATE TABLE t(a INT, c INT GENERATED ALWAYS AS (a + 1) STORED)"],
        ("t.c", "different"),
        id="generated-virtual-vs-stored",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, c INT GENERATED ALWAYS AS (a + 1))"],
        ["CREATE TABLE t(a INT, c INT GENERATED ALWAYS AS (a + 2))"],
        ("t.c", "different"),
        id="generated-expression",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b TEXT COLLATE NOCASE)"],
        ["CREATE TABLE t(a INT, b TEXT)"],
        ("t.b", "different"),
        id="column-collation",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT, b TEXT COLLATE NOCASE)"],
        ["CREATE TABLE t(a INT, b TEXT COLLATE RTRIM)"],
        ("t.b", "different"),
        id="column-collation-changed",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT)", "ALTER TABLE t ADD COLUMN b TEXT COLLATE NOCASE"],
        ["CREATE TABLE t(a INT, b TEXT)"],
        ("t.b", "different"),
        id="column-collation-added-by-alter",
    ),
    pytest.param(
        ["CREATE TABLE t(k TEXT PRIMARY KEY, v INT) WITHOUT ROWID"],
        ["CREATE TABLE t(k TEXT PRIMARY KEY, v INT)"],
        ("t", "missing"),
        id="without-rowid",
    ),
    pytest.param(
        ["CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v INT)"],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)"],
        ("t", "missing"),
        id="autoincrement",
    ),
    pytest.param(
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)"],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v INT)"],
        ("t", "unexpected"),
        id="autoincrement-added",
    ),
    pytest.param(
        ["CREATE TABLE t(a INT) STRICT"], ["CREATE TABLE t(a INT)"], ("t", "missing"), id="strict"
    ),
]


@pytest.mark.parametrize("expected, actual, found", DIFFERENT)
def test_each_difference_names_the_object(
    expected: list[str], actual: list[str], found: tuple[str, str]
) -> None:
    diffs = diff(expected, actual)
    assert found in objects(diffs), [d.message() for d in diffs]
    # every such difference is drift, strict or not
    assert found in objects(drift.errors(diffs, strict=False))
    # and the message names the object
    for d in diffs:
        assert d.message().startswith(d.object + ": ")


def test_missing_column_details() -> None:
    diffs = diff(
        ["CREATE TABLE tokens(id INTEGER PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL)"],
        ["CREATE TABLE tokens(id INTEGER PRIMARY KEY)"],
    )
    assert len(diffs) == 1
    (d,) = diffs
    assert (d.object, d.kind) == ("tokens.token_hash", "missing")
    assert d.expected == "column TEXT UNIQUE NOT NULL"
    # without migration steps to attribute it to, the message names no origin
    (plain,) = drift.with_origins(diffs, [])
    assert plain.origin is None
    assert plain.message() == (
        "tokens.token_hash: expected column TEXT UNIQUE NOT NULL, missing in database"
    )


def test_different_column_message_shows_both_sides() -> None:
    (d,) = diff(["CREATE TABLE t(a TEXT NOT NULL)"], ["CREATE TABLE t(a TEXT)"])
    assert (d.object, d.kind) == ("t.a", "different")
    assert "expected column TEXT NOT NULL" in d.message()
    assert d.message().endswith("database has column TEXT")


def test_column_order_difference_lists_both_orders() -> None:
    (d,) = diff(["CREATE TABLE t(a INT, b INT, c INT)"], ["CREATE TABLE t(a INT, c INT, b INT)"])
    assert (d.object, d.kind) == ("t", "different")
    assert "a, b, c" in d.expected and d.actual == "a, c, b"


@pytest.mark.parametrize(
    "extra, obj",
    [
        ("CREATE TABLE u(x)", "table u"),
        ("CREATE INDEX t_b ON t(b)", "index t_b"),
        ("CREATE VIEW v AS SELECT b FROM t", "view v"),
        ("CREATE TRIGGER tr AFTER DELETE ON t BEGIN SELECT 1; END", "trigger tr"),
    ],
)
def test_extra_objects_are_warnings_unless_strict(extra: str, obj: str) -> None:
    diffs = diff([BASE], [BASE, extra])
    assert objects(diffs) == {(obj, "extra")}
    assert drift.errors(diffs, strict=False) == []
    assert drift.errors(diffs, strict=True) == diffs
    assert "which no migration made" in diffs[0].message()


def test_errors_keeps_non_extra_differences_in_both_modes() -> None:
    diffs = diff([BASE, "CREATE TABLE gone(x)"], [BASE, "CREATE TABLE more(x)"])
    assert objects(diffs) == {("table gone", "missing"), ("table more", "extra")}
    assert objects(drift.errors(diffs, strict=False)) == {("table gone", "missing")}
    assert objects(drift.errors(diffs, strict=True)) == objects(diffs)


@pytest.mark.parametrize(
    "stmts",
    [
        ["CREATE TABLE _preflight_history(v INT)", "CREATE TABLE _preflight_log(id INT)"],
        ["CREATE TABLE _PreFlight_Other(v INT)"],
        [
            "CREATE TABLE _litestream_seq(id INTEGER PRIMARY KEY, seq INTEGER)",
            "CREATE TABLE _litestream_lock(id INTEGER)",
        ],
        ["CREATE INDEX _preflight_idx ON t(b)"],
        [
            "CREATE TABLE _preflight_x(a)",
            "CREATE INDEX plain_name ON _preflight_x(a)",
            "CREATE TRIGGER on_guard AFTER INSERT ON _preflight_x BEGIN SELECT 1; END",
        ],
        ["CREATE VIEW _litestream_v AS SELECT 1"],
        ["CREATE TRIGGER _preflight_trg AFTER INSERT ON t BEGIN SELECT 1; END"],
        ["CREATE INDEX t_a ON t(a)", "ANALYZE"],  # creates sqlite_stat1 (index also on the left)
        [
            "CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT)",
            "INSERT INTO seq DEFAULT VALUES",
        ],
    ],
)
def test_internal_objects_are_ignored(stmts: list[str]) -> None:
    expected = [BASE]
    if any(s.startswith("CREATE INDEX t_a") for s in stmts):
        expected.append("CREATE INDEX t_a ON t(a)")
    if any("seq(id INTEGER PRIMARY KEY AUTOINCREMENT)" in s for s in stmts):
        expected.append("CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT)")
    actual_conn = build(BASE, *stmts)
    names = {r[0] for r in actual_conn.execute("SELECT name FROM sqlite_master")}
    actual = schema.snapshot(actual_conn)
    actual_conn.close()
    assert names - {"t", "t_a", "seq"}  # the internal objects really exist
    assert drift.diff(snap(*expected), actual) == []
    for key in (
        list(actual.tables) + list(actual.indexes) + list(actual.views) + list(actual.triggers)
    ):
        assert not key.startswith(("sqlite_", "_preflight", "_litestream_"))


# ---------------------------------------------------------------- origins and messages


def test_difference_message_with_origin_constructed() -> None:
    d = drift.Difference(
        "tokens.token_hash",
        "missing",
        "column TEXT UNIQUE NOT NULL",
        origin="002_hash_session_tokens.py",
    )
    assert d.message() == (
        "tokens.token_hash: expected column TEXT UNIQUE NOT NULL "
        "(from 002_hash_session_tokens.py), missing in database"
    )
    d2 = drift.Difference("t.a", "different", "column TEXT", "column INT", origin="001_x.sql")
    assert d2.message() == "t.a: expected column TEXT (from 001_x.sql), database has column INT"


def test_with_origins_names_the_migration_that_made_the_column(tmp_path: Path) -> None:
    found = write_migrations(
        tmp_path / "m",
        {
            "001_tokens.sql": "CREATE TABLE tokens(id INTEGER PRIMARY KEY, token TEXT);\n"
            "CREATE TABLE other(x INT);\n",
            "002_hash.sql": "CREATE TABLE tokens_new(id INTEGER PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL);\n"
            "DROP TABLE tokens;\n"
            "ALTER TABLE tokens_new RENAME TO tokens;\n",
            "003_other.sql": "ALTER TABLE other ADD COLUMN y TEXT;\n",
        },
    )
    steps = replay.replay(found, {1, 2, 3})
    assert set(steps) == {1, 2, 3}
    live = snap(
        "CREATE TABLE tokens(id INTEGER PRIMARY KEY, token TEXT)", "CREATE TABLE other(x INT)"
    )
    diffs = drift.diff(steps[3], live)
    with_origin = drift.with_origins(diffs, [(m.name, steps[i]) for i, m in enumerate(found, 1)])
    by_object = {(d.object, d.kind): d for d in with_origin}
    assert by_object[("tokens.token_hash", "missing")].message() == (
        "tokens.token_hash: expected column TEXT UNIQUE NOT NULL (from 002_hash.sql), "
        "missing in database"
    )
    assert by_object[("other.y", "missing")].origin == "003_other.sql"
    assert ("tokens.token", "unexpected") in by_object


def test_replay_stops_give_intermediate_schemas(tmp_path: Path) -> None:
    found = write_migrations(
        tmp_path / "m",
        {
            "001_a.sql": "CREATE TABLE a(x INT);",
            "002_b.py": "def migrate(conn):\n    conn.execute('CREATE TABLE b(y INT)')\n",
            "003_nothing.sql": "-- nothing\n",
        },
    )
    steps = replay.replay(found, {0, 1, 2, 3})
    assert steps[0].is_empty()
    assert set(steps[1].tables) == {"a"}
    assert set(steps[2].tables) == {"a", "b"}
    assert drift.diff(steps[2], steps[3]) == []


@pytest.mark.parametrize(
    "name, text",
    [
        ("002_broken.sql", "INSERT INTO nowhere VALUES (1);"),
        ("002_broken.sql", "ALTER TABLE a ADD COLUMN x INT;"),  # duplicate column
        ("002_broken.py", "def migrate(conn):\n    raise RuntimeError('boom')\n"),
        ("002_broken.py", "def migrate(conn):\n    conn.commit()\n"),
    ],
)
def test_replay_of_failing_migration_raises_migration_failed(
    tmp_path: Path, name: str, text: str
) -> None:
    found = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a(x INT);", name: text})
    with pytest.raises(MigrationFailed) as info:
        replay.replay(found, {2})
    assert info.value.code == MIGRATION_FAILED == 9
    assert name in info.value.message
    assert "001_a.sql" not in info.value.message


def test_normalize_ignores_comments_whitespace_and_identifier_quoting() -> None:
    a = schema.normalize('CREATE VIEW "V" AS /* c */ SELECT [a] , `b` FROM t -- x\n')
    b = schema.normalize("create view v as select a, b from t")
    assert a == b
    assert schema.normalize("SELECT 'A'") != schema.normalize("SELECT 'a'")


def test_unique_column_with_a_collation_is_still_unique() -> None:
    table = snap("CREATE TABLE t(a INT, b TEXT UNIQUE COLLATE NOCASE)").tables["t"]
    assert table.columns[1].describe() == "TEXT COLLATE NOCASE UNIQUE"
    (d,) = diff(
        ["CREATE TABLE t(a INT, b TEXT UNIQUE COLLATE NOCASE)"],
        ["CREATE TABLE t(a INT, b TEXT COLLATE NOCASE)"],
    )
    assert (d.object, d.kind) == ("t.b", "different")
