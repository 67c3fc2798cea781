#!/usr/bin/env python3
"""Benchmark the guard against dbmate, yoyo-migrations, cp + sync and the sqlite3 CLI.

Run through bench/run, which installs the peers. Every tool runs as a real process,
N times per scenario, on its own fresh copy of the same workload in one temporary
folder; the table shows medians of wall time and the peak RSS of the process tree
(wait4). Nothing here is a test: CI never times anything.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vaultwarden  # noqa: E402

from preflight.sources.migrations import discover, run_body  # noqa: E402

MIB = 1 << 20


class Skip(Exception):
    """A scenario left out with --only."""


# --------------------------------------------------------------------- workloads


def starpunk_sql() -> list[tuple[str, str]]:
    """The application's migrations as plain SQL (what each .py one executes), same for all tools.

    The two .py migrations hash tokens with a Python function; on a fresh database their
    tables are empty, so lower() stands in for it and the schema is identical.
    """
    out = []
    for m in discover(REPO / "migrations"):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        for prior in out:
            conn.executescript(prior[1])
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        conn.execute("BEGIN")
        run_body(conn, m)
        conn.execute("COMMIT")
        conn.close()
        stmts = [
            s.strip().rstrip(";")
            for s in seen
            if s.strip().upper().split()[0] not in ("PRAGMA", "BEGIN", "COMMIT", "SELECT")
        ]
        sql = ";\n".join(s.replace("preflight_sha256_hex(", "lower(") for s in stmts) + ";\n"
        out.append((m.name.rsplit(".", 1)[0], sql))
    return out


def generated_sql(count: int = 200, tables: int = 100) -> list[tuple[str, str]]:
    """`count` migrations over `tables` tables: create each with an index, then alter each."""
    out = []
    for i in range(1, count + 1):
        t = (i - 1) % tables + 1
        if i <= tables:
            sql = (
                f"CREATE TABLE t{t} (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b INTEGER, "
                f"c TEXT, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);\n"
                f"CREATE INDEX t{t}_a ON t{t}(a);\n"
            )
        else:
            sql = (
                f"ALTER TABLE t{t} ADD COLUMN d{i} INTEGER NOT NULL DEFAULT 0;\n"
                f"CREATE INDEX t{t}_b_d{i} ON t{t}(b, d{i});\n"
            )
        out.append((f"gen_{i:03d}", sql))
    return out


PENDING = (
    "add_word_count",
    "ALTER TABLE notes ADD COLUMN word_count INTEGER NOT NULL DEFAULT 0;\n"
    "UPDATE notes SET word_count = length(content_hash) / 5;\n"
    "CREATE INDEX idx_notes_word_count ON notes(word_count);\n",
)


def write_sets(root: Path, name: str, migrations: list[tuple[str, str]]) -> dict[str, Path]:
    """The same SQL as a guard folder, a dbmate folder and a yoyo folder."""
    dirs = {tool: root / f"{name}-{tool}" for tool in ("guard", "dbmate", "yoyo")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for i, (label, sql) in enumerate(migrations, start=1):
        (dirs["guard"] / f"{i:03d}_{label}.sql").write_text(sql)
        (dirs["dbmate"] / f"2020010100{i:04d}_{label}.sql").write_text(
            f"-- migrate:up\n{sql}\n-- migrate:down\n"
        )
        (dirs["yoyo"] / f"{i:04d}_{label}.sql").write_text(sql)
    return dirs


def fill(db: Path, mib: int) -> None:
    """Add about `mib` MiB of notes to a database at the StarPunk head."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    n = 0
    while True:
        conn.executemany(
            "INSERT INTO notes (slug, file_path, published, content_hash) VALUES (?, ?, 1, ?)",
            ((f"note-{n + i}", f"notes/{n + i}.md", os.urandom(450).hex()) for i in range(5000)),
        )
        n += 5000
        if conn.execute("PRAGMA page_count").fetchone()[0] * 4096 >= mib * MIB:
            break
    conn.execute("COMMIT")
    conn.close()


def big_wal_db(db: Path, mib: int) -> None:
    """A WAL database of about `mib` MiB, with its last writes still in the -wal."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB)")
    conn.execute("CREATE INDEX items_k ON items(k)")
    blob = os.urandom(800)
    n = 0
    conn.execute("BEGIN")
    while True:
        conn.executemany(
            "INSERT INTO items (k, v) VALUES (?, ?)",
            ((f"key-{n + i:010d}", blob) for i in range(10000)),
        )
        n += 10000
        if conn.execute("PRAGMA page_count").fetchone()[0] * 4096 >= mib * MIB:
            break
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executemany(
        "INSERT INTO items (k, v) VALUES (?, ?)", ((f"wal-{i:010d}", blob) for i in range(5000))
    )  # ~5 MiB left in the WAL
    # Keep the -wal: copy the files aside before close() checkpoints them.
    keep = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
    conn.close()
    for s, data in keep.items():
        Path(f"{db}{s}").write_bytes(data)


def transplant(filled: Path, guard_head: Path, tool_head: Path, dest: Path) -> None:
    """`dest`: the filled database with another tool's bookkeeping instead of the guard's.

    Filling gigabytes takes minutes; the app's tables are the same SQL for every tool, so
    the data is filled once and each tool's own tables (and their rows, as it wrote them
    when it built `tool_head`) replace the guard's.
    """

    def tables(db: Path) -> dict[str, str]:
        conn = sqlite3.connect(db)
        try:
            return dict(
                conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            )
        finally:
            conn.close()

    mine, theirs = tables(guard_head), tables(tool_head)
    shutil.copyfile(filled, dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    conn.execute("ATTACH ? AS tool", (str(tool_head),))
    conn.execute("BEGIN")
    for name in set(mine) - set(theirs):
        conn.execute(f'DROP TABLE "{name}"')
    for name in set(theirs) - set(mine):
        conn.execute(theirs[name])
        conn.execute(f'INSERT INTO main."{name}" SELECT * FROM tool."{name}"')
    conn.execute("COMMIT")
    conn.execute("DETACH tool")
    conn.close()


# --------------------------------------------------------------------- measuring


@dataclass
class Tool:
    """One competitor in one scenario: how to prepare a run and what to run (timed)."""

    name: str
    note: str
    steps: Callable[[Path], list[list[str]]]  # run folder -> commands, run one after the other
    prepare: Callable[[Path], None] = lambda run: None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    name: str
    note: str
    times: list[float]
    rss: list[int]

    @property
    def median(self) -> float:
        return statistics.median(self.times)


TIME = "/usr/bin/time"  # GNU time: %M is the peak RSS of the command it runs


def run_once(tool: Tool, folder: Path, memory: bool = False) -> tuple[float, int]:
    """Run the tool's commands in `folder`: wall time, and with `memory` the peak RSS in KiB.

    Peak RSS comes from a separate run under GNU time: a child forked from this (big)
    Python process would report our own pages as its high-water mark.
    """
    env = dict(os.environ, **tool.env)
    start = time.perf_counter()
    peak = 0
    for cmd in tool.steps(folder):
        report = folder / ".rss"
        full = [TIME, "-f", "%M", "-o", str(report), *cmd] if memory else cmd
        done = subprocess.run(
            full,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool.name}: {' '.join(cmd)} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace')[-800:]}"
            )
        if memory:
            peak = max(peak, int(report.read_text().split()[-1]))
            report.unlink()
    return time.perf_counter() - start, peak


def measure(tool: Tool, scratch: Path, runs: int) -> Result:
    times, rss = [], []
    for i in range(runs + 2):  # one warm-up run, not counted; the last one measures memory
        folder = scratch / f"{tool.name.split()[0]}-{i}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        tool.prepare(folder)
        os.sync()  # every run starts with nothing dirty to write back
        memory = i == runs + 1
        elapsed, peak = run_once(tool, folder, memory and os.path.exists(TIME))
        if memory:
            rss.append(peak)
        elif i:
            times.append(elapsed)
        shutil.rmtree(folder)
    return Result(tool.name, tool.note, times, rss)


def measure_rounds(tools: list[Tool], scratch: Path, runs: int) -> list[Result]:
    """Like `measure`, with the tools interleaved: each round runs every tool once (a busy
    moment on a shared machine then hits every tool alike). One warm-up round, `runs`
    timed rounds, then one round for peak memory."""
    times: dict[str, list[float]] = {t.name: [] for t in tools}
    rss: dict[str, list[int]] = {t.name: [] for t in tools}
    for i in range(runs + 2):
        for tool in tools:
            folder = scratch / f"{tool.name.split()[0]}-{i}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            tool.prepare(folder)
            os.sync()
            memory = i == runs + 1
            elapsed, peak = run_once(tool, folder, memory and os.path.exists(TIME))
            if memory:
                rss[tool.name].append(peak)
            elif i:
                times[tool.name].append(elapsed)
            shutil.rmtree(folder)
    return [Result(t.name, t.note, times[t.name], rss[t.name]) for t in tools]


def measure_in(tool: Tool, folder: Path, runs: int) -> Result:
    """Like `measure`, but every run in the same folder: for a start that writes nothing,
    on a database too big to copy for each run."""
    times = []
    for i in range(runs + 1):  # one warm-up run, not counted
        os.sync()
        elapsed, _ = run_once(tool, folder)
        if i:
            times.append(elapsed)
    _, peak = run_once(tool, folder, os.path.exists(TIME))
    return Result(tool.name, tool.note, times, [peak])


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(title: str, results: list[Result], out: list[str]) -> None:
    guard = next((r for r in results if r.name.startswith("preflight")), None)
    out.append(f"\n**{title}**\n")
    out.append("| Tool | Median | Min–max | Peak RSS | preflight ÷ tool |")
    out.append("|---|---:|---:|---:|---:|")
    peers = [r for r in results if r.name in ("dbmate", "yoyo")]
    for r in results:
        if guard is None or r is guard:
            ratio = ""
        elif r.name.startswith("preflight"):  # another way to run the guard: its own ratios
            ratio = ", ".join(f"{r.median / p.median:.2f}× {p.name}" for p in peers)
        else:
            ratio = f"{guard.median / r.median:.2f}×"
        out.append(
            f"| {r.name} | {fmt_time(r.median)} | {fmt_time(min(r.times))}–"
            f"{fmt_time(max(r.times))} | {max(r.rss) / 1024:.1f} MiB | {ratio} |"
        )
    print("\n".join(out[-(len(results) + 3) :]), flush=True)


# --------------------------------------------------------------------- scenarios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=Path, default=Path(__file__).parent / ".peers")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 runs (smoke test)")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 0)) or None)
    parser.add_argument(
        "--mid-mib",
        type=int,
        default=int(os.environ.get("BENCH_MID_MIB", 0)) or None,
        help="database size for the pending-migration scenario (default 100)",
    )
    parser.add_argument(
        "--big-mib",
        type=int,
        default=int(os.environ.get("BENCH_BIG_MIB", 0)) or None,
        help="database size for the backup and restore scenarios (default 1024)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="scratch folder (default: a temp dir)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md")
    parser.add_argument(
        "--only", default="123456", help="scenarios to run, e.g. 24 (default 123456)"
    )
    parser.add_argument(
        "--noop-mib",
        default=os.environ.get("BENCH_NOOP_MIB"),
        help="database sizes for the no-op start by size, comma-separated MiB "
        "(default 10,1024,4096; needs about 3x the largest free on disk)",
    )
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    mid = args.mid_mib or (10 if args.quick else 100)
    big = args.big_mib or (50 if args.quick else 1024)
    noop_sizes = [
        int(x) for x in (args.noop_mib or ("10,50" if args.quick else "10,1024,4096")).split(",")
    ]

    dbmate = next(iter(sorted(args.peers.glob("node_modules/@dbmate/*/bin/dbmate"))), None)
    yoyo = args.peers / "venv" / "bin" / "yoyo"
    sqlite_cli = shutil.which("sqlite3")
    py = sys.executable
    guard_env = {"PYTHONPATH": str(REPO)}
    for key in [k for k in os.environ if k.startswith("PREFLIGHT_")]:
        del os.environ[key]

    # As installed (pip compiles the package): no run pays for compiling the guard's code.
    subprocess.run([py, "-m", "compileall", "-q", str(REPO / "preflight")], check=True)
    root = Path(tempfile.mkdtemp(prefix="preflight-bench-", dir=args.dir))
    out = [
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite "
        f"{sqlite3.sqlite_version}, {runs} runs per row (medians), one warm-up run each, "
        f"page cache warm, `sync` before each run."
    ]
    print(out[0], flush=True)
    try:
        sets = {
            "starpunk": write_sets(root, "starpunk", starpunk_sql()),
            "generated": write_sets(root, "generated", generated_sql()),
            "vaultwarden": write_sets(root, "vaultwarden", vaultwarden.migrations()),
        }

        def guard(cmd: str, d: Path, *extra: str, flags: tuple[str, ...] = ()) -> list[str]:
            return [
                py,
                *flags,
                "-m",
                "preflight",
                cmd,
                "--db",
                "app.db",
                "--migrations",
                str(d),
                *extra,
            ]

        def dbmate_up(d: Path) -> list[str]:
            # StarPunk's 005 drops a table named schema_migrations, dbmate's default.
            return [
                str(dbmate),
                "--url",
                "sqlite:app.db",
                "--migrations-dir",
                str(d),
                "--migrations-table",
                "dbmate_migrations",
                "--no-dump-schema",
                "up",
            ]

        def yoyo_apply(d: Path) -> list[str]:
            return [
                str(yoyo),
                "apply",
                "--batch",
                "--no-config-file",
                "--database",
                "sqlite:///app.db",
                str(d),
            ]

        def peers(make: Callable[[str, Path], Tool], setname: str) -> list[Tool]:
            tools = [make("preflight", sets[setname]["guard"])]
            if dbmate:
                tools.append(make("dbmate", sets[setname]["dbmate"]))
            if yoyo.exists():
                tools.append(make("yoyo", sets[setname]["yoyo"]))
            return tools

        # 1. fresh database through the whole history
        for setname, label in (
            ()
            if "1" not in args.only
            else (
                ("starpunk", "StarPunk, 5 migrations"),
                ("vaultwarden", "Vaultwarden-like, 56 migrations"),
                ("generated", "generated, 200 migrations over 100 tables"),
            )
        ):

            def fresh(tool: str, d: Path) -> Tool:
                cmd = {
                    "preflight": lambda run: [guard("migrate", d)],
                    "dbmate": lambda run: [dbmate_up(d)],
                    "yoyo": lambda run: [yoyo_apply(d)],
                }[tool]
                return Tool(tool, "", cmd, env=guard_env if tool == "preflight" else {})

            tools = peers(fresh, setname)
            # The container's start: `preflight run` as the image's ENTRYPOINT runs it.
            entry = dict(
                guard_env, PREFLIGHT_DB="app.db", PREFLIGHT_MIGRATIONS=str(sets[setname]["guard"])
            )
            tools.insert(
                1,
                Tool(
                    "preflight (python3 -S entrypoint.py true)",
                    "",
                    lambda run: [[py, "-S", str(REPO / "entrypoint.py"), "true"]],
                    env=entry,
                ),
            )
            table(
                f"1. Fresh database ({label}; {runs * 2} interleaved rounds)",
                measure_rounds(tools, root / "scratch", runs * 2),
                out,
            )

        # 2. no-op start, database at head (built by each tool itself, untimed)
        for setname, label in (
            ()
            if "2" not in args.only
            else (("starpunk", "StarPunk"), ("generated", "200 migrations"))
        ):

            def noop(tool: str, d: Path) -> Tool:
                build = {
                    "preflight": [guard("migrate", d)],
                    "dbmate": [dbmate_up(d)],
                    "yoyo": [yoyo_apply(d)],
                }[tool]

                def prepare(run: Path, build: list[str] = build) -> None:
                    for cmd in build:
                        subprocess.run(
                            cmd,
                            cwd=run,
                            env=dict(os.environ, **guard_env),
                            check=True,
                            capture_output=True,
                        )
                    if tool == "preflight":  # the first start after a build writes the cache
                        subprocess.run(
                            guard("run", d, "--", "true"),
                            cwd=run,
                            check=True,
                            env=dict(os.environ, **guard_env),
                            capture_output=True,
                        )

                cmd = {
                    "preflight": lambda run: [guard("run", d, "--", "true")],
                    "dbmate": lambda run: [dbmate_up(d)],
                    "yoyo": lambda run: [yoyo_apply(d)],
                }[tool]
                return Tool(tool, "", cmd, prepare, env=guard_env if tool == "preflight" else {})

            tools = peers(noop, setname)
            d = sets[setname]["guard"]
            tools[0].name = "preflight (python3 -m preflight run -- true)"
            # The container ENTRYPOINT: entrypoint.py is `preflight run -- CMD`; -S skips
            # site-packages, which a standard-library-only guard does not need.
            tools.insert(
                0,
                Tool(
                    "preflight (python3 -S entrypoint.py true)",
                    "",
                    lambda run: [[py, "-S", str(REPO / "entrypoint.py"), "true"]],
                    tools[0].prepare,
                    dict(guard_env, PREFLIGHT_DB="app.db", PREFLIGHT_MIGRATIONS=str(d)),
                ),
            )
            tools[0].prepare = tools[1].prepare
            tools.append(Tool("python3 -c pass (floor)", "", lambda run: [[py, "-c", "pass"]]))
            tools.append(
                Tool("python3 -S -c pass (floor)", "", lambda run: [[py, "-S", "-c", "pass"]])
            )
            table(
                f"2. No-op start, database at head ({label})",
                [measure(t, root / "scratch", runs * 3) for t in tools],
                out,
            )

        # 3. one pending migration on a mid-size database
        bases = {}
        if "3" not in args.only:
            raise Skip
        for tool in ("preflight", "dbmate", "yoyo"):
            if (tool == "dbmate" and not dbmate) or (tool == "yoyo" and not yoyo.exists()):
                continue
            base = root / f"base-{tool}"
            base.mkdir()
            cmd = {
                "preflight": guard("migrate", sets["starpunk"]["guard"]),
                "dbmate": dbmate_up(sets["starpunk"]["dbmate"]),
                "yoyo": yoyo_apply(sets["starpunk"]["yoyo"]),
            }[tool]
            subprocess.run(
                cmd, cwd=base, env=dict(os.environ, **guard_env), check=True, capture_output=True
            )
            fill(base / "app.db", mid)
            shutil.rmtree(base / "backups", ignore_errors=True)
            bases[tool] = base
        plus = {k: root / f"pending-{k}" for k in ("guard", "dbmate", "yoyo")}
        for tool, d in plus.items():
            shutil.copytree(sets["starpunk"][tool], d)
        n = len(list(plus["guard"].iterdir())) + 1
        (plus["guard"] / f"{n:03d}_{PENDING[0]}.sql").write_text(PENDING[1])
        (plus["dbmate"] / f"2020010100{n:04d}_{PENDING[0]}.sql").write_text(
            f"-- migrate:up\n{PENDING[1]}\n-- migrate:down\n"
        )
        (plus["yoyo"] / f"{n:04d}_{PENDING[0]}.sql").write_text(PENDING[1])

        def pending(tool: str, _: Path) -> Tool:
            def prepare(run: Path) -> None:
                shutil.copyfile(bases[tool] / "app.db", run / "app.db")
                if tool == "preflight":
                    shutil.copyfile(
                        bases[tool] / "app.db.preflight-cache.json",
                        run / "app.db.preflight-cache.json",
                    )

            cmd = {
                "preflight": lambda run: [guard("migrate", plus["guard"])],
                "dbmate": lambda run: [dbmate_up(plus["dbmate"])],
                "yoyo": lambda run: [yoyo_apply(plus["yoyo"])],
            }[tool]
            return Tool(tool, "", cmd, prepare, env=guard_env if tool == "preflight" else {})

        size = (bases["preflight"] / "app.db").stat().st_size / MIB
        table(
            f"3. One pending migration (ADD COLUMN, UPDATE every row, CREATE INDEX) on a "
            f"{size:.0f} MiB database",
            [measure(t, root / "scratch", runs) for t in peers(pending, "starpunk")],
            out,
        )

    except Skip:
        pass
    try:
        # 5. no-op start by database size: cheap checks on every start, the full check by
        # policy (default: when the last one is older than 24h)
        if "5" in args.only:
            by_size: dict[str, dict[int, Result]] = {}
            for mib in noop_sizes:
                for name, result in noop_by_size(
                    root,
                    sets["starpunk"],
                    mib,
                    runs * 2,
                    guard,
                    dbmate_up if dbmate else None,
                    yoyo_apply if yoyo.exists() else None,
                    guard_env,
                    out,
                ).items():
                    by_size.setdefault(name, {})[mib] = result
            size_table(by_size, noop_sizes, runs * 2, out)
        # 6. restore, and backups and restores by clone on a copy-on-write filesystem
        if "6" in args.only:
            source = root / "big"
            if not source.exists():
                source.mkdir()
                big_wal_db(source / "app.db", big)
            litestream = args.peers / "venv" / "bin" / "litestream"
            restore_scenarios(
                root,
                source,
                runs,
                py,
                guard_env,
                sqlite_cli,
                str(litestream) if litestream.exists() else None,
                out,
            )
        # 4. verified backup of a big WAL database
        if "4" not in args.only:
            raise Skip
        source = root / "big"
        if not source.exists():
            source.mkdir()
            big_wal_db(source / "app.db", big)
        size = sum(f.stat().st_size for f in source.iterdir()) / MIB
        src, wal = source / "app.db", source / "app.db-wal"
        tools = [
            Tool(
                "preflight backup",
                "",
                lambda run: [
                    [
                        py,
                        "-m",
                        "preflight",
                        "backup",
                        "--db",
                        str(src),
                        "--backup-dir",
                        str(run),
                        "--keep-backups",
                        "0",
                    ]
                ],
                env=guard_env,
            ),
            Tool("cp + sync", "", lambda run: [["cp", str(src), str(wal), str(run)], ["sync"]]),
        ]
        if sqlite_cli:
            tools.append(
                Tool(
                    "sqlite3 .backup + sync",
                    "",
                    lambda run: [[sqlite_cli, str(src), f".backup '{run / 'copy.db'}'"], ["sync"]],
                )
            )
            tools.append(
                Tool(
                    "sqlite3 VACUUM INTO + sync",
                    "",
                    lambda run: [
                        [sqlite_cli, str(src), f"VACUUM INTO '{run / 'copy.db'}'"],
                        ["sync"],
                    ],
                )
            )
        else:
            print("bench: note: no sqlite3 CLI; its rows are skipped", flush=True)
        table(
            f"4. Verified backup of a {size:.0f} MiB WAL database (5 MiB of it in the -wal)",
            [measure(t, root / "scratch", runs) for t in tools],
            out,
        )
    except Skip:
        pass
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text("\n".join(out) + "\n")
    print(f"\nbench: table written to {args.out}", flush=True)
    return 0


def restore_scenarios(
    root: Path,
    source: Path,
    runs: int,
    py: str,
    env: dict[str, str],
    sqlite_cli: str | None,
    litestream: str | None,
    out: list[str],
) -> None:
    """6. Backup and restore of the big WAL database, on this machine's filesystem and on a
    loop-mounted XFS with reflinks (root only; otherwise a note says it was left out).

    Restore rows: `preflight restore BACKUP` (the current state kept by a hard link, the
    backup's recorded sha256 tree checked in the copying pass), against `cp` + `sync` of
    the backup, `sqlite3 .restore` + `sync` and `litestream restore` + `sync` from a file
    replica of the same database. Each run restores over its own full-size copy of the
    database; rounds interleaved.
    """
    sys.path.insert(0, str(REPO / "tests"))
    from contextlib import ExitStack

    import xfskit

    size = sum(f.stat().st_size for f in source.iterdir()) / MIB
    with ExitStack() as stack:
        places = [(f"{fs_type(root)} ({root.parent})", root / "fs-local")]
        try:
            mnt = stack.enter_context(
                xfskit.mounted(root / "xfs", size=f"{int(size * 5 // 1024) + 2}G")
            )
            places.append(("XFS with reflink=1, loop-mounted", mnt / "bench"))
        except xfskit.NoReflinkFilesystem as exc:
            print(f"bench: note: XFS rows left out: {exc}", flush=True)
        for label, place in places:
            place_rows(label, place, source, size, runs, py, env, sqlite_cli, litestream, out)
            shutil.rmtree(place, ignore_errors=True)


def place_rows(
    label: str,
    place: Path,
    source: Path,
    size: float,
    runs: int,
    py: str,
    env: dict[str, str],
    sqlite_cli: str | None,
    litestream: str | None,
    out: list[str],
) -> None:
    """Scenario 6 on one filesystem: the backup table, then the restore table. Every row
    makes its copy durable: `sync FILE` (fsync of the copy) after `cp` and `sqlite3`, so
    no row waits for other processes' writes, as a global `sync` would."""

    def copies(run: Path) -> list[str]:
        return [str(run / name) for name in ("app.db", "app.db-wal")]

    place.mkdir(parents=True)
    for name in ("app.db", "app.db-wal"):
        subprocess.run(["cp", "--reflink=never", str(source / name), str(place / name)], check=True)
    master = place / "backups"
    subprocess.run(
        [
            py,
            "-m",
            "preflight",
            "backup",
            "--db",
            str(place / "app.db"),
            "--backup-dir",
            str(master),
            "--keep-backups",
            "0",
        ],
        env=dict(os.environ, **env),
        check=True,
        capture_output=True,
    )
    (taken,) = master.glob("*-manual.db")
    db, wal = place / "app.db", place / "app.db-wal"
    never = ["cp", "--reflink=never"]
    xfs = label.startswith("XFS")
    backups = [
        Tool(
            "preflight backup",
            "",
            lambda run: [
                [
                    py,
                    "-m",
                    "preflight",
                    "backup",
                    "--db",
                    str(db),
                    "--backup-dir",
                    str(run),
                    "--keep-backups",
                    "0",
                ]
            ],
            env=env,
        ),
        Tool(
            "cp --reflink=never + sync",
            "",
            lambda run: [[*never, str(db), str(wal), str(run)], ["sync", *copies(run)]],
        ),
    ]
    if xfs:
        backups.append(
            Tool(
                "cp --reflink=always + sync",
                "",
                lambda run: [
                    ["cp", "--reflink=always", str(db), str(wal), str(run)],
                    ["sync", *copies(run)],
                ],
            )
        )
    if sqlite_cli:
        backups.append(
            Tool(
                "sqlite3 .backup + sync",
                "",
                lambda run: [
                    [sqlite_cli, str(db), f".backup '{run / 'copy.db'}'"],
                    ["sync", str(run / "copy.db")],
                ],
            )
        )
    vs_table(
        f"6. Backup of a {size:.0f} MiB WAL database on {label} ({runs} interleaved rounds)",
        measure_rounds(backups, place / "scratch", runs),
        "cp --reflink=never + sync",
        out,
    )

    # The state a restore replaces: the database as a stopped app leaves it (restore refuses
    # while one runs), i.e. its WAL checkpointed into it at the last close.
    state = place / "state"
    state.mkdir()
    for name in ("app.db", "app.db-wal"):
        subprocess.run([*never, str(source / name), str(state / name)], check=True)
    conn = sqlite3.connect(state / "app.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()

    def current(run: Path) -> None:
        """A full copy of that state, and a backup of it taken in place by the guard (so
        its record's inode stamp holds, as for any backup the guard took)."""
        subprocess.run([*never, str(state / "app.db"), str(run / "app.db")], check=True)
        subprocess.run(
            [
                py,
                "-m",
                "preflight",
                "backup",
                "--db",
                str(run / "app.db"),
                "--backup-dir",
                str(run / "backups"),
            ],
            env=dict(os.environ, **env),
            check=True,
            capture_output=True,
        )

    def fresh(run: Path) -> str:
        return str(next((run / "backups").glob("*-manual.db")))

    restores = [
        Tool(
            "preflight restore BACKUP",
            "",
            lambda run: [
                [
                    py,
                    "-m",
                    "preflight",
                    "restore",
                    fresh(run),
                    "--db",
                    str(run / "app.db"),
                    "--backup-dir",
                    str(run / "backups"),
                ]
            ],
            prepare=current,
            env=env,
        ),
        Tool(
            "cp --reflink=never + sync",
            "",
            lambda run: [
                [*never, str(taken), str(run / "restored.db")],
                ["sync", str(run / "restored.db")],
            ],
        ),
    ]
    if xfs:
        restores.append(
            Tool(
                "cp --reflink=always + sync",
                "",
                lambda run: [
                    ["cp", "--reflink=always", str(taken), str(run / "restored.db")],
                    ["sync", str(run / "restored.db")],
                ],
            )
        )
    if sqlite_cli:
        restores.append(
            Tool(
                "sqlite3 .restore + sync",
                "",
                lambda run: [
                    [sqlite_cli, str(run / "restored.db"), f".restore '{taken}'"],
                    ["sync", str(run / "restored.db")],
                ],
            )
        )
    if litestream:
        config = replica(litestream, taken, place / "litestream")
        restores.append(
            Tool(
                "litestream restore + sync (file replica)",
                "",
                lambda run: [
                    [
                        litestream,
                        "restore",
                        "-config",
                        str(config),
                        "-o",
                        str(run / "restored.db"),
                        str(place / "litestream" / "app.db"),
                    ],
                    ["sync", str(run / "restored.db")],
                ],
            )
        )
    vs_table(
        f"6. Restore of a {taken.stat().st_size / MIB:.0f} MiB backup on {label} "
        f"({runs} interleaved rounds)",
        measure_rounds(restores, place / "scratch", runs),
        "cp --reflink=never + sync",
        out,
    )


def replica(litestream: str, source: Path, folder: Path) -> Path:
    """A Litestream file replica of a copy of `source`: `litestream replicate` runs until
    the replica restores, then stops. Returns its config."""
    folder.mkdir()
    db = folder / "app.db"
    shutil.copyfile(source, db)
    config = folder / "litestream.yml"
    config.write_text(
        f"dbs:\n  - path: {db}\n    replicas:\n      - type: file\n"
        f"        path: {folder / 'replica'}\n        sync-interval: 100ms\n"
    )
    probe = folder / "probe.db"
    with open(folder / "replicate.log", "wb") as log:
        proc = subprocess.Popen(
            [litestream, "replicate", "-config", str(config)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(1)
            done = subprocess.run(
                [litestream, "restore", "-config", str(config), "-o", str(probe), str(db)],
                capture_output=True,
            )
            if done.returncode == 0:
                probe.unlink()
                return config
        raise RuntimeError(f"no restorable Litestream replica of {db} within 600 s")
    finally:
        proc.terminate()
        proc.wait(30)


def fs_type(path: Path) -> str:
    """The filesystem type holding `path` (from /proc/mounts: the longest mount prefix)."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            point = fields[1]
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(
                best
            ):
                best, kind = point, fields[2]
    return kind


def vs_table(title: str, results: list[Result], base: str, out: list[str]) -> None:
    """Like `table`, with every row divided by the `base` row's median."""
    ref = next(r for r in results if r.name == base)
    out.append(f"\n**{title}**\n")
    out.append(f"| Tool | Median | Min–max | Peak RSS | ÷ {base} |")
    out.append("|---|---:|---:|---:|---:|")
    for r in results:
        out.append(
            f"| {r.name} | {fmt_time(r.median)} | {fmt_time(min(r.times))}–"
            f"{fmt_time(max(r.times))} | {max(r.rss, default=0) / 1024:.1f} MiB | "
            f"{r.median / ref.median:.2f}× |"
        )
    print("\n".join(out[-(len(results) + 3) :]), flush=True)


def noop_by_size(
    root: Path,
    dirs: dict[str, Path],
    mib: int,
    runs: int,
    guard: Callable[..., list[str]],
    dbmate_up: Callable[[Path], list[str]] | None,
    yoyo_apply: Callable[[Path], list[str]] | None,
    guard_env: dict[str, str],
    out: list[str],
) -> dict[str, Result]:
    """Scenario 5 at one size: each tool's no-op start on its own database of `mib` MiB."""
    py = sys.executable
    here = root / f"size-{mib}"
    heads = {}
    build = {"preflight": guard("migrate", dirs["guard"])}
    if dbmate_up:
        build["dbmate"] = dbmate_up(dirs["dbmate"])
    if yoyo_apply:
        build["yoyo"] = yoyo_apply(dirs["yoyo"])
    for tool, cmd in build.items():
        heads[tool] = here / f"head-{tool}"
        heads[tool].mkdir(parents=True)
        subprocess.run(
            cmd, cwd=heads[tool], env=dict(os.environ, **guard_env), check=True, capture_output=True
        )
    folders = {"preflight": heads["preflight"]}
    fill(heads["preflight"] / "app.db", mib)  # the guard's cache (checked_at: now) stays valid
    for tool in build:
        if tool != "preflight":
            folders[tool] = here / tool
            folders[tool].mkdir()
            transplant(
                heads["preflight"] / "app.db",
                heads["preflight"] / "app.db",
                heads[tool] / "app.db",
                folders[tool] / "app.db",
            )
    size = (folders["preflight"] / "app.db").stat().st_size / MIB
    env = dict(guard_env, PREFLIGHT_DB="app.db", PREFLIGHT_MIGRATIONS=str(dirs["guard"]))
    entry = [py, "-S", str(REPO / "entrypoint.py"), "true"]
    tools = [
        Tool(
            "preflight (python3 -S entrypoint.py true)",
            "default --integrity 24h",
            lambda run: [entry],
            env=env,
        ),
        Tool(
            "preflight, PREFLIGHT_INTEGRITY=every-start",
            "quick_check on every start",
            lambda run: [entry],
            env=dict(env, PREFLIGHT_INTEGRITY="every-start"),
        ),
    ]
    if dbmate_up:
        tools.append(Tool("dbmate", "", lambda run: [dbmate_up(dirs["dbmate"])]))
    if yoyo_apply:
        tools.append(Tool("yoyo", "", lambda run: [yoyo_apply(dirs["yoyo"])]))
    tools.append(Tool("python3 -S -c pass (floor)", "", lambda run: [[py, "-S", "-c", "pass"]]))
    results = {}
    try:
        for tool in tools:
            folder = folders.get(tool.name.split()[0].rstrip(","), folders["preflight"])
            results[tool.name] = measure_in(tool, folder, runs)
    finally:
        shutil.rmtree(here, ignore_errors=True)
    table(f"5. No-op start, {size:.0f} MiB database", list(results.values()), out)
    return results


def size_table(
    by_size: dict[str, dict[int, Result]], sizes: list[int], runs: int, out: list[str]
) -> None:
    """Scenario 5 side by side: median per size, and the guard's ratio to each peer."""

    def label(mib: int) -> str:
        return f"{mib} MiB" if mib < 1024 else f"{mib / 1024:g} GiB"

    out.append(f"\n**5. No-op start by database size (medians of {runs} runs)**\n")
    out.append("| Tool | " + " | ".join(label(m) for m in sizes) + " |")
    out.append("|---|" + "---:|" * len(sizes))
    for name, row in by_size.items():
        out.append(
            f"| {name} | "
            + " | ".join(fmt_time(row[m].median) if m in row else "" for m in sizes)
            + " |"
        )
    guard = next(iter(by_size.values()))
    for peer in ("dbmate", "yoyo"):
        if peer in by_size:
            out.append(
                f"| preflight ÷ {peer} | "
                + " | ".join(f"{guard[m].median / by_size[peer][m].median:.2f}×" for m in sizes)
                + " |"
            )
    print("\n".join(out[-(len(by_size) + 5) :]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
