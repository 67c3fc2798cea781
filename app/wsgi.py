"""The guarded app: `GET /health` and `GET /`, served by gunicorn (`app.wsgi:application`).

It never migrates anything: by the time gunicorn imports it, preflight has already
verified the database at `PREFLIGHT_DB`. Each request opens the database read-only.
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from urllib.parse import quote

StartResponse = Callable[..., object]


def database_path() -> str:
    """The database the guard prepared (the guard exports the same variable)."""
    return os.environ.get("PREFLIGHT_DB", "/data/app.db")


def _connect(path: str) -> sqlite3.Connection:
    # mode=ro: a request can never create an empty database where the real one is missing.
    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=5)


def schema_version(path: str) -> dict[str, object]:
    """The newest history row: {'version': 5, 'migration': '005_...'}; raises if unreachable."""
    conn = _connect(path)
    try:
        row = conn.execute(
            "SELECT version, name FROM _preflight_history ORDER BY version DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return {"version": row[0] if row else 0, "migration": row[1] if row else None}


def published_notes(path: str, limit: int = 50) -> list[tuple[str, str]]:
    """(slug, created_at) of the newest published, undeleted notes."""
    conn = _connect(path)
    try:
        return conn.execute(
            "SELECT slug, created_at FROM notes WHERE published = 1 "
            "AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
    finally:
        conn.close()


def _respond(start: StartResponse, status: str, body: bytes, kind: str) -> list[bytes]:
    start(
        status,
        [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
    )
    return [body]


def health(start: StartResponse) -> list[bytes]:
    """200 with the schema version, or 503 naming why the database is unreachable."""
    path = database_path()
    try:
        body = {"status": "ok", "database": path, **schema_version(path)}
        status = "200 OK"
    except sqlite3.Error as exc:
        body = {"status": "unavailable", "database": path, "error": str(exc)}
        status = "503 Service Unavailable"
    return _respond(start, status, json.dumps(body).encode(), "application/json")


def index(start: StartResponse) -> list[bytes]:
    """The published notes, newest first."""
    try:
        notes = published_notes(database_path())
    except sqlite3.Error as exc:
        return _respond(
            start,
            "503 Service Unavailable",
            f"database unavailable: {exc}\n".encode(),
            "text/plain; charset=utf-8",
        )
    items = "".join(
        f'<li><a href="/notes/{quote(slug)}">{html.escape(slug)}</a> '
        f"<time>{html.escape(str(created))}</time></li>"
        for slug, created in notes
    )
    page = (
        f"<!doctype html><title>Notes</title><h1>Notes</h1>"
        f"<p>{len(notes)} published</p><ul>{items}</ul>"
    )
    return _respond(start, "200 OK", page.encode(), "text/html; charset=utf-8")


def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    """WSGI entry point."""
    path = environ.get("PATH_INFO", "/")
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _respond(start_response, "405 Method Not Allowed", b"", "text/plain")
    if path == "/health":
        return health(start_response)
    if path == "/":
        return index(start_response)
    return _respond(start_response, "404 Not Found", b"not found\n", "text/plain")
