"""Reading the structural schema (`model`) from a database, with a memo keyed by SQL text
(what SQLite's PRAGMAs derive everything from): `replay` shares one across every stop."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from preflight.schema import ddl
from preflight.schema.model import Schema, ignored, normalize
from preflight.schema.objects import Column, Index, Table
from preflight.schema.sqltext import (
    canonical,
    default,
    fold,
    identifier_positions,
    local_names,
    name,
    quote,
    tokens,
    trigger_head,
    unquote,
    upper,
)

Memo = dict[Any, Any]  # what was read from each SQL text, shared by every stop
UNRESOLVED = "<its primary key>"


def _key_columns(
    conn: sqlite3.Connection, index: str, collate: dict[str, str]
) -> list[tuple[str, str]]:
    """An index's key: (column, ' DESC' and/or a collation other than the column's in `collate`)."""
    cols = []
    for _, _, col, desc, coll, key in conn.execute(f"PRAGMA index_xinfo({quote(index)})"):
        if key:
            col = fold(col or "<expr>")
            other = upper(coll or "BINARY") != collate.get(col, "BINARY")
            cols.append((col, " DESC" * bool(desc) + f" COLLATE {upper(coll)}" * other))
    return cols


def _table(conn: sqlite3.Connection, name: str, sql: str) -> Table:
    clauses = ddl.read(sql)
    conflicts = dict(clauses.conflicts)
    unique_cols: set[str] = set()
    options: list[tuple[str, str]] = []
    for _, idx_name, _, origin, _ in conn.execute(f"PRAGMA index_list({quote(name)})"):
        if origin not in ("u", "pk"):
            continue
        cols = _key_columns(conn, idx_name, clauses.collate)
        text = ", ".join(col + extra for col, extra in cols)
        if origin == "u" and len(cols) == 1 and not cols[0][1]:
            unique_cols.add(cols[0][0])
        elif origin == "u":
            names = tuple(col for col, _ in cols)
            on = conflicts.pop(("UNIQUE", names), None) if len(names) > 1 else None
            options.append(("unique", f"UNIQUE({text})" + (f" ON CONFLICT {on}" if on else "")))
        else:
            # A rowid table has this index only when its key is not the rowid itself:
            # INTEGER PRIMARY KEY DESC, or any other type, is a separate b-tree.
            options.append(("key", f"PRIMARY KEY index ({text})"))
    rows = xinfo(conn, name)
    keys = [r for r in rows if r[5]]
    if (
        not clauses.without_rowid
        and not any(kind == "key" for kind, _ in options)
        and len(keys) == 1
        and upper(keys[0][2]) == "INTEGER"
    ):
        # The rowid itself: it can never hold NULL (a NULL inserted becomes a new rowid,
        # an UPDATE to NULL fails), so NOT NULL and its ON CONFLICT change nothing.
        rowid = fold(keys[0][1])
        conflicts.pop(("NOT NULL", (rowid,)), None)
        rows = [r[:3] + (1,) + r[4:] if fold(r[1]) == rowid else r for r in rows]
    else:
        rowid = None
    for (kind, names), on in conflicts.items():
        if len(names) > 1:
            options.append(("conflict", f"{kind}({', '.join(names)}) ON CONFLICT {on}"))
    single = sorted(
        (names[0], kind, on) for (kind, names), on in conflicts.items() if len(names) == 1
    )
    columns = tuple(
        Column(
            col,
            upper(normalize(ctype)),
            bool(notnull),
            default(dflt) if dflt is not None else None,
            pk,
            hidden,
            fold(col) in unique_cols,
            clauses.collate.get(fold(col)),
            clauses.generated.get(fold(col)),
            tuple((kind, on) for c, kind, on in single if c == fold(col)),
            fold(col) == rowid,
        )
        for _, col, ctype, notnull, dflt, pk, hidden in rows
    )
    fks: dict[int, list[tuple[Any, ...]]] = {}
    for fid, _, ref, frm, to, on_update, on_delete, _ in conn.execute(
        f"PRAGMA foreign_key_list({quote(name)})"
    ):
        fks.setdefault(fid, []).append((frm, ref, to, on_update, on_delete))
    refs = []
    for parts in fks.values():
        frm = tuple(fold(p[0]) for p in parts)
        parent = fold(parts[0][1])
        to = tuple(fold(p[2]) for p in parts) if all(p[2] for p in parts) else ()
        if not to:
            refs.append(parent)
        deferred = " DEFERRABLE INITIALLY DEFERRED" if (frm, parent, to) in clauses.deferred else ""
        text = (
            f"FOREIGN KEY({', '.join(frm)}) REFERENCES {parent}({', '.join(to) or UNRESOLVED}) "
            f"ON UPDATE {parts[0][3]} ON DELETE {parts[0][4]}{deferred}"
        )
        options.append(("foreign key", text))
    options += [("check", c) for c in clauses.checks]
    flags = {"AUTOINCREMENT": clauses.autoincrement, "WITHOUT ROWID": clauses.without_rowid}
    flags["STRICT"] = clauses.strict
    options += [("flag", flag) for flag, present in flags.items() if present]
    toks = tokens(sql)
    if fold(" ".join(toks[:3])) == "create virtual table":
        # Module arguments are text the module reads itself; FTS5 and its kin accept a
        # bare word or any quoting for one value, so every quoted token is compared unquoted.
        quoted = {i for i, t in enumerate(toks) if t[:1] in "'\"`["}
        spelled = [quote(unquote(t)) if i in quoted else t for i, t in enumerate(toks)]
        options.append(("virtual", canonical(spelled, frozenset(), quoted)))
    return Table(name, columns, tuple(sorted(set(options))), tuple(refs), sql)


def _resolve(table: Table, tables: dict[str, Table]) -> Table:
    """`REFERENCES p` means p's primary key: write it out."""
    options = []
    for kind, text in table.options:
        for parent in table.refs:
            pk = tables.get(parent)
            cols = sorted((c for c in pk.columns if c.pk), key=lambda c: c.pk) if pk else []
            if cols:
                text = text.replace(
                    f"REFERENCES {parent}({UNRESOLVED})",
                    f"REFERENCES {parent}({', '.join(fold(c.name) for c in cols)})",
                )
        options.append((kind, text))
    return Table(table.name, table.columns, tuple(sorted(options)), table.refs, table.sql)


def _statement(sql: str, memo: Memo, tables: dict[str, Table]) -> str:
    """A view or trigger in canonical text: a double-quoted token not where only a name can
    stand is an identifier if it names a column of a table the statement names, else a string."""
    prepared = memo.get(("parsed", sql))
    if prepared is None:
        toks = trigger_head(tokens(sql))
        found = identifier_positions(toks)
        local = local_names(toks)
        found |= {i for i, t in enumerate(toks) if t[:1] == '"' and name(t) in local}
        open_ = [i for i, t in enumerate(toks) if t[:1] == '"' and i not in found]
        named = frozenset(
            name(t) for t in toks if t[:1] in '"`[' or t[:1].isalpha() or t[:1] == "_"
        )
        prepared = memo[("parsed", sql)] = (toks, frozenset(found), open_, named)
    toks, idents, open_, named = prepared
    resolved: tuple[bool, ...] = ()
    if open_:
        in_scope = tuple(tables[t] for t in sorted(named) if t in tables)
        scope_key = ("scope", sql, tuple(t.sql for t in in_scope))
        if scope_key not in memo:
            scope = {fold(c.name) for t in in_scope for c in t.columns}
            memo[scope_key] = tuple(name(toks[i]) in scope for i in open_)
        resolved = memo[scope_key]
    key = ("text", sql, resolved)
    if key not in memo:
        memo[key] = canonical(toks, frozenset(), idents | {i for i, r in zip(open_, resolved) if r})
    return memo[key]  # type: ignore[no-any-return]


def _read(conn: sqlite3.Connection, row: tuple[str, str, str, str], memo: Memo) -> tuple[Any, ...]:
    """(kind, folded name, folded table, what the SQL says) for one sqlite_master row, once."""
    found = memo.get(row)
    if found is None:
        kind, obj, tbl_name, sql = row
        value: object = None
        if ignored(obj) or ignored(tbl_name):
            kind = "ignored"
        elif kind == "table":
            value = _table(conn, obj, sql)
            memo[("plain", obj, sql)] = value  # before its foreign keys are resolved
        found = memo[row] = (kind, fold(obj), fold(tbl_name), value)
    return found


Row = tuple[str, str, str, str]  # sqlite_master: type, name, tbl_name, sql


def rows(conn: sqlite3.Connection) -> list[Row]:
    return conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE sql IS NOT NULL ORDER BY type, name"
    ).fetchall()


@dataclass(frozen=True)
class Stop:
    """What a replay stop read: the next stop is built from the differences."""

    rows: frozenset[Row]
    schema: Schema
    open_rows: frozenset[Row]  # views and triggers whose text depends on table columns
    with_refs: frozenset[str]  # tables with a foreign key that names no parent columns


def build(
    conn: sqlite3.Connection, rows: list[Row], memo: Memo, before: Stop | None = None
) -> Stop:
    """The schema of `rows`; with `before` (a replay's previous stop), only what changed since
    (or depends on a changed table) is read."""
    new = frozenset(rows)
    base = before.schema if before else Schema()
    schema = Schema(dict(base.tables), dict(base.indexes), dict(base.views), dict(base.triggers))
    schema.texts.update(base.texts)
    if before is not None and before.rows == new:
        return Stop(new, schema, before.open_rows, before.with_refs)
    kinds: dict[str, dict[str, Any]] = {
        "table": schema.tables,
        "index": schema.indexes,
        "view": schema.views,
        "trigger": schema.triggers,
    }
    gone = before.rows - new if before else frozenset()
    added = sorted(new - before.rows) if before else rows
    open_rows = set(before.open_rows - gone) if before else set()
    with_refs = set(before.with_refs) if before else set()
    changed: set[str] = set()
    for row in gone:
        kind, obj, _, _ = memo[row]
        if kind in kinds:
            kinds[kind].pop(obj, None)
            schema.texts.pop((kind, obj), None)
        if kind == "table":
            changed.add(obj)
            with_refs.discard(obj)
    for row in added:
        kind, obj, _, table = _read(conn, row, memo)
        if kind in kinds:
            schema.texts[(kind, obj)] = row[3]
        if kind == "table":
            schema.tables[obj] = table
            changed.add(obj)
            if table.refs:
                with_refs.add(obj)
    for obj in with_refs if changed else ():
        table = schema.tables[obj]
        parents = tuple(getattr(schema.tables.get(p), "sql", None) for p in table.refs)
        key = ("resolved", obj, table.sql, parents)
        if key not in memo:
            memo[key] = _resolve(memo[("plain", table.name, table.sql)], schema.tables)
        schema.tables[obj] = memo[key]
    if changed & base.tables.keys():  # an existing table changed: so may its indexes
        for obj, index in list(schema.indexes.items()):
            if index.table in changed:  # its columns' collations come from the table's SQL
                schema.indexes[obj] = _index_of(
                    conn, index.name, index.sql.split("\0")[0], schema.tables.get(index.table), memo
                )
    for row in added:
        kind, obj, tbl, _ = memo[row]
        if kind == "index":
            schema.indexes[obj] = _index_of(conn, row[1], row[3], schema.tables.get(tbl), memo)
        elif kind in ("view", "trigger"):
            kinds[kind][obj] = _statement(row[3], memo, schema.tables)
            if memo[("parsed", row[3])][2]:
                open_rows.add(row)
    for row in open_rows if changed else ():
        if memo[("parsed", row[3])][3] & changed:  # it names a changed table
            kind, obj, _, _ = memo[row]
            kinds[kind][obj] = _statement(row[3], memo, schema.tables)
    return Stop(new, schema, frozenset(open_rows), frozenset(with_refs))


def _index_of(
    conn: sqlite3.Connection, name: str, sql: str, table: Table | None, memo: Memo
) -> Index:
    key = ("index", name, sql, table.sql if table else "")
    if key in memo:
        return memo[key]  # type: ignore[no-any-return]
    cols = [col + extra for col, extra in _key_columns(conn, name, {})]
    toks = tokens(sql)
    tail = toks[ddl.group(toks, toks.index("(")) :] if "(" in toks else []  # WHERE
    known = {fold(c.name) for c in table.columns} if table else set()
    if "<expr>" in cols:  # expression index: compare the column list as SQL
        body = toks[toks.index("(") : len(toks) - len(tail)]
        cols = [canonical(body, known)[1:-1]]
    where = canonical(tail[1:], known) if tail and fold(tail[0]) == "where" else None
    unique = fold(" ".join(toks[:2])) == "create unique"
    on = fold(table.name) if table else ""
    memo[key] = Index(name, on, unique, tuple(cols), where, f"{sql}\0{key[3]}")
    return memo[key]  # type: ignore[no-any-return]


def snapshot(conn: sqlite3.Connection, memo: Memo | None = None) -> Schema:
    return build(conn, rows(conn), {} if memo is None else memo).schema


def xinfo(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """PRAGMA table_xinfo of a main table: (cid, name, type, notnull, default, pk, hidden)."""
    return conn.execute(f"PRAGMA main.table_xinfo({quote(table)})").fetchall()


def primary_key(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in sorted(xinfo(conn, table), key=lambda r: r[5]) if r[5] > 0]


def stored_name(conn: sqlite3.Connection, table: str) -> str | None:
    """The name a main table is stored under, matched as SQLite does (NOCASE)."""
    row = conn.execute(
        "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (table,),
    ).fetchone()
    return None if row is None else str(row[0])


def open_memory() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn
