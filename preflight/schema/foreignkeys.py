"""Foreign-key violations, and which of them a run introduced (docs/internals.md, "Foreign
keys: what a run introduced"): an orphan of the baseline, followed through renames and
rebuilds, is reported, not blamed on the run."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass, field, replace

from preflight.core import TYPE_CHECKING
from preflight.schema import sqltext
from preflight.schema.sqltext import quote

if TYPE_CHECKING:
    from typing import Any

    from preflight.schema.lineage import Lineage, RunTable
    from preflight.schema.violation import Violation

log = logging.getLogger("preflight")

if TYPE_CHECKING:
    Key = tuple[Any, ...]  # (table, parent, columns, values) in lower case


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
    checked = _check(conn)
    if not checked:
        return []
    from preflight.schema.violation import Violation  # once there is one

    found: list[Violation] = []
    keys: dict[str, dict[int, list[tuple[str, str, str | None]]]] = {}
    rowless: dict[tuple[str, int], list[int]] = {}
    for table, rowid, parent, fkid in checked:
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
    from preflight.schema.lineage import Lineage

    lineage = Lineage(tables)
    conn.set_trace_callback(lineage.statement)
    return Baseline(tuple(found), lineage)


if TYPE_CHECKING:
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
    table: RunTable,
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
