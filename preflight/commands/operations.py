"""Operator commands beside the start: check and status (they only read, on a private
snapshot), stamp, clear-failure, prepare (under the lock, validating first)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preflight.commands.guard import (
    given_tables,
    inspect_cached,
    load,
    plan_of,
    refuse_if_failed,
    verify,
)
from preflight.commands.results import Assessment, Cleared, Prepared, Stamped, State
from preflight.core.errors import (
    DatabaseUnusable,
    DriftError,
    EnvironmentProblem,
    LossRefused,
    MigrationFailed,
    PreflightError,
    Refused,
    UsageError,
)
from preflight.core.files import private_folder
from preflight.fast.facts import LOSS, check_environment
from preflight.live import history, loss
from preflight.live.database import assert_not_busy, connect, inspect, live_state
from preflight.schema import drift, foreignkeys
from preflight.sources import downgrade
from preflight.sources.source import Run, Stamp
from preflight.storage import backup, catalog
from preflight.storage.config import Settings
from preflight.storage.steps import locked, step

if TYPE_CHECKING:
    from preflight.schema.violation import Violation
    from preflight.sources.source import Source

log = logging.getLogger("preflight")


def assess(settings: Settings, command: str) -> Assessment:
    """`check` and `status`: everything a start would decide, on a private snapshot (`check`
    runs the pending migrations on it). Code 0 (at head) or 3 (pending); once the facts
    before the inspection are known, errors come back as the result's error, beside them."""
    check_environment(settings.db, None, writes=False)
    src = load(settings, readonly=True)
    record = history.read_failure(settings.failure_path)
    replica = None
    if settings.litestream_config is not None:
        from preflight.storage import litestream  # the replica's newest position

        replica = litestream.position(settings)
        log.info("%s: litestream: %s", command, litestream.describe(replica))
    known = Assessment(
        src.name,
        src.names,
        catalog.identity(settings.db, settings.backup_dir),
        tuple(b.summary() for b in catalog.list_backups(settings.backup_dir, settings.db)),
        dict(record.__dict__) if record else None,
        litestream=replica,
    )
    try:
        return _assess(settings, command, src, known)
    except PreflightError as exc:
        return replace(known, migrations=src.names, error=exc)


def _assess(settings: Settings, command: str, src: Source, known: Assessment) -> Assessment:
    rehearse = command == "check"
    refusal: Refused | None = None
    try:
        refuse_if_failed(settings, src.fingerprint)
    except Refused as exc:
        refusal = exc
    # Never beside the database: no fallback folder (exit 7 naming TMPDIR if none is usable).
    with private_folder("preflight-check-") as tmp:
        try:
            snap = backup.snapshot(settings.db, tmp) or tmp / settings.db.name
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot copy {settings.db} to a private folder {tmp}: {exc.strerror or exc}",
                "set TMPDIR to a writable folder with room for a copy of the database",
            ) from None
        insp, trusted = inspect_cached(settings, src, snap, settings.db)
        rec = insp.recorded
        drift_text, adopt_known = "none", True
        if rehearse or insp.trusted:
            p = plan_of(settings, src, insp, rec)
        else:
            p, unchecked = src.status_plan(settings, insp, rec)
            if unchecked is not None:
                drift_text, adopt_known = unchecked, insp.applied is not None
        names = src.names  # a tool's revisions are known once its scratch build ran
        note = _absent(settings, insp.fresh, len(names))
        if note:
            log.info("%s: %s", command, note)
        if insp.trusted and trusted:
            for warning in trusted.warnings:
                log.warning("extra: %s", warning)
        for d in insp.accepted:
            log.info("status: accepted by stamp --force: %s", d.message())
        found, last = _read_copy(snap, src.name, Path(f"{settings.db}{LOSS}"))
        if last:
            log.info(
                "%s: the last run that migrated lost: %s",
                command,
                "; ".join(f"{e['table']}: {e['count']} {loss.WHAT[str(e['kind'])]}" for e in last),
            )
        state = State(
            fresh=insp.fresh,
            database_exists=settings.db.exists(),
            note=note,
            recorded=rec,
            head=names[-1] if names else None,
            applied=src.applied(insp, rec),
            drift=drift_text,
            adopt=p.adopt if adopt_known else None,
            pending=p.pending,
            warnings=tuple(trusted.warnings) if insp.trusted and trusted else p.warnings,
            accepted_differences=tuple(d.message() for d in insp.accepted),
            foreign_key_violation_count=len(found),
            foreign_key_violations=tuple(v.as_dict() for v in found[:100]),
            undo=p.undo,
            undoable=downgrade.undoable(insp),
            last_run_loss=tuple(last),
        )
        result = replace(
            known, migrations=names, state=state, code=3 if p.writes or not adopt_known else 0
        )
        if found:
            log.warning(
                "foreign keys: %s, already in the database (a migrating start warns; "
                "--strict refuses)",
                foreignkeys.summary(found),
            )
        if not rehearse:
            _summarize(result)
        if refusal is not None:
            return replace(result, error=refusal)
        if found and settings.strict:
            return replace(
                result,
                error=DriftError(
                    f"{settings.db} has {foreignkeys.summary(found)} (--strict)",
                    "delete or fix the orphan rows, or run without --strict",
                ),
            )
        given_tables(settings, snap)
        if rehearse and p.writes:
            with step("rehearse") as info:
                start = time.perf_counter()
                before = live_state(settings.db)
                # The rows a loss took are read from a copy of the database as it is now,
                # made only if the rehearsal shows rows gone (the snapshot is rehearsed on).
                progress: dict[str, Any] = {"old_rows": _copy_once(settings.db, tmp)}
                try:
                    baseline = src.apply(settings, p, Run(snap, "rehearse", progress))
                    if live_state(settings.db) != before:
                        raise UsageError(
                            f"the migrations did not write the database they were given "
                            f"({settings.db} changed during the rehearsal on a private copy)",
                            "make the app's migration tool honour PREFLIGHT_DATABASE_URL "
                            "(README, the tool's section)",
                        )
                    verify(settings, src, snap, p, baseline, label="rehearse")
                except MigrationFailed as exc:
                    text = (
                        f"rehearsal on a private copy: {exc.message}; the database was not touched"
                    )
                    failed = (
                        LossRefused(text, exc.hint, exc.targets)
                        if isinstance(exc, LossRefused)
                        else MigrationFailed(text, exc.hint)
                    )
                    failed.__cause__ = exc
                    return replace(result, error=failed)
                result = replace(
                    result,
                    rehearsal_ms=round((time.perf_counter() - start) * 1000, 1),
                    rehearsal_loss=tuple(loss.as_json(e) for e in progress.get("loss", ())),
                )
                info["what"] = (
                    f"{len(p.undo)} down step(s)" if p.undo else f"{len(p.pending)} migration(s)"
                ) + " apply cleanly to a private copy; the database was not touched"
        elif rehearse and not note:
            log.info(
                "check: at head (%s): a start would change nothing",
                f"{len(state.applied)} applied, last {names[-1]}" if names else "no migrations",
            )
    return result


def _copy_once(db: Path, folder: Path) -> Callable[[], Path | None]:
    """A private copy of `db` as it is now, made on the first call only."""

    @cache
    def copy() -> Path | None:
        (folder / "before").mkdir()
        return backup.snapshot(db, folder / "before") or None

    return copy


def _read_copy(
    snap: Path, source: str, saved: Path
) -> tuple[list[Violation], list[dict[str, object]]]:
    """The private copy's foreign-key violations and what the last run that migrated
    recorded it destroyed (none without a database)."""
    if not snap.exists() or snap.stat().st_size == 0:
        return [], []
    conn = connect(snap, 5.0)
    try:
        return foreignkeys.violations(conn), loss.last_run(conn, source, saved)
    finally:
        conn.close()


def _absent(settings: Settings, fresh: bool, migrations: int) -> str | None:
    """A sentence when there is no database: a wrong path or volume reads like data loss
    ('0 applied, 5 pending') otherwise."""
    if not fresh:
        return None
    what = "no database" if not settings.db.exists() else "an empty database file"
    first = "restore it from the Litestream replica, if one exists, else " * bool(
        settings.litestream_config
    )
    return (
        f"{what} at {settings.db}: a start would {first}create a fresh one ({migrations} "
        f"migration(s)); if you expected data here, check PREFLIGHT_DB and the volume "
        f"mounted at {settings.db.parent}"
    )


def _summarize(result: Assessment) -> None:
    assert result.state is not None
    applied, adopt = result.state.applied, result.state.adopt
    log.info(
        "status: %d applied%s, %s to adopt, %d pending",
        len(applied),
        f" (last {applied[-1]['name']})" if applied else "",
        "unknown (drift not checked)" if adopt is None else len(adopt),
        len(result.state.pending),
    )
    if result.state.undo:
        log.info("status: a start would undo %s (a downgrade)", ", ".join(result.state.undo))
    if result.tool == "files" and applied:
        log.info(
            "status: an older image can undo %s",
            ", ".join(result.state.undoable) + " (newest first) with PREFLIGHT_DOWNGRADE=apply"
            if result.state.undoable
            else "nothing (no down step stored for the newest applied migration)",
        )
    log.info("status: %d backup(s)", len(result.backups))
    for b in result.backups:
        at = {0: "no migration", None: "unreadable"}.get(
            b["version"], f"version {b['version']} ({b['migration']})"
        )
        log.info(
            "status: backup %s %s, %s, %.1f MiB, %s",
            b["taken_at"],
            b["reason"],
            at,
            b["bytes"] / (1 << 20),
            b["path"],
        )
    record = result.failure_record
    log.info(
        "status: failure record: %s",
        f"{record['failed_at']}: {record['reason']}" if record else "none",
    )


def stamp(settings: Settings, version: int | str, force: bool) -> Stamped:
    """`preflight stamp VERSION`: record VERSION as applied without running anything, when
    the live schema matches what the migrations up to it produce (or `force`)."""
    check_environment(settings.db, settings.backups, writes=True)
    src = load(settings)
    with locked(settings, "stamp"):
        insp = inspect(settings.db, source=src.name)
        if not insp.existed or insp.size == 0:
            raise DatabaseUnusable(
                f"{settings.db} does not exist or is empty: nothing to stamp",
                "run 'preflight migrate' to build a fresh database",
            )
        expected = src.stamp_target(settings, insp, str(version), force)
        diffs = drift.errors(drift.diff(expected, src.compared(insp.live_schema)), settings.strict)
        if diffs and not force:
            raise DriftError(
                f"{settings.db} does not match the schema at {version} "
                f"({len(diffs)} difference(s)): {diffs[0].message()}",
                "stamp the version it is at, or pass --force if you are sure",
                details=(f"drift: {d.message()}" for d in diffs),
            )
        for d in diffs:
            log.warning(
                "stamp --force: accepting (recorded; later starts accept exactly this): %s",
                d.message(),
            )
        assert_not_busy(settings.db, settings.lock_timeout)
        taken = None
        if settings.backup != "never" or not src.atomic:  # a tool's stamp is undone from it
            with step("backup") as info:
                taken = backup.take(settings.db, settings.backup_dir, "pre-migrate")
                info["what"], info["tail"] = "before stamp", f" -> {taken}"
        done = src.record_stamp(settings, insp, Stamp(str(version), tuple(diffs), taken))
        log.info("stamp: %s", done)
    return Stamped(version, tuple(d.message() for d in diffs))


def clear_failure(settings: Settings) -> Cleared:
    """`preflight clear-failure`: let the same migration set try again."""
    with locked(settings, "clear-failure"):
        record = history.read_failure(settings.failure_path)
        cleared = history.clear_failure(settings.failure_path)
        log.info(
            "failure record: %s",
            f"cleared ({record.reason})" if cleared and record else "there was none",
        )
    return Cleared(dict(record.__dict__) if record else None)


def prepare(settings: Settings) -> Prepared:
    """`preflight prepare` (a `RUN` step of the image build): a tool's expected schemas,
    built once into the image, so that no start pays for the scratch build."""
    if settings.tool == "files":
        log.info("prepare: nothing to build for --tool files (the replay runs in memory)")
        return Prepared(None)
    from preflight.sources import toolscratch
    from preflight.sources.toolsource import ToolSource

    src = ToolSource.load(settings)
    with step("prepare") as info:
        path = toolscratch.prepare(settings, src.tool, src.light)
        info["what"], info["tail"] = "expected schemas built", f" -> {path}"
    return Prepared(str(path))
