"""Every command the README shows is exercised by a test: the ones without a container run
here, as written; each container one names the test that runs it."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, rows

from preflight.storage import backup, catalog

README = REPO / "README.md"

# Each command line of a ```sh block -> the test that runs it (file::function).
RECIPES = {
    "scripts/up": "test_container.py::test_readme_run_command_serves_health",
    "mkdir -p data": "test_adoption.py::test_readme_run_command_works_as_written",
    "python3 -m preflight run --db data/app.db --migrations migrations -- python3 -c "
    "\"print('app started')\"": "test_adoption.py::test_readme_run_command_works_as_written",
    "pip wheel --no-deps --wheel-dir wheels/ path/to/preflight": "test_readme_recipes.py::test_the_wheel_recipe_builds_the_guards_wheel",
    "docker build -t notes-app examples/notes-app": "test_recipe_container.py::test_readme_plain_docker_recipe",
    "docker run -d --name notes -p 127.0.0.1:8000:8000 -v notes-data:/data notes-app": "test_recipe_container.py::test_readme_plain_docker_recipe",
    "docker run --rm -v notes-data:/data --entrypoint preflight notes-app status": "test_recipe_container.py::test_readme_plain_docker_recipe",
    "preflight init --db copy.db --migrations migrations": "test_readme_recipes.py::test_the_adoption_guide_on_a_copy",
    "preflight check --db copy.db --migrations migrations": "test_readme_recipes.py::test_the_adoption_guide_on_a_copy",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest": ".ci/run",  # CI itself runs it (checked below)
    "split -b 8388608 --filter=sha256sum app-….db | cut -c1-64 | xxd -r -p | sha256sum": "test_readme_recipes.py::test_the_readme_line_computes_a_backups_recorded_sha256_tree",
}
OPERATE = "test_recipe_container.py::test_readme_compose_operator_recipes"
for _verb in ("check", "status --json", "backup", "restore", "clear-failure"):
    RECIPES[f"docker compose run --rm --entrypoint preflight app {_verb}"] = OPERATE
RECIPES["docker compose stop app"] = OPERATE
RECIPES["docker compose up -d app"] = OPERATE
RECIPES["docker compose run --rm --entrypoint preflight app restore"] = OPERATE


def sh_lines(text: str) -> list[str]:
    """Every command line of every ```sh block (indented ones in lists too), comments cut."""
    found = []
    for block in re.findall(r"^[ \t]*```sh\n(.*?)^[ \t]*```", text, re.S | re.M):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                found.append(line)
    return found


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 4)
    return text[start : end if end != -1 else len(text)]


def test_every_readme_command_has_a_test_that_exists() -> None:
    lines = sh_lines(README.read_text())
    assert len(lines) >= 15
    missing = [line for line in lines if line not in RECIPES]
    assert not missing, f"README commands without a test: {missing}"
    ci = (REPO / ".ci" / "run").read_text()
    for line in lines:
        if RECIPES[line] == ".ci/run":
            for part in ("python3 -m venv .venv", "-e '.[test]'", ".venv/bin/python -m pytest"):
                assert part in line and part in ci, part
            continue
        file, name = RECIPES[line].split("::")
        tree = ast.parse(next((REPO / "tests").rglob(file)).read_text())
        assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, RECIPES[
            line
        ]


def test_no_recipe_mounts_the_compose_volume_by_a_name_compose_does_not_give_it() -> None:
    for doc in [README, *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "-v data:/data" not in text, doc  # compose calls it <project>_data


def test_the_example_dockerfile_is_the_readme_recipe() -> None:
    blocks = re.findall(r"```dockerfile\n(.*?)```", section("Use it in your app"), re.S)
    assert blocks == [(REPO / "examples" / "notes-app" / "Dockerfile").read_text()]


def _preflight(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`preflight ARGS` as the README writes it, from this checkout."""
    assert argv[0] == "preflight"
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "preflight", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_adoption_guide_on_a_copy(tmp_path: Path) -> None:
    # Production, made by an app's init_db() with plain sqlite3, and its copy.
    prod = tmp_path / "app.db"
    conn = sqlite3.connect(prod)
    conn.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT UNIQUE);"
        "CREATE INDEX idx_users_email ON users(lower(email));"
        "INSERT INTO users (email) VALUES ('a@example.org');"
    )
    conn.execute("VACUUM INTO ?", (str(tmp_path / "copy.db"),))
    conn.close()
    block = re.search(
        r"1\. \*\*Try it on a copy.*?```sh\n(.*?)```", section("Adopt an existing database"), re.S
    )[1]
    results = [_preflight(shlex.split(line), tmp_path) for line in sh_lines(f"```sh\n{block}```")]
    assert [r.returncode for r in results] == [0, 0], results[-1].stderr
    assert "at head (1 applied, last 001_initial_schema.sql)" in results[-1].stderr
    assert (tmp_path / "migrations" / "001_initial_schema.sql").exists()
    # Production, started by the guard with that folder, is adopted at 001 with nothing to do.
    done = _preflight(
        ["preflight", "migrate", "--db", str(prod), "--migrations", "migrations"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert rows(prod, "SELECT version, how FROM _preflight_history") == [(1, "adopted")]


def test_the_readme_line_computes_a_backups_recorded_sha256_tree(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO items (v) VALUES (randomblob(1000))", [()] * 20000)
    conn.commit()
    conn.close()
    assert db.stat().st_size > 2 * (8 << 20)  # three chunks, the last one short
    taken = backup.take(db, tmp_path / "backups", "manual")
    (line,) = [line for line in sh_lines(README.read_text()) if line.startswith("split ")]
    done = subprocess.run(
        ["bash", "-c", line.replace("app-….db", shlex.quote(str(taken)))],
        capture_output=True,
        text=True,
        check=True,
    )
    record = catalog.record_of(taken)
    assert record is not None and done.stdout.split()[0] == record["sha256_tree"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the source")
def test_the_wheel_recipe_builds_the_guards_wheel(tmp_path: Path) -> None:
    import distkit

    source = tmp_path / "preflight"
    source.mkdir()
    for name in distkit.source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    (line,) = [x for x in sh_lines(section("Use it in your app").split("```dockerfile")[0])]
    argv = shlex.split(line.replace("path/to/preflight", str(source)))
    argv[:1] = [sys.executable, "-m", "pip"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name.split("-")[0] for p in (tmp_path / "wheels").iterdir()] == ["preflight_sqlite"]
