"""Which version an untracked database is at, by evidence (adoption, and `stamp`'s check):
the rules and their costs in docs/evidence.md, "Adopting a database without history"."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from preflight import schema
from preflight.core.errors import DriftError, PreflightError
from preflight.core.transaction import immediate
from preflight.fast.facts import connect_ro
from preflight.live.database import Inspection
from preflight.schema import drift
from preflight.schema.reader import Memo
from preflight.schema.sqltext import fold
from preflight.sources.migrations import Migration, run_body, tokens
from preflight.sources.replay import replay, run_one

log = logging.getLogger("preflight")

Name = tuple[str, str]  # (type, lower-case name), as snapshot keys its objects


@dataclass(frozen=True)
class Ranking:
    best: int  # fewest differences (extras included) of any version 1..n
    tier: tuple[int, ...]  # every version with `best` differences, ascending
    matches: tuple[int, ...]  # those of `tier` with no difference but extra objects
    diffs: dict[int, list[drift.Difference]]  # for every version diffed
    snaps: dict[int, schema.Schema]
    head: schema.Schema  # the schema after every migration
    last_seen: dict[Name, int]  # the last version at which each object exists


def names_of(s: schema.Schema) -> set[Name]:
    return (
        {("table", k) for k in s.tables}
        | {("index", k) for k in s.indexes}
        | {("view", k) for k in s.views}
        | {("trigger", k) for k in s.triggers}
    )


_APPEND_ONLY = {"CREATE", "INSERT", "UPDATE", "DELETE", "REPLACE", "SELECT", "WITH"}


def changes_of(migrations: tuple[Migration, ...], names: set[str]) -> set[int]:
    """The versions (1..n) at which any object named in `names` (lower case; a table's
    name also stands for its columns) was created, changed or dropped."""
    found: set[int] = set()
    marks = ", ".join("?" * len(names))
    query = (
        f"SELECT lower(name), tbl_name, sql FROM main.sqlite_master "
        f"WHERE lower(name) IN ({marks}) ORDER BY 1"
    )
    with closing(schema.open_memory()) as conn:
        stamp = conn.execute("PRAGMA main.schema_version").fetchone()[0]
        before = conn.execute(query, tuple(names)).fetchall()
        for count, m in enumerate(migrations, start=1):
            run_one(conn, m, "replay")
            now = conn.execute("PRAGMA main.schema_version").fetchone()[0]
            if now != stamp:
                stamp = now
                after = conn.execute(query, tuple(names)).fetchall()
                if after != before:
                    found.add(count)
                before = after
    return found


def _appends_only(m: Migration) -> bool:
    """It can only add rows to sqlite_master (no DROP, ALTER, PRAGMA, no Python)."""
    return m.kind == "sql" and all(
        (tokens(s.sql)[:1] or [""])[0].upper() in _APPEND_ONLY for s in m.statements
    )


def _bounds(
    live: set[Name], migrations: tuple[Migration, ...], memo: Memo, by_rowid: bool
) -> tuple[list[int], dict[Name, int], schema.Schema]:
    """(per version 0..n the number of names missing from or extra in the live schema, the
    last version at which each name exists, the head schema); by_rowid=False compares with
    the copy after every schema change."""
    apart = len(live)  # names missing from the live schema + names extra in it
    bound, last_seen = [apart], {}
    current: set[Name] = set()
    copy = "temp._preflight_names"
    rows = "SELECT rowid, type, name, tbl_name FROM main.sqlite_master WHERE sql IS NOT NULL"
    with closing(schema.open_memory()) as conn:
        conn.execute(
            f"CREATE TABLE {copy} (rowid INTEGER PRIMARY KEY, type TEXT, name TEXT, tbl_name TEXT)"
        )
        stamp = conn.execute("PRAGMA main.schema_version").fetchone()[0]
        for count, m in enumerate(migrations, start=1):
            top = conn.execute("SELECT max(rowid) FROM main.sqlite_master").fetchone()[0] or 0
            run_one(conn, m, "replay")
            now = conn.execute("PRAGMA main.schema_version").fetchone()[0]
            if now != stamp:  # data-only migrations leave the schema (and the counts) as is
                stamp = now
                if by_rowid and _appends_only(m):
                    added = conn.execute(f"{rows} AND rowid > ?", (top,)).fetchall()
                    removed = []
                else:
                    added = conn.execute(f"{rows} EXCEPT SELECT * FROM {copy}").fetchall()
                    removed = conn.execute(f"SELECT * FROM {copy} EXCEPT {rows}").fetchall()
                conn.executemany(f"DELETE FROM {copy} WHERE rowid = ?", [r[:1] for r in removed])
                conn.executemany(f"INSERT OR REPLACE INTO {copy} VALUES (?, ?, ?, ?)", added)
                gone = _keys(removed) & current
                current -= gone
                last_seen.update(dict.fromkeys(gone, count - 1))
                new = _keys(added) - current
                current |= new
                apart += len(gone & live) - len(gone - live) + len(new - live) - len(new & live)
            bound.append(apart)
        head = schema.snapshot(conn, memo)
    last_seen.update(dict.fromkeys(current, len(migrations)))
    return bound, last_seen, head


def _keys(rows: list[tuple[int, str, str, str]]) -> set[Name]:
    return {
        (t, fold(n))
        for _, t, n, tbl in rows
        if t in ("table", "index", "view", "trigger")
        and not schema.ignored(n)
        and not schema.ignored(tbl)
    }


def rank(live: schema.Schema, migrations: tuple[Migration, ...]) -> Ranking:
    memo: Memo = {}
    found = _rank(live, migrations, memo, True)
    if found is None:
        log.warning("adopt: object names by rowid disagree with the replay; comparing all")
        found = _rank(live, migrations, memo, False)
        if found is None:
            raise AssertionError("adoption evidence: the name bounds disagree with the replay")
    return found


def _rank(
    live: schema.Schema, migrations: tuple[Migration, ...], memo: Memo, by_rowid: bool
) -> Ranking | None:
    """The ranking from the name bounds; None when a fully diffed version shows them wrong."""
    n = len(migrations)
    live_names = names_of(live)
    per_version, last_seen, head = _bounds(live_names, migrations, memo, by_rowid)
    bound = {k: per_version[k] for k in range(1, n + 1)}
    order = sorted(bound, key=lambda k: (bound[k], -k))
    diffs: dict[int, list[drift.Difference]] = {}
    snaps: dict[int, schema.Schema] = {n: head}
    # The lowest bounds first; then every version whose bound could still tie `best`.
    batch = [k for k in order if bound[k] == bound[order[0]]]
    while batch:
        todo = set(batch) - snaps.keys()
        if todo:
            snaps.update(replay(migrations[: max(todo)], todo, memo))
        for k in batch:
            if len(names_of(snaps[k]) ^ live_names) != bound[k]:
                return None
            diffs[k] = drift.diff(snaps[k], live)
        best = min(len(d) for d in diffs.values())
        batch = [k for k in order if k not in diffs and bound[k] <= best]
    tier = tuple(sorted(k for k in diffs if len(diffs[k]) == best))
    matches = tuple(k for k in tier if not drift.errors(diffs[k], False))
    # Some matching a version's SQL text exactly rule the others out (docs/evidence.md).
    exact = tuple(
        k for k in matches if all(live.texts.get(o, t) == t for o, t in snaps[k].texts.items())
    )
    if exact and len(exact) < len(matches):
        log.info(
            "adopt: %s mean the same as the database, but only %s match its SQL text exactly",
            ", ".join(migrations[k - 1].name for k in matches),
            ", ".join(migrations[k - 1].name for k in exact),
        )
        matches = exact
    log.debug(
        "adopt: diffed %d of %d versions; fewest differences %d at %s",
        len(diffs),
        n,
        best,
        ", ".join(migrations[k - 1].name for k in tier),
    )
    return Ranking(best, tier, matches, diffs, snaps, head, last_seen)


def _collides(found: Ranking, live: schema.Schema, k: int) -> bool:
    extras = names_of(live) - names_of(found.snaps[k])
    return any(found.last_seen.get(name, -1) > k for name in extras)


def _rehearse(
    db: Path, migrations: tuple[Migration, ...], candidates: tuple[int, ...]
) -> tuple[dict[int, str], dict[int, str]]:
    """Each candidate's pending migrations on a private copy: (end states, failures)."""
    ends: dict[int, str] = {}
    failures: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="preflight-adopt-") as tmp:
        for k in candidates:
            copy = Path(tmp) / f"candidate-{k}.db"
            with closing(connect_ro(db)) as source, closing(sqlite3.connect(copy)) as dest:
                source.backup(dest)
            with closing(sqlite3.connect(copy, isolation_level=None)) as conn:
                conn.execute("PRAGMA foreign_keys = OFF")
                try:
                    with immediate(conn):
                        for m in migrations[k:]:
                            try:
                                run_body(conn, m, "rehearse")
                            except PreflightError:
                                raise
                            except Exception as exc:
                                raise _Failed(f"{m.name}: {exc}") from exc
                    end = hashlib.sha256()
                    for line in conn.iterdump():
                        if "_preflight" not in line:
                            end.update(line.encode("utf-8", "surrogatepass") + b"\n")
                    ends[k] = end.hexdigest()
                except _Failed as exc:
                    failures[k] = str(exc)
            copy.unlink()
    return ends, failures


class _Failed(Exception):
    pass


def choose(insp: Inspection, migrations: tuple[Migration, ...], found: Ranking) -> int:
    """The version to adopt at, among `found.matches`; raises DriftError when unclear."""
    candidates = found.matches
    if len(candidates) == 1 and not _collides(found, insp.live_schema, candidates[0]):
        return candidates[0]
    names = ", ".join(migrations[k - 1].name for k in candidates)
    between = migrations[candidates[0] : candidates[-1]]
    if (
        len(candidates) > 1
        and all(m.executes_nothing for m in between)
        and not _collides(found, insp.live_schema, candidates[0])
    ):
        log.warning(
            "adopt: schema matches %s equally; the migrations between them execute no "
            "statement, so choosing %s makes no difference",
            names,
            migrations[candidates[-1] - 1].name,
        )
        return candidates[-1]
    log.info(
        "adopt: closest %s; rehearsing the pending migrations of each on a private copy", names
    )
    ends, failures = _rehearse(insp.file or insp.path, migrations, candidates)
    for k, why in failures.items():
        log.info(
            "adopt: not at %s: its pending migrations fail on this database (%s)",
            migrations[k - 1].name,
            why,
        )
    left = tuple(k for k in candidates if k in ends)
    if not left:
        k = candidates[-1]
        raise DriftError(
            f"{insp.path} has no preflight history; its schema is closest to "
            f"{names}, but the pending migrations of each fail on it: "
            + "; ".join(failures[k] for k in candidates),
            stamp_hint(migrations, k),
            details=(f"drift: {d.message()}" for d in found.diffs[k]),
        )
    if len(left) == 1 or len({ends[k] for k in left}) == 1:
        if len(left) > 1:
            log.warning(
                "adopt: schema matches %s equally; upgrading from each gives the same "
                "database (rehearsed), so choosing %s makes no difference",
                ", ".join(migrations[k - 1].name for k in left),
                migrations[left[-1] - 1].name,
            )
        return left[-1]
    real = ", ".join(migrations[k - 1].name for k in left)
    raise DriftError(
        f"{insp.path} has no preflight history and its schema matches several "
        f"versions equally ({real}); upgrading from each gives a different "
        f"database, so the choice matters",
        "say which version it is at: "
        + "; or ".join(
            f"'preflight stamp {migrations[k - 1].version}' if at {migrations[k - 1].name}"
            for k in left
        ),
        details=(
            f"candidate: {migrations[k - 1].name}: preflight stamp {migrations[k - 1].version}"
            for k in left
        ),
    )


def stamp_hint(migrations: tuple[Migration, ...], k: int) -> str:
    m = migrations[k - 1]
    return (
        f"fix the listed objects by hand; or, if you know it is at {m.name}, accept exactly "
        f"these differences with 'preflight stamp {m.version} --force' (recorded: later "
        f"starts accept these and only these)"
    )
