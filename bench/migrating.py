"""The migrating start by database size (issue 20), against what an operator would run.

Usage: python bench/migrating.py [--sizes 1024,4096] [--runs 5] [--xfs] [--small] [--dir DIR]

One pending migration, ADD COLUMN and CREATE INDEX on the big table (the same SQL for
every row), on a StarPunk database filled with notes to each size; with `--small`, the
ADD COLUMN alone (a schema change that rewrites no row: issue 20's "one small pending
migration"). Rows:

- preflight: the image's start, `python3 -S entrypoint.py true` (the quick start hands
  over to the full pipeline): lock, inspect, plan, a verified backup (copied, compared
  block by block, hashed; a clone on XFS), the migration in one transaction,
  verification (`quick_check`, schema, foreign keys). Two rows: with a full check of
  this file recorded within PREFLIGHT_INTEGRITY (the last start ran it: an untimed
  `migrate --integrity 1s` with the old migrations first), which the backup relies on
  instead of its own `quick_check` of the source; and with none recorded (the copy in
  the run folder is another file), where the backup runs it;
- manual: `cp` + `sync backup.db` (the backup, made durable: `sync FILE` is its fsync, so
  no row waits for other processes' writes), then the SQL through the sqlite3 CLI in one
  transaction (`BEGIN; ...; COMMIT;`): nothing checked;
- sqlite3 .backup + sync backup.db, then the same SQL: a consistent backup, unchecked;
- dbmate up: the migration alone, no backup;
- plain copy: `cp --reflink=never` + `sync` of the file alone (the yardstick of issue 20's
  XFS goal: a migrating start at most 0.25x a plain copy).

Rounds are interleaved (each round runs every row once; each run on its own fresh copy
of the database, made before the timed part; `sync` before each run), so a busy moment on
a shared machine hits every row alike. Printed: median and min of the wall time, and
each row's ratio to `manual` (median of the per-round ratios, and the ratio of the mins),
and the CPU seconds (user + sys) its processes used: steadier than wall time on a
shared machine.
With `--xfs` (root) the same runs on a loop-mounted XFS with reflinks (tests/xfskit.py);
there the manual row copies with `cp --reflink=never` and one more row with
`cp --reflink=always`. Peers from bench/.peers (bench/run installs them).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

import bench  # noqa: E402

SMALL = "ALTER TABLE notes ADD COLUMN word_count INTEGER NOT NULL DEFAULT 0;\n"
SQL = SMALL + "CREATE INDEX idx_notes_word_count ON notes(word_count);\n"
MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,4096", help="MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--xfs", action="store_true", help="also on a loop-mounted XFS (root)")
    parser.add_argument("--small", action="store_true", help="the ADD COLUMN alone, no index")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder")
    parser.add_argument("--peers", type=Path, default=HERE / ".peers")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    global DBMATE, SQL
    if args.small:
        SQL = SMALL
    dbmate = next(iter(sorted(args.peers.glob("node_modules/@dbmate/*/bin/dbmate"))), None)
    DBMATE = str(dbmate or "")
    cli = shutil.which("sqlite3")
    if cli is None:
        raise SystemExit("bench: the sqlite3 CLI is needed (bench/run installs it)")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "preflight")], check=True)
    for key in [k for k in os.environ if k.startswith("PREFLIGHT_")]:
        del os.environ[key]
    root = Path(tempfile.mkdtemp(prefix="preflight-migrating-", dir=args.dir))
    print(
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite "
        f"{sqlite3.sqlite_version}; {args.runs} interleaved rounds after one warm-up round",
        flush=True,
    )
    try:
        sets = bench.write_sets(root, "starpunk", bench.starpunk_sql())
        plus = pending(root, sets)
        places = [(bench.fs_type(root), root / "local")]
        with ExitStack() as stack:
            if args.xfs:
                import xfskit

                image = f"{max(sizes) * 6 // 1024 + 4}G"
                mnt = stack.enter_context(xfskit.mounted(root / "xfs", size=image))
                places.append(("XFS, reflink=1, loop-mounted", mnt / "bench"))
            for label, place in places:
                place.mkdir(parents=True)
                for mib in sizes:
                    bases = build(place / f"base-{mib}", sets, mib, dbmate is not None)
                    rows = tools(bases, plus, cli, dbmate, label.startswith("XFS"), sets)
                    size = (bases["preflight"] / "app.db").stat().st_size / MIB
                    report(f"{size:.0f} MiB on {label}", rounds(rows, place / "runs", args.runs))
                    shutil.rmtree(place / f"base-{mib}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def pending(root: Path, sets: dict[str, Path]) -> dict[str, Path]:
    """StarPunk's migrations plus the pending one, for the guard and for dbmate."""
    plus = {k: root / f"pending-{k}" for k in ("guard", "dbmate")}
    for tool, folder in plus.items():
        shutil.copytree(sets[tool], folder)
    n = len(list(plus["guard"].iterdir())) + 1
    (plus["guard"] / f"{n:03d}_add_word_count.sql").write_text(SQL)
    (plus["dbmate"] / f"2020010100{n:04d}_add_word_count.sql").write_text(
        f"-- migrate:up\n{SQL}\n-- migrate:down\n"
    )
    return plus


def build(base: Path, sets: dict[str, Path], mib: int, with_dbmate: bool) -> dict[str, Path]:
    """The database at StarPunk's head filled to `mib` (built by the guard), and a copy with
    dbmate's bookkeeping instead of the guard's (bench.transplant)."""
    guard = base / "preflight"
    guard.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    migrate = [sys.executable, "-m", "preflight", "migrate", "--db", "app.db"]
    subprocess.run([*migrate, "--migrations", str(sets["guard"])], cwd=guard, env=env, check=True)
    bench.fill(guard / "app.db", mib)
    shutil.rmtree(guard / "backups", ignore_errors=True)
    bases = {"preflight": guard}
    if with_dbmate:
        head = base / "dbmate-head"
        head.mkdir()
        subprocess.run(dbmate_up(sets["dbmate"]), cwd=head, check=True, capture_output=True)
        bases["dbmate"] = base / "dbmate"
        bases["dbmate"].mkdir()
        bench.transplant(
            guard / "app.db", guard / "app.db", head / "app.db", bases["dbmate"] / "app.db"
        )
    return bases


DBMATE = ""
CPU: dict[str, list[float]] = {}  # user + sys seconds of each timed run's processes


def dbmate_up(folder: Path) -> list[str]:
    return [
        DBMATE,
        "--url",
        "sqlite:app.db",
        "--migrations-dir",
        str(folder),
        "--migrations-table",
        "dbmate_migrations",
        "--no-dump-schema",
        "up",
    ]


Steps = Callable[[Path], list[list[str]]]
# (name, base folder to copy, commands in the run folder, environment, untimed commands first)
Row = tuple[str, Path, Steps, dict[str, str], Steps]


def nothing(run: Path) -> list[list[str]]:
    return []


def tools(
    bases: dict[str, Path],
    plus: dict[str, Path],
    cli: str,
    dbmate: Path | None,
    xfs: bool,
    sets: dict[str, Path],
) -> list[Row]:
    """The rows: what each runs, on a copy of which base, with what environment."""
    sql = ["BEGIN;", SQL, "COMMIT;"]
    guard_env = {
        "PYTHONPATH": str(REPO),
        "PREFLIGHT_DB": "app.db",
        "PREFLIGHT_MIGRATIONS": str(plus["guard"]),
    }
    start = [sys.executable, "-S", str(REPO / "entrypoint.py"), "true"]
    # The previous start of this very file ran the full check (its interval had passed).
    checked = [
        [sys.executable, "-m", "preflight", "migrate", "--integrity", "1s"]
        + ["--migrations", str(sets["guard"])]
    ]
    never = ["cp", "--reflink=never"]
    out: list[Row] = [
        (
            "preflight, a full check recorded within the interval",
            bases["preflight"],
            lambda run: [start],
            guard_env,
            lambda run: checked,
        ),
        (
            "preflight, none recorded (the backup checks)",
            bases["preflight"],
            lambda run: [start],
            guard_env,
            nothing,
        ),
        (
            "manual: cp + sync, sqlite3 BEGIN; SQL; COMMIT",
            bases["preflight"],
            lambda run: [
                [*never, "app.db", "backup.db"],
                ["sync", "backup.db"],
                [cli, "app.db", *sql],
            ],
            {},
            nothing,
        ),
    ]
    if xfs:
        out.append(
            (
                "manual with cp --reflink=always",
                bases["preflight"],
                lambda run: [
                    ["cp", "--reflink=always", "app.db", "backup.db"],
                    ["sync", "backup.db"],
                    [cli, "app.db", *sql],
                ],
                {},
                nothing,
            )
        )
    out.append(
        (
            "sqlite3 .backup + sync, then the SQL",
            bases["preflight"],
            lambda run: [
                [cli, "app.db", ".backup backup.db"],
                ["sync", "backup.db"],
                [cli, "app.db", *sql],
            ],
            {},
            nothing,
        )
    )
    if dbmate is not None:
        out.append(
            (
                "dbmate up (no backup)",
                bases["dbmate"],
                lambda run: [dbmate_up(plus["dbmate"])],
                {},
                nothing,
            )
        )
    plain = [[*never, "app.db", "copy.db"], ["sync", "copy.db"]]
    out.append(
        (
            "plain copy: cp --reflink=never + sync",
            bases["preflight"],
            lambda run: plain,
            {},
            nothing,
        )
    )
    return out


def rounds(rows: list[Row], scratch: Path, runs: int) -> dict[str, list[float]]:
    """Wall seconds per row, `runs` interleaved rounds after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name, *_ in rows}
    CPU.clear()  # this size's only: the report's median must not mix sizes
    for i in range(runs + 1):
        for name, base, steps, env, prepare in rows:
            run = scratch / "run"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            for item in base.iterdir():
                if item.is_file():
                    subprocess.run(
                        ["cp", "--reflink=never", str(item), str(run / item.name)], check=True
                    )
            execute(name, prepare(run), run, env)
            os.sync()
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            execute(name, steps(run), run, env)
            took = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
            if i:
                times[name].append(took)
                CPU.setdefault(name, []).append(busy)
            print(f"  round {i} {name}: {took:.2f} s (CPU {busy:.2f} s)", flush=True)
            shutil.rmtree(run)
    return times


def execute(name: str, commands: list[list[str]], run: Path, env: dict[str, str]) -> None:
    for cmd in commands:
        done = subprocess.run(
            cmd,
            cwd=run,
            env=dict(os.environ, **env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name}: {cmd} exited {done.returncode}: {done.stderr[-800:]!r}")


def report(title: str, times: dict[str, list[float]]) -> None:
    base = next(n for n in times if n.startswith("manual"))
    print(f"\n**Migrating start, one pending migration, {title}**\n")
    print("| Row | Median | Min | ÷ manual (median of rounds) | ÷ manual (mins) | CPU s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in times.items():
        per_round = [v / m for v, m in zip(values, times[base])]
        print(
            f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s | "
            f"{statistics.median(per_round):.2f}× | {min(values) / min(times[base]):.2f}× | "
            f"{statistics.median(CPU.get(name, [0.0])):.2f} |"
        )
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
