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

PACKAGE = Path(__file__).resolve().parents[2] / "preflight"

# Layers, bottom up: one folder of the package each; a module imports only from its own
# folder or one below. The top-level modules (the command line, the one entry) are the top.
LAYERS: tuple[tuple[str, str], ...] = (
    ("core", "ground: errors, files and fsync, /proc, children; no SQLite connection"),
    ("fast", "the quick start and the facts of a no-op start: light imports only"),
    ("storage", "the lock, backups and their catalog, holders, Litestream, options"),
    ("schema", "schema understanding: SQL text, the model, the reader, drift, foreign keys"),
    ("live", "the live database: the guard's history, inspection"),
    ("sources", "the migration sources: the interface, the guard's files, the tools"),
    ("commands", "the guarded start and the operator commands"),
    ("", "top: the command line and the one entry"),
)
FOLDERS = [folder for folder, _ in LAYERS]


def modules() -> dict[str, Path]:
    """Every module of the package by its short name (names are unique across folders);
    a layer folder's own `__init__` (schema's facade) by the folder's name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PACKAGE)
        name = rel.parent.name if path.stem == "__init__" and rel.parent.name else path.stem
        if path.stem == "__init__" and not path.read_text().strip():
            continue  # an empty folder marker
        assert name not in found, f"two modules named {name}"
        found[name] = path
    return found


def folder(module: str) -> str:
    rel = modules()[module].relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def layer(module: str) -> int:
    return FOLDERS.index(folder(module))


GROUND = {m for m in modules() if folder(m) == "core"}
FACTS = {"facts"}
TOP = {m for m in modules() if folder(m) == ""}


def graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (lazy imports too)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        found: set[str] = set()
        here = path.relative_to(PACKAGE).parent.parts
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".") if node.module else []
                if node.level:  # relative: within its own folder (schema's facade)
                    parts = ["preflight", *here, *parts]
                if parts[:1] != ["preflight"]:
                    continue
                named = {a.name for a in node.names if a.name in known}
                deepest = [p for p in parts[1:] if p in known][-1:]
                found.update(named or deepest)  # modules by name, else the module named
        edges[name] = {m for m in found if m != name and m not in ("__init__", "preflight")}
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


def test_every_module_lives_in_a_layer_folder():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if "__pycache__" in rel.parts:
            continue
        assert len(rel.parts) == 1 or rel.parts[0] in FOLDERS, f"{rel}: not a layer folder"
        assert len(rel.parts) <= 2, f"{rel}: layers are one level deep"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(FOLDERS[:-1])


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
    assert layer("schema") == layer("drift") < layer("database") < layer("filesource")


def test_every_entry_point_calls_the_one_entry_function():
    root = PACKAGE.parent
    assert 'preflight = "preflight.entry:main"' in (root / "pyproject.toml").read_text()
    assert "from preflight.entry import main" in (root / "entrypoint.py").read_text()
    assert "from preflight.entry import main" in (PACKAGE / "__main__.py").read_text()
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


def entrypoint_imports(migrations: Path, db: Path) -> tuple[subprocess.CompletedProcess, set]:
    """The image's start (`python3 -S entrypoint.py true`) under `-X importtime`: (the run,
    the modules it imported)."""
    env = {"PATH": os.environ["PATH"], "PREFLIGHT_DB": str(db)}
    env["PREFLIGHT_MIGRATIONS"] = str(migrations)
    entry = PACKAGE.parent / "entrypoint.py"
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", str(entry), "true"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done, _imported(done.stderr)


def test_a_no_op_start_imports_only_its_budget(cli, make_db, tmp_path):
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    done, imported = entrypoint_imports(MIGRATIONS, db)
    assert "as verified before (cache)" in done.stderr and "exec: true" in done.stderr
    assert {"preflight.fast.quickstart", "preflight.fast.facts"} <= imported
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert "preflight.cli" not in imported


def test_a_start_handed_over_imports_the_full_pipeline(cli, make_db):
    """The budget test above can fail: the same measurement sees a hand-over's imports."""
    _, imported = entrypoint_imports(MIGRATIONS, make_db("fresh"))
    assert {"preflight.cli", "json", "logging", "preflight.commands.guard"} <= imported


# What a fresh build (a start on a missing database, every migration pending) never runs:
# the operator commands and their results, adoption's evidence, replaying migrations in
# memory, reading a schema and comparing schemas (nothing to compare with), backups and
# their catalog (nothing to back up), the processes that hold the file (nothing to wait for),
# what an upgrade destroys (nothing of anyone's to lose), the tool source, argparse (the
# fast parser read `run`'s plain flags) and OpenSSL's hashlib (sha256 comes from _sha256).
NOT_IN_A_FRESH_BUILD = (
    "preflight.commands.results",
    "preflight.commands.operations",
    "preflight.commands.backups",
    "preflight.commands.adopt",
    "preflight.sources.evidence",
    "preflight.sources.replay",
    "preflight.schema.reader",  # nothing to compare a fresh build with: no schema read
    "preflight.schema.ddl",
    "preflight.schema.objects",  # tables, columns and indexes are read, never built
    "preflight.schema.drift",
    "preflight.schema.lineage",  # no table before the run: no orphan to follow
    "preflight.schema.violation",  # a clean build reports none
    "preflight.sources.functions",  # only with --functions
    "preflight.sources.toolsource",
    "preflight.storage.backup",
    "preflight.storage.catalog",
    "preflight.storage.digest",
    "preflight.storage.filecopy",
    "preflight.storage.unchanged",
    "preflight.storage.holders",
    "preflight.live.census",
    "preflight.live.loss",
    "preflight.live.vanished",
    "preflight.live.records",  # no history row, kept down step or failure record to read
    "argparse",
    "gettext",
    "hashlib",
    "subprocess",
    "tempfile",
    "shutil",  # SQLite's emptied temp folder is removed with os.rmdir
    "typing",  # protocols, type variables and aliases are the type checker's alone
)


# SQL only: the app's own .py migrations import what they like (StarPunk's, hashlib).
FRESH_SET = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    "002_posts.sql": "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER "
    "REFERENCES users(id), body TEXT);\nCREATE INDEX posts_user ON posts(user_id);",
    "003_email.sql": "ALTER TABLE users ADD COLUMN email TEXT;\n"
    "INSERT INTO users (name, email) VALUES ('admin', 'admin@example.org');",
    "004_rebuild.sql": "CREATE TABLE users_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "email TEXT UNIQUE);\nINSERT INTO users_new SELECT id, name, email FROM users;\n"
    "DROP TABLE users;\nALTER TABLE users_new RENAME TO users;",
}


def test_a_fresh_build_imports_only_what_it_runs(make_migrations, tmp_path):
    """A start on a missing database builds it from every migration without importing the
    modules that only other starts (or other commands) run; `-X importtime` lists them."""
    done, imported = entrypoint_imports(make_migrations(FRESH_SET), tmp_path / "app.db")
    assert "inspect: fresh database" in done.stderr and "exec: true" in done.stderr
    assert "verify: schema built from empty" in done.stderr
    assert "migrate: committed 0 adopted and 4 applied in one transaction" in done.stderr
    assert {"preflight.commands.guard", "preflight.sources.filesource"} <= imported
    assert not imported & set(NOT_IN_A_FRESH_BUILD), sorted(imported & set(NOT_IN_A_FRESH_BUILD))


def test_a_fresh_build_given_a_spelling_the_fast_parser_leaves_goes_through_argparse(tmp_path):
    """The list above can fail: `--db=app.db` (argparse's to read) brings argparse back."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(PACKAGE.parent)}
    env["PREFLIGHT_MIGRATIONS"] = str(MIGRATIONS)
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-m", "preflight", "run", "--db=app.db"]
        + ["--", "true"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "argparse" in _imported(done.stderr)


def test_sqlite_imported_without_functools_still_works_and_functools_is_real_after():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from preflight.fast import facts\n"
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


def test_the_code_map_in_the_docs_lists_exactly_the_package():
    text = (PACKAGE.parent / "docs" / "internals.md").read_text()
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    package = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
        and not (p.name == "__init__.py" and p.parent != PACKAGE and not p.read_text().strip())
    }
    assert listed == package, (
        f"missing from docs/internals.md: {sorted(package - listed)}; "
        f"gone: {sorted(listed - package)}"
    )
