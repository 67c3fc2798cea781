"""Django's migrations as the guard sees them, built on scratch by Django itself in one run
of the app's interpreter (`manage.py shell -c SCRIPT`). docs/tools.md, "Django"."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from preflight.core import proc
from preflight.core.errors import EnvironmentProblem, HistoryError, UsageError
from preflight.sources import tools

log = logging.getLogger("preflight")
MARK = "PREFLIGHT-DJANGO:"

# Runs inside the app's interpreter with Django set up (manage.py shell -c). Input: the
# sets to build (WANTED: JSON lists of "app.name", filled in) and whether the plan's own
# prefixes are already known (ONLY_SETS: then only the sets are built); output: one JSON line.
SCRIPT = r"""
import json, os, sqlite3, sys
from contextlib import closing
from django import VERSION
from django.db import DEFAULT_DB_ALIAS, connections
out = {"version": ".".join(map(str, VERSION[:3]))}
conn = connections[DEFAULT_DB_ALIAS]
want = os.environ["PREFLIGHT_DB"]
out["vendor"] = conn.vendor
out["name"] = str(conn.settings_dict.get("NAME"))
out["databases"] = sorted(connections.databases)
import django
out["django"] = os.path.dirname(django.__file__)
def done():
    print("\n" + MARK + json.dumps(out))
    sys.exit(0)
def tables():
    if not os.path.exists(want) or os.path.getsize(want) == 0:
        return []
    with closing(sqlite3.connect(want)) as c:
        return [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
# Nothing here has migrated yet: tables now were made by the app's own start-up.
out["at_import"] = tables()
if out["at_import"] or conn.vendor != "sqlite" or (
    os.path.realpath(out["name"]) != os.path.realpath(want)
):
    done()
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
def executor(replace=True):
    ex = MigrationExecutor(conn)
    if not replace:
        ex.loader = MigrationLoader(conn, replace_migrations=False)
    return ex
ex = executor()
out["conflicts"] = {k: sorted(v) for k, v in ex.loader.detect_conflicts().items()}
replaces = {
    f"{k[0]}.{k[1]}": sorted(f"{a}.{n}" for a, n in m.replaces)
    for k, m in ex.loader.disk_migrations.items() if m.replaces
}
out["replaces"] = replaces
# Where Django found each app's migrations (MIGRATION_MODULES and apps anywhere included):
# the no-op start hashes these folders (toolfiles.recorded_folders).
import importlib.util
from django.apps import apps as registry
folders = set()
for config in registry.get_app_configs():
    name, _ = ex.loader.migrations_module(config.label)
    try:
        spec = importlib.util.find_spec(name) if name else None
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        folders.update(os.path.realpath(f) for f in spec.submodule_search_locations)
out["folders"] = sorted(folders)
plan = [m for m, _ in ex.migration_plan(ex.loader.graph.leaf_nodes(), clean_start=True)]
out["plan"] = [f"{m.app_label}.{m.name}" for m in plan]
if out["conflicts"]:
    done()
def canonical(names):
    # Django's rule: a squash stands for its replaced migrations once all are applied
    # (it records both); with some applied, the replaced ones are used.
    have = set(names)
    for squash, old in replaces.items():
        if set(old) <= have:
            have = (have - set(old)) | {squash}
    return sorted(have)
def look():
    with closing(sqlite3.connect(want)) as c:
        sql = [r[0] for r in c.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        have = canonical(a + "." + n for a, n in c.execute("SELECT app, name FROM django_migrations"))
        return sql, have
def fresh():
    conn.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(want + suffix):
            os.remove(want + suffix)
# Every migration in an order that has the replaced ones too (a set may hold some of them).
unsquashed = executor(False)
order = [f"{m.app_label}.{m.name}" for m, _ in unsquashed.migration_plan(
    unsquashed.loader.graph.leaf_nodes(), clean_start=True)]
replaced = {r for old in replaces.values() for r in old}
def targets(items):
    last = {}
    for item in order:
        if item in items:
            last[item.split(".", 1)[0]] = item.split(".", 1)[1]
    return sorted(last.items())
out["sets"] = {}
for wanted in json.loads(WANTED):
    key = ",".join(sorted(wanted))
    want_set = canonical(wanted)
    chain = [w for w in wanted if w in replaced]
    if not chain and sorted(out["plan"][: len(want_set)]) == want_set:
        continue  # a plan prefix: built below with every other
    fresh()
    try:
        if chain:  # as the database got them: the replaced migrations one by one
            executor(False).migrate(targets(chain))
        executor().migrate(targets(want_set))
    except Exception as exc:
        out["sets"][key] = {"failed": f"{type(exc).__name__}: {exc}"}
        continue
    sql, have = look()
    got = out["sets"][key] = {"sql": sql, "ok": have == want_set, "recorded": have}
    if not chain or have != want_set:
        continue
    # The rest of the plan from there: a table Django rebuilt on the way (AlterField on
    # SQLite) keeps the column order it got then, which the squash's may not have.
    got["then"] = {}
    for i, m in enumerate(plan):
        item = out["plan"][i]
        if item in have:
            continue
        try:
            executor().migrate([(m.app_label, m.name)])
        except Exception as exc:
            got["failed"] = f"{item}: {type(exc).__name__}: {exc}"
            break
        sql, have = look()
        if set(want_set) <= set(out["plan"][: i + 1]):
            got["then"][item] = sql
fresh()
out["schemas"] = {}
for i, m in enumerate([] if ONLY_SETS else plan):
    item = out["plan"][i]
    try:
        executor().migrate([(m.app_label, m.name)])
    except Exception as exc:
        out["failed"] = f"{item}: {type(exc).__name__}: {exc}"
        break
    sql, have = look()
    if have != sorted(out["plan"][: i + 1]):
        out["recorded"] = have
        break
    out["schemas"][item] = sql
done()
""".replace("MARK", repr(MARK))


def report(
    app_dir: Path, command: list[str], scratch: Path, sets: list[list[str]], only_sets: bool
) -> dict[str, Any]:
    """Run the script in the app's interpreter on `scratch`; its JSON report."""
    script = SCRIPT.replace("WANTED", repr(json.dumps(sets))).replace("ONLY_SETS", repr(only_sets))
    argv = [*tools.django_base(command), "shell", "-c", script]
    code, text = tools.run(app_dir, argv, scratch)
    if code == 127:
        raise EnvironmentProblem(
            f"{argv[0]}: command not found (in {app_dir})",
            "install the app's Python in the image, or set PREFLIGHT_TOOL_CMD",
        )
    line = next((x for x in reversed(text.splitlines()) if x.startswith(MARK)), None)
    if code != 0 or line is None:
        raise HistoryError(
            f"'{argv[0]} {argv[1]} shell' failed in {app_dir}: {proc.meaningful_line(text)}",
            "fix the app's settings or migrations (or PREFLIGHT_APP_DIR)",
        )
    data = json.loads(line[len(MARK) :])
    if data.get("at_import"):
        raise tools.self_migrated(
            tools.TOOLS["django"],
            argv[:3],
            f"the scratch database held {len(data['at_import'])} table(s) "
            f"({', '.join(data['at_import'][:5])}) before Django's migrations were asked for",
        )
    if data["vendor"] != "sqlite":
        raise UsageError(
            f"Django's default database is {data['vendor']}, not SQLite",
            "use --tool django with SQLite",
        )
    if os.path.realpath(data["name"]) != os.path.realpath(scratch):
        raise UsageError(
            f"django did not use the database it was given (its NAME is {data['name']})",
            f"make the app honour PREFLIGHT_DB: add {tools.TOOLS['django'].fix_line}",
        )
    if len(data["databases"]) > 1:
        raise UsageError(
            f"DATABASES names {len(data['databases'])} databases ({', '.join(data['databases'])})",
            "the guard migrates one SQLite database; keep one in DATABASES",
        )
    if data.get("recorded") is not None:
        raise UsageError(
            "django recorded other migrations on the scratch copy than it was asked to",
            f"make the app honour PREFLIGHT_DB: add {tools.TOOLS['django'].fix_line}",
        )
    return dict(data)


def heads(data: dict[str, Any]) -> tuple[str, ...]:
    """One head (the plan's last migration), or every conflicting leaf of an app."""
    if data.get("conflicts"):
        return tuple(f"{app}.{name}" for app, names in data["conflicts"].items() for name in names)
    return (data["plan"][-1],) if data["plan"] else ()
