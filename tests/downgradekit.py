"""An app at two releases whose migrations have down steps, in each runner's layout.

v1 has users and posts; v2 adds tags (003) and a column and an index on tags (004), and a
column on users: 004's down step must run before 003's (it drops an index and a column of
the table 003's drops). `release(root, "v2", layout)` writes a release's migrations
folder; `Scene` is one database with both releases beside it, the guard run on it as a
real process.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, clean_env, spawn

# (stem, up, down): down None writes no down step at all.
Step = tuple[str, str, str | None]

V1: tuple[Step, ...] = (
    (
        "001_users",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n",
        "DROP TABLE users;\n",
    ),
    (
        "002_posts",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY,"
        " user_id INTEGER NOT NULL REFERENCES users (id), title TEXT NOT NULL);\n"
        "CREATE INDEX ix_posts_user ON posts (user_id);\n",
        "DROP TABLE posts;\n",
    ),
)
V2: tuple[Step, ...] = (
    *V1,
    (
        "003_tags",
        "CREATE TABLE tags (id INTEGER PRIMARY KEY,"
        " post_id INTEGER NOT NULL REFERENCES posts (id), tag TEXT NOT NULL);\n"
        "ALTER TABLE users ADD COLUMN email TEXT;\n",
        "ALTER TABLE users DROP COLUMN email;\nDROP TABLE tags;\n",
    ),
    (
        "004_tag_weight",
        "ALTER TABLE tags ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;\n"
        "CREATE INDEX ix_tags_tag ON tags (tag);\n",
        "DROP INDEX ix_tags_tag;\nALTER TABLE tags DROP COLUMN weight;\n",
    ),
)
# "sql+down": the guard's own `VERSION_name.sql` with `VERSION_name.down.sql` beside it.
LAYOUTS = ("dbmate", "goose", "golang-migrate", "diesel", "sql+down")


def name_of(stem: str, layout: str) -> str:
    """The name the history records a migration by in `layout`."""
    return {"golang-migrate": f"{stem}.up.sql", "diesel": stem}.get(layout, f"{stem}.sql")


def write(folder: Path, steps: tuple[Step, ...], layout: str) -> Path:
    """`steps` as migration files in `layout` (dbmate's markers are also the guard's own)."""
    folder.mkdir(parents=True)
    for stem, up, down in steps:
        if layout in ("dbmate", "goose"):
            up_mark, down_mark = (
                ("-- migrate:up", "-- migrate:down")
                if layout == "dbmate"
                else ("-- +goose Up", "-- +goose Down")
            )
            text = f"{up_mark}\n{up}\n" + (f"{down_mark}\n{down}" if down is not None else "")
            (folder / f"{stem}.sql").write_text(text)
        elif layout in ("golang-migrate", "sql+down"):
            (folder / f"{stem}{'.up' if layout == 'golang-migrate' else ''}.sql").write_text(up)
            if down is not None:
                (folder / f"{stem}.down.sql").write_text(down)
        else:
            (folder / stem).mkdir()
            (folder / stem / "up.sql").write_text(up)
            if down is not None:
                (folder / stem / "down.sql").write_text(down)
    return folder


@dataclass
class Scene:
    """A database in `root/data` and the releases beside it (`root/<release>`)."""

    root: Path
    layout: str = "dbmate"

    @property
    def db(self) -> Path:
        return self.root / "data" / "app.db"

    def release(self, name: str, steps: tuple[Step, ...] = ()) -> Path:
        """The folder of release `name` (v1 and v2 by default), written once."""
        folder = self.root / name
        if not folder.exists():
            write(folder, steps or {"v1": V1, "v2": V2}[name], self.layout)
        return folder

    def env(self, release: str, **extra: str) -> dict[str, str]:
        env = {"PREFLIGHT_DB": str(self.db), "PREFLIGHT_MIGRATIONS": str(self.release(release))}
        env.update(extra)
        return env

    def guard(self, release: str, *args: object, **extra: str) -> subprocess.CompletedProcess[str]:
        """`preflight ARGS` (default: `migrate`) with `release`'s migrations, to the end."""
        return spawn(*(args or ("migrate",)), env=self.env(release, **extra), timeout=120)

    def start(self, release: str, *args: object, **extra: str) -> subprocess.Popen[str]:
        """The same, started (not waited for)."""
        env = clean_env(self.env(release, **extra))
        env["PYTHONPATH"] = str(REPO)
        return subprocess.Popen(
            [sys.executable, "-m", "preflight", *map(str, args or ("migrate",))],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def write_v1_rows(self) -> None:
        """What the app writes on v1."""
        execute(
            self.db,
            "INSERT INTO users (id, name) VALUES (1, 'alice'), (2, 'bob')",
            "INSERT INTO posts (user_id, title) VALUES (1, 'hello'), (2, 'hi')",
        )

    def write_v2_rows(self) -> None:
        """What the app writes on v2: rows in v1's tables too, and in v2's."""
        execute(
            self.db,
            "INSERT INTO users (id, name, email) VALUES (3, 'carol', 'carol@example.org')",
            "UPDATE users SET email = 'alice@example.org' WHERE id = 1",
            "INSERT INTO posts (user_id, title) VALUES (3, 'written on v2')",
            "INSERT INTO tags (post_id, tag, weight) VALUES (1, 'greeting', 2), (3, 'new', 1)",
        )


def execute(db: Path, *sql: str) -> None:
    """Plain sqlite3 writes, as the app makes them."""
    conn = sqlite3.connect(db)
    with conn:
        for s in sql:
            conn.execute(s)
    conn.close()


def app_schema(db: Path) -> set[tuple[str, str, str, str]]:
    """The app's objects exactly as SQLite keeps them (their SQL text too): not the guard's."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE '\\_preflight%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\'"
        ).fetchall()
    finally:
        conn.close()
    return set(found)


def everything(db: Path) -> list[str]:
    """Every row of every table, the guard's history, log and down steps included."""
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def app_rows(db: Path, table: str, columns: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()
