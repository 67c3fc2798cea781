#!/usr/bin/env python3
"""Time what adoption and a drift report do with many migrations: replay with every stop,
diff each stop against the live schema, and name the origin of each difference.

    python3 bench/drift.py              # 100, 300 and 1000 generated migrations
    python3 bench/drift.py 100 300      # chosen sizes

Not a test: CI never times anything. Results go into docs/drift.md by hand.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from preflight import schema  # noqa: E402
from preflight.schema import drift  # noqa: E402
from preflight.sources import migrations  # noqa: E402


def generate(n: int) -> list[str]:
    """n migrations of the kinds real apps write: tables, indexes, added columns, views,
    triggers and the occasional table rebuild."""
    out: list[str] = []
    tables: list[int] = []
    for i in range(1, n + 1):
        last = tables[-1] if tables else 0
        if len(tables) > 1 and i % 10 == 0:
            out.append(f'CREATE VIEW v{i} AS SELECT id, "name" FROM t{last} WHERE name != "x";')
        elif tables and i % 7 == 0:
            k = tables[0]  # views and triggers use the newest table: a rebuild would break them
            out.append(
                f"CREATE TABLE t{k}_new(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '',"
                f" note TEXT COLLATE NOCASE, CHECK (length(name) < 100));\n"
                f"INSERT INTO t{k}_new(id, name) SELECT id, name FROM t{k};\n"
                f"DROP TABLE t{k};\nALTER TABLE t{k}_new RENAME TO t{k};\n"
                f"CREATE INDEX t{k}_name ON t{k}(name);"
            )
        elif tables and i % 3 == 0:
            k = tables[len(tables) // 3]
            out.append(
                f"ALTER TABLE t{k} ADD COLUMN c{i} INTEGER NOT NULL DEFAULT 0;\n"
                f"CREATE INDEX i{i} ON t{k}(c{i}) WHERE c{i} > 0;"
            )
        elif len(tables) > 1 and i % 11 == 0:
            out.append(
                f"CREATE TRIGGER tr{i} AFTER INSERT ON t{last} BEGIN "
                f"UPDATE t{last} SET name = 'new' WHERE id = NEW.id; END;"
            )
        else:
            ref = f", parent INTEGER REFERENCES t{last}(id) ON DELETE CASCADE" if last else ""
            out.append(
                f"CREATE TABLE t{i}(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                f"email TEXT UNIQUE, status TEXT CHECK (status IN ('a', 'b')){ref});\n"
                f"CREATE INDEX t{i}_name ON t{i}(name);"
            )
            tables.append(i)
    return out


def run(n: int) -> dict[str, float]:
    texts = generate(n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "migrations"
        folder.mkdir()
        for i, text in enumerate(texts, 1):
            (folder / f"{i:04d}_m.sql").write_text(text + "\n", encoding="utf-8")
        found = migrations.discover(folder)
        live_conn = sqlite3.connect(":memory:")
        live_conn.executescript("\n".join(texts))
        live_conn.execute("DROP INDEX t1_name")
        live_conn.execute("ALTER TABLE t2 ADD COLUMN surprise TEXT")
        (last,) = live_conn.execute(
            "SELECT max(name) FROM sqlite_master WHERE name GLOB 'i[0-9]*'"
        ).fetchone()
        live_conn.execute(f"DROP INDEX {last}")
        live = schema.snapshot(live_conn)
        live_conn.close()
        times: dict[str, float] = {}
        start = time.process_time()
        steps = schema.replay(found, set(range(n + 1)))
        times["replay"] = time.process_time() - start
        start = time.process_time()
        diffs = {k: drift.diff(steps[k], live) for k in range(n + 1)}
        times["diff"] = time.process_time() - start
        start = time.process_time()
        named = drift.with_origins(
            drift.errors(diffs[n], False), [(found[k - 1], steps[k]) for k in range(1, n + 1)]
        )
        times["with_origins"] = time.process_time() - start
        assert named and all(d.origin for d in named if d.kind == "missing"), named
        return times


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [100, 300, 1000]
    print("| migrations | replay (all stops) | diff (every stop) | with_origins | total |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        t = run(n)
        print(
            f"| {n} | {t['replay']:.2f} s | {t['diff']:.2f} s | {t['with_origins']:.2f} s "
            f"| {sum(t.values()):.2f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
