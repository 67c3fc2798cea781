"""Property tests for preflight.schema: how a schema is built does not matter, what it is does.

Random schemas (tables with random columns and indexes) are built twice, in different
ways: statement order shuffled, trailing columns added by ALTER TABLE ADD COLUMN instead
of in CREATE TABLE, identifiers quoted and keywords in lower case. The two snapshots must
not differ. Then one random mutation on one side must show up, naming the mutated object.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from preflight import schema
from preflight.schema import drift

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

NAMES = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
]
TYPES = ["INTEGER", "TEXT", "REAL", "BLOB", "NUMERIC", "VARCHAR(20)", "DECIMAL(10, 2)", ""]
DEFAULTS = [None, "0", "-1", "1.5", "'x'", "''", "'it''s'"]
COLLATIONS = [None, None, "NOCASE", "RTRIM"]


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    notnull: bool
    default: str | None
    unique: bool
    collate: str | None = None

    @property
    def alterable(self) -> bool:
        """ALTER TABLE ADD COLUMN accepts it: no UNIQUE, and NOT NULL only with a default."""
        return not self.unique and (not self.notnull or self.default is not None)


@dataclass(frozen=True)
class Idx:
    name: str
    table: str
    columns: tuple[str, ...]
    desc: tuple[bool, ...]
    unique: bool


@dataclass(frozen=True)
class Tbl:
    name: str
    columns: tuple[Col, ...]
    alter_from: int  # columns[alter_from:] may be added by ALTER TABLE (all alterable)


@dataclass(frozen=True)
class Spec:
    tables: tuple[Tbl, ...]
    indexes: tuple[Idx, ...]


@st.composite
def columns(draw: st.DrawFn) -> tuple[Col, ...]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    out = []
    for name in names:
        default = draw(st.sampled_from(DEFAULTS))
        unique = draw(st.integers(0, 4)) == 0  # now and then a UNIQUE column
        out.append(
            Col(
                name,
                draw(st.sampled_from(TYPES)),
                draw(st.booleans()),
                default,
                unique,
                draw(st.sampled_from(COLLATIONS)),
            )
        )
    return tuple(out)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    count = draw(st.integers(1, 3))
    tables, indexes = [], []
    for t in range(count):
        name = f"tab{t}"
        cols = draw(columns())
        # the longest alterable suffix, then a random start within it
        first_alterable = len(cols)
        while first_alterable > 0 and cols[first_alterable - 1].alterable:
            first_alterable -= 1
        alter_from = draw(st.integers(first_alterable, len(cols)))
        tables.append(Tbl(name, cols, alter_from))
        all_cols = ["id"] + [c.name for c in cols]
        for n in range(draw(st.integers(0, 3))):
            on = draw(st.lists(st.sampled_from(all_cols), min_size=1, max_size=3, unique=True))
            desc = tuple(draw(st.booleans()) for _ in on)
            indexes.append(Idx(f"ix_{name}_{n}", name, tuple(on), desc, draw(st.booleans())))
    return Spec(tuple(tables), tuple(indexes))


# ---------------------------------------------------------------- building SQL


def ident(name: str, style: str) -> str:
    """An identifier spelled per `style`: plain, quoted, upper (case) or quoted-upper."""
    if "upper" in style:
        name = name.upper()
    return f'"{name}"' if "quoted" in style else name


def kw(text: str, lower: bool) -> str:
    return text.lower() if lower else text


def col_sql(c: Col, quoted: str, lower: bool) -> str:
    parts = [ident(c.name, quoted)]
    if c.type:
        parts.append(kw(c.type, lower))
    if c.notnull:
        parts.append(kw("NOT NULL", lower))
    if c.unique:
        parts.append(kw("UNIQUE", lower))
    if c.default is not None:
        parts.append(kw("DEFAULT", lower) + " " + c.default)
    if c.collate:
        parts.append(kw("COLLATE " + c.collate, lower))
    return " ".join(parts)


def create_table(t: Tbl, upto: int, quoted: str, lower: bool) -> str:
    cols = [ident("id", quoted) + " " + kw("INTEGER PRIMARY KEY", lower)]
    cols += [col_sql(c, quoted, lower) for c in t.columns[:upto]]
    sep = ",\n    " if lower else ", "
    return kw("CREATE TABLE ", lower) + ident(t.name, quoted) + " (" + sep.join(cols) + ")"


def create_index(i: Idx, quoted: str, lower: bool) -> str:
    on = ", ".join(
        ident(c, quoted) + (kw(" DESC", lower) if d else "") for c, d in zip(i.columns, i.desc)
    )
    unique = kw("UNIQUE ", lower) if i.unique else ""
    return (
        kw("CREATE ", lower)
        + unique
        + kw("INDEX ", lower)
        + ident(i.name, quoted)
        + kw(" ON ", lower)
        + ident(i.table, quoted)
        + "("
        + on
        + ")"
    )


def plain(spec: Spec) -> list[str]:
    """Every table whole in CREATE TABLE, then every index, in spec order."""
    return [create_table(t, len(t.columns), "plain", False) for t in spec.tables] + [
        create_index(i, "plain", False) for i in spec.indexes
    ]


def other_way(
    spec: Spec, table_order: list[int], index_order: list[int], quoted: str, lower: bool
) -> list[str]:
    """The same schema: shuffled, trailing columns by ALTER TABLE, different spelling."""
    stmts = []
    for n in table_order:
        t = spec.tables[n]
        stmts.append(create_table(t, t.alter_from, quoted, lower))
    for n in table_order:
        t = spec.tables[n]
        for c in t.columns[t.alter_from :]:
            stmts.append(
                kw("ALTER TABLE ", lower)
                + ident(t.name, quoted)
                + kw(" ADD COLUMN ", lower)
                + col_sql(c, quoted, lower)
            )
    stmts += [create_index(spec.indexes[n], quoted, lower) for n in index_order]
    return stmts


def build(stmts: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for stmt in stmts:
        conn.execute(stmt)
    return conn


def snap(conn: sqlite3.Connection) -> schema.Schema:
    return schema.snapshot(conn)


@st.composite
def two_ways(draw: st.DrawFn) -> tuple[Spec, list[str], list[str]]:
    spec = draw(specs())
    table_order = draw(st.permutations(range(len(spec.tables))))
    index_order = draw(st.permutations(range(len(spec.indexes))))
    quoted = draw(st.sampled_from(["plain", "quoted", "upper", "quoted-upper"]))
    lower = draw(st.booleans())
    return spec, plain(spec), other_way(spec, list(table_order), list(index_order), quoted, lower)


def describe(diffs: list[drift.Difference]) -> list[str]:
    return [d.message() for d in diffs]


# ---------------------------------------------------------------- properties


@SETTINGS
@given(two_ways())
def test_same_schema_built_two_ways_has_no_differences(
    case: tuple[Spec, list[str], list[str]],
) -> None:
    spec, one, two = case
    event(f"ALTER TABLE statements: {min(sum('ALTER' in x.upper() for x in two), 3)}+")
    a, b = build(one), build(two)
    try:
        diffs = drift.diff(snap(a), snap(b))
        assert diffs == [], (one, two, describe(diffs))
        assert drift.diff(snap(b), snap(a)) == []
        assert set(snap(a).tables) == {t.name for t in spec.tables}
        assert set(snap(a).indexes) == {i.name for i in spec.indexes}
    finally:
        a.close()
        b.close()


def mutations(spec: Spec) -> list[tuple]:
    """Every applicable mutation: (kind, table index, column index or index index)."""
    out: list[tuple] = []
    for t, table in enumerate(spec.tables):
        for c, col in enumerate(table.columns):
            out.append(("type", t, c))
            out.append(("rename", t, c))
            out.append(("collate", t, c))
            if col.notnull:
                out.append(("drop-not-null", t, c))
        out.append(("add-index", t, 0))
    for i in range(len(spec.indexes)):
        out.append(("drop-index", 0, i))
    return out


@pytest.mark.parametrize(
    "kind", ["type", "drop-not-null", "collate", "rename", "add-index", "drop-index"]
)
@SETTINGS
@given(case=two_ways(), data=st.data())
def test_one_mutation_is_reported_naming_the_object(
    kind: str, case: tuple[Spec, list[str], list[str]], data: st.DataObject
) -> None:
    spec, one, two = case
    targets = [m for m in mutations(spec) if m[0] == kind]
    assume(targets)  # e.g. no NOT NULL column to drop it from
    _, t, n = data.draw(st.sampled_from(targets), label="target")
    table = spec.tables[t] if kind != "drop-index" else None
    expected_conn = build(one)

    if kind in ("type", "drop-not-null", "collate"):
        col = table.columns[n]
        if kind == "type":
            new_type = data.draw(
                st.sampled_from([x for x in TYPES if x != col.type]), label="new type"
            )
            changed = replace(col, type=new_type)
        elif kind == "collate":
            new = data.draw(
                st.sampled_from([x for x in COLLATIONS if x != col.collate]), label="new collation"
            )
            changed = replace(col, collate=new)
        else:
            changed = replace(col, notnull=False)
        new_cols = table.columns[:n] + (changed,) + table.columns[n + 1 :]
        tables = list(spec.tables)
        tables[t] = replace(
            table, columns=new_cols, alter_from=min(table.alter_from, len(new_cols))
        )
        mutated = replace(spec, tables=tuple(tables))
        actual_conn = build(
            other_way(
                mutated, list(range(len(tables))), list(range(len(spec.indexes))), "quoted", True
            )
        )
        obj = f"{table.name}.{col.name}"
        wanted = {(obj, "different")}
    else:
        actual_conn = build(two)
        if kind == "rename":
            col = table.columns[n]
            actual_conn.execute(
                f"ALTER TABLE {table.name} RENAME COLUMN {col.name} TO {col.name}_renamed"
            )
            wanted = {
                (f"{table.name}.{col.name}", "missing"),
                (f"{table.name}.{col.name}_renamed", "unexpected"),
            }
        elif kind == "add-index":
            actual_conn.execute(
                f"CREATE INDEX extra_ix ON {table.name}(id, {table.columns[0].name})"
            )
            wanted = {("index extra_ix", "extra")}
        else:
            idx = spec.indexes[n]
            actual_conn.execute(f"DROP INDEX {idx.name}")
            wanted = {(f"index {idx.name}", "missing")}
    try:
        diffs = drift.diff(snap(expected_conn), snap(actual_conn))
        found = {(d.object, d.kind) for d in diffs}
        assert diffs, (kind, one)
        assert wanted <= found, (kind, describe(diffs))
        # a column mutation never shows up as a missing or extra table
        assert not any(d.object.startswith("table ") for d in diffs), describe(diffs)
        if kind != "add-index":
            assert drift.errors(diffs, strict=False), describe(diffs)
        else:
            assert drift.errors(diffs, strict=False) == []
            assert drift.errors(diffs, strict=True) == diffs
    finally:
        expected_conn.close()
        actual_conn.close()


@SETTINGS
@given(two_ways())
def test_snapshot_is_deterministic_and_ignores_data(
    case: tuple[Spec, list[str], list[str]],
) -> None:
    spec, one, _ = case
    a = build(one)
    try:
        before = snap(a)
        for table in spec.tables:
            a.execute(f"INSERT INTO {table.name}(id) SELECT NULL WHERE 0")  # no row; just touches
            a.execute(f"DELETE FROM {table.name}")
        a.execute("ANALYZE")  # sqlite_stat1 appears and must be ignored
        assert drift.diff(before, snap(a)) == []
        assert snap(a) == before
    finally:
        a.close()
