"""WSGI app: GET /health, GET /notes (JSON), POST /notes (form field `title`).

It never creates or migrates its database: preflight, the image's ENTRYPOINT, has
verified it (and applied the migrations in /app/migrations) before this process starts.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, quote

DB = os.environ.get("PREFLIGHT_DB", "/data/app.db")


def _connect(write: bool = False) -> sqlite3.Connection:
    # mode=rw / ro: never create an empty database where the real one is missing.
    return sqlite3.connect(f"file:{quote(DB)}?mode={'rw' if write else 'ro'}", uri=True, timeout=5)


def _json(start: Callable[..., object], status: str, data: object) -> list[bytes]:
    body = json.dumps(data).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ: dict, start: Callable[..., object]) -> Iterable[bytes]:
    path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
    try:
        if path == "/health":
            conn = _connect()
            try:
                row = conn.execute("SELECT max(version) FROM _preflight_history").fetchone()
            finally:
                conn.close()
            return _json(start, "200 OK", {"status": "ok", "version": row[0]})
        if path == "/notes" and method == "GET":
            conn = _connect()
            try:
                cur = conn.execute("SELECT * FROM notes ORDER BY id")
                names = [d[0] for d in cur.description]
                return _json(start, "200 OK", [dict(zip(names, r)) for r in cur.fetchall()])
            finally:
                conn.close()
        if path == "/notes" and method == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            form = parse_qs(environ["wsgi.input"].read(size).decode())
            conn = _connect(write=True)
            try:
                with conn:
                    cur = conn.execute("INSERT INTO notes (title) VALUES (?)", (form["title"][0],))
                return _json(start, "201 Created", {"id": cur.lastrowid})
            finally:
                conn.close()
        return _json(start, "404 Not Found", {"error": "not found"})
    except sqlite3.Error as exc:
        return _json(start, "503 Service Unavailable", {"status": "error", "error": str(exc)})
