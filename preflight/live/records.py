"""What the guard reads back from its own tables and files: a row of the history, a kept down
step, the failure record. Built only when there is one to read: `history` and `downgrade`
import this where they read, so a start with none of them (a fresh build) never creates these
classes (creating a frozen dataclass costs ~0.7 ms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Applied:
    """One row of _preflight_history."""

    version: int
    name: str
    sha256: str
    applied_at: str
    duration_ms: float
    how: str


@dataclass(frozen=True)
class Stored:
    """One row of `_preflight_down`: the down step of the migration applied as `name`."""

    version: int
    name: str
    migration_sha256: str  # the migration's, as in the history: the step belongs to it
    sha256: str  # of `sql`
    sql: str

    def fits(self, a: Applied) -> bool:
        """This step undoes exactly the migration the history records."""
        return (self.version, self.name, self.migration_sha256) == (a.version, a.name, a.sha256)


@dataclass(frozen=True)
class FailureRecord:
    """`app.db.preflight-failure.json`: a start that failed, and whether it was undone."""

    fingerprint: str
    failed_at: str
    exit_code: int
    reason: str
    migration: str | None
    backup: str | None
    restored: bool
    loss: tuple[str, ...] = ()  # a refused loss: TABLE or TABLE.COLUMN (PREFLIGHT_ACCEPT_LOSS)
