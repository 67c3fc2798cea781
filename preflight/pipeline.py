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
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from . import backup, cache, drift, faults, history, lock, schema, signals
from .config import Settings
from .database import (Inspection, assert_not_busy, check_before_writing, check_environment,
                       connect, inspect)
from .errors import (DiskFull, Interrupted, LockTimeout, MigrationFailed, PreflightError,
                     Refused, RestoreFailed)
from .migrations import Migration, discover, run_body, set_fingerprint
from .planner import Plan, plan
from .quickstart import check_due

log = logging.getLogger("preflight")

# Failures that say nothing against the migrations: rolled back, no failure record.
TRANSIENT = (Interrupted, DiskFull, LockTimeout)


@contextmanager
def step(name: str) -> Iterator[dict[str, str]]:
    """Log one line for a step when it ends: '<name>: <what> in <n> ms<tail>'."""
    start = time.perf_counter()
    info = {"what": "done", "tail": ""}
    yield info
    ms = (time.perf_counter() - start) * 1000
    log.info("%s: %s in %.0f ms%s", name, info["what"], ms, info["tail"],
             extra={"step": name, "ms": round(ms, 1)})


@contextmanager
def locked(settings: Settings, command: str) -> Iterator[None]:
    """Hold the guard's lock, logging how long it took to get."""
    start = time.perf_counter()
    with lock.hold(settings.lock_path, settings.lock_timeout, command):
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
        raise Refused(f"a failed start on {record.failed_at} did not complete its restore: "
                      f"{record.reason}{where}",
                      f"stop the app, run 'preflight restore {record.backup or 'BACKUP'}', then "
                      f"'preflight clear-failure'")
    if record.fingerprint == fingerprint:
        raise Refused(f"the same migration set failed on {record.failed_at} (exit "
                      f"{record.exit_code}): {record.reason}{where}",
                      "ship fixed migrations, or clear the record with 'preflight clear-failure'")
    log.info("failure record: a previous start failed with another migration set; trying this one")


def apply(settings: Settings, db: Path, p: Plan, progress: dict,
          label: str = "migrate") -> None:
    """Adopt and apply everything pending in ONE BEGIN IMMEDIATE ... COMMIT.

    One transaction for all of it: a kill or failure anywhere before COMMIT leaves the
    database exactly as it was, after it the new state; never a version in between.
    `progress["running"]` gets each migration's name as it starts (a failing one is the
    last, also kept as `progress["failing"]`), and `progress["committed"]` turns True once
    COMMIT returned (or once something inside ended the transaction: undo from the backup).
    `label` names the log lines ('rehearse' when `check` runs this on its private copy).
    """
    progress.setdefault("running", [])
    progress.setdefault("committed", False)
    live = label == "migrate"  # fault points only on the live database, never the rehearsal
    after_statement = (lambda: faults.point("statement")) if live else None
    conn = connect(db, settings.lock_timeout)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
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
                    _check_foreign_keys(conn, m)
                    history.record(conn, m, "applied", (time.perf_counter() - start) * 1000)
                    info["what"] = m.name
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
                info["what"] = (f"committed {len(p.adopt)} adopted and {len(p.pending)} "
                                f"applied in one transaction")
        except BaseException as exc:
            if progress["running"] and not progress["committed"]:
                progress["failing"] = progress["running"][-1]
            state = _transaction(conn)
            if state == "open":
                conn.execute("ROLLBACK")
            elif state == "ended" and not isinstance(exc, TRANSIENT):
                # Ended from inside (a .py migration that removed the authorizer and
                # committed): what was kept is unknown, so undo from the backup.
                progress["committed"] = True
            raise
    finally:
        conn.close()
    if live:
        faults.point("after-commit")


def _check_foreign_keys(conn: sqlite3.Connection, m: Migration) -> None:
    """Each migration must leave foreign keys clean (so the one COMMIT finds them clean)."""
    problems = conn.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        table, rowid, parent, _ = problems[0]
        raise MigrationFailed(f"{m.name}: leaves {len(problems)} foreign key violation(s), "
                              f"e.g. {table} rowid {rowid} -> {parent}", "fix the migration")


def _migration_error(m: Migration | None, db: Path, exc: BaseException,
                     timeout: float) -> PreflightError:
    """A failed statement as exit 9; no space (9) and another process's lock (8) say so."""
    where = f"{m.name}: " if m else "COMMIT: "
    if "database is locked" in str(exc) and (m is None or m.kind == "sql"):
        # Our own connection waited for readers (the old app in a read transaction) to
        # let COMMIT write; a .py migration's own connection is the migration's fault.
        return LockTimeout(f"{where}another process kept a lock on {db} for {timeout:g} s "
                           f"({exc})", "stop the old app (or whatever reads the database), "
                           "then start again")
    full = (isinstance(exc, sqlite3.Error) and "database or disk is full" in str(exc)) or \
        (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
    if full:
        return DiskFull(f"{where}no space left on {db.parent} ({exc})",
                        f"free space on {db.parent} (or grow the volume), then start again")
    return MigrationFailed(f"{where}{exc}", "fix the migration")


def _transaction(conn: sqlite3.Connection) -> str:
    """'open', 'ended' (committed or rolled back by someone else), or 'closed' (rolled back)."""
    try:
        return "open" if conn.in_transaction else "ended"
    except sqlite3.ProgrammingError:  # a .py migration closed the connection
        return "closed"


def verify(settings: Settings, db: Path, p: Plan, label: str = "verify") -> str:
    """Step 8: schema equals head, quick_check and foreign_key_check pass, smoke exits 0.

    Returns the hash of the schema text it verified (for the cache). A fresh build has no
    expected head to compare with: it is, by construction, what the migrations make.
    """
    with step(label) as info:
        conn = connect(db, settings.lock_timeout)
        try:
            verified = cache.schema_hash(conn)
            diffs = [] if p.expected_head is None else \
                drift.errors(drift.diff(p.expected_head, schema.snapshot(conn)), settings.strict)
            if diffs:
                raise MigrationFailed(f"verification: schema differs from head: {diffs[0].message()}"
                                      f" (+{len(diffs) - 1} more)", "fix the migrations")
            result = "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))
            if result != "ok":
                raise MigrationFailed(f"verification: quick_check: {result[:200]}", "")
            problems = conn.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise MigrationFailed(f"verification: {len(problems)} foreign key violation(s), "
                                      f"e.g. in {problems[0][0]}", "fix the data or the migrations")
        finally:
            conn.close()
        info["what"] = ("schema built from empty" if p.expected_head is None else
                        "schema at head") + ", quick_check ok, foreign keys ok"
        if settings.smoke:
            code, last = smoke(settings.smoke, db, settings.smoke_timeout)
            if code is None:
                raise MigrationFailed(f"verification: smoke command did not finish within "
                                      f"{settings.smoke_timeout:g} s (PREFLIGHT_SMOKE_TIMEOUT), killed: {last}",
                                      "fix the smoke command, or raise PREFLIGHT_SMOKE_TIMEOUT")
            if code != 0:
                raise MigrationFailed(f"verification: smoke command exited {code}: {last}",
                                      "fix the migrations or PREFLIGHT_SMOKE")
            info["what"] += ", smoke ok"
    return verified


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
        proc = subprocess.Popen(command, shell=True, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
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
        raise RestoreFailed("the migrations were committed and there is no backup "
                            "(PREFLIGHT_BACKUP=never)", "restore your own backup by hand")
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


def execute(settings: Settings, insp: Inspection, p: Plan) -> str | None:
    """Back up, migrate, verify; on any failure undo and leave a failure record. Writes.

    Returns the hash of the schema verified after migrating (None when nothing was applied).
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
    progress: dict = {"running": [], "committed": False}
    try:
        apply(settings, db, p, progress)
        return verify(settings, db, p)
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
        record = history.FailureRecord(p.fingerprint, history.now(), MigrationFailed.code, failed,
                                       failing, str(taken) if taken else None, False)
        if committed or verdict:
            _save_record(settings, record)  # before the restore: a crash during it leaves it
        try:
            how = _undo(settings, insp, taken, committed)
        except RestoreFailed as restore_error:
            _save_record(settings, replace(record, exit_code=RestoreFailed.code))
            raise RestoreFailed(f"{failed}; and then {restore_error.message}",
                                restore_error.hint) from error
        if verdict:
            _save_record(settings, replace(record, restored=True))
        elif committed:
            _save_record(settings, None)
        if isinstance(exc, Interrupted):
            raise Interrupted(f"{failed}; {how}", "start again") from error
        if isinstance(exc, TRANSIENT):
            raise type(exc)(f"{failed}; {how}", exc.hint) from error
        raise MigrationFailed(f"{failed}; {how}",
                              "fix the migration and ship a new image (the next start with "
                              "these files refuses with exit 11)") from error


def migrate(settings: Settings, command: str, argv: list[str] | None = None) -> None:
    """Steps 1-9: everything `run` does before exec, and all that `migrate` does."""
    check_environment(settings.db, settings.backup_dir if settings.backup != "never" else None,
                      writes=True, command=argv)
    with step("migrations") as info:
        migrations = discover(settings.migrations)
        info["what"] = f"{len(migrations)} file(s) valid"
    if not migrations:
        log.warning("migrations: none in %s; is PREFLIGHT_MIGRATIONS right?", settings.migrations)
    with locked(settings, command):
        fingerprint = set_fingerprint(migrations)
        refuse_if_failed(settings, fingerprint)
        with step("inspect") as info:
            key = cache.key(fingerprint, settings.strict)
            trusted = cache.read(settings.cache_path, key)
            now = int(time.time())
            insp = inspect(settings.db, trust=trusted.schema_hash if trusted else None,
                           quick_check=check_due(settings.integrity,
                                                 trusted.checked_at if trusted else 0, now))
            checked = insp.checked
            if insp.live is None and not cache.at_head(insp.applied, migrations):
                # Same schema text, other history: take the snapshot and check it all
                # (quick_check, if due, just ran under this lock; not again on a big file).
                insp = inspect(settings.db, quick_check=False)
            info["what"] = "fresh database" if insp.fresh else (
                f"{len(insp.applied or ())} applied, " + (
                    "schema as verified before (cache)" if insp.live is None
                    else f"{len(insp.live.tables)} table(s)") +
                (", quick_check ok" if checked else ", header and size ok"))
        with step("plan") as info:
            p = plan(insp, migrations, settings.strict)
            info["what"] = (f"{len(p.adopt)} to adopt, " if p.adopt else "") + \
                f"{len(p.pending)} pending, history and schema verified"
        if trusted and insp.live is None:
            for warning in trusted.warnings:
                log.warning("extra: %s", warning)
        if (p.writes or settings.backup == "always") and insp.size > 0 and not checked:
            with step("integrity") as info:  # nothing is written to a database not checked
                check_before_writing(settings.db)
                info["what"] = "quick_check ok before writing"
            checked = True
        if p.writes or settings.backup == "always":
            assert_not_busy(settings.db, settings.lock_timeout)
        verified = execute(settings, insp, p) or insp.schema_hash
        # Written when the schema was verified anew, or to record a full check an interval
        # policy asked for; otherwise a hit needs no rewrite: a no-op start writes nothing.
        recorded = trusted.checked_at if trusted else 0
        if verified and (insp.live is not None or
                         (checked and isinstance(settings.integrity, int))):
            cache.write(settings.cache_path, cache.Verified(
                key, verified, tuple(w.message() for w in p.warnings) if insp.live is not None
                else trusted.warnings if trusted else (),
                now if checked or p.writes else recorded))
        if history.clear_failure(settings.failure_path):
            log.info("failure record: cleared (this migration set succeeded)")
        if settings.backup != "never":
            for removed in backup.prune(settings.backup_dir, settings.db, settings.keep_backups):
                log.info("prune: removed %s", removed)
