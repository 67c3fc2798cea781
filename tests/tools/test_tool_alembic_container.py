"""--tool alembic in a real container: the example app's image (ENTRYPOINT the guard, CMD
gunicorn) on a named volume: fresh, a cached restart, a failing revision restored."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator

import pytest
from conftest import REPO
from dockerkit import (
    Docker,
    build_derived,
    engine,
    example_image,
    http_get,
    logs,
    wait_exit,
    wait_healthy,
)
from test_tool_alembic import FAILING

pytestmark = pytest.mark.docker

EXAMPLE = REPO / "examples" / "alembic-app"
REQUIREMENTS = ["alembic", "sqlalchemy", "flask", "gunicorn"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Docker, dict[str, str]]]:
    client, base = engine()
    tags = {
        "v1": example_image(
            client,
            base,
            EXAMPLE,
            REQUIREMENTS,
            "preflight-alembic-app:test",
            tmp_path_factory.mktemp("alembic-app"),
        )
    }
    tags["failing"] = build_derived(
        client,
        tags["v1"],
        "preflight-alembic-app:test-failing",
        {"versions/f6_unique_title.py": FAILING},
    )
    docker_kit = Docker(client, tags["v1"])
    yield docker_kit, tags
    docker_kit.cleanup()


def test_alembic_app_in_a_container_fresh_cached_and_failing(kit) -> None:
    docker_kit, tags = kit
    vol = docker_kit.volume()
    first = docker_kit.start(vol)
    wait_healthy(first)
    status, body = http_get(first, "/health")
    assert status == 200 and b'"version":"e5"' in body.replace(b" ", b"")
    assert "-m alembic upgrade head" in logs(first)  # the guard's interpreter
    first.stop(timeout=10)

    again = docker_kit.start(vol)
    wait_healthy(again)
    assert "as verified before (cache)" in logs(again) and "alembic upgrade" not in logs(again)
    again.stop(timeout=10)

    db = vol.path / "app.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO users (id, name) VALUES (1, 'ada')")
        conn.execute("INSERT INTO posts (user_id, title) VALUES (1, 'same'), (1, 'same')")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    broken = docker_kit.start(vol, tags["failing"], health=None)
    assert wait_exit(broken, timeout=120) == 9, logs(broken)
    assert "restored" in logs(broken)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    conn = sqlite3.connect(db)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert not [n for n in names if n.startswith("_alembic_tmp_")]
