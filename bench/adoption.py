"""Adoption of an untracked database at version K of N migrations (issues 9/10, 19).

Usage: python bench/adoption.py [N ...] [--at half|head] [--kind create|mixed] [--runs R]

Defaults: sizes 600 and 6000, K = N/2, create-only migrations (a table and an index
each), 3 runs per size. `--kind mixed` adds what real histories do: every 3rd migration
adds a column, every 7th drops an earlier table (rowids reused), every 11th rebuilds one
(12-step). Each run is `preflight migrate` as a real process on a fresh copy of the
database; printed are medians of the wall time and of the guard's own `plan` step
(ranking the versions and choosing one: the adoption), and each size's ratio to the
first size. "sqlite3 floor" is plain sqlite3 running the N files once on an in-memory
database: SQLite re-reads sqlite_master on every CREATE (a scan of every object so far),
so any replay of a create-only history grows with N x objects; adoption replays once,
and a second time only as far as the closest versions.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def history(n: int, kind: str) -> list[str]:
    """N migration texts; every one applies with plain sqlite3 after the ones before."""
    out = []
    alive: list[int] = []
    for i in range(1, n + 1):
        if kind == "mixed" and i % 7 == 0 and len(alive) > 2:
            gone = alive.pop(len(alive) // 2)
            out.append(f"DROP TABLE t{gone};\n")
        elif kind == "mixed" and i % 11 == 0 and alive:
            t = alive[len(alive) // 3]
            out.append(
                f"CREATE TABLE t{t}_new (id INTEGER PRIMARY KEY, v TEXT);\n"
                f"INSERT INTO t{t}_new (id, v) SELECT id, v FROM t{t};\n"
                f"DROP TABLE t{t};\nALTER TABLE t{t}_new RENAME TO t{t};\n"
                f"CREATE INDEX t{t}_v ON t{t}(v);\n"
            )
        elif kind == "mixed" and i % 3 == 0 and alive:
            out.append(f"ALTER TABLE t{alive[-1]} ADD COLUMN c{i} TEXT;\n")
        else:
            alive.append(i)
            out.append(
                f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT);\n"
                f"CREATE INDEX t{i}_v ON t{i}(v);\n"
            )
    return out


def build(folder: Path, db: Path, texts: list[str], k: int) -> None:
    folder.mkdir()
    conn = sqlite3.connect(db)
    for i, sql in enumerate(texts, start=1):
        (folder / f"{i:05d}_m{i}.sql").write_text(sql)
        if i <= k:
            conn.executescript(sql)
    conn.close()


def floor(texts: list[str]) -> float:
    conn = sqlite3.connect(":memory:")
    start = time.perf_counter()
    for sql in texts:
        conn.executescript(sql)
    took = time.perf_counter() - start
    conn.close()
    return took


def step_ms(err: str, step: str) -> float:
    found = re.findall(rf"preflight: {step}: .* in (\d+) ms", err)
    return float(found[-1]) if found else float("nan")


def run_once(folder: Path, template: Path, work: Path) -> tuple[float, float]:
    db = work / "app.db"
    for path in work.glob("app.db*"):
        path.unlink()
    shutil.copyfile(template, db)
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "preflight",
            "migrate",
            "--db",
            str(db),
            "--migrations",
            str(folder),
            "--backup",
            "never",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"exit {done.returncode}:\n{done.stderr[-2000:]}")
    return took, step_ms(done.stderr, "plan") / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[600, 6000])
    parser.add_argument("--at", choices=("half", "head"), default="half")
    parser.add_argument("--kind", choices=("create", "mixed"), default="create")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setups = []
        for n in args.sizes:
            k = n if args.at == "head" else n // 2
            folder, template = Path(tmp) / f"migrations{n}", Path(tmp) / f"template{n}.db"
            texts = history(n, args.kind)
            build(folder, template, texts, k)
            setups.append((n, k, folder, template, texts))
        work = Path(tmp) / "work"
        work.mkdir()
        # Rounds run every size once, so that other load on the machine hits all alike.
        got: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.sizes}
        for _ in range(args.runs):
            for n, _k, folder, template, texts in setups:
                wall, plan = run_once(folder, template, work)
                got[n].append((wall, plan, floor(texts)))
    print(
        f"| N | K | wall, median of {args.runs} | plan step, median (min) | "
        "sqlite3 floor, median (min) | wall ÷ first | plan ÷ first (by min) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first: tuple[float, float] | None = None
    for n, k, *_ in setups:
        wall = statistics.median(g[0] for g in got[n])
        plans = [g[1] for g in got[n]]
        floors = [g[2] for g in got[n]]
        first = first or (wall, min(plans))
        print(
            f"| {n} | {k} | {wall:.2f} s | {statistics.median(plans):.2f} s "
            f"({min(plans):.2f} s) | {statistics.median(floors):.2f} s ({min(floors):.2f} s) | "
            f"{wall / first[0]:.1f}x | {min(plans) / first[1]:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
