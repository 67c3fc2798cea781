"""Litestream mode: restore a lost database from its replica before anything builds a fresh
one, and the replica's position for `status` (what each version does: docs/litestream.md)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from preflight.core import TYPE_CHECKING, ancestry
from preflight.core.errors import (
    DatabaseUnusable,
    EnvironmentProblem,
    ReplicaUnavailable,
    UsageError,
)
from preflight.core.files import fsync_dir, fsync_file
from preflight.fast.facts import DATA_SIDECARS, probe, quick_check, which
from preflight.storage.config import Settings

if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("preflight")

STATUS_TIMEOUT = 30.0
ORDER = 'preflight run -- litestream replicate -config PATH -exec "gunicorn ..."'


def refuse_under_replicate() -> None:
    """Exit 2 when the guard is (a descendant of) `litestream replicate`: a restore of its
    backup would rename the file under a running Litestream, which keeps the failed state."""
    parent = ancestry.replicating()
    if parent is not None:
        raise UsageError(
            f"the guard runs under Litestream ({parent[:200]}): a restore of its backup "
            f"would happen while Litestream replicates",
            f"start the guard first and let it exec Litestream: {ORDER}",
        )


def ready(settings: Settings) -> None:
    """Mode on: the config is readable and the command exists (every start, not only the day
    the volume is lost)."""
    config = settings.litestream_config
    if config is None:
        return
    if not config.is_file() or not os.access(config, os.R_OK):
        raise UsageError(
            f"{config} (PREFLIGHT_LITESTREAM_CONFIG) is not a readable file",
            "point --litestream-config at Litestream's configuration file",
        )
    if not which(settings.litestream):
        raise EnvironmentProblem(
            f"command not found: {settings.litestream} (PREFLIGHT_LITESTREAM)",
            "install Litestream in the image, or set PREFLIGHT_LITESTREAM to its path",
        )


def _run(settings: Settings, *args: str, timeout: float) -> tuple[int | None, str]:
    """Run litestream: (exit code, None on timeout, and its output)."""
    from preflight.core import proc  # subprocess: only when Litestream is configured

    done = proc.run([settings.litestream, *args], timeout=timeout or None)
    if done.code == proc.NOT_FOUND and not done.out:
        raise EnvironmentProblem(
            f"cannot run {settings.litestream}: {done.err}",
            "install Litestream in the image, or set PREFLIGHT_LITESTREAM to its path",
        )
    return done.code, done.text


def _last(text: str) -> str:
    from preflight.core import proc

    return proc.meaningful_line(text) if text.strip() else "no output"


def restore_if_missing(settings: Settings, accept: Callable[[Path], None]) -> str:
    """Under the lock, a missing or empty database restored from the replica: 'present',
    'no replica' (build fresh) or 'restored'; ReplicaUnavailable (13) when a replica may
    exist and did not come back whole. The file stays private until `accept` took it."""
    db, config = settings.db, settings.litestream_config
    if config is None or (db.exists() and db.stat().st_size > 0):
        return "present"
    for suffix in DATA_SIDECARS:
        side = Path(f"{db}{suffix}")
        if side.exists() and side.stat().st_size > 0:
            # SQLite would replay it into the restored file: another database's pages.
            raise DatabaseUnusable(
                f"{db} is missing or empty but {side} holds data, which SQLite would "
                f"replay into the database restored from the replica",
                f"move {side} away (keep it), then start again",
            )
    import shutil  # only with a replica configured

    start = time.perf_counter()
    work = db.parent / f".{db.name}.litestream-restore"
    shutil.rmtree(work, ignore_errors=True)  # a crashed attempt's leftovers (we hold the lock)
    try:
        work.mkdir(mode=0o700)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create {work} for the restore: {exc.strerror or exc}",
            f"remove {work}, and make {db.parent} writable",
        ) from None
    try:
        out = work / db.name
        code, text = _run(
            settings,
            *("restore", "-config", str(config), "-if-replica-exists", "-o", str(out), str(db)),
            timeout=settings.litestream_timeout,
        )
        if code is None:
            raise ReplicaUnavailable(
                f"litestream restore of {db} did not finish within "
                f"{settings.litestream_timeout:g} s (PREFLIGHT_LITESTREAM_TIMEOUT), killed: "
                f"{_last(text)}; a replica may exist, so no fresh database was created",
                "make the replica reachable (credentials, endpoint, bucket), or raise "
                "PREFLIGHT_LITESTREAM_TIMEOUT for a large database",
            )
        if code != 0:
            if "not found in config" in text:
                raise UsageError(
                    f"{db} is not listed in {config}: {_last(text)}",
                    "list the database's real path (symlinks resolved) under dbs: in the config",
                )
            raise ReplicaUnavailable(
                f"litestream restore of {db} failed (exit {code}): {_last(text)}; a replica "
                f"may exist, so no fresh database was created",
                "make the replica reachable (credentials, endpoint, bucket) and start again; "
                "if the replica is really lost, start once without PREFLIGHT_LITESTREAM_CONFIG",
            )
        if not out.exists():
            log.info("litestream: no replica of %s: building a fresh database", db)
            return "no replica"
        _check_restored(out, db)
        accept(out)
        os.replace(out, db)
        fsync_dir(db.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ms = (time.perf_counter() - start) * 1000
    log.info(
        "litestream: restored %s from the replica (%.1f MiB, quick_check ok) in %.0f ms",
        db,
        db.stat().st_size / (1 << 20),
        ms,
        extra={"step": "litestream", "ms": round(ms, 1)},
    )
    return "restored"


def _check_restored(out: Path, db: Path) -> None:
    """The restored file is a whole SQLite database; its WAL folded in, synced to disk."""
    verdict, why = probe(str(out))
    problem = why if verdict in ("bad", "short") else ""
    if not problem:
        try:
            # Read-write: closing the last connection checkpoints a WAL the restore left,
            # so one file moves into place.
            with closing(sqlite3.connect(out, isolation_level=None)) as conn:
                result = quick_check(conn)
            problem = "" if result == "ok" else f"quick_check: {result[:200]}"
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
    if problem:
        raise ReplicaUnavailable(
            f"the database restored from the replica for {db} is not usable ({problem}); "
            f"no fresh database was created",
            "check the replica (litestream restore -o /tmp/x.db by hand), or restore from "
            "an older generation or timestamp",
        )
    fsync_file(out)


def _table(text: str) -> list[dict[str, str]]:
    """Litestream's whitespace-aligned table (a header line, then rows) as dicts."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    head = lines[0]
    return [dict(zip(head, row)) for row in lines[1:] if len(row) == len(head)]


def position(settings: Settings) -> dict[str, Any]:
    """The replica's newest position for `status` (0.3: generation, 0.5: transaction id); a
    replica's error is reported, never raised."""
    config = settings.litestream_config
    if config is None:
        return {}
    info: dict[str, Any] = {"config": str(config), "command": settings.litestream}
    # A read for an operator: never minutes against an unreachable endpoint.
    limit = min(settings.litestream_timeout or STATUS_TIMEOUT, STATUS_TIMEOUT)
    code, text = _run(settings, "version", timeout=limit)
    info["version"] = _last(text) if code == 0 else None
    db = str(settings.db)
    code, text = _run(settings, "generations", "-config", str(config), db, timeout=limit)
    failed = [line for line in text.splitlines() if "level=ERROR" in line]
    if code == 0 and failed:  # 0.3 logs an unreachable replica and still exits 0
        info["error"] = _last(failed[-1])
        return info
    if code == 0:
        rows = _table(text)
        info["generations"] = len(rows)
        if rows:
            newest = max(rows, key=lambda r: r.get("end", ""))
            info["position"] = {k: newest.get(k) for k in ("name", "generation", "lag", "end")}
        return info
    if "unknown command" in text:
        code, text = _run(settings, "ltx", "-config", str(config), db, timeout=limit)
        if code == 0:
            rows = _table(text)
            info["ltx_files"] = len(rows)
            if rows:
                newest = max(rows, key=lambda r: (r.get("max_txid", ""), r.get("created", "")))
                info["position"] = {
                    "txid": newest.get("max_txid"),
                    "level": newest.get("level"),
                    "created": newest.get("created"),
                }
            return info
    info["error"] = _last(text) if code is not None else f"no answer within {limit:g} s"
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for `status`."""
    where = info.get("position")
    if "error" in info:
        return f"replica not readable: {info['error']}"
    if not where:
        return "no replica yet (a start with no database builds a fresh one)"
    if "generation" in where:
        return (
            f"newest generation {where['generation']} on {where['name']}, up to "
            f"{where['end']} ({info.get('generations')} generation(s))"
        )
    return (
        f"newest transaction {where['txid']} (level {where['level']}, {where['created']}; "
        f"{info.get('ltx_files')} LTX file(s))"
    )
