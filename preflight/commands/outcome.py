"""The base every command's result shares, and `Ready`: all a start (`run`, `migrate`) returns.
Apart from `results`: creating those classes at import was a fresh build's largest import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from preflight.core.errors import PreflightError

Json = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Result:
    """Base: the exit code when nothing failed, and the error it ended with otherwise."""

    code: int = 0
    error: PreflightError | None = None

    def report(self) -> Json:
        """The keys this command adds to the JSON report (beside command, database, exit_code):
        its fields but these two, tuples as lists, those that are None left out."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}
        return {k: v for k, v in out.items() if k not in ("code", "error") and v is not None}


@dataclass(frozen=True)
class Ready(Result):
    """`run`: the database is ready; exec this command. `migrate`: argv is empty."""

    argv: tuple[str, ...] = ()

    def report(self) -> Json:
        return {"exec": list(self.argv)} if self.argv else {}
