"""SQL statements of a .sql migration: split them, and decide what each one does: transaction
control that brackets the file or a `COMMIT; BEGIN` boundary is skipped, what cannot be
made safe inside the guard's one transaction refused (docs/writing-migrations.md)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from preflight.core.errors import HistoryError
from preflight.schema.sqltext import unquote, upper

RUN, SKIP = "run", "skip"

# Literals are written [^']*(?:''[^']*)* (not (?:[^']|'')*): the regex engine runs that
# without keeping state per character.
_TOKEN = re.compile(
    r"""'[^']*(?:''[^']*)*'?|"[^"]*(?:""[^"]*)*"?|`[^`]*`?|\[[^\]]*\]?"""
    r"""|--[^\n]*|/\*.*?(?:\*/|\Z)|[A-Za-z_][A-Za-z0-9_$]*|\d[\w.]*|\S""",
    re.DOTALL,
)
# What can hide a ';' (literals, quoted names, comments) and the ';' itself: the splitter
# asks for nothing else, so the words between are passed over inside the regex engine.
# The same alternatives as _TOKEN's, which cannot start inside a word, number or symbol.
_SPLIT = re.compile(
    r"""'[^']*(?:''[^']*)*'?|"[^"]*(?:""[^"]*)*"?|`[^`]*`?|\[[^\]]*\]?"""
    r"""|(--[^\n]*|/\*.*?(?:\*/|\Z))|;""",
    re.DOTALL,
)
_SOLID = re.compile(r"\S")
# For the loss ledger and the foreign-key trace, on a database that holds tables: compiled
# on first use (re's own cache), not by a fresh build.
_FIRST = r"\s*([A-Za-z]+)\b"
_LITERAL = r"'[^']*'"


def first_word(sql: str) -> str:
    """The statement's first word, upper-cased, without tokenizing ('' : none in ASCII)."""
    found = re.match(_FIRST, sql)
    return found[1].upper() if found else ""


def copies_rows(sql: str) -> bool:
    """Whether a write may read another table's rows (SELECT or FROM outside its literals):
    a plain INSERT ... VALUES cannot, and is told without tokenizing (a data file's rows)."""
    bare = re.sub(_LITERAL, "", sql).lower()
    return "select" in bare or "from" in bare


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int
    action: str = RUN
    note: str = ""


def _significant(text: str, start: int = 0, end: int | None = None) -> Iterator[re.Match[str]]:
    for match in _TOKEN.finditer(text, start, len(text) if end is None else end):
        if not text.startswith(("--", "/*"), match.start()):
            yield match


def tokens(sql: str) -> list[str]:
    return [m.group() for m in _significant(sql)]


def head(sql: str, count: int) -> list[str]:
    """The first `count` tokens of `sql`, upper-cased (ASCII), without reading the rest."""
    found: list[str] = []
    for match in _significant(sql):
        if len(found) == count:
            break
        token = match.group()
        found.append(upper(token) if len(token) < 64 else "?")  # a long literal is no keyword
    return found


def line_counter(text: str) -> Callable[[int], int]:
    """line(offset) for offsets asked in increasing order, counting each newline once."""
    state = [0, 1]  # offset counted up to, line number there

    def line(offset: int) -> int:
        state[1] += text.count("\n", state[0], offset)
        state[0] = offset
        return state[1]

    return line


def split_statements(
    text: str, name: str = "<sql>", start: int = 0, end: int | None = None
) -> tuple[Statement, ...]:
    """Split text[start:end] into statements where sqlite3.complete_statement agrees (so
    inside strings, comments and trigger bodies a ';' stays put); lines of the whole text."""
    end = len(text) if end is None else end
    line = line_counter(text)
    found: list[Statement] = []
    begin, first = start, -1  # where the statement's text and its first token start
    gap = start  # where the text after the last literal, comment or ';' starts
    for match in _SPLIT.finditer(text, start, end):
        if first < 0:  # its first token: a word in the gap before this match, or this one
            solid = _SOLID.search(text, gap, match.start())
            if solid:
                first = solid.start()
            elif match.lastindex is None and text[match.start()] != ";":
                first = match.start()
        gap = match.end()
        if text[match.start()] != ";":
            continue
        if first < 0:
            begin = match.end()  # an empty statement: ';' alone
        elif sqlite3.complete_statement(text[begin : match.end()]):
            found.append(Statement(text[begin : match.end()].strip(), line(first)))
            begin, first = match.end(), -1
    solid = _SOLID.search(text, gap, end) if first < 0 else None
    if solid and not text.startswith(("--", "/*"), solid.start()):  # one cut off by `end`
        first = solid.start()
    if first >= 0:
        tail = text[begin:end]
        if not sqlite3.complete_statement(tail + ";"):
            raise HistoryError(
                f"{name}: line {line(first)}: incomplete SQL statement "
                f"(unterminated string, comment or trigger)",
                "finish the statement",
            )
        found.append(Statement(tail.strip(), line(first)))
    return tuple(found)


_FK_OFF = (
    "preflight runs migrations with foreign keys off and checks PRAGMA "
    "foreign_key_check before COMMIT"
)
_REFUSED = {
    "VACUUM": "VACUUM cannot run inside a transaction; run it by hand after the upgrade",
    "ATTACH": "the other database would be written outside the guard's backup and restore, "
    "and stay attached to the guard's connection",
    "DETACH": "it pairs with ATTACH, which is refused",
    "ROLLBACK": "it would undo earlier statements; a failing statement already rolls the "
    "whole run back (ROLLBACK TO a savepoint is fine)",
    "PRAGMA journal_mode": "the journal mode cannot change inside a transaction; the "
    "application sets it when it connects",
}
_SKIPPED_PRAGMAS = {
    "FOREIGN_KEYS": f"PRAGMA foreign_keys is a no-op inside a transaction; {_FK_OFF}",
    "DEFER_FOREIGN_KEYS": f"nothing to defer: {_FK_OFF}",
}


def _kind(words: list[str]) -> str:
    """BEGIN, COMMIT, SKIP:<pragma>, a refused head word, or RUN for everything else."""
    first = words[0] if words else ""
    if first in ("BEGIN", "COMMIT", "END"):
        rest = [w for w in words[1:] if w != ";"]
        if first == "BEGIN" and rest[:1] in (["DEFERRED"], ["IMMEDIATE"], ["EXCLUSIVE"]):
            rest = rest[1:]
        if rest[:1] not in ([], ["TRANSACTION"]) or len(rest) > 2:
            return RUN  # not transaction control SQLite knows: it fails as plain sqlite3 fails
        return "BEGIN" if first == "BEGIN" else "COMMIT"
    if first == "ROLLBACK":
        return RUN if "TO" in words[1:3] else "ROLLBACK"
    if first in _REFUSED:
        return first
    if first == "PRAGMA" and len(words) > 1:
        # PRAGMA [schema.]name [= value | (value)]
        rest = words[3:] if len(words) > 3 and words[2] == "." else words[1:]
        pragma = unquote(rest[0])
        if pragma in _SKIPPED_PRAGMAS:
            return f"SKIP:{pragma}"
        if pragma == "JOURNAL_MODE" and rest[1:2] in (["="], ["("]):
            return "PRAGMA journal_mode"
    return RUN


def classify(name: str, found: tuple[Statement, ...]) -> tuple[Statement, ...]:
    """Give each statement its action, or raise HistoryError for the first unsafe one.
    Skipped: a BEGIN first and COMMIT/END last but for PRAGMAs (the 12-step rebuild's
    foreign_keys), and `COMMIT; BEGIN` pairs between them (drizzle)."""
    heads = [head(s.sql, 6) for s in found]
    kinds, out = [_kind(words) for words in heads], list(found)

    def refuse(i: int, what: str, why: str) -> HistoryError:
        return HistoryError(
            f"{name}: line {found[i].line}: {what} is not allowed in a migration ({why})",
            "remove that statement",
        )

    def skip(i: int, note: str) -> None:
        out[i] = replace(found[i], action=SKIP, note=note)

    for i, kind in enumerate(kinds):
        if kind in _REFUSED:
            raise refuse(i, kind, _REFUSED[kind])
        if kind.startswith("SKIP:"):
            skip(i, _SKIPPED_PRAGMAS[kind[5:]])
    sig = [i for i, words in enumerate(heads) if words[:1] != ["PRAGMA"]]
    if sig and kinds[sig[0]] == "BEGIN":
        if len(sig) < 2 or kinds[sig[-1]] != "COMMIT":
            last = f"line {found[sig[-1]].line} is" if len(sig) > 1 else "there is none"
            raise refuse(
                sig[0],
                "BEGIN",
                "a BEGIN is accepted only as the file's first "
                f"statement with COMMIT or END as its last, and {last}",
            )
        skip(sig[0], "brackets the file; the guard's own transaction holds the whole run")
        skip(sig[-1], "brackets the file; the guard commits once, after every migration")
        sig = sig[1:-1]
    pending = -1  # a COMMIT waiting for the BEGIN that makes it a boundary
    for i in sig:
        if pending >= 0:
            if kinds[i] != "BEGIN":
                raise refuse(
                    pending,
                    "COMMIT",
                    "it would commit part of the migration; only a "
                    "COMMIT immediately followed by BEGIN, or one that ends a file that "
                    "began with BEGIN, is accepted",
                )
            between = range(pending + 1, i)
            if any(not kinds[j].startswith("SKIP:") for j in between):
                raise refuse(
                    pending,
                    "COMMIT",
                    f"statements between it and the BEGIN on line "
                    f"{found[i].line} would run outside any transaction",
                )
            skip(pending, "a COMMIT; BEGIN boundary: a no-op inside the guard's one transaction")
            skip(i, "a COMMIT; BEGIN boundary: a no-op inside the guard's one transaction")
            pending = -1
        elif kinds[i] == "COMMIT":
            pending = i
        elif kinds[i] == "BEGIN":
            raise refuse(
                i,
                "BEGIN",
                "a BEGIN after other statements would open a transaction "
                "inside a transaction; accepted only as the file's first statement or "
                "right after a COMMIT",
            )
    if pending >= 0:
        raise refuse(
            pending,
            "COMMIT",
            "it ends a transaction the file did not begin, committing part of the run",
        )
    return tuple(out)
