"""The accounting around one run of a migration tool (Alembic, Django): what it destroyed.

The tool commits as it goes and the guard sees none of its statements. Every table's rows
are counted right before the tool runs (a read-only connection) and again right after; a
table is followed by its name, or by its b-tree through a rename. What vanished from a
table whose definition the run changed is "removed" (a DELETE or a copy that left rows
out: the guard cannot tell); rows that vanished from a table it did not change (a cascade
through a rebuilt parent) are lost unless they could not live in it (`vanished`). The
values of a changed table's columns are counted after the run, and what a column held is
read from the backup (`ledger.Then`) only for a column dropped or one with NULLs now. The
loss is attributed to the whole run; the pending migrations' files may declare it. The
run record goes beside the database (`app.db.preflight-loss.json`), not into it: the
database is the app's, and its tool's autogenerate would see a table of the guard's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from preflight.core.targets import Target
from preflight.fast.facts import LOSS, now, uri
from preflight.live import census, loss, vanished
from preflight.live.census import Count
from preflight.live.ledger import Policy, Then
from preflight.live.loss import Entry
from preflight.schema import sqltext


class ToolRun:
    """The counts before one run of a tool, and the judgement after it."""

    def __init__(
        self,
        db: Path,
        policy: Policy,
        pending: tuple[str, ...],
        declared: dict[str, tuple[Target, ...]],
    ) -> None:
        self.db, self.policy, self.pending, self.declared = db, policy, pending, declared
        self.before: dict[str, Count] = {}
        self.columns: dict[str, dict[str, bool]] = {}
        self.shape: dict[str, tuple[str, int]] = {}  # folded name -> (sql, rootpage)
        self.names: dict[str, str] = {}
        self.run = now()

    @classmethod
    def begin(
        cls,
        db: Path,
        policy: Policy,
        pending: tuple[str, ...],
        declared: dict[str, tuple[Target, ...]],
    ) -> ToolRun:
        """Count every table's rows right before the tool runs (nothing for a fresh database)."""
        run = cls(db, policy, pending, declared)
        if not pending or not db.exists() or db.stat().st_size == 0:
            return run
        conn = sqlite3.connect(uri(db, mode="ro"), uri=True, isolation_level=None)
        try:
            run.names = census.tables(conn)
            run.shape = _shapes(conn)
            run.columns = {t: census.countable(conn, name) for t, name in run.names.items()}
            run.before = {t: census.count(conn, name) for t, name in run.names.items()}
        finally:
            conn.close()
        return run

    def close(self, source: str, progress: dict[str, Any]) -> None:
        """After the tool's run: count, judge, record, report; LossRefused (the caller
        restores the backup)."""
        if not self.before:
            return
        conn = sqlite3.connect(self.db, isolation_level=None)
        then = Then(self.policy)
        try:
            conn.execute("BEGIN")  # the cleanup test's inserts are rolled back
            try:
                entries = self._entries(conn, then)
            finally:
                conn.execute("ROLLBACK")
            entries = loss.accept(entries, self.declared, self.policy.given, {})
            progress["loss"] = entries
            loss.refuse(entries, self.policy.strict, "tool")  # undone: nothing to record
            if self.policy.label == "migrate":
                recorded = loss.state(conn, source)
                loss.save(Path(f"{self.db}{LOSS}"), entries, self.run, recorded, self.policy.backup)
        finally:
            then.close()
            conn.close()
        loss.report(entries, self.policy.label, self.policy.backup)

    def _entries(self, conn: sqlite3.Connection, then: Then) -> list[Entry]:
        current, shape = census.tables(conn), _shapes(conn)
        by_root = {root: n for n, (_, root) in shape.items()}
        entries: list[Entry] = []
        for t, before in self.before.items():
            shown, blame = self.names[t], self.pending
            name = t if t in current else by_root.get(self.shape[t][1], "")
            if name not in current or (name != t and name in self.before):
                if before.rows:
                    entries.append(Entry(shown, "dropped", before.rows, before.rows, blame))
                continue
            changed = name == t and shape[name] != self.shape[t]  # a rename keeps its b-tree
            old = self.columns[t]
            now_columns = census.mapped(conn, current[name], old, {})
            after = census.count(conn, current[name], now_columns if changed else None)
            gone = before.rows - after.rows
            if gone > 0 and changed:
                entries.append(Entry(shown, "removed", gone, before.rows, blame))
            elif gone > 0:
                v = vanished.judge(
                    conn,
                    self.policy.backup_file(),
                    shown,
                    current[name],
                    {},
                    before.rows,
                    gone,
                    gone,
                    True,
                )
                if v.cleanup:
                    entries.append(
                        Entry(shown, "cleanup", v.cleanup, before.rows, blame, why=v.why)
                    )
                if v.lost:
                    entries.append(Entry(shown, "lost", v.lost, before.rows, blame, why=v.why))
            if changed:

                def held(
                    columns: dict[str, bool], table: str = shown, rows: int = before.rows
                ) -> dict[str, int] | None:
                    return then.values(table, rows, columns)

                for v2 in census.values_lost(old, {}, now_columns, after, gone, held):
                    kind = "column" if v2.dropped else "values"
                    entries.append(Entry(shown, kind, v2.count, v2.had, blame, v2.column))
        return entries


def _shapes(conn: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """Every table's definition and b-tree: a table whose pair is unchanged was not altered."""
    return {
        sqltext.fold(n): (str(sql), int(root))
        for n, sql, root in conn.execute(
            "SELECT name, sql, rootpage FROM main.sqlite_master WHERE type = 'table'"
        )
    }
