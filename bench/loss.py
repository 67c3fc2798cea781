"""What counting the loss costs (issue 24): a 1 GiB rebuild with and without the accounting.

A database of about `--mib` MiB (users, and notes holding nearly all of it) at migration
002; migration 003 rebuilds notes the 12-step way (create, copy every row, drop, rename).
Each run gets its own fresh copy (made before the clock starts, then `sync`), interleaved
in rounds so that a loaded machine drifts evenly over every variant:

- `sqlite3`: the manual path, `sqlite3 app.db < 003.sql` (one transaction, nothing checked);
- `cp + sqlite3`: the manual path with a backup first (`cp` + `sync`, then the same);
- `preflight, no accounting`: `preflight migrate` with the loss ledger switched off
  (`Ledger` given no planned migration, so it counts nothing: the start as it was before issue 24);
- `preflight`: `preflight migrate` as shipped.

And the no-op start (`python3 -S entrypoint.py true` on the migrated database) for each
preflight variant. Prints a markdown table of medians and min-max.

    python3 bench/loss.py [--mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HISTORY = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n",
    "002_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES "
    "users (id), title TEXT, body TEXT, created TEXT, flag INTEGER);\n",
}
REBUILD = """PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE notes_new (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id),
    title TEXT, body TEXT, created TEXT, flag INTEGER);
INSERT INTO notes_new (id, user_id, title, body, created, flag)
    SELECT id, user_id, title, body, created, flag FROM notes;
DROP TABLE notes;
ALTER TABLE notes_new RENAME TO notes;
COMMIT;
"""
# The start as it was before issue 24: the ledger counts nothing.
NO_ACCOUNTING = (
    "import sys; from preflight.live import ledger; "
    "init = ledger.Ledger.__init__; "
    "ledger.Ledger.__init__ = lambda self, conn, planned, policy, lineage: "
    "init(self, conn, (), policy, lineage); "
    "from preflight.entry import main; sys.argv[0] = 'preflight'; main()"
)


def build(folder: Path, mib: int) -> Path:
    """The database at 002 with about `mib` MiB of notes (built by the guard, then filled)."""
    migrations = folder / "migrations"
    migrations.mkdir()
    for name, text in HISTORY.items():
        (migrations / name).write_text(text)
    db = folder / "seed.db"
    preflight(db, migrations, "migrate")
    rows = mib * 1024 * 1024 // 250
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"user {i}") for i in range(1000)])
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO notes SELECT i, i % 1000, 'title ' || i, hex(randomblob(100)), "
        "'2024-01-01', i % 2 FROM n",
        (rows,),
    )
    conn.execute("COMMIT")
    conn.close()
    (migrations / "003_rebuild_notes.sql").write_text(REBUILD)
    return db


def preflight(db: Path, migrations: Path, *args: str, code: str = "") -> None:
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "preflight"]
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFLIGHT_DB=str(db))
    env["PREFLIGHT_MIGRATIONS"] = str(migrations)
    env["PREFLIGHT_KEEP_BACKUPS"] = "1"
    subprocess.run([*argv, *args], env=env, check=True, capture_output=True)


def fresh(seed: Path, folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    db = folder / "app.db"
    shutil.copyfile(seed, db)
    subprocess.run(["sync"], check=True)
    return db


def timed(db: Path, migrations: Path, code: str, *rest: str) -> float:
    start = time.perf_counter()
    preflight(db, migrations, *rest, code=code)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="preflight-loss-bench-") as tmp:
        root = Path(tmp)
        seed = build(root, args.mib)
        migrations = root / "migrations"
        print(f"database: {seed.stat().st_size / (1 << 20):.0f} MiB", flush=True)
        found: dict[str, list[float]] = {}
        for round_ in range(args.runs + 1):  # the first round warms up
            for label in ("sqlite3", "cp + sqlite3", "preflight, no accounting", "preflight"):
                db = fresh(seed, root / "run")
                if label == "sqlite3":
                    took = shell(f"sqlite3 {db} < {migrations / '003_rebuild_notes.sql'}")
                elif label == "cp + sqlite3":
                    took = shell(
                        f"cp {db} {db}.bak && sync && sqlite3 {db} < "
                        f"{migrations / '003_rebuild_notes.sql'} && sync"
                    )
                else:
                    code = NO_ACCOUNTING if "no accounting" in label else ""
                    took = timed(db, migrations, code, "migrate")
                    noop = min(noop_start(db, migrations) for _ in range(5))
                    if round_:
                        found.setdefault(f"no-op start after {label}", []).append(noop)
                if round_:
                    found.setdefault(label, []).append(took)
                print(f"round {round_} {label}: {took:.2f} s", flush=True)
        base = statistics.median(found["preflight, no accounting"])
        manual = statistics.median(found["sqlite3"])
        print()
        print("| Variant | Median | Min–max | ÷ no accounting | ÷ sqlite3 |")
        print("|---|---:|---:|---:|---:|")
        for label, times in found.items():
            med = statistics.median(times)
            print(
                f"| {label} | {med * 1000:.0f} ms | {min(times) * 1000:.0f}–{max(times) * 1000:.0f} ms | "
                f"{med / base:.2f}× | {med / manual:.2f}× |"
            )


def noop_start(db: Path, migrations: Path) -> float:
    """`python3 -S entrypoint.py true` on the migrated database: the container's no-op start."""
    env = dict(os.environ, PREFLIGHT_DB=str(db), PREFLIGHT_MIGRATIONS=str(migrations))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-S", str(REPO / "entrypoint.py"), "true"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def shell(command: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, shell=True, check=True, capture_output=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
