"""Drift: the differences between an expected and a live schema, object by object.

Each difference names one object (a table, `table.column`, an index, view or trigger)
and, once attributed with `with_origins`, the migration that made what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .migrations import Migration
from .schema import Index, Schema, Table


@dataclass(frozen=True)
class Difference:
    """One object that differs; `extra` ones are warnings unless --strict."""

    object: str
    kind: str  # missing | different | unexpected | extra
    expected: str | None = None
    actual: str | None = None
    origin: str | None = None  # the migration that made the expected object (with_origins)
    key: str | None = field(default=None, compare=False)  # the object, as definitions() names it

    def message(self) -> str:
        """One line, naming the object first: '<object>: expected ..., ...'."""
        origin = f" (from {self.origin})" if self.origin else ""
        if self.kind == "missing":
            return f"{self.object}: expected {self.expected}{origin}, missing in database"
        if self.kind == "different":
            return f"{self.object}: expected {self.expected}{origin}, database has {self.actual}"
        return f"{self.object}: database has {self.actual}, which no migration made"


def _table_diffs(exp: Table, act: Table) -> list[Difference]:
    out: list[Difference] = []
    t = exp.name.lower()
    exp_cols = {c.name.lower(): c for c in exp.columns}
    act_cols = {c.name.lower(): c for c in act.columns}
    for key, col in exp_cols.items():
        if key not in act_cols:
            out.append(Difference(f"{t}.{col.name}", "missing", f"column {col.describe()}",
                                  key=f"column {t}.{key}"))
        elif act_cols[key].describe() != col.describe():
            out.append(Difference(f"{t}.{col.name}", "different", f"column {col.describe()}",
                                  f"column {act_cols[key].describe()}", key=f"column {t}.{key}"))
    for key, col in act_cols.items():
        if key not in exp_cols:
            out.append(Difference(f"{t}.{col.name}", "unexpected", actual=f"column {col.describe()}"))
    exp_order = [k for k in exp_cols if k in act_cols]
    act_order = [k for k in act_cols if k in exp_cols]
    if exp_order != act_order:
        out.append(Difference(t, "different", "columns in order " + ", ".join(exp_order),
                              ", ".join(act_order), key=f"table {t}"))
    for prop in sorted(set(exp.options) - set(act.options)):
        out.append(Difference(t, "missing", f"{prop[1]}", key=f"table {t}"))
    for prop in sorted(set(act.options) - set(exp.options)):
        out.append(Difference(t, "unexpected", actual=f"{prop[1]}"))
    return out


def diff(expected: Schema, actual: Schema) -> list[Difference]:
    """Every difference between the expected and the live schema, object by object."""
    out: list[Difference] = []
    for key, table in expected.tables.items():
        if key not in actual.tables:
            out.append(Difference(f"table {table.name}", "missing",
                                  f"table ({len(table.columns)} columns)", key=f"table {key}"))
        else:
            out += _table_diffs(table, actual.tables[key])
    for key, table in actual.tables.items():
        if key not in expected.tables:
            out.append(Difference(f"table {table.name}", "extra",
                                  actual=f"table ({len(table.columns)} columns)"))
    for kind, exp_map, act_map in (("index", expected.indexes, actual.indexes),
                                   ("view", expected.views, actual.views),
                                   ("trigger", expected.triggers, actual.triggers)):
        for key, exp in exp_map.items():
            text = exp.describe() if isinstance(exp, Index) else exp
            if key not in act_map:
                out.append(Difference(f"{kind} {key}", "missing", text, key=f"{kind} {key}"))
            elif act_map[key] != exp:
                act = act_map[key]
                out.append(Difference(f"{kind} {key}", "different", text,
                                      act.describe() if isinstance(act, Index) else act,
                                      key=f"{kind} {key}"))
        for key, act in act_map.items():
            if key not in exp_map:
                text = act.describe() if isinstance(act, Index) else act
                out.append(Difference(f"{kind} {key}", "extra", actual=text))
    return out


def errors(diffs: list[Difference], strict: bool) -> list[Difference]:
    """The differences that are drift: everything but extra objects, which --strict adds."""
    return [d for d in diffs if strict or d.kind != "extra"]


def definitions(schema: Schema) -> dict[str, object]:
    """Every object keyed as Difference.origin names it, for finding where it came from."""
    defs: dict[str, object] = {}
    for key, table in schema.tables.items():
        defs[f"table {key}"] = (tuple(c.name.lower() for c in table.columns), table.options)
        for col in table.columns:
            defs[f"column {key}.{col.name.lower()}"] = col.describe()
    for kind, mapping in (("index", schema.indexes), ("view", schema.views),
                          ("trigger", schema.triggers)):
        for key, value in mapping.items():
            defs[f"{kind} {key}"] = value
    return defs


def with_origins(diffs: list[Difference], steps: list[tuple[Migration, Schema]]) -> list[Difference]:
    """Name, for each difference, the migration that last changed the expected object."""
    last: dict[str, str] = {}
    previous: dict[str, object] = {}
    for migration, schema in steps:
        current = definitions(schema)
        for key, value in current.items():
            if previous.get(key) != value:
                last[key] = migration.name
        previous = current
    return [Difference(d.object, d.kind, d.expected, d.actual, last.get(d.key or ""), d.key)
            for d in diffs]
