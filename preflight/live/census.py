"""The counts of a run: which tables its statements can change (only those are counted: a
count walks every page), their rows and their non-NULL values."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from preflight.core.targets import WORD
from preflight.schema import model, reader, sqltext, statements
from preflight.schema.sqltext import quote


@dataclass(frozen=True)
class Count:
    rows: int
    values: dict[str, int] = field(default_factory=dict)  # folded column name -> count


def tables(conn: sqlite3.Connection) -> dict[str, str]:
    """The database's own tables, folded name -> name: not the guard's, SQLite's or
    Litestream's, not a virtual table nor its shadow tables (their rows are an index)."""
    rows = conn.execute("SELECT name, sql FROM main.sqlite_master WHERE type = 'table'").fetchall()
    virtual = {n for n, sql in rows if sql and statements.head(sql, 2)[1:] == ["VIRTUAL"]}
    shadow = tuple(sqltext.fold(n) + "_" for n in virtual) or ("\0",)
    return {
        sqltext.fold(n): n
        for n, _ in rows
        if not model.ignored(n) and n not in virtual and not sqltext.fold(n).startswith(shadow)
    }


def stored(conn: sqlite3.Connection, table: str) -> list[tuple[str, bool, int]]:
    """A table's stored columns: (name, NOT NULL, position in the primary key)."""
    return [(str(r[1]), bool(r[3]), int(r[5])) for r in reader.xinfo(conn, table) if r[6] == 0]


def countable(conn: sqlite3.Connection, table: str) -> dict[str, bool]:
    """The columns whose values the run can lose (folded name -> NOT NULL): not the primary
    key. A NOT NULL column loses values only with the column or the row: its count is the rows."""
    return {sqltext.fold(c): notnull for c, notnull, pk in stored(conn, table) if not pk}


def columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    return {sqltext.fold(c): c for c, _, _ in stored(conn, table)}


def count(conn: sqlite3.Connection, table: str, columns: dict[str, bool] | None = None) -> Count:
    """One pass over `table`: its rows, and the non-NULL values of `columns` (folded name ->
    NOT NULL: those are the row count)."""
    given = columns or {}
    nullable = [c for c, notnull in given.items() if not notnull]
    sql = ", ".join(["count(*)", *(f"count({quote(c)})" for c in nullable)])
    row = conn.execute(f"SELECT {sql} FROM main.{quote(table)}").fetchone()
    counted = dict(zip(nullable, (int(v) for v in row[1:])))
    return Count(int(row[0]), {c: counted.get(c, int(row[0])) for c in given})


# What a statement can do to the rows of the tables it names, by its first words: these
# change none (an index, a view, a trigger's creation, a new or renamed column).
_HARMLESS = tuple(
    h.split()
    for h in "CREATE INDEX,CREATE UNIQUE,CREATE VIEW,CREATE TEMP VIEW,CREATE TEMPORARY VIEW,"
    "DROP INDEX,DROP VIEW,DROP TRIGGER,SELECT,PRAGMA,ANALYZE,REINDEX,SAVEPOINT,RELEASE".split(",")
)
_NAME = rf'(?:"(?:[^"]|"")*"|\[[^\]]*\]|`[^`]*`|{WORD}+)'
_INTO = re.compile(
    rf"\s*(?:INSERT(?:\s+OR\s+\w+)?|REPLACE)\s+INTO\s+({_NAME})(?:\s*\.\s*({_NAME}))?", re.I
)


def _harmless(words: list[str]) -> bool:
    if any(words[: len(h)] == h for h in _HARMLESS):
        return True
    # ALTER TABLE t ADD [COLUMN] ... / RENAME [COLUMN] a TO b; not RENAME TO, not DROP COLUMN
    return words[:2] == ["ALTER", "TABLE"] and (
        "ADD" in words[3:6] or ("RENAME" in words[3:6] and words[4:6] != ["TO"])
    )


def _names(toks: list[str]) -> set[str]:
    return {sqltext.name(t) for t in toks if sqltext.is_word(t) and t[0] != "'"}


Trigger = tuple[str, frozenset[str]]  # the table (or view) a trigger is on, the names in its body


def trigger(sql: str) -> Trigger | None:
    toks = statements.tokens(sql)
    words = [sqltext.fold(t) for t in toks]
    if "begin" not in words or "on" not in words:
        return None
    body = words.index("begin")
    on = max(i for i, w in enumerate(words[:body]) if w == "on")
    if on + 1 >= body:
        return None
    target = toks[on + 3] if toks[on + 2 : on + 3] == ["."] else toks[on + 1]
    return sqltext.name(target), frozenset(_names(toks[body:]))


def named(sql: Iterable[str]) -> tuple[set[str], list[Trigger]]:
    """The names a migration's statements could change rows of, and the triggers it makes."""
    found: set[str] = set()
    made: list[Trigger] = []
    for text in sql:
        words = statements.head(text, 6)
        if words[:1] == ["CREATE"] and "TRIGGER" in words[1:3]:
            made += [t] if (t := trigger(text)) else []
            continue
        if _harmless(words):
            continue
        if words[:1] in (["INSERT"], ["REPLACE"]):
            into = _INTO.match(text)
            if into is not None and not statements.copies_rows(text):  # only its target
                found.add(sqltext.name(into[2] or into[1]))
                continue
        found |= _names(statements.tokens(text))
    return found, made


def closure(names: set[str], triggers: Iterable[Trigger]) -> set[str]:
    """`names` and what the triggers on them write, and what triggers on those write..."""
    triggers, found = list(triggers), set(names)
    while True:
        more = set().union(*(body for on, body in triggers if on in found)) - found
        if not more:
            return found
        found |= more


def triggers(conn: sqlite3.Connection) -> list[Trigger]:
    """The database's triggers, temp ones too (a migration may have made one)."""
    found = conn.execute(
        "SELECT sql FROM main.sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL "
        "UNION ALL SELECT sql FROM temp.sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL"
    )
    return [t for (sql,) in found if (t := trigger(sql)) is not None]


def mapped(
    conn: sqlite3.Connection, now: str, old: dict[str, bool], renamed: dict[str, str]
) -> dict[str, bool]:
    """The columns `now` has of those it had (`old`, renamed ones followed): folded -> NOT NULL."""
    now_columns, kept = countable(conn, now), set(columns(conn, now))
    moved = (renamed.get(c, c) for c in old)
    return {c: now_columns.get(c, True) for c in moved if c in kept}
