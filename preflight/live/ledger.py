"""One run of the guard's files' accounting, inside its transaction: what was there when
it began, what is there before it commits, following its statements through the trace
callback it shares with `foreignkeys.Lineage` (docs/internals.md, "What an upgrade destroys")."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from preflight.core import TYPE_CHECKING
from preflight.core.targets import Target
from preflight.fast.facts import now, uri
from preflight.schema import sqltext, statements
from preflight.storage.config import Settings

if TYPE_CHECKING:
    from typing import Any

    from preflight.live.census import Count
    from preflight.live.loss import Entry
    from preflight.schema.lineage import Lineage


@dataclass(frozen=True)
class Planned:
    """A pending migration: its statements (None: Python code, which may change any table)
    and what its file declares it loses."""

    name: str
    statements: tuple[str, ...] | None
    declared: tuple[Target, ...] = ()
    undo: bool = False  # a downgrade's stored down step


@dataclass(frozen=True)
class Policy:
    """How a run judges its losses: --strict, PREFLIGHT_ACCEPT_LOSS, the log label, the
    backup as the run found it (or a callable making one: `check` copies only if it must)."""

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

    def shown(self) -> str | None:
        """`backup`, or the one a start's run waits for (`backup.Beside`)."""
        if self.backup is None and callable(self.old_rows) and self.label == "migrate":
            taken = self.old_rows()
            return str(taken) if taken else None
        return self.backup


class Then:
    """The database as the run found it, read from the backup in a second, read-only
    connection (ATTACH is not allowed inside a transaction), opened once, when needed."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.conn: sqlite3.Connection | None = None
        self.opened = False

    def values(self, table: str, rows: int, columns: dict[str, bool]) -> dict[str, int] | None:
        """What `columns` of `table` held (None: no backup of it as the run found it)."""
        if not self.opened:
            self.opened = True
            path = self.policy.backup_file()
            if path is not None:
                self.conn = sqlite3.connect(uri(path, mode="ro", immutable="1"), uri=True)
        if self.conn is None:
            return None
        try:
            from preflight.live import census

            counted = census.count(self.conn, table, columns)
        except sqlite3.Error:
            return None
        return counted.values if counted.rows == rows else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Ledger:
    """The accounting of one run of the guard's files, on its migrating connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        planned: tuple[Planned, ...],
        policy: Policy,
        lineage: Lineage | None,
    ) -> None:
        """Count what the pending migrations can change (after `foreignkeys.watch`)."""
        self.conn, self.policy = conn, policy
        self.declared = {m.name: m.declared for m in planned}
        self.undone = frozenset(m.name for m in planned if m.undo)
        self.before: dict[str, Count] = {}
        self.columns: dict[str, dict[str, bool]] = {}  # table -> its countable columns
        self.names: dict[str, str] = {}  # folded -> as stored, when the run began
        self.blame: dict[str, list[str]] = {}
        self.deleted: dict[str, int] = {}
        self.updated: set[str] = set()
        self.open: tuple[frozenset[str], int] | None = None  # a DELETE running: origins, mark
        self.run = now()
        self.active = False
        if not planned or lineage is None:
            return  # a fresh build (no table to follow): nothing to lose, census not imported
        self.lineage = lineage
        from preflight.live import census

        tables = census.tables(conn)
        triggers = census.triggers(conn)
        per: dict[str, set[str]] = {}
        for m in planned:
            found, made = (set(tables), []) if m.statements is None else census.named(m.statements)
            triggers += made
            per[m.name] = found
        for name, found in per.items():
            reached = census.closure(found, triggers)
            # A trigger's statements reach the trace as the statement that fired them: a
            # table only a trigger writes may have been updated.
            self.updated |= (reached - found) & set(tables)
            for t in reached & set(tables):
                self.blame.setdefault(t, []).append(name)
        eager = policy.old_rows is None  # no backup to read what a column held: count it now
        for t in self.blame:
            self.names[t] = tables[t]
            self.columns[t] = census.countable(conn, tables[t])
            self.before[t] = census.count(conn, tables[t], self.columns[t] if eager else None)
        self.active = bool(self.blame)
        if self.active:
            conn.set_trace_callback(self._trace)

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
                word = statements.first_word(sql)
                if word in ("DELETE", "WITH"):
                    target = _target(sql, "delete")
                    if target:
                        self.open = (self._origins(target), self.conn.total_changes)
                if word in ("UPDATE", "WITH"):
                    self.updated |= self._origins(_target(sql, "update"))
        except Exception:  # a trace callback must not raise: SQLite would drop it
            self.open = None
        finally:
            self.lineage.statement(sql)

    def _origins(self, name: str) -> frozenset[str]:
        table = self.lineage.table(name)
        if table is not None:
            return table.origins()
        return frozenset({name}) if name in self.before else frozenset()

    def close(self, progress: dict[str, Any]) -> None:
        """Before COMMIT: count what each table became, judge, report and record (LossRefused)."""
        if not self.active:
            return
        from preflight.live import census, loss

        self._flush()
        self.active = False
        conn = self.conn
        current = census.tables(conn)
        entries: list[Entry] = []
        seen: dict[str, set[str]] = {}
        with closing(Then(self.policy)) as then:
            for t, before in self.before.items():
                successor = self._successor(t, current)
                seen[t] = {t} | ({successor[0]} if successor else set())
                entries += self._judge(t, before, successor, current, then)
        entries = loss.accept(entries, self.declared, self.policy.given, seen, self.undone)
        progress["loss"] = entries
        shown = self.policy.shown() if entries else None
        if entries:
            loss.record(conn, entries, self.run, loss.state(conn, "files"), shown)
        loss.refuse(entries, self.policy.strict, self.policy.label, self.undone)
        loss.report(entries, self.policy.label, shown)

    def _successor(
        self, t: str, current: dict[str, str]
    ) -> tuple[str, bool, bool, dict[str, str]] | None:
        """What `t` became: (folded name, holds its rows, same b-tree, renamed columns old ->
        new); None: dropped."""
        lineage = self.lineage
        if lineage.lost:
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
        then: Then,
    ) -> list[Entry]:
        from preflight.live import loss, vanished
        from preflight.live.loss import Entry

        blame = tuple(self.blame[t])
        shown = self.names[t]
        if successor is None:
            return [Entry(shown, "dropped", before.rows, before.rows, blame)] * bool(before.rows)
        now_name, kept, same, renamed = successor
        if not kept:
            return [Entry(shown, "replaced", before.rows, before.rows, blame)] * bool(before.rows)
        stored = current[now_name]

        def gone_rows(gone: int) -> list[Entry]:
            deleted = min(gone, self.deleted.get(t, 0))
            found = [Entry(shown, "deleted", deleted, before.rows, blame)] * bool(deleted)
            rest = gone - deleted
            lost = Entry(shown, "lost", rest, before.rows, blame)
            names = {t: {t, sqltext.fold(stored)}}
            if not rest or loss.accept([lost], self.declared, self.policy.given, names)[0].accepted:
                return found + [lost] * bool(rest)  # declared or accepted: the backup is not read
            self.conn.set_trace_callback(None)  # the test's inserts are not the run's
            try:
                backup = self.policy.backup_file()
                return found + vanished.judge(
                    self.conn, backup, shown, stored, before.rows, gone, blame, rest, renamed, same
                )
            finally:
                self.conn.set_trace_callback(self._trace)

        scan = not same or t in self.updated  # a rebuild or an UPDATE could empty a column
        return judged(
            self.conn, then, shown, blame, before, self.columns[t], stored, renamed, scan, gone_rows
        )


def judged(
    conn: sqlite3.Connection,
    then: Then,
    shown: str,
    blame: tuple[str, ...],
    before: Count,
    old: dict[str, bool],
    stored: str,
    renamed: dict[str, str],
    scan: bool,
    gone_rows: Callable[[int], list[Entry]],
) -> list[Entry]:
    """What a table still there (now `stored`) lost: rows (`gone_rows` judges them) and values of
    `old`, its columns as it was (`scan`: count them now; a kept column is read if it has NULLs)."""
    from preflight.live import census, loss

    now = census.mapped(conn, stored, old, renamed)
    after = census.count(conn, stored, now if scan else None)
    found = gone_rows(before.rows - after.rows) if before.rows > after.rows else []
    dropped = {c: nn for c, nn in old.items() if renamed.get(c, c) not in now}
    suspects = {
        c: nn
        for c, nn in old.items()
        if after.values.get(renamed.get(c, c), after.rows) < after.rows
    }
    if not dropped and not suspects:
        return found
    wanted = {**dropped, **suspects}
    had = (
        {c: before.values[c] for c in wanted}
        if before.values
        else then.values(shown, before.rows, wanted)
    )
    if had is None:
        return found
    gone = max(before.rows - after.rows, 0)
    found += [loss.Entry(shown, "column", had[c], had[c], blame, c) for c in dropped if had[c]]
    for c in suspects:
        lost = had[c] - after.values[renamed.get(c, c)] - gone
        if lost > 0:
            found.append(loss.Entry(shown, "values", lost, had[c], blame, c))
    return found


def _target(sql: str, verb: str) -> str:
    """The table a DELETE or UPDATE (possibly after WITH) writes, folded; '' if none."""
    head = sql.lstrip()[:4].upper() == "WITH"
    toks = statements.tokens(sql) if head else statements.tokens(sql[:400])
    depth = 0
    for i, tok in enumerate(toks):
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if depth == 0 and sqltext.fold(tok) == verb and i + 2 < len(toks):
            # DELETE FROM t, UPDATE OR REPLACE t
            at = i + 1 + {"from": 1, "or": 2}.get(sqltext.fold(toks[i + 1]), 0)
            if at + 2 < len(toks) and toks[at + 1] == ".":
                at += 2
            return sqltext.name(toks[at]) if at < len(toks) else ""
    return ""
