"""One app, two migration sources: the guard's own files and Alembic, as a test sees them.

Both describe the same schema (users, posts with a foreign key to users), so a test written
once over a `Kit` proves a promise for every source: `kit.add(name, sql)` adds a pending
migration that executes `sql`; `kit.guard(...)` runs `python -m preflight` in a real
subprocess (`conftest.spawn`) with the source's options.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conftest import spawn

REPO = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)  # where the test environment's `alembic` is
ALEMBIC_APP = REPO / "examples" / "alembic-app"

FILES_HISTORY = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(80) NOT NULL);\n",
    "002_posts.sql": (
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, "
        "user_id INTEGER NOT NULL REFERENCES users (id), title VARCHAR(200));\n"
    ),
}

REVISION = '''"""{name}

Revision ID: {rev}
Revises: {down}
"""
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


@dataclass
class Kit:
    """One migration source in a private folder: its migrations, its database, its options."""

    name: str  # "files" or "alembic"
    root: Path
    added: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.root / "data" / "app.db"

    @property
    def folder(self) -> Path:
        """Where its migrations live (the app folder for a tool)."""
        return self.root / ("migrations" if self.name == "files" else "app")

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PREFLIGHT_DB": str(self.db)}
        if self.name == "files":
            env["PREFLIGHT_MIGRATIONS"] = str(self.folder)
        else:
            env.update(
                PREFLIGHT_TOOL=self.name,
                PREFLIGHT_APP_DIR=str(self.folder),
                PATH=f"{BIN}:{os.defpath}",
            )
        env.update(extra)
        return env

    def guard(self, *args: object, **extra: str) -> subprocess.CompletedProcess[str]:
        return spawn(*args, env=self.env(**extra), cwd=self.folder, timeout=300)

    def add(self, name: str, sql: str = "", python: str = "") -> str:
        """A new pending migration executing `sql` (or, for a tool, `python` lines too);
        returns the name `status` lists it by."""
        if self.name == "files":
            number = len(list(self.folder.glob("*.sql"))) + 1
            (self.folder / f"{number:03d}_{name}.sql").write_text(sql)
            self.added.append(f"{number:03d}_{name}.sql")
            return self.added[-1]
        versions = self.folder / "migrations" / "versions"
        down = self.added[-1] if self.added else "e5"
        rev = f"x{len(self.added) + 1}"
        lines = [f"    op.execute({s.strip()!r})" for s in sql.split(";") if s.strip()]
        lines += [f"    {line}" for line in python.splitlines()]
        body = "\n".join(lines) or "    pass"
        (versions / f"{rev}_{name}.py").write_text(
            REVISION.format(name=name, rev=rev, down=down, body=body)
        )
        self.added.append(rev)
        return rev


def make_kit(name: str, root: Path) -> Kit:
    """A kit whose database is not there yet (`kit.guard('migrate')` builds it at head)."""
    (root / "data").mkdir(parents=True)
    kit = Kit(name, root)
    if name == "files":
        kit.folder.mkdir()
        for file, sql in FILES_HISTORY.items():
            (kit.folder / file).write_text(sql)
    else:
        shutil.copytree(
            ALEMBIC_APP, kit.folder, ignore=shutil.ignore_patterns("__pycache__", "*.db")
        )
    return kit


def execute(db: Path, *sql: str) -> None:
    """Plain sqlite3 writes, as the app (foreign keys off, SQLite's default)."""
    conn = sqlite3.connect(db)
    with conn:
        for s in sql:
            conn.execute(s)
    conn.close()
