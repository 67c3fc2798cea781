"""What each operator command did, as data: `cli` turns a result into the JSON report, with
the error it may carry after gathering facts worth reporting (status refused by a record)."""

from __future__ import annotations

from dataclasses import dataclass

from preflight.commands.outcome import Result
from preflight.core import TYPE_CHECKING

if TYPE_CHECKING:
    from preflight.commands.outcome import Json


@dataclass(frozen=True)
class State:
    """What `check`/`status` found once the database was inspected and planned."""

    fresh: bool
    database_exists: bool
    note: str | None
    recorded: tuple[str, ...] | None  # the version as the database records it (None: no table)
    head: str | None  # the last migration of the set
    applied: tuple[Json, ...]
    drift: str
    adopt: tuple[str, ...] | None  # None: unknown (drift not checked)
    pending: tuple[str, ...]
    warnings: tuple[str, ...]
    accepted_differences: tuple[str, ...]
    foreign_key_violation_count: int
    foreign_key_violations: tuple[Json, ...]
    undo: tuple[str, ...] = ()  # a downgrade a start would run: names, newest first
    undoable: tuple[str, ...] = ()  # applied migrations an older image can undo, newest first
    last_run_loss: tuple[Json, ...] = ()  # what the last run that migrated destroyed (`loss`)


@dataclass(frozen=True)
class Assessment(Result):
    """`check` and `status`: the facts known before inspecting, then the state (if reached)."""

    tool: str  # "files" (the guard's own migration files), or the tool (--tool)
    migrations: tuple[str, ...]
    database_id: str | None
    backups: tuple[Json, ...]
    failure_record: Json | None
    state: State | None = None
    rehearsal_ms: float | None = None
    rehearsal_loss: tuple[Json, ...] | None = None  # check: what the rehearsed upgrade destroys
    litestream: Json | None = None  # the replica's newest position (Litestream mode)

    def report(self) -> Json:
        out = super().report()
        if self.state is not None:  # its fields are the report's own, tuples as lists
            state = vars(out.pop("state")).items()
            out.update({k: list(v) if isinstance(v, tuple) else v for k, v in state})
        return out


@dataclass(frozen=True)
class BackupTaken(Result):
    backup: str


@dataclass(frozen=True)
class Restored(Result):
    pre_restore_backup: str | None = None  # the current state saved first (None: nothing to save)
    restored: str | None = None


@dataclass(frozen=True)
class Stamped(Result):
    stamped: int | str  # the migration number, or a tool's revision
    accepted_differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prepared(Result):
    prepared: str | None  # the cache written into the image (None: nothing to prepare)


@dataclass(frozen=True)
class Cleared(Result):
    cleared: Json | None  # the record removed (None: there was none)


@dataclass(frozen=True)
class Initialized(Result):
    backup: str | None = None
    written: str | None = None
    adopted: str | None = None
