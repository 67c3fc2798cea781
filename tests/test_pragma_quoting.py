"""A pragma is recognised in every spelling SQLite accepts (issue 19 defect 2).

SQLite reads a pragma's name (and its schema prefix) bare, 'single-quoted' (a string
literal where a name is expected), "double-quoted", [bracketed] or `backticked`, in any
case, with comments and white space between the tokens. `PRAGMA 'journal_mode' = 'wal'`
used to pass the classifier and run as a silent no-op inside the guard's transaction
(exit 0, the journal mode unchanged) instead of being refused with exit 5. Each example
below is first run on a real SQLite file, outside a transaction, to show that SQLite
really takes that spelling for the pragma; then the classifier must treat it as it
treats the plain spelling: journal_mode with a value refused, foreign_keys and
defer_foreign_keys skipped, legacy_alter_table and user_version run.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from conftest import folder_state
from hypothesis import given, settings
from hypothesis import strategies as st

from preflight.core.errors import HistoryError
from preflight.sources import statements
from preflight.sources.statements import RUN, SKIP

GAPS = [" ", "\n", "\t", "  ", "/* a comment */", "/**/", "-- to the end of the line\n"]


def gap(at_least: int = 0) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(GAPS), min_size=at_least, max_size=3).map("".join)


def any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(word, upper))
    )


def quoted(word: str) -> st.SearchStrategy[str]:
    """`word` in any case, in each quoting SQLite accepts for a name."""
    quotes = st.sampled_from(["{}", "'{}'", '"{}"', "[{}]", "`{}`"])
    return st.builds(lambda q, w: q.format(w), quotes, any_case(word))


# What each pragma is set to in the examples, and how to read the effect back.
VALUES = {
    "journal_mode": "wal",
    "foreign_keys": "1",
    "defer_foreign_keys": "1",
    "legacy_alter_table": "1",
    "user_version": "7",
}
# (with a value, without one): a query of the journal mode is harmless and runs; the
# foreign-key pragmas are skipped either way (a no-op inside the guard's transaction).
EXPECTED = {
    "journal_mode": ("refused", RUN),
    "foreign_keys": (SKIP, SKIP),
    "defer_foreign_keys": (SKIP, SKIP),
    "legacy_alter_table": (RUN, RUN),
    "user_version": (RUN, RUN),
}


@st.composite
def pragma_statements(draw: st.DrawFn) -> tuple[str, bool, str]:
    """(pragma, has a value, statement text) in a random spelling."""
    pragma = draw(st.sampled_from(sorted(VALUES)))
    text = "PRAGMA" + draw(gap(1))
    if draw(st.booleans()):
        text += draw(quoted("main")) + draw(gap()) + "." + draw(gap())
    text += draw(quoted(pragma))
    form = draw(st.sampled_from(["=", "(", None]))
    if form is not None:
        value = VALUES[pragma]
        value = draw(quoted(value)) if value.isalpha() else value
        text += draw(gap()) + ("= " + value if form == "=" else f"({value})")
    return pragma, form is not None, text + draw(gap()) + ";"


def sqlite_effect(pragma: str, text: str) -> str:
    """What `text` changed on a fresh SQLite file: the setting's value read back plainly."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "probe.db"
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("CREATE TABLE t (x)")  # a real file, so journal_mode=wal can stick
            conn.execute(text)
            if pragma == "journal_mode":
                # the file's header says WAL (bytes 18-19 are 2) only after a real switch
                return "wal" if db.read_bytes()[18:20] == b"\x02\x02" else "unchanged"
            return str(conn.execute(f"PRAGMA {pragma}").fetchone()[0])
        finally:
            conn.close()


def classify(text: str) -> str:
    try:
        (found,) = statements.classify("m.sql", statements.split_statements(text, "m.sql"))
    except HistoryError as exc:
        assert "line 1: PRAGMA journal_mode is not allowed" in str(exc), exc
        assert exc.code == 5
        return "refused"
    return found.action


@given(pragma_statements())
@settings(max_examples=300, deadline=None, database=None)
def test_every_spelling_sqlite_takes_for_a_pragma_is_treated_as_that_pragma(
    drawn: tuple[str, bool, str],
) -> None:
    pragma, with_value, text = drawn
    # SQLite itself takes this spelling for the pragma: the setting really changes.
    effect = sqlite_effect(pragma, text)
    if with_value:
        assert effect == VALUES[pragma], (text, effect)
    else:
        assert effect in ("unchanged", "0"), (text, effect)
    # The classifier agrees: refused, skipped or run exactly as the plain spelling is.
    assert classify(text) == EXPECTED[pragma][0 if with_value else 1], text


@pytest.mark.parametrize(
    "text",
    [
        "PRAGMA 'journal_mode' = 'wal';",
        'PRAGMA "journal_mode" = wal;',
        "PRAGMA [journal_mode] = WAL;",
        "PRAGMA `journal_mode`('wal');",
        "PRAGMA 'main'.'journal_mode' = 'wal';",
        'PRAGMA "main"."JOURNAL_MODE" = wal;',
        "PRAGMA /* x */ main -- y\n . [Journal_Mode] = wal;",
        "PRAGMA 'journal''mode' = wal;",  # not the pragma: SQLite ignores an unknown name
    ],
)
def test_the_reported_spellings(text: str) -> None:
    known = "''" not in text
    assert sqlite_effect("journal_mode", text) == ("wal" if known else "unchanged")
    assert classify(text) == ("refused" if known else RUN)


def test_a_quoted_journal_mode_in_a_migration_is_exit_5_and_changes_nothing(
    cli, tmp_path: Path, make_migrations
) -> None:
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    first = {"001_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"}
    assert cli("migrate", "--db", db, "--migrations", make_migrations(first)).code == 0
    before = folder_state(tmp_path / "data", strict=True)
    bad = make_migrations(
        {**first, "002_wal.sql": "CREATE TABLE tags (id INTEGER);\nPRAGMA 'journal_mode' = 'wal';"}
    )
    result = cli("migrate", "--db", db, "--migrations", bad)
    assert result.code == 5, result
    assert "002_wal.sql: line 2: PRAGMA journal_mode is not allowed" in result.err
    assert folder_state(tmp_path / "data", strict=True) == before
    # The other direction: quoted spellings of the pragmas a rebuild uses still pass.
    good = make_migrations(
        {
            **first,
            "002_rebuild.sql": "PRAGMA 'foreign_keys' = OFF;\n"
            'PRAGMA "main".[legacy_alter_table] = ON;\n'
            "CREATE TABLE tags (id INTEGER);\n"
            "PRAGMA `user_version` = 3;\n"
            "PRAGMA 'main'.\"foreign_keys\" = ON;",
        }
    )
    assert cli("migrate", "--db", db, "--migrations", good).code == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'tags'").fetchone()
    finally:
        conn.close()
