"""What a CREATE TABLE statement says that SQLite's PRAGMAs do not.

PRAGMA table_xinfo, index_list and foreign_key_list describe columns, keys and foreign
keys, but not a column's COLLATE, a generated column's expression, CHECK constraints,
ON CONFLICT clauses, DEFERRABLE INITIALLY DEFERRED, AUTOINCREMENT, WITHOUT ROWID or
STRICT. These are read here from the table's SQL, which ALTER TABLE keeps current (ADD
COLUMN appends the column's text, RENAME rewrites names). Constraint names, MATCH
clauses (SQLite ignores them) and ON CONFLICT ABORT (the default) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .sqltext import canonical, fold, is_word, name, tokens, upper

_TABLE_CONSTRAINTS = {"constraint", "primary", "unique", "check", "foreign"}
_COLUMN_CONSTRAINTS = _TABLE_CONSTRAINTS | {"not", "null", "default", "collate", "references",
                                            "generated", "as"}
Key = tuple[tuple[str, ...], str, tuple[str, ...]]  # foreign key: (from columns, parent, to columns)


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


def _group(toks: list[str], i: int) -> int:
    """Index just past the parenthesised group opening at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[j], 0)
        if depth == 0:
            return j + 1
    return len(toks)


def _split(toks: list[str]) -> list[list[str]]:
    """Top-level comma-separated parts of a token list."""
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


class _Reader:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.collate: dict[str, str] = {}
        self.generated: dict[str, str] = {}
        self.conflicts: dict[tuple[str, tuple[str, ...]], str] = {}
        self.checks: list[str] = []
        self.deferred: set[Key] = set()
        self.autoincrement = False

    def conflict(self, seg: list[str], j: int, kind: str, cols: tuple[str, ...]) -> int:
        if j + 2 < len(seg) and fold(seg[j]) == "on" and fold(seg[j + 1]) == "conflict":
            resolution = upper(seg[j + 2])
            if resolution != "ABORT" and kind != "NULL":
                self.conflicts[(kind, cols)] = resolution
            return j + 3
        return j

    def references(self, seg: list[str], j: int, frm: tuple[str, ...]) -> int:
        parent, j = name(seg[j]), j + 1
        to: tuple[str, ...] = ()
        if j < len(seg) and seg[j] == "(":
            end = _group(seg, j)
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
            elif word == "not" and nxt == "deferrable":
                deferred, j = False, j + 2
                j += 2 if j < len(seg) and fold(seg[j]) == "initially" else 0
            elif word == "deferrable":
                # only DEFERRABLE INITIALLY DEFERRED defers; NOT DEFERRABLE ... never does
                deferred, j = False, j + 1
                if nxt == "initially" and j + 1 < len(seg):
                    deferred, j = fold(seg[j + 1]) == "deferred", j + 2
            else:
                break
        if deferred:
            self.deferred.add((frm, parent, to))
        return j

    def check(self, seg: list[str], j: int) -> int:
        end = _group(seg, j)
        self.checks.append("CHECK" + canonical(seg[j:end], self.known))
        return end

    def column(self, seg: list[str]) -> None:
        col = name(seg[0])
        j = 1
        while j < len(seg) and not (is_word(seg[j]) and seg[j][0] not in '"`['
                                    and fold(seg[j]) in _COLUMN_CONSTRAINTS):
            j = _group(seg, j) if seg[j] == "(" else j + 1
        while j < len(seg):
            word = fold(seg[j])
            if word == "constraint":
                j += 2
            elif word == "primary":
                j += 2
                j += 1 if j < len(seg) and fold(seg[j]) in ("asc", "desc") else 0
                j = self.conflict(seg, j, "PRIMARY KEY", (col,))
                if j < len(seg) and fold(seg[j]) == "autoincrement":
                    self.autoincrement, j = True, j + 1
            elif word == "not" and j + 1 < len(seg) and fold(seg[j + 1]) == "null":
                j = self.conflict(seg, j + 2, "NOT NULL", (col,))
            elif word == "null":
                j = self.conflict(seg, j + 1, "NULL", (col,))
            elif word == "unique":
                j = self.conflict(seg, j + 1, "UNIQUE", (col,))
            elif word == "check" and j + 1 < len(seg) and seg[j + 1] == "(":
                j = self.check(seg, j + 1)
            elif word == "default" and j + 1 < len(seg):
                j += 1
                j = _group(seg, j) if seg[j] == "(" else j + (2 if seg[j] in ("+", "-") else 1)
            elif word == "collate" and j + 1 < len(seg):
                coll = upper(name(seg[j + 1]))
                if coll == "BINARY":
                    self.collate.pop(col, None)
                else:
                    self.collate[col] = coll
                j += 2
            elif word == "references" and j + 1 < len(seg):
                j = self.references(seg, j + 1, (col,))
            elif word in ("generated", "as"):
                while j < len(seg) and seg[j] != "(":
                    j += 1
                end = _group(seg, j)
                self.generated[col] = canonical(seg[j:end], self.known)
                j = end
            else:
                j += 1

    def constraint(self, seg: list[str]) -> None:
        j = 0
        while j < len(seg):
            word = fold(seg[j])
            if word == "constraint":
                j += 2
            elif word in ("primary", "unique"):
                j += 2 if word == "primary" else 1
                if j < len(seg) and seg[j] == "(":
                    end = _group(seg, j)
                    kind = "PRIMARY KEY" if word == "primary" else "UNIQUE"
                    # PRIMARY KEY(id AUTOINCREMENT) is the table-level spelling
                    self.autoincrement |= any(fold(t) == "autoincrement" for t in seg[j:end])
                    j = self.conflict(seg, end, kind, _names(seg[j:end]))
            elif word == "check" and j + 1 < len(seg) and seg[j + 1] == "(":
                j = self.check(seg, j + 1)
            elif word == "foreign" and j + 2 < len(seg) and seg[j + 2] == "(":
                end = _group(seg, j + 2)
                frm = _names(seg[j + 2:end])
                j = end + 1 if end < len(seg) and fold(seg[end]) == "references" else end
                j = self.references(seg, j, frm) if j < len(seg) else j
            else:
                j += 1


def read(sql: str) -> Clauses:
    """The constraint clauses of a CREATE TABLE statement (nothing for a virtual table)."""
    toks = tokens(sql)
    if len(toks) < 2 or fold(toks[1]) == "virtual" or "(" not in toks:
        return Clauses()
    start = toks.index("(")
    end = _group(toks, start)
    parts = _split(toks[start + 1:end - 1])

    def is_constraint(part: list[str]) -> bool:
        return part[0][0] not in '"`[' and fold(part[0]) in _TABLE_CONSTRAINTS

    columns = tuple(name(p[0]) for p in parts if not is_constraint(p))
    reader = _Reader(set(columns))
    for part in parts:
        (reader.constraint if is_constraint(part) else reader.column)(part)
    tail = {fold(t) for t in toks[end:]}
    return Clauses(columns, reader.collate, reader.generated, reader.conflicts,
                   tuple(sorted(set(reader.checks))), frozenset(reader.deferred),
                   reader.autoincrement, "rowid" in tail and "without" in tail, "strict" in tail)
