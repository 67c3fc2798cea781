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

# Layers, bottom up; a module imports only from its own layer or below. Every module of
# the package has its layer here (a test checks): a new module must be placed.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "ground: files, fsync, /proc, children, SQL text; no SQLite connection",
        frozenset(
            {
                "errors",
                "names",
                "files",
                "faults",
                "ancestry",
                "proc",
                "progress",
                "sqltext",
                "foreignkeys",
                "transaction",
                "signals",
            }
        ),
    ),
    ("facts: the no-op proof's facts, defined once", frozenset({"facts"})),
    ("fast path: the quick start and a tool's light facts", frozenset({"quickstart", "toolfiles"})),
    (
        "storage and options: the lock, backups, holders, Litestream, statements",
        frozenset(
            {
                "config",
                "lock",
                "holders",
                "filecopy",
                "catalog",
                "backup",
                "steps",
                "litestream",
                "functions",
                "statements",
            }
        ),
    ),
    (
        "schema and history: migration files, snapshots, drift, the history, inspection",
        frozenset({"migrations", "ddl", "schema", "drift", "history", "cache", "database"}),
    ),
    (
        "sources: the interface and its implementations (the guard's files, the tools)",
        frozenset(
            {
                "source",
                "planner",
                "evidence",
                "filesource",
                "tools",
                "tooldjango",
                "toolscratch",
                "toolsource",
            }
        ),
    ),
    ("the guard and its commands", frozenset({"guard", "operations", "adopt", "results"})),
    ("top: the command line and the one entry", frozenset({"cli", "entry", "__main__"})),
)
GROUND = LAYERS[0][1]
FACTS = LAYERS[1][1]
TOP = LAYERS[-1][1]


def layer(module: str) -> int:
    return next(i for i, (_, names) in enumerate(LAYERS) if module in names)


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


def test_every_module_has_a_layer():
    placed = set().union(*(names for _, names in LAYERS))
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules - placed == set(), "place the new module in LAYERS"
    assert placed - modules == set(), "a module in LAYERS no longer exists"


def test_each_layer_imports_only_from_its_own_or_below():
    edges = graph()
    for module, imported in edges.items():
        if module == "__init__":
            continue
        for other in imported:
            assert layer(other) <= layer(module), (
                f"{module} ({LAYERS[layer(module)][0]}) imports {other} ({LAYERS[layer(other)][0]})"
            )
    # The quick start stays light: facts, and a tool's light facts.
    assert edges["quickstart"] <= GROUND | FACTS | {"toolfiles"}
    assert edges["toolfiles"] <= GROUND | FACTS
    assert edges["facts"] <= GROUND
    assert edges["entry"] == {"quickstart", "cli"}


def test_the_layer_check_finds_an_arrow_pointing_up():
    assert layer("errors") < layer("guard")  # so errors importing guard would fail the test


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
