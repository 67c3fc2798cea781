"""Foreign-key violations, and which of them a run introduced (docs/internals.md, "Foreign
keys: what a run introduced"): an orphan of the baseline, followed through renames and
rebuilds, is reported, not blamed on the run."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from preflight.schema import sqltext, statements
from preflight.schema.sqltext import quote

log = logging.getLogger("preflight")

Key = tuple[Any, ...]  # (table, parent, columns, values) in lower case


@dataclass(frozen=True)
class Violation:
    table: str
    rowid: int | None  # None in a WITHOUT ROWID table
    parent: str
    columns: tuple[str, ...]
    values: tuple[object, ...] | None  # the referencing values (None: the row was not found)
    primary_key: tuple[tuple[str, object], ...] | None = None  # a WITHOUT ROWID row's

    def message(self) -> str:
        """e.g. 'comments rowid 7 (post_id=42) -> posts'."""
        if self.rowid is not None:
            where = f"rowid {self.rowid}"
        elif self.primary_key is not None:
            where = "row " + ", ".join(f"{c}={v!r}" for c, v in self.primary_key)
        else:
            where = "a WITHOUT ROWID row"
        if self.values is not None:
            where += " (" + ", ".join(f"{c}={v!r}" for c, v in zip(self.columns, self.values)) + ")"
        return f"{self.table} {where} -> {self.parent}"

    def identity(self) -> object:
        if self.rowid is not None:
            return self.rowid
        return None if self.primary_key is None else tuple(v for _, v in self.primary_key)

    def as_dict(self) -> dict[str, object]:
        found = asdict(self)
        if self.primary_key is None:
            del found["primary_key"]
        else:
            found["primary_key"] = dict(self.primary_key)
        return found


def _check(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """PRAGMA foreign_key_check; table by table, skipping those whose keys cannot be checked
    ('foreign key mismatch': the parent columns are not unique)."""
    try:
        return conn.execute("PRAGMA main.foreign_key_check").fetchall()
    except sqlite3.OperationalError as exc:
        if "mismatch" not in str(exc):
            raise
    found = []
    for (table,) in conn.execute(
        "SELECT name FROM main.sqlite_master WHERE type='table'"
    ).fetchall():
        try:
            found += conn.execute(f"PRAGMA main.foreign_key_check({quote(table)})").fetchall()
        except sqlite3.OperationalError as exc:
            if "mismatch" not in str(exc):
                raise
            log.warning("foreign keys: cannot check %s: %s", table, exc)
    return found


def violations(conn: sqlite3.Connection) -> list[Violation]:
    found: list[Violation] = []
    keys: dict[str, dict[int, list[tuple[str, str, str | None]]]] = {}
    rowless: dict[tuple[str, int], list[int]] = {}
    for table, rowid, parent, fkid in _check(conn):
        if table not in keys:
            listed = conn.execute(f"PRAGMA foreign_key_list({quote(table)})")
            keys[table] = {}
            for fid, _, par, frm, to, *_ in listed:
                keys[table].setdefault(fid, []).append((par, frm, to))
        cols_of = tuple(sqltext.fold(frm) for _, frm, _ in keys[table].get(fkid, ()))
        values = None
        if rowid is not None and cols_of:
            cols = ", ".join(quote(c) for c in cols_of)
            sql = f"SELECT {cols} FROM {quote(table)} WHERE rowid = ?"
            row = conn.execute(sql, (rowid,)).fetchone()
            values = tuple(row) if row is not None else None
        elif rowid is None:
            rowless.setdefault((table, fkid), []).append(len(found))
        found.append(Violation(table, rowid, parent, cols_of, values))
    for (table, fkid), where in rowless.items():
        rows = _rowless(conn, table, keys[table].get(fkid, []))
        if rows is None or len(rows) != len(where):
            log.warning(
                "foreign keys: cannot tell which rows of the WITHOUT ROWID table %s break "
                "its foreign key to %s; compared by count",
                table,
                found[where[0]].parent,
            )
            continue
        for i, (key, values) in zip(where, rows):
            found[i] = replace(found[i], values=values, primary_key=key)
    return found


def _rowless(
    conn: sqlite3.Connection, table: str, fk: list[tuple[str, str, str | None]]
) -> list[tuple[tuple[tuple[str, object], ...], tuple[object, ...]]] | None:
    """(primary key, referencing values) of a WITHOUT ROWID table's rows that break one foreign
    key (foreign_key_check names none), looked up as SQLite does: `p.col = +c.col`."""
    if not fk:
        return None
    parent = fk[0][0]
    children = [frm for _, frm, _ in fk]
    targets: list[str | None] = [to for _, _, to in fk]
    from preflight.schema import reader  # not on a fresh build (no table to read)

    pk = reader.primary_key(conn, table)

    exists = reader.stored_name(conn, parent)
    where = " AND ".join(f"c.{quote(f)} IS NOT NULL" for f in children)
    if exists is not None:
        if any(t is None for t in targets):
            targets = [*reader.primary_key(conn, exists)]
        if len(targets) != len(children) or not pk:
            return None
        match = " AND ".join(
            f"p.{quote(str(t))} = +c.{quote(f)}" for t, f in zip(targets, children)
        )
        where += f" AND NOT EXISTS (SELECT 1 FROM main.{quote(exists)} AS p WHERE {match})"
    columns = ", ".join(f"c.{quote(c)}" for c in [*pk, *children])
    try:
        rows = conn.execute(
            f"SELECT {columns} FROM main.{quote(table)} AS c WHERE {where}"
        ).fetchall()
    except sqlite3.Error:
        return None
    n = len(pk)
    return [(tuple(zip(pk, row[:n])), tuple(row[n:])) for row in rows]


@dataclass(frozen=True)
class _Table:
    storage: str | None  # the baseline table it is (renamed or not); None: created in the run
    fed: frozenset[str] = frozenset()  # baseline tables whose rows were copied into it
    columns: tuple[tuple[str, str], ...] = ()  # (name now, name at baseline), renamed only

    def origins(self) -> frozenset[str]:
        return (self.fed | {self.storage}) if self.storage else self.fed

    def baseline_column(self, column: str) -> str:
        return dict(self.columns).get(column, column)


# Only these statements can read another table's rows (a plain INSERT ... VALUES cannot).
_READS = {"select", "from"}
_WRITES = {"CREATE", "DROP", "ALTER", "INSERT", "REPLACE", "UPDATE", "WITH"}


class Lineage:
    """Which baseline tables each table's rows come from, followed statement by statement
    (`watch`); an error marks it lost: matching falls back to names."""

    def __init__(self, tables: Iterable[str]) -> None:
        self.tables: dict[str, _Table] = {sqltext.fold(t): _Table(sqltext.fold(t)) for t in tables}
        # every baseline table a name stood for: a REFERENCES may outlive its table
        self.named: dict[str, set[str]] = {n: {n} for n in self.tables}
        self.lost = ""
        self.reported = False

    def statement(self, sql: str | None) -> None:
        try:
            if sql:
                self._statement(sql)
        except Exception as exc:  # a trace callback must not raise: SQLite would drop it
            self.lost = self.lost or f"{type(exc).__name__}: {exc}"

    def table(self, name: str) -> _Table | None:
        return self.tables.get(sqltext.fold(name))

    def stood_for(self, name: str) -> set[str]:
        folded = sqltext.fold(name)
        return self.named.get(folded, set()) | {folded}

    def _bind(self, name: str, table: _Table) -> None:
        self.tables[name] = table
        self.named.setdefault(name, set()).update(table.origins())

    def _sources(self, toks: list[str], skip: set[int], target: str = "") -> frozenset[str]:
        """The baseline tables whose rows a statement reads: every current table it names (not
        a `t.col` qualifier or column), but the target (`VALUES ((SELECT max(id) ...`)."""
        found: set[str] = set()
        for i, tok in enumerate(toks):
            if i in skip or not sqltext.is_word(tok) or tok[0] == "'":
                continue
            if target and sqltext.name(tok) == target:
                continue
            if i + 1 < len(toks) and toks[i + 1] == ".":
                continue
            if i and toks[i - 1] == "." and (i < 2 or sqltext.name(toks[i - 2]) not in _SCHEMAS):
                continue
            table = self.tables.get(sqltext.name(tok))
            if table is not None:
                found |= table.origins()
        return frozenset(found)

    def _statement(self, sql: str) -> None:
        # Called for every statement of a data file: the common cases without tokenizing.
        first = statements.first_word(sql) or "".join(statements.head(sql, 1))
        if first not in _WRITES:
            return
        writes_rows = first in ("INSERT", "REPLACE", "UPDATE", "WITH")
        if writes_rows and not statements.copies_rows(sql):
            return  # rows from literals: nothing copied from another table
        toks = statements.tokens(sql)  # linear also over a 6 MB literal
        if any(len(t) == 1 and t >= "\x80" for t in toks):
            toks = sqltext.tokens(sql)  # a bare non-ASCII name: read it whole
        words = [sqltext.fold(t) if len(t) < 64 else "" for t in toks]  # keywords only
        if writes_rows and not _READS & set(words):
            return
        if words[0] == "create":
            self._create(toks, words)
        elif words[0] == "drop" and words[1:2] == ["table"]:
            at = 4 if words[2:4] == ["if", "exists"] else 2
            name, _ = _name_at(toks, at)
            self.tables.pop(name, None)
        elif words[0] == "alter" and words[1:2] == ["table"]:
            self._alter(toks, words)
        else:
            self._write(toks, words)

    def _create(self, toks: list[str], words: list[str]) -> None:
        at = 2 if words[1:2] in (["temp"], ["temporary"]) else 1
        if words[at : at + 1] != ["table"]:
            return  # an index, view, trigger or virtual table holds no rows of its own here
        guarded = words[at + 1 : at + 4] == ["if", "not", "exists"]
        name, at = _name_at(toks, at + 1 + 3 * guarded)
        if guarded and name in self.tables:
            return
        fed = self._sources(toks[at:], set()) if words[at : at + 1] == ["as"] else frozenset()
        self._bind(name, _Table(None, fed))

    def _alter(self, toks: list[str], words: list[str]) -> None:
        name, at = _name_at(toks, 2)
        if words[at : at + 1] != ["rename"]:
            return  # ADD or DROP COLUMN: same rows, same names
        at += 1
        if words[at : at + 1] == ["to"]:
            self._bind(_name_at(toks, at + 1)[0], self.tables.pop(name, _Table(None)))
            return
        if words[at : at + 1] == ["column"]:
            at += 1
        if at + 2 < len(toks) and words[at + 1] == "to" and name in self.tables:
            table = self.tables[name]
            old, new = sqltext.name(toks[at]), sqltext.name(toks[at + 2])
            was = table.baseline_column(old)
            kept = tuple((now, base) for now, base in table.columns if now != old)
            self.tables[name] = replace(table, columns=(*kept, (new, was)))

    def _write(self, toks: list[str], words: list[str]) -> None:
        """INSERT, REPLACE or UPDATE: the target gets the origins of every table it reads."""
        depth, target, updating = 0, -1, False
        for i, word in enumerate(words):
            depth += {"(": 1, ")": -1}.get(word, 0)
            if depth == 0 and word in ("into", "update"):
                target, updating = i + 1, word == "update"
                if updating and words[target : target + 1] == ["or"]:
                    target += 2
                break
        if target < 0 or target >= len(toks):
            return  # a SELECT (WITH ... SELECT) writes nothing
        name, after = _name_at(toks, target)
        skip = set(range(target, after))
        if after < len(toks) and toks[after] == "(" and not updating:
            from preflight.schema import ddl  # a traced run only: never a fresh build

            skip.update(range(after, ddl.group(toks, after)))  # the INSERT's column list
        if updating:
            # UPDATE: rows come from SET (and UPDATE ... FROM); WHERE only picks the rows
            depth = 0
            for j in range(after, len(toks)):
                depth += {"(": 1, ")": -1}.get(toks[j], 0)
                if depth == 0 and words[j] in ("where", "returning"):
                    skip.update(range(j, len(toks)))
                    break
        fed = self._sources(toks, skip, name)
        table = self.tables.get(name)
        if fed and table is not None:
            self._bind(name, replace(table, fed=table.fed | fed))


_SCHEMAS = {"main", "temp"}


def _name_at(toks: list[str], at: int) -> tuple[str, int]:
    """The folded table name at toks[at] (`name` or `schema.name`), and the index after it."""
    if at + 2 < len(toks) and toks[at + 1] == ".":
        return sqltext.name(toks[at + 2]), at + 3
    return (sqltext.name(toks[at]) if at < len(toks) else ""), at + 1


@dataclass(frozen=True)
class Baseline:
    found: tuple[Violation, ...] = ()
    lineage: Lineage | None = field(default=None, compare=False)


def watch(conn: sqlite3.Connection, found: list[Violation]) -> Baseline:
    """The baseline of a run about to execute on `conn`, and a lineage following it (trace)."""
    tables = [
        name for (name,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type='table'")
    ]
    if not tables:
        # A fresh build: no orphan to follow, so no statement is traced.
        return Baseline(tuple(found))
    lineage = Lineage(tables)
    conn.set_trace_callback(lineage.statement)
    return Baseline(tuple(found), lineage)


Before = Baseline | Counter[Key]  # what `introduced` compares a run's result with


def baseline(found: list[Violation]) -> Counter[Key]:
    """The violation keys, for a run no trace follows (another process's)."""
    return Counter(_key(v) for v in found)


def _key(v: Violation) -> Key:
    return (v.table.lower(), v.parent.lower(), v.columns, v.values)


def introduced(before: Before, after: list[Violation]) -> list[Violation]:
    """The violations in `after` that no orphan of `before` accounts for. A run not watched
    is compared by names: the same key, else the same dangling values in the same child
    table or under the same parent, each orphan used once."""
    if isinstance(before, Baseline):
        lineage = before.lineage
        if lineage is not None and not lineage.lost:
            return _followed(before.found, lineage, after)
        if lineage is not None:
            log.warning("foreign keys: could not follow the run's renames (%s)", lineage.lost)
        before = baseline(list(before.found))
    left = Counter(before)
    unmatched = []
    for v in after:
        if left[_key(v)] > 0:
            left[_key(v)] -= 1
        else:
            unmatched.append(v)
    loose: dict[object, list[Key]] = {}
    for k, n in left.items():
        if n > 0 and k[3] is not None:
            loose.setdefault(k[3], []).append(k)
    new = []
    for v in unmatched:
        near = (
            k
            for k in loose.get(v.values, ())
            if k[0] == v.table.lower() or k[1] == v.parent.lower()
        )
        old = next((k for k in near if left[k] > 0), None)
        if old is None:
            new.append(v)
        else:
            left[old] -= 1
    return new


def _followed(
    before: tuple[Violation, ...], lineage: Lineage, after: list[Violation]
) -> list[Violation]:
    same: dict[tuple[object, ...], list[Violation]] = {}
    copied: dict[tuple[object, ...], list[Violation]] = {}
    for b in before:
        name = sqltext.fold(b.table)
        same.setdefault((name, b.identity(), b.columns, b.values), []).append(b)
        copied.setdefault((name, b.values), []).append(b)
    used: set[int] = set()
    taken: dict[tuple[str, int], object] = {}
    new: list[Violation] = []
    moved: list[tuple[Violation, Violation]] = []
    for v in after:
        table = lineage.table(v.table)
        if table is None:
            new.append(v)
            continue
        parents = lineage.stood_for(v.parent)
        old, copy = None, False
        if table.storage is not None:
            columns = tuple(table.baseline_column(c) for c in v.columns)
            candidates = same.get((table.storage, v.identity(), columns, v.values), ())
            old = next(
                (b for b in candidates if id(b) not in used and sqltext.fold(b.parent) in parents),
                None,
            )
            if old is not None:
                used.add(id(old))
        if old is None and v.values is not None:
            copy = True
            old = _copy_of(v, table, parents, copied, taken)
        if old is None:
            new.append(v)
        elif copy or old.table != v.table or old.parent != v.parent or old.columns != v.columns:
            moved.append((v, old))
    if moved and not lineage.reported:
        lineage.reported = True
        log.warning(
            "foreign keys: %d orphan(s) from before this run carried through its renames or "
            "rebuilds (not made by it): %s",
            len(moved),
            "; ".join(f"{v.message()} (was {b.message()})" for v, b in moved[:3])
            + (f" (+{len(moved) - 3} more)" if len(moved) > 3 else ""),
        )
    return new


def _copy_of(
    v: Violation,
    table: _Table,
    parents: set[str],
    copied: dict[tuple[object, ...], list[Violation]],
    taken: dict[tuple[str, int], object],
) -> Violation | None:
    """The old orphan `v` copies: the same dangling values and parent, in a table `v`'s was
    filled from; in a rebuild one row an orphan, in a fan-out (a join) any number."""
    here = sqltext.fold(v.table)
    for source in sorted(table.fed):
        for b in copied.get((source, v.values), ()):
            if sqltext.fold(b.parent) not in parents:
                continue
            if source != here:
                return b
            row = v.identity() if v.identity() is not None else object()
            if taken.setdefault((here, id(b)), row) == row:
                return b
    return None


def summary(found: list[Violation], limit: int = 3) -> str:
    """'N foreign key violation(s): a, b, c (+k more)'."""
    shown = "; ".join(v.message() for v in found[:limit])
    more = f" (+{len(found) - limit} more)" if len(found) > limit else ""
    return f"{len(found)} foreign key violation(s): {shown}{more}"
