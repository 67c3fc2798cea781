"""What an upgrade destroyed, the rule that judges it, the log lines and the run record
that `status` reads back (README, "What an upgrade destroys")."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from preflight.core import targets
from preflight.core.errors import LossRefused, UsageError
from preflight.core.files import write_atomic
from preflight.core.targets import Target
from preflight.fast.facts import RECORDED, sha256_bytes
from preflight.live import census, history

log = logging.getLogger("preflight")

EVENT = "loss"  # the run record's rows in _preflight_log
WHAT = {
    "dropped": "rows dropped with the table",
    "replaced": "rows gone with the table, made again without them",
    "deleted": "rows deleted",
    "removed": "rows removed by the run",
    "lost": "rows lost",
    "cleanup": "rows that could not live in the new table",
    "column": "values dropped with the column",
    "values": "values lost from a column that stays",
}
WHY = {
    "lost": "no statement asked for it (a copy's WHERE or JOIN, OR IGNORE/REPLACE, a trigger "
    "or a cascade)",
    "removed": "the tool's statements are not seen: a DELETE or a copy that left them out",
    "values": "a copy that left the column out or put NULL in it, or an UPDATE",
}
VARIABLE = "PREFLIGHT_ACCEPT_LOSS"


@dataclass(frozen=True)
class Entry:
    """One kind of loss in one table (or column) of one run."""

    table: str  # as the database named it before the run
    kind: str  # a key of WHAT
    count: int  # rows, or values for "column" and "values"
    of: int  # rows (or the column's values) before the run
    migrations: tuple[str, ...]  # the run's migrations that can have caused it
    column: str | None = None
    why: str = ""  # a cleanup: what the rows broke; lost rows: why none were a cleanup
    accepted: str | None = None  # "declared", "downgrade" (a down step's) or VARIABLE

    @property
    def target(self) -> str:
        return targets.show((self.table, self.column))

    def refused(self, strict: bool) -> bool:
        """Lost rows, and with --strict all but a cleanup, unless declared or accepted."""
        return not self.accepted and self.kind != "cleanup" and (self.kind == "lost" or strict)

    def phrase(self) -> str:
        """e.g. '66 of 113 rows lost' or 'body: 113 of 113 values dropped with the column'."""
        text = f"{self.count} of {self.of} {WHAT[self.kind]}"
        if self.column is not None:
            text = f"{self.column}: {text}"
        if self.why and self.kind == "cleanup":
            text += f" ({self.why})"
        if self.accepted == "declared":
            text += " (declared in the migration)"
        elif self.accepted == "downgrade":
            text += " (the older release lacks it: the downgrade drops it)"
        elif self.accepted:
            text += f" (accepted by {VARIABLE})"
        return text


def accept(
    entries: Iterable[Entry],
    declared: dict[str, tuple[Target, ...]],
    given: tuple[Target, ...],
    names: dict[str, set[str]],
    undone: frozenset[str] = frozenset(),
) -> list[Entry]:
    """Mark what a migration declares or the operator accepts; `names`: each table's names;
    `undone`: a downgrade's down steps (what they drop, the older schema lacks)."""
    out = []
    for e in entries:
        known = names.get(e.table, {e.table})
        mine = [t for m in e.migrations for t in declared.get(m, ())]
        if any(targets.covers(tuple(mine), n, e.column) for n in known):
            e = replace(e, accepted="downgrade" if set(e.migrations) <= undone else "declared")
        elif any(targets.covers(given, n, e.column) for n in known):
            e = replace(e, accepted=VARIABLE)
        out.append(e)
    return out


def refuse(
    entries: list[Entry], strict: bool, label: str, undone: frozenset[str] = frozenset()
) -> None:
    """LossRefused (exit 9) naming the first refused entry and both ways to accept it.
    `undone`: migrations whose stored down steps a downgrade ran (they take no declaration)."""
    refused = [e for e in entries if e.refused(strict)]
    if not refused:
        return
    e = refused[0]
    where = ", ".join(e.migrations[:3]) or "the run"
    where += f" (+{len(e.migrations) - 3} more)" * (len(e.migrations) > 3)
    others = ", ".join(r.target for r in refused[1:4])
    more = f" (+{len(refused) - 1} more: {others})" if len(refused) > 1 else ""
    why = f": {WHY[e.kind]}" if e.kind in WHY else ""
    why += "" if e.kind == "lost" else "; nothing declares it (--strict)"
    tail = f"; none is a cleanup: {e.why}" if e.kind == "lost" and e.why else ""
    mark = (
        "#" if label == "tool" or e.migrations[-1:] and e.migrations[-1].endswith(".py") else "--"
    )
    file = e.migrations[-1] if e.migrations and label != "tool" else "the migration's file"
    names = tuple(dict.fromkeys(r.target for r in refused))
    accept = f"accept it for one start ({VARIABLE}={','.join(names)}, or --accept-loss)"
    hint = (
        f"if that loss is meant, {accept}; otherwise restore the pre-migrate backup taken "
        f"before the upgrade instead (README, Rollback runbook): the down step of {file} is "
        f"the one the newer image stored"
        if e.migrations[-1:] and e.migrations[-1] in undone
        else f"if that loss is meant, declare it in {file} ('{mark} preflight: loses "
        f"{e.target}') or {accept}; otherwise fix the migration"
    )
    raise LossRefused(f"{where}: {e.table}: {e.phrase()}{why}{tail}{more}", hint, names)


def report(entries: list[Entry], label: str, backup: str | None) -> None:
    """One log line per table with loss: what, how much, by what, where it still is."""
    held = (
        ""
        if label == "rehearse"  # a private copy: the database was not touched
        else f"; the backup {backup} holds what went"
        if backup
        else "; no backup holds it (PREFLIGHT_BACKUP=never)"
    )
    for found in _by_table(entries):
        migrations = list(dict.fromkeys(m for e in found for m in e.migrations))
        log.warning(
            "%s: loss: %s: %s, by %s%s",
            label,
            found[0].table,
            "; ".join(e.phrase() for e in found),
            ", ".join(migrations) or "the run",
            held,
        )


def as_json(e: Entry, backup: str | None = None) -> dict[str, object]:
    return dict(asdict(e), backup=backup)


def state(conn: sqlite3.Connection, source: str) -> str:
    """A short hash of the version the database records: ties a run record to its run."""
    sql, table = RECORDED[source]
    if not history.has_table(conn, table):
        return ""
    return sha256_bytes("\n".join(str(r[0]) for r in conn.execute(sql)).encode())[:16]


def _by_table(entries: list[Entry]) -> list[list[Entry]]:
    found: dict[str, list[Entry]] = {}
    for e in entries:
        found.setdefault(e.table, []).append(e)
    return list(found.values())


def _item(found: list[Entry], run: str, recorded: str, backup: str | None) -> dict[str, object]:
    """One table's part of the run record; `recorded`: the version's hash after the run."""
    return {"run": run, "state": recorded, "backup": backup, "entries": [asdict(e) for e in found]}


def record(
    conn: sqlite3.Connection, entries: list[Entry], run: str, recorded: str, backup: str | None
) -> None:
    """The run record: one `_preflight_log` row per table with loss."""
    for found in _by_table(entries):
        name = found[0].migrations[-1] if found[0].migrations else None
        history.log(conn, EVENT, None, name, json.dumps(_item(found, run, recorded, backup)))


def save(path: Path, entries: list[Entry], run: str, recorded: str, backup: str | None) -> None:
    """A tool's run record, beside the database (whose tools would see a table of the guard's)."""
    if not entries:
        path.unlink(missing_ok=True)
        return
    items = [_item(found, run, recorded, backup) for found in _by_table(entries)]
    write_atomic(path, json.dumps(items, indent=1).encode() + b"\n")


def last_run(conn: sqlite3.Connection, source: str, saved: Path) -> list[dict[str, object]]:
    """The loss of the newest run recorded at the database's version now (`status`)."""
    now = state(conn, source)
    items: list[object] = []
    if source != "files":
        try:
            loaded = json.loads(saved.read_text(encoding="utf-8"))
            items = loaded if isinstance(loaded, list) else []
        except (OSError, ValueError):
            items = []
    elif history.has_table(conn, history.LOG):
        for (detail,) in conn.execute(
            f"SELECT detail FROM {history.LOG} WHERE event = ? ORDER BY id", (EVENT,)
        ):
            try:
                items.append(json.loads(detail))
            except (TypeError, ValueError):
                continue
    runs: dict[str, list[dict[str, object]]] = {}
    for found in items:
        if not isinstance(found, dict) or found.get("state") != now:
            continue
        backup = found.get("backup")
        try:
            entries = [Entry(**e) for e in found.get("entries", ())]
        except TypeError:
            continue  # written by another version of the guard: not this one's to read
        runs.setdefault(str(found.get("run")), []).extend(
            as_json(e, str(backup) if backup else None) for e in entries
        )
    return list(runs.values())[-1] if runs else []


def check_given(conn: sqlite3.Connection | None, given: tuple[Target, ...], db: object) -> None:
    """PREFLIGHT_ACCEPT_LOSS must name tables (and columns) the database has: a typo would
    accept nothing while the operator believes a loss accepted."""
    tables = census.tables(conn) if conn is not None else {}
    for table, column in given:
        shown = targets.show((table, column))
        if conn is None or table not in tables:
            raise UsageError(
                f"{VARIABLE}={shown}: {db} has no table {table}"
                + (f" (its tables: {', '.join(sorted(tables.values())[:10])})" if tables else ""),
                f"name a table the upgrade loses data from, or unset {VARIABLE}",
            )
        if column is not None and column not in census.columns(conn, tables[table]):
            raise UsageError(
                f"{VARIABLE}={shown}: {db}'s table {tables[table]} has no column {column}",
                f"name a column of {tables[table]}, or the table alone",
            )
