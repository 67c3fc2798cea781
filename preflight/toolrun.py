"""`run` / `migrate` with a migration tool (`--tool alembic`): the guard around the app's tool.

Lock, inspect, drift (the live schema against what the tool makes on scratch at the
recorded version), verified backup, the tool on the live database, verify (the recorded
version is the head, no leftovers of a half-finished run, the schema equals the head built
on scratch, quick_check, foreign keys, smoke); on any failure the backup is restored and a
failure record written (exit 9). A start whose files and recorded version match the last
verified start proves it from the cache without starting the tool (`toolquick`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import (
    backup,
    cache,
    catalog,
    drift,
    foreignkeys,
    history,
    holders,
    schema,
    signals,
    toolfiles,
    tools,
    toolscratch,
)
from .config import Settings
from .database import Inspection, assert_not_busy, check_environment, inspect
from .errors import (
    DriftError,
    HistoryError,
    Interrupted,
    MigrationFailed,
    PreflightError,
    RestoreFailed,
)
from .facts import Unproven as HandOver
from .facts import check_due, key, set_fingerprint
from .pipeline import locked, refuse_if_failed, smoke, step
from .sqltext import fold
from .tools import Tool
from .toolscratch import Expected, recorded

log = logging.getLogger("preflight")


@dataclass(frozen=True)
class ToolPlan:
    """What a tool start does: adopt an untracked database at `adopt`, then run the tool."""

    recorded: tuple[str, ...] | None
    head: str
    adopt: str | None  # stamp this revision first (an untracked database that matches it)
    pending: bool
    warnings: tuple[str, ...] = ()
    stamps: tuple[tuple[str, ...], ...] = ()  # the commands recording `adopt`

    @property
    def writes(self) -> bool:
        return self.pending or self.adopt is not None


def fingerprint(settings: Settings, tool: Tool) -> tuple[str, int]:
    """The hash of the tool's migration files under --app-dir, and how many there are."""
    app = str(settings.app_dir)
    try:
        paths = tool.files(app, str(settings.db), settings.tool_cmd or "")
    except HandOver as exc:
        raise HistoryError(
            f"no {tool.name} migrations at {exc} (--app-dir {app})",
            "set PREFLIGHT_APP_DIR to the app's folder (where alembic.ini or manage.py is)",
        ) from None
    return toolfiles.fingerprint(app, paths), len(paths)


def cache_key(tool: Tool, fp: str, rec: tuple[str, ...] | None, strict: bool) -> str:
    """The verified-state cache key of a tool start: its files, the recorded version."""
    mark = "<none>" if rec is None else ",".join(rec)
    return key(
        set_fingerprint([("<tool>", tool.name), ("<files>", fp), ("<recorded>", mark)]), strict
    )


def leftovers(s: schema.Schema, tool: Tool) -> list[str]:
    return sorted(t.name for t in s.tables.values() if fold(t.name).startswith(tool.leftovers))


def decide(
    settings: Settings, tool: Tool, insp: Inspection, rec: tuple[str, ...] | None, exp: Expected
) -> ToolPlan:
    """Check the live schema against the recorded version; what to run. Reads only."""
    head = exp.head()
    assert insp.live is not None
    live = toolscratch.without(insp.live, tool.table)
    left = leftovers(live, tool)
    if left:
        raise DriftError(
            f"{insp.path} holds {', '.join(left)}: a {tool.name} run stopped half-way "
            f"(recorded {', '.join(rec or ()) or 'nothing'})",
            "restore the backup taken before it ('preflight restore'), then start again",
        )
    if insp.fresh:
        return ToolPlan(rec, head, None, True)
    if rec is None:
        return _adopt(settings, tool, insp.path, live, exp)
    if len(rec) > 1 and not tool.cumulative:
        raise HistoryError(
            f"{insp.path} records {len(rec)} {tool.name} heads ({', '.join(rec)})",
            "merge the heads; the guard migrates one line of history",
        )
    at = toolscratch.state(exp, rec, tool)
    if at is not None:
        toolscratch.require(exp, at, pending=False)
    diffs = drift.diff(exp.schema_at(at, tool.table), live)
    errors = drift.errors(diffs, settings.strict)
    if errors:
        error = DriftError(
            f"{insp.path} differs from what {tool.name} makes at {at or 'base'}: "
            f"{errors[0].message()} (+{len(errors) - 1} more)",
            "undo the manual change, or restore a backup",
        )
        error.details = tuple(f"drift: {d.message()}" for d in errors[:20])
        raise error
    warnings = tuple(d.message() for d in diffs if d.kind == "extra")
    for w in warnings:
        log.warning("extra: %s", w)
    if at != head:
        toolscratch.require(exp, head, pending=True)
    return ToolPlan(rec, head, None, at != head, warnings)


def _adopt(
    settings: Settings, tool: Tool, db: Path, live: schema.Schema, exp: Expected
) -> ToolPlan:
    """An untracked database (create_all(), no version table): the newest revision it matches."""
    for rev in reversed(exp.revisions):
        if rev not in exp.schemas:
            continue
        if not drift.errors(drift.diff(exp.schema_at(rev, tool.table), live), settings.strict):
            log.info("adopt: %s has no %s; its schema is revision %s", db, tool.table, rev)
            if rev != exp.head():
                toolscratch.require(exp, exp.head(), pending=True)
            steps = tools.stamp_commands(
                tool, exp.revisions, rev, tools.command(tool, settings.tool_cmd)
            )
            return ToolPlan(
                None, exp.head(), rev, rev != exp.head(), stamps=tuple(map(tuple, steps))
            )
    errors = drift.errors(drift.diff(exp.schema_at(exp.head(), tool.table), live), settings.strict)
    error = DriftError(
        f"{db} has tables but no {tool.table}, and its schema matches no revision "
        f"({len(errors)} difference(s) from the head {exp.head()})",
        f"bring it to a revision's schema, or record one by hand ('preflight stamp REV': "
        f"{' '.join(tools.stamp_commands(tool, exp.revisions, exp.head(), list(tool.command))[-1])})",
    )
    error.details = tuple(f"drift: {d.message()}" for d in errors[:20])
    raise error


def apply(settings: Settings, tool: Tool, db: Path, p: ToolPlan, label: str) -> None:
    """Run the tool on `db`: stamp (adoption) then the migrate command. Raises MigrationFailed."""
    runs: list[list[str]] = []
    if p.adopt is not None:
        if not p.stamps:
            raise MigrationFailed(f"{tool.name} cannot stamp an untracked database", "")
        runs.extend(list(argv) for argv in p.stamps)
    if p.pending:
        runs.append(tools.command(tool, settings.tool_cmd))
    for argv in runs:
        with step(label) as info:
            code, out = tools.run(settings.app_dir, argv, db)
            if signals.received():
                raise signals.swallowed()
            if code == 127:
                raise MigrationFailed(f"{argv[0]}: command not found", "install the tool")
            if code != 0:
                raise MigrationFailed(
                    f"'{' '.join(argv)}' exited {code}: {tools.last_line(out)}",
                    "fix the revision",
                )
            info["what"] = " ".join(argv)


def verify(
    settings: Settings,
    tool: Tool,
    db: Path,
    exp: Expected,
    baseline: Counter[tuple[object, ...]],
    label: str,
) -> str:
    """After the tool: at head, no leftovers, schema = head on scratch, quick_check, foreign
    keys, smoke. Returns the verified schema hash (for the cache)."""
    with step(label) as info:
        now = recorded(db, tool)
        if (
            not now
            or set(now) - set(exp.revisions)
            or toolscratch.state(exp, now, tool) != exp.head()
        ):
            raise MigrationFailed(
                f"verification: {tool.name} recorded {', '.join(now or ())[:200] or 'nothing'}, "
                f"not the head {exp.head()}",
                f"make the app honour PREFLIGHT_DATABASE_URL: add {tool.fix_line}",
            )
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            live = toolscratch.without(schema.snapshot(conn), tool.table)
            left = leftovers(live, tool)
            if left:
                raise MigrationFailed(f"verification: {', '.join(left)} left behind", "")
            diffs = drift.errors(
                drift.diff(exp.schema_at(exp.head(), tool.table), live), settings.strict
            )
            if diffs:
                raise MigrationFailed(
                    f"verification: schema differs from {tool.name}'s head on scratch: "
                    f"{diffs[0].message()} (+{len(diffs) - 1} more)",
                    "the revisions behave differently on this data; fix them",
                )
            result = "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))
            if result != "ok":
                raise MigrationFailed(f"verification: quick_check: {result[:200]}", "")
            new = foreignkeys.introduced(baseline, foreignkeys.violations(conn))
            if new:
                raise MigrationFailed(
                    f"verification: the revisions left {foreignkeys.summary(new)}",
                    "fix the data or the revisions",
                )
            verified = cache.schema_hash(conn)
        finally:
            conn.close()
        info["what"] = (
            f"at head {exp.head()}, schema as on scratch, quick_check ok, foreign keys ok"
        )
        if settings.smoke:
            code, last = smoke(settings.smoke, db, settings.smoke_timeout)
            if code != 0:
                raise MigrationFailed(f"verification: smoke command exited {code}: {last}", "")
            info["what"] += ", smoke ok"
    return verified


def fk_baseline(db: Path) -> Counter[tuple[object, ...]]:
    if not db.exists() or db.stat().st_size == 0:
        return Counter()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return foreignkeys.baseline(foreignkeys.violations(conn))
    finally:
        conn.close()


def migrate(settings: Settings, command: str, argv: list[str] | None = None) -> None:
    """Everything `run` does before exec, and all `migrate` does, for a tool."""
    tool = tools.get(settings.tool)
    check_environment(
        settings.db,
        settings.backup_dir if settings.backup != "never" else None,
        writes=True,
        command=argv,
    )
    with step("migrations") as info:
        fp, count = fingerprint(settings, tool)
        info["what"] = f"{count} {tool.name} file(s) in {settings.app_dir}"
    with locked(settings, command):
        if argv is not None:
            holders.share_running(settings.db)
        refuse_if_failed(settings, fp)
        _locked(settings, tool, fp)
        if history.clear_failure(settings.failure_path):
            log.info("failure record: cleared (this migration set succeeded)")
        if settings.backup != "never":
            for removed in catalog.prune(settings.backup_dir, settings.db, settings.keep_backups):
                log.info("prune: removed %s", removed)


def _locked(settings: Settings, tool: Tool, fp: str) -> None:
    db = settings.db
    with step("inspect") as info:
        rec = recorded(db, tool)
        trusted = cache.read(settings.cache_path, cache_key(tool, fp, rec, settings.strict))
        now = int(time.time())
        due = check_due(settings.integrity, trusted.checked_at if trusted else 0, now)
        insp = inspect(db, trust=trusted.schema_hash if trusted else None, quick_check=due)
        info["what"] = (
            "fresh database"
            if insp.fresh
            else f"{tool.name} at {toolscratch.describe(rec, tool)}"
            + (", schema as verified before (cache)" if insp.live is None else "")
        )
    if insp.live is None and trusted:  # files and version as verified: nothing to do
        log.info("plan: 0 pending, history and schema verified (cache)")
        for w in trusted.warnings:
            log.warning("extra: %s", w)
        if insp.checked and isinstance(settings.integrity, int):
            cache.write(
                settings.cache_path,
                cache.Verified(trusted.key, trusted.schema_hash, trusted.warnings, now),
            )
        return
    exp = toolscratch.expected(settings, tool, fp, db, rec=rec)
    fp = exp.fingerprint  # with the folders the tool reported (the next start's key)
    with step("plan") as info:
        try:
            p = decide(settings, tool, insp, rec, exp)
        except MigrationFailed as exc:  # a pending revision fails on an empty database
            _record(settings, fp, exc.message, None, restored=True)
            raise
        info["what"] = (f"adopt at {p.adopt}, " if p.adopt else "") + (
            f"{tool.name} {toolscratch.describe(rec, tool) if rec else 'base'} -> {p.head}"
            if p.pending
            else "0 pending"
        )
    checked = insp.checked
    if p.writes and insp.size > 0 and not checked:
        from .database import check_before_writing

        with step("integrity") as info:
            check_before_writing(db)
            info["what"] = "quick_check ok before writing"
        checked = True
    verified = insp.schema_hash
    if p.writes or (settings.backup == "always" and insp.size > 0):
        assert_not_busy(db, settings.lock_timeout)
        verified = execute(settings, tool, insp, p, exp, fp) or verified
    final = recorded(db, tool)
    cache.write(
        settings.cache_path,
        cache.Verified(
            cache_key(tool, fp, final, settings.strict),
            verified,
            p.warnings,
            now if checked or p.writes else (trusted.checked_at if trusted else 0),
        ),
    )


def _record(
    settings: Settings,
    fp: str,
    reason: str,
    taken: Path | None,
    restored: bool,
    code: int = MigrationFailed.code,
) -> None:
    record = history.FailureRecord(
        fp, history.now(), code, reason, None, str(taken) if taken else None, restored
    )
    try:
        history.write_failure(settings.failure_path, record)
    except OSError as exc:
        log.warning("failure record: cannot write %s: %s", settings.failure_path, exc.strerror)


def execute(
    settings: Settings, tool: Tool, insp: Inspection, p: ToolPlan, exp: Expected, fp: str
) -> str | None:
    """Back up, run the tool, verify; on any failure restore and record it. Writes."""
    db = settings.db
    taken = None
    if settings.backup != "never" and insp.size > 0:
        with step("backup") as info:
            taken = backup.take(db, settings.backup_dir, "pre-migrate" if p.writes else "always")
            info["what"], info["tail"] = (
                f"{taken.stat().st_size / (1 << 20):.1f} MiB",
                f" -> {taken}",
            )
    if not p.writes:
        return None
    baseline = fk_baseline(db)
    try:
        apply(settings, tool, db, p, "migrate")
        return verify(settings, tool, db, exp, baseline, "verify")
    except BaseException as error:
        interrupted = isinstance(error, (Interrupted, KeyboardInterrupt)) or signals.received()
        failed = (
            error.message
            if isinstance(error, PreflightError)
            else f"{type(error).__name__}: {error}"
        )
        if not interrupted:
            _record(settings, fp, failed, taken, restored=False)
        try:
            how = _undo(settings, insp, taken)
        except RestoreFailed as restore_error:
            _record(settings, fp, failed, taken, False, RestoreFailed.code)
            raise RestoreFailed(
                f"{failed}; and then {restore_error.message}", restore_error.hint
            ) from error
        except OSError as exc:
            _record(settings, fp, failed, taken, False, RestoreFailed.code)
            raise RestoreFailed(
                f"{failed}; and then the restore failed: {exc}", f"restore {taken} by hand"
            ) from error
        if interrupted:
            raise Interrupted(f"{failed}; {how}", "start again") from error
        _record(settings, fp, failed, taken, restored=True)
        raise MigrationFailed(
            f"{failed}; {how}",
            "fix the revision and ship a new image (the next start with these files refuses with exit 11)",
        ) from error


def _undo(settings: Settings, insp: Inspection, taken: Path | None) -> str:
    db = settings.db
    if taken is None and insp.size == 0:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if insp.existed:
            db.touch(0o600)
        backup.fsync_dir(db.parent)
        return "removed what was created; the database is as it was (fresh)"
    if taken is None:
        raise RestoreFailed(
            "the tool ran and there is no backup (PREFLIGHT_BACKUP=never)",
            "restore your own backup by hand",
        )
    with step("restore") as info, signals.deferred():
        backup.restore(taken, db)
        info["what"], info["tail"] = "restored and verified", f" <- {taken}"
    return f"the database was restored from {taken} and verified"
