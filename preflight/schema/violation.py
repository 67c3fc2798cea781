"""One row `PRAGMA foreign_key_check` reports, with the referencing values: built only once
there is one (`foreignkeys.violations`), so a clean start never creates the class."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Violation:
    table: str
    rowid: int | None  # None in a WITHOUT ROWID table
    parent: str
    columns: tuple[str, ...]
    values: tuple[object, ...] | None  # the referencing values (None: the row was not found)
    primary_key: tuple[tuple[str, object], ...] | None = None  # a WITHOUT ROWID row's

    def message(self) -> str:
        """e.g. 'comments rowid 7 (post_id=42) -> posts'."""
        if self.rowid is not None:
            where = f"rowid {self.rowid}"
        elif self.primary_key is not None:
            where = "row " + ", ".join(f"{c}={v!r}" for c, v in self.primary_key)
        else:
            where = "a WITHOUT ROWID row"
        if self.values is not None:
            where += " (" + ", ".join(f"{c}={v!r}" for c, v in zip(self.columns, self.values)) + ")"
        return f"{self.table} {where} -> {self.parent}"

    def identity(self) -> object:
        if self.rowid is not None:
            return self.rowid
        return None if self.primary_key is None else tuple(v for _, v in self.primary_key)

    def as_dict(self) -> dict[str, object]:
        found = asdict(self)
        key = found.pop("primary_key")
        return found if key is None else {**found, "primary_key": dict(key)}
