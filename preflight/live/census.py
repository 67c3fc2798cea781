"""The counts of a run: which tables it can change, their rows and their non-NULL values.

Counting is cheap but not free (`count(*)` walks a table's pages; counting a column's
values decodes every row), so a run of the guard's `.sql` files counts only the tables
its statements can change: those a statement names, other than to index it, view it or
add and rename its columns, and those a trigger on such a table writes. With foreign keys
off (the guard's own runs) nothing else can change a table. A `.py` migration or a tool
runs code the guard cannot read: every table is counted. A table's non-NULL values are
counted for the columns that can lose them: not the primary key, not generated ones; a
NOT NULL column's are its rows (only dropping it loses them).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from preflight.core.targets import WORD
from preflight.schema import model, sqltext, statements
from preflight.schema.sqltext import quote

ALL = "*"  # a migration that may change every table (Python code, a tool)


@dataclass(frozen=True)
class Count:
    """A table's rows and, per counted column, its non-NULL values."""

    rows: int
    values: dict[str, int] = field(default_factory=dict)  # folded column name -> count


def tables(conn: sqlite3.Connection) -> dict[str, str]:
    """The database's own tables, folded name -> name: not the guard's, SQLite's or
    Litestream's, not a virtual table nor its shadow tables (their rows are an index)."""
    rows = conn.execute("SELECT name, sql FROM main.sqlite_master WHERE type = 'table'").fetchall()
    virtual = [
        sqltext.fold(n) + "_"
        for n, sql in rows
        if sql and statements.head(sql, 2)[1:] == ["VIRTUAL"]
    ]
    return {
        sqltext.fold(n): n
        for n, sql in rows
        if not model.ignored(n)
        and not (sql and statements.head(sql, 2)[1:] == ["VIRTUAL"])
        and not sqltext.fold(n).startswith(tuple(virtual) or ("\0",))
    }


def countable(conn: sqlite3.Connection, table: str) -> dict[str, bool]:
    """The columns whose values the run can lose (folded name -> NOT NULL): all but the
    primary key and generated ones. A NOT NULL column can lose its values only with the
    column (or the row): its count is the row count, not counted again."""
    found = {}
    for _, name, _, notnull, _, pk, hidden in conn.execute(
        f"PRAGMA main.table_xinfo({quote(table)})"
    ).fetchall():
        if not pk and not hidden:
            found[sqltext.fold(name)] = bool(notnull)
    return found


def columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """A table's stored columns, folded name -> as spelled."""
    return {
        sqltext.fold(r[1]): r[1]
        for r in conn.execute(f"PRAGMA main.table_xinfo({quote(table)})").fetchall()
        if r[6] == 0
    }


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
_HARMLESS = (
    ["CREATE", "INDEX"],
    ["CREATE", "UNIQUE"],
    ["CREATE", "VIEW"],
    ["CREATE", "TEMP", "VIEW"],
    ["CREATE", "TEMPORARY", "VIEW"],
    ["DROP", "INDEX"],
    ["DROP", "VIEW"],
    ["DROP", "TRIGGER"],
    ["SELECT"],
    ["PRAGMA"],
    ["ANALYZE"],
    ["REINDEX"],
    ["SAVEPOINT"],
    ["RELEASE"],
)
_LITERAL = re.compile(r"'[^']*'")
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


@dataclass(frozen=True)
class Trigger:
    """A trigger as far as counting needs it: the table (or view) it is on, the names in its body."""

    on: str
    body: frozenset[str]


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
    return Trigger(sqltext.name(target), frozenset(_names(toks[body:])))


def named(sql: Iterable[str]) -> tuple[set[str], list[Trigger]]:
    """The names a migration's statements could change rows of, and the triggers it makes."""
    found: set[str] = set()
    made: list[Trigger] = []
    for text in sql:
        words = statements.head(text, 6)
        if words[:1] == ["CREATE"] and "TRIGGER" in words[1:3]:
            t = trigger(text)
            if t is not None:
                made.append(t)
            continue
        if _harmless(words):
            continue
        if words[:1] in (["INSERT"], ["REPLACE"]):
            bare = _LITERAL.sub("", text).lower()
            into = _INTO.match(text)
            if into is not None and "select" not in bare and "from" not in bare:
                # INSERT ... VALUES: only its target (linear over a data file's 20,000 rows)
                found.add(sqltext.name(into[2] or into[1]))
                continue
        found |= _names(statements.tokens(text))
    return found, made


def closure(names: set[str], triggers: Iterable[Trigger]) -> set[str]:
    """`names` and what the triggers on them write, and what triggers on those write..."""
    triggers = list(triggers)
    found = set(names)
    while True:
        more = set().union(*(t.body for t in triggers if t.on in found)) - found
        if not more:
            return found
        found |= more


def triggers(conn: sqlite3.Connection) -> list[Trigger]:
    """The database's triggers (temp ones too: a migration may have made one)."""
    found = []
    for (sql,) in conn.execute(
        "SELECT sql FROM main.sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL "
        "UNION ALL SELECT sql FROM temp.sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL"
    ):
        t = trigger(sql)
        if t is not None:
            found.append(t)
    return found


@dataclass(frozen=True)
class Values:
    """Non-NULL values gone from one column: dropped with it, or lost while it stays."""

    column: str
    dropped: bool
    count: int
    had: int


def mapped(
    conn: sqlite3.Connection, now: str, old: dict[str, bool], renamed: dict[str, str]
) -> dict[str, bool]:
    """The columns a table has now, as counting wants them (folded -> NOT NULL), for the
    columns it had (`old`, renamed ones followed)."""
    now_columns = countable(conn, now)
    stored = set(columns(conn, now))
    return {
        renamed.get(c, c): now_columns.get(renamed.get(c, c), True)
        for c in old
        if renamed.get(c, c) in stored
    }


def values_lost(
    old: dict[str, bool],
    renamed: dict[str, str],
    now: dict[str, bool],
    after: Count,
    gone: int,
    before: Callable[[dict[str, bool]], dict[str, int] | None],
) -> list[Values]:
    """The values a table lost: `old` its columns (folded -> NOT NULL) as it was, `now` its
    columns now (`mapped`), `after` what it holds now (its columns' values counted only when
    a rebuild or an UPDATE could have emptied them: nothing else can empty a column that
    stays).

    A column that stays is compared with what it held only when it has NULLs now (else it
    lost nothing beyond the `gone` rows); `before(columns)` counts those, and the dropped
    columns, as they were (from the backup), only when needed; None: not known.
    """
    dropped = {c: nn for c, nn in old.items() if renamed.get(c, c) not in now}
    suspects = {
        c: nn
        for c, nn in old.items()
        if after.values.get(renamed.get(c, c), after.rows) < after.rows
    }
    if not dropped and not suspects:
        return []
    had = before({**dropped, **suspects})
    if had is None:
        return []
    found = [Values(c, True, had[c], had[c]) for c in dropped if had[c]]
    for c in suspects:
        lost = had[c] - after.values[renamed.get(c, c)] - max(gone, 0)
        if lost > 0:
            found.append(Values(c, False, lost, had[c]))
    return found
