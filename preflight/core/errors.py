"""The one exception hierarchy: each subclass carries its exit code (README, "Exit codes";
`cli.main` alone turns them into exit codes) and a hint."""

from preflight.core import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

OK = 0
INTERNAL = 1
USAGE = 2
PENDING = 3
DRIFT = 4
HISTORY = 5
UNUSABLE = 6
ENVIRONMENT = 7
LOCK_TIMEOUT = 8
MIGRATION_FAILED = 9
RESTORE_FAILED = 10
REFUSED = 11
INTERRUPTED = 12
REPLICA = 13

EXIT_CODES: dict[int, str] = {
    OK: "ok",
    INTERNAL: "internal error",
    USAGE: "usage or configuration error",
    PENDING: "check: pending migrations would apply cleanly",
    DRIFT: "schema drift",
    HISTORY: "migration files do not match the history",
    UNUSABLE: "database unusable",
    ENVIRONMENT: "environment (permissions, read-only, disk space, command not found)",
    LOCK_TIMEOUT: "lock timeout",
    MIGRATION_FAILED: "a migration or the verification failed; the database was restored",
    RESTORE_FAILED: "the restore failed",
    REFUSED: "refused: the same migration set failed on a previous start",
    INTERRUPTED: "interrupted by SIGTERM or SIGINT; nothing was left half-done",
    REPLICA: "Litestream mode: the replica could not be restored; no database was created",
}


class PreflightError(Exception):
    """Base of every error the guard reports; `code` is the process exit code."""

    code = INTERNAL
    details: tuple[str, ...] = ()  # extra lines to log before the one-line error (drift)

    def __init__(self, message: str, hint: str = "", details: "Iterable[str]" = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = tuple(details)

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


# Each subclass means what its code's line in EXIT_CODES says.
class UsageError(PreflightError):
    code = USAGE


class DriftError(PreflightError):
    code = DRIFT


class HistoryError(PreflightError):
    code = HISTORY


class DatabaseUnusable(PreflightError):
    code = UNUSABLE
    RESTORE = "restore a backup with 'preflight restore'"

    @classmethod
    def failed_check(cls, db: object, result: str) -> "DatabaseUnusable":
        return cls(f"{db} fails PRAGMA quick_check: {result[:200]}", cls.RESTORE)


class EnvironmentProblem(PreflightError):
    code = ENVIRONMENT


class LockTimeout(PreflightError):
    code = LOCK_TIMEOUT


class MigrationFailed(PreflightError):
    code = MIGRATION_FAILED


class LossRefused(MigrationFailed):
    """Exit 9: the run destroyed data nothing declared; `targets` as PREFLIGHT_ACCEPT_LOSS
    names them."""

    def __init__(self, message: str, hint: str = "", targets: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.targets = targets


class DiskFull(MigrationFailed):
    """Exit 9: no space left while migrating; rolled back, and no failure record (retry)."""


class RestoreFailed(PreflightError):
    code = RESTORE_FAILED


class Refused(PreflightError):
    code = REFUSED


class Interrupted(PreflightError):
    code = INTERRUPTED


class ReplicaUnavailable(PreflightError):
    code = REPLICA


class HistoryMoved(LockTimeout):
    """Another guard changed the history between this one's plan and its write transaction
    (its lock file was deleted or replaced): nothing was run; plan again."""


# Failures that say nothing against the migrations: undone, no failure record (the next
# start may try the same set again). An I/O error from the disk (at COMMIT, typically) is
# not theirs either.
TRANSIENT = (Interrupted, DiskFull, LockTimeout, EnvironmentProblem)
