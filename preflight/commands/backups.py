"""`preflight backup` and `preflight restore`: a verified backup now, and putting one back;
apart from the other operator commands, so as not to import the pipeline's modules."""

from __future__ import annotations

import logging
from pathlib import Path

from preflight.commands.results import BackupTaken, Restored
from preflight.core import signals
from preflight.core.errors import DatabaseUnusable, EnvironmentProblem, PreflightError, UsageError
from preflight.fast.facts import check_environment
from preflight.live.database import assert_not_busy, inspect
from preflight.storage import backup, catalog, holders
from preflight.storage.config import Settings
from preflight.storage.steps import locked, step

log = logging.getLogger("preflight")


def take_backup(settings: Settings) -> BackupTaken:
    """`preflight backup`: a verified backup now, then prune."""
    check_environment(settings.db, settings.backup_dir, writes=True)
    with locked(settings, "backup"):
        if not settings.db.exists() or settings.db.stat().st_size == 0:
            raise DatabaseUnusable(
                f"{settings.db} does not exist or is empty: nothing to back up",
                "check PREFLIGHT_DB",
            )
        # Refuses what is not a readable SQLite database; backup.take runs quick_check on
        # it beside the copy (exit 6 if corrupt), so it is not read twice here.
        inspect(settings.db, quick_check=False)
        with step("backup") as info:
            taken = backup.take(settings.db, settings.backup_dir, "manual")
            info["what"] = f"{taken.stat().st_size / (1 << 20):.1f} MiB"
            info["tail"] = f" -> {taken}"
        for removed in catalog.prune(settings.backup_dir, settings.db, settings.keep_backups):
            log.info("prune: removed %s", removed)
    return BackupTaken(backup=str(taken))


def _choose(settings: Settings, name: str | None, version: int | None) -> Path:
    backups = catalog.list_backups(settings.backup_dir, settings.db)
    if version is not None:
        at = [b for b in backups if b.version == version]
        if not at:
            held = sorted({b.version for b in backups if b.version is not None})
            raise UsageError(
                f"no backup of {settings.db.name} at version {version} in "
                f"{settings.backup_dir} (backups hold: "
                f"{', '.join(map(str, held)) or 'none'})",
                "list them with 'preflight status'",
            )
        return at[-1].path
    if name is None:
        if not backups:
            raise UsageError(
                f"no backups of {settings.db.name} in {settings.backup_dir}",
                "name a backup file: preflight restore PATH",
            )
        return backups[-1].path
    for candidate in (Path(name), settings.backup_dir / name):
        if candidate.is_file():
            chosen = candidate.resolve()
            record = catalog.record_of(chosen)
            if record is not None and record.get("database") != str(settings.db.resolve()):
                log.warning(
                    "restore: %s is a backup of %s, not of %s (named explicitly, so restoring it)",
                    chosen.name,
                    record.get("database"),
                    settings.db,
                )
            return chosen
    raise UsageError(
        f"backup {name} not found (looked in . and {settings.backup_dir})",
        "list them with 'preflight status'",
    )


def restore(
    settings: Settings, name: str | None, version: int | None = None, force: bool = False
) -> Restored:
    """`preflight restore [BACKUP | --version N]`: back up the current state first, then
    restore. Refused (exit 8) while another process has the database open, unless `force`:
    they would go on writing into the replaced file."""
    if name is not None and version is not None:
        raise UsageError("name a backup or a version, not both", "preflight restore --version N")
    check_environment(settings.db, settings.backup_dir, writes=True)
    with locked(settings, "restore"), holders.exclusive_running(settings.db) as no_app:
        chosen = _choose(settings, name, version)
        problem = backup.backup_problem(chosen)
        if problem:  # refused before anything changes (exit 6), not half-way (exit 10)
            raise DatabaseUnusable(problem, "choose another backup")
        # Before any SQLite connection of ours: checking closes a descriptor on the file.
        holders.refuse_if_open(settings.db, no_app, force)
        assert_not_busy(settings.db, settings.lock_timeout)
        needed, free = chosen.stat().st_size + (1 << 20), backup.free_bytes(settings.db.parent)
        if free < needed:  # the copy goes beside the database before anything is replaced
            raise EnvironmentProblem(
                f"{settings.db.parent} has {free >> 10} KiB free, restoring "
                f"{chosen.name} needs {needed >> 10} KiB",
                f"free space on {settings.db.parent}, then restore again",
            )
        saved = None
        try:
            with step("restore") as info, signals.deferred():  # not stopped half-way
                # The current state is kept in the backup folder right before the rename:
                # a hard link (free), else a verified copy, else its raw files.
                kept = backup.restore(chosen, settings.db, keep_in=settings.backup_dir)
                saved = str(kept) if kept else None
                info["what"], info["tail"] = "restored and verified", f" <- {chosen}"
        except PreflightError as exc:
            return Restored(pre_restore_backup=saved, error=exc)
        if catalog.read_identity(settings.db) is None:
            # Nothing was here to back up (a new volume): it continues the backup's lineage.
            record = catalog.record_of(chosen)
            if record is not None and record.get("database") == str(settings.db.resolve()):
                catalog.ensure_identity(settings.db, settings.backup_dir, record["database_id"])
        if settings.failure_path.exists():
            log.info(
                "failure record still present; 'preflight clear-failure' lets the same "
                "migration set try again"
            )
    return Restored(restored=str(chosen), pre_restore_backup=saved)
