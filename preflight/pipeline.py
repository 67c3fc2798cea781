"""The start-up pipeline: plan from a read-only inspection, then back up, migrate, verify.

`plan` only reads. `execute` is the one call that writes; any failure inside it puts the
database back as it was (rollback, or restore from the verified backup) and leaves a
failure record so the same broken migration set does not crash-loop.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from . import backup, cache, drift, history, lock, schema
from .config import Settings
from .database import Inspection, assert_not_busy, check_environment, connect, inspect
from .errors import DriftError, MigrationFailed, PreflightError, Refused, RestoreFailed
from .migrations import Migration, discover, run_body, set_fingerprint

log = logging.getLogger("preflight")


@contextmanager
def step(name: str) -> Iterator[dict[str, str]]:
    """Log one line for a step when it ends: '<name>: <what> in <n> ms<tail>'."""
    start = time.perf_counter()
    info = {"what": "done", "tail": ""}
    yield info
    ms = (time.perf_counter() - start) * 1000
    log.info("%s: %s in %.0f ms%s", name, info["what"], ms, info["tail"],
             extra={"step": name, "ms": round(ms, 1)})


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided from a read-only inspection."""

    fingerprint: str  # of the whole migration set, for the failure record
    adopt: tuple[Migration, ...]
    pending: tuple[Migration, ...]
    expected_head: schema.Schema | None  # None: fresh (built from empty), or a cache hit
    warnings: tuple[drift.Difference, ...] = field(default=())

    @property
    def writes(self) -> bool:
        """True when the plan changes the database (adoption or pending migrations)."""
        return bool(self.adopt or self.pending)


def _drift(message: str, hint: str, diffs: list[drift.Difference],
           migrations: tuple[Migration, ...], upto: int,
           steps: dict[int, schema.Schema] | None = None) -> DriftError:
    """A DriftError listing each difference with the migration that made the expected object."""
    if steps is None:
        steps = schema.replay(migrations[:upto], set(range(1, upto + 1)))
    steps = {i: steps[i] for i in range(1, upto + 1)}
    named = drift.with_origins(diffs, [(migrations[i - 1], steps[i]) for i in sorted(steps)])
    error = DriftError(message, hint)
    error.details = tuple(f"drift: {d.message()}" for d in named)
    return error


def plan(insp: Inspection, migrations: tuple[Migration, ...], strict: bool) -> Plan:
    """Decide what to do, proving the database's state first. Reads only."""
    n = len(migrations)
    fingerprint = set_fingerprint(migrations)
    if insp.live is None:
        # inspect was told this schema text was verified at the head of this exact
        # migration set (cache.at_head checked the history): nothing to replay or diff.
        return Plan(fingerprint, (), (), None)
    if insp.fresh:
        # No replay: there is nothing to protect in a fresh database, so building it is
        # the proof that every migration works from empty, and a failure deletes it.
        return Plan(fingerprint, (), migrations, None)
    if insp.applied is None:
        return _adopt(insp, migrations, strict)
    pending = history.pending(insp.applied, migrations)
    done = n - len(pending)
    snaps = schema.replay(migrations, {done, n})
    diffs = drift.diff(snaps[done], insp.live)
    errors = drift.errors(diffs, strict)
    _warn_extras(diffs, strict)
    if errors:
        raise _drift(f"schema drift in {insp.path}: {len(errors)} difference(s) from what "
                     f"{migrations[done - 1].name if done else 'no migration'} should have produced",
                     "fix the listed objects by hand or restore a backup; nothing was changed",
                     errors, migrations, done)
    warnings = tuple(d for d in diffs if d.kind == "extra")
    return Plan(fingerprint, (), pending, snaps[n], warnings)


def _warn_extras(diffs: list[drift.Difference], strict: bool) -> None:
    """Extra objects are warnings (logged even when drift then refuses); --strict makes them drift."""
    if not strict:
        for d in diffs:
            if d.kind == "extra":
                log.warning("extra: %s", d.message())


def _adopt(insp: Inspection, migrations: tuple[Migration, ...], strict: bool) -> Plan:
    """A database with tables but no history: find the one version its schema is at."""
    n = len(migrations)
    fingerprint = set_fingerprint(migrations)
    snaps = schema.replay(migrations, set(range(n + 1)))
    diffs = {k: drift.diff(snaps[k], insp.live) for k in range(1, n + 1)}
    matches = [k for k in range(1, n + 1) if not drift.errors(diffs[k], False)]
    if n == 0:
        extras = drift.diff(snaps[0], insp.live)
        _warn_extras(extras, strict)
        return Plan(fingerprint, (), (), snaps[0], tuple(extras))
    if not matches:
        closest = min(range(1, n + 1), key=lambda k: (len(drift.errors(diffs[k], False)), -k))
        raise _drift(f"{insp.path} has tables but no preflight history, and its schema matches no "
                     f"migration; closest is {migrations[closest - 1].name} with "
                     f"{len(drift.errors(diffs[closest], False))} difference(s)",
                     f"fix the listed objects by hand, or if you know it is at that version, "
                     f"record it with 'preflight stamp {migrations[closest - 1].version} --force'",
                     drift.errors(diffs[closest], False), migrations, closest, snaps)
    k = matches[-1]
    if len(matches) > 1:
        between = migrations[matches[0]:matches[-1]]
        names = ", ".join(migrations[i - 1].name for i in matches)
        if not all(m.executes_nothing for m in between):
            raise DriftError(f"{insp.path} has no preflight history and its schema matches several "
                             f"versions equally ({names}); the migrations between them change "
                             f"data or drop objects that may not exist, so the choice matters",
                             "say which version it is at with 'preflight stamp VERSION'")
        log.warning("adopt: schema matches %s equally; the migrations between them execute no "
                    "statement, so choosing %s makes no difference", names, migrations[k - 1].name)
    _warn_extras(diffs[k], strict)
    if strict and drift.errors(diffs[k], True):
        raise _drift(f"{insp.path}: extra objects beside {migrations[k - 1].name} (--strict)",
                     "drop them or run without --strict", drift.errors(diffs[k], True),
                     migrations, k, snaps)
    log.info("adopt: no history; schema matches %s, recording 1..%d as adopted",
             migrations[k - 1].name, migrations[k - 1].version)
    warnings = tuple(d for d in diffs[k] if d.kind == "extra")
    return Plan(fingerprint, migrations[:k], migrations[k:], snaps[n], warnings)


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


def apply(settings: Settings, db: Path, p: Plan, committed: list[str],
          label: str = "migrate") -> None:
    """Adopt and apply: each migration with its history row in one BEGIN IMMEDIATE ... COMMIT.

    `label` names the log lines ('rehearse' when `check` runs this on its private copy).
    """
    conn = connect(db, settings.lock_timeout)
    try:
        if p.adopt:
            conn.execute("BEGIN IMMEDIATE")
            history.ensure_tables(conn)
            for m in p.adopt:
                history.record(conn, m, "adopted", 0.0)
            conn.execute("COMMIT")
            committed.append("adopt")
        for m in p.pending:
            with step(label) as info:
                start = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    history.ensure_tables(conn)
                    run_body(conn, m)
                    problems = conn.execute("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        table, rowid, parent, _ = problems[0]
                        raise MigrationFailed(f"{m.name}: leaves {len(problems)} foreign key "
                                              f"violation(s), e.g. {table} rowid {rowid} -> {parent}",
                                              "fix the migration")
                    history.record(conn, m, "applied", (time.perf_counter() - start) * 1000)
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(exc, PreflightError):
                        raise
                    raise MigrationFailed(f"{m.name}: {exc}", "fix the migration") from exc
                committed.append(m.name)
                info["what"] = m.name
    finally:
        conn.close()


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
            import subprocess  # only a smoke command needs it

            env = dict(os.environ, PREFLIGHT_DB=str(db))
            done = subprocess.run(settings.smoke, shell=True, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if done.returncode != 0:
                last = (done.stdout.strip().splitlines() or [""])[-1][:200]
                raise MigrationFailed(f"verification: smoke command exited {done.returncode}: {last}",
                                      "fix the migrations or PREFLIGHT_SMOKE")
            info["what"] += ", smoke ok"
    return verified


def _undo(settings: Settings, insp: Inspection, taken: Path | None, committed: list[str]) -> str:
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
        raise RestoreFailed(f"{len(committed)} step(s) were committed ({', '.join(committed)}) and "
                            f"there is no backup (PREFLIGHT_BACKUP=never)",
                            "restore your own backup by hand")
    with step("restore") as info:
        backup.restore(taken, db)
        info["what"], info["tail"] = "restored and verified", f" <- {taken}"
    return f"the database was restored from {taken} and verified"


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
    committed: list[str] = []
    try:
        apply(settings, db, p, committed)
        return verify(settings, db, p)
    except BaseException as exc:
        failed = exc.message if isinstance(exc, PreflightError) else f"{type(exc).__name__}: {exc}"
        failing = next((m.name for m in p.pending if m.name not in committed), None)
        # Written before the undo, so a crash during the restore still leaves the record.
        record = history.FailureRecord(p.fingerprint, history.now(), MigrationFailed.code, failed,
                                       failing, str(taken) if taken else None, False)
        history.write_failure(settings.failure_path, record)
        try:
            how = _undo(settings, insp, taken, committed)
        except RestoreFailed as restore_error:
            history.write_failure(settings.failure_path,
                                  replace(record, exit_code=RestoreFailed.code))
            raise RestoreFailed(f"{failed}; and then {restore_error.message}",
                                restore_error.hint) from exc
        history.write_failure(settings.failure_path, replace(record, restored=True))
        raise MigrationFailed(f"{failed}; {how}",
                              "fix the migration and ship a new image (the next start with "
                              "these files refuses with exit 11)") from exc


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
            insp = inspect(settings.db, trust=trusted.schema_hash if trusted else None)
            if insp.live is None and not cache.at_head(insp.applied, migrations):
                insp = inspect(settings.db)  # same schema text, other history: check it all
            info["what"] = "fresh database" if insp.fresh else (
                f"{len(insp.applied or ())} applied, " + (
                    "schema as verified before (cache)" if insp.live is None
                    else f"{len(insp.live.tables)} table(s)") + ", quick_check ok")
        with step("plan") as info:
            p = plan(insp, migrations, settings.strict)
            info["what"] = (f"{len(p.adopt)} to adopt, " if p.adopt else "") + \
                f"{len(p.pending)} pending, history and schema verified"
        if trusted and insp.live is None:
            for warning in trusted.warnings:
                log.warning("extra: %s", warning)
        if p.writes or settings.backup == "always":
            assert_not_busy(settings.db, settings.lock_timeout)
        verified = execute(settings, insp, p) or insp.schema_hash
        if verified and insp.live is not None:  # a hit needs no rewrite: a no-op start writes nothing
            cache.write(settings.cache_path,
                        cache.Verified(key, verified, tuple(w.message() for w in p.warnings)))
        if history.clear_failure(settings.failure_path):
            log.info("failure record: cleared (this migration set succeeded)")
        if settings.backup != "never":
            for removed in backup.prune(settings.backup_dir, settings.db, settings.keep_backups):
                log.info("prune: removed %s", removed)
