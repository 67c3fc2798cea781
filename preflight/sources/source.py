"""What varies between migration sources (`filesource`, `toolsource`), as one interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from preflight import schema
from preflight.core import TYPE_CHECKING
from preflight.live.database import Inspection
from preflight.schema import foreignkeys
from preflight.storage.config import Settings

if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Protocol

    from preflight.schema import drift

    Json = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What a start will do, decided from a read-only inspection, in every source's terms."""

    fingerprint: str  # of the migration set: the failure record and the cache key
    adopt: tuple[str, ...]  # recorded as applied without running (an untracked database)
    pending: tuple[str, ...]  # run, in this order
    expected_head: schema.Schema | None  # verify compares with it (None: fresh, or a cache hit)
    head: str | None  # the name of the last migration of the plan
    warnings: tuple[str, ...] = ()  # extra objects (errors with --strict)
    accepted: tuple[drift.Difference, ...] = ()  # by `stamp --force`
    steps: Any = None  # the source's own form, for its `apply` (files: the down steps)
    undo: tuple[str, ...] = ()  # a downgrade: applied migrations undone, newest first
    # The files' history the plan was made from: apply re-reads it inside its write
    # transaction and refuses to run anything if another guard changed it meanwhile.
    based_on: tuple[tuple[int, str], ...] | None = None

    @property
    def writes(self) -> bool:
        return bool(self.adopt or self.pending or self.undo)


@dataclass(frozen=True)
class Stamp:
    version: str
    diffs: tuple[drift.Difference, ...]  # what `--force` accepts
    taken: Path | None  # the verified backup taken just before (None: PREFLIGHT_BACKUP=never)


@dataclass(frozen=True)
class Run:
    """Where and how `apply` runs a plan: the file (the live database, or a rehearsal's
    copy), its step label, the state it shares with the caller, and what runs beside it."""

    db: Path
    label: str  # "migrate" on the live database, "rehearse" on a copy
    # "committed" turns True once the database may have changed; "old_rows": where the
    # loss ledger reads what a run destroyed.
    progress: dict[str, Any]
    beside: Beside | None = None  # only for an `atomic` source


# The interface, for the type checker (mypy --strict checks every source against it); at run
# time nothing asks for it, so a start does not import typing to build it.
if TYPE_CHECKING:

    class Beside(Protocol):
        """What runs beside an atomic `apply`'s transaction (`backup.Beside`)."""

        def begin(self, conn: sqlite3.Connection) -> None:
            """After BEGIN IMMEDIATE, before the first write."""

        def end(self, conn: sqlite3.Connection) -> None:
            """Before COMMIT; raising rolls the run back."""

    class Source(Protocol):
        """A migration source. `name` is 'files' or the tool's name (`--tool`)."""

        @property
        def name(self) -> str: ...

        @property
        def fingerprint(self) -> str: ...  # of the migration set

        @property
        def names(self) -> tuple[str, ...]: ...  # its migrations, in order

        @property
        def atomic(self) -> bool:
            """Apply runs in one transaction: killed or failed before COMMIT, nothing changed."""

        def recorded(self, db: Path) -> tuple[str, ...] | None:
            """The version the database records, as text rows (None: no version table)."""

        def plan(self, settings: Settings, insp: Inspection, rec: tuple[str, ...] | None) -> Plan:
            """Prove the state of a database the cache did not vouch for, and decide. Reads only."""

        def status_plan(
            self, settings: Settings, insp: Inspection, rec: tuple[str, ...] | None
        ) -> tuple[Plan, str | None]:
            """`plan` for `status`, which runs no migration code: (plan, why drift was not checked)."""

        def apply(self, settings: Settings, p: Plan, run: Run) -> foreignkeys.Before:
            """Run the plan on `run.db`; returns the foreign-key baseline (violations before it)."""

        def compared(self, live: schema.Schema) -> schema.Schema:
            """The live schema as compared with the expected one (without the source's table)."""

        def stamp_target(
            self, settings: Settings, insp: Inspection, version: str, force: bool
        ) -> schema.Schema:
            """The expected schema at `version`, which `stamp` would record (UsageError if none)."""

        def record_stamp(self, settings: Settings, insp: Inspection, stamp: Stamp) -> str:
            """Record `version` without running anything; returns what it did, for the log."""

        def check_recorded(self, conn: sqlite3.Connection, p: Plan) -> tuple[str, ...] | None:
            """After a run: the database records the head of the plan (MigrationFailed if
            not); what it records."""

        def applied(self, insp: Inspection, rec: tuple[str, ...] | None) -> tuple[Json, ...]:
            """The applied migrations for `status`, oldest first."""

        def describe(self, rec: tuple[str, ...] | None) -> str:
            """The recorded version for a log line."""
