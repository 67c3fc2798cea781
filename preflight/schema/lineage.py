"""Which baseline tables each table's rows come from, followed statement by statement through
renames and rebuilds (docs/internals.md, "Foreign keys: what a run introduced")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from preflight.schema import sqltext, statements


@dataclass(frozen=True)
class RunTable:
    storage: str | None  # the baseline table it is (renamed or not); None: created in the run
    fed: frozenset[str] = frozenset()  # baseline tables whose rows were copied into it
    columns: tuple[tuple[str, str], ...] = ()  # (name now, name at baseline), renamed only

    def origins(self) -> frozenset[str]:
        return (self.fed | {self.storage}) if self.storage else self.fed

    def baseline_column(self, column: str) -> str:
        return dict(self.columns).get(column, column)


# Only these statements can read another table's rows (a plain INSERT ... VALUES cannot).
_READS = {"select", "from"}
_WRITES = {"CREATE", "DROP", "ALTER", "INSERT", "REPLACE", "UPDATE", "WITH"}


class Lineage:
    """The run's trace callback (`foreignkeys.watch`, shared by the loss ledger); an error
    marks it lost: matching falls back to names."""

    def __init__(self, tables: Iterable[str]) -> None:
        self.tables: dict[str, RunTable] = {
            sqltext.fold(t): RunTable(sqltext.fold(t)) for t in tables
        }
        # every baseline table a name stood for: a REFERENCES may outlive its table
        self.named: dict[str, set[str]] = {n: {n} for n in self.tables}
        self.lost = ""
        self.reported = False

    def statement(self, sql: str | None) -> None:
        try:
            if sql:
                self._statement(sql)
        except Exception as exc:  # a trace callback must not raise: SQLite would drop it
            self.lost = self.lost or f"{type(exc).__name__}: {exc}"

    def table(self, name: str) -> RunTable | None:
        return self.tables.get(sqltext.fold(name))

    def stood_for(self, name: str) -> set[str]:
        folded = sqltext.fold(name)
        return self.named.get(folded, set()) | {folded}

    def _bind(self, name: str, table: RunTable) -> None:
        self.tables[name] = table
        self.named.setdefault(name, set()).update(table.origins())

    def _sources(self, toks: list[str], skip: set[int], target: str = "") -> frozenset[str]:
        """The baseline tables whose rows a statement reads: every current table it names (not
        a `t.col` qualifier or column), but the target (`VALUES ((SELECT max(id) ...`)."""
        found: set[str] = set()
        for i, tok in enumerate(toks):
            if i in skip or not sqltext.is_word(tok) or tok[0] == "'":
                continue
            if target and sqltext.name(tok) == target:
                continue
            if i + 1 < len(toks) and toks[i + 1] == ".":
                continue
            if i and toks[i - 1] == "." and (i < 2 or sqltext.name(toks[i - 2]) not in _SCHEMAS):
                continue
            table = self.tables.get(sqltext.name(tok))
            if table is not None:
                found |= table.origins()
        return frozenset(found)

    def _statement(self, sql: str) -> None:
        # Called for every statement of a data file: the common cases without tokenizing.
        first = statements.first_word(sql) or "".join(statements.head(sql, 1))
        if first not in _WRITES:
            return
        writes_rows = first in ("INSERT", "REPLACE", "UPDATE", "WITH")
        if writes_rows and not statements.copies_rows(sql):
            return  # rows from literals: nothing copied from another table
        toks = statements.tokens(sql)  # linear also over a 6 MB literal
        if any(len(t) == 1 and t >= "\x80" for t in toks):
            toks = sqltext.tokens(sql)  # a bare non-ASCII name: read it whole
        words = [sqltext.fold(t) if len(t) < 64 else "" for t in toks]  # keywords only
        if writes_rows and not _READS & set(words):
            return
        if words[0] == "create":
            self._create(toks, words)
        elif words[0] == "drop" and words[1:2] == ["table"]:
            at = 4 if words[2:4] == ["if", "exists"] else 2
            self.tables.pop(_name_at(toks, at)[0], None)
        elif words[0] == "alter" and words[1:2] == ["table"]:
            self._alter(toks, words)
        else:
            self._write(toks, words)

    def _create(self, toks: list[str], words: list[str]) -> None:
        at = 2 if words[1:2] in (["temp"], ["temporary"]) else 1
        if words[at : at + 1] != ["table"]:
            return  # an index, view, trigger or virtual table holds no rows of its own here
        guarded = words[at + 1 : at + 4] == ["if", "not", "exists"]
        name, at = _name_at(toks, at + 1 + 3 * guarded)
        if guarded and name in self.tables:
            return
        fed = self._sources(toks[at:], set()) if words[at : at + 1] == ["as"] else frozenset()
        self._bind(name, RunTable(None, fed))

    def _alter(self, toks: list[str], words: list[str]) -> None:
        name, at = _name_at(toks, 2)
        if words[at : at + 1] != ["rename"]:
            return  # ADD or DROP COLUMN: same rows, same names
        at += 1
        if words[at : at + 1] == ["to"]:
            self._bind(_name_at(toks, at + 1)[0], self.tables.pop(name, RunTable(None)))
            return
        if words[at : at + 1] == ["column"]:
            at += 1
        if at + 2 < len(toks) and words[at + 1] == "to" and name in self.tables:
            table = self.tables[name]
            old, new = sqltext.name(toks[at]), sqltext.name(toks[at + 2])
            was = table.baseline_column(old)
            kept = tuple((now, base) for now, base in table.columns if now != old)
            self.tables[name] = replace(table, columns=(*kept, (new, was)))

    def _write(self, toks: list[str], words: list[str]) -> None:
        """INSERT, REPLACE or UPDATE: the target gets the origins of every table it reads."""
        depth, target, updating = 0, -1, False
        for i, word in enumerate(words):
            depth += {"(": 1, ")": -1}.get(word, 0)
            if depth == 0 and word in ("into", "update"):
                target, updating = i + 1, word == "update"
                if updating and words[target : target + 1] == ["or"]:
                    target += 2
                break
        if target < 0 or target >= len(toks):
            return  # a SELECT (WITH ... SELECT) writes nothing
        name, after = _name_at(toks, target)
        skip = set(range(target, after))
        if after < len(toks) and toks[after] == "(" and not updating:
            from preflight.schema import ddl  # a traced run only: never a fresh build

            skip.update(range(after, ddl.group(toks, after)))  # the INSERT's column list
        if updating:
            # UPDATE: rows come from SET (and UPDATE ... FROM); WHERE only picks the rows
            depth = 0
            for j in range(after, len(toks)):
                depth += {"(": 1, ")": -1}.get(toks[j], 0)
                if depth == 0 and words[j] in ("where", "returning"):
                    skip.update(range(j, len(toks)))
                    break
        fed = self._sources(toks, skip, name)
        table = self.tables.get(name)
        if fed and table is not None:
            self._bind(name, replace(table, fed=table.fed | fed))


_SCHEMAS = {"main", "temp"}


def _name_at(toks: list[str], at: int) -> tuple[str, int]:
    """The folded table name at toks[at] (`name` or `schema.name`), and the index after it."""
    if at + 2 < len(toks) and toks[at + 1] == ".":
        return sqltext.name(toks[at + 2]), at + 3
    return (sqltext.name(toks[at]) if at < len(toks) else ""), at + 1
