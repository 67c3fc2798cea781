"""What following the run costs the foreign-key check (issue 19).

From the baseline on, every statement of a run passes through the lineage's trace callback
(preflight/foreignkeys.py). This executes the same statements on one connection inside one
transaction with and without that callback and prints the best of N and the cost per
statement: 20,000 one-row INSERTs whose literals contain "from" (a data file), then 300
groups of CREATE TABLE, INSERT ... SELECT and ALTER TABLE ... RENAME (rebuild-like DDL).

    python3 bench/foreignkeys.py [--rows 20000] [--groups 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preflight.schema import foreignkeys  # noqa: E402
from preflight.schema.lineage import Lineage  # noqa: E402


def workload(rows: int, groups: int) -> list[str]:
    found = [
        "CREATE TABLE p (id INTEGER PRIMARY KEY)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id), body TEXT)",
    ]
    found += [
        f"INSERT INTO t (p_id, body) VALUES (NULL, 'row {i} from the generated file')"
        for i in range(rows)
    ]
    for i in range(groups):
        found += [
            f"CREATE TABLE c{i} (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id))",
            f"INSERT INTO c{i} SELECT id, p_id FROM t WHERE id < 10",
            f"ALTER TABLE c{i} RENAME TO d{i}",
        ]
    return found


def run(statements: list[str], watch: bool) -> float:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    if watch:
        foreignkeys.watch(conn, [])
    start = time.perf_counter()
    for sql in statements:
        conn.execute(sql)
    took = time.perf_counter() - start
    conn.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    statements = workload(args.rows, args.groups)
    plain, watched, alone = [], [], []
    for _ in range(args.runs):  # interleaved: a loaded machine drifts between blocks
        plain.append(run(statements, False))
        watched.append(run(statements, True))
        lineage = Lineage([])
        start = time.perf_counter()
        for sql in statements:
            lineage.statement(sql)
        alone.append(time.perf_counter() - start)
    n = len(statements)
    print(
        f"{n} statements, best of {args.runs}: plain {min(plain) * 1000:.0f} ms, "
        f"watched {min(watched) * 1000:.0f} ms "
        f"({(min(watched) - min(plain)) / n * 1e6:+.1f} us per statement); "
        f"the lineage alone {min(alone) * 1000:.0f} ms ({min(alone) / n * 1e6:.1f} us per statement)"
    )


if __name__ == "__main__":
    main()
