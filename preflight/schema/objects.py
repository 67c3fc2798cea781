"""The objects a schema holds that SQLite describes structurally: tables with their
columns, and indexes (views and triggers are kept as normalized SQL in `model.Schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int
    hidden: int
    unique: bool
    collate: str | None = None  # from the table's SQL: PRAGMA table_xinfo does not say
    expression: str | None = None  # a generated column's AS (...), also from the SQL
    conflicts: tuple[tuple[str, str], ...] = ()  # (PRIMARY KEY|UNIQUE|NOT NULL, ON CONFLICT ...)
    rowid: bool = False  # INTEGER PRIMARY KEY of a rowid table: the rowid itself, never NULL

    def describe(self) -> str:
        """e.g. 'TEXT UNIQUE NOT NULL'."""
        parts = [self.type or "(no type)"]
        if self.collate:
            parts.append(f"COLLATE {self.collate}")
        on = dict(self.conflicts)
        for flag, word in (
            (self.pk, "PRIMARY KEY"),
            (self.unique, "UNIQUE"),
            (self.notnull and not self.rowid, "NOT NULL"),
        ):
            if flag or word in on:
                parts.append(word + (f" ON CONFLICT {on[word]}" if word in on else ""))
                if word == "PRIMARY KEY" and self.rowid:
                    parts.append("(the rowid)")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.hidden in (2, 3):
            parts.append(f"AS {self.expression} " + ("VIRTUAL" if self.hidden == 2 else "STORED"))
        elif self.hidden == 1:
            parts.append("HIDDEN")
        return " ".join(parts)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    options: tuple[tuple[str, str], ...]  # (property, value): constraints, keys, flags
    # parents of foreign keys naming no columns: snapshot resolves them to the parent's key
    refs: tuple[str, ...] = field(default=(), compare=False)
    sql: str = field(default="", compare=False, repr=False)  # same text: same table (a shortcut)


@dataclass(frozen=True)
class Index:
    name: str = field(compare=False)  # SQLite names are case-insensitive; dicts key on fold()
    table: str
    unique: bool
    columns: tuple[str, ...]
    where: str | None
    sql: str = field(default="", compare=False, repr=False)  # its and its table's SQL (a shortcut)

    def describe(self) -> str:
        """e.g. 'INDEX ON tokens(token_hash)'."""
        text = f"{'UNIQUE ' if self.unique else ''}INDEX ON {self.table}({', '.join(self.columns)})"
        return text + (f" WHERE {self.where}" if self.where else "")
