"""Drift compares what SQLite means, not how the SQL is spelled.

Every case builds two real databases: the expected schema by replaying a migration
file (schema.replay), the live one as a file written by plain sqlite3 from another
spelling. Equivalent spellings must give no difference (a false refusal is an outage);
different meanings must give one naming the object (a missed one can cost data). Each
rule is checked in both directions: A expected / B live, and B expected / A live.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from preflight import schema
from preflight.schema import drift
from preflight.sources import migrations, replay

_count = itertools.count()


def expected_from(tmp_path: Path, *files: str) -> schema.Schema:
    folder = tmp_path / f"migrations{next(_count)}"
    folder.mkdir()
    for i, text in enumerate(files, 1):
        (folder / f"{i:03d}_step.sql").write_text(text, encoding="utf-8")
    found = migrations.discover(folder)
    return replay.replay(found, {len(found)})[len(found)]


def live_from(tmp_path: Path, sql: str) -> schema.Schema:
    path = tmp_path / f"live{next(_count)}.db"
    conn = sqlite3.connect(path)
    try:
        conn.executescript(sql)
        return schema.snapshot(conn)
    finally:
        conn.close()


def messages(diffs: list[drift.Difference]) -> list[str]:
    return [d.message() for d in diffs]


P = "CREATE TABLE p(id INTEGER PRIMARY KEY, k TEXT UNIQUE);\n"

SAME = [
    pytest.param(
        P + "CREATE TABLE c(pid INT REFERENCES p);",
        P + "CREATE TABLE c(pid INT REFERENCES p(id));",
        id="references-omitted-columns",
    ),
    pytest.param(
        "CREATE TABLE p(a INT, b INT, PRIMARY KEY(a, b));\n"
        "CREATE TABLE c(x INT, y INT, FOREIGN KEY(x, y) REFERENCES p);",
        "CREATE TABLE p(a INT, b INT, PRIMARY KEY(a, b));\n"
        "CREATE TABLE c(x INT, y INT, FOREIGN KEY(x, y) REFERENCES p(a, b));",
        id="references-omitted-composite-key",
    ),
    pytest.param(
        "CREATE TABLE t(x INT CHECK((x > 0)), y INT, CHECK (((y < 5))));",
        "CREATE TABLE t(x INT CHECK(x > 0), y INT, CHECK(y < 5));",
        id="check-redundant-parens",
    ),
    pytest.param(
        "CREATE TABLE t(a REAL DEFAULT 1.0, b INT DEFAULT 0x10, c REAL DEFAULT 1e0);",
        "CREATE TABLE t(a REAL DEFAULT 1.00, b INT DEFAULT 16, c REAL DEFAULT 1.0);",
        id="default-same-number",
    ),
    pytest.param(
        """CREATE TABLE t(s TEXT DEFAULT "draft", b INT DEFAULT TRUE);""",
        "CREATE TABLE t(s TEXT DEFAULT 'draft', b INT DEFAULT 1);",
        id="default-dq-string",
    ),
    pytest.param(
        """CREATE TABLE t(status TEXT CHECK(status IN ("draft", "published")));""",
        "CREATE TABLE t(status TEXT CHECK(status IN ('draft','published')));",
        id="check-dq-string",
    ),
    pytest.param(
        """CREATE TABLE t(a INT, b INT CHECK ("a" < b));""",
        "CREATE TABLE t(a INT, b INT CHECK (a < b));",
        id="check-dq-column",
    ),
    pytest.param(
        'CREATE TABLE "T"("X" INT, [Y] TEXT, `Z` BLOB);\n'
        'CREATE INDEX "I" ON "T"([X], `Y`);\n'
        'CREATE VIEW [V] AS SELECT "X", `Y` FROM [T];',
        "create table t(x int, y text, z blob);\ncreate index i on t(x, y);\n"
        "create view v as select x, y from t;",
        id="quoting-styles-and-ascii-case",
    ),
    pytest.param(
        "CREATE TABLE t(a INT, -- the key\n b TEXT /* note */ NOT NULL);",
        "CREATE   TABLE  t (a INT,b TEXT NOT NULL);",
        id="comments-whitespace",
    ),
    pytest.param(
        "CREATE TABLE t(a INT NOT NULL ON CONFLICT ABORT UNIQUE ON CONFLICT ABORT);",
        "CREATE TABLE t(a INT NOT NULL UNIQUE);",
        id="on-conflict-abort-is-the-default",
    ),
    pytest.param(
        P + "CREATE TABLE c(pid INT CONSTRAINT c_nn NOT NULL, "
        "CONSTRAINT c_fk FOREIGN KEY (pid) REFERENCES p(id), CONSTRAINT c_ck CHECK (pid > 0));",
        P + "CREATE TABLE c(pid INT NOT NULL REFERENCES p(id) CHECK (pid > 0));",
        id="constraint-names-and-column-vs-table-form",
    ),
    pytest.param(
        P + "CREATE TABLE c(pid INT REFERENCES p(id) MATCH FULL);",
        P + "CREATE TABLE c(pid INT REFERENCES p(id));",
        id="fk-match-is-ignored",
    ),
    pytest.param(
        P + "CREATE TABLE c(a INT REFERENCES p(id) DEFERRABLE INITIALLY IMMEDIATE, "
        "b INT REFERENCES p(id) NOT DEFERRABLE INITIALLY DEFERRED, "
        "d INT REFERENCES p(id) DEFERRABLE);",
        P + "CREATE TABLE c(a INT REFERENCES p(id), b INT REFERENCES p(id), "
        "d INT REFERENCES p(id));",
        id="fk-not-deferred-forms",
    ),
    pytest.param(
        "CREATE TABLE t(a INT UNIQUE ON CONFLICT IGNORE, b INT NOT NULL);",
        "CREATE TABLE t(a INT, b INT NOT NULL, UNIQUE (a) ON CONFLICT IGNORE);",
        id="unique-conflict-column-vs-table",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT COLLATE NOCASE UNIQUE);",
        "CREATE TABLE t(x TEXT COLLATE NOCASE, UNIQUE(x));",
        id="unique-column-collation",
    ),
    pytest.param(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);",
        "CREATE TABLE t(id INTEGER, v INT, PRIMARY KEY(id DESC));",
        id="table-level-pk-desc-is-still-rowid",
    ),
    pytest.param(
        "CREATE TABLE t(id INTEGER PRIMARY KEY NOT NULL ON CONFLICT IGNORE, v INT);\n"
        "CREATE TABLE w(k TEXT NOT NULL PRIMARY KEY, v INT) WITHOUT ROWID;",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);\n"
        "CREATE TABLE w(k TEXT PRIMARY KEY, v INT) WITHOUT ROWID;",
        id="not-null-on-a-key-that-cannot-be-null",
    ),
    pytest.param(
        "CREATE TABLE t(id INTEGER PRIMARY KEY ASC, s TEXT COLLATE BINARY);",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT);",
        id="pk-asc-and-binary-defaults",
    ),
    pytest.param(
        "CREATE TABLE t(name TEXT, status TEXT);\n"
        """CREATE INDEX i ON t(name) WHERE status = "draft";\n"""
        """CREATE VIEW v AS SELECT "name" FROM t WHERE status <> "x";\n"""
        """CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET "status" = "new" """
        """WHERE "name" = NEW."name"; END;""",
        "CREATE TABLE t(name TEXT, status TEXT);\n"
        "CREATE INDEX i ON t(name) WHERE status = 'draft';\n"
        "CREATE VIEW v AS SELECT name FROM t WHERE status != 'x';\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET status = 'new' "
        "WHERE name = new.name; END;",
        id="dq-in-index-view-trigger",
    ),
    pytest.param(
        "CREATE TABLE t(a INT, b INT);\n"
        """CREATE VIEW v("Total", "Top") AS SELECT count(*) "N", max(a) AS "M" FROM t """
        """ORDER BY "N";\n"""
        """CREATE VIEW w AS WITH c("X") AS (SELECT a FROM t) SELECT "X" FROM c;""",
        "CREATE TABLE t(a INT, b INT);\n"
        "CREATE VIEW v(total, top) AS SELECT count(*) n, max(a) AS m FROM t ORDER BY n;\n"
        "CREATE VIEW w AS WITH c(x) AS (SELECT a FROM t) SELECT x FROM c;",
        id="view-column-lists-and-aliases",
    ),
    pytest.param(
        'CREATE TABLE "a b"("c d" TEXT UNIQUE, "e""f" INT, [g h] INT REFERENCES "a b");\n'
        'CREATE INDEX "i j" ON "a b"("e""f") WHERE "c d" IS NOT NULL;',
        'CREATE TABLE [A B]([C D] TEXT, `e"f` INT, "G H" INT REFERENCES [a b], UNIQUE ("c d"));\n'
        'CREATE INDEX [I J] ON [a b](`e"f`) WHERE [c d] IS NOT NULL;',
        id="names-with-spaces-and-quotes",
    ),
    pytest.param(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body TEXT);\n"
        "CREATE VIRTUAL TABLE f USING fts5(title, body, content='notes', content_rowid='id');",
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body TEXT);\n"
        'CREATE VIRTUAL TABLE "F" USING FTS5("title", [body], content="notes", content_rowid=id);',
        id="fts5-module-argument-quoting",
    ),
    pytest.param(
        "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v INT);",
        "CREATE TABLE t(id INTEGER, v INT, PRIMARY KEY(id AUTOINCREMENT));",
        id="autoincrement-table-level",
    ),
    pytest.param(
        "CREATE TABLE t(a INT);\n"
        "CREATE TRIGGER tr INSERT ON t FOR EACH ROW BEGIN SELECT 1; END;\n"
        "CREATE TRIGGER tu UPDATE OF a ON t BEGIN SELECT 1; END;",
        "CREATE TABLE t(a INT);\n"
        "CREATE TRIGGER tr BEFORE INSERT ON t BEGIN SELECT 1; END;\n"
        "CREATE TRIGGER tu BEFORE UPDATE OF a ON t FOR EACH ROW BEGIN SELECT 1; END;",
        id="trigger-defaults",
    ),
    pytest.param(
        "CREATE TABLE a(id INT, x TEXT);\nCREATE TABLE b(id INT, y TEXT);\n"
        'CREATE VIEW "v" AS SELECT "a"."x", "y" FROM "a", "b" AS "bb" '
        'JOIN a "a2" ON "a2"."id" = "bb"."id" WHERE "x" = "lit";\n'
        'CREATE TRIGGER "tr" AFTER DELETE ON "a" BEGIN DELETE FROM "b" WHERE "id" = OLD."id"; END;',
        "CREATE TABLE a(id INT, x TEXT);\nCREATE TABLE b(id INT, y TEXT);\n"
        "CREATE VIEW v AS SELECT a.x, y FROM a, b AS bb "
        "JOIN a a2 ON a2.id = bb.id WHERE x = 'lit';\n"
        "CREATE TRIGGER tr AFTER DELETE ON a BEGIN DELETE FROM b WHERE id = old.id; END;",
        id="orm-style-quoting-in-views-and-triggers",
    ),
    pytest.param(
        "CREATE TABLE t(a INT, g INT AS ((a * 2)) STORED);",
        "CREATE TABLE t(a INT, g INT GENERATED ALWAYS AS (a*2) STORED);",
        id="generated-parens",
    ),
    pytest.param(
        "CREATE TABLE t(a INT CHECK (a IN ((1))));",
        "CREATE TABLE t(a INT CHECK (a IN (1)));",
        id="in-list-single-parens",
    ),
]


@pytest.mark.parametrize("a, b", SAME)
def test_equivalent_spellings_are_no_drift(tmp_path: Path, a: str, b: str) -> None:
    forward = drift.diff(expected_from(tmp_path, a), live_from(tmp_path, b))
    backward = drift.diff(expected_from(tmp_path, b), live_from(tmp_path, a))
    assert forward == [], messages(forward)
    assert backward == [], messages(backward)


DIFFERENT = [
    pytest.param(
        P + "CREATE TABLE c(pid INT REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);",
        P + "CREATE TABLE c(pid INT REFERENCES p(id));",
        "c",
        id="deferrable-dropped",
    ),
    pytest.param(
        P + "CREATE TABLE c(pid INT, FOREIGN KEY(pid) REFERENCES p DEFERRABLE INITIALLY DEFERRED);",
        P + "CREATE TABLE c(pid INT REFERENCES p(id) DEFERRABLE INITIALLY IMMEDIATE);",
        "c",
        id="deferred-vs-immediate",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT UNIQUE ON CONFLICT REPLACE);",
        "CREATE TABLE t(x TEXT UNIQUE);",
        "t.x",
        id="unique-on-conflict-replace",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT, UNIQUE(x) ON CONFLICT IGNORE);",
        "CREATE TABLE t(x TEXT UNIQUE);",
        "t.x",
        id="table-unique-on-conflict-ignore",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT NOT NULL ON CONFLICT IGNORE);",
        "CREATE TABLE t(x TEXT NOT NULL);",
        "t.x",
        id="not-null-on-conflict",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT NOT NULL ON CONFLICT FAIL);",
        "CREATE TABLE t(x TEXT NOT NULL ON CONFLICT ROLLBACK);",
        "t.x",
        id="conflict-resolution",
    ),
    pytest.param(
        "CREATE TABLE t(id INTEGER PRIMARY KEY ON CONFLICT REPLACE, v INT);",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);",
        "t.id",
        id="pk-on-conflict",
    ),
    pytest.param(
        "CREATE TABLE t(a INT, b INT, PRIMARY KEY(a, b) ON CONFLICT IGNORE);",
        "CREATE TABLE t(a INT, b INT, PRIMARY KEY(a, b));",
        "t",
        id="composite-pk-on-conflict",
    ),
    pytest.param(
        "CREATE TABLE t(a INT, b INT, UNIQUE(a, b) ON CONFLICT REPLACE);",
        "CREATE TABLE t(a INT, b INT, UNIQUE(a, b));",
        "t",
        id="composite-unique-on-conflict",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT, UNIQUE(x COLLATE NOCASE));",
        "CREATE TABLE t(x TEXT, UNIQUE(x));",
        "t",
        id="unique-collate-nocase",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT, UNIQUE(x DESC));",
        "CREATE TABLE t(x TEXT UNIQUE);",
        "t",
        id="unique-desc",
    ),
    pytest.param(
        "CREATE TABLE t(x TEXT COLLATE NOCASE UNIQUE);",
        "CREATE TABLE t(x TEXT UNIQUE);",
        "t.x",
        id="unique-with-column-collation",
    ),
    pytest.param(
        "CREATE TABLE t(id INT PRIMARY KEY NOT NULL, v INT);",
        "CREATE TABLE t(id INT PRIMARY KEY, v INT);",
        "t.id",
        id="not-null-on-a-key-that-is-not-the-rowid",
    ),
    pytest.param(
        "CREATE TABLE t(id INTEGER PRIMARY KEY DESC, v INT);",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);",
        "t",
        id="integer-pk-desc-not-rowid",
    ),
    pytest.param(
        """CREATE TABLE t(status TEXT CHECK(status IN ("draft", "published")));""",
        """CREATE TABLE t(status TEXT CHECK(status IN ("Draft", "published")));""",
        "t",
        id="check-dq-string-case",
    ),
    pytest.param(
        """CREATE TABLE t(s TEXT DEFAULT "draft");""",
        """CREATE TABLE t(s TEXT DEFAULT "Draft");""",
        "t.s",
        id="default-dq-string-case",
    ),
    pytest.param(
        "CREATE TABLE t(a DEFAULT 1);",
        "CREATE TABLE t(a DEFAULT 1.0);",
        "t.a",
        id="default-integer-vs-real",
    ),
    pytest.param(
        "CREATE TABLE t(a DEFAULT 'x');",
        "CREATE TABLE t(a DEFAULT x'78');",
        "t.a",
        id="default-text-vs-blob",
    ),
    pytest.param(
        "CREATE TABLE t(status TEXT);\n"
        """CREATE VIEW v AS SELECT * FROM t WHERE status = "draft";""",
        "CREATE TABLE t(status TEXT);\n"
        """CREATE VIEW v AS SELECT * FROM t WHERE status = "Draft";""",
        "view v",
        id="view-dq-string-case",
    ),
    pytest.param(
        "CREATE TABLE t(status TEXT);\n"
        """CREATE INDEX i ON t(status) WHERE status != "draft";""",
        "CREATE TABLE t(status TEXT);\n"
        """CREATE INDEX i ON t(status) WHERE status != "DRAFT";""",
        "index i",
        id="partial-index-dq-string-case",
    ),
    pytest.param(
        "CREATE TABLE t(status TEXT);\n"
        """CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET status = "new"; END;""",
        "CREATE TABLE t(status TEXT);\n"
        """CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET status = "New"; END;""",
        "trigger tr",
        id="trigger-dq-string-case",
    ),
    pytest.param(
        """CREATE TABLE t(a TEXT, g TEXT AS (a || "x"));""",
        """CREATE TABLE t(a TEXT, g TEXT AS (a || "X"));""",
        "t.g",
        id="generated-dq-string",
    ),
    pytest.param(
        'CREATE TABLE t(a TEXT);\nCREATE INDEX i ON t(a, ("k" || a));',
        'CREATE TABLE t(a TEXT);\nCREATE INDEX i ON t(a, ("K" || a));',
        "index i",
        id="expression-index-dq-string",
    ),
    pytest.param(
        'CREATE TABLE "Äpfel"(a INT);',
        'CREATE TABLE "äpfel"(a INT);',
        "table Äpfel",
        id="non-ascii-table-case",
    ),
    pytest.param(
        'CREATE TABLE t("Größe" INT);',
        'CREATE TABLE t("GRÖSSE" INT);',
        "t.Größe",
        id="non-ascii-column-case",
    ),
    pytest.param(
        P + "CREATE TABLE c(pid INT REFERENCES p);",
        P + "CREATE TABLE c(pid INT REFERENCES p(k));",
        "c",
        id="references-pk-vs-other-key",
    ),
    pytest.param(
        "CREATE TABLE t(a INT);\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;",
        "CREATE TABLE t(a INT);\nCREATE TRIGGER tr INSERT ON t BEGIN SELECT 1; END;",
        "trigger tr",
        id="trigger-after-vs-default-before",
    ),
    pytest.param(
        "CREATE VIRTUAL TABLE f USING fts5(title, body, tokenize='porter ascii');",
        "CREATE VIRTUAL TABLE f USING fts5(title, body, tokenize='unicode61');",
        "f",
        id="fts5-tokenizer",
    ),
    pytest.param(
        "CREATE TABLE a(id INT);\nCREATE TABLE b(id INT);\n"
        """CREATE VIEW v AS SELECT * FROM a JOIN b ON "k" = 'k';""",
        "CREATE TABLE a(id INT);\nCREATE TABLE b(id INT);\n"
        """CREATE VIEW v AS SELECT * FROM a JOIN b ON "K" = 'k';""",
        "view v",
        id="join-on-dq-string-case",
    ),
    pytest.param(
        "CREATE TABLE t(x INT CHECK (x IN ((1, 2))));",
        "CREATE TABLE t(x INT CHECK (x IN (1, 2)));",
        "t",
        id="row-value-parens-kept",
    ),
]


@pytest.mark.parametrize("a, b, obj", DIFFERENT)
def test_different_meaning_is_drift_naming_the_object(
    tmp_path: Path, a: str, b: str, obj: str
) -> None:
    forward = drift.errors(drift.diff(expected_from(tmp_path, a), live_from(tmp_path, b)), False)
    backward = drift.errors(drift.diff(expected_from(tmp_path, b), live_from(tmp_path, a)), False)
    assert obj in {d.object for d in forward}, messages(forward)
    assert backward, "the reverse direction is drift too"
    for d in forward + backward:
        assert d.message().startswith(d.object + ": ")


def test_messages_name_the_clause(tmp_path: Path) -> None:
    exp = expected_from(
        tmp_path,
        P + "CREATE TABLE c(pid INT REFERENCES p DEFERRABLE INITIALLY DEFERRED, "
        "x TEXT UNIQUE ON CONFLICT REPLACE);",
    )
    live = live_from(tmp_path, P + "CREATE TABLE c(pid INT, x TEXT UNIQUE);")
    text = messages(drift.diff(exp, live))
    assert (
        "c: expected FOREIGN KEY(pid) REFERENCES p(id) ON UPDATE NO ACTION ON DELETE NO ACTION "
        "DEFERRABLE INITIALLY DEFERRED, missing in database"
    ) in text, text
    assert (
        "c.x: expected column TEXT UNIQUE ON CONFLICT REPLACE, database has column TEXT UNIQUE"
        in text
    ), text
    assert not any("p()" in m for m in text)


def test_rowid_alias_message(tmp_path: Path) -> None:
    exp = expected_from(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT);")
    live = live_from(tmp_path, "CREATE TABLE t(id INTEGER PRIMARY KEY DESC, v INT);")
    assert sorted(messages(drift.diff(exp, live))) == [
        "t.id: expected column INTEGER PRIMARY KEY (the rowid), database has column INTEGER PRIMARY KEY",
        "t: database has PRIMARY KEY index (id DESC), which no migration made",
    ]


def test_non_ascii_names_differing_in_case_are_two_objects(tmp_path: Path) -> None:
    both = live_from(
        tmp_path,
        'CREATE TABLE "Äpfel"(a INT);\nCREATE TABLE "äpfel"(b INT);\n'
        'CREATE INDEX "Ä_i" ON "Äpfel"(a);\nCREATE INDEX "ä_i" ON "äpfel"(b);',
    )
    assert set(both.tables) == {"Äpfel", "äpfel"}
    assert set(both.indexes) == {"Ä_i", "ä_i"}
    one = expected_from(tmp_path, 'CREATE TABLE "Äpfel"(a INT);\nCREATE INDEX "Ä_i" ON "Äpfel"(a);')
    extra = drift.diff(one, both)
    assert {(d.object, d.kind) for d in extra} == {("table äpfel", "extra"), ("index ä_i", "extra")}
    # ASCII letters still fold, as in SQLite: APFEL and apfel are one table
    assert (
        drift.diff(
            expected_from(tmp_path, "CREATE TABLE APFEL(a INT);"),
            live_from(tmp_path, "CREATE TABLE apfel(A INT);"),
        )
        == []
    )


def test_ignored_folds_ascii_only() -> None:
    assert schema.ignored("_PreFlight_history") and schema.ignored("SQLITE_stat1")
    assert not schema.ignored("_preflıght")  # dotless i: not an ASCII letter, a user name


def test_dq_token_is_an_identifier_once_the_column_exists(tmp_path: Path) -> None:
    """SQLite resolves "draft" per query: a string until a column of that name appears."""
    base = "CREATE TABLE t(kind TEXT);\n"
    view = """CREATE VIEW v AS SELECT * FROM t WHERE kind = "draft";\n"""
    exp = expected_from(tmp_path, base + view)
    assert (
        drift.diff(
            exp,
            live_from(tmp_path, base + "CREATE VIEW v AS SELECT * FROM t WHERE kind = 'draft';"),
        )
        == []
    )
    with_col = "CREATE TABLE t(kind TEXT, draft TEXT);\n"
    exp2 = expected_from(tmp_path, base + view, "ALTER TABLE t ADD COLUMN draft TEXT;")
    assert (
        drift.diff(
            exp2,
            live_from(tmp_path, with_col + "CREATE VIEW v AS SELECT * FROM t WHERE kind = draft;"),
        )
        == []
    )
    assert {
        d.object
        for d in drift.diff(
            exp2,
            live_from(
                tmp_path, with_col + "CREATE VIEW v AS SELECT * FROM t WHERE kind = 'draft';"
            ),
        )
    } == {"view v"}


HISTORY = [
    (
        "CREATE TABLE p(id INTEGER PRIMARY KEY, code TEXT);\n"
        "CREATE TABLE c(pid INT REFERENCES p, note TEXT);\n"
        "CREATE INDEX c_note ON c(note);\n"
        """CREATE VIEW v AS SELECT * FROM c WHERE note = "draft";"""
    ),
    "ALTER TABLE c ADD COLUMN draft TEXT;",
    # p's key changes: c's REFERENCES p now means p(code)
    "CREATE TABLE p2(id INT, code TEXT PRIMARY KEY);\nDROP TABLE p;\nALTER TABLE p2 RENAME TO p;",
    # c rebuilt with a collation: the unchanged index's meaning follows the table
    (
        "CREATE TABLE c2(pid INT REFERENCES p, note TEXT COLLATE NOCASE, draft TEXT);\n"
        "DROP VIEW v;\nDROP TABLE c;\nALTER TABLE c2 RENAME TO c;\nCREATE INDEX c_note ON c(note);\n"
        """CREATE VIEW v AS SELECT * FROM c WHERE note = "draft";"""
    ),
    "-- nothing\n",
    "DROP INDEX c_note;\nCREATE TRIGGER tr AFTER INSERT ON c BEGIN SELECT 1; END;",
]


def test_replay_with_every_stop_equals_a_fresh_snapshot_at_each_stop(tmp_path: Path) -> None:
    """Replay builds each stop from the previous one's differences; every stop must equal
    what a snapshot of a database built to that version by plain sqlite3 reads."""
    folder = tmp_path / "m"
    folder.mkdir()
    for i, text in enumerate(HISTORY, 1):
        (folder / f"{i:03d}_step.sql").write_text(text, encoding="utf-8")
    found = migrations.discover(folder)
    steps = replay.replay(found, set(range(len(found) + 1)))
    for k in range(len(found) + 1):
        live = live_from(tmp_path, "\n".join(HISTORY[:k]))
        assert drift.diff(steps[k], live) == [], (k, messages(drift.diff(steps[k], live)))
        assert steps[k] == live, k
    fk = [o for o in steps[3].tables["c"].options if o[0] == "foreign key"]
    assert fk == [
        (
            "foreign key",
            ("FOREIGN KEY(pid) REFERENCES p(code) ON UPDATE NO ACTION ON DELETE NO ACTION"),
        )
    ]
    assert steps[1].indexes["c_note"].columns == ("note",)
    assert steps[4].indexes["c_note"].columns == ("note COLLATE NOCASE",)
    assert "'draft'" in steps[1].views["v"] and "'draft'" not in steps[2].views["v"]


def test_with_origins_names_the_last_migration_that_changed_each_object(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for i, text in enumerate(HISTORY, 1):
        (folder / f"{i:03d}_step.sql").write_text(text, encoding="utf-8")
    found = migrations.discover(folder)
    steps = replay.replay(found, set(range(1, len(found) + 1)))
    live = live_from(
        tmp_path,
        "CREATE TABLE p(id INT, code TEXT PRIMARY KEY);\n"
        "CREATE TABLE c(pid INT REFERENCES p, note TEXT, draft TEXT);\n"
        "CREATE VIEW v AS SELECT * FROM c;",
    )
    diffs = drift.with_origins(
        drift.diff(steps[len(found)], live), [(m.name, steps[i]) for i, m in enumerate(found, 1)]
    )
    origin = {(d.object, d.kind): d.origin for d in diffs}
    assert origin[("c.note", "different")] == "004_step.sql"
    # 004 recreated v with the same meaning; 002 changed it ("draft" became a column)
    assert origin[("view v", "different")] == "002_step.sql"
    assert origin[("trigger tr", "missing")] == "006_step.sql"
