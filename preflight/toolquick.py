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

import fcntl
import os

from . import toolfiles
from .facts import (
    EVERY_START,
    HEADER,
    cache_checked_at,
    cache_text,
    check_due,
    connect_ro,
    integrity_policy,
    key,
    probe,
    schema_hash,
    set_fingerprint,
)
from .facts import Unproven as HandOver
from .facts import environment as _environment
from .facts import now as _now
from .facts import say as _say


def _inspect(db: str, sql: str, table: str, full: bool) -> tuple[tuple[str, ...], str, bool]:
    """The cheap checks, quick_check if `full`, the recorded version and the schema hash."""
    with open(db, "rb") as f:
        head = f.read(20)
    if head[: len(HEADER)] != HEADER:
        raise HandOver("header")
    for suffix in ("-wal", "-shm", "-journal"):
        side = f"{db}{suffix}"
        if os.path.lexists(side) and (
            not os.path.isfile(side) or not os.access(side, os.R_OK | os.W_OK)
        ):
            raise HandOver(suffix)
    if os.path.exists(f"{db}-wal") and head[18:20] != b"\x02\x02":
        raise HandOver("stale wal")
    if os.path.exists(f"{db}-journal") and os.stat(f"{db}-journal").st_size > 0:
        raise HandOver("hot journal")
    verdict, _ = probe(db)
    if verdict in ("bad", "short"):
        raise HandOver("probe")
    full = full or verdict == "unsure"
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
    fp = toolfiles.fingerprint(app_dir, files(app_dir))
    fd = running = -1
    try:
        fd = os.open(
            f"{db}.preflight.lock",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o644,
        )
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or st.st_nlink != 1:
            raise HandOver("lock file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        named = os.lstat(f"{db}.preflight.lock")
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            raise HandOver("lock file replaced")
        running = os.open(
            f"{db}.preflight.running",
            os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
            0o644,
        )
        if os.fstat(running).st_mode & 0o170000 != 0o100000:
            raise HandOver("running file")
        fcntl.flock(running, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.set_inheritable(running, True)
        host = os.uname().nodename.replace("\\", "").replace('"', "")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f'{{"pid": {os.getpid()}, "host": "{host}", "since": "{_now()}", '
            f'"command": "run"}}'.encode(),
            0,
        )
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
            names = set(os.listdir(backup_dir))
            mine = [
                n
                for n in names
                if n.startswith(f"{stem}-") and n.endswith(".db") and f"{n}.json" in names
            ]
            if len(mine) > int(values["keep_backups"]):
                raise HandOver("prune")
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        fd = -1
    except BaseException:
        if running >= 0:
            os.close(running)
        if fd >= 0:
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
