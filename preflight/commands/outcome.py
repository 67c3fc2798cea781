"""The base every command's result shares, and `Ready`: all a start (`run`, `migrate`) returns.
Apart from `results`: creating those classes at import was a fresh build's largest import."""

from __future__ import annotations

from dataclasses import dataclass, fields

from preflight.core import TYPE_CHECKING
from preflight.core.errors import PreflightError

if TYPE_CHECKING:
    from typing import Any

    Json = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Result:
    """Base: the exit code when nothing failed, and the error it ended with otherwise."""

    code: int = 0
    error: PreflightError | None = None

    def report(self) -> Json:
        """The keys this command adds to the JSON report (beside command, database, exit_code):
        its fields but these two, tuples as lists; one that defaults to None is left out
        while it is None (the others are always there)."""
        out: Json = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("code", "error") and (value is not None or f.default is not None):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Ready(Result):
    """`run`: the database is ready; exec this command. `migrate`: argv is empty."""

    argv: tuple[str, ...] = ()

    def report(self) -> Json:
        return {"exec": list(self.argv)} if self.argv else {}
