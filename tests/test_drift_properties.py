"""Property tests for drift over random migration sequences.

A small model of a schema (tables with columns in order, indexes) is driven by random
operations, each emitted as the SQL a migration would run: CREATE/DROP/RENAME TABLE,
ADD/DROP/RENAME COLUMN, CREATE/DROP INDEX, and the 12-step table rebuild (which changes
nothing). The statements are cut into random migration files and replayed by
`schema.replay`. Properties:

- replaying the migrations gives no difference from the model's final schema built
  directly (CREATE TABLE + CREATE INDEX), either way round;
- for two random sequences, drift reports no difference exactly when their models are
  equal, and otherwise reports exactly the objects whose model differs.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from preflight import schema
from preflight.schema import drift
from preflight.sources import replay
from preflight.sources.migrations import Migration, split_statements

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TABLES = ["notes", "tokens", "users", "posts", "tags"]
COLUMNS = ["slug", "body", "me", "score", "state", "created_at"]
INDEXES = ["ix_a", "ix_b", "ix_c", "ix_d"]
TYPES = ["TEXT", "INTEGER", "REAL", "BLOB", ""]
DEFAULTS = [None, "0", "'x'", "''"]


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    notnull: bool
    default: str | None

    def sql(self) -> str:
        parts = [
            self.name,
            self.type,
            "NOT NULL" if self.notnull else "",
            f"DEFAULT {self.default}" if self.default is not None else "",
        ]
        return " ".join(p for p in parts if p)


ID = Col("id", "INTEGER PRIMARY KEY", False, None)


@dataclass(frozen=True)
class Model:
    tables: tuple[tuple[str, tuple[Col, ...]], ...] = ()
    indexes: tuple[tuple[str, str, tuple[str, ...], bool], ...] = ()  # name, table, cols, unique

    def table_map(self) -> dict[str, tuple[Col, ...]]:
        return dict(self.tables)

    def index_map(self) -> dict[str, tuple[str, tuple[str, ...], bool]]:
        return {name: (table, cols, unique) for name, table, cols, unique in self.indexes}

    def normal(self) -> tuple:
        return (sorted(self.tables), sorted(self.indexes))


def with_tables(m: Model, tables: dict[str, tuple[Col, ...]]) -> Model:
    return Model(tuple(tables.items()), m.indexes)


def with_indexes(m: Model, indexes: dict[str, tuple[str, tuple[str, ...], bool]]) -> Model:
    return Model(m.tables, tuple((n, *v) for n, v in indexes.items()))


def create_table_sql(name: str, cols: tuple[Col, ...]) -> str:
    return f"CREATE TABLE {name} ({', '.join(c.sql() for c in (ID, *cols))})"


def create_index_sql(name: str, table: str, cols: tuple[str, ...], unique: bool) -> str:
    return f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {table}({', '.join(cols)})"


@st.composite
def column(draw: st.DrawFn, name: str, alterable: bool) -> Col:
    notnull = draw(st.booleans())
    default = draw(st.sampled_from(DEFAULTS))
    if alterable and notnull and default is None:
        default = "0"  # ADD COLUMN ... NOT NULL needs a default
    return Col(name, draw(st.sampled_from(TYPES)), notnull, default)


@st.composite
def operation(draw: st.DrawFn, m: Model) -> tuple[Model, list[str]]:
    """One random change that is valid on `m`: the new model and its SQL."""
    tables, indexes = m.table_map(), m.index_map()
    free_tables = [t for t in TABLES if t not in tables]
    kinds = ["create-table"] if free_tables else []
    if tables:
        kinds += [
            "add-column",
            "rename-column",
            "drop-column",
            "create-index",
            "rename-table",
            "drop-table",
            "rebuild",
        ]
    if indexes:
        kinds.append("drop-index")
    kind = draw(st.sampled_from(kinds))
    if kind == "create-table":
        name = draw(st.sampled_from(free_tables))
        names = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3, unique=True))
        cols = tuple(draw(column(n, False)) for n in names)
        tables[name] = cols
        return with_tables(m, tables), [create_table_sql(name, cols)]
    name = draw(st.sampled_from(sorted(tables)))
    cols = tables[name]
    used = {c.name for c in cols}
    indexed = {c for t, cs, _ in indexes.values() if t == name for c in cs}
    if kind == "add-column" and set(COLUMNS) - used:
        new = draw(column(draw(st.sampled_from(sorted(set(COLUMNS) - used))), True))
        tables[name] = cols + (new,)
        return with_tables(m, tables), [f"ALTER TABLE {name} ADD COLUMN {new.sql()}"]
    if kind == "rename-column" and cols and set(COLUMNS) - used:
        old = draw(st.sampled_from([c.name for c in cols]))
        new = draw(st.sampled_from(sorted(set(COLUMNS) - used)))
        tables[name] = tuple(
            Col(new, c.type, c.notnull, c.default) if c.name == old else c for c in cols
        )
        for ix, (t, cs, u) in list(indexes.items()):
            if t == name:
                indexes[ix] = (t, tuple(new if c == old else c for c in cs), u)
        return (
            with_indexes(with_tables(m, tables), indexes),
            [f"ALTER TABLE {name} RENAME COLUMN {old} TO {new}"],
        )
    droppable = [c.name for c in cols if c.name not in indexed]
    if kind == "drop-column" and len(cols) > 1 and droppable:
        gone = draw(st.sampled_from(droppable))
        tables[name] = tuple(c for c in cols if c.name != gone)
        return with_tables(m, tables), [f"ALTER TABLE {name} DROP COLUMN {gone}"]
    free_indexes = [i for i in INDEXES if i not in indexes]
    if kind == "create-index" and free_indexes:
        ix = draw(st.sampled_from(free_indexes))
        on = tuple(
            draw(
                st.lists(
                    st.sampled_from(["id", *(c.name for c in cols)]),
                    min_size=1,
                    max_size=2,
                    unique=True,
                )
            )
        )
        unique = draw(st.booleans())
        indexes[ix] = (name, on, unique)
        return with_indexes(m, indexes), [create_index_sql(ix, name, on, unique)]
    if kind == "rename-table" and free_tables:
        new = draw(st.sampled_from(free_tables))
        tables = {new if t == name else t: c for t, c in tables.items()}
        indexes = {ix: (new if t == name else t, cs, u) for ix, (t, cs, u) in indexes.items()}
        return (
            with_indexes(with_tables(m, tables), indexes),
            [f"ALTER TABLE {name} RENAME TO {new}"],
        )
    if kind == "drop-table":
        del tables[name]
        indexes = {ix: v for ix, v in indexes.items() if v[0] != name}
        return with_indexes(with_tables(m, tables), indexes), [f"DROP TABLE {name}"]
    if kind == "drop-index":
        ix = draw(st.sampled_from(sorted(indexes)))
        del indexes[ix]
        return with_indexes(m, indexes), [f"DROP INDEX {ix}"]
    # rebuild (also the fallback when the drawn change was not possible): same model
    names = ", ".join(["id", *(c.name for c in cols)])
    stmts = [
        create_table_sql(f"{name}_new", cols),
        f"INSERT INTO {name}_new ({names}) SELECT {names} FROM {name}",
        f"DROP TABLE {name}",
        f"ALTER TABLE {name}_new RENAME TO {name}",
    ]
    stmts += [create_index_sql(ix, t, cs, u) for ix, (t, cs, u) in indexes.items() if t == name]
    return m, stmts


@st.composite
def history(
    draw: st.DrawFn, start: Model = Model(), max_ops: int = 8
) -> tuple[Model, list[list[str]]]:
    """A random sequence of operations, cut into migrations: (final model, statements per file)."""
    m, files = start, []
    for _ in range(draw(st.integers(1, max_ops))):
        m, stmts = draw(operation(m))
        if not files or draw(st.booleans()):
            files.append([])
        files[-1].extend(stmts)
    return m, files


def as_migrations(files: list[list[str]]) -> tuple[Migration, ...]:
    out = []
    for n, stmts in enumerate(files, start=1):
        text = "".join(s + ";\n" for s in stmts)
        name = f"{n:03d}_step.sql"
        out.append(
            Migration(
                n,
                name,
                Path(name),
                "sql",
                hashlib.sha256(text.encode()).hexdigest(),
                split_statements(text, name),
                text,
            )
        )
    return tuple(out)


def replayed(files: list[list[str]]) -> schema.Schema:
    migrations = as_migrations(files)
    return replay.replay(migrations, {len(migrations)})[len(migrations)]


def built(m: Model) -> schema.Schema:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for name, cols in m.tables:
            conn.execute(create_table_sql(name, cols))
        for ix, t, cs, u in m.indexes:
            conn.execute(create_index_sql(ix, t, cs, u))
        return schema.snapshot(conn)
    finally:
        conn.close()


def expected_objects(exp: Model, act: Model) -> set[str]:
    """What drift should name when `act` is compared with `exp`, from the models alone."""
    out: set[str] = set()
    et, at = exp.table_map(), act.table_map()
    for t in et.keys() ^ at.keys():
        out.add(f"table {t}")
    for t in et.keys() & at.keys():
        ec, ac = {c.name: c for c in (ID, *et[t])}, {c.name: c for c in (ID, *at[t])}
        out |= {f"{t}.{c}" for c in ec.keys() ^ ac.keys()}
        out |= {f"{t}.{c}" for c in ec.keys() & ac.keys() if ec[c] != ac[c]}
        if [c for c in ec if c in ac] != [c for c in ac if c in ec]:
            out.add(t)
    ei, ai = exp.index_map(), act.index_map()
    out |= {f"index {i}" for i in ei.keys() ^ ai.keys()}
    out |= {f"index {i}" for i in ei.keys() & ai.keys() if ei[i] != ai[i]}
    return out


@SETTINGS
@given(history())
def test_replayed_migrations_equal_the_schema_built_directly(case) -> None:
    model, files = case
    live, direct = replayed(files), built(model)
    assert drift.diff(direct, live) == [], files
    assert drift.diff(live, direct) == [], files


@SETTINGS
@given(st.data())
def test_drift_is_empty_exactly_when_the_models_are_equal_and_names_what_differs(data) -> None:
    model_a, files_a = data.draw(history(), label="a")
    if data.draw(st.booleans(), label="continue a"):
        # b = a and then more: often only rebuilds, so an equal model by another path
        model_b, more = data.draw(history(model_a, max_ops=3), label="b continues a")
        files_b = files_a + more
    else:
        model_b, files_b = data.draw(history(), label="b")
    diffs = drift.diff(replayed(files_a), replayed(files_b))
    equal = model_a.normal() == model_b.normal()
    event("same schema" if equal else f"{min(len(diffs), 3)}+ differences")
    assert (diffs == []) == equal, ([d.message() for d in diffs], files_a, files_b)
    assert {d.object for d in diffs} == expected_objects(model_a, model_b), (
        [d.message() for d in diffs],
        files_a,
        files_b,
    )
