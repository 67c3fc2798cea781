"""The accounting around one run of a migration tool, whose statements the guard does not
see: every table counted right before and after it. Rows gone from a table whose definition
changed are "removed"; from one it did not change, lost unless a cleanup (`vanished`)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from preflight.core.targets import Target
from preflight.fast.facts import LOSS, now, uri
from preflight.live import census, loss, vanished
from preflight.live.census import Count
from preflight.live.ledger import Policy, Then, judged
from preflight.live.loss import Entry
from preflight.schema import sqltext


class ToolRun:
    def __init__(
        self,
        db: Path,
        policy: Policy,
        pending: tuple[str, ...],
        declared: dict[str, tuple[Target, ...]],
    ) -> None:
        """Count every table's rows right before the tool runs."""
        self.db, self.policy, self.pending, self.declared = db, policy, pending, declared
        self.before: dict[str, Count] = {}
        self.columns: dict[str, dict[str, bool]] = {}
        self.shape: dict[str, tuple[str, int]] = {}  # folded name -> (sql, rootpage)
        self.names: dict[str, str] = {}
        self.run = now()
        if not pending or not db.exists() or db.stat().st_size == 0:
            return
        with closing(sqlite3.connect(uri(db, mode="ro"), uri=True, isolation_level=None)) as conn:
            self.names = census.tables(conn)
            self.shape = _shapes(conn)
            self.columns = {t: census.countable(conn, name) for t, name in self.names.items()}
            self.before = {t: census.count(conn, name) for t, name in self.names.items()}

    def close(self, source: str, progress: dict[str, Any]) -> None:
        """After the tool's run: count, judge, record, report (LossRefused: the caller restores)."""
        if not self.before:
            return
        live = sqlite3.connect(self.db, isolation_level=None)
        with closing(live) as conn, closing(Then(self.policy)) as then:
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
        loss.report(entries, self.policy.label, self.policy.backup)

    def _entries(self, conn: sqlite3.Connection, then: Then) -> list[Entry]:
        current, shape = census.tables(conn), _shapes(conn)
        by_root = {root: n for n, (_, root) in shape.items()}
        entries: list[Entry] = []
        for t, before in self.before.items():
            name = t if t in current else by_root.get(self.shape[t][1], "")
            if name not in current or (name != t and name in self.before):
                if before.rows:
                    entries.append(
                        Entry(self.names[t], "dropped", before.rows, before.rows, self.pending)
                    )
            else:  # a rename keeps its b-tree
                entries += self._judge(
                    conn, then, t, current[name], name == t and shape[name] != self.shape[t]
                )
        return entries

    def _judge(
        self, conn: sqlite3.Connection, then: Then, t: str, stored: str, changed: bool
    ) -> list[Entry]:
        shown, before, blame = self.names[t], self.before[t], self.pending

        def gone_rows(gone: int) -> list[Entry]:
            if changed:
                return [Entry(shown, "removed", gone, before.rows, blame)]
            backup = self.policy.backup_file()
            return vanished.judge(conn, backup, shown, stored, before.rows, gone, blame)

        old = self.columns[t] if changed else {}  # values are judged of an altered table only
        return judged(conn, then, shown, blame, before, old, stored, {}, True, gone_rows)


def _shapes(conn: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """Every table's definition and b-tree: a table whose pair is the same was not altered."""
    return {
        sqltext.fold(n): (str(sql), int(root))
        for n, sql, root in conn.execute(
            "SELECT name, sql, rootpage FROM main.sqlite_master WHERE type = 'table'"
        )
    }
