"""Generated histories: random sequences of what real apps' migrations do (create, rebuild,
rename, add columns, indexes, views, triggers, FTS5, backfills, seeds). For every version K,
an untracked database built by plain sqlite3 (foreign keys off, a row in every table, some
orphaned) is adopted and upgraded to exactly what plain sqlite3 makes of it; or refused as
ambiguous, listing K among the candidates, untouched, and then `stamp K` leads there."""

from __future__ import annotations

import random
import re
import sqlite3
import tempfile
from pathlib import Path

import histories as h
import pytest
from conftest import dump as dump_all
from conftest import folder_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preflight import schema
from preflight.sources import evidence
from preflight.sources import migrations as mig


def dump(db: Path) -> list[str]:
    return [line for line in dump_all(db) if "sqlite_sequence" not in line]


def history(seed: int, length: int = 12) -> dict[str, str]:
    """A random, valid migration history; table `core` is never dropped (never empty)."""
    rnd = random.Random(seed)
    tables: dict[str, list[str]] = {"core": ["id", "name"]}
    indexes: list[str] = []
    files = {"001_core.sql": "CREATE TABLE core (id INTEGER PRIMARY KEY, name TEXT);"}
    serial = 0
    for v in range(2, length + 1):
        serial += 1
        ops = [
            "create",
            "create",
            "column",
            "index",
            "backfill",
            "seed",
            "view",
            "trigger",
            "fts",
            "rebuild",
            "rename",
            "drop_index",
            "drop",
        ]
        op = rnd.choice(ops)
        others = [t for t in tables if t != "core"]
        if op == "drop_index" and not indexes:
            op = "drop"
        if op == "create" or (op in ("rename", "drop", "rebuild") and not others):
            op, name = "create", f"t{serial}"
            parent = rnd.choice(list(tables))
            sql = (
                f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, {parent}_id INTEGER "
                f"REFERENCES {parent}(id), note TEXT);"
            )
            tables[name] = ["id", f"{parent}_id", "note"]
        elif op == "column":
            t = rnd.choice(list(tables))
            col = f"c{serial}"
            sql = f"ALTER TABLE {t} ADD COLUMN {col} TEXT DEFAULT 'x';"
            tables[t].append(col)
        elif op == "index":
            t = rnd.choice(list(tables))
            name = f"ix{serial}"
            sql = f"CREATE INDEX {name} ON {t}({rnd.choice(tables[t])});"
            indexes.append(name)
        elif op == "drop_index":
            sql = f"DROP INDEX {indexes.pop(rnd.randrange(len(indexes)))};"
        elif op == "backfill":
            sql = "UPDATE core SET name = coalesce(name, '') || '+';"
        elif op == "seed":
            sql = f"INSERT INTO core (name) VALUES ('seed {serial}');"
        elif op == "view":
            sql = f"CREATE VIEW v{serial} AS SELECT id, name FROM core WHERE id > {serial};"
        elif op == "trigger":
            sql = (
                f"CREATE TRIGGER tr{serial} AFTER INSERT ON core BEGIN "
                f"UPDATE core SET name = upper(new.name) WHERE id = new.id; END;"
            )
        elif op == "fts":
            sql = f"CREATE VIRTUAL TABLE fts{serial} USING fts5(body);"
        elif op == "rebuild":
            t = rnd.choice(others)
            cols = ", ".join(tables[t])
            # The documented 12-step rebuild (inside the guard's own transaction).
            indexes[:] = [i for i in indexes if not _on(files, i, t)]
            sql = (
                f"CREATE TABLE {t}_new (id INTEGER PRIMARY KEY, "
                + ", ".join(f"{c} TEXT" for c in tables[t][1:])
                + ");\n"
                f"INSERT INTO {t}_new ({cols}) SELECT {cols} FROM {t};\n"
                f"DROP TABLE {t};\nALTER TABLE {t}_new RENAME TO {t};"
            )
        elif op == "rename":
            t = rnd.choice(others)
            new = f"{t}r{serial}"
            sql = f"ALTER TABLE {t} RENAME TO {new};"
            tables[new] = tables.pop(t)
        else:  # drop
            t = rnd.choice(others)
            indexes[:] = [i for i in indexes if not _on(files, i, t)]
            sql = f"DROP TABLE {t};"
            del tables[t]
        files[f"{v:03d}_{op}.sql"] = sql
    return files


def _on(files: dict[str, str], index: str, table: str) -> bool:
    return any(f"CREATE INDEX {index} ON {table}(" in sql for sql in files.values())


def build(db: Path, files: dict[str, str], upto: int) -> Path:
    """Plain sqlite3 at version `upto`, then a row in every table (some orphaned)."""
    conn = sqlite3.connect(db)
    for name in sorted(files)[:upto]:
        conn.executescript(files[name])
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
            "AND name NOT LIKE 'fts%' AND name NOT LIKE 'sqlite%'"
        )
    ]
    for t in tables:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')][1:]
        conn.execute(
            f'INSERT INTO "{t}" ({", ".join(["id"] + cols)}) VALUES '
            f"({', '.join(['1000'] + ['777'] * len(cols))})"
        )  # 777: orphans
    conn.commit()
    conn.close()
    return db


def finish(db: Path, files: dict[str, str], upto: int) -> list[str]:
    conn = sqlite3.connect(db)
    for name in sorted(files)[upto:]:
        conn.executescript(files[name])
    conn.close()
    return dump(db)


@pytest.mark.parametrize("seed", range(6))
def test_every_version_of_a_generated_history_is_adopted_as_plain_sqlite3_would_upgrade_it(
    cli, tmp_path, make_migrations, seed
):
    files = history(seed)
    folder = make_migrations(files)
    for k in range(1, len(files) + 1):
        data = tmp_path / f"k{k}"
        data.mkdir()
        db = build(data / "app.db", files, k)
        expected = finish(build(tmp_path / f"ref{k}.db", files, k), files, k)
        state = folder_state(data)
        result = cli("migrate", "--db", db, "--migrations", folder)
        if result.code == 4:
            assert "matches several versions equally" in result.err, (k, result)
            assert k in {int(v) for v in re.findall(r"'preflight stamp (\d+)'", result.err)}
            assert folder_state(data) == state
            assert cli("stamp", k, "--db", db, "--migrations", folder).code == 0
            result = cli("migrate", "--db", db, "--migrations", folder)
        assert result.code == 0, (seed, k, files, result)
        assert dump(db) == expected, (seed, k, files)


# ---- reshaping histories (issue 19.4) -----------------------------------------------------
STEPS = st.lists(
    st.tuples(st.sampled_from(h.RESHAPE_OPS), st.integers(0, 10_000)), min_size=1, max_size=8
)
RESHAPE_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _versions(history: h.History, root: Path) -> list[list[tuple]]:
    """sqlite_master after 0..n files, applied by plain sqlite3 one after the other."""
    db = root / "versions.db"
    sqlite3.connect(db).close()
    out = [h.master_rows(db)]
    for _, text in history.files:
        h.apply_plain(db, text)
        out.append(h.master_rows(db))
    return out


@RESHAPE_SETTINGS
@given(steps=STEPS)
def test_reshaped_names_never_fool_the_name_bounds(steps):
    """For every live version K and every version J, the bound is exactly the number of
    names missing or extra: SQLite reusing rowids and respelled names change nothing."""
    history = h.reshaping(steps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "migrations"
        folder.mkdir()
        for name, text in history.files:
            (folder / name).write_text(text)
        migrations = mig.discover(folder)
        names = []
        for k in range(len(history.files) + 1):
            db = root / f"v{k}.db"
            sqlite3.connect(db).close()
            for _, text in history.files[:k]:
                h.apply_plain(db, text)
            conn = sqlite3.connect(db)
            names.append(evidence.names_of(schema.snapshot(conn)))
            conn.close()
        for live in names[1:]:
            for trust in (True, False):
                got, _, _ = evidence._bounds(live, migrations, {}, trust)
                assert got == [len(live ^ at) for at in names], (trust, history.render())


@RESHAPE_SETTINGS
@given(steps=STEPS)
def test_reshaping_histories_adopt_the_right_version_or_refuse_a_real_tie(cli, steps):
    """Untracked at every K: adopted and upgraded to exactly what plain sqlite3 makes of it;
    refused (exit 4, untouched) only when versions with exactly the database's schema
    text upgrade it to different databases, listing exactly those."""
    history = h.reshaping(steps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "migrations"
        folder.mkdir()
        for name, text in history.files:
            (folder / name).write_text(text)
        versions = _versions(history, root)
        n = len(history.files)
        for k in range(1, n + 1):
            live = h.build_untracked(history, k, root / f"live{k}.db")
            exact = [j for j in range(1, n + 1) if versions[j] == h.master_rows(live)]
            assert k in exact
            ends = {}
            for j in exact:
                try:
                    end = h.upgrade_plain(history, j, h.copy_db(live, root / f"r{k}-{j}.db"))
                except sqlite3.Error:
                    assert j != k
                    continue
                ends[j] = dump(end)
            data = root / f"data{k}"
            data.mkdir()
            db = h.copy_db(live, data / "app.db")
            state = folder_state(data)
            result = cli("migrate", "--db", db, "--migrations", folder)
            context = (k, history.render())
            if len({tuple(e) for e in ends.values()}) > 1:
                assert result.code == 4, (result, context)
                assert "matches several versions equally" in result.err, context
                listed = {int(v) for v in re.findall(r"'preflight stamp (\d+)'", result.err)}
                assert listed == set(ends), (listed, context)
                assert folder_state(data) == state
            else:
                assert result.code == 0, (result, context)
                assert dump(db) == ends[k], context
