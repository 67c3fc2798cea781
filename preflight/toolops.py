"""The commands with a migration tool (`--tool alembic`): run/migrate, check, status, stamp.

`backup`, `restore` and `clear-failure` act on the database file and are the same for
every tool (`operations`); `init` writes the guard's own migration files and has no
meaning with a tool.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from . import backup, catalog, errors, history, toolrun, tools, toolscratch
from .config import Settings
from .database import check_environment, inspect
from .errors import EnvironmentProblem, MigrationFailed, Refused, UsageError
from .files import private_folder
from .pipeline import locked, refuse_if_failed, step

log = logging.getLogger("preflight")


def dispatch(args: argparse.Namespace, settings: Settings, report: dict[str, Any]) -> int:
    command = args.command
    report["tool"] = settings.tool
    if command == "run":
        argv = list(args.cmd)
        if argv[:1] == ["--"]:
            argv = argv[1:]
        toolrun.migrate(settings, "run", argv)
        report["exec"] = argv
        return errors.OK
    if command == "migrate":
        toolrun.migrate(settings, "migrate")
        return errors.OK
    if command in ("check", "status"):
        return assess(settings, report, rehearse=command == "check")
    if command == "stamp":
        stamp(settings, str(args.version), args.force, report)
        return errors.OK
    raise UsageError(
        f"'preflight {command}' is for --tool files",
        f"{settings.tool} keeps its own history; see 'preflight status'",
    )


def assess(settings: Settings, report: dict[str, Any], rehearse: bool) -> int:
    """`check` / `status`: what a start would do, on a private snapshot; writes nothing
    beside the database. With `rehearse` the tool runs on the snapshot. 0 at head, 3 pending."""
    tool = tools.get(settings.tool)
    check_environment(settings.db, None, writes=False)
    fp, count = toolrun.fingerprint(settings, tool)
    report["files"] = count
    report["backups"] = [
        b.summary() for b in catalog.list_backups(settings.backup_dir, settings.db)
    ]
    record = history.read_failure(settings.failure_path)
    report["failure_record"] = record.__dict__ if record else None
    refusal = None
    try:
        refuse_if_failed(settings, fp)
    except Refused as exc:
        refusal = exc
    with private_folder("preflight-check-") as tmp:
        try:
            snap = backup.snapshot(settings.db, tmp) or tmp / settings.db.name
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot copy {settings.db} to a private folder {tmp}: {exc.strerror or exc}",
                "set TMPDIR to a writable folder with room for a copy of the database",
            ) from None
        rec = toolscratch.recorded(snap, tool)
        insp = inspect(snap, settings.db)
        report["recorded"] = list(rec) if rec is not None else None
        report["fresh"] = insp.fresh
        exp = toolscratch.expected(settings, tool, fp, settings.db, save=False, rec=rec)
        report["head"] = exp.head()
        p = toolrun.decide(settings, tool, insp, rec, exp)
        report["adopt"] = p.adopt
        report["pending"] = p.pending
        report["warnings"] = list(p.warnings)
        report["drift"] = "none"
        log.info(
            "%s: %s at %s, head %s%s",
            report["command"],
            tool.name,
            toolscratch.describe(rec, tool)
            if rec
            else ("nothing (fresh)" if insp.fresh else "base"),
            p.head,
            f", adopt at {p.adopt}" if p.adopt else "",
        )
        if refusal is not None:
            raise refusal
        if rehearse and p.writes:
            before = toolscratch.live_state(settings.db)
            with step("rehearse") as info:
                start = time.perf_counter()
                try:
                    toolrun.apply(settings, tool, snap, p, "rehearse")
                    if toolscratch.live_state(settings.db) != before:
                        raise toolscratch.wrote_elsewhere(tool, f"{settings.db} changed")
                    toolrun.verify(settings, tool, snap, exp, toolrun.fk_baseline(snap), "rehearse")
                except MigrationFailed as exc:
                    raise MigrationFailed(
                        f"rehearsal on a private copy: {exc.message}; the database was not touched",
                        exc.hint,
                    ) from exc
                report["rehearsal_ms"] = round((time.perf_counter() - start) * 1000, 1)
                info["what"] = (
                    f"{tool.name} migrates a private copy to {p.head}; the database was not touched"
                )
        elif rehearse:
            log.info("check: at head %s: a start would change nothing", p.head)
    return 3 if p.writes else 0


def stamp(settings: Settings, version: str, force: bool, report: dict[str, Any]) -> None:
    """`stamp REV`: record REV without running it (the tool's own stamp), under the lock,
    after a verified backup; refused (exit 4) unless the schema is REV's, or --force."""
    tool = tools.get(settings.tool)
    if tool.stamp_cmd is None and tool.stamp_steps is None:
        raise UsageError(f"{tool.name} has no stamp", "migrate instead")
    check_environment(settings.db, settings.backup_dir, writes=True)
    fp, _ = toolrun.fingerprint(settings, tool)
    with locked(settings, "stamp"):
        exp = toolscratch.expected(settings, tool, fp, settings.db)
        if version not in exp.revisions:
            raise UsageError(
                f"{version} is not a revision of this migration set ({', '.join(exp.revisions)})",
                "give one of them",
            )
        insp = inspect(settings.db)
        if insp.size == 0:
            raise UsageError(f"{settings.db} is empty; nothing to stamp", "start the app instead")
        from . import drift

        toolscratch.require(exp, version, pending=False)
        live = toolscratch.without(insp.live, tool.table) if insp.live else None
        diffs = (
            drift.errors(drift.diff(exp.schema_at(version, tool.table), live), settings.strict)
            if live
            else []
        )
        if diffs and not force:
            raise errors.DriftError(
                f"{settings.db} is not at {version}'s schema: {diffs[0].message()} (+{len(diffs) - 1} more)",
                "stamp the revision it is at, or pass --force",
            )
        taken = backup.take(settings.db, settings.backup_dir, "pre-stamp")
        steps = tools.stamp_commands(
            tool, exp.revisions, version, tools.command(tool, settings.tool_cmd)
        )
        code, out = 0, ""
        for argv in steps:
            code, out = tools.run(settings.app_dir, argv, settings.db)
            if code != 0:
                break
        now = toolscratch.recorded(settings.db, tool)
        if code != 0 or not now or toolscratch.state(exp, now, tool) != version:
            backup.restore(taken, settings.db)
            raise MigrationFailed(
                f"'{' '.join(argv)}' failed: {tools.last_line(out)}; restored from {taken}",
                f"make the app honour PREFLIGHT_DATABASE_URL: add {tool.fix_line}",
            )
        report["stamped"] = version
        log.info("stamp: %s recorded at %s (backup %s)", tool.name, version, taken)
