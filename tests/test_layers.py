"""The package's import graph: no cycles, and each floor imports only from below.

Built from the source (ast), every import counted, also those inside functions: a lazy
import is still a dependency, and a cycle through one is still a cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import MIGRATIONS

PACKAGE = Path(__file__).resolve().parent.parent / "preflight"

# Floors, bottom up; a module may import only from its own floor or below.
GROUND = {"errors", "names", "files", "faults", "ancestry"}  # files, fsync, /proc; no SQL
FACTS = {"facts"}  # the no-op proof's facts: options, hashes, cache key, header probe
QUICK = {"quickstart"}  # the quick start: facts only
TOP = {"cli", "entry", "__main__"}


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("preflight"):
                rest = (node.module or "").split(".")[1:]
                found.update(rest[:1] or [a.name for a in node.names])
        edges[path.stem] = {m for m in found if m in modules and m != "__init__"}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle as a path of module names, or [] if there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_import_graph_has_no_cycle():
    assert cycle(graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_each_floor_imports_only_from_below():
    edges = graph()
    for module in GROUND:
        assert edges[module] <= GROUND, module
    assert edges["facts"] <= GROUND
    assert edges["quickstart"] <= GROUND | FACTS | {"toolquick"}
    assert edges["toolquick"] <= GROUND | FACTS | {"toolfiles"}  # a tool's no-op start
    assert edges["toolfiles"] <= GROUND | FACTS
    everything_below_top = set(edges) - TOP
    for module in everything_below_top:
        assert not edges[module] & TOP, f"{module} imports {edges[module] & TOP}"
    assert edges["entry"] == {"quickstart", "cli"}


def test_every_entry_point_calls_the_one_entry_function():
    root = PACKAGE.parent
    assert 'preflight = "preflight.entry:main"' in (root / "pyproject.toml").read_text()
    assert "from preflight.entry import main" in (root / "entrypoint.py").read_text()
    assert "from .entry import main" in (PACKAGE / "__main__.py").read_text()
    assert "from preflight.entry import main\\nmain()" in (root / "Dockerfile").read_text()


HEAVY = (
    "json",
    "re",
    "argparse",
    "logging",
    "dataclasses",
    "pathlib",
    "hashlib",
    "sqlite3",
    "typing",
    "functools",  # _sqlite3 would import it (and collections) for its statement cache
    "collections",
    "__future__",
)


def _imported(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines."""
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            found.add(line.rsplit("|", 1)[1].strip())
    return found


def test_a_no_op_start_imports_only_its_budget(cli, make_db, tmp_path):
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    env = {
        "PATH": os.environ["PATH"],
        "PREFLIGHT_DB": str(db),
        "PREFLIGHT_MIGRATIONS": str(MIGRATIONS),
    }
    entry = PACKAGE.parent / "entrypoint.py"
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", str(entry), "true"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "as verified before (cache)" in done.stderr and "exec: true" in done.stderr
    imported = _imported(done.stderr)
    assert {"preflight.quickstart", "preflight.facts"} <= imported
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert "preflight.cli" not in imported


def test_a_start_handed_over_imports_the_full_pipeline(cli, make_db):
    """The budget test above can fail: the same measurement sees a hand-over's imports."""
    db = make_db("fresh")
    env = {"PATH": os.environ["PATH"], "PREFLIGHT_DB": str(db)}
    env["PREFLIGHT_MIGRATIONS"] = str(MIGRATIONS)
    entry = PACKAGE.parent / "entrypoint.py"
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", str(entry), "true"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = _imported(done.stderr)
    assert {"preflight.cli", "json", "logging", "argparse"} <= imported


def test_sqlite_imported_without_functools_still_works_and_functools_is_real_after():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from preflight import facts\n"
        "assert 'functools' not in sys.modules and 'collections' not in sys.modules\n"
        "c = facts.sqlite3.connect(':memory:')\n"
        "assert [c.execute('SELECT 1').fetchone() for _ in range(3)] == [(1,)] * 3\n"
        "import functools, sqlite3\n"
        "assert functools.reduce(lambda a, b: a + b, [1, 2]) == 3\n"
        "d = sqlite3.connect(':memory:')\n"
        "d.execute('CREATE TABLE t (x)')\n"
        "for i in range(300): d.execute('INSERT INTO t VALUES (?)', (i,))\n"
        "assert d.execute('SELECT count(*) FROM t').fetchone() == (300,)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, str(PACKAGE.parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
