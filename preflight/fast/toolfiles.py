"""The light half of a migration tool: what a no-op start needs, with os and sqlite3 only.

A start whose migration files and recorded version match the last verified start must not
start the tool, import the app, or even import `dataclasses` (see `quickstart`). So each
tool's light facts live here as plain functions: which files make its migration set
(hashed into the cache key) and the SQL that reads the version it recorded. `tools`
builds the full `Tool` description on top of these.
"""

from __future__ import annotations

import os

from preflight.fast.facts import Unproven as HandOver
from preflight.fast.facts import set_fingerprint, sha256_of

SKIPPED_DIRS = ("__pycache__", ".git", ".pytest_cache")


def tree(folder: str) -> list[str]:
    """Every regular file under `folder`, sorted, minus byte code; HandOver if absent."""
    if not os.path.isdir(folder):
        raise HandOver(folder)
    found: list[str] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in names:
            path = os.path.join(root, name)
            if not name.endswith((".pyc", ".pyo")) and os.path.isfile(path):
                found.append(path)
    return sorted(found)


def fingerprint(app_dir: str, paths: list[str]) -> str:
    """One hash of a tool's migration files: each path relative to the app folder, and its
    sha256. Linear in the files' size; any edit, rename, addition or removal changes it."""
    return set_fingerprint([(os.path.relpath(p, app_dir), sha256_of(p)[0]) for p in paths])


def alembic_script_folder(app_dir: str) -> str:
    """Alembic's `script_location` from alembic.ini in `app_dir` (default: 'migrations').

    A plain scan, not configparser: the first `script_location = ...` line of [alembic],
    with `%(here)s` as the ini's folder. A `package:path` location (rare) hands over.
    """
    ini = os.path.join(app_dir, "alembic.ini")
    location = "migrations"
    if os.path.isfile(ini):
        with open(ini, encoding="utf-8") as f:
            section = ""
            for line in f:
                text = line.strip()
                if text.startswith("["):
                    section = text
                elif section == "[alembic]" and text.split("=", 1)[0].strip() == "script_location":
                    location = text.split("=", 1)[1].strip()
                    break
    location = location.replace("%(here)s", app_dir)
    if ":" in location and not os.path.isabs(location):
        raise HandOver("script_location package")
    return os.path.join(app_dir, location)


def alembic_files(app_dir: str) -> list[str]:
    """alembic.ini and everything in its script folder (env.py, script.py.mako, versions/)."""
    ini = os.path.join(app_dir, "alembic.ini")
    return ([ini] if os.path.isfile(ini) else []) + tree(alembic_script_folder(app_dir))


DJANGO_SKIPPED = ("node_modules", "site-packages", "venv", "env", "static", "media")


def django_migration_files(app_dir: str) -> list[str]:
    """Every `.py` in a folder called `migrations` under the app folder (hidden folders,
    virtual environments and byte code skipped), sorted."""
    if not os.path.isfile(os.path.join(app_dir, "manage.py")):
        raise HandOver(os.path.join(app_dir, "manage.py"))
    found: list[str] = []
    for root, dirs, names in os.walk(app_dir):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_DIRS and d not in DJANGO_SKIPPED and not d.startswith(".")
        )
        if os.path.basename(root) == "migrations":
            found.extend(os.path.join(root, n) for n in names if n.endswith(".py"))
    return sorted(found)


def django_installed() -> list[str]:
    """Django's own migrations (contrib apps), its version file and the metadata of every
    distribution installed beside it, as installed where this interpreter finds Django
    without importing it: an upgrade that brings a new auth or admin migration, or a
    third-party app's, changes them. Nothing when this interpreter has no Django (the scratch
    build then warns; see docs/tools.md)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("django")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = list(spec.submodule_search_locations)[0]
    found = [os.path.join(root, "__init__.py")]
    # Every distribution installed beside Django, by its METADATA (name and version): a
    # pip upgrade of a third-party app that brings migrations (allauth, taggit...) changes
    # the fingerprint, so the no-op start hands over and Django's plan sees them.
    site = os.path.dirname(root)
    for entry in sorted(os.listdir(site)):
        metadata = os.path.join(site, entry, "METADATA")
        if entry.endswith(".dist-info") and os.path.isfile(metadata):
            found.append(metadata)
    contrib = os.path.join(root, "contrib")
    if os.path.isdir(contrib):
        for app in sorted(os.listdir(contrib)):
            folder = os.path.join(contrib, app, "migrations")
            if os.path.isdir(folder):
                found.extend(
                    os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".py")
                )
    return found


def django_files(app_dir: str) -> list[str]:
    """manage.py, the apps' migrations packages under the app folder, and Django's own."""
    return (
        [os.path.join(app_dir, "manage.py")] + django_migration_files(app_dir) + django_installed()
    )


# name -> (the files of its migration set, SQL reading its recorded version as text rows,
# its version table). Everything a quick start needs; `tools.TOOLS` adds the rest.
LIGHT = {
    "alembic": (
        alembic_files,
        "SELECT version_num FROM alembic_version ORDER BY version_num",
        "alembic_version",
    ),
    "django": (
        django_files,
        "SELECT app || '.' || name FROM django_migrations ORDER BY app, name",
        "django_migrations",
    ),
}
