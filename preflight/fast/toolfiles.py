"""The light half of a migration tool: the files of its migration set (hashed into the
cache key), found with os alone, so that a no-op start never starts the tool or imports
the app (see `quickstart`). `tools` builds the full `Tool` on top of these."""

from __future__ import annotations

import os

from preflight.fast.facts import TOOL_PATHS, set_fingerprint, sha256_of
from preflight.fast.facts import Unproven as HandOver

SKIPPED_DIRS = ("__pycache__", ".git", ".pytest_cache")
DJANGO_SKIPPED = (*SKIPPED_DIRS, "node_modules", "site-packages", "venv", "env", "static", "media")


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


def words(tool_cmd: str) -> list[str]:
    """--tool-cmd as words: a plain split, shlex only for a quoted one (it imports re)."""
    if any(c in tool_cmd for c in "'\"\\"):
        import shlex

        return shlex.split(tool_cmd)
    return tool_cmd.split()


def option(argv: list[str], *flags: str) -> str | None:
    """The value of the first of `flags` in `argv` (`-c X`, `--config X`, `--config=X`)."""
    for i, word in enumerate(argv):
        if word in flags and i + 1 < len(argv):
            return argv[i + 1]
        for flag in flags:
            if flag.startswith("--") and word.startswith(flag + "="):
                return word[len(flag) + 1 :]
    return None


def ini_section(ini: str, section: str) -> dict[str, str]:
    """The options of one [section] of an ini file as configparser reads them (indented lines
    continue a value, `#`/`;` lines are comments), `%(here)s` as the file's folder. A plain
    scan: configparser imports re, which a no-op start does not load."""
    found: dict[str, str] = {}
    if not os.path.isfile(ini):
        return found
    here = os.path.dirname(os.path.abspath(ini))
    current = last = ""
    with open(ini, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if not text or text.startswith(("#", ";")):
                continue
            if text.startswith("[") and text.endswith("]"):
                current, last = text[1:-1].strip(), ""
                continue
            if current != section:
                continue
            if line[:1] in " \t" and last:
                found[last] += "\n" + text
                continue
            sep = min((i for i in (text.find("="), text.find(":")) if i > 0), default=-1)
            if sep > 0:
                last = text[:sep].strip().lower()
                found[last] = text[sep + 1 :].strip()
    return {k: v.replace("%(here)s", here) for k, v in found.items()}


def split_locations(value: str, options: dict[str, str]) -> list[str]:
    """`version_locations` split as Alembic does: by `path_separator` /
    `version_path_separator` (os, space, newline, ':', ';', ','), else spaces and commas."""
    sep = options.get("path_separator") or options.get("version_path_separator")
    seps = {"os": os.pathsep, "newline": "\n", "space": None, ":": ":", ";": ";", ",": ","}
    parts = value.split(seps[sep]) if sep in seps else value.replace(",", " ").split()
    return [p.strip() for p in parts if p.strip()]


def location(app_dir: str, where: str, search: list[str]) -> str:
    """A folder named in an Alembic config: `package:path` (the package found on `search`
    and sys.path without importing it), absolute, or relative to the app folder (where
    the tool runs). HandOver for an interpolation the scan cannot resolve."""
    if "%(" in where:
        raise HandOver(f"alembic option {where}")
    if ":" in where and not os.path.isabs(where) and not (len(where) > 1 and where[1] == ":"):
        package, _, rest = where.partition(":")
        import importlib.machinery
        import sys

        top, *inner = package.split(".")
        spec = importlib.machinery.PathFinder.find_spec(top, [*search, *sys.path])
        if spec is None or not spec.submodule_search_locations:
            raise HandOver(f"alembic location {where}")
        root = list(spec.submodule_search_locations)[0]
        return os.path.join(root, *inner, *rest.split("/"))
    return os.path.join(app_dir, where)


def alembic_files(app_dir: str, db: str, tool_cmd: str) -> list[str]:
    """The ini Alembic reads (`-c/--config` in --tool-cmd, else ALEMBIC_CONFIG or
    alembic.ini; its section `-n/--name`, else alembic), everything in its
    `script_location` and in every `version_locations` entry."""
    argv = words(tool_cmd)
    ini = option(argv, "-c", "--config") or os.environ.get("ALEMBIC_CONFIG") or "alembic.ini"
    ini = os.path.join(app_dir, ini)
    options = ini_section(ini, option(argv, "-n", "--name") or "alembic")
    return _alembic_set(app_dir, ini, options, options.get("script_location", "migrations"))


def _alembic_set(app_dir: str, ini: str, options: dict[str, str], script: str) -> list[str]:
    """The ini, the script folder and every `version_locations` entry; HandOver when the
    script folder is missing."""
    prepend = split_locations(options.get("prepend_sys_path", ""), options)
    search = [os.path.join(app_dir, p) for p in prepend] + [app_dir]
    extra = split_locations(options.get("version_locations", ""), options)
    folders = [location(app_dir, f, search) for f in [script, *extra]]
    if not os.path.isdir(folders[0]):
        raise HandOver(folders[0])
    found = {ini} if os.path.isfile(ini) else set()
    for folder in folders:
        if os.path.isdir(folder):  # a version location not created yet holds nothing
            found.update(tree(folder))
    return sorted(found)


def flask_migrate_files(app_dir: str, db: str, tool_cmd: str) -> list[str]:
    """Flask-Migrate's folder (`-d/--directory` in --tool-cmd, else `migrations`) and every
    `version_locations` entry of its alembic.ini (`%(here)s` is the folder)."""
    where = option(words(tool_cmd), "-d", "--directory") or "migrations"
    folder = os.path.join(app_dir, where)
    ini = os.path.join(folder, "alembic.ini")
    return _alembic_set(app_dir, ini, ini_section(ini, "alembic"), folder)


# What a scratch run of Django loaded from outside the app folder's `migrations` folders
# (MIGRATION_MODULES, apps on another path entry), beside the database: the light half
# cannot import Django, so it hashes what the last run reported. Line 1: the format and
# the context it holds for (tool, --tool-cmd, DJANGO_SETTINGS_MODULE); then one folder a line.
PATHS_FORMAT = "preflight-tool-paths 1"


def paths_record(db: str) -> str:
    return os.path.realpath(db) + TOOL_PATHS


def paths_context(tool: str, tool_cmd: str) -> str:
    settings = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    return " ".join(f"{tool}\t{tool_cmd}\t{settings}".split("\n"))


def recorded_folders(db: str, context: str) -> list[str]:
    """The folders the last scratch run reported for this context (none if another)."""
    try:
        with open(paths_record(db), encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return []
    if lines[:2] != [PATHS_FORMAT, context]:
        return []
    return [line for line in lines[2:] if line]


def django_installed() -> list[str]:
    """Django's own migrations (contrib apps), its version file and the METADATA of every
    distribution installed beside it, found without importing Django: an upgrade bringing a
    new migration (auth, admin, a third-party app's) changes them. None without Django."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("django")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = list(spec.submodule_search_locations)[0]
    found = [os.path.join(root, "__init__.py")]
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


def django_files(app_dir: str, db: str, tool_cmd: str) -> list[str]:
    """manage.py (as --tool-cmd names it), every `.py` in a folder called `migrations`
    under the app folder (hidden folders, virtual environments and byte code skipped),
    Django's own, and every migrations folder elsewhere that the last scratch run reported
    (a new file in one changes the set)."""
    manage = next((w for w in words(tool_cmd) if os.path.basename(w) == "manage.py"), "manage.py")
    if not os.path.isfile(os.path.join(app_dir, manage)):
        raise HandOver(os.path.join(app_dir, manage))
    found = set(django_installed())
    for root, dirs, names in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if d not in DJANGO_SKIPPED and not d.startswith("."))
        if os.path.basename(root) == "migrations":
            found.update(os.path.join(root, n) for n in names if n.endswith(".py"))
    for folder in recorded_folders(db, paths_context("django", tool_cmd)):
        if os.path.isdir(folder):  # a folder removed since: its files drop out of the set
            found.update(p for p in tree(folder) if p.endswith(".py"))
    return [os.path.join(app_dir, manage)] + sorted(found)


# name -> the files of its migration set; `tools.TOOLS` adds the rest.
LIGHT = {"alembic": alembic_files, "flask-migrate": flask_migrate_files, "django": django_files}
