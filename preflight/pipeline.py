"""The start-up pipeline: plan from a read-only inspection, then back up, migrate, verify.

`plan` only reads. `execute` is the one call that writes; any failure inside it puts the
database back as it was (rollback, or restore from the verified backup) and leaves a
failure record so the same broken migration set does not crash-loop.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import (
    backup,
    cache,
    catalog,
    drift,
    faults,
    foreignkeys,
    history,
    holders,
    litestream,
    lock,
    schema,
    signals,
)
from .config import Settings
from .database import (
    Inspection,
    assert_not_busy,
    check_before_writing,
    check_environment,
    connect,
    inspect,
)
from .errors import (
    DiskFull,
    DriftError,
    EnvironmentProblem,
    Interrupted,
    LockTimeout,
    MigrationFailed,
    PreflightError,
    Refused,
    RestoreFailed,
)
from .facts import Proof, check_due, quick_check, uri
from .migrations import Migration, discover, run_body, set_fingerprint
from .planner import Plan, accepted_part, history_key, plan
from .transaction import immediate

log = logging.getLogger("preflight")

# Failures that say nothing against the migrations: rolled back, no failure record.
# EnvironmentProblem: an I/O error from the disk (at COMMIT, typically) is not theirs.
TRANSIENT = (Interrupted, DiskFull, LockTimeout, EnvironmentProblem)
RETRIES = 3  # re-plans after another guard changed the history under this one


class HistoryMoved(LockTimeout):
    """Another guard changed the history between this one's plan and its write transaction
    (its lock file was deleted or replaced): nothing was run; plan again."""


@dataclass(frozen=True)
class VerifiedState:
    """What verify proved after migrating: the schema text it hashed and the extras it saw."""

    schema_hash: str
    extras: tuple[str, ...] = ()


@contextmanager
def step(name: str) -> Iterator[dict[str, str]]:
    """Log one line for a step when it ends: '<name>: <what> in <n> ms<tail>'."""
    start = time.perf_counter()
    info = {"what": "done", "tail": ""}
    yield info
    ms = (time.perf_counter() - start) * 1000
    log.info(
        "%s: %s in %.0f ms%s",
        name,
        info["what"],
        ms,
        info["tail"],
        extra={"step": name, "ms": round(ms, 1)},
    )


@contextmanager
def locked(settings: Settings, command: str, held: int = -1) -> Iterator[None]:
    """Hold the guard's lock, logging how long it took to get (`held`: see lock.hold)."""
    start = time.perf_counter()
    with lock.hold(settings.lock_path, settings.lock_timeout, command, held):
        ms = (time.perf_counter() - start) * 1000
        log.info("lock: acquired in %.0f ms", ms, extra={"step": "lock", "ms": round(ms, 1)})
        yield


def refuse_if_failed(settings: Settings, fingerprint: str) -> None:
    """Exit 11 at once if this same migration set already failed here."""
    record = history.read_failure(settings.failure_path)
    if record is None:
        return
    where = f"; backup {record.backup}" if record.backup else ""
    if not record.restored:
        # The database may be neither the old state nor the new one: no migration set,
        # fixed or not, may run on it until an operator has put it back.
        raise Refused(
            f"a failed start on {record.failed_at} did not complete its restore: "
            f"{record.reason}{where}",
            f"stop the app, run 'preflight restore {record.backup or 'BACKUP'}', then "
            f"'preflight clear-failure'",
        )
    if record.fingerprint == fingerprint:
        raise Refused(
            f"the same migration set failed on {record.failed_at} (exit "
            f"{record.exit_code}): {record.reason}{where}",
            "ship fixed migrations, or clear the record with 'preflight clear-failure'",
        )
    log.info("failure record: a previous start failed with another migration set; trying this one")


def apply(
    settings: Settings, db: Path, p: Plan, progress: dict[str, Any], label: str = "migrate"
) -> foreignkeys.Baseline:
    """Adopt and apply everything pending in ONE BEGIN IMMEDIATE ... COMMIT.

    One transaction for all of it: a kill or failure anywhere before COMMIT leaves the
    database exactly as it was, after it the new state; never a version in between.
    `progress["running"]` gets each migration's name as it starts (a failing one is the
    last, also kept as `progress["failing"]`), and `progress["committed"]` turns True once
    COMMIT returned (or once something inside ended the transaction: undo from the backup).
    `label` names the log lines ('rehearse' when `check` runs this on its private copy).

    Inside the transaction, before anything runs: the history is read again (a migration
    already recorded never runs twice, whatever happened to the lock file: HistoryMoved),
    and the foreign-key violations already there are counted (the baseline). Just before
    COMMIT, the run fails only for violations it introduced and left. Returns the baseline.
    """
    progress.setdefault("running", [])
    progress.setdefault("committed", False)
    live = label == "migrate"  # fault points only on the live database, never the rehearsal
    after_statement = (lambda: faults.point("statement")) if live else None
    conn = connect(db, settings.lock_timeout)
    try:
        with immediate(conn):
            try:
                now = history_key(history.read(conn))
                if now != p.based_on:
                    raise HistoryMoved(
                        f"another guard changed the history of {db} after this one "
                        f"planned ({len(p.based_on or ())} -> {len(now or ())} "
                        f"recorded); nothing was run",
                        "start again",
                    )
                before = foreignkeys.violations(conn)
                if before and live:  # check/status list them themselves
                    log.warning(
                        "foreign keys: %s already present before this run (not made by it; "
                        "--strict refuses them)",
                        foreignkeys.summary(before),
                    )
                baseline = foreignkeys.watch(conn, before)
                history.ensure_tables(conn)
                for m in p.adopt:
                    history.record(conn, m, "adopted", 0.0)
                for m in p.pending:
                    progress["running"].append(m.name)
                    with step(label) as info:
                        start = time.perf_counter()
                        try:
                            run_body(conn, m, label, after_statement=after_statement)
                        except PreflightError:
                            raise
                        except Exception as exc:
                            raise _migration_error(m, db, exc, settings.lock_timeout) from exc
                        history.record(conn, m, "applied", (time.perf_counter() - start) * 1000)
                        info["what"] = m.name
                _check_foreign_keys(conn, baseline)
                if p.accepted and p.expected_head is not None:
                    _clear_accepted(conn, p)
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
                    )
            except BaseException as exc:
                if progress["running"] and not progress["committed"]:
                    progress["failing"] = progress["running"][-1]
                if _transaction(conn) == "ended" and not isinstance(exc, TRANSIENT):
                    # Ended from inside (a .py migration that removed the authorizer and
                    # committed): what was kept is unknown, so undo from the backup.
                    progress["committed"] = True
                raise
    finally:
        conn.close()
    if live:
        faults.point("after-commit")
    return baseline


def _check_foreign_keys(conn: sqlite3.Connection, baseline: foreignkeys.Baseline) -> None:
    """Once, before COMMIT: violations the run introduced and left fail it (older ones do not,
    nor one a migration made and a later one removed: all of them commit together)."""
    new = foreignkeys.introduced(baseline, foreignkeys.violations(conn))
    if new:
        raise MigrationFailed(
            f"the migrations leave {foreignkeys.summary(new)}",
            "fix the migration (or the data it copies)",
        )


def _clear_accepted(conn: sqlite3.Connection, p: Plan) -> None:
    """Differences accepted by a forced stamp that the migrations made go away are forgotten."""
    assert p.expected_head is not None
    still = drift.diff(p.expected_head, schema.snapshot(conn))
    _, kept = accepted_part(still, p.accepted)
    if history.keep_accepted(conn, kept):
        for d in p.accepted:
            if d not in kept:
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
    if _io_error(exc) and (m is None or m.kind == "sql"):
        # The disk or the file system failed to write: not the migrations' fault, so no
        # failure record (a fault-free next start must try again, not exit 11).
        return EnvironmentProblem(
            f"{where}I/O error writing {db} ({exc})",
            f"check the disk and the volume holding {db.parent} (dmesg), then start again",
        )
    return MigrationFailed(f"{where}{exc}", "fix the migration")


def _io_error(exc: BaseException) -> bool:
    """An SQLITE_IOERR (any extended code), also when wrapped with a statement's line."""
    for e in (exc, exc.__cause__):
        code = getattr(e, "sqlite_errorcode", None)
        if isinstance(e, sqlite3.Error) and (
            code is not None and code & 0xFF == 10 or "disk I/O error" in str(e)
        ):
            return True
    return False


def _transaction(conn: sqlite3.Connection) -> str:
    """'open', 'ended' (committed or rolled back by someone else), or 'closed' (rolled back)."""
    try:
        return "open" if conn.in_transaction else "ended"
    except sqlite3.ProgrammingError:  # a .py migration closed the connection
        return "closed"


def verify(
    settings: Settings,
    db: Path,
    p: Plan,
    label: str = "verify",
    fk_baseline: foreignkeys.Baseline | None = None,
) -> VerifiedState:
    """Step 8: schema equals head, quick_check passes, no foreign-key violation beyond the
    baseline (those before the run, as apply read them), smoke exits 0.

    Returns what it proved (for the cache): the hash of the schema text, and the extra
    objects it saw, after migrating. A fresh build has no expected head to compare with:
    it is, by construction, what the migrations make.
    """
    with step(label) as info:
        conn = connect(db, settings.lock_timeout)
        try:
            verified = cache.schema_hash(conn)
            found = (
                []
                if p.expected_head is None
                else drift.diff(p.expected_head, schema.snapshot(conn))
            )
            diffs, _ = accepted_part(drift.errors(found, settings.strict), p.accepted)
            extras = tuple(d.message() for d in found if d.kind == "extra" and not settings.strict)
            if diffs:
                raise MigrationFailed(
                    f"verification: schema differs from head: {diffs[0].message()}"
                    f" (+{len(diffs) - 1} more)",
                    "fix the migrations",
                )
            result = quick_check(conn)
            if result != "ok":
                raise MigrationFailed(f"verification: quick_check: {result[:200]}", "")
            new = foreignkeys.introduced(fk_baseline or Counter(), foreignkeys.violations(conn))
            if new:
                raise MigrationFailed(
                    f"verification: the migrations left {foreignkeys.summary(new)}",
                    "fix the data or the migrations",
                )
        finally:
            conn.close()
        info["what"] = (
            "schema built from empty" if p.expected_head is None else "schema at head"
        ) + ", quick_check ok, foreign keys ok"
        if settings.smoke:
            code, last = smoke(settings.smoke, db, settings.smoke_timeout)
            if code is None:
                raise MigrationFailed(
                    f"verification: smoke command did not finish within "
                    f"{settings.smoke_timeout:g} s (PREFLIGHT_SMOKE_TIMEOUT), killed: {last}",
                    "fix the smoke command, or raise PREFLIGHT_SMOKE_TIMEOUT",
                )
            if code != 0:
                raise MigrationFailed(
                    f"verification: smoke command exited {code}: {last}",
                    "fix the migrations or PREFLIGHT_SMOKE",
                )
            info["what"] += ", smoke ok"
    return VerifiedState(verified, extras)


def smoke(command: str, db: Path, timeout: float) -> tuple[int | None, str]:
    """Run the smoke command; (exit code or None on timeout, its last output line).

    Its output goes to an anonymous in-memory file, not a pipe: a background child it
    leaves behind (`sleep 60 & echo ok`) would keep a pipe open and a wait for EOF would
    hang with the lock held. It runs in its own process group, which is killed when the
    command ends or times out, so nothing it started outlives the verification.
    """
    import signal
    import subprocess  # only a smoke command needs them

    if hasattr(os, "memfd_create"):  # Linux: no temp folder needed (it may be read-only)
        out = os.memfd_create("preflight-smoke", os.MFD_CLOEXEC)
    else:
        import tempfile

        out = os.dup(tempfile.TemporaryFile().fileno())
    try:
        env = dict(os.environ, PREFLIGHT_DB=str(db))
        proc = subprocess.Popen(
            command,
            shell=True,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers, or the whole command
            except ProcessLookupError:
                pass
            proc.wait()
        size = os.fstat(out).st_size
        tail = os.pread(out, 4096, max(0, size - 4096)).decode("utf-8", "replace")
    finally:
        os.close(out)
    return code, (tail.strip().splitlines() or [""])[-1][:200]


def _undo(settings: Settings, insp: Inspection, taken: Path | None, committed: bool) -> str:
    """Put the database back as inspected. Returns how; raises RestoreFailed."""
    db = settings.db
    if taken is None and insp.size == 0:
        # Connecting created the file even if nothing was committed: remove it.
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if insp.existed:
            db.touch(0o600)
        backup.fsync_dir(db.parent)
        return "removed what was created; the database is as it was (fresh)"
    if not committed:
        return "rolled back; the database was not changed"
    if taken is None:
        raise RestoreFailed(
            "the migrations were committed and there is no backup (PREFLIGHT_BACKUP=never)",
            "restore your own backup by hand",
        )
    with step("restore") as info, signals.deferred():  # a restore is not stopped half-way
        backup.restore(taken, db)
        info["what"], info["tail"] = "restored and verified", f" <- {taken}"
    return f"the database was restored from {taken} and verified"


def _save_record(settings: Settings, record: history.FailureRecord | None) -> None:
    """Write (or with None remove) the failure record; a full disk must not hide the real error."""
    try:
        if record is None:
            history.clear_failure(settings.failure_path)
        else:
            history.write_failure(settings.failure_path, record)
    except OSError as exc:
        log.warning("failure record: cannot write %s: %s", settings.failure_path, exc.strerror)


def execute(settings: Settings, insp: Inspection, p: Plan) -> VerifiedState | None:
    """Back up, migrate, verify; on any failure undo and leave a failure record. Writes.

    Returns what was verified after migrating (None when nothing was applied).
    """
    db = settings.db
    taken = None
    wants_backup = settings.backup == "always" or (settings.backup == "on-change" and p.writes)
    if wants_backup and insp.size > 0:
        with step("backup") as info:
            taken = backup.take(db, settings.backup_dir, "pre-migrate" if p.writes else "always")
            info["what"] = f"{taken.stat().st_size / (1 << 20):.1f} MiB"
            info["tail"] = f" -> {taken}"
    if not p.writes:
        return None
    progress: dict[str, Any] = {"running": [], "committed": False}
    try:
        baseline = apply(settings, db, p, progress)
        return verify(settings, db, p, fk_baseline=baseline)
    except HistoryMoved:
        raise  # rolled back before anything ran: nothing to undo (and a fresh file is theirs)
    except BaseException as error:
        exc = error
        if signals.received() and not isinstance(exc, Interrupted):
            exc = signals.swallowed()  # e.g. raised inside SQLite calling a Python function
        committed = progress["committed"]
        failed = exc.message if isinstance(exc, PreflightError) else f"{type(exc).__name__}: {exc}"
        failing = progress.get("failing")
        # An interruption, a full disk or another process's lock says nothing against this
        # migration set: once undone, the next start may try the same files again.
        verdict = not isinstance(exc, TRANSIENT)
        record = history.FailureRecord(
            p.fingerprint,
            history.now(),
            MigrationFailed.code,
            failed,
            failing,
            str(taken) if taken else None,
            False,
        )
        if committed or verdict:
            _save_record(settings, record)  # before the restore: a crash during it leaves it
        try:
            how = _undo(settings, insp, taken, committed)
        except RestoreFailed as restore_error:
            _save_record(settings, replace(record, exit_code=RestoreFailed.code))
            raise RestoreFailed(
                f"{failed}; and then {restore_error.message}", restore_error.hint
            ) from error
        if verdict:
            _save_record(settings, replace(record, restored=True))
        elif committed:
            _save_record(settings, None)
        if isinstance(exc, Interrupted):
            raise Interrupted(f"{failed}; {how}", "start again") from error
        if isinstance(exc, TRANSIENT):
            raise type(exc)(f"{failed}; {how}", exc.hint) from error
        raise MigrationFailed(
            f"{failed}; {how}",
            "fix the migration and ship a new image (the next start with "
            "these files refuses with exit 11)",
        ) from error


def migrate(
    settings: Settings, command: str, argv: list[str] | None = None, proof: Proof | None = None
) -> None:
    """Steps 1-9: everything `run` does before exec, and all that `migrate` does.

    `proof`: what a quick start proved before handing over (its lock, still held, the
    files' hashes, a passed quick_check): used when it was made for this very database
    and folder, so nothing is done twice.
    """
    if proof is not None and (proof.db, proof.migrations) != (
        str(settings.db),
        str(settings.migrations),
    ):
        proof = None
    litestream.refuse_under_replicate()
    check_environment(
        settings.db,
        settings.backup_dir if settings.backup != "never" else None,
        writes=True,
        command=argv,
    )
    with step("migrations") as info:
        migrations = discover(
            settings.migrations, settings.functions, proof.hashed if proof else None
        )
        info["what"] = f"{len(migrations)} file(s) valid"
    if not migrations:
        log.warning("migrations: none in %s; is PREFLIGHT_MIGRATIONS right?", settings.migrations)
    litestream.ready(settings)
    held = proof.take_lock() if proof else -1
    with locked(settings, command, held):
        litestream.restore_if_missing(settings)  # before anything could build a fresh one
        if argv is not None:
            # Held from inside the lock until the exec'd app exits (it inherits the
            # descriptor): a restore sees a guarded app, and never slips in before exec.
            holders.share_running(settings.db)
        fingerprint = set_fingerprint(migrations)
        refuse_if_failed(settings, fingerprint)
        for attempt in range(1, RETRIES + 1):
            try:
                # A quick_check the quick start passed under this same lock holds on the
                # first attempt; after another guard moved the history, it is redone.
                checked = held >= 0 and proof is not None and proof.checked and attempt == 1
                _migrate_locked(settings, migrations, fingerprint, checked)
                break
            except HistoryMoved as exc:
                if attempt == RETRIES:
                    raise
                log.warning("plan: %s; planning again", exc.message)
        if history.clear_failure(settings.failure_path):
            log.info("failure record: cleared (this migration set succeeded)")
        if settings.backup != "never":
            for removed in catalog.prune(settings.backup_dir, settings.db, settings.keep_backups):
                log.info("prune: removed %s", removed)


def _strict_foreign_keys(db: Path) -> None:
    """--strict: foreign-key violations already in the database are errors (nothing changed)."""
    conn = sqlite3.connect(uri(db, mode="ro"), uri=True, isolation_level=None)
    try:
        found = foreignkeys.violations(conn)
    finally:
        conn.close()
    if found:
        error = DriftError(
            f"{db} has {foreignkeys.summary(found)} (--strict)",
            "delete or fix the orphan rows, or run without --strict",
        )
        error.details = tuple(f"foreign key: {v.message()}" for v in found[:20])
        raise error


def _migrate_locked(
    settings: Settings, migrations: tuple[Migration, ...], fingerprint: str, proved: bool = False
) -> None:
    """Inspect, plan, execute and write the cache, under the lock (`proved`: quick_check
    passed under it already)."""
    with step("inspect") as info:
        key = cache.key(fingerprint, settings.strict)
        trusted = cache.read(settings.cache_path, key)
        now = int(time.time())
        insp = inspect(
            settings.db,
            trust=trusted.schema_hash if trusted else None,
            quick_check=not proved
            and check_due(settings.integrity, trusted.checked_at if trusted else 0, now),
        )
        checked = insp.checked or proved
        if insp.trusted and not cache.at_head(insp.applied, migrations):
            # Same schema text, other history: take the snapshot and check it all
            # (quick_check, if due, just ran under this lock; not again on a big file).
            insp = inspect(settings.db, quick_check=False)
        info["what"] = (
            "fresh database"
            if insp.fresh
            else (
                f"{len(insp.applied or ())} applied, "
                + (
                    "schema as verified before (cache)"
                    if insp.trusted
                    else f"{len(insp.live_schema.tables)} table(s)"
                )
                + (
                    ", quick_check ok (by the quick start, under this lock)"
                    if proved
                    else ", quick_check ok"
                    if checked
                    else ", header and size ok"
                )
            )
        )
    with step("plan") as info:
        p = plan(insp, migrations, settings.strict)
        info["what"] = (
            f"{len(p.adopt)} to adopt, " if p.adopt else ""
        ) + f"{len(p.pending)} pending, history and schema verified"
    if trusted and insp.trusted:
        for warning in trusted.warnings:
            log.warning("extra: %s", warning)
    if p.writes and settings.strict and not insp.fresh:
        _strict_foreign_keys(settings.db)
    if (p.writes or settings.backup == "always") and insp.size > 0 and not checked:
        with step("integrity") as info:  # nothing is written to a database not checked
            check_before_writing(settings.db)
            info["what"] = "quick_check ok before writing"
        checked = True
    if p.writes or settings.backup == "always":
        assert_not_busy(settings.db, settings.lock_timeout)
    done = execute(settings, insp, p)
    if done is None:  # nothing applied: what the plan proved (or the cache vouched) still holds
        done = VerifiedState(
            insp.schema_hash,
            tuple(w.message() for w in p.warnings)
            if not insp.trusted
            else trusted.warnings
            if trusted
            else (),
        )
    # Written when the schema was verified anew, or to record a full check an interval
    # policy asked for; otherwise a hit needs no rewrite: a no-op start writes nothing.
    recorded = trusted.checked_at if trusted else 0
    if done.schema_hash and (not insp.trusted or (checked and isinstance(settings.integrity, int))):
        cache.write(
            settings.cache_path,
            cache.Verified(
                key, done.schema_hash, done.extras, now if checked or p.writes else recorded
            ),
        )
