"""Structural schema snapshots, and replaying migrations in memory to get the expected one.

A snapshot describes objects, not SQL text: a table built by CREATE TABLE and one
grown by ALTER TABLE ADD COLUMN snapshot the same if their columns, constraints and
keys are the same (`drift` compares them). Views and triggers, which have no structure
SQLite exposes, are kept as normalized SQL.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from . import signals
from .errors import MigrationFailed, PreflightError
from .migrations import Migration, run_body, tokens

IGNORED_PREFIXES = ("sqlite_", "_litestream_", "_preflight")


def ignored(name: str) -> bool:
    """The guard's own objects, SQLite's internals and Litestream's are never drift."""
    return name.lower().startswith(IGNORED_PREFIXES)


def normalize(sql: str) -> str:
    """SQL with comments, quoting of identifiers, case and white space normalized."""
    out: list[str] = []
    for tok in tokens(sql):
        if tok[0] in "\"`[":
            tok = tok[1:-1].replace('""', '"').lower()
        elif tok[0] != "'":
            tok = tok.lower()
        out.append(tok)
    text = " ".join(out)
    for a, b in ((" ,", ","), ("( ", "("), (" )", ")"), (" (", "(")):
        text = text.replace(a, b)
    return text


@dataclass(frozen=True)
class Column:
    """A column as PRAGMA table_xinfo and the table's SQL describe it."""

    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int
    hidden: int
    unique: bool
    collate: str | None = None  # from the table's SQL: PRAGMA table_xinfo does not say
    expression: str | None = None  # a generated column's AS (...), also from the SQL

    def describe(self) -> str:
        """The column as drift reports it, e.g. 'TEXT UNIQUE NOT NULL'."""
        parts = [self.type or "(no type)"]
        if self.collate:
            parts.append(f"COLLATE {self.collate}")
        if self.pk:
            parts.append("PRIMARY KEY")
        if self.unique:
            parts.append("UNIQUE")
        if self.notnull:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.hidden in (2, 3):
            parts.append(f"AS {self.expression} " + ("VIRTUAL" if self.hidden == 2 else "STORED"))
        elif self.hidden == 1:
            parts.append("HIDDEN")
        return " ".join(parts)


@dataclass(frozen=True)
class Table:
    """A table: its columns in order, and its constraints and flags as (kind, text)."""

    name: str
    columns: tuple[Column, ...]
    options: tuple[tuple[str, str], ...]  # (property, value): constraints, keys, flags


@dataclass(frozen=True)
class Index:
    """An explicit index: table, columns (with order and collation), uniqueness, WHERE."""

    name: str = field(compare=False)  # SQLite names are case-insensitive; dicts key on lower()
    table: str
    unique: bool
    columns: tuple[str, ...]
    where: str | None

    def describe(self) -> str:
        """The index as drift reports it, e.g. 'INDEX ON tokens(token_hash)'."""
        text = f"{'UNIQUE ' if self.unique else ''}INDEX ON {self.table}({', '.join(self.columns)})"
        return text + (f" WHERE {self.where}" if self.where else "")


@dataclass(frozen=True)
class Schema:
    """Every user object of a database, keyed by lower-case name."""

    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when there is no user object at all."""
        return not (self.tables or self.indexes or self.views or self.triggers)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _paren_groups(toks: list[str], keyword: str) -> list[str]:
    """Normalized text of every `keyword ( ... )` group, e.g. each CHECK constraint."""
    groups = []
    for i, tok in enumerate(toks[:-1]):
        if tok.upper() == keyword and toks[i + 1] == "(":
            depth, j = 0, i + 1
            while j < len(toks):
                depth += {"(": 1, ")": -1}.get(toks[j], 0)
                if depth == 0:
                    break
                j += 1
            groups.append(normalize(" ".join(toks[i + 1:j + 1])))
    return groups


def _tail_after_body(toks: list[str]) -> list[str]:
    """Tokens after the outermost parenthesised body (table options, index WHERE)."""
    depth, seen = 0, False
    for i, tok in enumerate(toks):
        if tok == "(":
            depth, seen = depth + 1, True
        elif tok == ")":
            depth -= 1
            if seen and depth == 0:
                return toks[i + 1:]
    return []


_TABLE_CONSTRAINTS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}


def _column_clauses(toks: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """COLLATE and generated AS (...) of each column, read from CREATE TABLE tokens.

    ALTER TABLE ADD COLUMN appends the column's text to the stored SQL, so this sees
    columns however they were added.
    """
    start = toks.index("(") + 1 if "(" in toks else len(toks)
    segments: list[list[str]] = [[]]
    depth = 0
    for tok in toks[start:]:
        if tok == "(":
            depth += 1
        elif tok == ")":
            if depth == 0:
                break
            depth -= 1
        if tok == "," and depth == 0:
            segments.append([])
        else:
            segments[-1].append(tok)
    found: dict[str, tuple[str | None, str | None]] = {}
    for seg in segments:
        if not seg or seg[0].upper() in _TABLE_CONSTRAINTS:
            continue
        collate = expression = None
        level = 0
        for i, tok in enumerate(seg):
            level += {"(": 1, ")": -1}.get(tok, 0)
            if level == 0 and tok.upper() == "COLLATE" and i + 1 < len(seg):
                collate = seg[i + 1].strip('"`[]').upper()
            if level == 0 and tok.upper() == "AS" and i + 1 < len(seg) and seg[i + 1] == "(":
                expression = _paren_groups(["AS"] + seg[i + 1:], "AS")[0]
        found[normalize(seg[0])] = (collate, expression)
    return found


def _table(conn: sqlite3.Connection, name: str, sql: str) -> tuple[Table, dict[str, Index]]:
    toks = tokens(sql)
    clauses = _column_clauses(toks)
    unique_cols: set[str] = set()
    options: list[tuple[str, str]] = []
    indexes: dict[str, Index] = {}
    for _, idx_name, unique, origin, partial in conn.execute(f"PRAGMA index_list({_q(name)})"):
        cols, names = [], []
        for _, cid, col, desc, coll, key in conn.execute(f"PRAGMA index_xinfo({_q(idx_name)})"):
            if key:
                names.append(col.lower() if col else "<expr>")
                cols.append(names[-1])
                if desc:
                    cols[-1] += " DESC"
                if coll and coll.upper() != "BINARY":
                    cols[-1] += f" COLLATE {coll.upper()}"
        if origin == "u":
            if len(names) == 1:
                unique_cols.add(names[0])
            else:
                options.append(("unique", "UNIQUE(" + ", ".join(cols) + ")"))
        elif origin == "c" and not ignored(idx_name):
            idx_sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='index' AND name=?",
                                   (idx_name,)).fetchone()[0] or ""
            idx_toks = tokens(idx_sql)
            if "<expr>" in cols:  # expression index: compare the column list as SQL
                body = idx_toks[idx_toks.index("("):len(idx_toks) - len(_tail_after_body(idx_toks))]
                cols = [normalize(" ".join(body))[1:-1]]
            tail = _tail_after_body(idx_toks)
            where = normalize(" ".join(tail[1:])) if partial and tail else None
            indexes[idx_name.lower()] = Index(idx_name, name.lower(), bool(unique), tuple(cols), where)
    columns = tuple(
        Column(col, normalize(ctype).upper(), bool(notnull),
               normalize(dflt) if dflt is not None else None, pk, hidden, col.lower() in unique_cols,
               *clauses.get(col.lower(), (None, None)))
        for _, col, ctype, notnull, dflt, pk, hidden in conn.execute(f"PRAGMA table_xinfo({_q(name)})")
    )
    fks: dict[int, list[tuple]] = {}
    for fid, _, ref, frm, to, on_update, on_delete, match in conn.execute(
            f"PRAGMA foreign_key_list({_q(name)})"):
        fks.setdefault(fid, []).append((frm, ref, to, on_update, on_delete))
    for parts in fks.values():
        frm = ", ".join(p[0].lower() for p in parts)
        to = ", ".join((p[2] or "").lower() for p in parts)
        options.append(("foreign key", f"FOREIGN KEY({frm}) REFERENCES {parts[0][1].lower()}({to}) "
                                       f"ON UPDATE {parts[0][3]} ON DELETE {parts[0][4]}"))
    options += [("check", "CHECK" + c) for c in _paren_groups(toks, "CHECK")]
    upper = [t.upper() for t in toks]
    if "AUTOINCREMENT" in upper:
        options.append(("flag", "AUTOINCREMENT"))
    tail = [t.upper() for t in _tail_after_body(toks)]
    if "ROWID" in tail:
        options.append(("flag", "WITHOUT ROWID"))
    if "STRICT" in tail:
        options.append(("flag", "STRICT"))
    if upper[:3] == ["CREATE", "VIRTUAL", "TABLE"]:
        options.append(("virtual", normalize(sql)))
    return Table(name, columns, tuple(sorted(options))), indexes


def snapshot(conn: sqlite3.Connection) -> Schema:
    """A structural description of every user object in `conn`'s main database."""
    schema = Schema()
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                        "WHERE sql IS NOT NULL ORDER BY type, name").fetchall()
    for kind, name, tbl_name, sql in rows:
        if ignored(name) or ignored(tbl_name):
            continue
        if kind == "table":
            table, indexes = _table(conn, name, sql)
            schema.tables[name.lower()] = table
            schema.indexes.update(indexes)
        elif kind == "view":
            schema.views[name.lower()] = normalize(sql)
        elif kind == "trigger":
            schema.triggers[name.lower()] = normalize(sql)
    return schema


def open_memory() -> sqlite3.Connection:
    """An empty in-memory database set up the way the guard runs migrations."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


def replay(migrations: tuple[Migration, ...], stops: set[int]) -> dict[int, Schema]:
    """Run `migrations` on an empty in-memory database; the schema after each count in `stops`.

    Every migration must work on an empty database, since a fresh install runs them all:
    one that fails here fails before the live database is touched.
    """
    conn = open_memory()
    found: dict[int, Schema] = {}
    try:
        if 0 in stops:
            found[0] = Schema()
        for count, migration in enumerate(migrations, start=1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                run_body(conn, migration, "replay")
                conn.execute("COMMIT")
            except PreflightError:
                raise  # e.g. Interrupted: not this migration's fault
            except Exception as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # no transaction left, or the connection was closed
                if signals.received():  # its Interrupted was lost inside SQLite
                    raise signals.swallowed() from exc
                raise MigrationFailed(
                    f"{migration.name}: fails on an empty database: {exc}",
                    "fix the migration; the live database was not touched") from exc
            if count in stops:
                found[count] = snapshot(conn)
    finally:
        conn.close()
    return found
