"""Adoption of an untracked database at version K of N create-only migrations (issue 9/10).

Usage: python bench/adoption.py [N] [K]   (defaults 1000, 500); prints the seconds `migrate` took.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else n // 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "migrations"
        folder.mkdir()
        db = Path(tmp) / "app.db"
        conn = sqlite3.connect(db)
        for i in range(1, n + 1):
            sql = (
                f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT);\n"
                f"CREATE INDEX t{i}_v ON t{i}(v);\n"
            )
            (folder / f"{i:04d}_t{i}.sql").write_text(sql)
            if i <= k:
                conn.executescript(sql)
        conn.close()
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
        print(f"{n} migrations, untracked at {k}: exit {done.returncode} in {took:.1f} s")
        if done.returncode:
            print(done.stderr[-2000:])


if __name__ == "__main__":
    main()
