"""The guarded WSGI app on real databases, called through its WSGI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MIGRATIONS, load_fixture, spawn

from app.wsgi import application


def get(
    path: str, db: Path, monkeypatch: pytest.MonkeyPatch, method: str = "GET"
) -> tuple[str, dict[str, str], bytes]:
    monkeypatch.setenv("PREFLIGHT_DB", str(db))
    seen: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(application({"PATH_INFO": path, "REQUEST_METHOD": method}, start_response))
    return str(seen["status"]), seen["headers"], body  # type: ignore[return-value]


@pytest.fixture
def head(tmp_path: Path) -> Path:
    db = load_fixture("v0.9.5", tmp_path / "app.db")
    done = spawn("migrate", "--db", db, "--migrations", MIGRATIONS, "--backup", "never")
    assert done.returncode == 0, done.stderr
    return db


def test_health_reports_the_schema_version(head: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, headers, body = get("/health", head, monkeypatch)
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "status": "ok",
        "database": str(head),
        "version": 5,
        "migration": "005_retire_starpunk_schema_migrations.sql",
    }


@pytest.mark.parametrize("setup", ["missing", "not-a-database", "no-history"])
def test_health_is_503_when_the_database_is_unreachable(
    tmp_path: Path, setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.db"
    if setup == "not-a-database":
        db.write_text("hello")
    elif setup == "no-history":
        load_fixture("v0.9.5", db)
    status, _, body = get("/health", db, monkeypatch)
    assert status == "503 Service Unavailable"
    assert json.loads(body)["status"] == "unavailable"
    assert not (setup == "missing" and db.exists())  # read-only: never creates a database


def test_index_lists_published_undeleted_notes(head: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    conn = sqlite3.connect(head)
    wanted = [
        r[0]
        for r in conn.execute("SELECT slug FROM notes WHERE published = 1 AND deleted_at IS NULL")
    ]
    hidden = [
        r[0]
        for r in conn.execute(
            "SELECT slug FROM notes WHERE published = 0 OR deleted_at IS NOT NULL"
        )
    ]
    conn.close()
    assert wanted and hidden
    status, _, page = get("/", head, monkeypatch)
    assert status == "200 OK" and f"{len(wanted)} published".encode() in page
    assert all(slug.encode() in page for slug in wanted)
    assert not any(f">{slug}<".encode() in page for slug in hidden)


def test_other_paths_and_methods(head: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get("/nope", head, monkeypatch)[0] == "404 Not Found"
    assert get("/health", head, monkeypatch, method="POST")[0] == "405 Method Not Allowed"
