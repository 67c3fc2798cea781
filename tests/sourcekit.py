"""One app, every migration source: the guard's own files, Alembic, Flask-Migrate, Django.

Each source tells the same story (users; posts with a foreign key to users; users.email;
posts.title made NOT NULL by a table rebuild that fills the empty titles; an index on
posts.user_id), so a test written once over a `Kit` proves a promise for every source:
`kit.add(name, sql)` adds a pending migration that executes `sql`; `kit.guard(...)` runs
`python -m preflight` in a real subprocess (`conftest.spawn`) with the source's options;
`kit.alone(db, ...)` builds with the source alone, no guard (the tool as a developer runs
it; the files executed in order by sqlite3).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO, clean_env, dump, spawn

BIN = str(Path(sys.executable).parent)  # where the test environment's `alembic` is
SOURCES = ("files", "alembic", "flask-migrate", "django")
TOOLS = SOURCES[1:]

FILES_HISTORY = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(80) NOT NULL);\n",
    "002_posts.sql": (
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, "
        "user_id INTEGER NOT NULL REFERENCES users (id), title VARCHAR(200));\n"
    ),
    "003_email.sql": "ALTER TABLE users ADD COLUMN email VARCHAR(120);\n",
    "004_title_required.sql": (
        "UPDATE posts SET title = '(untitled)' WHERE title IS NULL;\n"
        "CREATE TABLE posts_new (id INTEGER PRIMARY KEY, "
        "user_id INTEGER NOT NULL REFERENCES users (id), title VARCHAR(200) NOT NULL);\n"
        "INSERT INTO posts_new (id, user_id, title) SELECT id, user_id, title FROM posts;\n"
        "DROP TABLE posts;\n"
        "ALTER TABLE posts_new RENAME TO posts;\n"
    ),
    "005_post_index.sql": "CREATE INDEX ix_posts_user_id ON posts (user_id);\n",
}
ALEMBIC_HISTORY = ["a1", "b2", "c3", "d4", "e5"]  # examples/alembic-app's revisions

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

FLASK_APP = '''"""The kit's blog on Flask-SQLAlchemy and Flask-Migrate (FLASK_APP=blog:create_app)."""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


def create_app() -> Flask:
    app = Flask(__name__)
    url = os.environ.get("PREFLIGHT_DATABASE_URL", "sqlite:///app.db")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db.init_app(app)
    Migrate(app, db, render_as_batch=True)
    return app
'''

DJANGO_SETTINGS = """import os

SECRET_KEY = "kit"
INSTALLED_APPS = ["blog"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
DATABASES["default"]["NAME"] = os.environ.get("PREFLIGHT_DB", DATABASES["default"]["NAME"])
USE_TZ = True
"""

DJANGO_MANAGE = """import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""

DJANGO_MODELS = """from django.db import models


class User(models.Model):
    id = models.AutoField(primary_key=True)
    name = models.CharField(max_length=80)
    email = models.CharField(max_length=120, null=True)

    class Meta:
        db_table = "users"


class Post(models.Model):
    id = models.AutoField(primary_key=True)
    user = models.ForeignKey(User, models.CASCADE)
    title = models.CharField(max_length=200)

    class Meta:
        db_table = "posts"
        indexes = [models.Index(fields=["user"], name="ix_posts_user_id")]
"""

DJANGO_MIGRATION = """from django.db import migrations, models


def forward(apps, schema_editor):
{body}


class Migration(migrations.Migration):
    dependencies = {dependencies}
    operations = {operations}
"""

_ID = "models.AutoField(primary_key=True)"
DJANGO_HISTORY = {
    "0001_users": (
        f'migrations.CreateModel("User", [("id", {_ID}), '
        '("name", models.CharField(max_length=80))], options={"db_table": "users"})',
    ),
    "0002_posts": (
        f'migrations.CreateModel("Post", [("id", {_ID}), '
        '("user", models.ForeignKey("blog.User", models.CASCADE)), '
        '("title", models.CharField(max_length=200, null=True))], '
        'options={"db_table": "posts"})',
    ),
    "0003_email": (
        'migrations.AddField("user", "email", models.CharField(max_length=120, null=True))',
    ),
    "0004_title_required": (
        "migrations.RunSQL(\"UPDATE posts SET title = '(untitled)' WHERE title IS NULL\", "
        "migrations.RunSQL.noop)",
        'migrations.AlterField("post", "title", models.CharField(max_length=200))',
    ),
    "0005_post_index": (
        'migrations.AddIndex("post", models.Index(fields=["user"], name="ix_posts_user_id"))',
    ),
}

# What each source says when it runs its migrations on the live database (in the log).
RUNS = {
    "files": "migrate: committed",
    "alembic": "alembic upgrade head",
    "flask-migrate": "flask db upgrade",
    "django": "manage.py migrate --no-input",
}
# --tool-cmd as an app writes it: the program found on PATH.
TOOL_CMD = {
    "alembic": "alembic upgrade head",
    "flask-migrate": "flask db upgrade",
    "django": "python manage.py migrate --no-input",
}
# The line the guard asks for when a tool ignores the database it is given.
FIX = {
    "alembic": 'config.set_main_option("sqlalchemy.url", os.environ["PREFLIGHT_DATABASE_URL"])',
    "flask-migrate": 'SQLALCHEMY_DATABASE_URI = os.environ.get("PREFLIGHT_DATABASE_URL", ...)',
    "django": 'os.environ.get("PREFLIGHT_DB", DATABASES["default"]["NAME"])',
}
# How the version table is read back, as names (`Kit.recorded`).
RECORDED = {
    "files": "SELECT name FROM _preflight_history ORDER BY version",
    "alembic": "SELECT version_num FROM alembic_version",
    "flask-migrate": "SELECT version_num FROM alembic_version",
    "django": "SELECT app || '.' || name FROM django_migrations ORDER BY id",
}
TABLE = {
    "files": "_preflight_history",
    "alembic": "alembic_version",
    "flask-migrate": "alembic_version",
    "django": "django_migrations",
}


@dataclass
class Kit:
    """One migration source in a private folder: its migrations, its database, its options."""

    name: str  # one of SOURCES
    root: Path
    names: list[str] = field(default_factory=list)  # every migration, oldest first

    @property
    def db(self) -> Path:
        return self.root / "data" / "app.db"

    @property
    def folder(self) -> Path:
        """Where its migrations live (the app folder for a tool)."""
        return self.root / ("migrations" if self.name == "files" else "app")

    @property
    def versions(self) -> Path:
        """The folder its migration files are in."""
        if self.name == "files":
            return self.folder
        return self.folder / ("blog/migrations" if self.name == "django" else "migrations/versions")

    @property
    def table(self) -> str:
        return TABLE[self.name]

    @property
    def runs(self) -> str:
        return RUNS[self.name]

    @property
    def head(self) -> list[str]:
        """What the database records at head: Alembic its one head, the others every name."""
        return self.names[-1:] if self.name in ("alembic", "flask-migrate") else self.names

    def env(self, path: str | None = None, **extra: str) -> dict[str, str]:
        env = {"PREFLIGHT_DB": str(self.db)}
        if self.name == "files":
            env["PREFLIGHT_MIGRATIONS"] = str(self.folder)
        else:
            env.update(
                PREFLIGHT_TOOL=self.name,
                PREFLIGHT_APP_DIR=str(self.folder),
                PATH=path if path is not None else f"{BIN}:{os.defpath}",
            )
        if self.name == "flask-migrate":
            env["FLASK_APP"] = "blog:create_app"
        env.update(extra)
        return env

    def guard(self, *args: object, path: str | None = None, **extra: str):
        return spawn(*args, env=self.env(path, **extra), cwd=self.folder, timeout=300)

    def popen(self, *args: object, **extra: str) -> subprocess.Popen[str]:
        """The guard started in the background (its own session, for a kill of its tree)."""
        env = clean_env(self.env(**extra))
        env.setdefault("PYTHONPATH", str(REPO))
        return subprocess.Popen(
            [sys.executable, "-m", "preflight", *map(str, args)],
            cwd=self.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def add(self, name: str, sql: str = "", python: str = "") -> str:
        """A new pending migration executing `sql` (or, for a tool, plain `python` lines
        too); returns the name it is known by (`status` lists it so)."""
        number = len(self.names) + 1
        statements = [s.strip() for s in sql.split(";") if s.strip()]
        if self.name == "files":
            (self.folder / f"{number:03d}_{name}.sql").write_text(sql)
            self.names.append(f"{number:03d}_{name}.sql")
        elif self.name == "django":
            ops = [f"migrations.RunSQL({s!r})" for s in statements]
            if python:
                ops.append("migrations.RunPython(forward, migrations.RunPython.noop)")
            self._django(f"{number:04d}_{name}", ops, python)
        else:
            lines = [f"    op.execute({s!r})" for s in statements]
            lines += [f"    {line}" for line in python.splitlines()]
            rev = f"x{number}"
            (self.versions / f"{rev}_{name}.py").write_text(
                REVISION.format(
                    name=name, rev=rev, down=self.names[-1], body="\n".join(lines) or "    pass"
                )
            )
            self.names.append(rev)
        return self.names[-1]

    def _django(self, name: str, operations: list[str] | tuple[str, ...], python: str = "") -> None:
        down = f'[("blog", "{self.names[-1].split(".")[1]}")]' if self.names else "[]"
        body = "\n".join(f"    {line}" for line in python.splitlines()) or "    pass"
        (self.versions / f"{name}.py").write_text(
            DJANGO_MIGRATION.format(
                body=body, dependencies=down, operations=f"[{', '.join(operations)}]"
            )
        )
        self.names.append(f"blog.{name}")

    def remove_last(self) -> None:
        """Take the newest migration back out (its file deleted)."""
        name = self.names.pop()
        for path in self.versions.glob(f"*{name.split('.')[-1].removesuffix('.sql')}*"):
            if path.suffix in (".sql", ".py"):
                path.unlink()

    def recorded(self, db: Path | None = None) -> list[str]:
        """What the database records in the source's version table, as names."""
        conn = sqlite3.connect(db or self.db)
        try:
            return [r[0] for r in conn.execute(RECORDED[self.name])]
        finally:
            conn.close()

    def alone(self, db: Path, upto: int | None = None, start: int = 0) -> None:
        """`db` migrated by the source alone (no guard) up to migration `upto` (default: the
        head): a tool as a developer runs it; files executed by sqlite3 from `start` on."""
        target = self.names[(upto or len(self.names)) - 1]
        if self.name == "files":
            conn = sqlite3.connect(db)
            try:
                for name in self.names[start:upto]:
                    conn.executescript((self.folder / name).read_text())
            finally:
                conn.close()
            return
        env = dict(
            clean_env(self.env()), PREFLIGHT_DB=str(db), PREFLIGHT_DATABASE_URL=f"sqlite:///{db}"
        )
        if self.name == "django":
            argv = [sys.executable, "manage.py", "migrate", "blog", target.split(".")[1]]
        elif self.name == "alembic":
            argv = [f"{BIN}/alembic", "upgrade", target]
        else:
            argv = [sys.executable, "-m", "flask", "db", "upgrade", target]
        subprocess.run(argv, cwd=self.folder, env=env, check=True, capture_output=True)

    def at(self, upto: int) -> None:
        """The database built up to migration `upto` by the source itself: a tool alone;
        the guard's files through the guard, over a folder holding only those."""
        if self.name != "files":
            self.alone(self.db, upto)
            return
        part = self.root / "part"
        part.mkdir()
        for name in self.names[:upto]:
            shutil.copy(self.folder / name, part / name)
        done = self.guard("migrate", PREFLIGHT_MIGRATIONS=str(part))
        assert done.returncode == 0, done.stderr
        shutil.rmtree(part)

    def ignore_database(self, own: str = "") -> dict[Path, str]:
        """The app's configuration no longer honours the database the guard gives it (its
        own URL, `own` or the app's default, instead). Returns the files as they were."""
        before = {p: p.read_text() for p in self.folder.rglob("*") if p.suffix in (".py", ".ini")}
        if self.name == "alembic":
            env_py = self.folder / "migrations" / "env.py"
            env_py.write_text(
                env_py.read_text().replace(
                    'if "PREFLIGHT_DATABASE_URL" in os.environ:', "if False:"
                )
            )
            if own:
                ini = self.folder / "alembic.ini"
                ini.write_text(
                    "\n".join(
                        f"sqlalchemy.url = sqlite:///{own}"
                        if line.startswith("sqlalchemy.url")
                        else line
                        for line in ini.read_text().splitlines()
                    )
                    + "\n"
                )
        elif self.name == "flask-migrate":
            init = self.folder / "blog" / "__init__.py"
            init.write_text(
                init.read_text().replace(
                    'os.environ.get("PREFLIGHT_DATABASE_URL", "sqlite:///app.db")',
                    f'"sqlite:///{own or "app.db"}"',
                )
            )
        else:
            settings = self.folder / "site_config" / "settings.py"
            text = settings.read_text()
            line = next(line for line in text.splitlines(True) if "PREFLIGHT_DB" in line)
            settings.write_text(
                text.replace(line, "").replace('"db.sqlite3"', f'"{own or "db.sqlite3"}"')
            )
        return before

    def migrate_on_import(self) -> None:
        """The app migrates its own database when it is imported (Flask's create_app,
        Django's AppConfig.ready)."""
        if self.name == "flask-migrate":
            init = self.folder / "blog" / "__init__.py"
            init.write_text(
                init.read_text().replace(
                    "    return app\n",
                    "    with app.app_context():\n"
                    "        from flask_migrate import upgrade\n\n"
                    "        upgrade()\n"
                    "    return app\n",
                )
            )
        else:
            assert self.name == "django"
            (self.folder / "blog" / "apps.py").write_text(
                "from django.apps import AppConfig\n\n\n"
                "class BlogConfig(AppConfig):\n"
                '    name = "blog"\n\n'
                "    def ready(self):\n"
                "        from django.core.management import call_command\n\n"
                '        call_command("migrate", verbosity=0)\n'
            )

    def dump(self, db: Path | None = None) -> list[str]:
        """The logical content without the guard's own tables (`conftest.dump`) nor
        Django's rows (each has the time it was applied: `recorded` compares those)."""
        return [
            line
            for line in dump(db or self.db)
            if 'INTO "django_migrations"' not in line and 'FROM "sqlite_sequence"' not in line
        ]

    def forget(self) -> None:
        """The database without its version table, as if made by create_all() or by hand."""
        tables = [self.table] if self.name != "files" else ["_preflight_history", "_preflight_log"]
        execute(self.db, *(f"DROP TABLE {t}" for t in tables))

    def version(self, n: int) -> str:
        """How `stamp` names migration `n` (1-based): files by number, tools by name."""
        return str(n) if self.name == "files" else self.names[n - 1]


def make_kit(name: str, root: Path) -> Kit:
    """A kit whose database is not there yet (`kit.guard('migrate')` builds it at head)."""
    (root / "data").mkdir(parents=True)
    kit = Kit(name, root)
    if name == "files":
        kit.folder.mkdir()
        for file, sql in FILES_HISTORY.items():
            (kit.folder / file).write_text(sql)
        kit.names = list(FILES_HISTORY)
    elif name == "alembic":
        shutil.copytree(
            REPO / "examples" / "alembic-app",
            kit.folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.db"),
        )
        kit.names = list(ALEMBIC_HISTORY)
    elif name == "flask-migrate":
        shutil.copytree(
            REPO / "examples" / "flask-app" / "migrations",
            kit.folder / "migrations",
            ignore=shutil.ignore_patterns("__pycache__", "versions"),
        )
        shutil.copytree(
            REPO / "examples" / "alembic-app" / "migrations" / "versions",
            kit.versions,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        (kit.folder / "blog").mkdir()
        (kit.folder / "blog" / "__init__.py").write_text(FLASK_APP)
        kit.names = list(ALEMBIC_HISTORY)
    else:
        (kit.folder / "site_config").mkdir(parents=True)
        (kit.folder / "site_config" / "__init__.py").write_text("")
        (kit.folder / "site_config" / "settings.py").write_text(DJANGO_SETTINGS)
        (kit.folder / "manage.py").write_text(DJANGO_MANAGE)
        kit.versions.mkdir(parents=True)
        (kit.folder / "blog" / "__init__.py").write_text("")
        (kit.folder / "blog" / "models.py").write_text(DJANGO_MODELS)
        (kit.versions / "__init__.py").write_text("")
        for migration, operations in DJANGO_HISTORY.items():
            kit._django(migration, operations)
    return kit


def kit_at_head(name: str, root: Path) -> Kit:
    """A kit migrated to head by the guard, with one user and one post."""
    kit = make_kit(name, root)
    first = kit.guard("migrate")
    assert first.returncode == 0, first.stderr
    execute(
        kit.db,
        "INSERT INTO users (id, name) VALUES (1, 'ada')",
        "INSERT INTO posts (id, user_id, title) VALUES (1, 1, 'hello')",
    )
    return kit


def copy_kit(kit: Kit, root: Path) -> Kit:
    """A copy of `kit` (its app, its database and the caches beside it) under `root`."""
    shutil.copytree(kit.root, root, symlinks=True, dirs_exist_ok=True)
    return Kit(kit.name, root, list(kit.names))


def execute(db: Path, *sql: str) -> None:
    """Plain sqlite3 writes, as the app (foreign keys off, SQLite's default)."""
    conn = sqlite3.connect(db)
    with conn:
        for s in sql:
            conn.execute(s)
    conn.close()
