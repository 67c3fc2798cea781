"""`preflight init`: adopt a database made before the guard, writing its first migration
from the live schema, proven by replaying it in memory to a schema equal to the live one."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from preflight import schema
from preflight.commands.results import Initialized
from preflight.core.errors import (
    DriftError,
    EnvironmentProblem,
    MigrationFailed,
    PreflightError,
    UsageError,
)
from preflight.core.files import fsync_dir
from preflight.core.transaction import immediate
from preflight.fast.facts import check_environment, connect_ro
from preflight.live import history
from preflight.live.database import assert_not_busy, connect, inspect
from preflight.schema import drift
from preflight.sources.migrations import Migration, discover, load, tokens
from preflight.sources.replay import replay
from preflight.storage import backup
from preflight.storage.config import Settings
from preflight.storage.steps import locked, step

log = logging.getLogger("preflight")

LABEL = "initial_schema"
TITLES = {"table": "Tables", "index": "Indexes", "view": "Views", "trigger": "Triggers"}


def _shadow_tables(rows: list[tuple[str, str, str, str]]) -> set[str]:
    """Tables a virtual table made for itself (FTS `x_data`, R*Tree `x_node`, ...): found by
    creating each virtual table in an empty database, exact for every module."""
    shadows: set[str] = set()
    for kind, name, _, sql in rows:
        if kind != "table" or " ".join(tokens(sql)[:3]).upper() != "CREATE VIRTUAL TABLE":
            continue
        with closing(sqlite3.connect(":memory:")) as scratch:
            try:
                scratch.execute(sql)
            except sqlite3.Error:
                continue  # a module this SQLite lacks: the replay below fails and says so
            shadows.update(
                n.lower()
                for (n,) in scratch.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND lower(name) != ?",
                    (name.lower(),),
                )
            )
    return shadows


def _views_in_order(views: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Views so that each comes after the views it selects from (creation order otherwise)."""
    by_name = {view[1].lower(): view for view in views}
    done: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()

    def visit(key: str, path: tuple[str, ...]) -> None:
        if key in seen or key in path:  # a cycle cannot be created: keep creation order
            return
        view = by_name[key]
        for tok in tokens(view[3])[3:]:
            ref = tok.strip('"`[]').lower()
            if ref in by_name and ref != key:
                visit(ref, path + (key,))
        seen.add(key)
        done.append(view)

    for key in by_name:
        visit(key, ())
    return done


def _terminated(sql: str) -> str:
    """The statement with its ';' (on a line of its own if the text ends in a comment)."""
    sql = sql.strip()
    return f"{sql};" if sqlite3.complete_statement(f"{sql};") else f"{sql}\n;"


def render(conn: sqlite3.Connection, source: Path, version: int) -> str:
    """The first migration's text: every user object of `conn`, in an order that replays."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
    ).fetchall()
    shadows = _shadow_tables(rows)
    kept = [
        r
        for r in rows
        if not (schema.ignored(r[1]) or schema.ignored(r[2]) or r[1].lower() in shadows)
    ]
    groups = {kind: [r[3] for r in kept if r[0] == kind] for kind in TITLES}
    groups["view"] = [r[3] for r in _views_in_order([r for r in kept if r[0] == "view"])]
    head = (
        f"-- {version:03d}_{LABEL}.sql: written by `preflight init` from {source}'s schema.\n"
        f"-- The schema when preflight adopted the database. Never edit it once applied:\n"
        f"-- put each change in a new migration ({version + 1:03d}_..., {version + 2:03d}_...).\n\n"
    )
    parts = [head]
    for kind, title in TITLES.items():
        if group := groups[kind]:
            parts.append(f"-- {title}\n\n" + "".join(f"{_terminated(sql)}\n\n" for sql in group))
    return "".join(parts).rstrip("\n") + "\n"


def _prove(text: str, name: str, live: schema.Schema, db: Path) -> Migration:
    """Load `text` as the guard loads a file and replay it: it must rebuild `live` exactly."""
    with tempfile.TemporaryDirectory(prefix="preflight-init-") as tmp:
        scratch = Path(tmp) / name
        scratch.write_text(text, encoding="utf-8")
        migration = load(scratch)
        hint = (
            f"the database was not changed and nothing was written; write {name} by hand so "
            f"that it rebuilds this schema, then record it with 'preflight stamp "
            f"{migration.version}'"
        )
        try:
            replayed = replay((migration,), {1})[1]
        except MigrationFailed as exc:
            raise DriftError(
                f"{db}: its schema cannot be rebuilt from SQL alone: {exc.message}", hint
            ) from None
    diffs = drift.diff(replayed, live)
    if diffs:
        raise DriftError(
            f"{db}: replaying the written schema gives {len(diffs)} "
            f"difference(s) from the live one",
            hint,
            details=(f"drift: {d.message()}" for d in diffs),
        )
    return migration


def _write_new(path: Path, text: str) -> None:
    """Create `path` (never over an existing file or through a symlink), durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def init(settings: Settings, version: int | None) -> Initialized:
    """`preflight init [--number N]`: write migration N (default 1) and adopt the database at it."""
    check_environment(settings.db, settings.backups, writes=True)
    folder = settings.migrations
    if not folder.exists() and folder.parent.is_dir():
        folder.mkdir()
    existing = discover(folder)
    if not os.access(folder, os.W_OK):
        raise EnvironmentProblem(
            f"migrations folder {folder} is not writable by uid {os.getuid()}",
            "run init where the app's source is (not in the image)",
        )
    if version is None and existing:
        raise UsageError(
            f"{folder} already has migrations ({', '.join(m.name for m in existing)})",
            "init writes the first migration; give --number N to write it as N, "
            "below every existing one",
        )
    version = 1 if version is None else version
    if version < 1:
        raise UsageError(f"--number {version}: migration numbers start at 1", "use --number 1")
    clash = [m.name for m in existing if m.version <= version]
    if clash:
        raise UsageError(
            f"{folder} already has {', '.join(clash)}, numbered {version} or below",
            f"give --number below {min(m.version for m in existing)}, or move them",
        )
    name = f"{version:03d}_{LABEL}.sql"
    with locked(settings, "init"):
        insp = inspect(settings.db)
        if insp.fresh:
            raise UsageError(
                f"no database at {settings.db}, or it has no tables: nothing to adopt",
                "write your first migration by hand; 'preflight run' builds it",
            )
        if insp.applied is not None:
            last = insp.applied[-1].name if insp.applied else "nothing applied"
            raise UsageError(
                f"{settings.db} is already managed by preflight ({last})",
                "add a new migration instead",
            )
        with step("init") as info:
            with closing(connect_ro(settings.db)) as conn:
                text = render(conn, settings.db, version)
            migration = _prove(text, name, insp.live_schema, settings.db)
            info["what"] = (
                f"{len(migration.statements)} statement(s) written from the live "
                f"schema replay to it exactly"
            )
        assert_not_busy(settings.db, settings.lock_timeout)
        saved = None
        if settings.backup != "never":
            with step("backup") as info:
                taken = backup.take(settings.db, settings.backup_dir, "pre-migrate")
                info["what"], info["tail"] = "before adopting", f" -> {taken}"
            saved = str(taken)
        path = folder / name
        try:
            _write_new(path, text)
            try:
                written = load(path)
                if written.sha256 != migration.sha256:
                    raise UsageError(f"{path} changed while it was being written", "run init again")
                with closing(connect(settings.db, settings.lock_timeout)) as conn, immediate(conn):
                    history.ensure_tables(conn)
                    history.record(conn, written, "adopted", 0.0)
                    what = "first migration written from the live schema"
                    history.log(conn, "init", written.version, written.name, what)
            except BaseException:
                path.unlink(missing_ok=True)  # no history names it: leave no half-adoption
                fsync_dir(folder)
                raise
        except PreflightError as exc:
            return Initialized(backup=saved, error=exc)  # the backup is named with it
        log.info("init: wrote %s and recorded %s as adopted at %s", path, settings.db, name)
    return Initialized(backup=saved, written=str(path), adopted=name)
