"""Generated real-world histories: the guard agrees with plain sqlite3 at every version.

Each history (tests/histories.py, seeded, so CI runs the same ones every time) is applied
the way an application without the guard would have: plain sqlite3, executescript, foreign
keys off, the app's rows (some orphaned) inserted between migrations. For every version K:

- a fresh build equals plain sqlite3 applying every file (schema and rows);
- adopting the untracked database at K and upgrading it succeeds and equals plain sqlite3
  applying K+1..N to a copy (schema and every row), and a restart then changes nothing.
  The one exception is the issue's real tie (histories.real_candidates: several versions
  with exactly this schema whose pending migrations all apply): then exit 4 naming each
  real candidate with its `stamp` command and no other, and after `stamp K` the same;
- `check` writes nothing and exits 0 or 3 (4 only for a real tie);
- at head, a column or an index the history created, dropped by hand, is drift naming it.

A failure message carries the whole history (files and the app's rows) to replay by hand.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import histories
import pytest
from conftest import folder_state

# 12 histories of 5-30 migrations: every operation of the generator appears (a test below
# proves it), and the suite stays within a few minutes on two cores.
SEEDS = tuple(range(12))
HISTORIES = {seed: histories.generate(seed) for seed in SEEDS}
CASES = [(seed, k) for seed in SEEDS for k in range(len(HISTORIES[seed].files) + 1)]
CACHE_FILE = "app.db.preflight-cache.json"  # documented: rewritten by a verified start


def _build(h: histories.History, folder: Path, prefix: str, with_rows: bool) -> list[Path]:
    dbs = [folder / f"{prefix}000.db"]
    sqlite3.connect(dbs[0]).close()
    for k in range(1, len(h.files) + 1):
        db = histories.copy_db(dbs[-1], folder / f"{prefix}{k:03d}.db")
        histories.apply_plain(db, h.files[k - 1][1])
        if with_rows:
            histories.apply_plain(db, h.fills[k])
        dbs.append(db)
    return dbs


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory):
    """versions(seed) -> [the app's db at 0, at 1, ...]: built once, incrementally, read-only."""
    built: dict[int, list[Path]] = {}

    def get(seed: int) -> list[Path]:
        if seed not in built:
            built[seed] = _build(HISTORIES[seed], tmp_path_factory.mktemp(f"app{seed}"), "v", True)
        return built[seed]

    return get


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory, versions):
    """candidates(seed, k) -> the versions the app's db at k may be adopted at (k included)."""
    fresh: dict[int, list[Path]] = {}

    def get(seed: int, k: int) -> list[int]:
        h = HISTORIES[seed]
        if seed not in fresh:
            fresh[seed] = _build(h, tmp_path_factory.mktemp(f"fresh{seed}"), "f", False)
        if k == 0:
            return [0]
        return histories.real_candidates(
            h, k, versions(seed)[k], fresh[seed], tmp_path_factory.mktemp("rehearse")
        )

    return get


def _folder(make_migrations, seed: int) -> Path:
    return make_migrations(dict(HISTORIES[seed].files))


def _context(seed: int, k: int | None = None) -> str:
    h = HISTORIES[seed]
    where = f" at version {k}" if k is not None else ""
    return f"\nhistory seed={seed}{where} ({len(h.files)} files):\n{h.render()}"


def _assert_same(db: Path, expected: Path, context: str) -> None:
    got_schema, want_schema = histories.schema_of(db), histories.schema_of(expected)
    assert got_schema == want_schema, (
        f"schema differs from plain sqlite3:\n only guard: "
        f"{[x for x in got_schema if x not in want_schema]}\n only sqlite3: "
        f"{[x for x in want_schema if x not in got_schema]}{context}"
    )
    got, want = histories.content_of(db), histories.content_of(expected)
    differing = sorted(t for t in set(got) | set(want) if got.get(t) != want.get(t))
    assert not differing, (
        f"rows differ from plain sqlite3 in {differing}: guard "
        f"{[got.get(t) for t in differing]}, sqlite3 "
        f"{[want.get(t) for t in differing]}{context}"
    )


def _restart_changes_nothing(cli, db: Path, folder: Path, context: str) -> None:
    """A second start at head: exit 0, and only the documented cache file may be rewritten."""
    before = {k: v for k, v in folder_state(db.parent).items() if k != CACHE_FILE}
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, f"no-op restart: {result}{context}"
    after = {k: v for k, v in folder_state(db.parent).items() if k != CACHE_FILE}
    assert after == before, f"no-op restart changed files{context}"


def test_generator_covers_every_operation_and_leaves_orphans(versions):
    """The generator is the suite's premise: prove its histories are what it claims."""
    used = set().union(*(h.ops for h in HISTORIES.values()))
    assert used >= {
        "create_table",
        "add_column",
        "drop_column",
        "rename_column",
        "rename_table",
        "drop_table",
        "create_index",
        "create_unique_index",
        "partial_index",
        "drop_index",
        "create_view",
        "drop_view",
        "create_trigger",
        "drop_trigger",
        "fts_external",
        "fts_standalone",
        "backfill",
        "backfill_from_parent",
        "insert_select",
        "seed_values",
        "rebuild",
        "bracketed",
    }, used
    for seed, h in HISTORIES.items():
        assert 5 <= len(h.files) <= 30
        assert [name[:4] for name, _ in h.files] == [
            f"{i:03d}_" for i in range(1, len(h.files) + 1)
        ]
    with_orphans = [
        seed for seed in SEEDS if any(histories.orphans(db) for db in versions(seed)[1:])
    ]
    assert len(with_orphans) == len(SEEDS)
    texts = "\n".join(text for h in HISTORIES.values() for _, text in h.files)
    for form in (
        "PRAGMA foreign_keys=OFF;",
        "BEGIN TRANSACTION;",
        "END;",
        "COMMIT;",
        "PRAGMA foreign_key_check;",
        "AUTOINCREMENT",
        "CHECK (",
        "DEFAULT ",
        "UNIQUE",
        "USING fts5",
        "RENAME TO",
        "DROP COLUMN",
    ):
        assert form in texts, form


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
def test_fresh_build_equals_plain_sqlite(seed, cli, data_dir, make_migrations, tmp_path):
    h = HISTORIES[seed]
    folder = _folder(make_migrations, seed)
    expected = histories.upgrade_plain(h, 0, tmp_path / "plain.db")
    db = data_dir / "app.db"
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, f"fresh build: {result}{_context(seed)}"
    _assert_same(db, expected, _context(seed))
    _restart_changes_nothing(cli, db, folder, _context(seed))


def _assert_real_tie(result, h: histories.History, real: list[int], context: str) -> None:
    """A real tie: exit 4, every real candidate and its stamp command named, no other."""
    assert result.code == 4, f"ambiguous between {real}: {result}{context}"
    for j in real:
        assert h.files[j - 1][0] in result.err and f"stamp {j}" in result.err, (
            f"the refusal does not offer {h.files[j - 1][0]} ('stamp {j}'): {result}{context}"
        )
    others = set(re.findall(r"stamp (\d+)", result.err)) - {str(j) for j in real}
    assert not others, f"the refusal offers versions that are no candidate {others}: {result}"


@pytest.mark.parametrize("seed,k", CASES, ids=[f"seed{s}-v{k}" for s, k in CASES])
def test_adoption_then_upgrade_equals_plain_sqlite(
    seed, k, cli, data_dir, make_migrations, tmp_path, versions, candidates
):
    """Adopted at k (the one version the evidence allows), upgraded like plain sqlite3.

    When the evidence allows several versions (a real tie: same schema, and each one's
    pending migrations apply), the guard refuses naming them; after `stamp k` it upgrades.
    """
    h = HISTORIES[seed]
    folder = _folder(make_migrations, seed)
    untracked = versions(seed)[k]
    expected = histories.upgrade_plain(h, k, histories.copy_db(untracked, tmp_path / "plain.db"))
    db = histories.copy_db(untracked, data_dir / "app.db")
    real = candidates(seed, k)
    before = folder_state(data_dir)
    result = cli("migrate", "--db", db, "--migrations", folder)
    if len(real) > 1:
        _assert_real_tie(result, h, real, _context(seed, k))
        assert folder_state(data_dir) == before, f"a refusal changed files{_context(seed, k)}"
        stamped = cli("stamp", k, "--db", db, "--migrations", folder)
        assert stamped.code == 0, f"stamp {k}: {stamped}{_context(seed, k)}"
        result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, f"adoption at {k} then upgrade: {result}{_context(seed, k)}"
    _assert_same(db, expected, _context(seed, k))
    _restart_changes_nothing(cli, db, folder, _context(seed, k))


@pytest.mark.parametrize("seed,k", CASES, ids=[f"seed{s}-v{k}" for s, k in CASES])
def test_check_writes_nothing(seed, k, cli, data_dir, make_migrations, versions, candidates):
    """`check` on the app's db at k: nothing written; 0 or 3, or 4 naming a real tie."""
    folder = _folder(make_migrations, seed)
    db = histories.copy_db(versions(seed)[k], data_dir / "app.db")
    before = folder_state(data_dir, strict=True)
    result = cli("check", "--db", db, "--migrations", folder)
    assert folder_state(data_dir, strict=True) == before, f"check wrote{_context(seed, k)}"
    real = candidates(seed, k)
    if len(real) > 1:
        _assert_real_tie(result, HISTORIES[seed], real, _context(seed, k))
    else:
        assert result.code in (0, 3), f"check at {k}: {result}{_context(seed, k)}"


def _drift_at_head(
    cli, data_dir: Path, folder: Path, damage: str, names: str, context: str
) -> None:
    db = data_dir / "app.db"
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, f"fresh build: {result}{context}"
    histories.apply_plain(db, damage)
    for command in ("check", "migrate"):
        before = folder_state(data_dir, strict=command == "check")
        result = cli(command, "--db", db, "--migrations", folder)
        assert result.code == 4, f"{command} after {damage!r}: {result}{context}"
        assert names.lower() in result.err.lower(), (
            f"{command}: the message does not name {names}: {result}{context}"
        )
        assert folder_state(data_dir, strict=command == "check") == before, (
            f"{command} changed files on drift{context}"
        )


DROP_COLUMN = [seed for seed in SEEDS if HISTORIES[seed].drop_columns]
DROP_INDEX = [seed for seed in SEEDS if HISTORIES[seed].indexes]


@pytest.mark.parametrize("seed", DROP_COLUMN, ids=lambda s: f"seed{s}")
def test_dropped_column_at_head_is_drift_naming_it(seed, cli, data_dir, make_migrations):
    h = HISTORIES[seed]
    table, column = h.drop_columns[seed % len(h.drop_columns)]
    _drift_at_head(
        cli,
        data_dir,
        _folder(make_migrations, seed),
        f"ALTER TABLE {table} DROP COLUMN {column};",
        f"{table}.{column}",
        _context(seed),
    )


@pytest.mark.parametrize("seed", DROP_INDEX, ids=lambda s: f"seed{s}")
def test_dropped_index_at_head_is_drift_naming_it(seed, cli, data_dir, make_migrations):
    h = HISTORIES[seed]
    index, _ = h.indexes[seed % len(h.indexes)]
    _drift_at_head(
        cli, data_dir, _folder(make_migrations, seed), f"DROP INDEX {index};", index, _context(seed)
    )


def test_enough_histories_exercise_drift():
    assert len(DROP_COLUMN) >= len(SEEDS) // 2 and len(DROP_INDEX) >= len(SEEDS) // 2


def test_histories_are_reproducible():
    """The same seed gives the same files: CI runs exactly what a failure report shows."""
    for seed in SEEDS[:3]:
        assert histories.generate(seed) == HISTORIES[seed]
