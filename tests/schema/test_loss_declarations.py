"""What a loss declaration or PREFLIGHT_ACCEPT_LOSS names, read the same way for both:
TABLE or TABLE.COLUMN, quoted as SQL quotes names, folded as SQLite folds them."""

from __future__ import annotations

import pytest

from preflight.core import targets
from preflight.core.errors import HistoryError
from preflight.sources import declarations


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("notes", (("notes", None),)),
        ("Notes.Body, users", (("notes", "body"), ("users", None))),
        ('"order items".note [x]', (("order items", "note"), ("x", None))),
        ("notes ,  tags,", (("notes", None), ("tags", None))),
    ],
)
def test_targets_are_read_and_written_back_alike(text: str, named: tuple) -> None:
    assert targets.parse(text) == named
    assert targets.parse(",".join(targets.show(t) for t in named)) == named


@pytest.mark.parametrize("text", ["", ",", "notes.", "a.b.c", "1st", 'no"tes'])
def test_a_value_naming_nothing_or_malformed_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        targets.parse(text)


def test_a_table_covers_its_columns_and_a_column_only_itself() -> None:
    given = targets.parse("notes, users.email")
    assert targets.covers(given, "NOTES", None) and targets.covers(given, "notes", "body")
    assert targets.covers(given, "users", "Email")
    assert not targets.covers(given, "users", None) and not targets.covers(given, "users", "name")


def test_declarations_are_read_from_the_part_that_runs() -> None:
    text = (
        "-- migrate:up\n-- preflight: loses notes\n--preflight:LOSES users.email\n"
        "DROP TABLE notes;\n-- migrate:down\n-- preflight: loses tags\n"
    )
    start, end = text.index("\n"), text.index("-- migrate:down")
    assert declarations.parse(text, "001_x.sql", start, end) == (
        ("notes", None),
        ("users", "email"),
    )
    assert declarations.parse("# preflight: loses notes\ndef migrate(conn): ...", "2_x.py") == (
        ("notes", None),
    )


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("-- preflight: lose notes", "is not a preflight declaration"),
        ("-- preflight:", "is not a preflight declaration"),
        ("-- preflight: loses", "malformed loss declaration"),
        ("-- preflight: loses notes.", "malformed loss declaration"),
    ],
)
def test_a_malformed_declaration_names_the_file_and_the_line(line: str, why: str) -> None:
    with pytest.raises(HistoryError) as raised:
        declarations.parse(f"-- a comment\n\n{line}\nSELECT 1;\n", "004_x.sql")
    assert raised.value.message.startswith("004_x.sql: line 3:") and why in raised.value.message
    assert raised.value.code == 5
