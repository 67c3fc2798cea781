#!/usr/bin/env python3
"""Parsing cost of big migration files: time and peak memory of migrations.load.

Not a test (CI never times anything). Two files, as issue 10 item 12 describes them:
20,000 INSERT lines, and one INSERT of a 6.4 MB string literal. Each runs in a child
process so that its peak RSS (resource.getrusage, after the first, timed load) is its own;
tracemalloc's peak (of a second, untimed load) is the Python allocations during load.

    python3 bench/parse.py                 # both files at the issue's sizes
    python3 bench/parse.py --scale 0.1     # a tenth of each (the old parser's memory)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_inserts(path: Path, lines: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("CREATE TABLE notes (id INTEGER PRIMARY KEY, slug TEXT, body TEXT);\n")
        for i in range(lines):
            f.write(
                f"INSERT INTO notes (slug, body) VALUES ('note-{i}', 'body; of it''s note {i}');\n"
            )


def write_literal(path: Path, size: int) -> None:
    chunk = "lorem ipsum; dolor sit amet, it''s -- not a comment /* nor this */\n"
    body = chunk * (size // len(chunk) + 1)
    path.write_text(
        f"CREATE TABLE blobs (body TEXT);\nINSERT INTO blobs VALUES ('{body[:size]}');\n",
        encoding="utf-8",
    )


def measure(path: str) -> dict[str, float]:
    """Run in the child: load the file once, report seconds, tracemalloc peak, max RSS."""
    import resource
    import time
    import tracemalloc

    sys.path.insert(0, str(ROOT))
    from preflight.sources import migrations

    t0 = time.perf_counter()
    m = migrations.load(Path(path))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del m
    tracemalloc.start()  # a second load: tracemalloc slows the one it watches
    m = migrations.load(Path(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": round(seconds, 3),
        "statements": len(m.statements),
        "tracemalloc_peak_mib": round(peak / 2**20, 1),
        "max_rss_mib": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "20,000 INSERT lines": (
                Path(tmp) / "001_inserts.sql",
                write_inserts,
                int(20_000 * args.scale),
            ),
            "6.4 MB string literal": (
                Path(tmp) / "002_literal.sql",
                write_literal,
                int(6_400_000 * args.scale),
            ),
        }
        print(
            f"| file (scale {args.scale}) | size | statements | seconds | tracemalloc peak | max RSS |"
        )
        print("|---|---|---|---|---|---|")
        for label, (path, write, size) in files.items():
            write(path, size)
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True
            )
            if done.returncode != 0:
                print(
                    f"| {label} | {path.stat().st_size / 1e6:.1f} MB | failed: "
                    f"{done.stderr.strip().splitlines()[-1:]} |||"
                )
                continue
            r = json.loads(done.stdout)
            print(
                f"| {label} | {path.stat().st_size / 1e6:.1f} MB | {r['statements']} | "
                f"{r['seconds']} | {r['tracemalloc_peak_mib']} MiB | {r['max_rss_mib']} MiB |"
            )


if __name__ == "__main__":
    main()
