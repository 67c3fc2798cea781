"""Seeded generator of realistic SQLite migration histories, and the plain-sqlite3 way to apply them.

`generate(seed)` returns a `History`: 5-30 migration files `NNN_label.sql` made of the
operations real apps perform (tables with foreign keys, UNIQUE, CHECK, DEFAULT and
AUTOINCREMENT; the documented 12-step table rebuild; renames; added, renamed and dropped
columns; plain, unique and partial indexes; triggers; views; FTS5 tables kept in sync by
triggers; data backfills; files wrapped in BEGIN ... COMMIT), and for each version the
rows the application inserts between migrations (some of them orphans: dangling foreign
keys, which SQLite accepts because foreign keys are off unless a connection asks).

The generator keeps a model of the schema so that every file applies with plain sqlite3
and no migration introduces a foreign-key violation of its own: the only orphans are the
application's. Everything is plain SQL text, so a failing history can be printed and
replayed by hand.
"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

TABLE_NAMES = (
    "users",
    "posts",
    "comments",
    "tags",
    "sessions",
    "tokens",
    "projects",
    "tasks",
    "events",
    "media",
    "feeds",
    "entries",
    "accounts",
    "invoices",
    "orders",
    "products",
    "teams",
    "members",
    "notes",
    "pages",
    "links",
    "devices",
)
TEXT_COLS = (
    "title",
    "body",
    "name",
    "slug",
    "email",
    "status",
    "summary",
    "kind",
    "label",
    "url",
    "author",
    "locale",
    "region",
    "color",
)
INT_COLS = (
    "hits",
    "rank",
    "score",
    "position",
    "views",
    "rev",
    "flags",
    "size",
    "quota",
    "attempts",
    "likes",
)
REAL_COLS = ("weight", "price", "ratio", "latitude", "longitude")
WORDS = ("alpha", "bravo", "delta", "echo", "golf", "hotel", "kilo", "lima", "oscar", "tango")
DANGLING = 900000  # ids from here on never exist in any table: orphans


@dataclass(eq=False)
class Col:
    name: str
    type: str  # INTEGER | TEXT | REAL
    notnull: bool = False
    default: str | None = None  # an SQL literal
    unique: bool = False
    check: bool = False
    ref: Table | None = None
    distinct: bool = False  # every value written so far is distinct (a UNIQUE index may be built)

    def ddl(self, fk_inline: bool = True) -> str:
        parts = [self.name, self.type]
        if self.notnull:
            parts.append("NOT NULL")
        if self.unique:
            parts.append("UNIQUE")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.check:
            parts.append(
                f"CHECK (length({self.name}) > 0)"
                if self.type == "TEXT"
                else f"CHECK ({self.name} >= 0)"
            )
        if self.ref is not None and fk_inline:
            parts.append(f"REFERENCES {self.ref.name}(id) ON DELETE CASCADE")
        return " ".join(parts)


@dataclass(eq=False)
class Table:
    name: str
    cols: list[Col]
    autoinc: bool = False
    fk_inline: bool = True
    fts: bool = False  # an FTS5 virtual table (cols are its columns)
    content: Table | None = None  # FTS5 external content table

    def ddl(self, name: str | None = None) -> str:
        if self.fts:
            cols = ", ".join(c.name for c in self.cols)
            extra = f", content='{self.content.name}', content_rowid='id'" if self.content else ""
            return f"CREATE VIRTUAL TABLE {self.name} USING fts5({cols}{extra});"
        lines = ["id INTEGER PRIMARY KEY" + (" AUTOINCREMENT" if self.autoinc else "")]
        lines += [c.ddl(self.fk_inline) for c in self.cols]
        if not self.fk_inline:
            lines += [
                f"FOREIGN KEY ({c.name}) REFERENCES {c.ref.name}(id)"
                for c in self.cols
                if c.ref is not None
            ]
        body = ",\n    ".join(lines)
        return f"CREATE TABLE {name or self.name} (\n    {body}\n);"

    def col(self, name: str) -> Col:
        return next(c for c in self.cols if c.name == name)


@dataclass(eq=False)
class Index:
    name: str
    table: Table
    cols: list[Col]
    unique: bool = False
    partial: bool = False

    def ddl(self) -> str:
        where = f" WHERE {self.cols[0].name} IS NOT NULL" if self.partial else ""
        cols = ", ".join(c.name for c in self.cols)
        return (
            f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {self.name} "
            f"ON {self.table.name} ({cols}){where};"
        )


@dataclass(eq=False)
class View:
    name: str
    table: Table
    cols: list[Col]
    parent: Table | None = None  # joined through fk
    fk: Col | None = None
    pcol: Col | None = None

    def tables(self) -> list[Table]:
        return [self.table] + ([self.parent] if self.parent else [])

    def ddl(self) -> str:
        cols = ", ".join(f"c.{c.name}" for c in self.cols)
        if self.parent is None:
            return f"CREATE VIEW {self.name} AS\n    SELECT c.id, {cols} FROM {self.table.name} c;"
        return (
            f"CREATE VIEW {self.name} AS\n    SELECT c.id, {cols}, p.{self.pcol.name} AS "
            f"parent_{self.pcol.name}\n    FROM {self.table.name} c "
            f"LEFT JOIN {self.parent.name} p ON p.id = c.{self.fk.name};"
        )


@dataclass(eq=False)
class Trigger:
    name: str
    table: Table  # ON
    kind: str  # audit | touch | fts_ai | fts_ad | fts_au
    target: Table | None = None  # audit table or fts table
    cols: list[Col] = field(default_factory=list)  # touch: [watched, counter]; fts: content cols

    def refs(self) -> list[Table]:
        return [self.table] + ([self.target] if self.target else [])

    def used(self) -> list[tuple[Table, Col]]:
        out = [(self.table, c) for c in self.cols]
        if self.kind == "audit":
            out += [(self.target, c) for c in self.target.cols]
        return out

    def ddl(self) -> str:
        t, n = self.table.name, self.name
        if self.kind == "audit":
            a = self.target.name
            return (
                f"CREATE TRIGGER {n} AFTER INSERT ON {t}\nBEGIN\n    INSERT INTO {a} "
                f"(table_name, row_id, action) VALUES ('{t}', NEW.id, 'insert');\nEND;"
            )
        if self.kind == "touch":
            w, c = self.cols
            return (
                f"CREATE TRIGGER {n} AFTER UPDATE OF {w.name} ON {t}\nBEGIN\n    UPDATE {t} "
                f"SET {c.name} = COALESCE({c.name}, 0) + 1 WHERE id = NEW.id;\nEND;"
            )
        f = self.target.name
        names = ", ".join(c.name for c in self.cols)
        new = ", ".join(f"new.{c.name}" for c in self.cols)
        old = ", ".join(f"old.{c.name}" for c in self.cols)
        delete = f"INSERT INTO {f}({f}, rowid, {names}) VALUES ('delete', old.id, {old});"
        insert = f"INSERT INTO {f}(rowid, {names}) VALUES (new.id, {new});"
        body = {"fts_ai": [insert], "fts_ad": [delete], "fts_au": [delete, insert]}[self.kind]
        when = {"fts_ai": "INSERT", "fts_ad": "DELETE", "fts_au": "UPDATE"}[self.kind]
        return (
            f"CREATE TRIGGER {n} AFTER {when} ON {t} BEGIN\n    " + "\n    ".join(body) + "\nEND;"
        )


@dataclass(frozen=True)
class History:
    seed: int
    files: tuple[tuple[str, str], ...]  # (NNN_label.sql, text)
    fills: tuple[str, ...]  # fills[k]: what the app inserts once files 1..k are applied
    ops: frozenset[str]  # operation kinds used (the suite checks it covers them all)
    drop_columns: tuple[tuple[str, str], ...]  # (table, column) at head, DROP COLUMN allowed
    indexes: tuple[tuple[str, str], ...]  # (index, table) at head, made by the history

    def render(self, upto: int | None = None) -> str:
        """The files (and the fills) as one text, to reproduce a failure by hand."""
        out = []
        for i, (name, text) in enumerate(self.files[:upto], 1):
            out.append(f"-- ===== {name}\n{text}\n-- ----- app inserts after {i}:\n{self.fills[i]}")
        return "\n".join(out)


class _Gen:
    def __init__(self, seed: int, transaction_control: bool = True) -> None:
        self.rng = random.Random(seed)
        self.tc = transaction_control
        self.tables: list[Table] = []
        self.indexes: list[Index] = []
        self.views: list[View] = []
        self.triggers: list[Trigger] = []
        self.used_names: set[str] = set()
        self.counter = 0
        self.ops: set[str] = set()

    # ---- names and values -------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, i = base, 2
        while name in self.used_names:
            name, i = f"{base}{i}", i + 1
        self.used_names.add(name)
        return name

    def next_value(self) -> int:
        self.counter += 1
        return self.counter

    def plain_tables(self) -> list[Table]:
        return [t for t in self.tables if not t.fts]

    # ---- dependencies -----------------------------------------------------------------
    def col_used(self, t: Table, c: Col) -> bool:
        """Indexed, in a view, trigger or FTS table: a plain DROP/RENAME COLUMN could break it."""
        if any(i.table is t and c in i.cols for i in self.indexes):
            return True
        if any(c in v.cols or c is v.fk or c is v.pcol for v in self.views):
            return True
        if any((t, c) in tr.used() for tr in self.triggers):
            return True
        return any(
            f.content is t and any(fc.name == c.name for fc in f.cols) for f in self.tables if f.fts
        )

    def col_unique(self, t: Table, c: Col) -> bool:
        return c.unique or any(i.unique and i.table is t and c in i.cols for i in self.indexes)

    def fts_of(self, t: Table) -> list[Table]:
        return [f for f in self.tables if f.fts and f.content is t]

    def referenced(self, t: Table) -> bool:
        """Anything other than t's own indexes and triggers names t."""
        return (
            any(c.ref is t for u in self.tables if u is not t for c in u.cols)
            or any(t in v.tables() for v in self.views)
            or any(
                tr.target is t
                or (tr.table is t and tr.target is not None and tr.kind.startswith("fts"))
                for tr in self.triggers
            )
            or bool(self.fts_of(t))
        )

    # ---- operations: each returns SQL text and updates the model ----------------------
    def new_col(self, t_cols: list[Col], in_create: bool) -> Col:
        rng = self.rng
        kind = rng.choices(("TEXT", "INTEGER", "REAL"), (5, 3, 1))[0]
        pool = {"TEXT": TEXT_COLS, "INTEGER": INT_COLS, "REAL": REAL_COLS}[kind]
        taken = {c.name for c in t_cols}
        names = [n for n in pool if n not in taken] or [f"{pool[0]}_{len(t_cols)}"]
        col = Col(rng.choice(names), kind)
        if in_create:
            col.notnull = rng.random() < 0.35
            col.unique = kind != "REAL" and rng.random() < 0.2
            col.distinct = kind != "REAL"
            col.check = kind != "REAL" and rng.random() < 0.2
            if not col.unique and rng.random() < 0.3:
                col.default = {"TEXT": "'draft'", "INTEGER": "0", "REAL": "1.5"}[kind]
        else:
            # ALTER TABLE ADD COLUMN: no UNIQUE, NOT NULL needs a default, defaults repeat.
            if rng.random() < 0.5:
                col.default = {"TEXT": "'none'", "INTEGER": "0", "REAL": "0.0"}[kind]
                col.notnull = rng.random() < 0.5
            col.check = (
                kind != "REAL"
                and rng.random() < 0.15
                and (col.default is None or kind == "INTEGER")
            )
        return col

    def op_create_table(self, force_fk: bool = False) -> str:
        rng = self.rng
        name = self.fresh(
            rng.choice([n for n in TABLE_NAMES if n not in self.used_names] or ["things"])
        )
        cols: list[Col] = []
        parents = self.plain_tables()
        for _ in range(rng.randint(1, 4)):
            cols.append(self.new_col(cols, True))
        if parents and (force_fk or rng.random() < 0.7):
            parent = rng.choice(parents)
            fk = Col(
                f"{parent.name.rstrip('s')}_id", "INTEGER", ref=parent, notnull=rng.random() < 0.3
            )
            if fk.name not in {c.name for c in cols}:
                cols.insert(rng.randint(0, len(cols)), fk)
        t = Table(name, cols, autoinc=rng.random() < 0.3, fk_inline=rng.random() < 0.6)
        self.tables.append(t)
        self.ops.add("create_table")
        sql = [t.ddl()]
        fk = next((c for c in cols if c.ref is not None), None)
        if fk is not None and rng.random() < 0.4:
            # Seed from the parent (a data migration): valid references only.
            names, values = [fk.name], ["p.id"]
            for c in cols:
                if c is fk or c.ref is not None:
                    continue
                if c.notnull or c.distinct:
                    names.append(c.name)
                    values.append(
                        "'seed' || p.id"
                        if c.type == "TEXT"
                        else "p.id + 100000"
                        if c.type == "INTEGER"
                        else "0.5"
                    )
            sql.append(
                f"INSERT INTO {name} ({', '.join(names)})\n    SELECT {', '.join(values)} "
                f"FROM {fk.ref.name} p;"
            )
            self.ops.add("insert_select")
        elif fk is None and rng.random() < 0.25:
            rows = []
            for _ in range(rng.randint(1, 3)):
                rows.append("(" + ", ".join(self.literal(c, orphan_ok=False) for c in cols) + ")")
            sql.append(
                f"INSERT INTO {name} ({', '.join(c.name for c in cols)}) VALUES\n    "
                + ",\n    ".join(rows)
                + ";"
            )
            self.ops.add("seed_values")
        return "\n".join(sql)

    def literal(self, c: Col, orphan_ok: bool = True) -> str:
        """A value the application would write into column c."""
        rng = self.rng
        if c.ref is not None:
            if orphan_ok and rng.random() < 0.25:
                return str(DANGLING + self.next_value())
            if not c.notnull and rng.random() < 0.15:
                return "NULL"
            return (
                f"COALESCE((SELECT id FROM {c.ref.name} ORDER BY id LIMIT 1 OFFSET "
                f"{rng.randint(0, 2)}), (SELECT min(id) FROM {c.ref.name}))"
            )
        if not c.notnull and not c.distinct and rng.random() < 0.2:
            return "NULL"
        n = self.next_value()
        if c.type == "TEXT":
            return f"'{rng.choice(WORDS)} v{n}'"
        if c.type == "INTEGER":
            return str(n)
        return f"{n}.25"

    def op_add_column(self) -> str | None:
        tables = self.plain_tables()
        if not tables:
            return None
        t = self.rng.choice(tables)
        c = self.new_col(t.cols, False)
        parents = [p for p in self.plain_tables() if p is not t]
        if parents and self.rng.random() < 0.25:
            p = self.rng.choice(parents)
            c = Col(f"{p.name.rstrip('s')}_ref", "INTEGER", ref=p)
            if c.name in {x.name for x in t.cols}:
                return None
        t.cols.append(c)
        self.ops.add("add_column")
        fk = f" REFERENCES {c.ref.name}(id)" if c.ref else ""
        return f"ALTER TABLE {t.name} ADD COLUMN {c.ddl(False)}{fk};"

    def droppable(self) -> list[tuple[Table, Col]]:
        return [
            (t, c)
            for t in self.plain_tables()
            if len(t.cols) > 1
            for c in t.cols
            if not (c.unique or c.check or c.ref is not None or self.col_used(t, c))
        ]

    def op_drop_column(self) -> str | None:
        cands = self.droppable()
        if not cands:
            return None
        t, c = self.rng.choice(cands)
        t.cols.remove(c)
        self.ops.add("drop_column")
        return f"ALTER TABLE {t.name} DROP COLUMN {c.name};"

    def op_rename_column(self) -> str | None:
        cands = [
            (t, c)
            for t in self.plain_tables()
            for c in t.cols
            if not any(fc.name == c.name for f in self.fts_of(t) for fc in f.cols)
        ]
        if not cands:
            return None
        t, c = self.rng.choice(cands)
        new = f"{c.name}_{self.rng.choice(('old', 'new', 'v2', 'text'))}"
        if new in {x.name for x in t.cols}:
            return None
        old, c.name = c.name, new
        self.ops.add("rename_column")
        return f"ALTER TABLE {t.name} RENAME COLUMN {old} TO {new};"

    def op_rename_table(self) -> str | None:
        cands = [
            t
            for t in self.tables
            if not self.fts_of(t)
            and not (t.fts and t.content is not None)
            and not any(tr.target is t and tr.kind.startswith("fts") for tr in self.triggers)
        ]
        if not cands:
            return None
        t = self.rng.choice(cands)
        old = t.name
        t.name = self.fresh(f"{old}_{self.rng.choice(('v2', 'archive', 'legacy', 'all'))}")
        self.ops.add("rename_table")
        return f"ALTER TABLE {old} RENAME TO {t.name};"

    def op_drop_table(self) -> str | None:
        cands = [
            t
            for t in self.tables
            if not self.referenced(t) and not (t.fts and t.content is not None)
        ]
        if len(cands) < 1 or len(self.tables) < 3:
            return None
        t = self.rng.choice(cands)
        self.tables.remove(t)
        self.indexes = [i for i in self.indexes if i.table is not t]
        self.triggers = [tr for tr in self.triggers if tr.table is not t]
        self.ops.add("drop_table")
        return f"DROP TABLE {t.name};"

    def op_create_index(self) -> str | None:
        tables = [t for t in self.plain_tables() if t.cols]
        if not tables:
            return None
        t = self.rng.choice(tables)
        first = self.rng.choice(t.cols)
        cols = [first]
        others = [c for c in t.cols if c is not first]
        if others and self.rng.random() < 0.3:
            cols.append(self.rng.choice(others))
        unique = first.distinct and self.rng.random() < 0.5
        partial = not first.notnull and self.rng.random() < 0.4
        idx = Index(self.fresh(f"idx_{t.name}_{first.name}"), t, cols, unique, partial)
        self.indexes.append(idx)
        self.ops.add("create_unique_index" if unique else "create_index")
        if partial:
            self.ops.add("partial_index")
        return idx.ddl()

    def op_drop_index(self) -> str | None:
        if not self.indexes:
            return None
        idx = self.rng.choice(self.indexes)
        self.indexes.remove(idx)
        self.ops.add("drop_index")
        return f"DROP INDEX {idx.name};"

    def op_create_view(self) -> str | None:
        tables = [t for t in self.plain_tables() if t.cols]
        if not tables:
            return None
        t = self.rng.choice(tables)
        cols = self.rng.sample(t.cols, min(len(t.cols), self.rng.randint(1, 2)))
        fks = [c for c in t.cols if c.ref is not None and c.ref.cols]
        v = View(self.fresh(f"{t.name}_view"), t, cols)
        if fks and self.rng.random() < 0.6:
            v.fk = self.rng.choice(fks)
            v.parent = v.fk.ref
            v.pcol = self.rng.choice(v.parent.cols)
        self.views.append(v)
        self.ops.add("create_view")
        return v.ddl()

    def op_drop_view(self) -> str | None:
        if not self.views:
            return None
        v = self.rng.choice(self.views)
        self.views.remove(v)
        self.ops.add("drop_view")
        return f"DROP VIEW {v.name};"

    def op_create_trigger(self) -> str | None:
        rng = self.rng
        tables = self.plain_tables()
        if not tables:
            return None
        t = rng.choice(tables)
        sql = []
        if rng.random() < 0.5:
            audit = next(
                (
                    a
                    for a in tables
                    if a.name.startswith("audit_log")
                    and {c.name for c in a.cols} >= {"table_name", "row_id", "action"}
                ),
                None,
            )
            if audit is t:
                return None
            if audit is None:
                audit = Table(
                    self.fresh("audit_log"),
                    [
                        Col("table_name", "TEXT", notnull=True),
                        Col("row_id", "INTEGER"),
                        Col("action", "TEXT"),
                    ],
                    autoinc=True,
                )
                self.tables.append(audit)
                sql.append(audit.ddl())
            tr = Trigger(self.fresh(f"{t.name}_audit"), t, "audit", audit)
        else:
            counters = [
                c
                for c in t.cols
                if c.type == "INTEGER" and c.ref is None and not self.col_unique(t, c)
            ]
            watched = [c for c in t.cols if c not in counters]
            if not counters or not watched:
                return None
            counter, w = rng.choice(counters), rng.choice(watched)
            counter.distinct = False
            tr = Trigger(self.fresh(f"{t.name}_touch"), t, "touch", cols=[w, counter])
        self.triggers.append(tr)
        self.ops.add("create_trigger")
        sql.append(tr.ddl())
        return "\n".join(sql)

    def op_drop_trigger(self) -> str | None:
        cands = [tr for tr in self.triggers if not tr.kind.startswith("fts")]
        if not cands:
            return None
        tr = self.rng.choice(cands)
        self.triggers.remove(tr)
        self.ops.add("drop_trigger")
        return f"DROP TRIGGER {tr.name};"

    def op_fts(self) -> str | None:
        rng = self.rng
        if rng.random() < 0.35:
            f = Table(self.fresh("search_index"), [Col("body", "TEXT")], fts=True)
            self.tables.append(f)
            self.ops.add("fts_standalone")
            src = [(t, c) for t in self.plain_tables() for c in t.cols if c.type == "TEXT"]
            sql = [f.ddl()]
            if src:
                t, c = rng.choice(src)
                sql.append(
                    f"INSERT INTO {f.name} (rowid, body)\n    SELECT id, {c.name} FROM "
                    f"{t.name} WHERE {c.name} IS NOT NULL;"
                )
            return "\n".join(sql)
        cands = [
            t
            for t in self.plain_tables()
            if not self.fts_of(t) and any(c.type == "TEXT" for c in t.cols)
        ]
        if not cands:
            return None
        t = rng.choice(cands)
        texts = [c for c in t.cols if c.type == "TEXT"]
        cols = rng.sample(texts, min(len(texts), rng.randint(1, 2)))
        f = Table(
            self.fresh(f"{t.name}_fts"), [Col(c.name, "TEXT") for c in cols], fts=True, content=t
        )
        self.tables.append(f)
        sql = [f.ddl()]
        for kind in ("fts_ai", "fts_ad", "fts_au"):
            tr = Trigger(self.fresh(f"{t.name}_{kind[4:]}"), t, kind, f, cols)
            self.triggers.append(tr)
            sql.append(tr.ddl())
        sql.append(f"INSERT INTO {f.name}({f.name}) VALUES ('rebuild');")
        self.ops.add("fts_external")
        return "\n".join(sql)

    def op_backfill(self) -> str | None:
        rng = self.rng
        cands = [
            (t, c)
            for t in self.plain_tables()
            for c in t.cols
            if c.ref is None
            and not self.col_unique(t, c)
            and not any(fc.name == c.name for f in self.fts_of(t) for fc in f.cols)
        ]
        if not cands:
            return None
        t, c = rng.choice(cands)
        c.distinct = False
        self.ops.add("backfill")
        same = [o for o in t.cols if o is not c and o.type == c.type and o.ref is None]
        fks = [o for o in t.cols if o.ref is not None and any(p.type == c.type for p in o.ref.cols)]
        choice = rng.random()
        if fks and choice < 0.3:
            fk = rng.choice(fks)
            pc = rng.choice([p for p in fk.ref.cols if p.type == c.type])
            self.ops.add("backfill_from_parent")
            return (
                f"UPDATE {t.name} SET {c.name} = COALESCE((\n    SELECT p.{pc.name} FROM "
                f"{fk.ref.name} p WHERE p.id = {t.name}.{fk.name}\n), {c.name});"
            )
        if same and choice < 0.5:
            o = rng.choice(same)
            return f"UPDATE {t.name} SET {c.name} = {o.name} WHERE {c.name} IS NULL;"
        if c.type == "TEXT":
            return rng.choice(
                (
                    f"UPDATE {t.name} SET {c.name} = lower({c.name}) WHERE {c.name} IS NOT NULL;",
                    f"UPDATE {t.name} SET {c.name} = trim({c.name}) || '!';",
                )
            )
        if c.type == "INTEGER":
            return f"UPDATE {t.name} SET {c.name} = COALESCE({c.name}, 0) + 1;"
        return f"UPDATE {t.name} SET {c.name} = round({c.name}, 1) WHERE {c.name} IS NOT NULL;"

    def op_rebuild(self, bracket: str) -> str | None:
        """The documented 12-step rebuild, as a file of its own."""
        rng = self.rng
        cands = [t for t in self.plain_tables() if not self.fts_of(t) and t.cols]
        if not cands:
            return None
        t = rng.choice(cands)
        new_cols = list(t.cols)
        select = {id(c): c.name for c in t.cols}
        change = rng.choice(("drop", "notnull", "default", "insert"))
        dropped = [c for c in t.cols if not self.col_used(t, c)]
        if change == "drop" and dropped and len(t.cols) > 1:
            new_cols.remove(rng.choice(dropped))
        elif change == "notnull" and any(
            not c.notnull and c.ref is None and not self.col_unique(t, c) for c in t.cols
        ):
            c = rng.choice(
                [c for c in t.cols if not c.notnull and c.ref is None and not self.col_unique(t, c)]
            )
            lit = c.default or {"TEXT": "''", "INTEGER": "0", "REAL": "0.0"}[c.type]
            if c.check and c.type == "TEXT":
                lit = "'none'"
            c.notnull, c.default = True, lit
            select[id(c)] = f"COALESCE({c.name}, {lit})"
            c.distinct = False
        elif change == "default":
            c = rng.choice(t.cols)
            if c.unique or c.ref is not None:
                return None
            c.default = {"TEXT": "'unknown'", "INTEGER": "1", "REAL": "2.5"}[c.type]
        else:
            extra = self.new_col(t.cols, False)
            extra.ref = None
            new_cols.insert(rng.randint(0, len(new_cols)), extra)
        kept = [c for c in new_cols if id(c) in select]
        views = [v for v in self.views if t in v.tables()]
        foreign_triggers = [tr for tr in self.triggers if tr.table is not t and tr.target is t]
        own_triggers = [tr for tr in self.triggers if tr.table is t]
        t.cols = new_cols
        new_name = self.fresh(f"new_{t.name}")
        self.used_names.discard(new_name)
        begin, end = bracket.split("|")
        sql = ["PRAGMA foreign_keys=OFF;", begin] if self.tc else []
        sql += [f"DROP VIEW {v.name};" for v in views]
        sql += [f"DROP TRIGGER {tr.name};" for tr in foreign_triggers]
        sql.append(t.ddl(new_name))
        sql.append(
            f"INSERT INTO {new_name} (id, {', '.join(c.name for c in kept)})\n    SELECT id, "
            f"{', '.join(select[id(c)] for c in kept)} FROM {t.name};"
        )
        sql.append(f"DROP TABLE {t.name};")
        sql.append(f"ALTER TABLE {new_name} RENAME TO {t.name};")
        sql += [i.ddl() for i in self.indexes if i.table is t]
        sql += [tr.ddl() for tr in own_triggers + foreign_triggers]
        sql += [v.ddl() for v in views]
        sql += ["PRAGMA foreign_key_check;"]
        sql += [end, "PRAGMA foreign_keys=ON;"] if self.tc else []
        self.ops.add("rebuild")
        return "\n".join(sql)

    # ---- the app's rows ---------------------------------------------------------------
    def fill(self) -> str:
        """Rows the application inserts into every table (FTS content through triggers)."""
        out = []
        for t in self.tables:
            if t.fts and t.content is not None:
                continue
            for _ in range(self.rng.randint(1, 3)):
                names = ", ".join(c.name for c in t.cols)
                values = ", ".join(self.literal(c) for c in t.cols)
                out.append(f"INSERT INTO {t.name} ({names}) VALUES ({values});")
        return "\n".join(out)


OPERATIONS = (
    "add_column",
    "drop_column",
    "rename_column",
    "rename_table",
    "drop_table",
    "create_index",
    "drop_index",
    "create_view",
    "drop_view",
    "create_trigger",
    "drop_trigger",
    "fts",
    "backfill",
    "create_table",
)
WEIGHTS = (10, 5, 3, 3, 2, 8, 3, 4, 2, 4, 2, 3, 6, 7)
BRACKETS = (
    "BEGIN;|COMMIT;",
    "BEGIN TRANSACTION;|COMMIT;",
    "BEGIN;|END;",
    "BEGIN TRANSACTION;|END TRANSACTION;",
    "BEGIN IMMEDIATE;|COMMIT;",
)


def generate(seed: int, low: int = 5, high: int = 30, transaction_control: bool = True) -> History:
    """A history of `low`..`high` migrations, the same for the same seed.

    transaction_control=False writes the same history without BEGIN/COMMIT brackets and
    foreign_keys pragmas (to look past a guard that refuses them).
    """
    g = _Gen(seed, transaction_control)
    n = g.rng.randint(low, high)
    files: list[tuple[str, str]] = []
    fills = [""]
    # The first release: a few tables, at least one with a foreign key (orphans need one).
    first = [g.op_create_table(force_fk=i == 1) for i in range(g.rng.randint(2, 4))]
    files.append(("001_initial_schema.sql", "\n\n".join(first) + "\n"))
    fills.append(g.fill())
    while len(files) < n:
        label, body = _migration(g)
        if body is None:
            continue
        files.append((f"{len(files) + 1:03d}_{label}.sql", body + "\n"))
        fills.append(g.fill())
    return History(
        seed,
        tuple(files),
        tuple(fills),
        frozenset(g.ops),
        tuple((t.name, c.name) for t, c in g.droppable()),
        tuple((i.name, i.table.name) for i in g.indexes),
    )


def _migration(g: _Gen) -> tuple[str, str | None]:
    rng = g.rng
    if rng.random() < 0.12:
        return "rebuild_table", g.op_rebuild(rng.choice(BRACKETS))
    parts, labels = [], []
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.choices(OPERATIONS, WEIGHTS)[0]
        sql = getattr(g, f"op_{op}")()
        if sql is not None:
            parts.append(sql)
            labels.append(op)
    if not parts:
        return "", None
    body = "\n\n".join(parts)
    if rng.random() < 0.25:
        begin, end = rng.choice(BRACKETS).split("|")
        if g.tc:
            body = f"{begin}\n\n{body}\n\n{end}"
            g.ops.add("bracketed")
    if rng.random() < 0.3:
        body = f"-- {labels[0].replace('_', ' ')}\n{body}"
    return labels[0], body


# ---- applying files the way the application did: plain sqlite3 ---------------------------
def apply_plain(db: Path, script: str) -> None:
    """One connection, executescript, foreign keys off (sqlite3's default), closed."""
    conn = sqlite3.connect(db)
    try:
        # Durability only (no effect on content): the suite builds thousands of versions.
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.executescript(script)
    finally:
        conn.close()


def build_untracked(history: History, k: int, db: Path) -> Path:
    """The application's own database at version k: files 1..k, the app's rows after each."""
    sqlite3.connect(db).close()
    for i in range(1, k + 1):
        apply_plain(db, history.files[i - 1][1])
        apply_plain(db, history.fills[i])
    return db


def upgrade_plain(history: History, k: int, db: Path) -> Path:
    for name, text in history.files[k:]:
        apply_plain(db, text)
    return db


def copy_db(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


# ---- comparing two databases ------------------------------------------------------------
def _norm(sql: str | None) -> str | None:
    return None if sql is None else re.sub(r"\s+", " ", sql).strip()


def schema_of(db: Path) -> list[tuple]:
    """sqlite_master without the guard's tables, SQL whitespace-normalized, sorted."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    finally:
        conn.close()
    # sqlite_sequence appears with the first AUTOINCREMENT table, the guard's own included.
    return sorted(
        (t, n, tb, _norm(s))
        for t, n, tb, s in found
        if not n.startswith("_preflight")
        and not tb.startswith("_preflight")
        and n != "sqlite_sequence"
    )


def loose_schema(db: Path) -> list[tuple]:
    """schema_of without white space, quotes or case: equal iff the structure is equal."""
    return sorted(
        (t, n.lower(), tb.lower(), None if s is None else re.sub(r'[\s"`]', "", s).lower())
        for t, n, tb, s in schema_of(db)
    )


def real_candidates(
    history: History, k: int, live: Path, fresh: list[Path], scratch: Path
) -> list[int]:
    """The versions an untracked database at k may be adopted at, by the issue's rule.

    A version whose schema is exactly the live one, SQL text and all (no difference beats
    any difference; of versions that mean the same, the text the files wrote tells them
    apart: issue 19.3), and whose pending migrations apply to this database (rehearsed on
    a copy with plain sqlite3). k itself always qualifies. More than one is a real tie
    only if upgrading from them ends in different databases (schema or rows): when every
    candidate ends in the same one, the choice makes no difference and refusing would be
    a false outage.
    """
    shape = master_rows(live)
    out = []
    ends = set()
    for j in range(1, len(history.files) + 1):
        if master_rows(fresh[j]) != shape:
            continue
        try:
            end = upgrade_plain(history, j, copy_db(live, scratch / f"rehearse{j}.db"))
        except sqlite3.Error:
            if j == k:
                raise
            continue
        ends.add(repr((schema_of(end), content_of(end))))
        out.append(j)
    assert k in out or k == 0, (k, out)
    return out if len(ends) > 1 else [k]


FTS_SHADOWS = ("_data", "_idx", "_docsize", "_config", "_content")


def content_of(db: Path) -> dict[str, list]:
    """Rows of every table (as sorted multisets); FTS5 tables by their rows and searches.

    FTS5 shadow tables are left out: their segments depend on transaction boundaries
    (one migration per transaction or all in one), not on what is indexed.
    """
    conn = sqlite3.connect(db)
    try:
        tables = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE '\\_preflight%' ESCAPE '\\'"
        ).fetchall()
        fts = {n for n, s in tables if s and re.search(r"USING\s+fts5", s, re.I)}
        out: dict[str, list] = {"sqlite_sequence": []}
        for name, _ in tables:
            if any(name == f + s for f in fts for s in FTS_SHADOWS):
                continue
            found = conn.execute(
                f'SELECT rowid, * FROM "{name}"' if name in fts else f'SELECT * FROM "{name}"'
            ).fetchall()
            if name == "sqlite_sequence":
                found = [r for r in found if not str(r[0]).startswith("_preflight")]
            out[name] = sorted(found, key=repr)
            if name in fts:
                for word in WORDS:
                    hits = conn.execute(
                        f'SELECT rowid FROM "{name}" WHERE "{name}" MATCH ? ORDER BY rowid', (word,)
                    ).fetchall()
                    out[f"{name} MATCH {word}"] = hits
        return out
    finally:
        conn.close()


def orphans(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()


# ---- reshaping histories (issue 19.4): names that come back ------------------------------
# What real projects do to names: drop a table or index and make it again with the same
# name (and other columns), rename tables and columns, rebuild a table (12 steps) to the
# same structure or another, spell one name many ways ("Users", [users], `USERS`, a name
# with a space). SQLite reuses the rowids of dropped rows and keeps each spelling as
# written: both have fooled adoption's evidence before.
RESHAPE_OPS = (
    "create",
    "drop",
    "recreate",
    "index",
    "drop_index",
    "reindex",
    "rename",
    "rename_column",
    "add_column",
    "rebuild_same",
    "rebuild_other",
    "backfill",
    "view",
    "drop_view",
    "respell_view",
    "trigger",
    "retrigger",
)
RESHAPE_TABLES = ("users", "Posts", "order items", "tags", "audit")
RESHAPE_COLUMNS = ("name", "Body", "odd col", "status", "rank2")
RESHAPE_INDEXES = ("ix_one", "IX_Two", "ix three")
RESHAPE_VIEWS = ("recent", "Report", "every row")
RESHAPE_TRIGGERS = ("touch", "Touch Again")


def spell(name: str, rng: random.Random) -> str:
    """One of the ways SQL may name `name`: bare when it can, "..", [..], `..`; any case."""
    if rng.random() < 0.3:
        name = name.upper() if rng.random() < 0.5 else name.lower()
    styles = ['"{}"', "[{}]", "`{}`"]
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        styles += ["{}", "{}"]
    return rng.choice(styles).format(name)


@dataclass
class _Shape:
    """The schema the files so far make, by folded name (SQLite's rule for ASCII)."""

    tables: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # key: (name, cols)
    indexes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # key: (name, t, col)
    views: dict[str, tuple[str, str]] = field(default_factory=dict)  # key: (name, table key)
    triggers: dict[str, tuple[str, str]] = field(default_factory=dict)  # key: (name, table key)


def _free(pool: tuple[str, ...], taken: set[str], rng: random.Random) -> str | None:
    left = [n for n in pool if n.lower() not in taken]
    return rng.choice(left) if left else None


def _table_sql(name: str, cols: list[str], rng: random.Random) -> str:
    sep = rng.choice((", ", ",\n    ", " , "))
    body = sep.join(["id INTEGER PRIMARY KEY"] + [f"{spell(c, rng)} TEXT" for c in cols])
    create = rng.choice(("CREATE TABLE", "CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    return f"{create} {spell(name, rng)} ({body});"


def _trigger_sql(name: str, table: str, rng: random.Random) -> str:
    t = spell(table, rng)
    return (
        f"CREATE TRIGGER {spell(name, rng)} AFTER INSERT ON {t} BEGIN "
        f"UPDATE {t} SET id = id WHERE id = new.id; END;"
    )


def _reshape(shape: _Shape, op: str, rng: random.Random) -> str | None:
    """One migration doing `op` to `shape` (updated), or None when it cannot apply."""
    t_taken = set(shape.tables) | set(shape.views)
    tables = sorted(shape.tables)
    views_on = lambda key: [v for v, (_, t) in shape.views.items() if t == key]  # noqa: E731

    def drop_views(key: str) -> list[str]:
        out = [f"DROP VIEW {spell(shape.views[v][0], rng)};" for v in views_on(key)]
        for v in views_on(key):
            del shape.views[v]
        return out

    if op == "create" or (not tables and op != "backfill"):
        name = _free(RESHAPE_TABLES, t_taken, rng)
        if name is None:
            return None
        cols = rng.sample(RESHAPE_COLUMNS, rng.randint(1, 3))
        shape.tables[name.lower()] = (name, cols)
        return _table_sql(name, cols, rng)
    if op == "backfill":
        if not tables:
            return None
        with_cols = [t for t in tables if shape.tables[t][1]]
        if not with_cols:
            return None
        name, cols = shape.tables[rng.choice(with_cols)]
        col = spell(rng.choice(cols), rng)
        return f"UPDATE {spell(name, rng)} SET {col} = {col} || '+';"
    key = rng.choice(tables)
    name, cols = shape.tables[key]
    if op in ("drop", "recreate"):
        if op == "drop" and len(tables) == 1:
            return None
        out = drop_views(key)
        out.append(f"DROP TABLE {spell(name, rng)};")
        for i in [i for i, (_, t, _) in shape.indexes.items() if t == key]:
            del shape.indexes[i]
        for tr in [tr for tr, (_, t) in shape.triggers.items() if t == key]:
            del shape.triggers[tr]
        del shape.tables[key]
        if op == "recreate":
            new_cols = rng.sample(RESHAPE_COLUMNS, rng.randint(1, 3))
            shape.tables[key] = (name, new_cols)
            out.append(_table_sql(name, new_cols, rng))
        return "\n".join(out)
    if op == "index":
        iname = _free(RESHAPE_INDEXES, set(shape.indexes), rng)
        if iname is None or not cols:
            return None
        col = rng.choice(cols)
        shape.indexes[iname.lower()] = (iname, key, col)
        return f"CREATE INDEX {spell(iname, rng)} ON {spell(name, rng)}({spell(col, rng)});"
    if op in ("drop_index", "reindex"):
        if not shape.indexes:
            return None
        ikey = rng.choice(sorted(shape.indexes))
        iname, on, _ = shape.indexes.pop(ikey)
        out = [f"DROP INDEX {spell(iname, rng)};"]
        if op == "reindex":
            tname, tcols = shape.tables[on]
            col = rng.choice(tcols)
            shape.indexes[ikey] = (iname, on, col)
            out.append(
                f"CREATE INDEX {spell(iname, rng)} ON {spell(tname, rng)}({spell(col, rng)});"
            )
        return "\n".join(out)
    if op == "rename":
        new = _free(RESHAPE_TABLES, t_taken, rng)
        if new is None:
            return None
        del shape.tables[key]
        shape.tables[new.lower()] = (new, cols)
        for i, (iname, on, col) in list(shape.indexes.items()):
            if on == key:
                shape.indexes[i] = (iname, new.lower(), col)
        for v, (vname, on) in list(shape.views.items()):
            if on == key:
                shape.views[v] = (vname, new.lower())
        for tr, (trname, on) in list(shape.triggers.items()):
            if on == key:
                shape.triggers[tr] = (trname, new.lower())
        return f"ALTER TABLE {spell(name, rng)} RENAME TO {spell(new, rng)};"
    if op == "rename_column":
        new = _free(RESHAPE_COLUMNS, {c.lower() for c in cols}, rng)
        if new is None or not cols:
            return None
        old = rng.choice(cols)
        cols[cols.index(old)] = new
        for i, (iname, on, col) in list(shape.indexes.items()):
            if on == key and col == old:
                shape.indexes[i] = (iname, on, new)
        return (
            f"ALTER TABLE {spell(name, rng)} RENAME COLUMN {spell(old, rng)} TO {spell(new, rng)};"
        )
    if op == "add_column":
        new = _free(RESHAPE_COLUMNS, {c.lower() for c in cols}, rng)
        if new is None:
            return None
        cols.append(new)
        return f"ALTER TABLE {spell(name, rng)} ADD COLUMN {spell(new, rng)} TEXT DEFAULT 'x';"
    if op in ("rebuild_same", "rebuild_other"):
        # The documented 12 steps: views first, then the new table, copy, drop, rename,
        # the indexes and views again. "same": the structure kept, the text respelled.
        new_cols = list(cols)
        if op == "rebuild_other":
            if cols and rng.random() < 0.5:
                new_cols.remove(rng.choice(cols))
            else:
                extra = _free(RESHAPE_COLUMNS, {c.lower() for c in cols}, rng)
                if extra is None:
                    return None
                new_cols.append(extra)
        views = [(v, shape.views[v]) for v in views_on(key)]
        out = drop_views(key)
        temp = f"{name}_new"
        out.append(_table_sql(temp, new_cols, rng))
        kept = ["id"] + [c for c in new_cols if c in cols]
        listed = ", ".join(spell(c, rng) for c in kept)
        out.append(
            f"INSERT INTO {spell(temp, rng)} ({listed}) SELECT {listed} FROM {spell(name, rng)};"
        )
        out.append(f"DROP TABLE {spell(name, rng)};")
        out.append(f"ALTER TABLE {spell(temp, rng)} RENAME TO {spell(name, rng)};")
        shape.tables[key] = (name, new_cols)
        for i, (iname, on, col) in list(shape.indexes.items()):
            if on != key:
                continue
            if col in new_cols:
                out.append(
                    f"CREATE INDEX {spell(iname, rng)} ON {spell(name, rng)}({spell(col, rng)});"
                )
            else:
                del shape.indexes[i]
        for v, (vname, on) in views:
            shape.views[v] = (vname, on)
            out.append(f"CREATE VIEW {spell(vname, rng)} AS SELECT id FROM {spell(name, rng)};")
        for trname, on in shape.triggers.values():
            if on == key:  # dropped with the old table: made again on the new one
                out.append(_trigger_sql(trname, name, rng))
        return "\n".join(out)
    if op == "view":
        vname = _free(RESHAPE_VIEWS, t_taken, rng)
        if vname is None:
            return None
        shape.views[vname.lower()] = (vname, key)
        return f"CREATE VIEW {spell(vname, rng)} AS SELECT id FROM {spell(name, rng)};"
    if op in ("drop_view", "respell_view"):
        if not shape.views:
            return None
        v = rng.choice(sorted(shape.views))
        vname, on = shape.views[v]
        out = [f"DROP VIEW {spell(vname, rng)};"]
        if op == "respell_view":
            out.append(
                f"CREATE VIEW {spell(vname, rng)} AS SELECT id FROM "
                f"{spell(shape.tables[on][0], rng)};"
            )
        else:
            del shape.views[v]
        return "\n".join(out)
    if op in ("trigger", "retrigger"):
        if op == "retrigger" and shape.triggers:
            tr = rng.choice(sorted(shape.triggers))
            trname, _ = shape.triggers.pop(tr)
            out = [f"DROP TRIGGER {spell(trname, rng)};"]
        else:
            trname = _free(RESHAPE_TRIGGERS, set(shape.triggers), rng) or ""
            out = []
            if not trname:
                return None
        shape.triggers[trname.lower()] = (trname, key)
        out.append(_trigger_sql(trname, name, rng))
        return "\n".join(out)
    raise AssertionError(op)


def _fill(shape: _Shape, k: int) -> str:
    """The app's rows after version k: one per table (ids unique across versions)."""
    out = []
    for name, cols in shape.tables.values():
        q = '"' + name.replace('"', '""') + '"'
        listed = ", ".join(['"id"'] + [f'"{c}"' for c in cols])
        values = ", ".join([str(k * 10 + 1)] + [f"'v{k}'" for _ in cols])
        out.append(f"INSERT INTO {q} ({listed}) VALUES ({values});")
    return "\n".join(out)


def reshaping(steps: list[tuple[str, int]]) -> History:
    """A history from (operation, seed) steps; a step that cannot apply is left out."""
    shape = _Shape()
    rng = random.Random(0)
    first = _reshape(shape, "create", rng)
    assert first is not None
    files = [("001_create.sql", first + "\n")]
    fills = ["", _fill(shape, 1)]
    ops: set[str] = set()
    for op, seed in steps:
        body = _reshape(shape, op, random.Random(seed))
        if body is None:
            continue
        ops.add(op)
        files.append((f"{len(files) + 1:03d}_{op}.sql", body + "\n"))
        fills.append(_fill(shape, len(files)))
    return History(0, tuple(files), tuple(fills), frozenset(ops), (), ())


def master_rows(db: Path) -> list[tuple]:
    """sqlite_master's user objects exactly as written (text, spelling and all)."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return sorted(r for r in found if not r[1].startswith(("sqlite_", "_preflight")))
