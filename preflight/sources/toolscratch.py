"""What a tool's migrations produce, built on a private scratch database and cached. Every
scratch run proves the tool writes where it is told (the scratch file ends at the revision
asked for, the live database is unchanged; else exit 2): docs/tools.md, "What a start does"."""

from __future__ import annotations

import json
import logging
import os
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from preflight import schema
from preflight.core import proc
from preflight.core.errors import HistoryError, MigrationFailed, UsageError
from preflight.core.files import private_folder, write_atomic
from preflight.fast import toolfiles
from preflight.fast.facts import IMAGE_TOOL_CACHE, SIDECARS, TOOL_CACHE, connect_ro
from preflight.live import database
from preflight.live.database import live_state
from preflight.schema import drift
from preflight.schema.sqltext import fold
from preflight.sources import tooldjango, tools
from preflight.sources.tools import Tool
from preflight.storage.config import Settings

log = logging.getLogger("preflight")
FORMAT = 2


@dataclass(frozen=True)
class Expected:
    """A migration set as its tool sees it: heads, revisions (base to head), their schemas."""

    fingerprint: str
    heads: tuple[str, ...]
    revisions: tuple[str, ...]
    schemas: dict[str, tuple[str, ...]]  # revision -> sqlite_master SQL, in creation order
    failed: str | None = None  # "REV: why" when a revision fails on an empty database
    # Django: squash -> the migrations it replaces (in `revisions` too, just before it)
    replaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    folders: tuple[str, ...] = ()  # Django: every folder its loader reads migrations from

    def head(self) -> str:
        return self.heads[0]

    def plan(self) -> tuple[str, ...]:
        """The revisions Django runs on an empty database (the replaced ones left out)."""
        old = {r for rs in self.replaces.values() for r in rs}
        return tuple(r for r in self.revisions if r not in old)

    def schema_at(self, rev: str | None, table: str) -> schema.Schema:
        """The structural schema at `rev` (None: base, nothing) without the tool's table."""
        if rev is None:
            return schema.Schema()
        with closing(schema.open_memory()) as conn:
            for sql in self.schemas[rev]:
                conn.execute(sql)
            return without(schema.snapshot(conn), table)


def without(s: schema.Schema, table: str) -> schema.Schema:
    """`s` minus the tool's own version table and its indexes (never drift)."""
    t = fold(table)
    return schema.Schema(
        {k: v for k, v in s.tables.items() if k != t},
        {k: v for k, v in s.indexes.items() if fold(v.table) != t},
        dict(s.views),
        dict(s.triggers),
    )


def prepare(settings: Settings, tool: Tool, fingerprint: str) -> Path:
    """Build the expected schemas into the image's cache; returns its path."""
    exp = expected(settings, tool, fingerprint, save=False, image=False)
    path = settings.app_dir / IMAGE_TOOL_CACHE
    _write_cache(path, exp)
    if _read_cache(path, fingerprint) is None:
        raise UsageError(f"cannot write {path}", f"make {settings.app_dir} writable in the build")
    return path


def _read_cache(path: Path, fingerprint: str) -> Expected | None:
    try:
        data = json.loads(path.read_bytes())
        if data.get("format") != FORMAT or data.get("fingerprint") != fingerprint:
            return None
        return Expected(
            fingerprint,
            tuple(data["heads"]),
            tuple(data["revisions"]),
            {k: tuple(v) for k, v in data["schemas"].items()},
            data.get("failed"),
            {k: tuple(v) for k, v in data.get("replaces", {}).items()},
            tuple(data.get("folders", ())),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cache(path: Path, exp: Expected) -> None:
    data = {"format": FORMAT, **asdict(exp)}
    try:
        write_atomic(path, json.dumps(data, indent=1).encode() + b"\n")
    except OSError as exc:
        log.debug("tool cache: not written (%s)", exc)


def _dump(db: Path) -> tuple[str, ...]:
    with closing(connect_ro(db)) as conn:
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
        return tuple(r[0] for r in rows)


def wrote_elsewhere(tool: Tool, what: str) -> UsageError:
    return UsageError(
        f"{tool.name} did not write the database it was given ({what})",
        f"make the app honour PREFLIGHT_DATABASE_URL: add {tool.fix_line}",
    )


def expected(
    settings: Settings,
    tool: Tool,
    fingerprint: str,
    save: bool = True,
    rec: tuple[str, ...] | None = None,
    image: bool = True,
) -> Expected:
    """Cached (beside the database, or the image's), else built. A failed build that made
    the database where there was none (an app ignoring PREFLIGHT_DATABASE_URL) removes it: a
    refused start leaves the volume as it was. `save=False` (check, status) writes no cache."""
    live = settings.db
    before = live_state(live)
    try:
        path = settings.db.with_name(settings.db.name + TOOL_CACHE)
        exp = _read_cache(path, fingerprint)
        if exp is None and image:
            exp = _read_cache(baked := settings.app_dir / IMAGE_TOOL_CACHE, fingerprint)
            if exp is not None:
                log.info("scratch: expected schemas from the image (%s)", baked)
        built = exp is None
        if exp is None and tool.cumulative:
            # One run of Django builds the plan and the recorded set (skipped in the run
            # when it is a plan prefix): never a second scratch build in one start.
            exp = _build_sets(settings, tool, fingerprint, live, [list(rec)] if rec else [])
            if save:
                exp = _remember_folders(settings, tool, exp)
        elif exp is None:
            exp = _build(settings, tool, fingerprint, live)
        elif tool.cumulative and unbuilt(exp, rec):
            # The plan is known (cached, or built into the image): an upgrade's recorded
            # set (new migrations fall inside the plan) is the one thing left to build.
            more = _build_sets(settings, tool, fingerprint, live, [list(rec or ())], True)
            exp, built = replace(exp, schemas={**exp.schemas, **more.schemas}), True
        if save and built:
            _write_cache(path, exp)
        if tool.cumulative and rec and _chain(exp, rec):
            exp = _variant(exp, rec, tool, live, settings.strict)
        if len(exp.heads) != 1:
            raise HistoryError(
                f"{tool.name} has {len(exp.heads)} heads ({', '.join(exp.heads) or 'none'}) "
                f"in {settings.app_dir}; the guard migrates one line of history",
                f"merge them ('{tool.merge_hint}') and ship the merge revision",
            )
        return exp
    except BaseException:
        if all(part is None for part in before) and live_state(live) != before:
            for suffix in ("", *SIDECARS):
                Path(f"{live}{suffix}").unlink(missing_ok=True)
            log.info(
                "scratch: removed %s, which %s made while building on scratch", live, tool.name
            )
        raise


def _build(settings: Settings, tool: Tool, fingerprint: str, live: Path) -> Expected:
    command = tools.command(tool, settings.tool_cmd)
    with private_folder("preflight-scratch-") as tmp:
        scratch = tmp / "scratch.db"
        before = live_state(live)
        argv = tools.step_command(tool, command, tool.heads_cmd)
        heads = tool.parse_heads(tools.output(settings.app_dir, argv, scratch))
        _untouched(tool, argv, scratch, live, before)
        argv = tools.step_command(tool, command, tool.history_cmd)
        revisions = tool.parse_history(tools.output(settings.app_dir, argv, scratch))
        _untouched(tool, argv, scratch, live, before)
        schemas: dict[str, tuple[str, ...]] = {}
        failed = None
        if len(heads) == 1:
            for rev in revisions:
                argv = tools.step_command(tool, command, tool.upgrade_cmd(rev))
                code, out = tools.run(settings.app_dir, argv, scratch)
                if live_state(live) != before:
                    raise wrote_elsewhere(tool, f"{live} changed while it built a scratch copy")
                if code != 0:
                    failed = f"{rev}: {proc.meaningful_line(out)}"
                    log.info("scratch: revision %s fails on an empty database", failed)
                    break
                now = database.recorded(scratch, tool.name)
                if now != (rev,):
                    raise wrote_elsewhere(
                        tool, f"after 'upgrade {rev}' the scratch copy records {now or 'nothing'}"
                    )
                schemas[rev] = _dump(scratch)
        log.info(
            "scratch: %d revision(s) built by %s on an empty database", len(schemas), tool.name
        )
    return Expected(fingerprint, heads, revisions, schemas, failed)


def _untouched(
    tool: Tool, argv: list[str], scratch: Path, live: Path, before: tuple[object, ...]
) -> None:
    if scratch.exists() and scratch.stat().st_size > 0:
        rec = database.recorded(scratch, tool.name)
        raise tools.self_migrated(
            tool, argv, f"the empty scratch database now records {', '.join(rec or ()) or 'tables'}"
        )
    if live_state(live) != before:
        raise tools.self_migrated(tool, argv, f"{live} changed")


def _variant(exp: Expected, rec: tuple[str, ...], tool: Tool, live: Path, strict: bool) -> Expected:
    """A database recording every migration a squash replaces got there through the squash
    (as built) or one by one (the set built that way, and the plan from it): the live schema
    picks; neither matching is drift."""
    key = set_key(rec)
    at = state(exp, rec, tool)
    if key not in exp.schemas or at is None or not live.exists():
        return exp
    with closing(connect_ro(live)) as conn:
        actual = without(schema.snapshot(conn), tool.table)
    if (
        at != key
        and at in exp.schemas
        and not drift.errors(drift.diff(exp.schema_at(at, tool.table), actual), strict)
    ):
        return exp  # through the squash
    chained = replace(exp, schemas={**exp.schemas, at: exp.schemas[key]})
    if drift.errors(drift.diff(chained.schema_at(at, tool.table), actual), strict):
        return exp  # neither: the drift check names the differences
    log.info("scratch: %s got the squashed migrations one by one; its schemas from there", live)
    later = {k.split(">", 1)[1]: v for k, v in exp.schemas.items() if k.startswith(key + ">")}
    return replace(chained, schemas={**chained.schemas, **later})


def describe(rec: tuple[str, ...] | None, tool: Tool) -> str:
    if not rec:
        return "nothing"
    return f"{len(rec)} applied migration(s)" if tool.cumulative else ", ".join(rec)


def state(exp: Expected, rec: tuple[str, ...] | None, tool: Tool) -> str | None:
    """The revision the recorded rows stand for (None: base). Django: the plan entry whose
    prefix is exactly the recorded set, else the set's own key (`set_key`)."""
    if not rec:
        return None
    if not tool.cumulative:
        return rec[0]
    unknown = sorted(set(rec) - set(exp.revisions))
    if unknown:
        raise HistoryError(
            f"the database records {tool.name} migration(s) {', '.join(unknown[:5])} that are "
            "not in the migration files (removed, renamed, squashed, or an app no longer installed)",
            "ship the migration files it was migrated with, or restore a matching backup",
        )
    read = canonical(exp, rec)
    n = len(read)
    return exp.plan()[n - 1] if set(exp.plan()[:n]) == set(read) else set_key(rec)


def unbuilt(exp: Expected, rec: tuple[str, ...] | None) -> bool:
    """A recorded set (all in the plan, no prefix of it) whose schema is not built yet."""
    if not rec or set(rec) - set(exp.revisions):
        return False
    if "!" + set_key(rec) in exp.schemas:
        return False  # tried already: it cannot be built (or is built under its own key)
    if _chain(exp, rec):
        return set_key(rec) not in exp.schemas
    rec = canonical(exp, rec)
    n = len(rec)
    return set(exp.plan()[:n]) != set(rec) and set_key(rec) not in exp.schemas


def set_key(names: tuple[str, ...] | list[str]) -> str:
    """The key of a recorded set that is no plan prefix ("{a.x,b.y}": never a plan entry)."""
    return "{" + ",".join(sorted(names)) + "}"


def _chain(exp: Expected, rec: tuple[str, ...]) -> bool:
    """`rec` holds migrations a squash replaces: got one by one or through the squash, which
    may differ in column order, so both are built and the live schema tells (`_variant`)."""
    return any(set(old) & set(rec) for old in exp.replaces.values())


def canonical(exp: Expected, rec: tuple[str, ...]) -> tuple[str, ...]:
    """A recorded Django set as Django reads it: a squash whose replaced migrations are all
    recorded stands for them; with only some recorded, those are applied (not the squash)."""
    have = set(rec)
    for squash, old in exp.replaces.items():
        if set(old) <= have:
            have = (have - set(old)) | {squash}
    return tuple(sorted(have))


def _build_sets(
    settings: Settings,
    tool: Tool,
    fingerprint: str,
    live: Path,
    sets: list[list[str]],
    only_sets: bool = False,
) -> Expected:
    """Django: the plan, every plan prefix's schema and each of `sets`, in one run of the
    app's interpreter on a private scratch file (tooldjango)."""
    with private_folder("preflight-scratch-") as tmp:
        scratch = tmp / "scratch.db"
        before = live_state(live)
        data = tooldjango.report(
            settings.app_dir, tools.command(tool, settings.tool_cmd), scratch, sets, only_sets
        )
        if live_state(live) != before:
            raise wrote_elsewhere(tool, f"{live} changed while it built a scratch copy")
    schemas = {k: tuple(v) for k, v in data["schemas"].items()}
    for wanted in sets:
        schemas["!" + set_key(wanted)] = ()  # tried (see `unbuilt`)
    for key, got in data["sets"].items():
        name = set_key(key.split(","))
        if got.get("ok"):
            schemas[name] = tuple(got["sql"])
            for item, sql in got.get("then", {}).items():
                schemas[f"{name}>{item}"] = tuple(sql)
        else:
            log.info("scratch: the recorded set cannot be built: %s", got.get("failed", got))
    if failed := data.get("failed"):
        log.info("scratch: migration %s fails on an empty database", failed)
    built = "the recorded set" if only_sets else f"{len(data['schemas'])} migration(s)"
    where = "(the plan was known)" if only_sets else "on an empty database"
    log.info("scratch: %s built by Django %s %s", built, data["version"], where)
    replaces = {k: tuple(v) for k, v in data.get("replaces", {}).items()}
    revisions: list[str] = []
    for item in data["plan"]:  # the replaced ones just before their squash
        revisions += [r for r in replaces.get(item, ()) if r not in revisions]
        revisions.append(item)
    site = os.path.dirname(os.path.realpath(data["django"]))
    folders = tuple(f for f in data.get("folders", ()) if not f.startswith(site + os.sep))
    return Expected(
        fingerprint, tooldjango.heads(data), tuple(revisions), schemas, failed, replaces, folders
    )


def _remember_folders(settings: Settings, tool: Tool, exp: Expected) -> Expected:
    """Record beside the database the migrations folders Django read outside the app's, for
    the light fingerprint (`toolfiles.recorded_folders`), which becomes the cache key."""
    app = str(settings.app_dir)
    extra = [
        f
        for f in exp.folders
        if not (
            f.startswith(os.path.realpath(app) + os.sep) and os.path.basename(f) == "migrations"
        )
    ]
    db = str(settings.db)
    record = Path(toolfiles.paths_record(db))
    if not extra and not record.exists():
        return exp
    context = toolfiles.paths_context(tool.name, settings.tool_cmd or "")
    text = "\n".join([toolfiles.PATHS_FORMAT, context, *extra]) + "\n"
    try:
        write_atomic(record, text.encode())
    except OSError as exc:
        log.debug("tool paths: not written (%s)", exc)
        return exp
    if extra:
        log.info("migrations: %d folder(s) outside %s: %s", len(extra), app, ", ".join(extra))
    paths = tool.files(app, db, settings.tool_cmd or "")
    return replace(exp, fingerprint=toolfiles.fingerprint(app, paths))


def require(exp: Expected, rev: str, pending: bool) -> None:
    """The schema at `rev` must have been built: exit 9 for a pending revision that fails on
    an empty database, 5 for an applied one."""
    if rev in exp.schemas:
        return
    if rev.startswith("{"):
        raise HistoryError(
            f"the recorded migrations ({rev[:200]}) cannot be built on an empty database",
            "restore a backup that matches the migration files",
        )
    if rev not in exp.revisions:
        raise HistoryError(
            f"the database records revision {rev}, which is not in the migration files",
            "ship the revision files it was migrated with, or restore a matching backup",
        )
    if pending:
        raise MigrationFailed(
            f"revision {exp.failed} (on a private empty database; the live one was not touched)",
            "fix the revision and ship a new image",
        )
    raise HistoryError(f"applied revision {exp.failed} on an empty database", "fix the revision")
