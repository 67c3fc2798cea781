"""README's "Use it in your app", for real: a second app (examples/notes-app, not StarPunk) built
from exactly the README's Dockerfile recipe with the guard installed from its wheel, run on a
real named volume through its lifecycle: fresh, upgraded, a broken migration refused with
the data intact, a fixed image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import distkit
import pytest
from conftest import REPO
from dockerkit import Docker, Volume, engine, http_get, logs, wait_exit, wait_healthy

pytestmark = pytest.mark.docker

EXAMPLE = REPO / "examples" / "notes-app"

UPGRADE = {
    "002_note_slugs.sql": (
        "ALTER TABLE notes ADD COLUMN slug TEXT;\n"
        "UPDATE notes SET slug = lower(replace(title, ' ', '-')) || '-' || id;\n"
        "CREATE UNIQUE INDEX idx_notes_slug ON notes(slug);\n"
    )
}
# Fine on an empty database (the rehearsal), fails on the real rows: two notes share a title.
BROKEN = {
    **UPGRADE,
    "003_unique_titles.sql": "CREATE UNIQUE INDEX idx_notes_title ON notes(title);\n",
}
FIXED = {
    **UPGRADE,
    "003_unique_titles.sql": (
        "UPDATE notes SET title = title || ' (' || id || ')'\n"
        "    WHERE id NOT IN (SELECT min(id) FROM notes GROUP BY title);\n"
        "CREATE UNIQUE INDEX idx_notes_title ON notes(title);\n"
    ),
}


def readme_recipe() -> str:
    """The Dockerfile block of README's "Use it in your app" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Use it in your app") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```dockerfile\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "one Dockerfile recipe in 'Use it in your app'"
    return blocks[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Docker, dict[str, str]]]:
    """The notes app at four releases, each built from the recipe on the base image."""
    client, base = engine()
    wheel = distkit.build(tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist"))[
        "wheel"
    ]
    tags = {}
    for release, extra in (("v1", {}), ("v2", UPGRADE), ("broken", BROKEN), ("fixed", FIXED)):
        context = tmp_path_factory.mktemp(f"notes-{release}")
        shutil.copytree(
            EXAMPLE,
            context,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "wheels"),
        )
        (context / "Dockerfile").write_text(readme_recipe())
        (context / "wheels").mkdir()
        shutil.copy(wheel, context / "wheels")
        for name, sql in extra.items():
            (context / "migrations" / name).write_text(sql)
        tags[release] = f"preflight-notes-app:test-{release}"
        client.images.build(
            path=str(context),
            buildargs={"BASE_IMAGE": base},
            tag=tags[release],
            rm=True,
            forcerm=True,
        )
    kit = Docker(client, tags["v1"])
    tags["base"], tags["wheel"] = base, str(wheel)
    yield kit, tags
    kit.cleanup()


def post_note(c, title: str) -> None:  # type: ignore[no-untyped-def]
    c.reload()
    ip = next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    request = urllib.request.Request(f"http://{ip}:8000/notes", data=f"title={title}".encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201


def notes(c) -> list[dict]:  # type: ignore[no-untyped-def]
    status, body = http_get(c, "/notes")
    assert status == 200, body
    return json.loads(body)


def health_version(c) -> int:  # type: ignore[no-untyped-def]
    status, body = http_get(c, "/health")
    assert status == 200, body
    return json.loads(body)["version"]


def test_the_recipe_guards_another_app_through_its_lifecycle(
    images: tuple[Docker, dict[str, str]],
) -> None:
    dk, tags = images
    volume: Volume = dk.volume()
    # 1. Fresh volume: the guard builds the database, then execs the app (PID 1).
    c = dk.start(volume, tags["v1"])
    wait_healthy(c)
    assert health_version(c) == 1 and "plan: 1 pending" in logs(c)
    assert "exec: python3 -m notes" in logs(c)
    for title in ("hello", "groceries", "hello"):
        post_note(c, title)
    c.stop(timeout=10)
    before_upgrade = volume.dump()

    # 2. Upgraded image: 002 migrates the existing rows; a verified backup came first.
    c = dk.start(volume, tags["v2"])
    wait_healthy(c)
    assert health_version(c) == 2
    assert [(n["title"], n["slug"]) for n in notes(c)] == [
        ("hello", "hello-1"),
        ("groceries", "groceries-2"),
        ("hello", "hello-3"),
    ]
    backups = sorted((volume.path / "backups").glob("app-*-pre-migrate.db"))
    assert len(backups) == 1
    c.stop(timeout=10)
    at_v2 = volume.dump()
    assert at_v2 != before_upgrade

    # 3. A broken migration: refused, rolled back, exit 9; the data is exactly as it was.
    c = dk.start(volume, tags["broken"], health=None)
    assert wait_exit(c) == 9, logs(c)
    assert "003_unique_titles.sql" in logs(c) and "UNIQUE constraint failed" in logs(c)
    assert volume.dump() == at_v2
    assert [r[0] for r in volume.query("SELECT version FROM _preflight_history")] == [1, 2]
    assert (volume.path / "app.db.preflight-failure.json").exists()
    # The same image again is refused at once (exit 11), not retried in a crash loop.
    c = dk.start(volume, tags["broken"], health=None)
    assert wait_exit(c) == 11, logs(c)
    assert volume.dump() == at_v2
    # The operator's view, through the recipe's image: `preflight` is on its PATH.
    code, out, err = dk.oneshot(volume, "status", "--json", image=tags["broken"])
    assert code == 11 and json.loads(out)["pending"] == ["003_unique_titles.sql"], err

    # 4. The fixed image migrates and serves; the failure record is gone.
    c = dk.start(volume, tags["fixed"])
    wait_healthy(c)
    assert health_version(c) == 3
    assert [n["title"] for n in notes(c)] == ["hello", "groceries", "hello (3)"]
    assert not (volume.path / "app.db.preflight-failure.json").exists()
    # An older image on the newer database refuses (exit 5) and changes nothing: the
    # rollback runbook's first case.
    c.stop(timeout=10)
    at_v3 = volume.state()
    c = dk.start(volume, tags["v2"], health=None)
    assert wait_exit(c) == 5, logs(c)
    assert "database is newer than these migration files: 003_unique_titles.sql" in logs(c)
    assert volume.state() == at_v3
    # Going back instead: restore the backup taken before 003 (writes since are lost), and
    # the older image starts on it.
    code, out, err = dk.oneshot(volume, "restore", image=tags["v2"])
    assert code == 0, err
    c = dk.start(volume, tags["v2"])
    wait_healthy(c)
    assert health_version(c) == 2
    assert [n["title"] for n in notes(c)] == ["hello", "groceries", "hello"]


def _readme_sh(title: str) -> list[str]:
    from test_readme_recipes import section, sh_lines

    return sh_lines(section(title))


def _wait_http(url: str, timeout: float = 90) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_plain_docker_recipe(images: tuple[Docker, dict[str, str]], tmp_path: Path) -> None:
    """The README's build / run / status lines, with this test's own names and port."""
    dk, tags = images
    unique = uuid.uuid4().hex[:8]
    context = tmp_path / "notes-app"
    shutil.copytree(EXAMPLE, context, ignore=shutil.ignore_patterns("__pycache__", "wheels"))
    (context / "wheels").mkdir()
    shutil.copy(tags["wheel"], context / "wheels")
    port = _free_port()
    names = {
        "examples/notes-app": str(context),
        "notes-app": f"preflight-notes-app:readme-{unique}",
        "notes": f"preflight-test-notes-{unique}",
        "notes-data:/data": f"preflight-test-{unique}:/data",
        "127.0.0.1:8000:8000": f"127.0.0.1:{port}:8000",
    }
    lines = [line for line in _readme_sh("Use it in your app") if line.startswith("docker ")]
    assert [line.split()[1] for line in lines] == ["build", "run", "run"]
    try:
        results = []
        for line in lines:
            argv = [names.get(token, token) for token in shlex.split(line)]
            if argv[1] == "build":  # the base image this machine has (no registry here)
                argv[2:2] = ["--build-arg", f"BASE_IMAGE={tags['base']}"]
            results.append(subprocess.run(argv, capture_output=True, text=True, timeout=600))
            assert results[-1].returncode in (0, 3), results[-1].stderr[-3000:]
            if argv[1] == "run" and "-d" in argv:
                body = _wait_http(f"http://127.0.0.1:{port}/health")
                assert json.loads(body) == {"status": "ok", "version": 1}
        assert results[-1].returncode == 0
        assert "status: 1 applied (last 001_notes.sql)" in results[-1].stderr
    finally:
        subprocess.run(["docker", "rm", "-f", names["notes"]], capture_output=True)
        subprocess.run(
            ["docker", "volume", "rm", "-f", f"preflight-test-{unique}"], capture_output=True
        )
        subprocess.run(["docker", "rmi", "-f", names["notes-app"]], capture_output=True)


def test_readme_compose_operator_recipes() -> None:
    """README's "Operate it" lines, as written, on a compose project started by scripts/up."""
    _, base = engine()
    project = f"pftest{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = dict(
        os.environ,
        COMPOSE_PROJECT_NAME=project,
        PORT=str(port),
        APP_IMAGE=f"preflight-app:{project}",
        BASE_IMAGE=base,
    )
    lines = _readme_sh("Operate it")
    try:
        done = subprocess.run(
            [str(REPO / "scripts" / "up")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        compose = (
            ["docker", "compose"]
            if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
            else ["docker-compose"]
        )
        seen = {}
        for line in lines:
            argv = shlex.split(line)
            assert argv[:2] == ["docker", "compose"], line
            done = subprocess.run(
                compose + argv[2:], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, (line, done.stderr[-3000:])
            seen[" ".join(argv[2:])] = done
        run = "run --rm --entrypoint preflight app"
        assert "check: at head (5 applied" in seen[f"{run} check"].stderr
        report = json.loads(seen[f"{run} status --json"].stdout)
        assert report["database"] == "/data/app.db" and report["note"] is None
        assert len(report["applied"]) == 5
        assert "restored and verified" in seen[f"{run} restore"].stderr
        # The section ends with the rollback runbook's stop and restore: start it again.
        assert lines[-2:] == [
            "docker compose stop app",
            "docker compose run --rm --entrypoint preflight app restore",
        ]
        done = subprocess.run(
            compose + ["up", "-d", "app"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        body = _wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        assert json.loads(body)["version"] == 5
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "up"), "down", "-v", "--rmi", "all"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=300,
        )
