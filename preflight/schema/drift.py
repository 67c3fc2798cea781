"""Drift: the differences between an expected and a live schema, object by object."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from preflight.schema.model import Schema
from preflight.schema.objects import Index, Table
from preflight.schema.sqltext import fold

Key = tuple[str, ...]  # ("table", t) | ("column", t, c) | (index|view|trigger, name)


@dataclass(frozen=True)
class Difference:
    """One object that differs; `extra` ones are warnings unless --strict."""

    object: str
    kind: str  # missing | different | unexpected | extra
    expected: str | None = None
    actual: str | None = None
    origin: str | None = None  # the migration that made the expected object (with_origins)
    key: Key | None = field(default=None, compare=False)  # the object, for with_origins

    def message(self) -> str:
        origin = f" (from {self.origin})" if self.origin else ""
        if self.kind == "missing":
            return f"{self.object}: expected {self.expected}{origin}, missing in database"
        if self.kind == "different":
            return f"{self.object}: expected {self.expected}{origin}, database has {self.actual}"
        return f"{self.object}: database has {self.actual}, which no migration made"


def _table_diffs(exp: Table, act: Table) -> list[Difference]:
    out: list[Difference] = []
    t = fold(exp.name)
    exp_cols = {fold(c.name): c for c in exp.columns}
    act_cols = {fold(c.name): c for c in act.columns}
    for key, col in exp_cols.items():
        where, what, k = f"{t}.{col.name}", f"column {col.describe()}", ("column", t, key)
        if key not in act_cols:
            out.append(Difference(where, "missing", what, key=k))
        elif act_cols[key] != col and act_cols[key].describe() != col.describe():
            out.append(
                Difference(where, "different", what, f"column {act_cols[key].describe()}", key=k)
            )
    for key, col in act_cols.items():
        if key not in exp_cols:
            what = f"column {col.describe()}"
            out.append(Difference(f"{t}.{col.name}", "unexpected", actual=what))
    exp_order = [k for k in exp_cols if k in act_cols]
    act_order = [k for k in act_cols if k in exp_cols]
    if exp_order != act_order:
        order = "columns in order " + ", ".join(exp_order)
        out.append(Difference(t, "different", order, ", ".join(act_order), key=("table", t)))
    for prop in sorted(set(exp.options) - set(act.options)):
        out.append(Difference(t, "missing", prop[1], key=("table", t)))
    for prop in sorted(set(act.options) - set(exp.options)):
        out.append(Difference(t, "unexpected", actual=prop[1]))
    return out


def _same(exp: Table | Index | str, act: Table | Index | str) -> bool:
    """Equal meaning; the same SQL text answers without comparing structures."""
    if isinstance(exp, str) or isinstance(act, str):
        return exp == act
    if exp.sql and exp.sql == act.sql and not getattr(exp, "refs", ()):
        return True  # a table whose foreign keys name no parent columns depends on the parent
    return exp == act


def _text(obj: Index | str) -> str:
    return obj.describe() if isinstance(obj, Index) else obj


def diff(expected: Schema, actual: Schema) -> list[Difference]:
    out: list[Difference] = []
    for key, table in expected.tables.items():
        what = f"table ({len(table.columns)} columns)"
        if key not in actual.tables:
            out.append(Difference(f"table {table.name}", "missing", what, key=("table", key)))
        elif not _same(table, actual.tables[key]):
            out += _table_diffs(table, actual.tables[key])
    for key, table in actual.tables.items():
        if key not in expected.tables:
            what = f"table ({len(table.columns)} columns)"
            out.append(Difference(f"table {table.name}", "extra", actual=what))
    for kind, exp_map, act_map in (
        ("index", expected.indexes, actual.indexes),
        ("view", expected.views, actual.views),
        ("trigger", expected.triggers, actual.triggers),
    ):
        for key, exp in exp_map.items():
            act = act_map.get(key)
            if act is None:
                out.append(Difference(f"{kind} {key}", "missing", _text(exp), key=(kind, key)))
            elif not _same(exp, act):
                what = f"{kind} {key}"
                out.append(Difference(what, "different", _text(exp), _text(act), key=(kind, key)))
        for key, act in act_map.items():
            if key not in exp_map:
                out.append(Difference(f"{kind} {key}", "extra", actual=_text(act)))
    return out


def errors(diffs: list[Difference], strict: bool) -> list[Difference]:
    """The differences that are drift: everything but extra objects, which --strict adds."""
    return [d for d in diffs if strict or d.kind != "extra"]


def _definition(schema: Schema, key: Key) -> object:
    """What `schema` holds for the object a difference names (None: not there)."""
    if key[0] in ("table", "column"):
        table = schema.tables.get(key[1])
        if table is None or key[0] == "table":
            return table and (tuple(fold(c.name) for c in table.columns), table.options)
        return next((c.describe() for c in table.columns if fold(c.name) == key[2]), None)
    if key[0] == "index":
        return schema.indexes.get(key[1])
    return (schema.views if key[0] == "view" else schema.triggers).get(key[1])


def with_origins(diffs: list[Difference], steps: list[tuple[str, Schema]]) -> list[Difference]:
    """Name, for each difference, the migration that last changed the expected object (a table
    object shared with the previous step, from replay's memo, is not looked inside)."""
    keys = {d.key for d in diffs if d.key}
    last: dict[Key, str] = {}
    previous: dict[Key, tuple[object, object]] = {}
    for migration, schema in steps:  # (its name, the schema after it)
        for key in keys:
            tabled = key[0] in ("table", "column")
            holder = schema.tables.get(key[1]) if tabled else _definition(schema, key)
            seen = previous.get(key)
            if seen is not None and seen[0] is holder and holder is not None:
                continue
            value = _definition(schema, key) if tabled else holder
            if (seen is None or seen[1] != value) and value is not None:
                last[key] = migration
            previous[key] = (holder, value)
    return [replace(d, origin=last.get(d.key) if d.key else None) for d in diffs]
