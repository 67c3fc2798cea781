"""The guarded start, written once over any migration source (`source.Source`): everything
reads until `execute`, the one call that writes (docs/internals.md, "How it works")."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from contextlib import closing, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from preflight import schema
from preflight.core import TYPE_CHECKING, signals, targets
from preflight.core.errors import (
    TRANSIENT,
    DatabaseUnusable,
    DriftError,
    HistoryError,
    HistoryMoved,
    Interrupted,
    LockTimeout,
    LossRefused,
    MigrationFailed,
    PreflightError,
    Refused,
    ReplicaUnavailable,
    RestoreFailed,
)
from preflight.core.files import fsync_dir
from preflight.fast.facts import (
    SIDECARS,
    Proof,
    cache_key,
    check_due,
    check_environment,
    connect_ro,
    quick_check,
    share_running,
    show_policy,
    span,
)
from preflight.live import history
from preflight.live.database import (
    Inspection,
    assert_not_busy,
    check_before_writing,
    connect,
    inspect,
    sqlite_temp_folder,
)
from preflight.schema import foreignkeys
from preflight.sources.filesource import FileSource
from preflight.sources.planner import accepted_part
from preflight.sources.source import Plan, Run
from preflight.storage import cache, litestream
from preflight.storage.config import Settings
from preflight.storage.steps import locked, step

if TYPE_CHECKING:
    from typing import Any

    from preflight.live.records import FailureRecord
    from preflight.schema import drift
    from preflight.sources.source import Source

log = logging.getLogger("preflight")
RETRIES = 3  # re-plans after another guard changed the history under this one
IN_PROGRESS = "a run of the migration tool was in progress and did not finish"


@dataclass(frozen=True)
class VerifiedState:
    """What verify proved after migrating: the schema text it hashed, the extras it saw, and
    the version the database records (read on the same connection: the cache's key)."""

    schema_hash: str
    extras: tuple[str, ...] = ()
    recorded: tuple[str, ...] | None = None


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
    if record.fingerprint == fingerprint and record.loss and _covered(settings, record.loss):
        from preflight.live import loss

        log.info(
            "failure record: the loss it refused (%s) is accepted now (%s); trying again",
            ", ".join(record.loss),
            loss.VARIABLE,
        )
        return
    if record.fingerprint == fingerprint:
        raise Refused(
            f"the same migration set failed on {record.failed_at} (exit "
            f"{record.exit_code}): {record.reason}{where}",
            "ship fixed migrations, or clear the record with 'preflight clear-failure'",
        )
    log.info("failure record: a previous start failed with another migration set; trying this one")


def _covered(settings: Settings, refused: tuple[str, ...]) -> bool:
    """Whether PREFLIGHT_ACCEPT_LOSS accepts every loss a failure record says was refused."""
    try:
        wanted = [targets.parse(t)[0] for t in refused]
    except ValueError:
        return False
    return all(targets.covers(settings.accept_loss, t, c) for t, c in wanted)


def resume_interrupted(settings: Settings) -> None:
    """A tool run killed half-way (its record names the backup taken just before): put that
    backup back before anything is planned, so the start begins as the last one did."""
    record = history.read_failure(settings.failure_path)
    if record is None or record.restored or record.reason != IN_PROGRESS or not record.backup:
        return
    from preflight.storage import backup, holders  # a start that writes nothing needs neither

    taken = Path(record.backup)
    holders.refuse_others(
        settings.db, f"undoing a killed tool run (from {taken})", holders.others(settings.db)
    )
    with step("restore") as info, signals.deferred():
        backup.restore(taken, settings.db)
        info["what"] = f"a killed tool run ({record.failed_at}) undone, restored and verified"
        info["tail"] = f" <- {taken}"
    _save_record(settings, None)


def start(
    settings: Settings, command: str, argv: list[str] | None = None, proof: Proof | None = None
) -> None:
    """Everything `run` does before exec, and all that `migrate` does. `proof`: what a quick
    start proved before handing over, used when made for this very database and folder."""
    if proof is not None and (proof.db, proof.migrations) != (
        str(settings.db),
        str(settings.migrations if settings.tool == "files" else settings.app_dir),
    ):
        proof = None
    litestream.refuse_under_replicate()
    check_environment(settings.db, settings.backups, writes=True, command=argv)
    src = load(settings, proof=proof)
    litestream.ready(settings)
    held = proof.take_lock() if proof else -1
    with locked(settings, command, held):
        # Before anything could build a fresh one; the restored file must fit the plan.
        litestream.restore_if_missing(settings, lambda restored: _fits(settings, src, restored))
        if argv is not None:
            # Held from inside the lock until the exec'd app exits (it inherits the
            # descriptor): a restore sees a guarded app, and never slips in before exec.
            share_running(settings.db)
        try:
            resume_interrupted(settings)
            given_tables(settings)  # a typo must not wait behind the failure record
            refuse_if_failed(settings, src.fingerprint)
            for attempt in range(1, RETRIES + 1):
                try:
                    # A quick_check passed under this lock holds until the history moves.
                    checked = held >= 0 and proof is not None and proof.checked and attempt == 1
                    _start_locked(settings, src, checked)
                    break
                except HistoryMoved as exc:
                    if attempt == RETRIES:
                        raise
                    log.warning("plan: %s; planning again", exc.message)
            if history.clear_failure(settings.failure_path):
                log.info("failure record: cleared (this migration set succeeded)")
        finally:
            # On every way out: a restart loop of failing starts keeps at most --keep-backups
            # (the newest, which a failure record names, is never the one removed).
            prune(settings)


def load(settings: Settings, proof: Proof | None = None, readonly: bool = False) -> Source:
    """The source `settings` name, its migration set validated. `readonly` (check, status):
    nothing is written beside the database, not even a tool's scratch cache."""
    if settings.tool == "files":
        return FileSource.load(settings, proof, quiet=readonly)
    from preflight.sources.toolsource import ToolSource  # a start with files never needs it

    return ToolSource.load(settings, save=not readonly, quiet=readonly)


def _fits(settings: Settings, src: Source, restored: Path) -> None:
    """Plan a database restored from the replica before it is moved into place: one that is
    not this app's is refused, and nothing is left at the live path."""
    insp = inspect(restored, settings.db, source=src.name)
    try:
        src.plan(settings, insp, insp.recorded)
    except (DriftError, HistoryError) as exc:
        raise ReplicaUnavailable(
            f"the database restored from the replica in {settings.litestream_config} does "
            f"not fit these migrations ({exc.message}); nothing was put at {settings.db}",
            f"point {settings.litestream_config} at this database's own replica; {exc.hint}",
        ) from exc


def prune(settings: Settings) -> None:
    if settings.backup != "never" and settings.backup_dir.is_dir():
        from preflight.storage import catalog  # a first start has no backup folder yet

        try:
            for removed in catalog.prune(settings.backup_dir, settings.db, settings.keep_backups):
                log.info("prune: removed %s", removed)
        except OSError as exc:  # never hides the error the start is leaving with
            log.warning("prune: %s: %s", settings.backup_dir, exc.strerror or exc)


def _start_locked(settings: Settings, src: Source, proved: bool = False) -> None:
    """Inspect, plan, execute and write the cache, under the lock (`proved`: quick_check
    passed under it already)."""
    db = settings.db
    with step("inspect") as info:
        now = int(time.time())
        insp, trusted = inspect_cached(settings, src, db, quick_check=False)
        rec = insp.recorded
        checked = insp.checked or proved
        due = (
            not checked
            and insp.size > 0
            and check_due(settings.integrity, trusted.checked_at if trusted else 0, now)
        )
        # No cache for these files (a changed migration set: a start that will likely
        # write): the plan decides, since a backup checks the very state it copies.
        deferred = due and trusted is None
        if due and not deferred:
            check_before_writing(db)
            checked = True
        how = "quick_check ok" if checked else "header and size ok"
        how = "quick_check ok (by the quick start, under this lock)" if proved else how
        if insp.fresh:
            info["what"] = "fresh database"
        elif insp.trusted:
            info["what"] = f"{src.describe(rec)}, schema as verified before (cache), {how}"
        else:
            info["what"] = f"{src.describe(rec)}, {len(insp.live_schema.tables)} table(s), {how}"
    with step("plan") as info:
        try:
            p = plan_of(settings, src, insp, rec)
        except MigrationFailed as exc:  # a pending migration fails on an empty scratch database
            _save_record(settings, _record(src.fingerprint, exc.message, None, None, True))
            raise
        info["what"] = (f"{len(p.adopt)} to adopt, " if p.adopt else "") + (
            f"{len(p.pending)} pending, history and schema verified"
        )
        if p.undo:
            info["what"] = f"{len(p.undo)} to undo (a downgrade to {p.head}), history verified"
    if trusted and insp.trusted:
        for warning in trusted.warnings:
            log.warning("extra: %s", warning)
    check_accepted(settings, p)
    if p.writes and settings.strict and not insp.fresh:  # violations already there: errors
        with closing(connect_ro(db)) as conn:
            orphans = foreignkeys.violations(conn)
        if orphans:
            raise DriftError(
                f"{db} has {foreignkeys.summary(orphans)} (--strict)",
                "delete or fix the orphan rows, or run without --strict",
                details=(f"foreign key: {v.message()}" for v in orphans[:20]),
            )
    backs_up = insp.size > 0 and (
        settings.backup == "always" or (settings.backup == "on-change" and p.writes)
    )
    if insp.size > 0:
        from preflight.storage import holders  # a fresh build needs neither
        from preflight.storage.unchanged import reusable
    # A retry (a restart loop) of a start that failed: its backup still holds this.
    reused = reusable(db, settings.backup_dir) if backs_up and p.writes else None
    # Within the integrity interval a backed-up write may rely on this file's recorded check.
    vouched = _vouched(settings, insp, now) if p.writes and backs_up and not checked else ""
    if (p.writes or settings.backup == "always" or deferred) and insp.size > 0 and not checked:
        if vouched:
            with step("integrity") as info:
                info["what"] = f"quick_check skipped before writing: {vouched}"
        elif not backs_up or reused:
            with step("integrity") as info:  # nothing is written to a database not checked
                check_before_writing(db)
                writes = p.writes or settings.backup == "always"
                info["what"] = "quick_check ok" + (" before writing" if writes else "")
        # else the backup's quick_check, of the state it copies under SQLite's write lock,
        # is the full check before writing (backup.take: exit 6 before anything is written)
        checked = not vouched
    if p.writes or settings.backup == "always":
        assert_not_busy(db, settings.lock_timeout)
    if p.writes and insp.size > 0:
        holders.refuse_others(db, "migrating", holders.wait_for_others(db, settings.lock_timeout))
    if reused and reusable(db, settings.backup_dir) != reused:
        reused = None  # written while others were waited for: a new backup, checked
    done = execute(settings, src, insp, p, reused, vouched)
    if done is None:  # nothing applied: what the plan proved (or the cache vouched) still holds
        done = VerifiedState(
            insp.schema_hash, trusted.warnings if insp.trusted and trusted else p.warnings
        )
    # Written when the schema was verified anew, or to record a full check an interval
    # policy asked for; otherwise a hit needs no rewrite: a no-op start writes nothing.
    recorded = trusted.checked_at if trusted else 0
    if done.schema_hash and (not insp.trusted or (checked and isinstance(settings.integrity, int))):
        final = done.recorded if p.writes else rec
        cache.write(
            settings.cache_path,
            cache.Verified(
                cache_key(src.name, src.fingerprint, final, settings.strict),
                done.schema_hash,
                done.extras,
                now if checked or p.writes else recorded,
                cache.file_id(db) if checked or p.writes else trusted.checked_on if trusted else "",
            ),
        )


def _vouched(settings: Settings, insp: Inspection, now: int) -> str:
    """Why the full check before writing may be left out ("": it may not): an interval
    policy, and a full check of this very file, with this schema, passed within it."""
    if not isinstance(settings.integrity, int) or insp.size == 0:
        return ""  # every-start and before-writes: the full check before every write
    at = cache.vouching(settings.cache_path, settings.db, insp.schema_hash)
    if check_due(settings.integrity, at, now):
        return ""
    return (
        f"a full check of this file passed {span(now - at)} ago, within "
        f"PREFLIGHT_INTEGRITY={show_policy(settings.integrity)}"
    )


def given_tables(settings: Settings, file: Path | None = None) -> None:
    """PREFLIGHT_ACCEPT_LOSS names tables (and columns) of this database: exit 2 otherwise.
    `file`: the database to read (check's private copy), shown as `settings.db`."""
    if not settings.accept_loss:
        return
    from preflight.live import loss  # only when PREFLIGHT_ACCEPT_LOSS is set

    read = file or settings.db
    fresh = not read.exists() or read.stat().st_size == 0
    with nullcontext() if fresh else closing(connect_ro(read)) as conn:
        loss.check_given(conn, settings.accept_loss, settings.db)


def check_accepted(settings: Settings, p: Plan) -> None:
    """PREFLIGHT_ACCEPT_LOSS is said in the log: it is meant for one start."""
    if not settings.accept_loss:
        return
    from preflight.live import loss

    given = ", ".join(targets.show(t) for t in settings.accept_loss)
    what = "this start accepts losses there" if p.pending else "nothing to run, nothing accepted"
    log.warning(
        "accept-loss: %s=%s: %s%s", loss.VARIABLE, given, what, "" if p.pending else "; unset it"
    )


def inspect_cached(
    settings: Settings, src: Source, file: Path, shown: Path | None = None, quick_check: bool = True
) -> tuple[Inspection, cache.Verified | None]:
    """`inspect` with the verified-state cache (its key holds the version the database
    records, which inspect reads once its cheap checks passed); the cache hit too."""
    found: dict[str, cache.Verified | None] = {}

    def vouch(rec: tuple[str, ...] | None) -> str | None:
        hit = cache.read(
            settings.cache_path, cache_key(src.name, src.fingerprint, rec, settings.strict)
        )
        found["hit"] = hit
        return hit.schema_hash if hit else None

    insp = inspect(file, shown, trust=vouch, quick_check=quick_check, source=src.name)
    return insp, found.get("hit")


def plan_of(settings: Settings, src: Source, insp: Inspection, rec: tuple[str, ...] | None) -> Plan:
    if insp.trusted:  # the cache vouches for this schema at this recorded version
        return Plan(src.fingerprint, (), (), None, None, accepted=insp.accepted)
    return src.plan(settings, insp, rec)


def _record(
    fingerprint: str,
    reason: str,
    failing: str | None,
    taken: Path | None,
    restored: bool,
    code: int = MigrationFailed.code,
) -> FailureRecord:
    from preflight.live.records import FailureRecord  # a start that failed

    return FailureRecord(
        fingerprint, history.now(), code, reason, failing, str(taken) if taken else None, restored
    )


def _save_record(settings: Settings, record: FailureRecord | None) -> None:
    """Write (or with None remove) the failure record; a full disk must not hide the real error."""
    try:
        if record is None:
            history.clear_failure(settings.failure_path)
        else:
            history.write_failure(settings.failure_path, record)
    except OSError as exc:
        log.warning("failure record: cannot write %s: %s", settings.failure_path, exc.strerror)


def execute(
    settings: Settings,
    src: Source,
    insp: Inspection,
    p: Plan,
    reused: tuple[Path, str] | None = None,
    vouched: str = "",
) -> VerifiedState | None:
    """Back up (or reuse the backup `unchanged.reusable` found), migrate, verify; on any
    failure undo and leave a failure record. What was verified (None: nothing applied).
    `vouched`: the check before writing was left to one within the interval (`_vouched`)."""
    db = settings.db
    taken = None
    wants_backup = settings.backup == "always" or (settings.backup == "on-change" and p.writes)
    beside = None
    if wants_backup and insp.size > 0:
        from preflight.storage import backup

        if p.writes and src.atomic and not reused:  # copied while the run goes on, not before
            beside = backup.Beside(db, settings.backup_dir, vouched, settings.lock_timeout)
    if wants_backup and insp.size > 0 and beside is None:
        with step("backup") as info:
            if reused:
                taken = reused[0]
                info["what"] = f"reused {taken} (database unchanged since {reused[1]})"
            else:
                reason = "pre-migrate" if p.writes else "always"
                taken = backup.take(db, settings.backup_dir, reason, vouched=vouched)
                info["what"] = f"{taken.stat().st_size / (1 << 20):.1f} MiB"
                info["tail"] = f" -> {taken}"
    if not p.writes:
        return None
    old_rows = beside.join if beside else taken  # what a loss is read from, once it is whole
    progress: dict[str, Any] = {"running": [], "committed": False, "old_rows": old_rows}
    marked = not src.atomic and taken is not None
    if marked:
        # A tool commits as it goes: killed in the middle, the next start must know to put
        # this backup back before anything else (resume_interrupted).
        _save_record(settings, _record(src.fingerprint, IN_PROGRESS, None, taken, False, 12))
    try:
        with sqlite_temp_folder(db):
            baseline = src.apply(settings, p, Run(db, "migrate", progress, beside))
            taken = beside.join() if beside else taken
            done = verify(settings, src, db, p, baseline, checked=beside is not None)
        if marked:
            _save_record(settings, None)  # the run finished: no failure, nothing to say
        _accepted_nothing(settings, progress)
        return done
    except HistoryMoved:
        raise  # rolled back before anything ran: nothing to undo (and a fresh file is theirs)
    except BaseException as error:
        exc = error
        if signals.received() and not isinstance(exc, Interrupted):
            exc = signals.swallowed()  # e.g. raised inside SQLite calling a Python function
        if isinstance(exc, KeyboardInterrupt):
            exc = Interrupted("interrupted", "start again")
        committed = progress["committed"]
        if beside is not None:
            taken = beside.join()  # its own failure (exit 6, 7, 8) is the start's
        failed = exc.message if isinstance(exc, PreflightError) else f"{type(exc).__name__}: {exc}"
        # An interruption, a full disk or another process's lock says nothing against this
        # migration set: once undone, the next start may try the same files again.
        verdict = not isinstance(exc, TRANSIENT)
        record = _record(src.fingerprint, failed, progress.get("failing"), taken, False)
        if isinstance(exc, LossRefused):
            record = replace(record, loss=exc.targets)
        if committed or verdict:
            _save_record(settings, record)  # before the restore: a crash during it leaves it
        try:
            how = undo(settings, insp, taken, committed)
        except (RestoreFailed, OSError) as restore_error:
            _save_record(settings, replace(record, exit_code=RestoreFailed.code))
            why = restore_error
            if not isinstance(why, RestoreFailed):
                why = RestoreFailed(f"the restore failed: {why}", f"restore {taken} by hand")
            raise RestoreFailed(f"{failed}; and then {why.message}", why.hint) from error
        if verdict and vouched:
            _corrupt_before(settings, failed, how, error)
        if verdict:
            _save_record(settings, replace(record, restored=True))
        elif committed or marked:
            _save_record(settings, None)
        if isinstance(exc, TRANSIENT):
            raise type(exc)(f"{failed}; {how}", exc.hint or "start again") from error
        if isinstance(exc, LossRefused):
            raise LossRefused(f"{failed}; {how}", exc.hint, exc.targets) from error
        raise MigrationFailed(
            f"{failed}; {how}",
            "fix the migration and ship a new image (the next start with "
            "these files refuses with exit 11)",
        ) from error


def _corrupt_before(settings: Settings, failed: str, how: str, error: BaseException) -> None:
    """After a failed start that skipped the full check before writing: the state it
    started from, put back, gets that check now. Corrupt: exit 6 naming the database, not
    the migrations (no failure record), and the cache no longer vouches for this file."""
    try:
        check_before_writing(settings.db)
    except (LockTimeout, OSError, sqlite3.OperationalError):
        return  # cannot tell now: the start's own error stands
    except DatabaseUnusable as bad:
        _save_record(settings, None)
        settings.cache_path.unlink(missing_ok=True)
        also = "" if failed.startswith("verification: quick_check") else f" ({failed})"
        raise DatabaseUnusable(
            f"{bad.message}; it was so before this start, whose check before writing relied "
            f"on the one recorded within PREFLIGHT_INTEGRITY; the migration failed on it{also}; "
            f"{how}",
            "the newest pre-migrate backup holds this same state: 'preflight status' lists "
            "the backups, 'preflight restore BACKUP' puts back one taken before the damage",
        ) from error


def _accepted_nothing(settings: Settings, progress: dict[str, Any]) -> None:
    """PREFLIGHT_ACCEPT_LOSS left set after the start it was meant for is said, not kept quiet."""
    if not settings.accept_loss:
        return
    from preflight.live import loss

    used = [e for e in progress.get("loss", ()) if e.accepted == loss.VARIABLE]
    idle = [
        targets.show(g)
        for g in settings.accept_loss
        if not any(targets.covers((g,), e.table, e.column) for e in used)
    ]
    if idle:
        log.warning(
            "accept-loss: %s accepted nothing in %s this start; unset it",
            loss.VARIABLE,
            ", ".join(idle),
        )


def verify(
    settings: Settings,
    src: Source,
    db: Path,
    p: Plan,
    fk_baseline: foreignkeys.Before | None = None,
    label: str = "verify",
    checked: bool = False,
) -> VerifiedState:
    """After migrating: the database records the head, its schema equals the head's (a fresh
    build of files is it by construction), quick_check passes (`checked`: it passed before
    COMMIT, `backup.Beside`), no new foreign-key violation, smoke exits 0. Returns what it
    proved, for the cache."""
    with step(label) as info:
        with closing(connect(db, settings.lock_timeout)) as conn:
            recorded = src.check_recorded(conn, p)
            verified = cache.schema_hash(conn)
            found: list[drift.Difference] = []
            errors: list[drift.Difference] = []
            if p.expected_head is not None:  # a fresh build of files has nothing to compare
                from preflight.schema import drift

                found = drift.diff(p.expected_head, src.compared(schema.snapshot(conn)))
                errors = drift.errors(found, settings.strict)
            diffs, _ = accepted_part(errors, p.accepted)
            extras = tuple(d.message() for d in found if d.kind == "extra" and not settings.strict)
            if diffs:
                raise MigrationFailed(
                    f"verification: schema differs from the head of the plan ({p.head}): "
                    f"{diffs[0].message()} (+{len(diffs) - 1} more)",
                    "the migrations behave differently on this data; fix them",
                )
            result = "ok" if checked else quick_check(conn)
            if result != "ok":
                raise MigrationFailed(f"verification: quick_check: {result[:200]}", "")
            new = foreignkeys.introduced(fk_baseline or Counter(), foreignkeys.violations(conn))
            if new:
                raise MigrationFailed(
                    f"verification: the migrations left {foreignkeys.summary(new)}",
                    "fix the data or the migrations",
                )
        info["what"] = (
            "schema built from empty" if p.expected_head is None else "schema at head"
        ) + ", quick_check ok, foreign keys ok"
        if settings.smoke:
            smoke(settings, db)
            info["what"] += ", smoke ok"
    return VerifiedState(verified, extras, recorded)


def smoke(settings: Settings, db: Path) -> None:
    """Run PREFLIGHT_SMOKE against `db`; MigrationFailed unless it exits 0 in time."""
    import os

    from preflight.core import proc  # subprocess: only for a smoke command

    done = proc.run(
        settings.smoke or "true",
        env=dict(os.environ, PREFLIGHT_DB=str(db)),
        timeout=settings.smoke_timeout,
        limit=4096,
    )
    if done.code is None:
        raise MigrationFailed(
            f"verification: smoke command did not finish within "
            f"{settings.smoke_timeout:g} s (PREFLIGHT_SMOKE_TIMEOUT), killed: {_last(done.text)}",
            "fix the smoke command, or raise PREFLIGHT_SMOKE_TIMEOUT",
        )
    if done.code != 0:
        raise MigrationFailed(
            f"verification: smoke command exited {done.code}: {_last(done.text)}",
            "fix the migrations or PREFLIGHT_SMOKE",
        )


def _last(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:200]


def undo(settings: Settings, insp: Inspection, taken: Path | None, committed: bool) -> str:
    """Put the database back as inspected. Returns how; raises RestoreFailed."""
    from preflight.storage import backup, holders  # a start that succeeds needs neither

    db = settings.db
    if taken is None and insp.size == 0:
        # Connecting created the file even if nothing was committed: remove it.
        for suffix in ("", *SIDECARS):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if insp.existed:
            db.touch(0o600)
        fsync_dir(db.parent)
        return "removed what was created; the database is as it was (fresh)"
    if not committed:
        return "rolled back; the database was not changed"
    if taken is None:
        raise RestoreFailed(
            "the migrations were committed and there is no backup (PREFLIGHT_BACKUP=never)",
            "restore your own backup by hand",
        )
    found = holders.others(db)
    if found:  # opened since the check before writing: their writes would be lost
        raise RestoreFailed(
            f"{db} was not put back: it is in use by {found[0].describe()} "
            f"(a restore would lose what it wrote); the backup is {taken}",
            f"stop it, then 'preflight restore {taken}' and 'preflight clear-failure'",
        )
    with step("restore") as info, signals.deferred():  # a restore is not stopped half-way
        backup.restore(taken, db)
        info["what"], info["tail"] = "restored and verified", f" <- {taken}"
    return f"the database was restored from {taken} and verified"
