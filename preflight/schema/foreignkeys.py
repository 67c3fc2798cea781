"""Foreign-key violations, and which of them a run introduced.

SQLite enforces foreign keys only on connections that ask, so real databases carry
orphan rows for years. A run is judged against the violations present before it (the
baseline, read inside its own write transaction): it fails only for violations it
introduced and left at COMMIT; pre-existing ones are reported, not blamed on it.

A violation is identified by what it means, not where it is stored: the child table,
the parent table, the referencing columns and the values they hold. So a table rebuilt
by a migration (new rowids, foreign keys declared in another order) keeps its old
orphans as old, and two rows holding the same dangling value count twice. A WITHOUT
ROWID table has no rowid to read the values by: its violations are compared by count
per foreign key.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("preflight")

Key = tuple[Any, ...]  # (table, parent, columns, values) in lower case; values None when rowid-less


@dataclass(frozen=True)
class Violation:
    """One row whose reference finds no parent row."""

    table: str
    rowid: int | None  # None in a WITHOUT ROWID table
    parent: str
    columns: tuple[str, ...]
    values: (
        tuple[object, ...] | None
    )  # the referencing values (None when they cannot be read by rowid)

    def message(self) -> str:
        """e.g. 'comments rowid 7 (post_id=42) -> posts'."""
        where = f"rowid {self.rowid}" if self.rowid is not None else "a WITHOUT ROWID row"
        if self.values is not None:
            where += " (" + ", ".join(f"{c}={v!r}" for c, v in zip(self.columns, self.values)) + ")"
        return f"{self.table} {where} -> {self.parent}"

    def key(self) -> Key:
        return (self.table.lower(), self.parent.lower(), self.columns, self.values)

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "rowid": self.rowid,
            "parent": self.parent,
            "columns": list(self.columns),
            "values": list(self.values) if self.values is not None else None,
        }


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """PRAGMA foreign_key_check; table by table when one table's keys cannot be checked at all
    ('foreign key mismatch': the parent columns are not unique), skipping that table."""
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
            found += conn.execute(f"PRAGMA main.foreign_key_check({_q(table)})").fetchall()
        except sqlite3.OperationalError as exc:
            if "mismatch" not in str(exc):
                raise
            log.warning("foreign keys: cannot check %s: %s", table, exc)
    return found


def violations(conn: sqlite3.Connection) -> list[Violation]:
    """Every violation in `conn`'s main database (one full PRAGMA foreign_key_check)."""
    found = []
    columns: dict[tuple[str, int], tuple[str, ...]] = {}
    for table, rowid, parent, fkid in _check(conn):
        if (table, fkid) not in columns:
            cols: dict[int, list[str]] = {}
            for fid, _, _, frm, *_ in conn.execute(f"PRAGMA foreign_key_list({_q(table)})"):
                cols.setdefault(fid, []).append(frm.lower())
            for fid, names in cols.items():
                columns[(table, fid)] = tuple(names)
        cols_of = columns.get((table, fkid), ())
        values = None
        if rowid is not None and cols_of:
            row = conn.execute(
                f"SELECT {', '.join(_q(c) for c in cols_of)} FROM {_q(table)} WHERE rowid = ?",
                (rowid,),
            ).fetchone()
            values = tuple(row) if row is not None else None
        found.append(Violation(table, rowid, parent, cols_of, values))
    return found


def baseline(found: list[Violation]) -> Counter[Key]:
    """The multiset of violation keys, to compare a later check with."""
    return Counter(v.key() for v in found)


def introduced(before: Counter[Key], after: list[Violation]) -> list[Violation]:
    """The violations in `after` beyond those counted in `before`.

    First by the whole key; what is left, by the dangling values alone: a migration that
    renames a child or parent table or column (ALTER TABLE ... RENAME, the 12-step
    rebuild) moves an old orphan under new names without introducing anything, while a
    migration that orphans rows (deleting parents, copying in bad references) leaves
    values that did not dangle before.
    """
    left = Counter(before)
    unmatched = []
    for v in after:
        if left[v.key()] > 0:
            left[v.key()] -= 1
        else:
            unmatched.append(v)
    loose: Counter[object] = Counter()
    for key, count in left.items():
        if count > 0 and key[3] is not None:
            loose[key[3]] += count
    new = []
    for v in unmatched:
        if v.values is not None and loose[v.values] > 0:
            loose[v.values] -= 1
        else:
            new.append(v)
    return new


def summary(found: list[Violation], limit: int = 3) -> str:
    """'N foreign key violation(s): a, b, c (+k more)'."""
    shown = "; ".join(v.message() for v in found[:limit])
    more = f" (+{len(found) - limit} more)" if len(found) > limit else ""
    return f"{len(found)} foreign key violation(s): {shown}{more}"
