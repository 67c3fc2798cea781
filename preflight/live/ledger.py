"""One run's accounting: what was there when it began, what is there before it commits.

The guard's own files (`Ledger`): inside the run's one transaction. When it begins, the
rows (and the non-NULL values of the columns that can lose them) of every table the
pending statements can change (`census`); while it runs, which table each statement
makes of which (the foreign-key check's `Lineage`: renames, copies, a 12-step rebuild's
`notes_new` renamed to `notes`) and how many rows each DELETE removed (SQLite's change
counter between two statements, read from the trace callback both share); before COMMIT,
the same counts of what each table became. Losses are attributed to the migrations whose
statements can change that table. A fresh database, a run that names no existing table
and a no-op start (which never gets here) count nothing.

A tool (`ToolRun`): the tool commits as it goes, and the guard sees none of its
statements. Every table's rows are counted just before it runs and again after; a table
is followed by name, or by its b-tree through a rename. What vanished from a table whose
definition the run changed is "removed" (a DELETE or a rebuild: cannot tell); rows that
vanished from one it did not change (a cascade through a rebuilt parent) are lost, unless
they could not live in it. A table's values are counted (from the backup, then live)
only for the tables whose definition changed.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preflight.core.targets import Target
from preflight.core.transaction import immediate
from preflight.fast.facts import now, uri
from preflight.live import census, history, loss, vanished
from preflight.live.census import Count
from preflight.live.loss import Entry
from preflight.schema import foreignkeys, sqltext, statements
from preflight.storage.config import Settings

_FIRST = re.compile(r"\s*([A-Za-z]+)\b")


@dataclass(frozen=True)
class Planned:
    """A pending migration as the ledger sees it: its statements (None: Python code, which
    may change any table) and what its file declares it loses."""

    name: str
    statements: tuple[str, ...] | None
    declared: tuple[Target, ...] = ()


@dataclass(frozen=True)
class Policy:
    """How a run judges its losses: --strict, PREFLIGHT_ACCEPT_LOSS, the log label, the
    backup that holds the database as the run found it (a path, or a callable making one:
    `check` copies the live database only if it must read rows that went)."""

    strict: bool
    given: tuple[Target, ...]
    label: str
    old_rows: Path | Callable[[], Path | None] | None
    backup: str | None  # shown in the report: where what went still is

    @classmethod
    def of(cls, settings: Settings, label: str, progress: dict[str, Any]) -> Policy:
        taken = progress.get("old_rows")
        shown = str(taken) if isinstance(taken, Path) and label == "migrate" else None
        return cls(settings.strict, tuple(settings.accept_loss), label, taken, shown)

    def backup_file(self) -> Path | None:
        return self.old_rows() if callable(self.old_rows) else self.old_rows


def _stored(conn: sqlite3.Connection) -> dict[str, str]:
    return census.tables(conn)


class Ledger:
    """The accounting of one run of the guard's files, on its migrating connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        planned: tuple[Planned, ...],
        policy: Policy,
        lineage: foreignkeys.Lineage | None,
    ) -> None:
        self.conn, self.planned, self.policy, self.lineage = conn, planned, policy, lineage
        self.before: dict[str, Count] = {}
        self.names: dict[str, str] = {}  # folded -> as stored, when the run began
        self.blame: dict[str, list[str]] = {}
        self.deleted: dict[str, int] = {}
        self.open: tuple[frozenset[str], int] | None = None  # a DELETE running: origins, mark
        self.active = False
        self.run = now()

    @classmethod
    def begin(
        cls,
        conn: sqlite3.Connection,
        planned: tuple[Planned, ...],
        policy: Policy,
        lineage: foreignkeys.Lineage | None,
    ) -> Ledger:
        """Count what the pending migrations can change (inside the caller's transaction,
        after `foreignkeys.watch`, whose lineage this follows too)."""
        ledger = cls(conn, planned, policy, lineage)
        tables = _stored(conn)
        if not tables or not planned:
            return ledger  # a fresh build: nothing of anyone's to lose
        triggers = census.triggers(conn)
        per: dict[str, set[str]] = {}
        for m in planned:
            if m.statements is None:
                per[m.name] = set(tables)
                continue
            found, made = census.named(m.statements)
            triggers += made
            per[m.name] = found
        for name, found in per.items():
            for t in census.closure(found, triggers) & set(tables):
                ledger.blame.setdefault(t, []).append(name)
        for t in ledger.blame:
            ledger.names[t] = tables[t]
            ledger.before[t] = census.count(conn, tables[t], census.countable(conn, tables[t]))
        if ledger.blame:
            ledger.active = True
            conn.set_trace_callback(ledger._trace)
        return ledger

    def migration(self, name: str) -> None:
        """A migration starts: what its statements delete is counted from here."""
        self._flush()

    def _flush(self) -> None:
        if self.open is not None:
            origins, mark = self.open
            self.open = None
            for t in origins:
                self.deleted[t] = self.deleted.get(t, 0) + self.conn.total_changes - mark

    def _trace(self, sql: str | None) -> None:
        try:
            self._flush()
            if self.active and sql:
                first = _FIRST.match(sql)
                word = first[1].upper() if first else ""
                if word in ("DELETE", "WITH"):
                    target = _delete_target(sql)
                    if target:
                        self.open = (self._origins(target), self.conn.total_changes)
        except Exception:  # a trace callback must not raise: SQLite would drop it
            self.open = None
        finally:
            if self.lineage is not None:
                self.lineage.statement(sql)

    def _origins(self, name: str) -> frozenset[str]:
        table = self.lineage.table(name) if self.lineage is not None else None
        if table is not None:
            return table.origins()
        return frozenset({name}) if name in self.before else frozenset()

    def close(self, progress: dict[str, Any]) -> None:
        """Before COMMIT: count what each table became, judge, report and record; raises
        LossRefused (the caller rolls back)."""
        if not self.active:
            return
        self._flush()
        self.active = False
        conn = self.conn
        current = _stored(conn)
        entries: list[Entry] = []
        seen: dict[str, set[str]] = {}
        for t, before in self.before.items():
            successor = self._successor(t, current)
            seen[t] = {t} | ({successor[0]} if successor else set())
            entries += self._judge(t, before, successor, current)
        declared = {m.name: m.declared for m in self.planned}
        entries = loss.accept(entries, declared, self.policy.given, seen)
        progress["loss"] = entries
        if entries:
            loss.record(conn, entries, self.run, loss.state(conn, "files"), self.policy.backup)
        loss.refuse(entries, self.policy.strict, self.policy.label)
        loss.report(entries, self.policy.label, self.policy.backup)

    def _successor(
        self, t: str, current: dict[str, str]
    ) -> tuple[str, bool, bool, dict[str, str]] | None:
        """What `t` became: (folded name, holds its rows, same b-tree, renamed columns old ->
        new); None: dropped."""
        lineage = self.lineage
        if lineage is None or lineage.lost:
            return (t, True, False, {}) if t in current else None
        for name, table in lineage.tables.items():
            if table.storage == t and name in current:
                return name, True, True, {base: new for new, base in table.columns}
        if t in current and t in lineage.tables:
            return t, t in lineage.tables[t].fed, False, {}
        fed = [n for n, tb in lineage.tables.items() if t in tb.fed and n in current]
        return (fed[0], True, False, {}) if len(fed) == 1 else None

    def _judge(
        self,
        t: str,
        before: Count,
        successor: tuple[str, bool, bool, dict[str, str]] | None,
        current: dict[str, str],
    ) -> list[Entry]:
        blame = tuple(self.blame[t])
        shown = self.names[t]
        if successor is None:
            return [Entry(shown, "dropped", before.rows, before.rows, blame)] * bool(before.rows)
        now_name, kept, same, renamed = successor
        if not kept:
            return [Entry(shown, "replaced", before.rows, before.rows, blame)] * bool(before.rows)
        stored = current[now_name]
        cols = census.columns(self.conn, stored)
        mapped = {c: renamed.get(c, c) for c in before.values if renamed.get(c, c) in cols}
        notnull = census.countable(self.conn, stored)
        after = census.count(self.conn, stored, {c: notnull.get(c, False) for c in mapped.values()})
        found: list[Entry] = []
        gone = before.rows - after.rows
        if gone > 0:
            deleted = min(gone, self.deleted.get(t, 0))
            if deleted:
                found.append(Entry(shown, "deleted", deleted, before.rows, blame))
            rest = gone - deleted
            if rest:
                found += self._vanished(t, shown, stored, before, gone, rest, same, renamed, blame)
        for c, had in before.values.items():
            if c not in mapped:
                if had:
                    found.append(Entry(shown, "column", had, had, blame, c))
                continue
            lost = had - after.values[mapped[c]] - max(gone, 0)
            if lost > 0:
                found.append(Entry(shown, "values", lost, had, blame, c))
        return found

    def _vanished(
        self,
        t: str,
        shown: str,
        stored: str,
        before: Count,
        gone: int,
        rest: int,
        same: bool,
        renamed: dict[str, str],
        blame: tuple[str, ...],
    ) -> list[Entry]:
        """Rows no statement asked to remove: lost, or a cleanup (read from the backup only
        when nothing already declares or accepts them)."""
        lost = Entry(shown, "lost", rest, before.rows, blame)
        declared = {m.name: m.declared for m in self.planned}
        if loss.accept([lost], declared, self.policy.given, {t: {t, sqltext.fold(stored)}})[
            0
        ].accepted:
            return [lost]
        self.conn.set_trace_callback(None)  # the test's inserts are the guard's, not the run's
        try:
            v = vanished.judge(
                self.conn,
                self.policy.backup_file(),
                shown,
                stored,
                renamed,
                before.rows,
                gone,
                rest,
                same,
            )
        finally:
            self.conn.set_trace_callback(self._trace)
        found = []
        if v.cleanup:
            found.append(Entry(shown, "cleanup", v.cleanup, before.rows, blame, why=v.why))
        if v.lost:
            found.append(Entry(shown, "lost", v.lost, before.rows, blame, why=v.why))
        return found


def _delete_target(sql: str) -> str:
    """The table a DELETE (possibly after WITH) deletes from, folded; '' if none."""
    toks = (
        statements.tokens(sql)
        if sql.lstrip()[:4].upper() == "WITH"
        else statements.tokens(sql[:400])
    )
    depth = 0
    for i, tok in enumerate(toks):
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if depth == 0 and sqltext.fold(tok) == "delete" and i + 2 < len(toks):
            at = i + 2 if sqltext.fold(toks[i + 1]) == "from" else i + 1
            if at + 2 < len(toks) and toks[at + 1] == ".":
                at += 2
            return sqltext.name(toks[at])
    return ""


class ToolRun:
    """The accounting around one run of a migration tool (its pending migrations)."""

    def __init__(
        self,
        db: Path,
        policy: Policy,
        pending: tuple[str, ...],
        declared: dict[str, tuple[Target, ...]],
    ) -> None:
        self.db, self.policy, self.pending, self.declared = db, policy, pending, declared
        self.before: dict[str, Count] = {}
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
        """Count every table's rows right before the tool runs (a read-only connection)."""
        run = cls(db, policy, pending, declared)
        if not pending or not db.exists() or db.stat().st_size == 0:
            return run
        conn = sqlite3.connect(uri(db, mode="ro"), uri=True, isolation_level=None)
        try:
            run.names = _stored(conn)
            run.shape = _shapes(conn)
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
        try:
            conn.execute("BEGIN")  # the cleanup test's inserts are rolled back
            try:
                entries = self._entries(conn)
            finally:
                conn.execute("ROLLBACK")
            entries = loss.accept(entries, self.declared, self.policy.given, {})
            progress["loss"] = entries
            if entries:
                with immediate(conn):
                    history.ensure_log(conn)
                    loss.record(
                        conn, entries, self.run, loss.state(conn, source), self.policy.backup
                    )
        finally:
            conn.close()
        loss.refuse(entries, self.policy.strict, "tool")
        loss.report(entries, self.policy.label, self.policy.backup)

    def _entries(self, conn: sqlite3.Connection) -> list[Entry]:
        current, shape = _stored(conn), _shapes(conn)
        by_root = {root: n for n, (_, root) in shape.items()}
        entries: list[Entry] = []
        for t, before in self.before.items():
            shown = self.names[t]
            name = t if t in current else by_root.get(self.shape[t][1], "")
            if name not in current or (name != t and name in self.before):
                if before.rows:
                    entries.append(Entry(shown, "dropped", before.rows, before.rows, self.pending))
                continue
            changed = shape[name] != self.shape[t] and name == t
            after = census.count(conn, current[name])
            gone = before.rows - after.rows
            if gone > 0 and changed:
                entries.append(Entry(shown, "removed", gone, before.rows, self.pending))
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
                        Entry(shown, "cleanup", v.cleanup, before.rows, self.pending, why=v.why)
                    )
                if v.lost:
                    entries.append(
                        Entry(shown, "lost", v.lost, before.rows, self.pending, why=v.why)
                    )
            if changed:
                entries += self._values(conn, t, shown, current[name], max(gone, 0))
        return entries

    def _values(
        self, conn: sqlite3.Connection, t: str, shown: str, now_name: str, gone: int
    ) -> list[Entry]:
        """A changed table's values: counted in the backup (the table as the run found it)
        and now."""
        backup = self.policy.backup_file()
        if backup is None:
            return []
        old = sqlite3.connect(uri(backup, mode="ro", immutable="1"), uri=True)
        try:
            cols = census.countable(old, self.names[t])
            had = census.count(old, self.names[t], cols)
        except sqlite3.Error:
            return []
        finally:
            old.close()
        if had.rows != self.before[t].rows:
            return []
        now_cols = census.columns(conn, now_name)
        notnull = census.countable(conn, now_name)
        after = census.count(
            conn, now_name, {c: notnull.get(c, False) for c in cols if c in now_cols}
        )
        found = []
        for c in cols:
            if c not in now_cols:
                if had.values[c]:
                    found.append(
                        Entry(shown, "column", had.values[c], had.values[c], self.pending, c)
                    )
            elif (lost := had.values[c] - after.values[c] - gone) > 0:
                found.append(Entry(shown, "values", lost, had.values[c], self.pending, c))
        return found


def _shapes(conn: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    return {
        sqltext.fold(n): (str(sql), int(root))
        for n, sql, root in conn.execute(
            "SELECT name, sql, rootpage FROM main.sqlite_master WHERE type = 'table'"
        )
    }
