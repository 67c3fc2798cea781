"""The quick start with a migration tool: a no-op `run` proven without starting the tool.

As `quickstart` for files, with the tool's facts from `toolfiles`: the options and the
environment are valid, the hash of the tool's migration files under --app-dir and the
version it recorded in the database give the cache key of the last verified start, the
lock is free, there is no failure record, the cheap integrity checks pass (and the full
one when due), and the schema text hashes to what the cache vouches for. Then the app is
exec'd; the tool never runs and the app is never imported. Anything else raises HandOver
and the full pipeline (`toolrun`) decides and explains.
"""

from __future__ import annotations

import os

from . import toolfiles
from .facts import (
    EVERY_START,
    cache_checked_at,
    cache_text,
    cheap_checks,
    check_due,
    connect_ro,
    integrity_policy,
    key,
    let_go,
    open_lock,
    recorded_backups,
    schema_hash,
    set_fingerprint,
    share_running,
    take_lock,
    write_note,
)
from .facts import Unproven as HandOver
from .facts import environment as _environment
from .facts import say as _say


def _inspect(db: str, sql: str, table: str, full: bool) -> tuple[tuple[str, ...], str, bool]:
    """The cheap checks, quick_check if `full`, the recorded version and the schema hash."""
    full = cheap_checks(db, full)
    conn = connect_ro(db)
    try:
        if full and [r[0] for r in conn.execute("PRAGMA quick_check")] != ["ok"]:
            raise HandOver("quick_check")
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
        ).fetchone():
            raise HandOver("no history")
        recorded = tuple(str(r[0]) for r in conn.execute(sql))
        return recorded, schema_hash(conn), full
    finally:
        conn.close()


def start(values: dict[str, str], command: list[str]) -> None:
    """Exec `command` if this is a provable no-op tool start; raise HandOver otherwise."""
    light = toolfiles.LIGHT.get(values["tool"])
    if light is None:
        raise HandOver("tool")
    files, sql, table = light
    db = os.path.realpath(values["db"])
    backup_dir = (
        os.path.abspath(values["backup_dir"])
        if values["backup_dir"]
        else os.path.join(os.path.dirname(db), "backups")
    )
    _environment(db, backup_dir if values["backup"] != "never" else None, command)
    app_dir = os.path.abspath(values["app_dir"] or ".")
    fp = toolfiles.fingerprint(app_dir, files(app_dir, db, values["tool_cmd"]))
    fd = running = -1
    held = False
    try:
        fd = open_lock(db)
        take_lock(fd, db)  # busy: BlockingIOError, hand over
        held = True  # only now may the note be written: a waiting guard keeps its hands off
        running = share_running(db)
        write_note(fd)
        if os.path.exists(f"{db}.preflight-failure.json"):
            raise HandOver("failure record")
        with open(f"{db}.preflight-cache.json", "rb") as f:
            cached = f.read()
        checked_at = cache_checked_at(cached)
        policy = integrity_policy(values["integrity"])
        if policy != EVERY_START and check_due(policy, checked_at, __import__("time").time()):
            raise HandOver("integrity check due")
        recorded, live, checked = _inspect(db, sql, table, policy == EVERY_START)
        mark = ",".join(recorded)
        cache_key = key(
            set_fingerprint([("<tool>", values["tool"]), ("<files>", fp), ("<recorded>", mark)]),
            values["strict"] == "1",
        )
        if cached != cache_text(cache_key, live, checked_at):
            raise HandOver("cache")
        if (
            values["backup"] != "never"
            and int(values["keep_backups"]) > 0
            and os.path.isdir(backup_dir)
        ):
            stem = os.path.splitext(os.path.basename(db))[0]
            if len(recorded_backups(os.listdir(backup_dir), stem)) > int(values["keep_backups"]):
                raise HandOver("prune")
        let_go(fd)
        fd = -1
    except BaseException:
        if running >= 0:
            os.close(running)
        if fd >= 0:
            if held:  # never the note of a guard that holds the lock while we wait
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            os.close(fd)
        raise
    _say(
        [
            f"{values['tool']}: files and recorded version "
            f"{mark if len(recorded) < 3 else f'({len(recorded)} rows)'} as verified before (cache)",
            f"inspect: schema as verified before (cache), {'quick_check ok' if checked else 'header and size ok'}",
            f"exec: {' '.join(command)}",
        ],
        values["log_level"] in ("warning", "error"),
    )
    try:
        os.execvp(command[0], command)
    except OSError:
        os.close(running)
        raise HandOver("exec") from None
