"""The rows that went, read from the backup: one that could not live in the new table is a
cleanup, one that could is lost (docs/internals.md, "Cleanup, by the data")."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from preflight.fast.facts import uri
from preflight.live import census
from preflight.live.loss import Entry
from preflight.schema import ddl, reader, sqltext
from preflight.schema.sqltext import quote

Row = tuple[object, ...]


def _rank(value: object) -> tuple[int, object]:
    """SQLite's order: NULL, numbers, text, blobs (text compared by code point = UTF-8 bytes)."""
    if value is None:
        return (0, 0)
    return (1 if isinstance(value, (int, float)) else 2 if isinstance(value, str) else 3, value)


def _key(row: Row, n: int) -> tuple[tuple[int, object], ...]:
    return tuple(_rank(v) for v in row[:n])


def _ordered(
    conn: sqlite3.Connection, table: str, key: list[str], rest: list[str]
) -> Iterator[Row]:
    key = [k if k == "rowid" else quote(k) for k in key]
    cols = ", ".join(key + [quote(c) for c in rest])
    order = ", ".join(f"{c} COLLATE BINARY" if c != "rowid" else c for c in key)
    yield from conn.execute(f"SELECT {cols} FROM main.{quote(table)} ORDER BY {order}")


def gone_rows(
    old: sqlite3.Connection,
    conn: sqlite3.Connection,
    then: str,
    now: str,
    key: list[tuple[str, str]],
    carried: list[tuple[str, str]],
) -> Iterator[Row]:
    """Rows of `then` in `old` whose key `now` no longer holds (a multiset difference of two
    ordered scans, one row in memory at a time)."""
    n = len(key)
    olds = _ordered(old, then, [k for k, _ in key], [c for c, _ in carried])
    news = _ordered(conn, now, [k for _, k in key], [])
    current = next(news, None)
    for row in olds:
        k = _key(row, n)
        while current is not None and _key(current, n) < k:
            current = next(news, None)
        if current is not None and _key(current, n) == k:
            current = next(news, None)
            continue
        yield row[n:]


class _Tester:
    """What makes a row unfit for the new table, checked the way SQLite would."""

    def __init__(self, conn: sqlite3.Connection, now: str, mapped: dict[str, str]) -> None:
        self.conn, self.now, self.mapped = conn, now, mapped  # old column -> new column
        self.back = {sqltext.fold(new): old for old, new in mapped.items()}
        cols = census.stored(conn, now)
        self.notnull = [c for c, nn, pk in cols if nn and not pk and sqltext.fold(c) in self.back]
        keys: dict[int, list[tuple[str, str, str | None]]] = {}
        for r in conn.execute(f"PRAGMA main.foreign_key_list({quote(now)})").fetchall():
            keys.setdefault(r[0], []).append((str(r[2]), str(r[3]), r[4]))
        self.keys = list(keys.values())
        self.parents: dict[str, str | None] = {}
        checks = ddl.read(_sql(conn, now)).checks
        names = {sqltext.fold(c) for c, _, _ in cols}
        used = {sqltext.name(t) for c in checks for t in sqltext.tokens(c) if sqltext.is_word(t)}
        # A CHECK that reads a column the old row does not have could fail on the default
        # the insert gives it: then a failed insert proves nothing about the row.
        self.checks = bool(checks) and not (used & (names - set(self.back)))

    def unfit(self, row: dict[str, object]) -> str | None:
        """Why `row` (old column -> value) could not live in the new table by its keys or its
        NULLs (read-only: safe beside an open scan of the table), or None."""
        for fk in self.keys:
            parent, frm = fk[0][0], [sqltext.fold(f) for _, f, _ in fk]
            if any(f not in self.back for f in frm):
                continue
            values = [row[self.back[f]] for f in frm]
            if None not in values and not self._parent_has(parent, [to for _, _, to in fk], values):
                return f"broke the foreign key to {parent} (parent row gone)"
        for c in self.notnull:
            if row[self.back[sqltext.fold(c)]] is None:
                return f"NULL in the NOT NULL column {c}"
        return None

    def fails_check(self, row: dict[str, object]) -> bool:
        """Whether the new table's CHECK constraints reject `row` (an insert, rolled back:
        only once no scan of the table is open)."""
        if not self.checks:
            return False
        cols = list(self.mapped)
        self.conn.execute("SAVEPOINT preflight_loss_test")
        try:
            self.conn.execute(
                f"INSERT INTO main.{quote(self.now)} ({', '.join(quote(self.mapped[c]) for c in cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})",
                [row[c] for c in cols],
            )
        except sqlite3.IntegrityError as exc:
            return "CHECK constraint failed" in str(exc)
        finally:
            self.conn.execute("ROLLBACK TO preflight_loss_test")
            self.conn.execute("RELEASE preflight_loss_test")
        return False

    def _parent_has(self, parent: str, to: list[str | None], values: list[object]) -> bool:
        if parent not in self.parents:  # the query finding a parent row (None: no such table)
            table = reader.stored_name(self.conn, parent)
            if table is not None and any(t is None for t in to):
                to = [*reader.primary_key(self.conn, table)] or ["rowid"]
            where = " AND ".join(f"{quote(str(t)) if t != 'rowid' else t} = ?" for t in to)
            sql = f"SELECT 1 FROM main.{quote(table)} WHERE {where} LIMIT 1" if table else None
            self.parents[parent] = sql
        sql = self.parents[parent]
        return sql is not None and self.conn.execute(sql, values).fetchone() is not None


def judge(
    conn: sqlite3.Connection,
    backup: Path | None,
    then: str,
    now: str,
    rows_before: int,
    gone: int,
    blame: tuple[str, ...],
    unexplained: int | None = None,
    renamed: dict[str, str] | None = None,
    same_storage: bool = True,
) -> list[Entry]:
    """Of `unexplained` rows gone from `then` (now `now`, `gone` in all): how many could not
    live in `now` (a cleanup), the rest lost. `conn` is inside a transaction (the test inserts
    are rolled back)."""
    unexplained = gone if unexplained is None else unexplained
    renamed = renamed or {}

    def verdict(cleanup: int, why: str) -> list[Entry]:
        found = (("cleanup", cleanup), ("lost", unexplained - cleanup))
        return [Entry(then, kind, n, rows_before, blame, why=why) for kind, n in found if n]

    if backup is None:
        return verdict(0, "no backup to read them from (PREFLIGHT_BACKUP=never)")
    old = sqlite3.connect(uri(backup, mode="ro", immutable="1"), uri=True)
    try:
        held = reader.stored_name(old, then)
        if (
            held is None
            or old.execute(f"SELECT count(*) FROM {quote(held)}").fetchone()[0] != rows_before
        ):
            return verdict(0, f"the backup {backup} does not hold {then} as the run found it")
        old_cols = census.stored(old, held)
        new_names = {sqltext.fold(c): c for c, _, _ in census.stored(conn, now)}
        targets = {c: sqltext.fold(renamed.get(sqltext.fold(c), c)) for c, _, _ in old_cols}
        mapped = {c: new_names[t] for c, t in targets.items() if t in new_names}
        pk = [c for c, _, p in sorted(old_cols, key=lambda c: c[2]) if p and c in mapped]
        if same_storage and not ddl.read(_sql(old, held)).without_rowid:
            key = [("rowid", "rowid")]
        elif pk and len(pk) == sum(1 for _, _, p in old_cols if p):
            key = [(c, mapped[c]) for c in pk]
        else:
            key = list(mapped.items())
        tester = _Tester(conn, now, mapped)
        found = unfit = 0
        why = ""
        checked: list[dict[str, object]] = []  # left for the CHECK test, after the scan
        # Every row that went is tested as it is found; more than `gone` means they cannot
        # be told apart from rows kept (the copy changed their keys, the run added rows).
        for values in gone_rows(old, conn, held, now, key, list(mapped.items())) if key else ():
            found += 1
            if found > gone:
                break
            row = dict(zip(mapped, values))
            reason = tester.unfit(row)
            if reason is not None:
                unfit += 1
                why = why or reason
            elif tester.checks:
                checked.append(row)
        if found != gone:
            return verdict(0, f"the rows that went cannot be told apart from those kept in {now}")
        for row in checked:
            if tester.fails_check(row):
                unfit += 1
                why = why or "failed a CHECK constraint of the new table"
        return verdict(min(unfit, unexplained), why)
    except sqlite3.Error as exc:
        return verdict(0, f"the rows that went could not be read ({exc})")
    finally:
        old.close()


def _sql(conn: sqlite3.Connection, table: str) -> str:
    row = conn.execute(
        "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return str(row[0]) if row and row[0] else ""
