"""The guard's own migration files as a source: `NNN_name.sql|.py`, applied in ONE transaction."""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from preflight import schema
from preflight.core import TYPE_CHECKING, faults, signals
from preflight.core.errors import (
    TRANSIENT,
    DiskFull,
    DriftError,
    EnvironmentProblem,
    HistoryMoved,
    LockTimeout,
    MigrationFailed,
    PreflightError,
    UsageError,
)
from preflight.core.transaction import immediate
from preflight.fast.facts import Proof, recorded_in
from preflight.live import history
from preflight.live.database import Inspection, connect, recorded
from preflight.live.ledger import Ledger, Planned, Policy
from preflight.schema import foreignkeys
from preflight.schema.statements import RUN
from preflight.sources import downgrade, planner
from preflight.sources.migrations import Migration, discover, run_body, set_fingerprint
from preflight.sources.source import Plan, Run, Stamp
from preflight.storage.config import Settings
from preflight.storage.steps import step

if TYPE_CHECKING:
    from preflight.schema.drift import Difference
    from preflight.sources.source import Json

log = logging.getLogger("preflight")


@dataclass(frozen=True)
class FileSource:
    """The migration files in `folder` (see docs/writing-migrations.md)."""

    migrations: tuple[Migration, ...]
    name: str = "files"
    atomic: bool = True

    @classmethod
    def load(
        cls, settings: Settings, proof: Proof | None = None, quiet: bool = False
    ) -> FileSource:
        """Discover and validate the files (reusing hashes a quick start proved)."""
        with step("migrations", quiet) as info:
            found = discover(
                settings.migrations, settings.functions, proof.hashed if proof else None
            )
            info["what"] = f"{len(found)} file(s) valid"
        if not found and not quiet:
            log.warning(
                "migrations: none in %s; is PREFLIGHT_MIGRATIONS right?", settings.migrations
            )
        return cls(found)

    @property
    def fingerprint(self) -> str:
        return set_fingerprint(self.migrations)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.migrations)

    def recorded(self, db: Path) -> tuple[str, ...] | None:
        return recorded(db, self.name)

    def plan(self, settings: Settings, insp: Inspection, rec: tuple[str, ...] | None) -> Plan:
        down = downgrade.plan(settings, insp, self.migrations)  # None: not above the image
        return down or planner.plan(insp, self.migrations, settings.strict)

    def status_plan(
        self, settings: Settings, insp: Inspection, rec: tuple[str, ...] | None
    ) -> tuple[Plan, str | None]:
        """Pending migrations are not replayed: status needs their names, not their head."""
        migrations = self.migrations
        if insp.fresh:
            return self.plan(settings, insp, rec), None
        down = downgrade.plan(settings, insp, migrations, run_code=False)
        if down is not None:
            return down, downgrade.NOT_CHECKED
        pending = planner.names(
            history.pending(insp.applied, migrations) if insp.applied is not None else ()
        )
        head = migrations[-1].name if migrations else None
        needed = migrations[: len(migrations) - len(pending)]
        code = next((m for m in needed if m.kind == "py"), None)
        if code is not None:
            why = f"not checked: {code.name} is Python code; run `preflight check` to rehearse it"
            log.info("status: drift: %s", why)
            return Plan(self.fingerprint, (), pending, None, head), why
        checked = planner.plan(insp, needed, settings.strict)
        adopt, warnings = checked.adopt, checked.warnings
        return Plan(self.fingerprint, adopt, checked.pending or pending, None, head, warnings), None

    def compared(self, live: schema.Schema) -> schema.Schema:
        return live  # the guard's own tables are never part of a snapshot

    def stamp_target(
        self, settings: Settings, insp: Inspection, version: str, force: bool
    ) -> schema.Schema:
        number = int(version) if version.isdigit() else -1
        upto = [m for m in self.migrations if m.version <= number]
        if number < 0 or (number != 0 and (not upto or upto[-1].version != number)):
            raise UsageError(
                f"no migration numbered {version} in {settings.migrations}",
                "name the number of an existing migration (0 clears the history)",
            )
        if not force:
            _refuse_below_evidence(settings, insp, self.migrations, number)
        from preflight.sources.replay import replay  # stamp only

        return replay(self.migrations, {len(upto)})[len(upto)]

    def record_stamp(self, settings: Settings, insp: Inspection, stamp: Stamp) -> str:
        version, diffs = stamp.version, list(stamp.diffs)
        number = int(version)
        upto = [m for m in self.migrations if m.version <= number]
        with closing(connect(settings.db, settings.lock_timeout)) as conn, immediate(conn):
            if planner.history_key(history.read(conn)) != planner.history_key(insp.applied):
                raise HistoryMoved(
                    f"a guard changed the history of {settings.db} while this "
                    f"stamp checked it; nothing was recorded",
                    "run 'preflight status', then stamp again if still needed",
                )
            history.ensure_tables(conn)
            removed = history.forget_after(conn, number)
            downgrade.forget_after(conn, number)
            known = {(a.version, a.name, a.sha256) for a in insp.applied or ()}
            for m in upto:
                if (m.version, m.name, m.sha256) not in known:  # keep real applied-at rows
                    history.record(conn, m, "stamped", 0.0)
            if diffs or insp.accepted:
                history.accept(conn, number, diffs)  # exactly what differs now
            history.log(
                conn,
                "stamp",
                number,
                upto[-1].name if upto else None,
                f"force, {len(diffs)} difference(s) accepted" if diffs else "schema matched",
            )
        return (
            f"history now at {upto[-1].name if upto else 'nothing'} "
            f"({len(upto)} recorded, {removed} removed)"
        )

    def check_recorded(self, conn: sqlite3.Connection, p: Plan) -> tuple[str, ...] | None:
        found = recorded_in(conn, self.name)
        now = found or ()
        if len(now) != len(self.migrations) and p.writes:
            raise MigrationFailed(
                f"verification: the history records {len(now)} migration(s), not the "
                f"{len(self.migrations)} of the plan",
                "start again",
            )
        return found

    def applied(self, insp: Inspection, rec: tuple[str, ...] | None) -> tuple[Json, ...]:
        return tuple(dict(a.__dict__) for a in insp.applied or ())

    def describe(self, rec: tuple[str, ...] | None) -> str:
        return f"{len(rec or ())} applied"

    def apply(self, settings: Settings, p: Plan, run: Run) -> foreignkeys.Before:
        """`progress["running"]` gets each migration's name as it starts (the failing one also
        as `progress["failing"]`). The history is read again first: a recorded migration never
        runs twice, whatever happened to the lock file."""
        by_name = {m.name: m for m in self.migrations}
        pending = tuple(by_name[n] for n in p.pending)
        undo: tuple[Migration, ...] = p.steps or ()
        db, label, progress, beside = run.db, run.label, run.progress, run.beside
        progress.setdefault("running", [])
        progress.setdefault("committed", False)
        live = label == "migrate"  # fault points only on the live database, never the rehearsal
        after_statement = (lambda: faults.point("statement")) if live else None
        with closing(connect(db, settings.lock_timeout)) as conn, immediate(conn):
            try:
                now = planner.history_key(history.read(conn))
                if now != p.based_on:
                    raise HistoryMoved(
                        f"another guard changed the history of {db} after this one "
                        f"planned ({len(p.based_on or ())} -> {len(now or ())} "
                        f"recorded); nothing was run",
                        "start again",
                    )
                if beside:
                    beside.begin(conn)
                before = foreignkeys.violations(conn)
                if before and live:  # check/status list them themselves
                    log.warning(
                        "foreign keys: %s already present before this run (not made by it; "
                        "--strict refuses them)",
                        foreignkeys.summary(before),
                    )
                baseline = foreignkeys.watch(conn, before)
                ledger = Ledger(
                    conn,
                    planned(undo, undo=True) + planned(pending),  # down steps count too
                    Policy.of(settings, label, progress),
                    baseline.lineage,
                )
                history.ensure_tables(conn)
                for m in (by_name[n] for n in p.adopt):
                    history.record(conn, m, "adopted", 0.0)

                def run_one(m: Migration) -> float:
                    ledger.migration(m.name)
                    start = time.perf_counter()
                    try:
                        run_body(conn, m, label, after_statement=after_statement)
                    except PreflightError:
                        raise
                    except Exception as exc:
                        raise _migration_error(m, db, exc, settings.lock_timeout) from exc
                    return (time.perf_counter() - start) * 1000

                if p.undo:  # a downgrade: the stored down steps, newest first
                    downgrade.run(conn, p, run_one, progress, label, settings.strict)
                for m in pending:
                    progress["running"].append(m.name)
                    with step(label) as info:
                        history.record(conn, m, "applied", run_one(m))
                        downgrade.keep(conn, m)  # its down step, for an older image
                        info["what"] = m.name
                ledger.close(progress)  # what the run destroyed: reported, or refused here
                new = foreignkeys.introduced(baseline, foreignkeys.violations(conn))
                if new:
                    raise MigrationFailed(
                        f"the migrations leave {foreignkeys.summary(new)}",
                        "fix the migration (or the data it copies)",
                    )
                if p.accepted and p.expected_head is not None:
                    _forget_accepted(conn, p.expected_head, p.accepted)
                if beside:
                    beside.end(conn)
                with step(label) as info:
                    if live:
                        faults.point("before-commit")
                    with signals.deferred():  # a SIGTERM must not split COMMIT from knowing it
                        if signals.received():
                            raise signals.swallowed()
                        try:
                            conn.execute("COMMIT")
                        except sqlite3.Error as exc:
                            raise _migration_error(None, db, exc, settings.lock_timeout) from exc
                        progress["committed"] = True
                    info["what"] = (
                        f"committed {len(p.adopt)} adopted and {len(p.pending)} "
                        f"applied in one transaction"
                    ) + (f" ({len(p.undo)} undone)" if p.undo else "")
            except BaseException as exc:
                if progress["running"] and not progress["committed"]:
                    progress["failing"] = progress["running"][-1]
                if _ended(conn) and not isinstance(exc, TRANSIENT):
                    # Ended from inside (a .py migration that removed the authorizer and
                    # committed): what was kept is unknown, so undo from the backup.
                    progress["committed"] = True
                raise
        if live:
            faults.point("after-commit")
        return baseline


def planned(pending: tuple[Migration, ...], undo: bool = False) -> tuple[Planned, ...]:
    return tuple(
        Planned(
            m.name,
            None if m.kind == "py" else tuple(s.sql for s in m.statements if s.action == RUN),
            m.loses,
            undo,
        )
        for m in pending
    )


def _forget_accepted(
    conn: sqlite3.Connection, head: schema.Schema, accepted: tuple[Difference, ...]
) -> None:
    """What a forced stamp accepted and the migrations made go away."""
    from preflight.schema import drift  # only after a forced stamp

    _, kept = planner.accepted_part(drift.diff(head, schema.snapshot(conn)), accepted)
    if history.keep_accepted(conn, kept):
        for d in (d for d in accepted if d not in kept):
            log.info("accepted difference gone after migrating, forgotten: %s", d.message())


def _migration_error(
    m: Migration | None, db: Path, exc: BaseException, timeout: float
) -> PreflightError:
    """A failed statement as exit 9; no space (9) and another process's lock (8) say so."""
    where = f"{m.name}: " if m else "COMMIT: "
    if "database is locked" in str(exc) and (m is None or m.kind == "sql"):
        # Our own connection waited for readers (the old app in a read transaction) to
        # let COMMIT write; a .py migration's own connection is the migration's fault.
        return LockTimeout(
            f"{where}another process kept a lock on {db} for {timeout:g} s ({exc})",
            "stop the old app (or whatever reads the database), then start again",
        )
    full = (isinstance(exc, sqlite3.Error) and "database or disk is full" in str(exc)) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    )
    if full:
        return DiskFull(
            f"{where}no space left on {db.parent} ({exc})",
            f"free space on {db.parent} (or grow the volume), then start again",
        )
    if any(getattr(e, "sqlite_errorcode", None) == GETTEMPPATH for e in (exc, exc.__cause__)):
        return EnvironmentProblem(
            f"{where}SQLite found no folder it can write for its temp files ({exc})",
            f"make {db.parent} writable (the guard puts them there), or set SQLITE_TMPDIR",
        )
    if _io_error(exc) and (m is None or m.kind == "sql"):
        # The disk or the file system failed to write: not the migrations' fault, so no
        # failure record (a fault-free next start must try again, not exit 11).
        return EnvironmentProblem(
            f"{where}I/O error writing {db} ({exc})",
            f"check the disk and the volume holding {db.parent} (dmesg), then start again",
        )
    return MigrationFailed(f"{where}{exc}", "fix the migration")


GETTEMPPATH = 10 | (25 << 8)  # SQLITE_IOERR_GETTEMPPATH


def _io_error(exc: BaseException) -> bool:
    """Also when wrapped with a statement's line."""
    for e in (exc, exc.__cause__):
        code = getattr(e, "sqlite_errorcode", None)
        if isinstance(e, sqlite3.Error) and (
            code is not None and code & 0xFF == 10 or "disk I/O error" in str(e)
        ):
            return True
    return False


def _ended(conn: sqlite3.Connection) -> bool:
    """Committed or rolled back by someone else (closed by a .py migration: rolled back)."""
    try:
        return not conn.in_transaction
    except sqlite3.ProgrammingError:
        return False


def _refuse_below_evidence(
    settings: Settings, insp: Inspection, migrations: tuple[Migration, ...], version: int
) -> None:
    """Stamping below what the history and the schema show would make the next start run
    recorded migrations again: refused without --force, naming the version they show."""
    last = max((a.version for a in insp.applied or ()), default=0)
    if insp.trusted or insp.live_schema.is_empty() or not migrations:
        return
    from preflight.sources import evidence  # stamp only

    found = evidence.rank(insp.live_schema, migrations)
    shown = [migrations[k - 1] for k in found.matches]
    above = [m for m in shown if m.version > version]
    if last > version and any(m.version == last for m in shown):
        evidence_text = f"its history records {last} applied and its schema matches it"
    elif above and all(m.version != version for m in shown):
        evidence_text = (
            f"its schema matches {', '.join(m.name for m in shown)} with fewer differences"
        )
    else:
        return
    target = shown[-1].version if not last or last not in [m.version for m in shown] else last
    raise DriftError(
        f"{settings.db}: {evidence_text}; stamping {version} would make the next "
        f"start run migrations after {version} again on a database that has them",
        f"stamp {target} ('preflight stamp {target}'), or pass --force if you are "
        f"sure it is at {version}",
    )
