"""An app's own migration tool as a source (`--tool alembic`, `--tool django`): the expected
schema at each version is what the tool makes on scratch (`toolscratch`); the tool commits as
it goes (`atomic` is False), so the start undoes a failed run from the backup."""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from preflight import schema
from preflight.core import proc, signals
from preflight.core.errors import DriftError, HistoryError, MigrationFailed, UsageError
from preflight.core.targets import Target
from preflight.fast import toolfiles
from preflight.fast.facts import Unproven, connect_ro, recorded_in
from preflight.live.database import Inspection, recorded
from preflight.live.ledger import Policy
from preflight.live.toolrun import ToolRun
from preflight.schema import drift, foreignkeys
from preflight.schema.sqltext import fold
from preflight.sources import declarations, tools, toolscratch
from preflight.sources.source import Plan, Run, Stamp
from preflight.sources.tools import Tool
from preflight.sources.toolscratch import Expected
from preflight.storage import backup
from preflight.storage.config import Settings
from preflight.storage.steps import step

if TYPE_CHECKING:
    import sqlite3

    from preflight.sources.source import Json

log = logging.getLogger("preflight")


class Memo:
    """The one scratch build of a run, kept beside the frozen source once it is made."""

    expected: Expected | None = None


@dataclass(frozen=True)
class ToolSource:
    tool: Tool
    light: str  # the fingerprint of the files known before the scratch build (toolfiles)
    settings: Settings
    save: bool = True  # write the scratch cache beside the database (not for check/status)
    atomic: bool = False
    memo: Memo = field(default_factory=Memo, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def fingerprint(self) -> str:
        """As the scratch build reported the files (Django's folders outside the app) once it
        ran, else as the light facts know them."""
        got = self.memo.expected
        return got.fingerprint if got is not None else self.light

    @classmethod
    def load(cls, settings: Settings, save: bool = True, quiet: bool = False) -> ToolSource:
        tool = tools.TOOLS[settings.tool]
        app = str(settings.app_dir)
        with step("migrations", quiet) as info:
            try:
                paths = tool.files(app, str(settings.db), settings.tool_cmd or "")
            except Unproven as exc:
                raise HistoryError(
                    f"no {tool.name} migrations at {exc} (--app-dir {app})",
                    "set PREFLIGHT_APP_DIR to the app's folder (where alembic.ini or manage.py is)",
                ) from None
            fp = toolfiles.fingerprint(app, paths)
            info["what"] = f"{len(paths)} {tool.name} file(s) in {app}"
        return cls(tool, fp, settings, save)

    def expected(self, rec: tuple[str, ...] | None) -> Expected:
        """Built at most once per run."""
        got = self.memo.expected
        if got is None or (self.tool.cumulative and toolscratch.unbuilt(got, rec)):
            got = toolscratch.expected(self.settings, self.tool, self.light, self.save, rec)
            self.memo.expected = got
        return got

    @property
    def names(self) -> tuple[str, ...]:
        got = self.memo.expected
        return got.revisions if got else ()

    def recorded(self, db: Path) -> tuple[str, ...] | None:
        return recorded(db, self.name)

    def compared(self, live: schema.Schema) -> schema.Schema:
        return toolscratch.without(live, self.tool.table)

    def describe(self, rec: tuple[str, ...] | None) -> str:
        return f"{self.tool.name} at {toolscratch.describe(rec, self.tool)}"

    def applied(self, insp: Inspection, rec: tuple[str, ...] | None) -> tuple[Json, ...]:
        return tuple({"name": r} for r in rec or ())

    def plan(self, settings: Settings, insp: Inspection, rec: tuple[str, ...] | None) -> Plan:
        tool = self.tool
        exp = self.expected(rec)
        head = exp.head()
        if insp.fresh:  # a revision failing on scratch: exit 9 before the live file is touched
            toolscratch.require(exp, head, pending=True)
            return self._plan(exp, None, (), exp.revisions)
        assert insp.live is not None
        live = toolscratch.without(insp.live, tool.table)
        left = leftovers(live, tool)
        if left:
            raise DriftError(
                f"{insp.path} holds {', '.join(left)}: a {tool.name} run stopped half-way "
                f"(recorded {', '.join(rec or ()) or 'nothing'})",
                "restore the backup taken before it ('preflight restore'), then start again",
            )
        if rec is None:
            return self._adopt(settings, insp.path, live, exp)
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
            raise DriftError(
                f"{insp.path} differs from what {tool.name} makes at "
                f"{_short(at) if at else 'base'}: {errors[0].message()} (+{len(errors) - 1} more)",
                "undo the manual change, or restore a backup",
                details=(f"drift: {d.message()}" for d in errors[:20]),
            )
        warnings = tuple(d.message() for d in diffs if d.kind == "extra")
        for w in warnings:
            log.warning("extra: %s", w)
        if at != head:
            toolscratch.require(exp, head, pending=True)
        return self._plan(exp, None, (), _after(exp, rec, tool), warnings)

    def status_plan(
        self, settings: Settings, insp: Inspection, rec: tuple[str, ...] | None
    ) -> tuple[Plan, str | None]:
        return self.plan(settings, insp, rec), None

    def _plan(
        self,
        exp: Expected,
        adopt: str | None,
        stamps: tuple[tuple[str, ...], ...],
        pending: tuple[str, ...],
        warnings: tuple[str, ...] = (),
    ) -> Plan:
        head = exp.head()
        return Plan(
            exp.fingerprint,
            (adopt,) if adopt else (),
            pending,
            exp.schema_at(head, self.tool.table) if head in exp.schemas else None,
            head,
            warnings,
            steps=(stamps, self._declared(pending)),  # for apply
        )

    def _declared(self, pending: tuple[str, ...]) -> dict[str, tuple[Target, ...]]:
        if not pending:
            return {}
        settings = self.settings
        paths = self.tool.files(str(settings.app_dir), str(settings.db), settings.tool_cmd or "")
        return declarations.in_files(paths, pending)

    def _adopt(self, settings: Settings, db: Path, live: schema.Schema, exp: Expected) -> Plan:
        """An untracked database (create_all(), no version table): the newest revision it matches."""
        tool = self.tool
        for rev in reversed(exp.revisions):
            if rev not in exp.schemas:
                continue
            if not drift.errors(drift.diff(exp.schema_at(rev, tool.table), live), settings.strict):
                log.info("adopt: %s has no %s; its schema is revision %s", db, tool.table, rev)
                if rev != exp.head():
                    toolscratch.require(exp, exp.head(), pending=True)
                stamps = tools.stamp_commands(
                    tool, exp.revisions, rev, tools.command(tool, settings.tool_cmd)
                )
                done = exp.revisions[: exp.revisions.index(rev) + 1]
                return self._plan(
                    exp,
                    rev,
                    tuple(map(tuple, stamps)),
                    tuple(r for r in exp.revisions if r not in done),
                )
        errors = drift.errors(
            drift.diff(exp.schema_at(exp.head(), tool.table), live), settings.strict
        )
        hint = "bring it to a revision's schema, or record one by hand"
        if tool.stamp_cmd or tool.stamp_steps:
            last = tools.stamp_commands(tool, exp.revisions, exp.head(), list(tool.command))[-1]
            hint += f" ('preflight stamp REV': {' '.join(last)})"
        raise DriftError(
            f"{db} has tables but no {tool.table}, and its schema matches no revision "
            f"({len(errors)} difference(s) from the head {exp.head()})",
            hint,
            details=(f"drift: {d.message()}" for d in errors[:20]),
        )

    def apply(self, settings: Settings, p: Plan, run: Run) -> foreignkeys.Before:
        # The commands recording an adoption (then migrate, if anything is pending), and what
        # the pending migrations' files declare (`_plan`).
        stamps, declared = p.steps
        db, label, progress = (
            run.db,
            run.label,
            run.progress,
        )  # never a `beside`: it commits as it goes
        baseline: foreignkeys.Before = Counter()
        if db.exists() and db.stat().st_size > 0:
            with closing(connect_ro(db)) as conn:
                baseline = foreignkeys.baseline(foreignkeys.violations(conn))
        ledger = ToolRun(db, Policy.of(settings, label, progress), p.pending, declared)
        runs = [list(argv) for argv in stamps]
        if p.pending:
            runs.append(tools.command(self.tool, settings.tool_cmd))
        for argv in runs:
            progress["committed"] = True  # the tool commits as it goes
            with step(label) as info:
                code, out = tools.run(settings.app_dir, argv, db)
                if signals.received():
                    raise signals.swallowed()
                if code == 127:
                    raise MigrationFailed(f"{argv[0]}: command not found", "install the tool")
                if code != 0:
                    raise MigrationFailed(
                        f"'{' '.join(argv)}' exited {code}: {proc.meaningful_line(out)}",
                        "fix the revision",
                    )
                info["what"] = " ".join(argv)
        ledger.close(self.name, progress)  # what the run destroyed: reported, or refused
        return baseline

    def stamp_target(
        self, settings: Settings, insp: Inspection, version: str, force: bool
    ) -> schema.Schema:
        if self.tool.stamp_cmd is None and self.tool.stamp_steps is None:
            raise UsageError(f"{self.tool.name} has no stamp", "migrate instead")
        exp = self.expected(insp.recorded)
        if version not in exp.revisions:
            raise UsageError(
                f"{version} is not a revision of this migration set ({', '.join(exp.revisions)})",
                "give one of them",
            )
        toolscratch.require(exp, version, pending=False)
        return exp.schema_at(version, self.tool.table)

    def record_stamp(self, settings: Settings, insp: Inspection, stamp: Stamp) -> str:
        """The tool's own stamp; a failed one is undone from `taken`."""
        version, taken = stamp.version, stamp.taken
        tool, exp = self.tool, self.expected(insp.recorded)
        steps = tools.stamp_commands(
            tool, exp.revisions, version, tools.command(tool, settings.tool_cmd)
        )
        code, out, argv = 0, "", steps[-1]
        for argv in steps:
            code, out = tools.run(settings.app_dir, argv, settings.db)
            if code != 0:
                break
        now = self.recorded(settings.db)
        if code != 0 or not now or toolscratch.state(exp, now, tool) != version:
            where = "nothing was recorded"
            if taken is not None:
                backup.restore(taken, settings.db)
                where = f"restored from {taken}"
            raise MigrationFailed(
                f"'{' '.join(argv)}' failed: {proc.meaningful_line(out)}; {where}",
                f"make the app honour PREFLIGHT_DATABASE_URL: add {tool.fix_line}",
            )
        return f"{tool.name} recorded at {version}"

    def check_recorded(self, conn: sqlite3.Connection, p: Plan) -> tuple[str, ...] | None:
        tool = self.tool
        exp = self.expected(None)
        now = recorded_in(conn, self.name)
        if not now or set(now) - set(exp.revisions) or toolscratch.state(exp, now, tool) != p.head:
            raise MigrationFailed(
                f"verification: {tool.name} recorded "
                f"{toolscratch.describe(now, tool) if now else 'nothing'}, not the head of the "
                f"plan ({len(exp.revisions)} migrations, head {p.head})",
                f"make the app honour PREFLIGHT_DATABASE_URL: add {tool.fix_line}",
            )
        left = leftovers(self.compared(schema.snapshot(conn)), tool)
        if left:
            raise MigrationFailed(f"verification: {', '.join(left)} left behind", "")
        return now


def _after(exp: Expected, rec: tuple[str, ...], tool: Tool) -> tuple[str, ...]:
    if tool.cumulative:
        done = set(toolscratch.canonical(exp, rec))
        return tuple(r for r in exp.plan() if r not in done)
    if rec and rec[0] in exp.revisions:
        return exp.revisions[exp.revisions.index(rec[0]) + 1 :]
    return exp.revisions


def _short(at: str) -> str:
    return at if not at.startswith("{") else f"a set of {at.count(',') + 1} applied migrations"


def leftovers(s: schema.Schema, tool: Tool) -> list[str]:
    return sorted(t.name for t in s.tables.values() if fold(t.name).startswith(tool.leftovers))
