"""--tool django in a real container: the example project's image (ENTRYPOINT the guard,
CMD gunicorn) on a named volume: fresh, a cached restart, a failing migration restored."""

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
from test_tool_django import FAILING, HEAD

pytestmark = pytest.mark.docker

EXAMPLE = REPO / "examples" / "django-app"
REQUIREMENTS = ["django", "gunicorn"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Docker, dict[str, str]]]:
    client, base = engine()
    tags = {
        "v1": example_image(
            client,
            base,
            EXAMPLE,
            REQUIREMENTS,
            "preflight-django-app:test",
            tmp_path_factory.mktemp("django-app"),
        )
    }
    tags["failing"] = build_derived(
        client,
        tags["v1"],
        "preflight-django-app:test-failing",
        {"0005_check.py": FAILING},
        folder="/app/notes/migrations",
    )
    docker_kit = Docker(client, tags["v1"])
    yield docker_kit, tags
    docker_kit.cleanup()


def test_django_app_in_a_container_fresh_cached_and_failing(kit) -> None:
    docker_kit, tags = kit
    vol = docker_kit.volume()
    first = docker_kit.start(vol)
    wait_healthy(first)
    status, body = http_get(first, "/health")
    assert status == 200 and f'"migrations":{HEAD}'.encode() in body.replace(b" ", b"")
    assert "manage.py migrate --no-input" in logs(first)  # under the guard's interpreter
    first.stop(timeout=10)

    again = docker_kit.start(vol)
    wait_healthy(again)
    assert "as verified before (cache)" in logs(again) and "manage.py" not in logs(again)
    again.stop(timeout=10)

    db = vol.path / "app.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO auth_user (id, password, is_superuser, username, first_name, "
            "last_name, email, is_staff, is_active, date_joined) "
            "VALUES (1, '!', 0, 'ada', '', '', '', 0, 1, '2024-01-01')"
        )
        conn.execute("INSERT INTO notes_note (author_id, title, body) VALUES (1, 'x', 'y')")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    broken = docker_kit.start(vol, tags["failing"], health=None)
    assert wait_exit(broken, timeout=120) == 9, logs(broken)
    assert "restored" in logs(broken) and "notes cannot be migrated" in logs(broken)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    conn = sqlite3.connect(db)
    names = [r[0] for r in conn.execute("SELECT name FROM django_migrations")]
    conn.close()
    assert "0005_check" not in names
