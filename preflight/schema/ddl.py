"""What a CREATE TABLE statement says that SQLite's PRAGMAs do not (COLLATE, generated
columns, CHECK, ON CONFLICT, DEFERRABLE, AUTOINCREMENT, WITHOUT ROWID, STRICT); constraint
names, MATCH (SQLite ignores it) and ON CONFLICT ABORT (the default) are left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from preflight.schema.sqltext import canonical, fold, is_word, name, tokens, upper

_TABLE_CONSTRAINTS = {"constraint", "primary", "unique", "check", "foreign"}
_COLUMN_CONSTRAINTS = _TABLE_CONSTRAINTS | set(
    "not null default collate references generated as".split()
)
Key = tuple[tuple[str, ...], str, tuple[str, ...]]  # foreign key: (from, parent, to columns)


@dataclass(frozen=True)
class Clauses:
    """The constraint clauses of one CREATE TABLE, keyed by ASCII-folded column names."""

    columns: tuple[str, ...] = ()
    collate: dict[str, str] = field(default_factory=dict)  # BINARY (the default) left out
    generated: dict[str, str] = field(default_factory=dict)  # canonical AS (...) expression
    conflicts: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    checks: tuple[str, ...] = ()
    deferred: frozenset[Key] = frozenset()
    autoincrement: bool = False
    without_rowid: bool = False
    strict: bool = False


def group(toks: list[str], i: int) -> int:
    """Index just past the parenthesised group opening at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[j], 0)
        if depth == 0:
            return j + 1
    return len(toks)


def _split(toks: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    depth = 0
    for tok in toks:
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if tok == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _names(group: list[str]) -> tuple[str, ...]:
    """Column names of `( a COLLATE x DESC, b )`: the first token of each part."""
    return tuple(name(part[0]) for part in _split(group[1:-1]))


# ("collate", col, name) | ("generated", col, expr) | ("conflict", kind, cols, resolution)
# | ("check", text) | ("deferred", key) | ("autoincrement",)
Fact = tuple[Any, ...]


def _conflict(seg: list[str], j: int, kind: str, cols: tuple[str, ...]) -> tuple[int, list[Fact]]:
    """An optional ON CONFLICT at seg[j]; ABORT is the default, NULL's is meaningless."""
    if j + 2 < len(seg) and fold(seg[j]) == "on" and fold(seg[j + 1]) == "conflict":
        resolution = upper(seg[j + 2])
        keep = resolution != "ABORT" and kind != "NULL"
        return j + 3, [("conflict", kind, cols, resolution)] if keep else []
    return j, []


def _references(seg: list[str], j: int, frm: tuple[str, ...]) -> tuple[int, list[Fact]]:
    """A foreign-key clause from its parent table's name at seg[j]."""
    parent, j = name(seg[j]), j + 1
    to: tuple[str, ...] = ()
    if j < len(seg) and seg[j] == "(":
        end = group(seg, j)
        to, j = _names(seg[j:end]), end
    deferred = False
    while j < len(seg):
        word = fold(seg[j])
        nxt = fold(seg[j + 1]) if j + 1 < len(seg) else ""
        if word == "on" and nxt in ("delete", "update"):
            j += 2
            j += 2 if j < len(seg) and fold(seg[j]) in ("set", "no") else 1
        elif word == "match":
            j += 2
        elif word == "deferrable" or (word == "not" and nxt == "deferrable"):
            # only DEFERRABLE INITIALLY DEFERRED defers; NOT DEFERRABLE ... never does
            negated, deferred = word == "not", False
            j += 1 + negated
            if j + 1 < len(seg) and fold(seg[j]) == "initially":
                deferred, j = not negated and fold(seg[j + 1]) == "deferred", j + 2
        else:
            break
    return j, [("deferred", (frm, parent, to))] if deferred else []


def _check(seg: list[str], j: int, known: set[str]) -> tuple[int, list[Fact]]:
    end = group(seg, j)
    return end, [("check", "CHECK" + canonical(seg[j:end], known))]


def _column(seg: list[str], known: set[str]) -> list[Fact]:
    col = name(seg[0])
    facts: list[Fact] = []
    j = 1
    while j < len(seg) and not (
        is_word(seg[j]) and seg[j][0] not in '"`[' and fold(seg[j]) in _COLUMN_CONSTRAINTS
    ):
        j = group(seg, j) if seg[j] == "(" else j + 1
    while j < len(seg):
        word = fold(seg[j])
        more: list[Fact] = []
        if word == "constraint":
            j += 2
        elif word == "primary":
            j += 2
            j += 1 if j < len(seg) and fold(seg[j]) in ("asc", "desc") else 0
            j, more = _conflict(seg, j, "PRIMARY KEY", (col,))
            if j < len(seg) and fold(seg[j]) == "autoincrement":
                j, more = j + 1, more + [("autoincrement",)]
        elif word == "not" and j + 1 < len(seg) and fold(seg[j + 1]) == "null":
            j, more = _conflict(seg, j + 2, "NOT NULL", (col,))
        elif word == "null":
            j, more = _conflict(seg, j + 1, "NULL", (col,))
        elif word == "unique":
            j, more = _conflict(seg, j + 1, "UNIQUE", (col,))
        elif word == "check" and j + 1 < len(seg) and seg[j + 1] == "(":
            j, more = _check(seg, j + 1, known)
        elif word == "default" and j + 1 < len(seg):
            j += 1
            j = group(seg, j) if seg[j] == "(" else j + (2 if seg[j] in ("+", "-") else 1)
        elif word == "collate" and j + 1 < len(seg):
            j, more = j + 2, [("collate", col, upper(name(seg[j + 1])))]
        elif word == "references" and j + 1 < len(seg):
            j, more = _references(seg, j + 1, (col,))
        elif word in ("generated", "as"):
            while j < len(seg) and seg[j] != "(":
                j += 1
            end = group(seg, j)
            j, more = end, [("generated", col, canonical(seg[j:end], known))]
        else:
            j += 1
        facts += more
    return facts


def _constraint(seg: list[str], known: set[str]) -> list[Fact]:
    facts: list[Fact] = []
    j = 0
    while j < len(seg):
        word = fold(seg[j])
        more: list[Fact] = []
        if word == "constraint":
            j += 2
        elif word in ("primary", "unique"):
            j += 2 if word == "primary" else 1
            if j < len(seg) and seg[j] == "(":
                end = group(seg, j)
                kind = "PRIMARY KEY" if word == "primary" else "UNIQUE"
                # PRIMARY KEY(id AUTOINCREMENT) is the table-level spelling
                if any(fold(t) == "autoincrement" for t in seg[j:end]):
                    more.append(("autoincrement",))
                j, conflict = _conflict(seg, end, kind, _names(seg[j:end]))
                more += conflict
        elif word == "check" and j + 1 < len(seg) and seg[j + 1] == "(":
            j, more = _check(seg, j + 1, known)
        elif word == "foreign" and j + 2 < len(seg) and seg[j + 2] == "(":
            end = group(seg, j + 2)
            frm = _names(seg[j + 2 : end])
            j = end + 1 if end < len(seg) and fold(seg[end]) == "references" else end
            if j < len(seg):
                j, more = _references(seg, j, frm)
        else:
            j += 1
        facts += more
    return facts


def read(sql: str) -> Clauses:
    """The constraint clauses of a CREATE TABLE statement (nothing for a virtual table)."""
    toks = tokens(sql)
    if len(toks) < 2 or fold(toks[1]) == "virtual" or "(" not in toks:
        return Clauses()
    start = toks.index("(")
    end = group(toks, start)
    parts = _split(toks[start + 1 : end - 1])

    def is_constraint(part: list[str]) -> bool:
        return part[0][0] not in '"`[' and fold(part[0]) in _TABLE_CONSTRAINTS

    columns = tuple(name(p[0]) for p in parts if not is_constraint(p))
    known = set(columns)
    facts = [
        f for part in parts for f in (_constraint if is_constraint(part) else _column)(part, known)
    ]
    collate = {f[1]: f[2] for f in facts if f[0] == "collate"}  # the last one wins, as in SQLite
    tail = {fold(t) for t in toks[end:]}
    return Clauses(
        columns,
        {col: coll for col, coll in collate.items() if coll != "BINARY"},
        {f[1]: f[2] for f in facts if f[0] == "generated"},
        {(f[1], f[2]): f[3] for f in facts if f[0] == "conflict"},
        tuple(sorted({f[1] for f in facts if f[0] == "check"})),
        frozenset(f[1] for f in facts if f[0] == "deferred"),
        any(f[0] == "autoincrement" for f in facts),
        "rowid" in tail and "without" in tail,
        "strict" in tail,
    )
